using System.Diagnostics;

namespace VMScatter.Domain;

/// <summary>
/// Wall time of each step of a handover, for the node log at Debug: where a guest's pause goes (QMP stop, the final
/// dirty collection, device-state capture, the target's load and cont). Marks from one thread at a time.
/// </summary>
public sealed class StepTimes
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<(string Step, double Ms)> _steps = new();
    private double _last;

    /// <summary>Ends the step running since the previous mark (or since this clock was made); <paramref name="inner"/>: its sub-steps.</summary>
    public void Mark(string step, StepTimes? inner = null)
    {
        double now = _clock.Elapsed.TotalMilliseconds;
        _steps.Add((inner is null ? step : $"{step} [{inner.Steps}]", now - _last));
        _last = now;
    }

    public double TotalMs => _last;

    private string Steps => string.Join(", ", _steps.Select(s => $"{s.Step} {s.Ms:0.#} ms"));

    public override string ToString() => $"{Steps} (total {_last:0.#} ms)";
}

/// <summary>A guest that kept the wall times of the steps of its last pause-side or resume-side handover work.</summary>
public interface IStepTimed
{
    StepTimes? LastSteps { get; }
}
