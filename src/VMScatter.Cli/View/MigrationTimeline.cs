using System.Diagnostics;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Reports;

namespace VMScatter.Cli.View;

/// <summary>
/// What the console saw of one migration over time, for <c>--plot</c>: the progress samples (sent at each round's start
/// and end and every progress interval between), when the placement came, and each VM's handover with its downtime.
/// Times are seconds since the recorder was made (just before the migration is submitted), taken as events arrive.
/// </summary>
public sealed class MigrationTimeline
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly object _gate = new();
    private readonly List<ReportSample> _samples = [];
    private readonly List<ReportHandover> _handovers = [];

    public MigrationTimeline() { }

    /// <summary>The timeline a report carries (what its scheduler saw; `show --plot`).</summary>
    public MigrationTimeline(ReportTimeline recorded, double finishedAt)
    {
        PlacedAt = recorded.PlacedAtSeconds;
        _samples.AddRange(recorded.Samples);
        _handovers.AddRange(recorded.Handovers);
        FinishedAt = finishedAt;
    }

    /// <summary>When the placement arrived: round 0's hashing and the placement took until then.</summary>
    public double? PlacedAt { get; private set; }
    public double? FinishedAt { get; private set; }

    public IReadOnlyList<ReportSample> Samples { get { lock (_gate) return _samples.ToArray(); } }
    public IReadOnlyList<ReportHandover> Handovers { get { lock (_gate) return _handovers.ToArray(); } }

    /// <summary>Records each event, then passes it on to <paramref name="next"/>.</summary>
    public Action<IVmScatterProtocol> Recording(Action<IVmScatterProtocol> next) => message =>
    {
        Observe(message, _clock.Elapsed.TotalSeconds);
        next(message);
    };

    public void Observe(IVmScatterProtocol message, double seconds)
    {
        lock (_gate)
        {
            switch (message)
            {
                case MigrationPlaced:
                    PlacedAt ??= seconds;
                    break;
                case MigrationProgress p:
                    _samples.Add(new ReportSample(seconds, p.Round, p.BytesSent, p.Wave, (p.WaveTargets ?? []).Select(h => h.ToString()).ToArray()));
                    break;
                case VmHandedOver h:
                    _handovers.Add(new ReportHandover(seconds, h.VmId.ToString(), h.TargetHostId.ToString(), h.DowntimeMs, true));
                    break;
                case VmHandoverFailed f:
                    _handovers.Add(new ReportHandover(seconds, f.VmId.ToString(), "", 0, false));
                    break;
                case MigrationFinished:
                    FinishedAt = seconds;
                    break;
            }
        }
    }
}
