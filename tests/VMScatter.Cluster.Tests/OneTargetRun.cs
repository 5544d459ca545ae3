using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Synthetic;

namespace VMScatter.Cluster.Tests;

/// <summary>The convergence tests' harness: idle synthetic guests (some wrapped to write at chosen moments) migrated in process to one target.</summary>
internal static class OneTargetRun
{
    /// <summary>Guests that write nothing by themselves: what is dirty is what a test's wrapper wrote.</summary>
    public static readonly SyntheticGuestModel Idle = new() { MemoryBytes = 8L << 20, DirtyPagesPerSecond = 0, WritableWorkingSetPages = 256 };

    public static async Task<MigrationReport> MigrateAsync(IReadOnlyList<IMigratableVm> vms, MigrationOptions options, string extraHocon = "")
    {
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = vms, Targets = 1, TargetCapacityBytes = 4 * Idle.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(), ExtraHocon = extraHocon,
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 1, TimeSpan.FromSeconds(30));
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options), _ => { }, TimeSpan.FromSeconds(30));
        return outcome.Report!;
    }

    /// <summary>Rounds, pages per round, pauses and the convergence account, for an assertion's message.</summary>
    public static string Describe(MigrationReport r) =>
        $"{r.Rounds} rounds, pages {string.Join("/", r.DirtyPagesPerRound)}, pauses {string.Join("/", r.PerVm.Select(v => v.DowntimeMs))} ms; {r.Convergence}; {r.Error}";
}
