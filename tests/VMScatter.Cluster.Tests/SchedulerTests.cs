using Akka.Actor;
using Akka.TestKit;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

public class SchedulerTests : Akka.TestKit.Xunit2.TestKit
{
    private static readonly string Journal = TestConfig.TempJournal();
    // A journal stream per test: a migration one test leaves unended is not reconciled by the next test's scheduler.
    private readonly SchedulerSettings Settings = new($"scheduler-under-test-{Guid.NewGuid():N}", TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(60))
    {
        ReconcileTimeout = TimeSpan.FromSeconds(2),
    };
    private const long MiB = 1 << 20;

    public SchedulerTests() : base(TestConfig.Local(Journal)) { }

    private IActorRef Scheduler() => Sys.ActorOf(Props.Create(() => new MigrationSchedulerActor(Settings)));

    private static VmDescription Vm(VmId id, long bytes) => new(id, bytes, 1, "synthetic", "");

    private static VmProfile Profile(VmId id, long bytes, int distinct) =>
        new(id, bytes, distinct, 10, distinct, 16, Enumerable.Range(0, Math.Min(16, distinct)).Select(i => (ulong)(i * 1000 + id.Value.Length)).ToArray());

    [Fact]
    public void Requests_that_cannot_be_served_are_rejected_with_the_reason()
    {
        var scheduler = Scheduler();
        var source = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), source.Ref, [Vm(V("vm-a"), 64 * MiB)]), source.Ref);
        source.ExpectMsg<HostRegistered>();

        scheduler.Tell(new StartMigration(MigrationId.New(), H("src"), [], [], TestConfig.Options()));
        Assert.Contains("no target hosts", ExpectMsg<MigrationRejected>().Reason);

        var target = CreateTestProbe();
        scheduler.Tell(new RegisterTargetHost(H("t1"), target.Ref, 32 * MiB, "127.0.0.1", 1, "synthetic"), target.Ref);
        target.ExpectMsg<HostRegistered>();
        scheduler.Tell(new StartMigration(MigrationId.New(), H("src"), [], [], TestConfig.Options()));
        var tooBig = ExpectMsg<MigrationRejected>().Reason;
        Assert.Contains("vm-a needs 64.0 MiB but the largest target has 32.0 MiB free", tooBig);

        scheduler.Tell(new StartMigration(MigrationId.New(), H("nowhere"), [], [], TestConfig.Options()));
        Assert.Contains("unknown source host 'nowhere' (registered: src)", ExpectMsg<MigrationRejected>().Reason);
        scheduler.Tell(new StartMigration(MigrationId.New(), H("src"), [H("t9")], [], TestConfig.Options()));
        Assert.Contains("unknown target host(s) t9", ExpectMsg<MigrationRejected>().Reason);
        source.ExpectNoMsg(TimeSpan.FromMilliseconds(200)); // nothing was started on the source
    }

    [Fact]
    public void A_vm_is_handed_over_only_on_matching_digests_and_the_journal_remembers_after_a_restart()
    {
        var scheduler = Scheduler();
        var sourceHost = CreateTestProbe();
        var sourceMigration = CreateTestProbe();
        var t1 = CreateTestProbe();
        var t2 = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, [Vm(V("vm-a"), 8 * MiB), Vm(V("vm-b"), 8 * MiB)]), sourceHost.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t1"), t1.Ref, 8 * MiB, "127.0.0.1", 5001, "synthetic"), t1.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t2"), t2.Ref, 8 * MiB, "127.0.0.1", 5002, "synthetic"), t2.Ref);
        sourceHost.ExpectMsg<HostRegistered>();
        t1.ExpectMsg<HostRegistered>();
        t2.ExpectMsg<HostRegistered>();

        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        Assert.Equal(new MigrationAccepted(id, 2, 2), ExpectMsg<MigrationAccepted>());
        var analyze = sourceHost.ExpectMsg<AnalyzeVms>();
        Assert.Equal([V("vm-a"), V("vm-b")], analyze.VmIds);

        scheduler.Tell(new VmsAnalyzed(id, [Profile(V("vm-a"), 8 * MiB, 100), Profile(V("vm-b"), 8 * MiB, 120)], 200), sourceMigration.Ref);
        var placed = ExpectMsg<MigrationPlaced>();
        Assert.Equal(2, placed.TargetOfVm.Values.Distinct().Count()); // each target fits one VM
        var probes = new Dictionary<HostId, TestProbe> { [H("t1")] = t1, [H("t2")] = t2 };
        var targetOfA = probes[placed.TargetOfVm[V("vm-a")]];
        var targetOfB = probes[placed.TargetOfVm[V("vm-b")]];
        var prepareA = targetOfA.ExpectMsg<PrepareReceive>();
        var prepareB = targetOfB.ExpectMsg<PrepareReceive>();
        Assert.Equal(sourceMigration.Ref, prepareA.SourceMigration);
        // Each target its own key; both ends of the link between them the same link key; no target the master secret.
        Assert.Equal(32, prepareA.Keys.Own.Length);
        Assert.NotEqual(prepareA.Keys.Own, prepareB.Keys.Own);
        Assert.Equal(prepareA.Keys.Link(prepareB.SelfIndex).ToArray(), prepareB.Keys.Link(prepareA.SelfIndex).ToArray());
        Assert.Equal(new byte[32], prepareA.Keys.Link(prepareA.SelfIndex).ToArray());
        Assert.Equal([V("vm-a")], prepareA.Vms.Select(v => v.Vm.Id));
        scheduler.Tell(new ReceiverReady(id, placed.TargetOfVm[V("vm-a")]), targetOfA.Ref);
        sourceMigration.ExpectNoMsg(TimeSpan.FromMilliseconds(100)); // not before every target is ready
        scheduler.Tell(new ReceiverReady(id, placed.TargetOfVm[V("vm-b")]), targetOfB.Ref);
        var begin = sourceMigration.ExpectMsg<BeginTransfer>();
        Assert.Equal(2, begin.Targets.Count);
        // The source holds the master secret; what each target got is derived from it, and is not it.
        Assert.Equal(DataPlaneKeys.ForReceiver(begin.DataPlaneSecret, id.Value, prepareA.SelfIndex, 2), prepareA.Keys);
        Assert.Equal(DataPlaneKeys.ForReceiver(begin.DataPlaneSecret, id.Value, prepareB.SelfIndex, 2), prepareB.Keys);
        Assert.NotEqual(begin.DataPlaneSecret, prepareA.Keys.Own);

        var stats = new TransferStats(3, 1000, 10, 5, 4096 * 5, 2048 * 5, 20, 200, 3, 0, 0, [100, 10, 2], 0.1, [0.2, 0.05, 0.01], 0.01, 12, 10, true, "converged");
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        scheduler.Tell(new TransferCompleted(id, [new VmDigest(V("vm-a"), "aaaa") { DirtyTracking = "re-hash: 3 whole-memory passes" }, new VmDigest(V("vm-b"), "bbbb")],
            new Dictionary<VmId, long> { [V("vm-a")] = now, [V("vm-b")] = now }, stats), sourceMigration.Ref);
        scheduler.Tell(new TargetDigests(id, placed.TargetOfVm[V("vm-a")], [new VmDigest(V("vm-a"), "aaaa")], 600, 0, 3, 0), targetOfA.Ref);
        scheduler.Tell(new TargetDigests(id, placed.TargetOfVm[V("vm-b")], [new VmDigest(V("vm-b"), "b0b0")], 400, 0, 2, 0), targetOfB.Ref);

        // The start goes through the source's fence, to vm-a's own target.
        var grant = sourceMigration.ExpectMsg<GrantHandover>();
        Assert.Equal((V("vm-a"), placed.TargetOfVm[V("vm-a")], targetOfA.Ref), (grant.VmId, grant.TargetHostId, grant.Target));
        Assert.Equal([V("vm-b")], targetOfB.ExpectMsg<DiscardReceived>().VmIds);
        var resumeB = sourceHost.ExpectMsg<ResumeSourceVm>();
        Assert.Equal(V("vm-b"), resumeB.VmId);
        Assert.Contains("digest mismatch", resumeB.Reason);
        Assert.Equal(V("vm-b"), ExpectMsg<VmHandoverFailed>().VmId);

        scheduler.Tell(new VmResumedOnTarget(id, V("vm-a"), placed.TargetOfVm[V("vm-a")], now + 42), targetOfA.Ref);
        var handed = ExpectMsg<VmHandedOver>();
        Assert.Equal((V("vm-a"), 42.0), (handed.VmId, handed.DowntimeMs));
        Assert.Equal(V("vm-a"), sourceHost.ExpectMsg<ReleaseSourceVm>().VmId); // the source stops it only now
        scheduler.Tell(new SourceVmReleased(id, V("vm-a")), sourceHost.Ref);
        ExpectNoMsg(TimeSpan.FromMilliseconds(200)); // vm-b is not yet confirmed running on the source
        scheduler.Tell(new SourceVmResumed(id, V("vm-b")), sourceHost.Ref);

        var report = ExpectMsg<MigrationFinished>().Report;
        Assert.False(report.Verified);
        Assert.Equal((2, 2, 16 * MiB, 1000L, 1000L), (report.Vms, report.Targets, report.GuestBytes, report.BytesSent, report.BytesReceived));
        Assert.Equal(Domain.Pages.Page.BytesOf(220), report.NaiveBytes);
        var a = report.PerVm.Single(v => v.Id == "vm-a");
        var b = report.PerVm.Single(v => v.Id == "vm-b");
        Assert.True(a.DigestMatched && a.HandedOver);
        Assert.False(b.DigestMatched || b.HandedOver);
        // Each VM's dirty tracking as its source told it; none told for vm-b.
        Assert.Equal(("re-hash: 3 whole-memory passes", null), (a.DirtyTracking, b.DirtyTracking));

        // A new incarnation of the scheduler recovers the same record from the journal.
        Watch(scheduler);
        Sys.Stop(scheduler);
        ExpectTerminated(scheduler);
        var recovered = Scheduler();
        recovered.Tell(new GetMigrationStatus(id));
        var status = ExpectMsg<MigrationStatus>();
        Assert.Equal(MigrationPhase.Completed, status.Phase);
        Assert.Equal([V("vm-a")], status.HandedOver);
        Assert.Equal([V("vm-b")], status.Failed);
        Assert.Equal(report.BytesSent, status.Report!.BytesSent);
        Assert.Equal(report.PerVm.Select(v => v.DigestMatched), status.Report.PerVm.Select(v => v.DigestMatched));
    }

    /// <summary>
    /// Targets announce their free memory every few seconds. One that reserved room for its VMs (its receiver ready) is
    /// full from then on, though the announcement held here is older: a VM re-placed from a lost target must not be
    /// offered that room (it was, once, in a loaded suite run: the target refused the extension, and the report named it
    /// as the VM's new target while the VM stayed on the source).
    /// </summary>
    [Fact]
    public void Room_a_target_reserved_is_not_offered_to_a_re_placement_before_its_next_announcement()
    {
        var scheduler = Scheduler();
        var sourceHost = CreateTestProbe();
        var sourceMigration = CreateTestProbe();
        var probes = new Dictionary<HostId, TestProbe> { [H("t1")] = CreateTestProbe(), [H("t2")] = CreateTestProbe() };
        scheduler.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, [Vm(V("vm-a"), 8 * MiB), Vm(V("vm-b"), 8 * MiB)]), sourceHost.Ref);
        sourceHost.ExpectMsg<HostRegistered>();
        foreach (var (host, probe) in probes)
        {
            scheduler.Tell(new RegisterTargetHost(host, probe.Ref, 8 * MiB, "127.0.0.1", 5000 + probes.Keys.ToList().IndexOf(host), "synthetic"), probe.Ref);
            probe.ExpectMsg<HostRegistered>();
        }
        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        ExpectMsg<MigrationAccepted>();
        sourceHost.ExpectMsg<AnalyzeVms>();
        scheduler.Tell(new VmsAnalyzed(id, [Profile(V("vm-a"), 8 * MiB, 100), Profile(V("vm-b"), 8 * MiB, 120)], 200), sourceMigration.Ref);
        var placed = ExpectMsg<MigrationPlaced>();
        var prepares = probes.ToDictionary(p => p.Key, p => p.Value.ExpectMsg<PrepareReceive>());
        foreach (var (host, probe) in probes) scheduler.Tell(new ReceiverReady(id, host), probe.Ref);
        sourceMigration.ExpectMsg<BeginTransfer>();

        var lost = placed.TargetOfVm[V("vm-b")];
        var kept = probes.Keys.Single(h => h != lost);
        scheduler.Tell(new TargetUnreachable(id, prepares[lost].SelfIndex, lost, "test: crashed"), sourceMigration.Ref);
        sourceMigration.FishForMessage(m => m is TargetLost);
        scheduler.Tell(new VmsOrphaned(id, lost, [V("vm-b")]), sourceMigration.Ref);
        var replace = sourceMigration.FishForMessage<ReplaceVms>(_ => true);
        Assert.Equal([V("vm-b")], replace.Unplaced);
        Assert.Empty(replace.Assignments);
        probes[kept].ExpectNoMsg(TimeSpan.FromMilliseconds(200)); // no ExtendReceive: it has no room left
    }

    [Fact]
    public void A_host_id_registered_by_one_host_is_refused_to_another()
    {
        var scheduler = Scheduler();
        var first = CreateTestProbe();
        var impostor = CreateTestProbe();
        scheduler.Tell(new RegisterTargetHost(H("t1"), first.Ref, 8 * MiB, "127.0.0.1", 1, "synthetic"), first.Ref);
        Assert.Equal(H("t1"), first.ExpectMsg<HostRegistered>().HostId);
        scheduler.Tell(new RegisterTargetHost(H("t1"), impostor.Ref, 64 * MiB, "127.0.0.1", 2, "synthetic"), impostor.Ref);
        Assert.StartsWith("host id t1 is registered by", impostor.ExpectMsg<HostRegistrationRefused>().Reason);
        scheduler.Tell(new RegisterSourceHost(H("t1"), impostor.Ref, [Vm(V("vm-a"), MiB)]), impostor.Ref);
        impostor.ExpectMsg<HostRegistrationRefused>();
        // The first host keeps its name and its announced capacity: a 16 MiB VM does not fit its 8 MiB.
        scheduler.Tell(new RegisterSourceHost(H("src"), first.Ref, [Vm(V("vm-a"), 16 * MiB)]), first.Ref);
        first.ExpectMsg<HostRegistered>();
        scheduler.Tell(new StartMigration(MigrationId.New(), H("src"), [], [], TestConfig.Options()));
        Assert.Contains("largest target has 8.0 MiB free", ExpectMsg<MigrationRejected>().Reason);
        // Once the first host is gone, the id is free again.
        Watch(first.Ref);
        Sys.Stop(first.Ref);
        ExpectTerminated(first.Ref);
        AwaitAssert(() =>
        {
            scheduler.Tell(new RegisterTargetHost(H("t1"), impostor.Ref, 64 * MiB, "127.0.0.1", 2, "synthetic"), impostor.Ref);
            impostor.ExpectMsg<HostRegistered>(TimeSpan.FromMilliseconds(500));
        }, TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void Targets_announce_their_rack_and_vms_sharing_pages_are_placed_under_one_switch()
    {
        var scheduler = Scheduler();
        var source = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), source.Ref, new[] { V("a1"), V("a2"), V("b1"), V("b2") }.Select(id => Vm(id, 8 * MiB)).ToArray()), source.Ref);
        var rackOf = new Dictionary<HostId, string> { [H("t1")] = "r1", [H("t2")] = "r1", [H("t3")] = "r2", [H("t4")] = "r2" };
        foreach (var (host, rack) in rackOf)
        {
            var target = CreateTestProbe();
            scheduler.Tell(new RegisterTargetHost(host, target.Ref, 8 * MiB, "127.0.0.1", 1, "synthetic", rack), target.Ref);
        }
        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        ExpectMsg<MigrationAccepted>();
        source.FishForMessage(m => m is AnalyzeVms);
        // a1 and a2 share 50 contents, b1 and b2 another 50; each has 50 of its own. One VM fits each target, so only
        // the rack links tell placements apart.
        VmProfile P(VmId vm, int shared, int own) => new(vm, 8 * MiB, 100, 0, 100, 256,
            Enumerable.Range(shared, 50).Concat(Enumerable.Range(own, 50)).Select(i => VMScatter.Domain.Pages.Mix64.Mix((ulong)i)).Order().ToArray());
        scheduler.Tell(new VmsAnalyzed(id, [P(V("a1"), 0, 1000), P(V("b1"), 100, 2000), P(V("a2"), 0, 3000), P(V("b2"), 100, 4000)], 300));
        var placed = ExpectMsg<MigrationPlaced>();
        Assert.Equal(4, placed.TargetOfVm.Values.Distinct().Count());
        Assert.Equal(rackOf[placed.TargetOfVm[V("a1")]], rackOf[placed.TargetOfVm[V("a2")]]);
        Assert.Equal(rackOf[placed.TargetOfVm[V("b1")]], rackOf[placed.TargetOfVm[V("b2")]]);
    }

    [Fact]
    public void A_migration_whose_source_never_comes_back_after_a_restart_is_recorded_as_aborted_with_that_reason()
    {
        var scheduler = Scheduler();
        var source = CreateTestProbe();
        var target = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), source.Ref, [Vm(V("vm-a"), 8 * MiB)]), source.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t1"), target.Ref, 8 * MiB, "127.0.0.1", 1, "synthetic"), target.Ref);
        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        ExpectMsg<MigrationAccepted>();
        source.FishForMessage(m => m is AnalyzeVms);
        Watch(scheduler);
        Sys.Stop(scheduler);
        ExpectTerminated(scheduler);
        var recovered = Scheduler();
        recovered.Tell(new GetMigrationStatus(id));
        Assert.Equal(MigrationPhase.Reconciling, ExpectMsg<MigrationStatus>().Phase);
        // The source never registers with the new incarnation: after the bound (2 s here) the migration is aborted, saying why.
        AwaitAssert(() =>
        {
            recovered.Tell(new FollowMigration(id));
            var report = ExpectMsg<MigrationFinished>().Report;
            Assert.Contains("source host src did not re-register", report.Error);
            Assert.Equal(["vm-a"], report.PerVm.Where(v => !v.HandedOver).Select(v => v.Id));
        }, TimeSpan.FromSeconds(10));
        recovered.Tell(new GetMigrationStatus(id));
        Assert.Equal(MigrationPhase.Aborted, ExpectMsg<MigrationStatus>().Phase);
    }

    [Fact]
    public void A_scheduler_that_takes_over_asks_the_source_and_targets_and_journals_where_each_vm_runs()
    {
        var scheduler = Scheduler();
        var sourceHost = CreateTestProbe();
        var sourceMigration = CreateTestProbe();
        var t1 = CreateTestProbe();
        var t2 = CreateTestProbe();
        VmDescription[] vms = [Vm(V("vm-a"), 8 * MiB), Vm(V("vm-b"), 8 * MiB), Vm(V("vm-c"), 8 * MiB)];
        scheduler.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, vms), sourceHost.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t1"), t1.Ref, 16 * MiB, "127.0.0.1", 5001, "synthetic"), t1.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t2"), t2.Ref, 16 * MiB, "127.0.0.1", 5002, "synthetic"), t2.Ref);
        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        ExpectMsg<MigrationAccepted>();
        sourceHost.FishForMessage(m => m is AnalyzeVms);
        scheduler.Tell(new VmsAnalyzed(id, vms.Select(v => Profile(v.Id, v.MemoryBytes, 100)).ToArray(), 300), sourceMigration.Ref);
        var placed = ExpectMsg<MigrationPlaced>().TargetOfVm;
        Watch(scheduler);
        Sys.Stop(scheduler);
        ExpectTerminated(scheduler);

        // The new incarnation waits for the source's registration, then asks it.
        var recovered = Scheduler();
        recovered.Tell(new GetMigrationStatus(id));
        Assert.Equal(MigrationPhase.Reconciling, ExpectMsg<MigrationStatus>().Phase);
        var probes = new Dictionary<HostId, TestProbe> { [H("t1")] = t1, [H("t2")] = t2 };
        foreach (var (host, probe) in probes) recovered.Tell(new RegisterTargetHost(host, probe.Ref, 16 * MiB, "127.0.0.1", 5001, "synthetic"), probe.Ref);
        recovered.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, vms), sourceHost.Ref);
        var ask = (ReconcileMigration)sourceHost.FishForMessage(m => m is ReconcileMigration);
        Assert.Equal((id, 3), (ask.MigrationId, ask.VmIds.Count));
        // vm-a and vm-c were granted to their targets; vm-b runs on the source.
        recovered.Tell(new SourceMigrationState(id, true, [
            new SourceVmState(V("vm-a"), SourceVmCondition.Granted, placed[V("vm-a")], "digest-a-0123456789"),
            new SourceVmState(V("vm-b"), SourceVmCondition.OnSource, null, null),
            new SourceVmState(V("vm-c"), SourceVmCondition.Granted, placed[V("vm-c")], "digest-c-0123456789")]), sourceMigration.Ref);
        // Each granted VM's target is asked; vm-a runs there, vm-c was never started (its grant went back to the source).
        var asked = new HashSet<VmId>();
        while (asked.Count < 2)
        {
            var probe = probes[placed[V(asked.Count == 0 ? "vm-a" : "vm-c")]];
            var query = (QueryLanded)probe.FishForMessage(m => m is QueryLanded);
            Assert.Equal(sourceMigration.Ref, query.GrantedBy);
            var host = probes.Single(p => p.Value == probe).Key;
            recovered.Tell(new LandedState(id, host, query.VmIds.Where(v => v == V("vm-a")).ToArray(), [], query.VmIds.Where(v => v == V("vm-c")).ToArray()), probe.Ref);
            asked.UnionWith(query.VmIds);
        }
        Assert.Equal(V("vm-a"), ((ReleaseSourceVm)sourceHost.FishForMessage(m => m is ReleaseSourceVm)).VmId);
        Assert.Equal(V("vm-c"), ((ResumeSourceVm)sourceHost.FishForMessage(m => m is ResumeSourceVm)).VmId);

        AwaitAssert(() =>
        {
            recovered.Tell(new GetMigrationStatus(id));
            var status = ExpectMsg<MigrationStatus>();
            Assert.Equal(MigrationPhase.Aborted, status.Phase);
            Assert.Equal([V("vm-a")], status.HandedOver);
            Assert.Equal([V("vm-b"), V("vm-c")], status.Failed.Order());
        }, TimeSpan.FromSeconds(10));
        recovered.Tell(new FollowMigration(id));
        var report = ExpectMsg<MigrationFinished>().Report;
        Assert.Equal([("vm-a", true, placed[V("vm-a")].Value), ("vm-b", false, placed[V("vm-b")].Value), ("vm-c", false, placed[V("vm-c")].Value)],
            report.PerVm.Select(v => (v.Id, v.HandedOver, v.Target)).OrderBy(v => v.Id));
        Assert.Contains("1 handed over, 2 on the source", report.Error);
    }
}
