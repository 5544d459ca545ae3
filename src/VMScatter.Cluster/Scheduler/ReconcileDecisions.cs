using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;

namespace VMScatter.Cluster.Scheduler;

/// <summary>What a target said of a VM granted to it.</summary>
public enum TargetAnswer { Running, Starting, NotHere }

/// <summary>Where a VM of a cut-short migration ends, as reconciliation decides it.</summary>
public enum ReconciledOutcome
{
    /// <summary>Its target runs it (confirmed, or journaled before the move): handed over.</summary>
    HandedOver,
    /// <summary>It runs on the source (never granted, or its grant came back).</summary>
    OnSource,
    /// <summary>Granted to a target that did not confirm running it: left paused on the source (never run twice); check the target.</summary>
    CheckTarget,
    /// <summary>Nobody told where it runs (the source never answered, or no longer has it).</summary>
    Unknown,
}

/// <param name="Release">Stop the source's copy (granted, and its target confirmed running it).</param>
/// <param name="Resume">Tell the source it may run it (its grant came back from the target).</param>
public sealed record ReconcileVerdict(VmId VmId, ReconciledOutcome Outcome, HostId? Target, string? Digest, string Reason, bool Release = false, bool Resume = false);

/// <summary>
/// A scheduler that took over ends a migration the journal left unended, from what the source and the targets report;
/// pure. The fence's rules hold whatever is reported: a VM is handed over only when its target says it runs it; a
/// VM granted to a target that did not answer stays paused on the source; only the source's answer (or a target
/// giving a grant back) puts a VM on the source.
/// </summary>
public static class ReconcileDecisions
{
    /// <summary>Granted VMs whose target has not given a final answer yet (none, or "starting"), by target.</summary>
    public static IReadOnlyDictionary<HostId, VmId[]> ToAsk(SourceMigrationState source, IReadOnlyDictionary<VmId, TargetAnswer> answers) =>
        source.Vms.Where(v => v.Condition == SourceVmCondition.Granted && v.GrantedTo is not null
                && answers.GetValueOrDefault(v.VmId, TargetAnswer.Starting) == TargetAnswer.Starting)
            .GroupBy(v => v.GrantedTo!.Value).ToDictionary(g => g.Key, g => g.Select(v => v.VmId).Order().ToArray());

    /// <summary>
    /// Every VM's verdict, or null while something is still to be heard and <paramref name="final"/> is false (the bound
    /// has not passed). <paramref name="source"/>: the source's answer, null if it never gave one.
    /// </summary>
    public static IReadOnlyList<ReconcileVerdict>? Decide(MigrationRecord record, SourceMigrationState? source, IReadOnlyDictionary<VmId, TargetAnswer> answers, bool final, string silence)
    {
        var verdicts = new List<ReconcileVerdict>();
        var states = source?.Vms.GroupBy(v => v.VmId).ToDictionary(g => g.Key, g => g.Last()) ?? new Dictionary<VmId, SourceVmState>();
        foreach (var vm in record.VmIds)
        {
            var planned = record.TargetOfVm.TryGetValue(vm, out var p) ? p : (HostId?)null;
            var state = states.GetValueOrDefault(vm);
            if (record.HandedOverEvents.TryGetValue(vm, out var handed))
            {
                // Journaled before the move: its target confirmed it. Its source copy stops if the release was lost.
                verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.HandedOver, handed.TargetHostId, handed.Digest, "handed over before the scheduler moved",
                    Release: state?.Condition == SourceVmCondition.Granted));
                continue;
            }
            if (source is null)
            {
                if (!final) return null;
                verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.Unknown, planned, null,
                    $"{silence}; the source resumes a paused VM no target was granted within its decision timeout, a granted one stays paused: check the source and {Name(planned)}"));
                continue;
            }
            switch (state?.Condition ?? SourceVmCondition.Absent)
            {
                case SourceVmCondition.OnSource:
                    verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.OnSource, planned, state!.Digest,
                        record.FailReasons.GetValueOrDefault(vm) ?? "the scheduler moved during the migration; it runs on the source"));
                    break;
                case SourceVmCondition.Released:
                    verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.HandedOver, state!.GrantedTo ?? planned, state.Digest, "released on the source after its target ran it"));
                    break;
                case SourceVmCondition.Granted:
                    var target = state!.GrantedTo ?? planned;
                    switch (answers.TryGetValue(vm, out var a) ? a : (TargetAnswer?)null)
                    {
                        case TargetAnswer.Running:
                            verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.HandedOver, target, state.Digest, $"confirmed running on {Name(target)} after the scheduler moved", Release: true));
                            break;
                        case TargetAnswer.NotHere:
                            verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.OnSource, target, state.Digest,
                                $"its target {Name(target)} did not start it (grant returned); it runs on the source", Resume: true));
                            break;
                        default:
                            if (!final) return null;
                            verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.CheckTarget, target, state.Digest,
                                $"granted to {Name(target)}, which did not confirm running it; left paused on the source, check the target before resuming either copy"));
                            break;
                    }
                    break;
                case SourceVmCondition.PausedUnsettled:
                    verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.CheckTarget, planned, state!.Digest,
                        $"paused on the source with no migration to settle it (it may have been granted); check {Name(planned)} before resuming either copy"));
                    break;
                default:
                    verdicts.Add(new ReconcileVerdict(vm, ReconciledOutcome.Unknown, planned, null, $"not on the source and not journaled as handed over; check {Name(planned)}"));
                    break;
            }
        }
        return verdicts;
    }

    /// <summary>
    /// The events that end the migration: each VM's outcome not journaled yet (a handover confirmed now is journaled even
    /// if an earlier timeout failed it), then completed (every VM handed over) or aborted, with the report.
    /// </summary>
    public static IReadOnlyList<IPersistedEvent> Events(MigrationId id, MigrationRecord record, IReadOnlyList<ReconcileVerdict> verdicts, DateTime nowUtc, string? sourceSilence)
    {
        var events = new List<IPersistedEvent>();
        foreach (var v in verdicts)
        {
            if (v.Outcome == ReconciledOutcome.HandedOver)
            {
                if (!record.HandedOverEvents.ContainsKey(v.VmId)) events.Add(new VmHandedOver(id, v.VmId, v.Target ?? default, v.Digest ?? "unknown (reconciled)", 0));
            }
            else if (!record.FailReasons.TryGetValue(v.VmId, out var failed) || failed != v.Reason) events.Add(new VmHandoverFailed(id, v.VmId, v.Reason));
        }
        int handed = verdicts.Count(v => v.Outcome == ReconciledOutcome.HandedOver);
        int onSource = verdicts.Count(v => v.Outcome == ReconciledOutcome.OnSource);
        string reason = sourceSilence ?? $"the scheduler moved or restarted during the migration; reconciled with the source and targets: {handed} handed over, {onSource} on the source" +
            (verdicts.Count - handed - onSource > 0 ? $", {verdicts.Count - handed - onSource} to check" : "");
        bool all = verdicts.Count > 0 && handed == verdicts.Count;
        var report = Report(id, record, verdicts, nowUtc, all ? null : reason);
        events.Add(all ? new MigrationCompleted(id, report) : new MigrationAborted(id, reason, report));
        return events;
    }

    /// <summary>The report of a migration ended from the journal and the hosts' word: no transfer account survives a move, only where each VM runs.</summary>
    public static MigrationReport Report(MigrationId id, MigrationRecord record, IReadOnlyList<ReconcileVerdict> verdicts, DateTime nowUtc, string? error)
    {
        var perVm = verdicts.Select(v =>
        {
            bool handed = v.Outcome == ReconciledOutcome.HandedOver;
            double downtime = record.HandedOverEvents.TryGetValue(v.VmId, out var e) ? e.DowntimeMs : 0;
            return new VmReport(v.VmId.Value, v.Target?.Value ?? "", handed, handed, downtime, v.Digest, handed ? v.Digest : null, handed ? null : v.Reason);
        }).ToArray();
        return new MigrationReport
        {
            MigrationId = id.ToString(), Vms = record.VmIds.Count, Targets = record.TargetHostIds.Count, GuestBytes = 0, NaiveBytes = 0, DistinctPages = 0, ZeroPages = 0,
            BytesSent = 0, BytesReceived = 0, Verified = perVm.Length > 0 && perVm.All(v => v.HandedOver),
            TotalSeconds = record.StartedUtc == default ? 0 : (nowUtc - record.StartedUtc).TotalSeconds, PlacementStrategy = record.Strategy,
            Placement = new SortedDictionary<string, string>(record.TargetOfVm.ToDictionary(p => p.Key.Value, p => p.Value.Value), StringComparer.Ordinal),
            LinkBytes = 0, GroupSwitches = 0, GroupSwitchesLowerBound = 0, GroupTransport = "", Rounds = 0, DirtyPagesPerRound = [], CompressionRatio = 1,
            ByteCompares = 0, HashCollisions = 0, DowntimeMsMax = perVm.Length == 0 ? 0 : perVm.Max(v => v.DowntimeMs), DowntimeMsMedian = 0, Converged = false,
            Convergence = "", Deduplicate = true, LinkBitsPerSecond = 0, AnalysisSeconds = 0, RoundSeconds = [], SourceDigestSeconds = 0, Error = error, PerVm = perVm,
        };
    }

    /// <summary>A migration that ended without a report (a journal from before reconciliation): what the journal alone says.</summary>
    public static MigrationReport JournalReport(MigrationId id, MigrationRecord record, DateTime nowUtc)
    {
        string reason = record.AbortReason ?? "ended without a report";
        var verdicts = record.VmIds.Select(vm => record.HandedOverEvents.TryGetValue(vm, out var h)
            ? new ReconcileVerdict(vm, ReconciledOutcome.HandedOver, h.TargetHostId, h.Digest, "handed over")
            : new ReconcileVerdict(vm, ReconciledOutcome.Unknown, record.TargetOfVm.TryGetValue(vm, out var t) ? t : null, null, record.FailReasons.GetValueOrDefault(vm) ?? reason)).ToArray();
        return Report(id, record, verdicts, nowUtc, record.Phase == MigrationPhase.Completed ? null : reason);
    }

    private static string Name(HostId? host) => host is { } h ? $"target {h}" : "its target";
}
