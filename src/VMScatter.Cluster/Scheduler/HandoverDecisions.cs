using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>A VM whose digests are both in: resume it on its target, or fail its handover.</summary>
public abstract record HandoverStep(VmId VmId)
{
    public sealed record Resume(VmId VmId, HostId TargetHostId) : HandoverStep(VmId);

    public sealed record Fail(VmId VmId, string Reason) : HandoverStep(VmId);
}

/// <summary>
/// The handover rule, pure over a run's state: a VM is resumed on its target only when the target's digest of what it
/// received equals the source's digest of the paused VM; it is recorded as handed over only when that target, and no
/// other host, reports it running; anything else leaves it on the source.
/// </summary>
internal static class HandoverDecisions
{
    /// <summary>Each VM whose source digest and target's digests are both in and that is not yet decided or asked to resume.</summary>
    public static IReadOnlyList<HandoverStep> Decide(MigrationRun run)
    {
        if (run.Error is not null) return [];
        var steps = new List<HandoverStep>();
        foreach (var (vmId, digest) in run.SourceDigestOf)
        {
            var target = run.TargetOfVm[vmId];
            // The target's digests of the VM's own final round: a target that took a re-placed VM reports again.
            if (run.Decided(vmId) || run.ResumeRequested.Contains(vmId) || !run.TargetDigests.TryGetValue(target, out var reported)
                || reported.Digests.All(d => d.VmId != vmId)) continue;
            if (run.TargetDigestOf.TryGetValue(vmId, out var got) && got == digest) steps.Add(new HandoverStep.Resume(vmId, target));
            else steps.Add(new HandoverStep.Fail(vmId, $"digest mismatch: source {Short(digest)}, target {Short(got ?? "none")}"));
        }
        return steps;
    }

    /// <summary>
    /// A target reports a VM resumed: the event to journal, or why the report is refused (a host that is not the VM's
    /// target, a VM no target was asked to resume, or one already decided).
    /// </summary>
    public static VmHandedOver? Resumed(MigrationRun run, VmResumedOnTarget m, out string? refusal)
    {
        refusal = !run.Moves(m.VmId) ? $"VM {m.VmId} is not part of migration {run.Id}"
            : (!run.TargetOfVm.TryGetValue(m.VmId, out var target) || target != m.HostId) ? $"host {m.HostId} is not VM {m.VmId}'s target ({(run.TargetOfVm.TryGetValue(m.VmId, out var t) ? t.Value : "none")})"
            : !run.ResumeRequested.Contains(m.VmId) ? $"VM {m.VmId} was not to be resumed on {m.HostId}"
            : run.Decided(m.VmId) ? $"VM {m.VmId} is decided already"
            : null;
        if (refusal is not null) return null;
        long pausedAt = run.PausedAt.GetValueOrDefault(m.VmId, m.ResumedAtUnixMs);
        return new VmHandedOver(run.Id, m.VmId, m.HostId, run.TargetDigestOf[m.VmId], m.ResumedAtUnixMs - pausedAt);
    }

    /// <summary>
    /// The whole migration fails: every VM not decided, and not yet asked to resume on its target, fails its handover. A
    /// VM a target was asked to resume is left to that target's answer: resuming it on the source too could leave two copies running.
    /// </summary>
    public static IReadOnlyList<VmHandoverFailed> FailUndecided(MigrationRun run, string reason) =>
        run.Vms.Where(v => !run.Decided(v.Id) && !run.ResumeRequested.Contains(v.Id)).Select(v => new VmHandoverFailed(run.Id, v.Id, reason)).ToArray();

    private static string Short(string digest) => digest.Length > 12 ? digest[..12] : digest;
}
