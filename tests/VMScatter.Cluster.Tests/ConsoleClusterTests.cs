using System.Collections.Concurrent;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>The admin console against an in-process cluster, through ClusterClient and the nodes' receptionists.</summary>
public class ConsoleClusterTests
{
    private static readonly SyntheticGuestModel Model = new() { MemoryBytes = 16L << 20, DirtyPagesPerSecond = 1500, WritableWorkingSetPages = 256 };

    [Fact]
    public async Task A_cancel_mid_transfer_through_the_cluster_client_leaves_every_vm_running_exactly_once()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model, 41));
        var backends = new ConcurrentDictionary<string, LandingBackend>();
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 4 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = host => backends[host] = new LandingBackend(),
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 2, TimeSpan.FromSeconds(30));
        // 20 Mbit/s: the fleet's distinct pages take well over ten seconds, so the cancel lands mid-transfer.
        var request = new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options() with { LinkBitsPerSecond = 20_000_000 });
        var sending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var migration = MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy, request,
            e => { if (e is MigrationProgress { BytesSent: > 0 }) sending.TrySetResult(); }, TimeSpan.FromSeconds(30));
        await sending.Task.WaitAsync(TimeSpan.FromSeconds(60));

        // The console is a plain remote system: it asks the source node's receptionist, not a member of the cluster.
        await using var console = AdminClient.Start([cluster.Source.Address.ToString()], "127.0.0.1", TimeSpan.FromSeconds(15));
        var members = await console.AskAsync<ClusterMembers>(AdminClient.ClusterInfoPath, GetClusterMembers.Instance);
        Assert.Equal(4, members.Members.Count);
        Assert.All(members.Members, m => Assert.True(m.Reachable && m.Status == "Up", $"{m.Address} {m.Status}"));
        Assert.Equal(["scheduler", "source", "target", "target"], members.Members.SelectMany(m => m.Roles).Order(StringComparer.Ordinal));
        var status = await console.AskAsync<SchedulerStatus>(AdminClient.SchedulerPath, GetSchedulerStatus.Instance);
        Assert.Equal(["source", "target-1", "target-2"], status.Hosts.Select(h => h.HostId.Value));
        Assert.All(status.Hosts.Where(h => h.Role == "target"), h => Assert.Equal(4 * Model.MemoryBytes, h.CapacityBytes));
        var inFlight = Assert.Single(status.Migrations);
        Assert.Equal((request.MigrationId, MigrationPhase.Transferring), (inFlight.MigrationId, inFlight.Phase));
        Assert.True(inFlight.BytesSent > 0);
        Assert.Equal(4, inFlight.Vms.Count(v => v.TargetHostId is not null));

        var cancel = await console.AskAsync<CancelAnswer>(AdminClient.SchedulerPath, new CancelMigration(request.MigrationId));
        Assert.True(cancel.Accepted, cancel.Message);
        var outcome = await migration.WaitAsync(TimeSpan.FromSeconds(90));

        var report = outcome.Report!;
        Assert.Equal(MigrationSchedulerActor.CancelReason, report.Error);
        Assert.False(report.Verified);
        Assert.Contains(report.PerVm, v => !v.HandedOver);
        foreach (var vm in report.PerVm)
        {
            // Exactly one running copy: on its target with the source stopped, or on the source with none on a target.
            var source = fleet.Single(v => v.Description.Id == V(vm.Id));
            Assert.Equal(vm.HandedOver, backends.Values.Any(b => b.Landed.ContainsKey(V(vm.Id))));
            Assert.Equal(vm.HandedOver ? VmRunState.Stopped : VmRunState.Running, source.State);
            if (!vm.HandedOver) Assert.Equal(MigrationSchedulerActor.CancelReason, vm.Error);
        }

        var again = await console.AskAsync<CancelAnswer>(AdminClient.SchedulerPath, new CancelMigration(request.MigrationId));
        Assert.Equal($"migration {request.MigrationId} has already ended (completed)", again.Message);
        var listed = Assert.Single((await console.AskAsync<MigrationList>(AdminClient.SchedulerPath, ListMigrations.Instance)).Migrations);
        Assert.Equal((request.MigrationId, MigrationPhase.Completed, 4, MigrationSchedulerActor.CancelReason), (listed.MigrationId, listed.Phase, listed.Vms, listed.Error));
        Assert.Equal(report.PerVm.Count(v => v.HandedOver), listed.HandedOver);
    }

    [Fact]
    public async Task A_cluster_that_does_not_answer_is_a_timeout_within_the_bound()
    {
        await using var console = AdminClient.Start(["127.0.0.1:1"], "127.0.0.1", TimeSpan.FromSeconds(2));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<ConsoleTimeoutException>(() => console.AskAsync<MigrationList>(AdminClient.SchedulerPath, ListMigrations.Instance, "the migration scheduler"));
        Assert.Equal("the migration scheduler did not answer within 2s (seeds: 127.0.0.1:1)", e.Message);
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(10));
    }

    /// <summary>The synthetic backend, recording the VMs it started.</summary>
    private sealed class LandingBackend : ITargetBackend
    {
        private readonly SyntheticTargetBackend _inner = new();
        public ConcurrentDictionary<VmId, bool> Landed { get; } = new();
        public string Name => "landing";
        public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);

        public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
        {
            var landed = await _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);
            Assert.True(Landed.TryAdd(vm.Id, true), $"VM {vm.Id} started twice on one host");
            return landed;
        }
    }
}
