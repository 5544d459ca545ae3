using System.Buffers.Binary;
using System.Xml.Linq;
using SkiaSharp;
using VMScatter.Bench;
using VMScatter.Cli.View;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.DataPlane;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>`--plot`: the timeline and the bench chart drawn from fixed data, then opened again and checked as images.</summary>
public sealed class PlotTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vmscatter-plots-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const long MiB = 1 << 20;
    private static readonly MigrationId Id = MigrationId.Create("0f6b1c9e-3a51-4c55-9d1e-6a2b8f0e7c11");
    private static readonly string[] Vms = ["vm-000", "vm-001", "vm-002", "vm-003"];
    private static readonly Dictionary<string, string> Placement = new() { ["vm-000"] = "t1", ["vm-001"] = "t2", ["vm-002"] = "t1", ["vm-003"] = "t2" };

    private static MigrationReport Report() => new()
    {
        MigrationId = Id.ToString(), Vms = 4, Targets = 2, GuestBytes = 4 * 256 * MiB, NaiveBytes = 600 * MiB, DistinctPages = 100_000, ZeroPages = 90_000,
        BytesSent = 160 * MiB, BytesReceived = 200 * MiB, Verified = false, TotalSeconds = 3.1, PlacementStrategy = "traffic-aware", Placement = Placement,
        LinkBytes = 320 * MiB, GroupSwitches = 4, GroupSwitchesLowerBound = 4, GroupTransport = "relay-chain", Rounds = 3, Waves = 2, DataPlaneRounds = 5,
        DirtyPagesPerRound = [262_144, 20_000, 1_500, 20_000, 1_400], CompressionRatio = 0.5, ByteCompares = 1000, HashCollisions = 0,
        DowntimeMsMax = 150, DowntimeMsMedian = 120, Converged = true, Convergence = "converged", Deduplicate = true, LinkBitsPerSecond = 0,
        AnalysisSeconds = 0.5, RoundSeconds = [0.5, 0.4, 0.1, 0.4, 0.1], SourceDigestSeconds = 0.05, Error = "vm-003: digest mismatch",
        PerVm = Vms.Select(v => new VmReport(v, Placement[v], v != "vm-003", v != "vm-003", v == "vm-003" ? 0 : 100 + 10 * Array.IndexOf(Vms, v), "aa", "aa", null)).ToArray(),
    };

    /// <summary>What the console would see: placement, progress through round 0 and two waves (t1, then t2), handovers, one failure.</summary>
    private static MigrationTimeline RecordedTimeline()
    {
        var timeline = new MigrationTimeline();
        HostId t1 = HostId.Create("t1"), t2 = HostId.Create("t2");
        var events = new List<(double, IVmScatterProtocol)>
        {
            (0.6, new MigrationPlaced(Id, "traffic-aware", Placement.ToDictionary(p => VmId.Create(p.Key), p => HostId.Create(p.Value)), 1000, 1000, GroupTransport.RelayChain)),
        };
        void Progress(double at, int round, long mib, int wave, params HostId[] targets) =>
            events.Add((at, new MigrationProgress(Id, MigrationPhase.Transferring, round, mib * MiB, 0, 0, wave, targets)));
        Progress(0.8, 0, 0, -1); Progress(1.0, 0, 20, -1); Progress(1.3, 0, 40, -1);                 // round 0: 40 MiB to every group
        Progress(1.35, 1, 40, 0, t1); Progress(1.6, 1, 70, 0, t1); Progress(1.75, 1, 80, 0, t1);      // wave 1 (t1): 45 MiB
        Progress(1.8, 2, 80, 0, t1); Progress(1.9, 2, 85, 0, t1);
        Progress(2.0, 3, 85, 1, t2); Progress(2.3, 3, 120, 1, t2); Progress(2.45, 3, 150, 1, t2);     // wave 2 (t2): 75 MiB
        Progress(2.5, 4, 150, 1, t2); Progress(2.6, 4, 160, 1, t2);
        events.Add((1.95, new VmHandedOver(Id, VmId.Create("vm-000"), t1, "aa", 100)));
        events.Add((1.96, new VmHandedOver(Id, VmId.Create("vm-002"), t1, "aa", 120)));
        events.Add((2.7, new VmHandedOver(Id, VmId.Create("vm-001"), t2, "aa", 110)));
        events.Add((2.75, new VmHandoverFailed(Id, VmId.Create("vm-003"), "digest mismatch")));
        events.Add((3.1, new MigrationFinished(Id, Report())));
        foreach (var (at, message) in events.OrderBy(e => e.Item1)) timeline.Observe(message, at);
        return timeline;
    }

    private static ScenarioResult Bench(string scenario, double scale) => new(scenario, "fixed data", 8, 256 * MiB, 4, 1_000_000_000,
    [
        new BenchRun("vmscatter", "", (long)(337 * MiB * scale), 875 * MiB, 3.35 * scale, 127, 118, 3, true, true, 0.75, 0.72, 0.67),
        new BenchRun(ScenarioBench.Sequential, "", (long)(1347 * MiB * scale), 2693 * MiB, 11.88 * scale, 79, 73, 2, true, true, 0, 0, 0),
        new BenchRun("one-to-one-parallel", "", (long)(1489 * MiB * scale), 2977 * MiB, 12.92 * scale, 245, 245, 4, true, true, -0.1, -0.09, -0.1),
        new BenchRun("gang", "", (long)(973 * MiB * scale), 1946 * MiB, 8.67 * scale, 182, 181, 4, false, true, 0.28, 0.27, 0.28),
    ]);

    /// <summary>The PNG signature, IHDR's width and height, and SkiaSharp decodes it to that size with something drawn in colour.</summary>
    internal static void AssertPng(string path, int width, int height)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 10_000, $"{path}: {bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(bytes, 12, 4));
        Assert.Equal(width, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)));
        Assert.Equal(height, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
        using var bitmap = SKBitmap.Decode(bytes);
        Assert.NotNull(bitmap);
        Assert.Equal((width, height), (bitmap.Width, bitmap.Height));
        int coloured = 0;
        for (int y = 0; y < height; y += 3)
            for (int x = 0; x < width; x += 3)
            {
                var c = bitmap.GetPixel(x, y);
                if (Math.Max(c.Red, Math.Max(c.Green, c.Blue)) - Math.Min(c.Red, Math.Min(c.Green, c.Blue)) > 60) coloured++;
            }
        Assert.True(coloured > 200, $"only {coloured} coloured pixels sampled");
    }

    /// <summary>The SVG parses as XML with an svg root of that size, and its text holds every label expected.</summary>
    private static void AssertSvg(string path, int width, int height, params string[] texts)
    {
        var svg = XDocument.Load(path);
        Assert.Equal("svg", svg.Root!.Name.LocalName);
        Assert.Equal(width.ToString(), svg.Root.Attribute("width")?.Value);
        Assert.Equal(height.ToString(), svg.Root.Attribute("height")?.Value);
        var drawn = svg.Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value.Trim()).ToArray();
        foreach (var text in texts) Assert.Contains(drawn, d => d.Contains(text));
    }

    [Fact]
    public void The_recorder_splits_the_bytes_over_round_0_and_each_wave()
    {
        var timeline = RecordedTimeline();
        Assert.Equal(0.6, timeline.PlacedAt);
        Assert.Equal(3.1, timeline.FinishedAt);
        Assert.Equal(4, timeline.Handovers.Count);
        var series = TimelinePlot.BytesPerWave(timeline.Samples, 3.1);
        Assert.Equal([-1, 0, 1], series.Select(s => s.Wave));
        Assert.Equal([40.0, 45.0, 75.0], series.Select(s => s.Total / MiB));
        Assert.Equal(["t1"], series[1].Targets);
        Assert.All(series, s => Assert.Equal(3.1, s.Seconds[^1]));
        Assert.Equal(1.35, series[1].Seconds[0]); // wave 1 starts at 0 with its first round
        Assert.Equal([0, 1, 2, 3, 4], TimelinePlot.Rounds(timeline.Samples).Select(r => r.Round));
    }

    [Fact]
    public void A_timeline_is_drawn_to_png_and_svg()
    {
        var report = Report();
        var timeline = RecordedTimeline();
        string png = Path.Combine(_dir, "timeline.png"), svg = Path.Combine(_dir, "timeline.svg");
        TimelinePlot.Save(report, timeline, png);
        TimelinePlot.Save(report, timeline, svg);
        AssertPng(png, TimelinePlot.Width, TimelinePlot.Height);
        AssertSvg(svg, TimelinePlot.Width, TimelinePlot.Height,
            "MiB sent (cumulative)", "round 0: to every target group: 40.0 MiB", "wave 1: to t1: 45.0 MiB", "wave 2: to t2: 75.0 MiB",
            "sent by the source, in all: 160.0 MiB", "vm-000", "vm-003", "100 ms -> t1", "not handed over", "NOT verified", "r4");
    }

    [Fact]
    public void A_timeline_without_progress_is_still_drawn()
    {
        string svg = Path.Combine(_dir, "empty.svg");
        TimelinePlot.Save(Report(), new MigrationTimeline(), svg);
        AssertSvg(svg, TimelinePlot.Width, TimelinePlot.Height, "no transfer progress was seen", "vm-001");
    }

    [Fact]
    public void Bench_methods_are_drawn_side_by_side_to_png_and_svg()
    {
        var one = new[] { Bench("paper", 1) };
        string png = Path.Combine(_dir, "bench.png"), svg = Path.Combine(_dir, "bench.svg");
        BenchPlot.Save(BenchPlot.From(one), BenchPlot.Caption(one), png);
        BenchPlot.Save(BenchPlot.From(one), BenchPlot.Caption(one), svg);
        AssertPng(png, BenchPlot.Width, BenchPlot.Height);
        AssertSvg(svg, BenchPlot.Width, BenchPlot.Height, "Data sent by the source", "Total time", "Downtime, longest VM pause", "MiB", "seconds",
            "vmscatter", "gang", "sequential", "paper: 8 VMs x 256.0 MiB -> 4 targets", "1,347", "3.35", "245", "(not verified)");

        var several = new[] { Bench("paper", 1), Bench("database", 1.6) };
        string both = Path.Combine(_dir, "bench-all.svg");
        BenchPlot.Save(BenchPlot.From(several), BenchPlot.Caption(several), both);
        AssertSvg(both, BenchPlot.Width, BenchPlot.Height, "paper", "database", "one-to-one-parallel", "2 scenarios");
    }

    [Fact]
    public void A_plot_file_must_be_png_or_svg()
    {
        Assert.Equal(PlotFormat.Png, PlotFile.Check(Path.Combine(_dir, "a.PNG")));
        Assert.Equal(PlotFormat.Svg, PlotFile.Check(Path.Combine(_dir, "a.svg")));
        Assert.Contains("must end in .png or .svg", Assert.Throws<Cli.UserError>(() => PlotFile.Check("x.txt")).Message);
        Assert.Contains("does not exist", Assert.Throws<Cli.UserError>(() => PlotFile.Check(Path.Combine(_dir, "missing", "a.png"))).Message);
    }
}
