using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Akka.Actor;
using Akka.Configuration;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.Domain;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// vmscatter.metrics.prometheus-endpoint: the URL a node serves its metrics at for a Prometheus scrape,
/// e.g. http://127.0.0.1:9464/metrics (a path of "/" means /metrics); HOST is one of the node's addresses or names
/// (the listener takes no wildcard); empty: off.
/// </summary>
public sealed partial record MetricsSettings(string? Host, int Port, string Path)
{
    public bool Enabled => Host is not null;

    public string Url => $"http://{Host}:{Port}{Path}";

    public static MetricsSettings From(Config config)
    {
        string value = config.GetString("vmscatter.metrics.prometheus-endpoint", "").Trim();
        if (value.Length == 0) return new MetricsSettings(null, 0, "");
        var m = Endpoint().Match(value);
        if (!m.Success || !int.TryParse(m.Groups["port"].Value, out int port) || port is < 1 or > 65535)
            throw new ConfigurationException($"vmscatter.metrics.prometheus-endpoint: '{value}' is not http://HOST:PORT/PATH (empty: off)");
        string path = m.Groups["path"].Value is { Length: > 1 } p ? p : "/metrics";
        return new MetricsSettings(m.Groups["host"].Value, port, path);
    }

    [GeneratedRegex(@"^http://(?<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+):(?<port>\d{1,5})(?<path>/[^?#\s]*)?$")]
    private static partial Regex Endpoint();
}

/// <summary>
/// A node's metrics: OpenTelemetry instruments on a <see cref="Meter"/> named "VMScatter", recorded where the numbers
/// already are (the data plane's frames, the source's round accounting, the scheduler's journaled events), exported for
/// a Prometheus scrape when <see cref="MetricsSettings"/> enable it. One per actor system (an Akka extension): several
/// nodes in one process (LocalCluster) each serve only their own.
/// </summary>
public sealed class VmScatterMetrics : IExtension, IDataPlaneMetrics, IDisposable
{
    public const string MeterName = "VMScatter";

    private static readonly ExtensionId Id = new();
    private static readonly KeyValuePair<string, object?> HandedOver = new("outcome", "handed-over");
    private static readonly KeyValuePair<string, object?> Failed = new("outcome", "failed");

    private readonly Meter _meter = new(MeterName);
    private readonly Counter<long> _bytesSent;
    private readonly Counter<long> _bytesReceived;
    private readonly Counter<long> _rounds;
    private readonly Histogram<int> _roundPages;
    private readonly Gauge<double> _dirtyRate;
    private readonly Counter<long> _handovers;
    private readonly Histogram<double> _downtime;
    /// <summary>Migrations started and not ended in the journal of the scheduler this node hosts; -1: it hosts none.</summary>
    private int _activeMigrations = -1;
    private MeterProvider? _provider;
    private int _disposed;

    private VmScatterMetrics()
    {
        _bytesSent = _meter.CreateCounter<long>("vmscatter.dataplane.sent", "By", "Data-plane bytes this source wrote to its targets, framing included");
        _bytesReceived = _meter.CreateCounter<long>("vmscatter.dataplane.received", "By", "Data-plane bytes this target received for its migrations, framing included");
        _rounds = _meter.CreateCounter<long>("vmscatter.source.rounds", "{round}", "Data-plane rounds sent and applied by every target they went to");
        _roundPages = _meter.CreateHistogram("vmscatter.source.round.pages", "{page}", "Pages each round carried: round 0 every page, later rounds those dirtied since",
            advice: new InstrumentAdvice<int> { HistogramBucketBoundaries = [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576] });
        _dirtyRate = _meter.CreateGauge<double>("vmscatter.source.dirty.rate", "{page}/s", "Pages per second the latest wave's guests dirtied, as its convergence decision measured");
        _handovers = _meter.CreateCounter<long>("vmscatter.handovers", "{vm}", "VMs whose handover the scheduler journaled, by outcome (handed-over, failed)");
        _downtime = _meter.CreateHistogram("vmscatter.handover.downtime", "ms", "A VM's pause, from paused on the source to resumed on its target",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [5, 10, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000] });
        _meter.CreateObservableGauge("vmscatter.migrations.active", ActiveMigrations, "{migration}", "Migrations started and not ended, on the node hosting the scheduler");
    }

    /// <summary>This actor system's metrics (made on first use, disposed when the system terminates).</summary>
    public static VmScatterMetrics For(ActorSystem system) => Id.Apply(system);

    /// <summary>The URL the scrape endpoint serves at; null when metrics are not exported.</summary>
    public string? Endpoint { get; private set; }

    /// <summary>Starts the Prometheus endpoint if the settings enable it. A scheduler node shows 0 active migrations from now on.</summary>
    public void Export(MetricsSettings settings, HostId hostId, bool schedulerNode)
    {
        if (schedulerNode) Interlocked.CompareExchange(ref _activeMigrations, 0, -1);
        if (!settings.Enabled || _provider is not null) return;
        var meter = _meter;
        try
        {
            _provider = Sdk.CreateMeterProviderBuilder()
                .SetResourceBuilder(ResourceBuilder.CreateEmpty().AddService("vmscatter", serviceInstanceId: hostId.Value))
                .AddMeter(MeterName)
                // Other nodes in this process have meters of the same name: this endpoint shows this node's only.
                .AddView(instrument => ReferenceEquals(instrument.Meter, meter) ? null : MetricStreamConfiguration.Drop)
                .AddPrometheusHttpListener(o =>
                {
                    o.Host = settings.Host!;
                    o.Port = settings.Port;
                    o.ScrapeEndpointPath = settings.Path;
                    o.ScrapeResponseCacheDurationMilliseconds = 0;
                })
                .Build();
        }
        catch (Exception e) when (e is HttpListenerException or SocketException or InvalidOperationException)
        {
            throw new ConfigurationException($"vmscatter.metrics.prometheus-endpoint: cannot serve {settings.Url}: {e.GetBaseException().Message}");
        }
        Endpoint = settings.Url;
    }

    void IDataPlaneMetrics.FrameSent(int bytes) => _bytesSent.Add(bytes);

    void IDataPlaneMetrics.FrameReceived(int bytes) => _bytesReceived.Add(bytes);

    internal void RoundPlanned(int pages) => _roundPages.Record(pages);

    internal void RoundEnded() => _rounds.Add(1);

    internal void DirtyRate(double pagesPerSecond) => _dirtyRate.Record(pagesPerSecond);

    /// <summary>The scheduler journaled an event (never called on replay): handovers, downtime, active migrations.</summary>
    internal void Recorded(IPersistedEvent e, int unended)
    {
        Volatile.Write(ref _activeMigrations, unended);
        switch (e)
        {
            case VmHandedOver h:
                _handovers.Add(1, HandedOver);
                // A handover a scheduler that took over confirmed on the target has no measured pause (0).
                if (h.DowntimeMs > 0) _downtime.Record(h.DowntimeMs);
                break;
            case VmHandoverFailed:
                _handovers.Add(1, Failed);
                break;
        }
    }

    private IEnumerable<Measurement<int>> ActiveMigrations()
    {
        int active = Volatile.Read(ref _activeMigrations);
        if (active >= 0) yield return new Measurement<int>(active);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _provider?.Dispose();
        _meter.Dispose();
    }

    private sealed class ExtensionId : ExtensionIdProvider<VmScatterMetrics>
    {
        public override VmScatterMetrics CreateExtension(ExtendedActorSystem system)
        {
            var metrics = new VmScatterMetrics();
            system.RegisterOnTermination(metrics.Dispose);
            return metrics;
        }
    }
}
