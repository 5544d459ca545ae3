using System.Globalization;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>vmscatter.metrics.prometheus-endpoint: each node's OpenTelemetry metrics, scraped over HTTP as Prometheus would.</summary>
public class MetricsTests
{
    private static readonly SyntheticGuestModel Model = new() { MemoryBytes = 8L << 20, DirtyPagesPerSecond = 1500, WritableWorkingSetPages = 256 };
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    [Fact]
    public async Task Each_node_serves_its_own_metrics_for_a_prometheus_scrape_and_they_match_the_report()
    {
        var ports = new[] { "scheduler", "source", "target-1", "target-2" }.ToDictionary(h => h, _ => NodeProcess.FreePort());
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model, 41, OsImages: 1, Applications: 2));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            ExtraHoconFor = host => $"vmscatter.metrics.prometheus-endpoint = \"http://127.0.0.1:{ports[host]}/metrics\"",
        });
        Assert.Equal($"http://127.0.0.1:{ports["source"]}/metrics", cluster.Source.MetricsEndpoint);
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 2, TimeSpan.FromSeconds(30));
        Task<Scraped>? during = null;
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            // A paced link: the transfer lasts seconds, so the scrape asked for at placement is served while it runs (CI: an
            // unpaced one ended first on a busy machine).
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options() with { LinkBitsPerSecond = 20_000_000 }),
            e => { if (e is MigrationPlaced) during ??= ScrapeAsync(cluster.Scheduler); }, TimeSpan.FromSeconds(30));
        var report = outcome.Report!;
        Assert.True(report.Verified, report.Error);

        var source = await ScrapeAsync(cluster.Source);
        Assert.Equal(report.BytesSent, source.Value("vmscatter_dataplane_sent_bytes_total"));
        Assert.Equal(report.DataPlaneRounds, source.Value("vmscatter_source_rounds_total"));
        Assert.Equal(report.DirtyPagesPerRound.Count, source.Value("vmscatter_source_round_pages_count"));
        Assert.Equal(report.DirtyPagesPerRound.Sum(), source.Value("vmscatter_source_round_pages_sum"));
        Assert.True(source.Value("vmscatter_source_dirty_rate_per_second") > 0, source.Text);
        // Four nodes in one process, a meter named "VMScatter" each: every endpoint shows its own node's only.
        Assert.False(source.Has("vmscatter_handovers_total"), source.Text);
        Assert.False(source.Has("vmscatter_dataplane_received_bytes_total"), source.Text);

        var targets = await Task.WhenAll(cluster.Targets.Select(ScrapeAsync));
        Assert.All(targets, t => Assert.True(t.Value("vmscatter_dataplane_received_bytes_total") > 0, t.Text));
        Assert.Equal(report.BytesReceived, targets.Sum(t => t.Value("vmscatter_dataplane_received_bytes_total")));

        var scheduler = await ScrapeAsync(cluster.Scheduler);
        Assert.Equal(report.Vms, scheduler.Value("vmscatter_handovers_total", "outcome", "handed-over"));
        Assert.False(scheduler.Has("vmscatter_handovers_total", "outcome", "failed"), scheduler.Text);
        Assert.Equal(report.Vms, scheduler.Value("vmscatter_handover_downtime_milliseconds_count"));
        Assert.Equal(report.PerVm.Sum(v => v.DowntimeMs), scheduler.Value("vmscatter_handover_downtime_milliseconds_sum"), 3);
        Assert.Equal(0, scheduler.Value("vmscatter_migrations_active"));
        Assert.Equal(1, (await during!).Value("vmscatter_migrations_active"));
        Assert.False(scheduler.Has("vmscatter_dataplane_sent_bytes_total"), scheduler.Text);
    }

    [Fact]
    public async Task A_node_listens_for_a_scrape_only_when_the_setting_enables_it()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-metrics-").FullName;
        int metricsPort = NodeProcess.FreePort();
        string config = Path.Combine(work, "metrics.conf");
        await File.WriteAllTextAsync(config, $"vmscatter.metrics.prometheus-endpoint = \"http://127.0.0.1:{metricsPort}/metrics\"\n");
        int plainPort = NodeProcess.FreePort(), enabledPort = NodeProcess.FreePort();
        await using var plain = NodeProcess.Start("plain", "--role", "scheduler", "--port", plainPort.ToString(), "--host-id", "plain", "--journal", Path.Combine(work, "plain.db"));
        await using var enabled = NodeProcess.Start("enabled", "--role", "scheduler", "--port", enabledPort.ToString(), "--host-id", "enabled",
            "--journal", Path.Combine(work, "enabled.db"), "--config", config);
        try
        {
            string plainUp = await plain.WaitForLineAsync(l => l.StartsWith("node plain up"), TimeSpan.FromSeconds(60));
            string enabledUp = await enabled.WaitForLineAsync(l => l.StartsWith("node enabled up"), TimeSpan.FromSeconds(60));

            // The default config: the node listens on its cluster port and nothing else.
            Assert.DoesNotContain("metrics", plainUp);
            Assert.Equal([plainPort], ListeningPorts(plain.ProcessId));

            // One setting: the scrape endpoint too, serving this scheduler node's metrics.
            Assert.EndsWith($"; metrics on http://127.0.0.1:{metricsPort}/metrics", enabledUp);
            Assert.Equal(new[] { enabledPort, metricsPort }.Order(), ListeningPorts(enabled.ProcessId).Order());
            var scraped = await ScrapeAsync($"http://127.0.0.1:{metricsPort}/metrics");
            Assert.Equal(0, scraped.Value("vmscatter_migrations_active"));
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    private static Task<Scraped> ScrapeAsync(VmScatterNode node) => ScrapeAsync(node.MetricsEndpoint ?? throw new InvalidOperationException($"{node.HostId} exports no metrics"));

    private static async Task<Scraped> ScrapeAsync(string url)
    {
        using var response = await Http.GetAsync(url);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{url}: {(int)response.StatusCode} {text}");
        return new Scraped(text);
    }

    /// <summary>A Prometheus text exposition: one sample a line, <c>name{label="value",...} value [timestamp]</c>.</summary>
    private sealed class Scraped(string text)
    {
        public string Text { get; } = text;

        private IEnumerable<(string Name, string Labels, double Value)> Samples() =>
            Text.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(l =>
            {
                int brace = l.IndexOf('{'), space = l.LastIndexOf('}') is >= 0 and var close ? close + 1 : l.IndexOf(' ');
                string name = brace >= 0 && brace < space ? l[..brace] : l[..space];
                string labels = brace >= 0 && brace < space ? l[brace..space] : "";
                return (name, labels, double.Parse(l[space..].Trim().Split(' ')[0], CultureInfo.InvariantCulture));
            });

        private IEnumerable<double> Values(string name, string? label, string? value) =>
            Samples().Where(s => s.Name == name && (label is null || s.Labels.Contains($"{label}=\"{value}\""))).Select(s => s.Value);

        public bool Has(string name, string? label = null, string? value = null) => Values(name, label, value).Any();

        /// <summary>The sum of the metric's samples (those with the label, if given); it must have some.</summary>
        public double Value(string name, string? label = null, string? value = null)
        {
            var values = Values(name, label, value).ToArray();
            Assert.True(values.Length > 0, $"no {name} in the scrape:\n{Text}");
            return values.Sum();
        }
    }

    /// <summary>The TCP ports a process listens on: its socket inodes, matched with the LISTEN entries of /proc/net/tcp{,6}.</summary>
    private static int[] ListeningPorts(int pid)
    {
        var inodes = new HashSet<string>();
        foreach (var fd in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            string? target = null;
            try { target = new FileInfo(fd).LinkTarget; } catch (IOException) { /* closed meanwhile */ }
            if (target is not null && target.StartsWith("socket:[")) inodes.Add(target[8..^1]);
        }
        return new[] { "tcp", "tcp6" }.SelectMany(f => File.ReadLines($"/proc/{pid}/net/{f}").Skip(1))
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(c => c[3] == "0A" && inodes.Contains(c[9]))
            .Select(c => int.Parse(c[1].Split(':')[1], NumberStyles.HexNumber))
            .Distinct().Order().ToArray();
    }
}
