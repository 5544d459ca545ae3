namespace VMScatter.Bench.Chaos;

/// <summary>
/// The invariants of a chaos run, checked against what the live hosts say they run (pure: observation in, verdict out).
/// A VM's place is where the journal says it went (its target if handed over, else the source); synthetic guests end with
/// their node's process (the README's rule), so a VM whose place is the killed node and that runs nowhere ended with it:
/// counted apart, never as moved nor as lost.
/// </summary>
public static class InvariantChecker
{
    public const string ExactlyOnce = "every VM runs exactly once";
    public const string Digest = "a moved VM has its source's digest";
    public const string PauseBound = "no VM paused past the bound";
    public const string JournalMatches = "the journal matches the hosts";
    public const string Survivors = "no other node exits";
    public const string Harness = "the run completed";

    public static RunVerdict Check(RunObservation o)
    {
        var violations = new List<Violation>();
        void Fail(string invariant, string detail) => violations.Add(new Violation(invariant, detail));

        foreach (var p in o.Problems) Fail(Harness, p);
        foreach (var e in o.UnexpectedExits) Fail(Survivors, e);
        foreach (var h in o.SilentHosts) Fail(ExactlyOnce, $"host {h} did not say what it runs");

        // The journal's word; without it, migrate's report (and the missing journal is a violation).
        var handedTo = o.Journal?.HandedOverTo
            ?? o.Report?.PerVm.Where(v => v.HandedOver).ToDictionary(v => v.Id, v => v.Target)
            ?? new Dictionary<string, string>();
        if (o.Journal is null) Fail(JournalMatches, "the scheduler gave no status for the migration");
        else if (o.Journal.Phase is not ("Completed" or "Aborted")) Fail(JournalMatches, $"the journal has the migration {o.Journal.Phase}, not ended");
        if (o.Journal is not null && o.Report is not null)
        {
            var reported = o.Report.PerVm.Where(v => v.HandedOver).Select(v => $"{v.Id}→{v.Target}").Order().ToArray();
            var journaled = o.Journal.HandedOverTo.Select(p => $"{p.Key}→{p.Value}").Order().ToArray();
            if (!reported.SequenceEqual(journaled))
                Fail(JournalMatches, $"migrate's report hands over [{string.Join(", ", reported)}], the journal [{string.Join(", ", journaled)}]");
        }

        int onSource = 0, endedWithSource = 0, endedWithTarget = 0, lost = 0, twice = 0;
        foreach (var vm in o.Vms)
        {
            var copies = o.Hosts.Where(h => h.Running.Contains(vm) || h.Paused.Contains(vm)).Select(h => h.HostId).ToArray();
            string place = handedTo.TryGetValue(vm, out var t) ? t : o.SourceHostId;
            bool placeKilled = place == o.Killed.HostId;
            switch (copies.Length)
            {
                case 0 when placeKilled && o.Killed.Role == ChaosRole.Source: endedWithSource++; break;
                case 0 when placeKilled && o.Killed.Role == ChaosRole.Target: endedWithTarget++; break;
                case 0:
                    lost++;
                    Fail(ExactlyOnce, $"{vm} runs nowhere (the journal puts it on {place})");
                    break;
                case 1 when copies[0] != place:
                    Fail(JournalMatches, $"{vm} runs on {copies[0]}, the journal puts it on {place}");
                    break;
                case 1:
                    if (place == o.SourceHostId) onSource++;
                    break;
                default:
                    twice++;
                    Fail(ExactlyOnce, $"{vm} runs on {string.Join(" and ", copies)}");
                    break;
            }
        }
        foreach (var h in o.Hosts)
            foreach (var vm in h.Paused) Fail(PauseBound, $"{vm} is still paused on {h.HostId} after the run settled");
        foreach (var h in o.Hosts)
            foreach (var vm in h.Running.Where(v => !o.Vms.Contains(v))) Fail(JournalMatches, $"{h.HostId} runs {vm}, which is not the migration's");

        foreach (var v in o.Report?.PerVm.Where(v => v.HandedOver) ?? [])
            if (!v.DigestMatched || (v.SourceDigest is not null && v.TargetDigest is not null && v.SourceDigest != v.TargetDigest))
                Fail(Digest, $"{v.Id} on {v.Target}: source digest {v.SourceDigest ?? "-"}, target digest {v.TargetDigest ?? "-"}");

        // The longest pause: a handover's downtime (pause on the source → resumed on its target), or one seen while sampling.
        var (pauseVm, pauseMs) = ("", 0.0);
        foreach (var v in o.Report?.PerVm.Where(v => v.HandedOver) ?? [])
            if (v.DowntimeMs > pauseMs) (pauseVm, pauseMs) = (v.Id, v.DowntimeMs);
        if (o.SampledPause is { } seen && seen.Ms > pauseMs) (pauseVm, pauseMs) = (seen.Vm, seen.Ms);
        if (pauseMs > o.PauseBoundMs) Fail(PauseBound, $"{pauseVm} was paused {pauseMs:0} ms (bound {o.PauseBoundMs:0} ms)");

        int replaced = o.Report?.Replaced.Count(r => r.NewTarget.Length > 0) ?? 0;
        return new RunVerdict(handedTo.Count, replaced, onSource, endedWithSource, endedWithTarget, lost, twice, pauseMs, violations);
    }
}
