using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// The latest <see cref="TransferProgress"/> of a run, the send rate since its first one, and the current round's own
/// figures (bytes, rate, records left, ETA) for `vmscatter status`. Counters are cumulative for the run: a round starts
/// where the counters stood at the previous round's last report (at the run's first report for the first round).
/// </summary>
internal sealed class TransferRate
{
    private long _firstBytes;
    private DateTime _firstUtc;
    private DateTime _lastUtc;
    // Where the current round's counters start (its bytes and records so far) and where its rates are measured from.
    private long _roundBaseBytes;
    private long _roundBaseRecords;
    private long _rateBaseBytes;
    private long _rateBaseRecords;
    private DateTime _rateBaseUtc;

    public TransferProgress? Latest { get; private set; }

    public void Observe(TransferProgress progress, DateTime nowUtc)
    {
        if (Latest is null)
        {
            _firstBytes = progress.BytesSent;
            _firstUtc = nowUtc;
            // The run's counters start at zero: what the first report counts is its round's; its rate is measured from here.
            (_roundBaseBytes, _roundBaseRecords) = (0, 0);
            (_rateBaseBytes, _rateBaseRecords, _rateBaseUtc) = (progress.BytesSent, progress.ContentRecordsSent, nowUtc);
        }
        else if (progress.Round != Latest.Round)
        {
            // A round's end is reported before the next begins: the counters as last seen are the new round's start.
            (_roundBaseBytes, _roundBaseRecords) = (Latest.BytesSent, Latest.ContentRecordsSent);
            (_rateBaseBytes, _rateBaseRecords, _rateBaseUtc) = (Latest.BytesSent, Latest.ContentRecordsSent, _lastUtc);
        }
        Latest = progress;
        _lastUtc = nowUtc;
    }

    /// <summary>Bytes per second between the first and the latest report; 0 before two reports apart in time.</summary>
    public double BytesPerSecond => Rate(Latest?.BytesSent ?? 0, _firstBytes, _firstUtc);

    /// <summary>Bytes the current round sent so far; 0 before any report.</summary>
    public long RoundBytes => Latest is null ? 0 : Math.Max(0, Latest.BytesSent - _roundBaseBytes);

    /// <summary>The current round's bytes per second; 0 before two of its reports apart in time.</summary>
    public double RoundBytesPerSecond => Rate(Latest?.BytesSent ?? 0, _rateBaseBytes, _rateBaseUtc);

    /// <summary>Content records the current round still has to send; null while unknown (the round not yet built).</summary>
    public long? RoundRecordsLeft => Latest is { ContentRecordsInRound: > 0 } p ? Math.Max(0, p.ContentRecordsInRound - (p.ContentRecordsSent - _roundBaseRecords)) : null;

    /// <summary>The current round's time to go: its records left at its records' rate (<see cref="TransferEta.Of"/>).</summary>
    public TimeSpan? RoundEta => TransferEta.Of(RoundRecordsLeft, Rate(Latest?.ContentRecordsSent ?? 0, _rateBaseRecords, _rateBaseUtc));

    private double Rate(long latest, long start, DateTime since)
    {
        double seconds = (_lastUtc - since).TotalSeconds;
        return Latest is null || seconds <= 0 ? 0 : Math.Max(0, latest - start) / seconds;
    }
}

/// <summary>An ETA: what remains over the current rate (units of the two alike: records and records per second).</summary>
public static class TransferEta
{
    /// <summary>Null (unknown, shown "-") when the remainder is unknown or nothing moves yet; zero when nothing remains.</summary>
    public static TimeSpan? Of(long? remaining, double perSecond) => remaining switch
    {
        null or < 0 => null,
        0 => TimeSpan.Zero,
        { } left when perSecond > 0 && double.IsFinite(perSecond) => TimeSpan.FromSeconds(left / perSecond),
        _ => null,
    };
}
