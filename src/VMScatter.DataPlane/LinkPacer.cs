using System.Diagnostics;

namespace VMScatter.DataPlane;

/// <summary>
/// A host's egress link at a fixed rate, as a NIC with a transmit queue: the wire sends booked bytes back to back at
/// the rate, and a frame is handed to the NIC once at most <c>queueBytes</c> are still waiting ahead of it. Without
/// the queue every late wake-up of the sender (a timer, a busy core) was link time lost, which a NIC that still has
/// frames queued does not lose. Loopback would otherwise move bytes at memory speed and hide what a network costs.
/// </summary>
public sealed class LinkPacer
{
    private readonly object _gate = new();
    private readonly double _secondsPerByte;
    private readonly double _queueSeconds;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private double _linkFreeAt;

    /// <param name="bitsPerSecond">The wire's rate; 0: unlimited.</param>
    /// <param name="queueBytes">The NIC's transmit queue: bytes that may wait for the wire ahead of a frame being handed over.</param>
    public LinkPacer(long bitsPerSecond, long queueBytes = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bitsPerSecond);
        ArgumentOutOfRangeException.ThrowIfNegative(queueBytes);
        _secondsPerByte = bitsPerSecond > 0 ? 8.0 / bitsPerSecond : 0;
        _queueSeconds = queueBytes * _secondsPerByte;
    }

    public bool Unlimited => _secondsPerByte == 0;

    /// <summary>
    /// Books <paramref name="bytes"/> on the wire right after everything booked before, and waits until the queue ahead
    /// of them is within the queue size. Whatever the queue, the wire never carries more than its rate: bytes leave
    /// (and <see cref="DrainAsync"/> completes) at the booked times.
    /// </summary>
    public Task AcquireAsync(int bytes, CancellationToken cancellationToken)
    {
        if (Unlimited) return Task.CompletedTask;
        double wait;
        lock (_gate)
        {
            double now = _clock.Elapsed.TotalSeconds;
            double start = Math.Max(_linkFreeAt, now);
            _linkFreeAt = start + bytes * _secondsPerByte;
            wait = start - now - _queueSeconds;
        }
        return wait > 0.0005 ? Task.Delay(TimeSpan.FromSeconds(wait), cancellationToken) : Task.CompletedTask;
    }

    /// <summary>Seconds until every byte booked so far has left the wire (0 when idle).</summary>
    public double BacklogSeconds
    {
        get { lock (_gate) return Math.Max(0, _linkFreeAt - _clock.Elapsed.TotalSeconds); }
    }

    /// <summary>Waits until every byte booked so far has left the link.</summary>
    public Task DrainAsync(CancellationToken cancellationToken)
    {
        if (Unlimited) return Task.CompletedTask;
        double wait = BacklogSeconds;
        return wait > 0.0005 ? Task.Delay(TimeSpan.FromSeconds(wait), cancellationToken) : Task.CompletedTask;
    }
}
