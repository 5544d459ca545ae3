using System.Globalization;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>The words and numbers of the progress views, the same on a terminal and in a log.</summary>
public static class ProgressText
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Rate(double? bytesPerSecond) => bytesPerSecond is { } r ? $"{ByteSize.Format(r)}/s" : "-";

    public static string Eta(TimeSpan? eta) => eta switch
    {
        null => "-",
        { TotalSeconds: < 10 } e => $"{e.TotalSeconds.ToString("0.0", Inv)} s",
        { TotalSeconds: < 120 } e => $"{e.TotalSeconds.ToString("0", Inv)} s",
        { } e => $"{(int)e.TotalMinutes} min {e.Seconds} s",
    };

    public static string State(WaveRow row, MigrationPhase phase) => row.State switch
    {
        WaveState.Waiting when row.Wave < 0 => phase < MigrationPhase.Preparing ? "hashing + dedup" : "placed, connecting",
        WaveState.Waiting => "waiting",
        WaveState.PreCopy => "pre-copy",
        WaveState.StopAndCopy => "stop-and-copy",
        WaveState.Verifying => $"verifying, handed over {row.HandedOver}/{row.Vms}",
        WaveState.HandedOver when row.Vms == 0 => "sent",
        WaveState.HandedOver => row.Failed > 0 ? $"handed over {row.HandedOver}/{row.Vms}, {row.Failed} failed" : $"handed over {row.HandedOver}/{row.Vms}",
        _ => "",
    };

    public static string Round(WaveRow row) => row.Round < 0 ? "-" : row.Rounds > 1 ? $"round {row.Round} ({Ordinal(row.Rounds)} of wave)" : $"round {row.Round}";

    private static string Ordinal(int n) => n + (n % 100 is 11 or 12 or 13 ? "th" : (n % 10) switch { 1 => "st", 2 => "nd", 3 => "rd", _ => "th" });

    /// <summary>This round's bytes, and the wave's when it had more rounds.</summary>
    public static string Bytes(WaveRow row) => row.Round < 0 ? "-"
        : row.Rounds > 1 ? $"{ByteSize.Format(row.RoundBytes)} (wave {ByteSize.Format(row.WaveBytes)})" : ByteSize.Format(row.RoundBytes);

    /// <summary>A finished round, for a log: its own bytes, how long it took as seen from here, what it carried.</summary>
    public static string RoundLine(RoundSeen r)
    {
        string where = r.Wave < 0 ? "every target group" : $"wave {r.Wave + 1} ({string.Join(", ", r.Targets)})";
        string kind = r.Wave < 0 ? "" : r.StopAndCopy ? ", stop-and-copy" : ", pre-copy";
        double seconds = r.LastAt - r.StartedAt;
        string time = seconds > 0 ? $" in {seconds.ToString("0.00", Inv)} s ({Rate(r.Bytes / seconds)})" : "";
        return $"round {r.Round}, {where}{kind}: {ByteSize.Format(r.Bytes)} sent{time}, {r.Records.ToString("N0", Inv)} content records, {r.Pages.ToString("N0", Inv)} {(r.Wave < 0 ? "pages hashed" : "pages in round")}";
    }

    /// <summary>The open round so far, for a log line every interval of a long round.</summary>
    public static string RoundSoFar(RoundSeen r, WaveRow? row) =>
        $"round {r.Round}, {(r.Wave < 0 ? "every target group" : $"wave {r.Wave + 1}")}: {ByteSize.Format(r.Bytes)} so far, {Rate(row?.BytesPerSecond)}, ETA {Eta(row?.Eta)}";

    /// <summary>The other events, one line each (null: not shown).</summary>
    public static string? EventLine(IVmScatterProtocol message) => message switch
    {
        MigrationAccepted a => $"accepted: {a.Vms} VMs to {a.Targets} target hosts",
        MigrationPlaced p => $"placed ({p.Strategy}): {string.Join(", ", p.TargetOfVm.OrderBy(x => x.Key.ToString(), StringComparer.Ordinal).Select(x => $"{x.Key}→{x.Value}"))}",
        VmHandedOver h => $"handed over {h.VmId} → {h.TargetHostId} (digest {h.Digest[..Math.Min(12, h.Digest.Length)]}, downtime {h.DowntimeMs:0} ms)",
        MigrationStatus s => $"scheduler: migration {s.MigrationId} is {s.Phase.ToString().ToLowerInvariant()}",
        VmHandoverFailed f => $"NOT handed over {f.VmId}: {f.Reason} (still running on the source)",
        MigrationTargetLost l => $"target {l.HostId} lost: {l.Reason}; its VMs not handed over are re-placed",
        VmsReplaced r => $"re-placed from {r.LostHostId}: {string.Join(", ", r.TargetOfVm.OrderBy(x => x.Key.ToString(), StringComparer.Ordinal).Select(x => $"{x.Key}→{x.Value}"))}",
        _ => null,
    };

    /// <summary>
    /// The log lines one event adds: rounds it closed (each once, with its final figures), the event's own line, and
    /// how far the open round is when no progress line was written for <paramref name="interval"/> (so the first data
    /// of a migration shows at once, and a long round once an interval). <paramref name="lastIntervalAt"/> is the time
    /// of the last progress line, updated when one is written.
    /// </summary>
    public static IReadOnlyList<string> PlainLines(ProgressModel before, ProgressModel after, IVmScatterProtocol message, double at, TimeSpan interval, ref double lastIntervalAt)
    {
        var lines = new List<string>();
        for (int i = 0; i < after.Rounds.Count; i++)
            if (after.Rounds[i].Closed && (i >= before.Rounds.Count || !before.Rounds[i].Closed))
            {
                lines.Add(RoundLine(after.Rounds[i]));
                lastIntervalAt = at;
            }
        if (EventLine(message) is { } line) lines.Add(line);
        if (message is MigrationProgress && after.Current is { Bytes: > 0 } current && at - lastIntervalAt >= interval.TotalSeconds)
        {
            var row = after.View(at).Rows.FirstOrDefault(r => r.Round == current.Round && r.State is WaveState.PreCopy or WaveState.StopAndCopy);
            lines.Add(RoundSoFar(current, row));
            lastIntervalAt = at;
        }
        return lines;
    }
}
