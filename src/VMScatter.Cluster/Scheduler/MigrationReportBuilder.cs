using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cluster.Scheduler;

/// <summary>A finished run as its report: the source's transfer account, the targets' counts and each VM's handover.</summary>
internal static class MigrationReportBuilder
{
    public static MigrationReport Build(MigrationRun run, DateTime nowUtc)
    {
        var stats = run.Transfer?.Stats;
        var perVm = run.Vms.Select(vm =>
        {
            var src = run.SourceDigestOf.GetValueOrDefault(vm.Id);
            run.TargetDigestOf.TryGetValue(vm.Id, out var dst);
            run.HandedOver.TryGetValue(vm.Id, out var handed);
            run.Failed.TryGetValue(vm.Id, out var error);
            return new VmReport(vm.Id.Value, run.TargetOfVm.TryGetValue(vm.Id, out var target) ? target.Value : "", src is not null && src == dst, handed is not null,
                handed?.DowntimeMs ?? 0, src, dst, error) { DirtyTracking = run.DirtyTrackingOf.GetValueOrDefault(vm.Id) };
        }).ToArray();
        var (converged, convergence) = Convergence(stats?.Converged ?? false, stats?.Convergence ?? "", perVm, run.Request.Options.DowntimeTargetMs);
        return new MigrationReport
        {
            MigrationId = run.Id.ToString(),
            Vms = run.Vms.Count,
            Targets = run.TargetHostIds.Count,
            GuestBytes = run.Vms.Sum(v => v.MemoryBytes),
            NaiveBytes = Page.BytesOf(run.Profiles.Sum(p => (long)p.NonZeroPages)),
            // Exact once the shards finished round 0; placement had the sketches' estimate.
            DistinctPages = stats is { Round0DistinctPages: > 0 } ? stats.Round0DistinctPages : run.DistinctPages,
            ZeroPages = run.Profiles.Sum(p => (long)p.ZeroPages),
            // A run failed or cancelled before the source's final account: what its last progress report counted.
            BytesSent = stats?.BytesSent ?? run.Progress.Latest?.BytesSent ?? 0,
            BytesReceived = run.TargetDigests.Values.Sum(d => d.BytesReceived),
            Verified = perVm.Length > 0 && perVm.All(v => v.DigestMatched && v.HandedOver),
            TotalSeconds = (nowUtc - run.StartedUtc).TotalSeconds,
            PlacementStrategy = run.Strategy,
            Placement = new SortedDictionary<string, string>(run.TargetOfVm.ToDictionary(p => p.Key.Value, p => p.Value.Value), StringComparer.Ordinal),
            // Flat network: every data-plane frame crosses its sender's link and its receiver's link once. A multicast
            // datagram crosses the source's link once and each member's once (the switch copies it).
            LinkBytes = stats is { TransportUsed: "multicast" }
                ? stats.BytesSent + run.TargetDigests.Values.Sum(d => d.BytesReceived)
                : 2 * run.TargetDigests.Values.Sum(d => d.BytesReceived),
            GroupSwitches = stats?.GroupSwitches ?? 0,
            GroupSwitchesLowerBound = stats?.GroupSwitchesLowerBound ?? 0,
            GroupTransport = stats is { TransportUsed.Length: > 0 } ? stats.TransportUsed : run.Request.Options.GroupTransport.ToName(),
            TransportFallback = stats?.TransportFallback,
            MulticastNacks = stats?.MulticastNacks ?? 0,
            MulticastRepairs = stats?.MulticastRepairs ?? 0,
            MulticastRepairBytes = stats?.MulticastRepairBytes ?? 0,
            MulticastChannels = stats?.MulticastChannels ?? 0,
            MulticastDatagramsRejected = run.TargetDigests.Values.Sum(d => d.DatagramsRejected),
            MulticastDatagramsDuplicate = run.TargetDigests.Values.Sum(d => d.DatagramsDuplicate),
            MulticastJoins = stats?.MulticastJoins ?? 0,
            MulticastLeaves = stats?.MulticastLeaves ?? 0,
            Rounds = stats?.Rounds ?? 0,
            Waves = stats?.Waves ?? 0,
            DataPlaneRounds = stats?.DataPlaneRounds ?? 0,
            DirtyPagesPerRound = stats?.DirtyPagesPerRound ?? [],
            SetAsidePages = stats?.SetAsidePages ?? 0,
            ContentsWithdrawn = stats?.ContentsWithdrawn ?? 0,
            CompressionRatio = stats is { ContentRawBytes: > 0 } ? (double)stats.ContentEncodedBytes / stats.ContentRawBytes : 1,
            ByteCompares = stats?.ByteCompares ?? 0,
            HashCollisions = stats?.HashCollisions ?? 0,
            DowntimeMsMax = perVm.Length == 0 ? 0 : perVm.Max(v => v.DowntimeMs),
            DowntimeMsMedian = Median(perVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs)),
            Converged = converged,
            Convergence = convergence,
            Deduplicate = run.Request.Options.Deduplicate,
            LinkBitsPerSecond = run.Request.Options.LinkBitsPerSecond,
            AnalysisSeconds = stats?.AnalysisSeconds ?? 0,
            RoundSeconds = stats?.RoundSeconds ?? [],
            SourceDigestSeconds = stats?.SourceDigestSeconds ?? 0,
            SourceCpuSecondsPerRound = stats?.SourceCpuSecondsPerRound ?? [],
            Error = run.Error,
            LostTargets = run.LostReasons.ToArray(),
            Replaced = run.Replacements.ToArray(),
            Timeline = new(run.PlacedAtSeconds, run.Samples.ToArray(), run.Handovers.ToArray()),
            PerVm = perVm,
        };
    }

    /// <summary>
    /// The downtime target is a promise: a run converged only if the source's decisions fitted it and every VM handed
    /// over paused within it. A pause over it makes the run not converged, named with its VM and length in one line.
    /// </summary>
    public static (bool Converged, string Account) Convergence(bool decided, string account, IEnumerable<VmReport> perVm, int targetMs)
    {
        var over = perVm.Where(v => v.HandedOver && v.DowntimeMs > targetMs).OrderByDescending(v => v.DowntimeMs).ThenBy(v => v.Id, StringComparer.Ordinal).ToArray();
        if (over.Length == 0) return (decided, account);
        string pauses = string.Join(", ", over.Select(v => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"VM {v.Id} paused {v.DowntimeMs:0} ms")));
        return (false, $"NOT converged: {pauses}, over the {targetMs} ms downtime target" + (account.Length > 0 ? $"; the source: {account}" : ""));
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
