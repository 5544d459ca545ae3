using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// A scheduler that took over ends a cut-short migration from what the source and targets report
/// (<see cref="ReconcileDecisions"/>, pure): handed over only what its target runs, never a granted VM on the source.
/// </summary>
public class ReconcileDecisionTests
{
    private static readonly MigrationId Id = MigrationId.New();

    /// <summary>Five VMs placed on t1 and t2, as the journal recorded them; <paramref name="handedOver"/> journaled before the move.</summary>
    private static MigrationRecord Journal(params string[] handedOver)
    {
        var journal = new MigrationJournal();
        var vms = new[] { "a", "b", "c", "d", "e" }.Select(V).ToArray();
        journal.Apply(new MigrationStarted(Id, H("src"), [H("t1"), H("t2")], vms, DateTime.UtcNow.AddSeconds(-10)));
        journal.Apply(new PlacementChosen(Id, "traffic-aware", vms.ToDictionary(v => v, v => v.Value is "a" or "b" or "c" ? H("t1") : H("t2"))));
        foreach (var h in handedOver) journal.Apply(new VmHandedOver(Id, V(h), H("t1"), $"digest-{h}-0123456789", 40));
        return journal.Find(Id)!;
    }

    private static SourceMigrationState Source(params (string Vm, SourceVmCondition Condition, string? GrantedTo)[] vms) =>
        new(Id, true, vms.Select(v => new SourceVmState(V(v.Vm), v.Condition, v.GrantedTo is null ? null : H(v.GrantedTo), $"digest-{v.Vm}-0123456789")).ToArray());

    private static Dictionary<VmId, TargetAnswer> Answers(params (string Vm, TargetAnswer Answer)[] answers) => answers.ToDictionary(a => V(a.Vm), a => a.Answer);

    [Fact]
    public void Each_vm_ends_where_the_hosts_say_it_runs_and_a_silent_targets_vm_stays_paused()
    {
        var record = Journal("a");
        var source = Source(("a", SourceVmCondition.Released, "t1"), ("b", SourceVmCondition.Granted, "t1"), ("c", SourceVmCondition.OnSource, null),
            ("d", SourceVmCondition.Granted, "t2"), ("e", SourceVmCondition.Granted, "t2"));
        // b runs on t1; t2 gave d's grant back; e: t2 has not said yet.
        var answers = Answers(("b", TargetAnswer.Running), ("d", TargetAnswer.NotHere));

        Assert.Equal(new[] { H("t2") }, ReconcileDecisions.ToAsk(source, answers).Keys);
        Assert.Equal([V("e")], ReconcileDecisions.ToAsk(source, answers)[H("t2")]);
        Assert.Null(ReconcileDecisions.Decide(record, source, answers, final: false, "")); // e is still to be heard

        var verdicts = ReconcileDecisions.Decide(record, source, answers, final: true, "")!.ToDictionary(v => v.VmId.Value);
        Assert.Equal((ReconciledOutcome.HandedOver, false), (verdicts["a"].Outcome, verdicts["a"].Release)); // journaled, stopped already
        Assert.Equal((ReconciledOutcome.HandedOver, true, H("t1")), (verdicts["b"].Outcome, verdicts["b"].Release, verdicts["b"].Target)); // confirmed: stop the source copy
        Assert.Equal((ReconciledOutcome.OnSource, false, false), (verdicts["c"].Outcome, verdicts["c"].Release, verdicts["c"].Resume));
        Assert.Equal((ReconciledOutcome.OnSource, true), (verdicts["d"].Outcome, verdicts["d"].Resume)); // its grant came back
        Assert.Equal((ReconciledOutcome.CheckTarget, false, false), (verdicts["e"].Outcome, verdicts["e"].Release, verdicts["e"].Resume));
        Assert.Contains("check the target", verdicts["e"].Reason);

        var events = ReconcileDecisions.Events(Id, record, verdicts.Values.ToArray(), DateTime.UtcNow, null);
        // b's handover is journaled now; a's was; c, d, e fail with their reason; the migration is aborted with the report.
        Assert.Equal([V("b")], events.OfType<VmHandedOver>().Select(e => e.VmId));
        Assert.Equal([V("c"), V("d"), V("e")], events.OfType<VmHandoverFailed>().Select(e => e.VmId).Order());
        var aborted = Assert.IsType<MigrationAborted>(events[^1]);
        var report = aborted.Report!;
        Assert.Equal(["a", "b"], report.PerVm.Where(v => v.HandedOver).Select(v => v.Id).Order());
        Assert.Equal(["c", "d", "e"], report.PerVm.Where(v => !v.HandedOver).Select(v => v.Id).Order());
        Assert.False(report.Verified);
        Assert.Contains("2 handed over, 2 on the source, 1 to check", aborted.Reason);

        // Replayed, the journal says the same as the report.
        var journal = new MigrationJournal();
        journal.Apply(new MigrationStarted(Id, H("src"), [H("t1"), H("t2")], record.VmIds, DateTime.UtcNow));
        foreach (var e in events) journal.Apply(e);
        Assert.Equal((MigrationPhase.Aborted, 1, 3), (journal.Find(Id)!.Phase, journal.Find(Id)!.HandedOver.Count, journal.Find(Id)!.Failed.Count));
    }

    [Fact]
    public void A_vm_granted_to_a_target_is_never_put_on_the_source_without_the_targets_word()
    {
        var record = Journal();
        var source = Source(("a", SourceVmCondition.Granted, "t1"), ("b", SourceVmCondition.Granted, "t1"), ("c", SourceVmCondition.Granted, "t1"),
            ("d", SourceVmCondition.Granted, "t2"), ("e", SourceVmCondition.PausedUnsettled, null));
        // t1 is still starting a; nothing from t2.
        var verdicts = ReconcileDecisions.Decide(record, source, Answers(("a", TargetAnswer.Starting)), final: true, "")!;
        Assert.All(verdicts, v => Assert.Equal(ReconciledOutcome.CheckTarget, v.Outcome));
        Assert.All(verdicts, v => Assert.False(v.Resume || v.Release));
    }

    [Fact]
    public void Every_vm_confirmed_on_its_target_completes_the_migration_verified()
    {
        var record = Journal("a", "b");
        var source = Source(("a", SourceVmCondition.Released, "t1"), ("b", SourceVmCondition.Granted, "t1"), ("c", SourceVmCondition.Granted, "t1"),
            ("d", SourceVmCondition.Granted, "t2"), ("e", SourceVmCondition.Released, "t2"));
        var verdicts = ReconcileDecisions.Decide(record, source, Answers(("c", TargetAnswer.Running), ("d", TargetAnswer.Running)), final: false, "")!;
        Assert.All(verdicts, v => Assert.Equal(ReconciledOutcome.HandedOver, v.Outcome));
        // b's release was lost with the old scheduler: it is released again; c and d newly.
        Assert.Equal([V("b"), V("c"), V("d")], verdicts.Where(v => v.Release).Select(v => v.VmId));
        var events = ReconcileDecisions.Events(Id, record, verdicts, DateTime.UtcNow, null);
        Assert.Equal([V("c"), V("d"), V("e")], events.OfType<VmHandedOver>().Select(e => e.VmId));
        var completed = Assert.IsType<MigrationCompleted>(events[^1]);
        Assert.True(completed.Report.Verified);
        Assert.Null(completed.Report.Error);
    }

    [Fact]
    public void A_source_that_never_answers_aborts_the_migration_with_that_reason()
    {
        var record = Journal("a");
        Assert.Null(ReconcileDecisions.Decide(record, null, Answers(), final: false, "silent"));
        var verdicts = ReconcileDecisions.Decide(record, null, Answers(), final: true, "source host src did not re-register")!;
        Assert.Equal(ReconciledOutcome.HandedOver, verdicts.Single(v => v.VmId == V("a")).Outcome);
        Assert.All(verdicts.Where(v => v.VmId != V("a")), v => Assert.Equal(ReconciledOutcome.Unknown, v.Outcome));
        var events = ReconcileDecisions.Events(Id, record, verdicts, DateTime.UtcNow, "source host src did not re-register");
        var aborted = Assert.IsType<MigrationAborted>(events[^1]);
        Assert.Equal("source host src did not re-register", aborted.Reason);
        Assert.Equal(4, events.OfType<VmHandoverFailed>().Count());
    }
}
