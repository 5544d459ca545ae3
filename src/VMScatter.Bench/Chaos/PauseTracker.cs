namespace VMScatter.Bench.Chaos;

/// <summary>
/// The longest time each VM was seen paused, from inventories sampled during a run: from the first sample that saw it
/// paused to the last one in a row (a lower bound, off by at most one sampling interval). A host that stops answering
/// (killed) extends no pause: only a sample that sees a VM paused does.
/// </summary>
public sealed class PauseTracker
{
    private readonly Dictionary<string, (double Since, double LastSeen)> _open = new();
    private readonly Dictionary<string, double> _longest = new();

    /// <param name="atMs">When the sample was taken (run clock).</param>
    /// <param name="answered">VMs listed by the hosts that answered this sample: running or paused.</param>
    /// <param name="paused">Of those, the paused ones.</param>
    public void Observe(double atMs, IEnumerable<string> answered, IReadOnlySet<string> paused)
    {
        foreach (var vm in answered)
        {
            if (paused.Contains(vm))
            {
                var since = _open.TryGetValue(vm, out var o) ? o.Since : atMs;
                _open[vm] = (since, atMs);
                _longest[vm] = Math.Max(_longest.GetValueOrDefault(vm), atMs - since);
            }
            else _open.Remove(vm);
        }
    }

    /// <summary>The VM paused longest, and for how long (null when none was seen paused).</summary>
    public (string Vm, double Ms)? Longest
    {
        get
        {
            if (_longest.Count == 0) return null;
            var longest = _longest.MaxBy(p => p.Value);
            return (longest.Key, longest.Value);
        }
    }
}
