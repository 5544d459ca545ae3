using VMScatter.Bench.Chaos;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The chaos harness in the suite: a run on a fresh multi-process cluster, a target killed -9 at a random moment after
/// placement and restarted; every invariant must hold. One run, not two: a scheduler node killed mid-migration is
/// FailoverTests' and CrashTests' case, and the suite must stay well under 15 minutes on 2 cores (`./vmscatter chaos`
/// runs as many as one wants). Needs the PostgreSQL that ./test.sh starts (or VMSCATTER_TEST_POSTGRES), as FailoverTests.
/// </summary>
public class ChaosTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly string Postgres = Environment.GetEnvironmentVariable("VMSCATTER_TEST_POSTGRES")
        ?? "Host=127.0.0.1;Port=5432;Username=vmscatter;Password=vmscatter;Database=vmscatter_test";

    [Fact]
    public async Task A_target_killed_mid_migration_leaves_every_vm_running_exactly_once()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-chaos-test-").FullName;
        var summary = await ChaosHarness.RunAsync(new ChaosOptions
        {
            Runs = 1, Kills = [ChaosRole.Target], Seed = 3, Targets = 3, PostgresConnectionString = Postgres, WorkDirectory = work,
            VmscatterDll = Path.Combine(AppContext.BaseDirectory, "vmscatter.dll"), Log = output.WriteLine,
            // Every node on this machine, as the suite's node processes: membership ticks 5x as often (failure detection
            // as the harness sets it), serializers compiled on first use.
            ExtraHocon = NodeProcess.SuiteNodeHocon,
        });
        foreach (var f in summary.Failures) output.WriteLine($"run {f.Run}: {f.Invariant}: {f.Detail} (logs {f.Logs})");
        Assert.Equal(1, summary.Runs);
        Assert.Equal((1, 0, 0), (summary.KillsByRole.GetValueOrDefault("target"), summary.KillsByRole.GetValueOrDefault("scheduler"), summary.KillsByRole.GetValueOrDefault("source")));
        Assert.Equal((0, 0), (summary.VmsLost, summary.VmsRunTwice));
        Assert.True(summary.AllInvariantsHeld, string.Join("\n", summary.Failures.Select(f => $"run {f.Run}: {f.Invariant}: {f.Detail}")));
        // Every VM accounted for: moved (some may since have ended with a killed target), left on the source, or ended with a killed source.
        Assert.All(summary.PerRun, r => Assert.Equal(6, r.HandedOver + r.OnSource + r.EndedWithKilledSource));
        if (summary.AllInvariantsHeld) Directory.Delete(work, recursive: true);
    }
}
