using VMScatter.Domain.Concurrency;

namespace VMScatter.Cluster.Source;

/// <summary>
/// CPU time the source spent reading one migration's guest memory, per data-plane round: dirty collection (for QEMU
/// guests a re-hash of all their RAM), page hashing and handover digests, from the threads' own CPU clocks (not wall
/// time, which a busy host stretches). Shared by the migration's VM actors, which run that work on bulk threads.
/// </summary>
public sealed class SourceCpuMeter
{
    private readonly object _lock = new();
    private readonly List<double> _byRound = new();

    /// <summary>
    /// Runs <paramref name="work"/> on this thread and counts its CPU time against <paramref name="round"/>, with what
    /// <paramref name="helpers"/> used on other threads meanwhile.
    /// </summary>
    public T Measure<T>(int round, Func<T> work, IHelperCpu? helpers = null)
    {
        double start = ThreadCpu.Seconds();
        try { return work(); }
        finally { Add(round, ThreadCpu.Seconds() - start + (helpers?.TakeHelperCpuSeconds() ?? 0)); }
    }

    private void Add(int round, double seconds)
    {
        if (round < 0) return;
        lock (_lock)
        {
            while (_byRound.Count <= round) _byRound.Add(0);
            _byRound[round] += seconds;
        }
    }

    /// <summary>Seconds per round, rounds 0 to <paramref name="rounds"/> - 1.</summary>
    public double[] PerRound(int rounds)
    {
        lock (_lock) return Enumerable.Range(0, rounds).Select(r => r < _byRound.Count ? Math.Round(_byRound[r], 4) : 0).ToArray();
    }
}
