using System.Diagnostics;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cli.View;

/// <summary>A progress sample as the console received it: seconds since the migration was submitted, bytes the source had sent, the round and its wave.</summary>
/// <param name="Wave">-1 for round 0 (every target group), else the wave's index.</param>
/// <param name="WaveTargets">The wave's target hosts (empty for round 0).</param>
public sealed record TimelineSample(double Seconds, int Round, long BytesSent, int Wave, IReadOnlyList<string> WaveTargets);

/// <summary>A VM's handover (or its failure) as the console received it; its pause ended about then and lasted <see cref="DowntimeMs"/>.</summary>
public sealed record TimelineHandover(double Seconds, string Vm, string Target, double DowntimeMs, bool HandedOver);

/// <summary>
/// What the console saw of one migration over time, for <c>--plot</c>: the progress samples (sent at each round's start
/// and end and every progress interval between), when the placement came, and each VM's handover with its downtime.
/// Times are seconds since the recorder was made (just before the migration is submitted), taken as events arrive.
/// </summary>
public sealed class MigrationTimeline
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly object _gate = new();
    private readonly List<TimelineSample> _samples = [];
    private readonly List<TimelineHandover> _handovers = [];

    public MigrationTimeline() { }

    /// <summary>A timeline from recorded data (tests, or a report read back).</summary>
    public MigrationTimeline(double? placedAt, IEnumerable<TimelineSample> samples, IEnumerable<TimelineHandover> handovers, double? finishedAt)
    {
        PlacedAt = placedAt;
        _samples.AddRange(samples);
        _handovers.AddRange(handovers);
        FinishedAt = finishedAt;
    }

    /// <summary>When the placement arrived: round 0's hashing and the placement took until then.</summary>
    public double? PlacedAt { get; private set; }
    public double? FinishedAt { get; private set; }

    public IReadOnlyList<TimelineSample> Samples { get { lock (_gate) return _samples.ToArray(); } }
    public IReadOnlyList<TimelineHandover> Handovers { get { lock (_gate) return _handovers.ToArray(); } }

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
                    _samples.Add(new TimelineSample(seconds, p.Round, p.BytesSent, p.Wave, (p.WaveTargets ?? []).Select(h => h.ToString()).ToArray()));
                    break;
                case VmHandedOver h:
                    _handovers.Add(new TimelineHandover(seconds, h.VmId.ToString(), h.TargetHostId.ToString(), h.DowntimeMs, true));
                    break;
                case VmHandoverFailed f:
                    _handovers.Add(new TimelineHandover(seconds, f.VmId.ToString(), "", 0, false));
                    break;
                case MigrationFinished:
                    FinishedAt = seconds;
                    break;
            }
        }
    }
}
