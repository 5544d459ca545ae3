using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>The scheduler's answers to the admin console, built from its registrations, runs and journal (no actor state changes).</summary>
internal static class ConsoleQueries
{
    public static IReadOnlyList<HostStatus> Hosts(IReadOnlyDictionary<HostId, RegisterSourceHost> sources, IReadOnlyDictionary<HostId, RegisterTargetHost> targets) =>
        sources.Values.Select(s => new HostStatus(s.HostId, "source", s.Host.Path.Address.ToString(), s.Vms.Sum(v => v.MemoryBytes), 0, "", s.Vms.Count, s.Vms.FirstOrDefault()?.Backend ?? ""))
            .Concat(targets.Values.Select(t => new HostStatus(t.HostId, "target", t.Host.Path.Address.ToString(), t.CapacityBytes, t.FreeBytes, t.Rack, 0, t.Backend)))
            .OrderBy(h => h.Role, StringComparer.Ordinal).ThenBy(h => h.HostId)
            .ToArray();

    public static MigrationInFlight InFlight(MigrationRun run)
    {
        var latest = run.Progress.Latest;
        var vms = run.Vms.Select(v =>
        {
            var target = run.TargetOfVm.TryGetValue(v.Id, out var t) ? t : (HostId?)null;
            string phase = VmPhase(run, v.Id);
            // Only a VM whose wave is being sent has a round under way.
            if (phase != "transferring" || latest is null) return new VmInFlight(v.Id, target, phase);
            return new VmInFlight(v.Id, target, phase, latest.Round, run.Progress.RoundBytes, run.Progress.RoundBytesPerSecond, run.Progress.RoundEta?.TotalSeconds);
        }).ToArray();
        return new MigrationInFlight(run.Id, run.SourceHostId, run.Phase, run.StartedUtc, latest?.Round ?? -1, latest?.Wave ?? -1,
            latest?.BytesSent ?? 0, run.Progress.BytesPerSecond, run.Vms.Sum(v => v.MemoryBytes), vms, run.Error);
    }

    /// <summary>Where one VM of a run stands, most settled first: a decided VM is decided whatever the run's phase.</summary>
    public static string VmPhase(MigrationRun run, VmId vm)
    {
        if (run.HandedOver.ContainsKey(vm)) return run.Released.Contains(vm) ? "handed over" : "handed over, stopping on source";
        if (run.Failed.ContainsKey(vm)) return run.ResumedOnSource.Contains(vm) ? "runs on source" : "resuming on source";
        if (run.ResumeRequested.Contains(vm)) return "starting on target";
        if (run.PausedAt.ContainsKey(vm)) return "paused, verifying";
        if (run.Orphans.Contains(vm)) return "re-placing";
        if (run.Phase != MigrationPhase.Transferring && run.Phase != MigrationPhase.HandingOver) return Lower(run.Phase);
        // In a staggered handover only the current wave's targets get rounds; round 0 (wave -1) goes to every target.
        var latest = run.Progress.Latest;
        bool inWave = latest is null || latest.Wave < 0 || latest.WaveTargets is null
            || (run.TargetOfVm.TryGetValue(vm, out var target) && latest.WaveTargets.Contains(target));
        return inWave ? "transferring" : "waiting for its wave";
    }

    public static IReadOnlyList<MigrationSummary> List(MigrationJournal journal, Func<MigrationId, MigrationPhase, MigrationPhase> phaseOf) =>
        journal.All.Select(p =>
        {
            var (id, r) = (p.Key, p.Value);
            var report = r.Report;
            // The targets used (placement, re-placements) once known; until then the ones requested.
            IReadOnlyList<HostId> targets = r.TargetOfVm.Count > 0 ? r.TargetOfVm.Values.Distinct().Order().ToArray() : r.TargetHostIds;
            return new MigrationSummary(id, r.StartedUtc, phaseOf(id, r.Phase), r.SourceHostId, r.VmIds.Count > 0 ? r.VmIds.Count : report?.Vms ?? 0, targets,
                r.HandedOver.Count, report?.Verified ?? false, report?.BytesSent ?? 0, report?.TotalSeconds ?? 0, report?.DowntimeMsMax ?? 0,
                r.AbortReason ?? report?.Error);
        }).OrderBy(s => s.StartedUtc).ThenBy(s => s.MigrationId).ToArray();

    private static string Lower(MigrationPhase phase) => phase.ToString().ToLowerInvariant();
}
