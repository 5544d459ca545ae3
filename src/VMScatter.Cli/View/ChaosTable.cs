using System.Globalization;
using System.Text;
using VMScatter.Bench.Chaos;

namespace VMScatter.Cli.View;

/// <summary>The chaos summary as a Markdown table (it goes into the README as printed) and its totals.</summary>
public static class ChaosTable
{
    public static string Render(ChaosSummary s)
    {
        var inv = CultureInfo.InvariantCulture;
        var b = new StringBuilder();
        b.AppendLine("| run | killed | moment (after placement) | migrate exit | handed over | re-placed | on source | ended with killed node | lost | run twice | longest pause ms | invariants |");
        b.AppendLine("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        foreach (var r in s.PerRun)
            b.AppendLine(inv, $"| {r.Run} | {r.Killed} ({r.Role}) | {r.Moment} | {r.MigrateExit?.ToString(inv) ?? "-"} | {r.HandedOver} | {r.Replaced} | {r.OnSource} | {r.EndedWithKilledSource + r.EndedWithKilledTarget} | {r.Lost} | {r.RunTwice} | {r.LongestPauseMs:0} | {(r.Held ? "held" : "**FAILED**")} |");
        b.AppendLine();
        b.AppendLine(inv, $"runs {s.Runs} (seed {s.Seed}); kills by role: {string.Join(", ", s.KillsByRole.Select(k => $"{k.Key} {k.Value}"))}");
        b.AppendLine(inv, $"VMs handed over {s.VmsHandedOver}, re-placed {s.VmsReplaced}, left on the source {s.VmsOnSource}");
        b.AppendLine(inv, $"VMs lost {s.VmsLost}, run twice {s.VmsRunTwice}");
        b.AppendLine(inv, $"VMs that ended with a killed synthetic source {s.VmsEndedWithKilledSource}, with a killed synthetic target {s.VmsEndedWithKilledTarget} (synthetic guests end with their node)");
        b.AppendLine(inv, $"longest pause {s.LongestPauseMs:0} ms (bound {s.PauseBoundMs:0} ms)");
        b.AppendLine(s.AllInvariantsHeld ? "every invariant held in every run" : $"{s.Failures.Count} invariant failure(s):");
        foreach (var f in s.Failures) b.AppendLine(inv, $"  run {f.Run} (killed {f.Killed}): {f.Invariant}: {f.Detail}{(f.Logs is null ? "" : $" [logs: {f.Logs}]")}");
        return b.ToString();
    }
}
