using System.Globalization;
using ScottPlot;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>
/// `--plot` of demo and migrate: a migration's timeline from what the console saw (<see cref="MigrationTimeline"/>)
/// and its report. Above: the bytes the source sent over time, in all and per wave (round 0 serves every target
/// group; each later wave sends to its target hosts), with the rounds' starts and the waves shaded. Below: each
/// VM's pause, from the source pausing it to its target resuming it, ending when its handover reached the console.
/// </summary>
public static class TimelinePlot
{
    public const int Width = 1200, Height = 900;

    /// <summary>Bytes sent in one wave (-1: round 0), cumulated over the samples that carried it.</summary>
    public sealed record Series(int Wave, string Label, IReadOnlyList<string> Targets, double[] Seconds, double[] Bytes)
    {
        public double Total => Bytes.Length == 0 ? 0 : Bytes[^1];
    }

    /// <summary>A round as the samples saw it: its first and last sample.</summary>
    public sealed record RoundSpan(int Round, int Wave, double Start, double End);

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>
    /// Splits the cumulative bytes over the waves: each sample's increase goes to the wave of the round it reports (a
    /// round's start and end are both sampled, so a round's bytes are its own). Each series starts at 0 at the sample
    /// before its first and stays at its total to <paramref name="end"/>.
    /// </summary>
    public static IReadOnlyList<Series> BytesPerWave(IReadOnlyList<ReportSample> samples, double end)
    {
        var ordered = samples.OrderBy(s => s.Seconds).ToArray();
        var series = new SortedDictionary<int, (List<double> X, List<double> Y, IReadOnlyList<string> Targets)>();
        long previous = 0;
        double previousAt = ordered.Length > 0 ? ordered[0].Seconds : 0;
        foreach (var s in ordered)
        {
            long delta = Math.Max(0, s.BytesSent - previous);
            previous = Math.Max(previous, s.BytesSent);
            if (!series.TryGetValue(s.Wave, out var line))
            {
                if (delta == 0) { previousAt = s.Seconds; continue; } // a wave begins with its first byte
                line = ([previousAt], [0], s.WaveTargets);
                series[s.Wave] = line;
            }
            line.X.Add(s.Seconds);
            line.Y.Add(line.Y[^1] + delta);
            previousAt = s.Seconds;
        }
        return series.Select(kv =>
        {
            var (x, y, targets) = kv.Value;
            if (x[^1] < end) { x.Add(end); y.Add(y[^1]); }
            string label = kv.Key < 0 ? "round 0: to every target group" : $"wave {kv.Key + 1}: to {string.Join(", ", targets)}";
            return new Series(kv.Key, label, targets, x.ToArray(), y.ToArray());
        }).ToArray();
    }

    public static IReadOnlyList<RoundSpan> Rounds(IReadOnlyList<ReportSample> samples) =>
        samples.OrderBy(s => s.Seconds).GroupBy(s => s.Round)
            .Select(g => new RoundSpan(g.Key, g.First().Wave, g.First().Seconds, g.Last().Seconds)).OrderBy(r => r.Start).ToArray();

    public static void Save(MigrationReport report, MigrationTimeline timeline, string path)
    {
        PlotOutput.UseSansFont();
        var samples = timeline.Samples;
        var handovers = timeline.Handovers;
        double end = new[] { timeline.FinishedAt ?? 0, samples.Count > 0 ? samples.Max(s => s.Seconds) : 0, handovers.Count > 0 ? handovers.Max(h => h.Seconds) : 0, 0.1 }.Max();
        var series = BytesPerWave(samples, end);
        var rounds = Rounds(samples);
        var palette = new ScottPlot.Palettes.Category10();
        Color ColorOf(int wave) => wave < 0 ? Colors.Gray : palette.GetColor(wave);
        // A target host's colour is its wave's; a host in several waves (re-placed VMs) keeps its first.
        var waveOfHost = new Dictionary<string, int>();
        foreach (var s in series.Where(s => s.Wave >= 0)) foreach (var t in s.Targets) waveOfHost.TryAdd(t, s.Wave);

        var figure = new Multiplot();
        figure.AddPlots(2);
        var bytes = figure.GetPlot(0);
        var pauses = figure.GetPlot(1);
        figure.Layout = new ScottPlot.MultiplotLayouts.Rows();

        // Above: bytes over time.
        double mib = 1 << 20, top = Math.Max(1, (samples.Count > 0 ? samples.Max(s => s.BytesSent) : report.BytesSent) / mib) * 1.15;
        if (timeline.PlacedAt is { } placed)
        {
            var analysis = bytes.Add.HorizontalSpan(0, placed, Colors.Gray.WithAlpha(0.15));
            analysis.LegendText = "round 0 hashed, VMs placed";
        }
        foreach (var s in series.Where(s => s.Wave >= 0))
        {
            double start = s.Seconds[0], stop = Math.Max(rounds.Where(r => r.Wave == s.Wave).Select(r => r.End).DefaultIfEmpty(start).Max(),
                handovers.Where(h => s.Targets.Contains(h.Target)).Select(h => h.Seconds).DefaultIfEmpty(start).Max());
            bytes.Add.HorizontalSpan(start, stop, ColorOf(s.Wave).WithAlpha(0.08));
        }
        bool labelRounds = rounds.Count <= 24;
        foreach (var r in rounds)
        {
            var line = bytes.Add.VerticalLine(r.Start, 1, Colors.Black.WithAlpha(0.35), LinePattern.Dotted);
            if (!labelRounds) continue;
            var text = bytes.Add.Text($"r{r.Round}", r.Start, top * (r.Round % 2 == 0 ? 0.97 : 0.91));
            text.LabelFontSize = 11;
            text.LabelFontColor = Colors.Black.WithAlpha(0.7);
            text.LabelAlignment = Alignment.UpperLeft;
            text.OffsetX = 2;
        }
        if (samples.Count > 0)
        {
            var ordered = samples.OrderBy(s => s.Seconds).ToArray();
            double[] xs = [0, .. ordered.Select(s => s.Seconds), end], ys = [0, .. ordered.Select(s => s.BytesSent / mib), ordered[^1].BytesSent / mib];
            var total = bytes.Add.ScatterLine(xs, ys);
            total.Color = Colors.Black;
            total.LineWidth = 2.5f;
            total.LegendText = $"sent by the source, in all: {ByteSize.Format(ordered[^1].BytesSent)}";
        }
        foreach (var s in series)
        {
            var line = bytes.Add.ScatterLine(s.Seconds, s.Bytes.Select(b => b / mib).ToArray());
            line.Color = ColorOf(s.Wave);
            line.LineWidth = 2;
            line.LegendText = $"{s.Label}: {ByteSize.Format(s.Total)}";
        }
        if (samples.Count == 0) bytes.Add.Annotation("no transfer progress was seen (the report has no byte timeline)");
        bytes.Title(string.Create(Inv,
            $"{report.Vms} VMs -> {report.Targets} targets: {ByteSize.Format(report.BytesSent)} sent ({report.SentToNaive:P1} of a naive copy), {report.TotalSeconds:0.00} s, downtime max {report.DowntimeMsMax:0} ms{(report.Verified ? "" : ", NOT verified")}"),
            15);
        bytes.YLabel("MiB sent (cumulative)");
        bytes.XLabel("seconds since the migration was submitted (dotted: a round starts, rN; shaded: a wave)");
        bytes.Axes.SetLimits(0, end * 1.1, 0, top);
        bytes.ShowLegend(Alignment.UpperLeft);

        // Below: each VM's pause, one row per VM.
        var vms = report.PerVm.Select(v => v.Id).Union(handovers.Select(h => h.Vm)).Distinct().OrderBy(v => v, StringComparer.Ordinal).ToArray();
        var row = vms.Select((v, i) => (v, y: (double)(vms.Length - 1 - i))).ToDictionary(x => x.v, x => x.y);
        var seenTargets = new HashSet<string>();
        foreach (var h in handovers.Where(h => row.ContainsKey(h.Vm)))
        {
            double y = row[h.Vm];
            if (!h.HandedOver)
            {
                var failed = pauses.Add.Text("not handed over (runs on the source)", h.Seconds, y);
                failed.LabelFontColor = Colors.Red;
                failed.LabelFontSize = 11;
                failed.LabelAlignment = Alignment.MiddleLeft;
                continue;
            }
            double pausedAt = h.Seconds - h.DowntimeMs / 1000;
            var color = waveOfHost.TryGetValue(h.Target, out int wave) ? ColorOf(wave) : Colors.DarkRed;
            var bar = pauses.Add.Rectangle(pausedAt, h.Seconds, y - 0.35, y + 0.35);
            bar.FillColor = color;
            bar.LineColor = color;
            if (seenTargets.Add(h.Target)) bar.LegendText = $"paused, then resumed on {h.Target}";
            var label = pauses.Add.Text(string.Create(Inv, $"{h.DowntimeMs:0} ms -> {h.Target}"), h.Seconds, y);
            label.LabelFontSize = 11;
            label.LabelAlignment = Alignment.MiddleLeft;
            label.OffsetX = 4;
        }
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (var (vm, y) in row) ticks.AddMajor(y, vm);
        pauses.Axes.Left.TickGenerator = ticks;
        pauses.Axes.SetLimits(0, end * 1.1, -0.7, Math.Max(0, vms.Length - 1) + 0.7);
        pauses.Title("Each VM's pause: paused on the source until resumed on its target (bar ends at its handover)", 13);
        pauses.XLabel("seconds since the migration was submitted");
        pauses.YLabel("VM");
        if (seenTargets.Count > 0) pauses.ShowLegend(Alignment.UpperLeft);
        // Fixed margins, so that both panels' time axes line up whatever their tick labels' widths.
        bytes.Layout.Fixed(new PixelPadding(90, 20, 55, 40));
        pauses.Layout.Fixed(new PixelPadding(90, 20, 55, 40));
        PlotOutput.Save(figure, path, Width, Height);
    }
}
