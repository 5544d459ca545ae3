using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Source;

/// <summary>What the data plane's sender counted, read when the transfer's account is closed.</summary>
public sealed record SenderCounters(long BytesSent, long FramesSent, long ContentRecordsSent, long ContentRawBytes, long ContentEncodedBytes, long MapRecordsSent, long ContentsWithdrawn)
{
    /// <summary>The group transport content actually went by (multicast falls back to the relay chain when its channel cannot be set up).</summary>
    public string TransportUsed { get; init; } = "";
    public string? TransportFallback { get; init; }
    public long MulticastNacks { get; init; }
    public long MulticastRepairs { get; init; }
    public long MulticastRepairBytes { get; init; }
    public int MulticastChannels { get; init; }
    public long MulticastJoins { get; init; }
    public long MulticastLeaves { get; init; }
}

/// <summary>
/// The source's running account of one transfer: rounds and their times, the link rate measured, dirty pages per round,
/// convergence and group switches. No actor state: the source migration actor records into it and reads
/// <see cref="Stats"/> at the end. Rounds, pages per round and the dirty rate also go to the node's metrics, if given.
/// </summary>
public sealed class RoundAccounting(double assumedRateBytesPerSecond, VmScatterMetrics? metrics = null)
{
    private readonly List<double> _roundSeconds = new();
    private readonly List<int> _dirtyPerRound = new();
    private bool _converged = true;
    private string _convergence = "";
    private readonly List<string> _pauseOverruns = new();

    /// <summary>The best rate any round reached: small rounds are mostly fixed costs and would understate the link. The configured rate is only the assumption before anything was measured.</summary>
    public double MeasuredRate { get; private set; } = assumedRateBytesPerSecond;

    public double LastRoundSeconds { get; private set; }

    /// <summary>Rounds a VM went through (round 0, its wave's pre-copy rounds and stop-and-copy), the most of any wave.</summary>
    public int VmRounds { get; private set; }

    public double AnalysisSeconds { get; set; }
    public double DigestSeconds { get; private set; }
    public int SetAsidePages { get; set; }
    public long Round0DistinctPages { get; set; }
    public long GroupSwitches { get; private set; }
    public long GroupSwitchesLowerBound { get; private set; }

    /// <summary>Pages the last planned round carried (for a stop-and-copy checked again at its pause, the rest that pause found).</summary>
    public int LastRoundPages => _dirtyPerRound.Count > 0 ? _dirtyPerRound[^1] : 0;

    public void RoundPlanned(int pages)
    {
        _dirtyPerRound.Add(pages);
        metrics?.RoundPlanned(pages);
    }

    public void GroupsOrdered(long switches, long lowerBound)
    {
        GroupSwitches += switches;
        GroupSwitchesLowerBound += lowerBound;
    }

    public void RoundEnded(double seconds, long bytes)
    {
        seconds = Math.Max(seconds, 1e-3);
        _roundSeconds.Add(seconds);
        LastRoundSeconds = seconds;
        metrics?.RoundEnded();
        if (bytes > 0) MeasuredRate = _roundSeconds.Count == 1 ? bytes / seconds : Math.Max(MeasuredRate, bytes / seconds);
    }

    /// <summary>A wave decided its next round; when that is its stop-and-copy, its convergence enters the report (the last wave's, or that of one that did not converge).</summary>
    public void WaveDecided(ConvergenceDecision decision, int waveRounds)
    {
        metrics?.DirtyRate(decision.DirtyPagesPerSecond);
        if (!decision.StopAndCopy) return;
        if (_converged || !decision.Fits) _convergence = decision.Account;
        _converged &= decision.Fits;
        VmRounds = Math.Max(VmRounds, waveRounds + 1);
    }

    /// <summary>
    /// A wave's stop-and-copy found more dirty pages at its pause than were decided on (<see cref="ConvergencePolicy.AtPause"/>):
    /// the round carries those; if they no longer fit and no other round may follow, the migration did not converge.
    /// </summary>
    public void PauseChecked(PauseCheck check, int pagesAtPause)
    {
        if (_dirtyPerRound.Count > 0) _dirtyPerRound[^1] = pagesAtPause;
        if (check.Fits) return;
        if (check.AnotherRound) { _pauseOverruns.Add(check.Account); return; }
        if (_converged) _convergence = check.Account;
        _converged = false;
    }

    public void WaveDigested(double seconds) => DigestSeconds = Math.Max(DigestSeconds, seconds);

    /// <summary>The convergence account, with any stop-and-copy that its pause turned into one more pre-copy round.</summary>
    public string Convergence => _pauseOverruns.Count == 0 ? _convergence : $"{_convergence}; earlier, {string.Join("; ", _pauseOverruns)}";

    public TransferStats Stats(SenderCounters sent, ShardCounters shards, int waves, int dataPlaneRounds) => new(
        VmRounds,
        sent.BytesSent,
        sent.FramesSent,
        sent.ContentRecordsSent,
        sent.ContentRawBytes,
        sent.ContentEncodedBytes,
        sent.MapRecordsSent,
        shards.DistinctContents,
        shards.ByteCompares,
        shards.HashCollisions,
        shards.RacedPages,
        _dirtyPerRound.ToArray(),
        AnalysisSeconds,
        _roundSeconds.ToArray(),
        DigestSeconds,
        GroupSwitches,
        GroupSwitchesLowerBound,
        _converged,
        Convergence,
        SetAsidePages,
        sent.ContentsWithdrawn,
        Round0DistinctPages,
        waves,
        dataPlaneRounds)
    {
        TransportUsed = sent.TransportUsed, TransportFallback = sent.TransportFallback,
        MulticastNacks = sent.MulticastNacks, MulticastRepairs = sent.MulticastRepairs, MulticastRepairBytes = sent.MulticastRepairBytes,
        MulticastChannels = sent.MulticastChannels, MulticastJoins = sent.MulticastJoins, MulticastLeaves = sent.MulticastLeaves,
    };
}
