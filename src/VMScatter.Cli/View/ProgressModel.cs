using System.Collections.Immutable;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;

namespace VMScatter.Cli.View;

/// <summary>One round as the console saw it. Bytes and records are this round's own, not the migration's running totals.</summary>
/// <param name="Wave">-1 for round 0 (every target group), else the wave's index.</param>
/// <param name="StartBytes">The migration's byte counter as last seen before the round: the round's bytes are counted from it.</param>
/// <param name="Closed">A later round began, a VM of its wave was decided, or the migration ended: its figures are final.</param>
public sealed record RoundSeen(
    int Round, int Wave, IReadOnlyList<string> Targets, bool StopAndCopy, long Bytes, long Records, long RecordsPlanned, long Pages,
    double StartedAt, double LastAt, bool Closed, long StartBytes = 0, long StartRecords = 0);

/// <summary>What a row shows for a wave (or round 0, or a target whose wave has not begun).</summary>
public enum WaveState { Waiting, PreCopy, StopAndCopy, Verifying, HandedOver }

/// <summary>A row of the live view, computed at one instant.</summary>
/// <param name="Fraction">How far the current round is (0..1), null when not known yet.</param>
/// <param name="BytesPerSecond">Sliding-window rate while the wave sends; its average once it is through.</param>
/// <param name="Wave">-1: round 0; else the wave's index; <see cref="int.MaxValue"/>: a target whose wave has not begun.</param>
public sealed record WaveRow(
    int Wave, string Label, WaveState State, int Round, int Rounds, long RoundBytes, long WaveBytes, long PagesInRound, double? Fraction,
    double? BytesPerSecond, TimeSpan? Eta, int Vms, int HandedOver, int Failed);

/// <summary>The whole live view at one instant.</summary>
public sealed record ProgressView(MigrationPhase Phase, long BytesSent, double? BytesPerSecond, int Vms, int HandedOver, int Failed, IReadOnlyList<WaveRow> Rows);

/// <summary>
/// The console's picture of a migration, folded from its events (immutable: <c>Apply</c> returns the next model). The
/// events carry cumulative counters; each round's own bytes are the counter minus its value when the round began.
/// </summary>
public sealed record ProgressModel
{
    /// <summary>How far back the rate looks: long enough to span a few progress samples, short enough to follow a round.</summary>
    public static readonly TimeSpan RateWindow = TimeSpan.FromSeconds(2);

    public static ProgressModel Empty { get; } = new();

    public int Vms { get; init; }
    public MigrationPhase Phase { get; init; } = MigrationPhase.Analysing;
    public bool Finished { get; init; }
    public ImmutableDictionary<string, string> TargetOfVm { get; init; } = ImmutableDictionary<string, string>.Empty;
    public ImmutableHashSet<string> HandedOver { get; init; } = [];
    public ImmutableHashSet<string> Failed { get; init; } = [];
    /// <summary>Every round seen, in order; the last one is the current one unless closed.</summary>
    public ImmutableList<RoundSeen> Rounds { get; init; } = [];
    /// <summary>(seconds, bytes, records) samples within the rate window, plus the one just before it.</summary>
    public ImmutableList<(double At, long Bytes, long Records)> Samples { get; init; } = [];
    public long BytesSent { get; init; }
    public long RecordsSent { get; init; }

    public RoundSeen? Current => Rounds.Count > 0 && !Rounds[^1].Closed ? Rounds[^1] : null;

    public ProgressModel Apply(IVmScatterProtocol message, double at) => message switch
    {
        MigrationAccepted a => this with { Vms = a.Vms },
        MigrationPlaced p => this with
        {
            Phase = Max(Phase, MigrationPhase.Preparing),
            TargetOfVm = p.TargetOfVm.ToImmutableDictionary(x => x.Key.ToString(), x => x.Value.ToString()),
            Vms = Math.Max(Vms, p.TargetOfVm.Count),
        },
        VmsReplaced r => this with { TargetOfVm = TargetOfVm.SetItems(r.TargetOfVm.Select(x => KeyValuePair.Create(x.Key.ToString(), x.Value.ToString()))) },
        MigrationProgress p => Progress(p, at),
        VmHandedOver h => Decided(h.VmId.ToString(), at) with { HandedOver = HandedOver.Add(h.VmId.ToString()) },
        VmHandoverFailed f => Decided(f.VmId.ToString(), at) with { Failed = Failed.Add(f.VmId.ToString()) },
        MigrationFinished => CloseCurrent() with { Finished = true, Phase = MigrationPhase.Completed },
        _ => this,
    };

    private ProgressModel Progress(MigrationProgress p, double at)
    {
        var model = this;
        var current = Current;
        // Events come in order, and a round's end is reported before the next begins: the counter as last seen is the
        // new round's starting point (bytes sent before its first report are its own).
        if (current is null || p.Round > current.Round)
        {
            if (current is null && Rounds.Count > 0 && Rounds[^1].Round >= p.Round) return model with { Phase = Max(Phase, p.Phase) }; // a late report of a closed round
            model = model.CloseCurrent();
            current = new RoundSeen(p.Round, p.Wave, Names(p.WaveTargets), p.StopAndCopy, 0, 0, 0, p.PagesInRound, at, at, false, BytesSent, RecordsSent);
            model = model with { Rounds = model.Rounds.Add(current) };
        }
        else if (p.Round < current.Round) return model with { Phase = Max(Phase, p.Phase) };
        var updated = current with
        {
            Bytes = Math.Max(current.Bytes, p.BytesSent - current.StartBytes),
            Records = Math.Max(current.Records, p.ContentRecordsSent - current.StartRecords),
            RecordsPlanned = p.ContentRecordsInRound > 0 ? p.ContentRecordsInRound : current.RecordsPlanned,
            Pages = p.PagesInRound,
            StopAndCopy = current.StopAndCopy || p.StopAndCopy,
            Targets = current.Targets.Count > 0 ? current.Targets : Names(p.WaveTargets),
            LastAt = at,
        };
        var samples = model.Samples.Add((at, p.BytesSent, p.ContentRecordsSent));
        // Keep one sample older than the window: the rate is measured from the counter as it stood at the window's start.
        while (samples.Count > 2 && samples[1].At <= at - RateWindow.TotalSeconds) samples = samples.RemoveAt(0);
        return model with
        {
            Rounds = model.Rounds.SetItem(model.Rounds.Count - 1, updated),
            Samples = samples,
            BytesSent = Math.Max(BytesSent, p.BytesSent),
            RecordsSent = Math.Max(RecordsSent, p.ContentRecordsSent),
            Phase = Max(Phase, p.Phase),
        };
    }

    /// <summary>A VM of the current round's wave was decided: that wave's rounds are over.</summary>
    private ProgressModel Decided(string vm, double at)
    {
        var current = Current;
        if (current is null || current.Wave < 0 || !TargetOfVm.TryGetValue(vm, out var target) || !current.Targets.Contains(target)) return this;
        return CloseCurrent();
    }

    private ProgressModel CloseCurrent() => Current is { } c ? this with { Rounds = Rounds.SetItem(Rounds.Count - 1, c with { Closed = true }) } : this;

    /// <summary>Phases only move forward here (the scheduler's phase of an event may lag the handovers already seen).</summary>
    private static MigrationPhase Max(MigrationPhase a, MigrationPhase b) => (MigrationPhase)Math.Max((int)a, (int)b);

    private static IReadOnlyList<string> Names(IReadOnlyList<Domain.HostId>? hosts) => (hosts ?? []).Select(h => h.ToString()).ToArray();

    /// <summary>
    /// Bytes and records per second over the last <see cref="RateWindow"/> before <paramref name="now"/>: what the
    /// counters gained since the window's start, over the window (or over the time since the first sample, if shorter).
    /// Null before two samples.
    /// </summary>
    public (double Bytes, double Records)? Rate(double now)
    {
        if (Samples.Count < 2) return null;
        double from = Math.Max(Samples[0].At, now - RateWindow.TotalSeconds);
        var start = Samples.LastOrDefault(s => s.At <= from);
        if (start == default) start = Samples[0];
        var last = Samples[^1];
        double seconds = now - from;
        if (seconds <= 0) return null;
        return (Math.Max(0, last.Bytes - start.Bytes) / seconds, Math.Max(0, last.Records - start.Records) / seconds);
    }

    /// <summary>The rows at <paramref name="now"/>: round 0, each wave seen, then each target whose wave has not begun.</summary>
    public ProgressView View(double now)
    {
        var rate = Current is null ? null : Rate(now);
        var rows = new List<WaveRow>();
        // Before round 0 reports, its row says the source is hashing.
        if (Rounds.IsEmpty) rows.Add(new WaveRow(-1, "round 0 · every target group", WaveState.Waiting, -1, 0, 0, 0, 0, null, null, null, 0, 0, 0));
        var waves = Rounds.GroupBy(r => r.Wave).OrderBy(g => g.Key).ToArray();
        int waveCount = waves.Count(g => g.Key >= 0) + Math.Max(0, PendingTargets().Count);
        foreach (var wave in waves)
        {
            var rounds = wave.ToArray();
            var last = rounds[^1];
            bool active = Current is { } c && c.Wave == wave.Key;
            // Round 0 hands no VM over itself: its row counts none.
            var vms = wave.Key < 0 ? [] : TargetOfVm.Where(x => last.Targets.Contains(x.Value)).Select(x => x.Key).ToArray();
            int handed = vms.Count(HandedOver.Contains), failed = vms.Count(Failed.Contains);
            var state = wave.Key < 0
                ? (active ? WaveState.PreCopy : WaveState.HandedOver)
                : active ? (last.StopAndCopy ? WaveState.StopAndCopy : WaveState.PreCopy)
                : handed + failed >= vms.Length && vms.Length > 0 ? WaveState.HandedOver : WaveState.Verifying;
            double? fraction = active ? RoundFraction(last) : 1;
            double? bytesRate;
            TimeSpan? eta = null;
            if (active)
            {
                bytesRate = rate?.Bytes;
                // What is left of the round's records at the records' recent rate.
                if (fraction is { } f && rate is { Records: > 0 } r && last.RecordsPlanned > 0)
                    eta = TimeSpan.FromSeconds(Math.Max(0, last.RecordsPlanned - last.Records) / r.Records);
                else if (fraction is >= 1) eta = TimeSpan.Zero;
            }
            else
            {
                double seconds = rounds[^1].LastAt - rounds[0].StartedAt;
                bytesRate = seconds > 0 ? rounds.Sum(x => x.Bytes) / seconds : null;
            }
            string label = wave.Key < 0 ? "round 0 · every target group" : $"wave {wave.Key + 1}/{waveCount} · {string.Join(", ", last.Targets)}";
            rows.Add(new WaveRow(wave.Key, label, state, last.Round, rounds.Length, last.Bytes, rounds.Sum(x => x.Bytes), last.Pages, fraction, bytesRate, eta,
                vms.Length, handed, failed));
        }
        foreach (var target in PendingTargets())
        {
            var vms = TargetOfVm.Where(x => x.Value == target).Select(x => x.Key).ToArray();
            rows.Add(new WaveRow(int.MaxValue, $"{target} · its wave not begun", WaveState.Waiting, -1, 0, 0, 0, 0, 0, null, null, vms.Length, vms.Count(HandedOver.Contains), vms.Count(Failed.Contains)));
        }
        return new ProgressView(Phase, BytesSent, rate?.Bytes, Vms, HandedOver.Count, Failed.Count, rows);
    }

    /// <summary>How far a round is: its records against those it plans (pages, before the round is built), null if neither is known.</summary>
    public static double? RoundFraction(RoundSeen round)
    {
        if (round.Closed) return 1;
        long plan = round.RecordsPlanned > 0 ? round.RecordsPlanned : round.Wave >= 0 ? round.Pages : 0;
        if (plan <= 0) return null;
        return Math.Clamp((double)round.Records / plan, 0, 1);
    }

    /// <summary>Targets of the placement that no wave seen so far has served.</summary>
    private IReadOnlyList<string> PendingTargets()
    {
        var served = Rounds.Where(r => r.Wave >= 0).SelectMany(r => r.Targets).ToHashSet();
        return TargetOfVm.Values.Distinct().Where(t => !served.Contains(t)).Order(StringComparer.Ordinal).ToArray();
    }
}
