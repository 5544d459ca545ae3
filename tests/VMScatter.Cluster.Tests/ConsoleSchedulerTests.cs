using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>The scheduler's answers to the admin console (status, list) and the operator's cancel, driven by probes.</summary>
public class ConsoleSchedulerTests : Akka.TestKit.Xunit2.TestKit
{
    private static readonly string Journal = TestConfig.TempJournal();
    private readonly SchedulerSettings _settings = new($"console-scheduler-{Guid.NewGuid():N}", TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(60)) { ReconcileTimeout = TimeSpan.FromSeconds(2) };
    private const long MiB = 1 << 20;

    public ConsoleSchedulerTests() : base(TestConfig.Local(Journal)) { }

    private IActorRef Scheduler() => Sys.ActorOf(Props.Create(() => new MigrationSchedulerActor(_settings)));

    private static VmDescription Vm(VmId id, long bytes) => new(id, bytes, 1, "synthetic", "");

    private static VmProfile Profile(VmId id, long bytes, int distinct) =>
        new(id, bytes, distinct, 10, distinct, 16, Enumerable.Range(0, Math.Min(16, distinct)).Select(i => (ulong)(i * 1000 + id.Value.Length)).ToArray());

    [Fact]
    public void Status_shows_hosts_and_progress_a_cancel_resumes_every_vm_on_the_source_and_list_keeps_it_after_a_restart()
    {
        var scheduler = Scheduler();
        var sourceHost = CreateTestProbe();
        var sourceMigration = CreateTestProbe();
        var t1 = CreateTestProbe();
        var t2 = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, [Vm(V("vm-a"), 8 * MiB), Vm(V("vm-b"), 8 * MiB)]), sourceHost.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t1"), t1.Ref, 8 * MiB, "127.0.0.1", 5001, "synthetic", "rack-1", CapacityBytes: 16 * MiB), t1.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t2"), t2.Ref, 8 * MiB, "127.0.0.1", 5002, "synthetic", "rack-2", CapacityBytes: 32 * MiB), t2.Ref);
        sourceHost.ExpectMsg<HostRegistered>();
        t1.ExpectMsg<HostRegistered>();
        t2.ExpectMsg<HostRegistered>();

        var id = MigrationId.New();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()));
        ExpectMsg<MigrationAccepted>();
        sourceHost.ExpectMsg<AnalyzeVms>();
        scheduler.Tell(new VmsAnalyzed(id, [Profile(V("vm-a"), 8 * MiB, 100), Profile(V("vm-b"), 8 * MiB, 120)], 200), sourceMigration.Ref);
        var placed = ExpectMsg<MigrationPlaced>();
        var probes = new Dictionary<HostId, Akka.TestKit.TestProbe> { [H("t1")] = t1, [H("t2")] = t2 };
        foreach (var (host, probe) in probes)
        {
            probe.ExpectMsg<PrepareReceive>();
            scheduler.Tell(new ReceiverReady(id, host), probe.Ref);
        }
        sourceMigration.ExpectMsg<BeginTransfer>();

        // Round 0 to every target, then the first wave (vm-a's target only).
        var targetOfA = placed.TargetOfVm[V("vm-a")];
        scheduler.Tell(new TransferProgress(id, 0, 1_000, 10, 500), sourceMigration.Ref);
        scheduler.Tell(new TransferProgress(id, 1, 5_000, 20, 40, 0, [targetOfA]), sourceMigration.Ref);
        ExpectMsg<MigrationProgress>();
        ExpectMsg<MigrationProgress>();
        scheduler.Tell(GetSchedulerStatus.Instance);
        var status = ExpectMsg<SchedulerStatus>();

        Assert.Equal(["src", "t1", "t2"], status.Hosts.Select(h => h.HostId.Value));
        var src = status.Hosts[0];
        Assert.Equal(("source", 2, 16 * MiB), (src.Role, src.Vms, src.CapacityBytes));
        // It announced 8 MiB free, then reserved them for the VM arriving there (its receiver is ready): none left.
        Assert.Equal(("target", 16 * MiB, 0L, "rack-1"), (status.Hosts[1].Role, status.Hosts[1].CapacityBytes, status.Hosts[1].FreeBytes, status.Hosts[1].Rack));
        Assert.Equal((32 * MiB, "rack-2"), (status.Hosts[2].CapacityBytes, status.Hosts[2].Rack));
        var run = Assert.Single(status.Migrations);
        Assert.Equal((id, H("src"), MigrationPhase.Transferring, 1, 0, 5_000L, 16 * MiB), (run.MigrationId, run.SourceHostId, run.Phase, run.Round, run.Wave, run.BytesSent, run.GuestBytes));
        Assert.Equal(targetOfA, run.Vms.Single(v => v.VmId == V("vm-a")).TargetHostId);
        Assert.Equal("transferring", run.Vms.Single(v => v.VmId == V("vm-a")).Phase);
        Assert.Equal("waiting for its wave", run.Vms.Single(v => v.VmId == V("vm-b")).Phase);
        // vm-a's wave is under way: round 1, the 4 000 bytes sent since round 0's last report; its round not yet built, so no ETA.
        var a = run.Vms.Single(v => v.VmId == V("vm-a"));
        Assert.Equal((1, 4_000L, (double?)null), (a.Round, a.RoundBytes, a.EtaSeconds));
        var b = run.Vms.Single(v => v.VmId == V("vm-b"));
        Assert.Equal((-1, 0L, (double?)null), (b.Round, b.RoundBytes, b.EtaSeconds));
        Assert.Equal(("-", "-", "-", "-"), Cli.View.StatusView.VmColumns(b));
        Assert.Null(run.Error);

        scheduler.Tell(new CancelMigration(id));
        var cancelled = ExpectMsg<CancelAnswer>();
        Assert.True(cancelled.Accepted, cancelled.Message);
        Assert.Contains("2 VM(s) stay on source src", cancelled.Message);
        // FailRun's way: the source aborts and resumes both VMs, the targets discard what they received.
        Assert.Equal(MigrationSchedulerActor.CancelReason, sourceHost.ExpectMsg<AbortMigration>().Reason);
        var resumed = new[] { sourceHost.ExpectMsg<ResumeSourceVm>(), sourceHost.ExpectMsg<ResumeSourceVm>() };
        Assert.Equal([V("vm-a"), V("vm-b")], resumed.Select(r => r.VmId).Order());
        Assert.All(resumed, r => Assert.Equal(MigrationSchedulerActor.CancelReason, r.Reason));
        Assert.Equal(2, new[] { ExpectMsg<VmHandoverFailed>(), ExpectMsg<VmHandoverFailed>() }.Count(f => f.Reason == MigrationSchedulerActor.CancelReason));
        Assert.Single(t1.ExpectMsg<DiscardReceived>().VmIds);
        Assert.Single(t2.ExpectMsg<DiscardReceived>().VmIds);

        scheduler.Tell(new CancelMigration(id));
        var twice = ExpectMsg<CancelAnswer>();
        Assert.False(twice.Accepted);
        Assert.Equal($"migration {id} is already ending: {MigrationSchedulerActor.CancelReason}", twice.Message);

        scheduler.Tell(new SourceVmResumed(id, V("vm-a")), sourceHost.Ref);
        scheduler.Tell(new SourceVmResumed(id, V("vm-b")), sourceHost.Ref);
        var report = ExpectMsg<MigrationFinished>().Report;
        Assert.Equal(MigrationSchedulerActor.CancelReason, report.Error);
        Assert.False(report.Verified);
        Assert.Equal(5_000, report.BytesSent); // the source's last progress report: no final account came
        Assert.All(report.PerVm, v => Assert.Equal((false, MigrationSchedulerActor.CancelReason), (v.HandedOver, v.Error)));

        // The list is the journal's: the same after a new incarnation replays it.
        scheduler.Tell(ListMigrations.Instance);
        var before = Assert.Single(ExpectMsg<MigrationList>().Migrations);
        Assert.Equal((id, MigrationPhase.Completed, H("src"), 2, 0, false), (before.MigrationId, before.Phase, before.SourceHostId, before.Vms, before.HandedOver, before.Verified));
        Assert.Equal([H("t1"), H("t2")], before.Targets);
        Assert.Equal(MigrationSchedulerActor.CancelReason, before.Error);
        Watch(scheduler);
        Sys.Stop(scheduler);
        ExpectTerminated(scheduler);
        var recovered = Scheduler();
        recovered.Tell(ListMigrations.Instance);
        var after = Assert.Single(ExpectMsg<MigrationList>().Migrations);
        Assert.Equal((before.MigrationId, before.Phase, before.StartedUtc, before.Vms, before.Error, before.TotalSeconds), (after.MigrationId, after.Phase, after.StartedUtc, after.Vms, after.Error, after.TotalSeconds));
        Assert.Equal(before.Targets, after.Targets);

        recovered.Tell(new CancelMigration(id));
        Assert.Equal(new CancelAnswer(id, false, $"migration {id} has already ended (completed)"), ExpectMsg<CancelAnswer>());
        var unknown = MigrationId.New();
        recovered.Tell(new CancelMigration(unknown));
        Assert.Equal(new CancelAnswer(unknown, false, $"no migration {unknown} is known to the scheduler"), ExpectMsg<CancelAnswer>());
    }

    [Fact]
    public void The_rate_is_bytes_since_the_first_report_over_the_time_since()
    {
        var rate = new TransferRate();
        var t0 = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        var id = MigrationId.New();
        rate.Observe(new TransferProgress(id, 0, 1_000, 0, 0), t0);
        Assert.Equal(0, rate.BytesPerSecond);
        rate.Observe(new TransferProgress(id, 1, 5_001_000, 0, 0), t0.AddSeconds(2));
        Assert.Equal(2_500_000, rate.BytesPerSecond);
        Assert.Equal(1, rate.Latest!.Round);
    }

    /// <summary>
    /// `migrate` behind a cluster client hears the run's events through a receptionist's response tunnel; when that moved
    /// (another receptionist), its poll by id comes through a new tunnel, and the run's events go there from then on.
    /// </summary>
    [Fact]
    public void A_follow_by_id_points_the_runs_events_at_whoever_asked()
    {
        var scheduler = Scheduler();
        var sourceHost = CreateTestProbe();
        var sourceMigration = CreateTestProbe();
        var t1 = CreateTestProbe();
        scheduler.Tell(new RegisterSourceHost(H("src"), sourceHost.Ref, [Vm(V("vm-a"), 8 * MiB)]), sourceHost.Ref);
        scheduler.Tell(new RegisterTargetHost(H("t1"), t1.Ref, 16 * MiB, "127.0.0.1", 5001, "synthetic"), t1.Ref);
        sourceHost.ExpectMsg<HostRegistered>();
        t1.ExpectMsg<HostRegistered>();

        var id = MigrationId.New();
        var firstTunnel = CreateTestProbe();
        scheduler.Tell(new StartMigration(id, H("src"), [], [], TestConfig.Options()), firstTunnel.Ref);
        firstTunnel.ExpectMsg<MigrationAccepted>();
        sourceHost.ExpectMsg<AnalyzeVms>();

        var secondTunnel = CreateTestProbe();
        scheduler.Tell(new FollowMigration(id), secondTunnel.Ref);
        var followed = secondTunnel.ExpectMsg<MigrationStatus>();
        Assert.Equal((id, MigrationPhase.Analysing), (followed.MigrationId, followed.Phase));
        scheduler.Tell(new VmsAnalyzed(id, [Profile(V("vm-a"), 8 * MiB, 100)], 100), sourceMigration.Ref);
        Assert.Equal(H("t1"), secondTunnel.ExpectMsg<MigrationPlaced>().TargetOfVm[V("vm-a")]);
        t1.ExpectMsg<PrepareReceive>();
        scheduler.Tell(new ReceiverReady(id, H("t1")), t1.Ref);
        sourceMigration.ExpectMsg<BeginTransfer>();
        scheduler.Tell(new TransferProgress(id, 0, 1_000, 10, 500), sourceMigration.Ref);
        Assert.Equal(1_000, secondTunnel.ExpectMsg<MigrationProgress>().BytesSent);
    }

    [Theory]
    [InlineData(null, 10.0, null)] // the round is not built yet: nothing known to remain
    [InlineData(-1L, 10.0, null)]
    [InlineData(90L, 0.0, null)] // nothing moves yet
    [InlineData(90L, double.PositiveInfinity, null)]
    [InlineData(0L, 0.0, 0.0)] // nothing remains
    [InlineData(90L, 20.0, 4.5)]
    public void The_eta_is_what_remains_over_the_current_rate_and_unknown_without_either(long? remaining, double perSecond, double? seconds) =>
        Assert.Equal(seconds, TransferEta.Of(remaining, perSecond)?.TotalSeconds);

    [Fact]
    public void A_rounds_bytes_rate_and_eta_are_measured_from_its_start()
    {
        var id = MigrationId.New();
        var t0 = new DateTime(2026, 12, 1, 8, 0, 0, DateTimeKind.Utc);
        var rate = new TransferRate();
        Assert.Null(rate.RoundEta);

        // Round 0's first report: its bytes so far, no rate yet, its records not yet planned.
        rate.Observe(new TransferProgress(id, 0, 1_000, 10, 500), t0);
        Assert.Equal((1_000L, 0.0, (long?)null, (TimeSpan?)null), (rate.RoundBytes, rate.RoundBytesPerSecond, rate.RoundRecordsLeft, rate.RoundEta));

        // Two seconds on: 4 000 bytes and 40 records more; 110 planned, 50 sent: 60 left at 20 records/s.
        rate.Observe(new TransferProgress(id, 0, 5_000, 50, 500, ContentRecordsInRound: 110), t0.AddSeconds(2));
        Assert.Equal((5_000L, 2_000.0, (long?)60, TimeSpan.FromSeconds(3)), (rate.RoundBytes, rate.RoundBytesPerSecond, rate.RoundRecordsLeft, rate.RoundEta));

        // Round 1 starts where round 0's last report left the counters; unbuilt, it has no ETA.
        rate.Observe(new TransferProgress(id, 1, 6_000, 60, 40, 0, [H("t1")]), t0.AddSeconds(3));
        Assert.Equal((1_000L, 1_000.0, (long?)null, (TimeSpan?)null), (rate.RoundBytes, rate.RoundBytesPerSecond, rate.RoundRecordsLeft, rate.RoundEta));
        rate.Observe(new TransferProgress(id, 1, 8_000, 80, 40, 0, [H("t1")], ContentRecordsInRound: 40), t0.AddSeconds(5));
        Assert.Equal((3_000L, 1_000.0, (long?)10, TimeSpan.FromSeconds(1)), (rate.RoundBytes, rate.RoundBytesPerSecond, rate.RoundRecordsLeft, rate.RoundEta));
        // The run's rate is over every report: 7 000 bytes in 5 s.
        Assert.Equal(1_400.0, rate.BytesPerSecond);

        // As `status` shows a VM of that wave.
        var vm = new VmInFlight(V("vm-a"), H("t1"), "transferring", 1, rate.RoundBytes, rate.RoundBytesPerSecond, rate.RoundEta?.TotalSeconds);
        Assert.Equal(("1", Domain.Units.ByteSize.Format(3_000), Cli.View.ProgressText.Rate(1_000), "1.0 s"), Cli.View.StatusView.VmColumns(vm));
    }
}
