using System.Diagnostics;

namespace VMScatter.DataPlane;

/// <summary>
/// A host's egress link at a fixed rate: a frame may leave when the link has finished the previous ones, as on a
/// NIC's wire. Loopback would otherwise move bytes at memory speed and hide what a network costs.
/// </summary>
public sealed class LinkPacer(long bitsPerSecond)
{
    private readonly object _gate = new();
    private readonly double _secondsPerByte = bitsPerSecond > 0 ? 8.0 / bitsPerSecond : 0;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private double _linkFreeAt;

    public bool Unlimited => _secondsPerByte == 0;

    /// <summary>Waits until the link can start sending <paramref name="bytes"/>, and books it for their duration.</summary>
    public Task AcquireAsync(int bytes, CancellationToken cancellationToken)
    {
        if (Unlimited) return Task.CompletedTask;
        double wait;
        lock (_gate)
        {
            double now = _clock.Elapsed.TotalSeconds;
            double start = Math.Max(_linkFreeAt, now);
            _linkFreeAt = start + bytes * _secondsPerByte;
            wait = start - now;
        }
        return wait > 0.0005 ? Task.Delay(TimeSpan.FromSeconds(wait), cancellationToken) : Task.CompletedTask;
    }

    /// <summary>Waits until every byte booked so far has left the link.</summary>
    public Task DrainAsync(CancellationToken cancellationToken)
    {
        if (Unlimited) return Task.CompletedTask;
        double wait;
        lock (_gate) wait = _linkFreeAt - _clock.Elapsed.TotalSeconds;
        return wait > 0.0005 ? Task.Delay(TimeSpan.FromSeconds(wait), cancellationToken) : Task.CompletedTask;
    }
}
