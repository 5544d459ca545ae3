using System.Globalization;
using ScottPlot;
using VMScatter.Bench;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>One method's result in one scenario, as `bench --plot` draws it.</summary>
public sealed record BenchBar(string Scenario, string Method, long BytesSent, double TotalSeconds, double DowntimeMsMax, bool Verified);

/// <summary>
/// `bench --plot`: the methods side by side in three panels, data sent, total time and the longest downtime; one bar per
/// method (and per scenario when several ran), from the results the bench already printed.
/// </summary>
public static class BenchPlot
{
    public const int Width = 1500, Height = 620;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static IReadOnlyList<BenchBar> From(IEnumerable<ScenarioResult> results) =>
        results.SelectMany(r => r.Runs.Select(x => new BenchBar(r.Scenario, x.Method, x.BytesSent, x.TotalSeconds, x.DowntimeMsMax, x.Verified))).ToArray();

    public static IReadOnlyList<BenchBar> From(QemuBenchResult result) =>
        result.Runs.Select(x => new BenchBar("qemu", x.Method, x.BytesSent, x.TotalSeconds, x.DowntimeMsMax, x.Verified)).ToArray();

    /// <summary>Several fleets (`--workload all`): one group of bars per workload.</summary>
    public static IReadOnlyList<BenchBar> From(IReadOnlyList<QemuBenchResult> results) => results.Count == 1 ? From(results[0])
        : results.SelectMany(r => r.Runs.Select(x => new BenchBar(r.Fleet, x.Method, x.BytesSent, x.TotalSeconds, x.DowntimeMsMax, x.Verified))).ToArray();

    /// <summary>"paper: 8 VMs x 256 MiB -> 4 targets, links 1 Gbit/s" and the like.</summary>
    public static string Caption(IReadOnlyList<ScenarioResult> results) => results.Count == 1
        ? $"{results[0].Scenario}: {results[0].Vms} VMs x {ByteSize.Format(results[0].VmMemoryBytes)} -> {results[0].Targets} targets, links {LinkRate.Format(results[0].LinkBitsPerSecond)}"
        : $"{results.Count} scenarios, links {LinkRate.Format(results[0].LinkBitsPerSecond)}";

    public static void Save(IReadOnlyList<BenchBar> bars, string caption, string path)
    {
        PlotOutput.UseSansFont();
        var scenarios = bars.Select(b => b.Scenario).Distinct().ToArray();
        var methods = bars.Select(b => b.Method).Distinct().ToArray();
        bool oneScenario = scenarios.Length == 1;
        var palette = new ScottPlot.Palettes.Category10();
        var panels = new (string Title, string Unit, Func<BenchBar, double> Value, string Format)[]
        {
            ("Data sent by the source", "MiB", b => b.BytesSent / (double)(1 << 20), "N0"),
            ("Total time", "seconds", b => b.TotalSeconds, "0.00"),
            ("Downtime, longest VM pause", "ms", b => b.DowntimeMsMax, "N0"),
        };
        var figure = new Multiplot();
        figure.AddPlots(panels.Length);
        figure.Layout = new ScottPlot.MultiplotLayouts.Columns();
        for (int p = 0; p < panels.Length; p++)
        {
            var (title, unit, value, format) = panels[p];
            var plot = figure.GetPlot(p);
            double max = 0;
            for (int m = 0; m < methods.Length; m++)
            {
                var series = new List<Bar>();
                for (int s = 0; s < scenarios.Length; s++)
                {
                    var b = bars.FirstOrDefault(x => x.Scenario == scenarios[s] && x.Method == methods[m]);
                    if (b is null) continue;
                    double v = value(b);
                    max = Math.Max(max, v);
                    series.Add(new Bar
                    {
                        Position = s * (methods.Length + 1) + m, Value = v, FillColor = palette.GetColor(m), LineColor = palette.GetColor(m),
                        Label = v.ToString(format, Inv) + (b.Verified ? "" : " (not verified)"),
                    });
                }
                var plotted = plot.Add.Bars(series);
                plotted.LegendText = methods[m];
                plotted.ValueLabelStyle.FontSize = 12;
            }
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            if (oneScenario)
                for (int m = 0; m < methods.Length; m++) ticks.AddMajor(m, PlotOutput.Wrap(methods[m]));
            else
                for (int s = 0; s < scenarios.Length; s++) ticks.AddMajor(s * (methods.Length + 1) + (methods.Length - 1) / 2.0, scenarios[s]);
            plot.Axes.Bottom.TickGenerator = ticks;
            plot.Axes.Bottom.MajorTickStyle.Length = 0;
            plot.Axes.SetLimitsY(0, Math.Max(1e-9, max) * 1.18);
            plot.Axes.SetLimitsX(-0.7, scenarios.Length * (methods.Length + 1) - 1.3);
            plot.Title(title, 15);
            plot.YLabel(unit);
            if (p == 1) plot.XLabel(caption, 13);
            if (!oneScenario && p == 0) plot.ShowLegend(Alignment.UpperLeft);
            else plot.HideLegend(); // one scenario: the methods are the tick labels
        }
        PlotOutput.Save(figure, path, Width, Height);
    }
}
