using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>The scheduler's rules as pure functions: journal replay, handover decisions, request validation.</summary>
public class SchedulerDecisionTests
{
    private const long MiB = 1 << 20;
    private static readonly MigrationId Id = MigrationId.New();

    private static MigrationRun Run(params (VmId Vm, HostId Target)[] vms)
    {
        var run = new MigrationRun
        {
            Id = Id, Request = new StartMigration(Id, H("src"), [], [], TestConfig.Options()), Requester = ActorRefs.Nobody, SourceHostId = H("src"),
            SourceHost = ActorRefs.Nobody, Vms = vms.Select(v => new VmDescription(v.Vm, 8 * MiB, 1, "synthetic", "")).ToArray(),
            TargetHostIds = vms.Select(v => v.Target).Distinct().ToArray(), StartedUtc = DateTime.UtcNow,
        };
        foreach (var (vm, target) in vms) run.TargetOfVm[vm] = target;
        return run;
    }

    private static void Digests(MigrationRun run, HostId host, params (VmId Vm, string Digest)[] digests)
    {
        run.TargetDigests[host] = new TargetDigests(Id, host, digests.Select(d => new VmDigest(d.Vm, d.Digest)).ToArray(), 0, 0, 0, 0);
        foreach (var (vm, digest) in digests) run.TargetDigestOf[vm] = digest;
    }

    [Fact]
    public void Replaying_the_journal_gives_the_state_it_recorded()
    {
        var journal = new MigrationJournal();
        var done = MigrationId.New();
        var report = TestConfig.SampleReport(done.ToString(), bytesSent: 7);
        IPersistedEvent[] events =
        [
            new MigrationStarted(done, H("src"), [H("t1")], [V("a"), V("b")], DateTime.UtcNow),
            new MigrationStarted(Id, H("src"), [H("t1")], [V("c")], DateTime.UtcNow),
            new PlacementChosen(done, "traffic-aware", new Dictionary<VmId, HostId> { [V("a")] = H("t1"), [V("b")] = H("t1") }),
            new PlacementChosen(Id, "traffic-aware", new Dictionary<VmId, HostId> { [V("c")] = H("t1") }),
            new VmHandedOver(done, V("a"), H("t1"), "d", 12),
            new VmHandoverFailed(done, V("b"), "digest mismatch"),
            new MigrationCompleted(done, report),
        ];
        foreach (var e in events) journal.Apply(e);
        var record = journal.Find(done)!;
        Assert.Equal((MigrationPhase.Completed, 7L), (record.Phase, record.Report!.BytesSent));
        Assert.Equal([V("a")], record.HandedOver);
        Assert.Equal([V("b")], record.Failed);
        Assert.Equal(MigrationPhase.Preparing, journal.Find(Id)!.Phase);
        Assert.Equal([Id], journal.Unended);
        journal.Apply(new MigrationAborted(Id, "restart"));
        Assert.Empty(journal.Unended);
        Assert.Null(journal.Find(MigrationId.New()));
    }

    [Fact]
    public void A_vm_is_resumed_on_its_target_only_when_both_digests_are_in_and_equal()
    {
        var run = Run((V("a"), H("t1")), (V("b"), H("t1")), (V("c"), H("t2")));
        run.SourceDigestOf[V("a")] = "sha-a";
        run.SourceDigestOf[V("b")] = "sha-b";
        run.SourceDigestOf[V("c")] = "sha-c";
        Assert.Empty(HandoverDecisions.Decide(run)); // no target digests yet
        Digests(run, H("t1"), (V("a"), "sha-a"), (V("b"), "sha-B"));
        var steps = HandoverDecisions.Decide(run);
        Assert.Equal(new HandoverStep.Resume(V("a"), H("t1")), steps[0]);
        var fail = Assert.IsType<HandoverStep.Fail>(steps[1]);
        Assert.Equal(V("b"), fail.VmId);
        Assert.Contains("digest mismatch: source sha-b, target sha-B", fail.Reason);
        Assert.Equal(2, steps.Count); // c waits for t2
        run.ResumeRequested.Add(V("a"));
        run.Failed[V("b")] = fail.Reason;
        Assert.Empty(HandoverDecisions.Decide(run)); // nothing is decided twice
        run.Error = "aborted";
        Digests(run, H("t2"), (V("c"), "sha-c"));
        Assert.Empty(HandoverDecisions.Decide(run)); // a failed run resumes nothing more
    }

    [Fact]
    public void Only_the_vms_target_may_report_it_resumed_and_only_after_it_was_asked()
    {
        var run = Run((V("a"), H("t1")), (V("b"), H("t2")));
        run.SourceDigestOf[V("a")] = "sha-a";
        Digests(run, H("t1"), (V("a"), "sha-a"));
        run.PausedAt[V("a")] = 1_000;
        Assert.Null(HandoverDecisions.Resumed(run, new VmResumedOnTarget(Id, V("a"), H("t1"), 1_050), out var early));
        Assert.Contains("was not to be resumed", early);
        run.ResumeRequested.Add(V("a"));
        Assert.Null(HandoverDecisions.Resumed(run, new VmResumedOnTarget(Id, V("a"), H("t2"), 1_050), out var forged));
        Assert.Contains("host t2 is not VM a's target (t1)", forged);
        Assert.Null(HandoverDecisions.Resumed(run, new VmResumedOnTarget(Id, V("zz"), H("t1"), 1_050), out var stranger));
        Assert.Contains("not part of migration", stranger);
        var handed = HandoverDecisions.Resumed(run, new VmResumedOnTarget(Id, V("a"), H("t1"), 1_050), out var none);
        Assert.Null(none);
        Assert.Equal(new VmHandedOver(Id, V("a"), H("t1"), "sha-a", 50), handed);
        // Failing the run leaves a VM a target was asked to resume to that target's answer.
        Assert.Equal([V("b")], HandoverDecisions.FailUndecided(run, "lost").Select(f => f.VmId));
    }

    [Fact]
    public void A_request_is_checked_against_registered_hosts_and_free_memory()
    {
        var source = new RegisterSourceHost(H("src"), ActorRefs.Nobody, [new VmDescription(V("a"), 8 * MiB, 1, "synthetic", ""), new VmDescription(V("b"), 8 * MiB, 1, "synthetic", "")]);
        var sources = new Dictionary<HostId, RegisterSourceHost> { [H("src")] = source };
        var targets = new Dictionary<HostId, RegisterTargetHost>
        {
            [H("t1")] = new(H("t1"), ActorRefs.Nobody, 8 * MiB, "127.0.0.1", 1, "synthetic"),
            [H("t2")] = new(H("t2"), ActorRefs.Nobody, 8 * MiB, "127.0.0.1", 2, "synthetic"),
        };
        // reserved: memory migrations in flight placed on t2.
        string? Reject(StartMigration m, long reserved = 0, bool exists = false, VmId? migrating = null)
        {
            MigrationRequestValidator.Validate(m, exists, sources, targets, t => targets[t].FreeBytes - (t == H("t2") ? reserved : 0), vm => vm == migrating, out var why);
            return why;
        }
        var all = new StartMigration(Id, H("src"), [], [], TestConfig.Options());
        Assert.Null(Reject(all));
        var ok = MigrationRequestValidator.Validate(all, false, sources, targets, t => 8 * MiB, _ => false, out _);
        Assert.Equal([V("a"), V("b")], ok.Vms.Select(v => v.Id));
        Assert.Equal([H("t1"), H("t2")], ok.TargetHostIds);
        Assert.Equal("the VMs need 16.0 MiB but the targets have 12.0 MiB free in all", Reject(all, reserved: 4 * MiB));
        targets[H("t1")] = targets[H("t1")] with { FreeBytes = 4 * MiB };
        Assert.Equal("VM a needs 8.0 MiB but the largest target has 4.0 MiB free", Reject(all, reserved: 4 * MiB));
        targets[H("t1")] = targets[H("t1")] with { FreeBytes = 8 * MiB };
        Assert.Equal($"migration {Id} already exists", Reject(all, exists: true));
        Assert.Equal("already migrating: b", Reject(all, migrating: V("b")));
        Assert.StartsWith("unknown target host(s) t9", Reject(all with { TargetHostIds = [H("t9")] }));
        Assert.Equal("source src does not run c", Reject(all with { VmIds = [V("c")] }));
    }
}
