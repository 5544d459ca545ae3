namespace VMScatter.Bench.Chaos;

/// <summary>
/// `vmscatter chaos`: N runs, each on a fresh cluster (a run's kill must not leak into the next), the role to kill
/// drawn from a seeded generator (or given), and the summary over all of them.
/// </summary>
public static class ChaosHarness
{
    public static async Task<ChaosSummary> RunAsync(ChaosOptions o, CancellationToken ct = default)
    {
        var rng = new Random(unchecked((int)(o.Seed ^ (o.Seed >> 32))));
        var results = new List<ChaosRunResult>();
        for (int run = 1; run <= o.Runs; run++)
        {
            ct.ThrowIfCancellationRequested();
            var role = o.Kills.Count > 0 ? o.Kills[(run - 1) % o.Kills.Count] : (ChaosRole)rng.Next(3);
            o.Log($"run {run}/{o.Runs}: a {role.ToString().ToLowerInvariant()} node is killed");
            var r = await ChaosRun.ExecuteAsync(o, run, role, rng, ct).ConfigureAwait(false);
            results.Add(r);
            var v = r.Verdict;
            o.Log($"run {run}/{o.Runs}: {(v.Held ? "held" : "FAILED")}; {v.HandedOver} handed over, {v.Replaced} re-placed, {v.OnSource} on the source, "
                + $"{v.EndedWithSource + v.EndedWithTarget} ended with the killed node, {v.Lost} lost, {v.RunTwice} run twice, longest pause {v.LongestPauseMs:0} ms"
                + string.Concat(v.Violations.Select(x => $"\n  {x.Invariant}: {x.Detail}")) + (r.Logs is null ? "" : $"\n  logs: {r.Logs}"));
        }
        return ChaosSummary.Of(o, results);
    }
}
