using VMScatter.DataPlane.Source;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;

namespace VMScatter.Cluster.Source;

/// <summary>
/// The data plane's view of a round's contents: reads each from the shard that owns it. The shards are lent for the
/// round by their actors (see <see cref="DedupShardActor"/>), which touch them again only once the round has ended.
/// </summary>
public sealed class LeasedShardReader : IContentReader
{
    private readonly DedupShard[] _shards;
    private readonly bool _skipRewritten;

    /// <param name="leases">One shard per shard index.</param>
    /// <param name="skipRewritten">Withdraw a content whose one page was rewritten before its turn: only a log that records every write can say so without collecting it (QEMU's here cannot).</param>
    public LeasedShardReader(IEnumerable<(int Shard, DedupShard Lease)> leases, bool skipRewritten)
    {
        _shards = leases.OrderBy(l => l.Shard).Select(l => l.Lease).ToArray();
        for (int i = 0; i < _shards.Length; i++)
            if (_shards[i].Index.Shard != i) throw new ArgumentException($"lease {i} is shard {_shards[i].Index.Shard}", nameof(leases));
        _skipRewritten = skipRewritten;
    }

    public bool TryRead(long contentId, ulong targetMask, Span<byte> page, out ContentHash hash) =>
        _shards[contentId % _shards.Length].TryRead(contentId, targetMask, page, out hash);

    public bool TryWithdraw(long contentId, ulong targetMask)
    {
        var shard = _shards[contentId % _shards.Length];
        return _skipRewritten && shard.TryWithdraw(contentId, targetMask, shard.Rewritten);
    }
}
