namespace VMScatter.DataPlane.Multicast;

/// <summary>
/// A receiver's view of a channel's ordered stream, pure state: what it holds, what it can deliver in order, and which
/// gaps to ask for when. A gap is asked for after a random back-off (a repair another receiver asked for may fill it
/// first) and again after <c>retry</c> while it stays open.
/// </summary>
public sealed class ReceiveWindow(TimeSpan backoff, TimeSpan retry, Random random, ulong maxAhead = 1 << 20)
{
    private readonly SortedDictionary<ulong, byte[]> _held = new();
    private readonly SortedDictionary<ulong, double> _missing = new();
    private ulong _next;
    private ulong _seenEnd;

    /// <summary>Every data datagram below this was delivered.</summary>
    public ulong Contiguous => _next;

    public int Gaps => _missing.Count;

    public long Duplicates { get; private set; }

    /// <summary>A data datagram arrived: returns the messages now deliverable, in order (none if it is a duplicate or leaves a gap before it).</summary>
    public IReadOnlyList<byte[]> Accept(ulong sequence, byte[] message, double now)
    {
        if (sequence < _next || _held.ContainsKey(sequence)) { Duplicates++; return []; }
        if (sequence - _next >= maxAhead) throw new ArgumentOutOfRangeException(nameof(sequence), $"datagram {sequence} is too far ahead of {_next}");
        _missing.Remove(sequence);
        MarkMissing(Math.Max(_next, _seenEnd), sequence, now);
        _seenEnd = Math.Max(_seenEnd, sequence + 1);
        if (sequence != _next) { _held[sequence] = message; return []; }
        var ready = new List<byte[]> { message };
        _next++;
        while (_held.Remove(_next, out var m)) { ready.Add(m); _next++; }
        return ready;
    }

    /// <summary>The sender says <paramref name="count"/> data datagrams were sent: any not seen yet are gaps (a lost tail).</summary>
    public void KnownEnd(ulong count, double now)
    {
        if (count - _next > maxAhead && count > _next) throw new ArgumentOutOfRangeException(nameof(count), $"end {count} is too far ahead of {_next}");
        MarkMissing(Math.Max(_next, _seenEnd), count, now);
        _seenEnd = Math.Max(_seenEnd, count);
    }

    /// <summary>Gaps whose time to be asked for has come, as ranges (at most <paramref name="maxRanges"/>); each is asked again after the retry time.</summary>
    public IReadOnlyList<(ulong Start, uint Count)> DueNacks(double now, int maxRanges)
    {
        var ranges = new List<(ulong Start, uint Count)>();
        var due = new List<ulong>();
        foreach (var (seq, at) in _missing)
        {
            if (at > now) continue;
            if (ranges.Count > 0 && ranges[^1].Start + ranges[^1].Count == seq && ranges[^1].Count < uint.MaxValue)
                ranges[^1] = (ranges[^1].Start, ranges[^1].Count + 1);
            else if (ranges.Count == maxRanges) break;
            else ranges.Add((seq, 1));
            due.Add(seq);
        }
        foreach (var seq in due) _missing[seq] = now + retry.TotalSeconds;
        return ranges;
    }

    private void MarkMissing(ulong from, ulong to, double now)
    {
        for (ulong s = from; s < to; s++)
            if (!_held.ContainsKey(s)) _missing.TryAdd(s, now + random.NextDouble() * backoff.TotalSeconds);
    }
}
