using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// The latest <see cref="TransferProgress"/> of a run and the send rate since its first one, for `vmscatter status`.
/// Bytes are cumulative for the run, so the rate over the whole span is steady even when one report is late.
/// </summary>
internal sealed class TransferRate
{
    private long _firstBytes;
    private DateTime _firstUtc;
    private DateTime _lastUtc;

    public TransferProgress? Latest { get; private set; }

    public void Observe(TransferProgress progress, DateTime nowUtc)
    {
        if (Latest is null)
        {
            _firstBytes = progress.BytesSent;
            _firstUtc = nowUtc;
        }
        Latest = progress;
        _lastUtc = nowUtc;
    }

    /// <summary>Bytes per second between the first and the latest report; 0 before two reports apart in time.</summary>
    public double BytesPerSecond
    {
        get
        {
            double seconds = (_lastUtc - _firstUtc).TotalSeconds;
            return Latest is null || seconds <= 0 ? 0 : Math.Max(0, Latest.BytesSent - _firstBytes) / seconds;
        }
    }
}
