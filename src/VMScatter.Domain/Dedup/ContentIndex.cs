using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>
/// One dedup shard's index: the distinct page contents whose hash falls in this shard's range. A page is the same
/// content as an indexed one only if the hashes match and the bytes compare equal; equal hashes with different
/// bytes (a collision) get distinct content ids. Content ids are unique across shards and never 0, which stands
/// for the zero page.
/// </summary>
public sealed class ContentIndex
{
    private readonly Dictionary<ContentHash, int> _firstWithHash = new();
    private readonly List<int> _nextWithSameHash = new();
    private readonly List<ContentHash> _hashes = new();

    public ContentIndex(int shard, int shardCount)
    {
        if (shardCount < 1 || shard < 0 || shard >= shardCount) throw new ArgumentOutOfRangeException(nameof(shard));
        Shard = shard;
        ShardCount = shardCount;
    }

    public const long ZeroContentId = 0;

    public int Shard { get; }
    public int ShardCount { get; }
    public ContentArena Arena { get; } = new();
    public int Count => _hashes.Count;

    /// <summary>Byte compares made because hashes matched; each one is what stands between a collision and corruption.</summary>
    public long ByteCompares { get; private set; }

    /// <summary>Hash matches whose bytes differed.</summary>
    public long Collisions { get; private set; }

    /// <summary>Which shard owns a hash: a fixed partition of the hash space.</summary>
    public static int ShardOf(ContentHash hash, int shardCount) => (int)((hash.High >> 32) % (ulong)shardCount);

    public (long ContentId, bool IsNew) Resolve(ContentHash hash, ReadOnlySpan<byte> page) =>
        TryFind(hash, page, out long id) ? (id, false) : (Add(hash, page), true);

    /// <summary>The content with this hash whose bytes equal <paramref name="page"/>, if indexed (one byte compare per candidate).</summary>
    /// <param name="countCollision">False when the bytes may not have this hash at all (read in place, not yet checked).</param>
    public bool TryFind(ContentHash hash, ReadOnlySpan<byte> page, out long contentId, bool countCollision = true)
    {
        contentId = 0;
        if (!_firstWithHash.TryGetValue(hash, out int local)) return false;
        for (int candidate = local; candidate >= 0; candidate = _nextWithSameHash[candidate])
        {
            ByteCompares++;
            if (Arena.Get(candidate).SequenceEqual(page[..Page.Size])) { contentId = IdOf(candidate); return true; }
        }
        if (countCollision) Collisions++;
        return false;
    }

    /// <summary>Indexes new content (not found by <see cref="TryFind"/>); <paramref name="page"/> must be bytes that no longer change.</summary>
    public long Add(ContentHash hash, ReadOnlySpan<byte> page)
    {
        int slot = Arena.Append(page);
        _hashes.Add(hash);
        // New content goes to the head of its hash chain.
        _nextWithSameHash.Add(_firstWithHash.TryGetValue(hash, out int head) ? head : -1);
        _firstWithHash[hash] = slot;
        return IdOf(slot);
    }

    public ReadOnlySpan<byte> BytesOf(long contentId) => Arena.Get(SlotOf(contentId));

    public ContentHash HashOf(long contentId) => _hashes[SlotOf(contentId)];

    public int SlotOf(long contentId)
    {
        if (contentId <= 0 || contentId % ShardCount != Shard) throw new ArgumentOutOfRangeException(nameof(contentId), contentId, $"not a content id of shard {Shard}");
        long slot = contentId / ShardCount - 1;
        if (slot >= _hashes.Count) throw new ArgumentOutOfRangeException(nameof(contentId), contentId, "unknown content id");
        return (int)slot;
    }

    private long IdOf(int slot) => ((long)slot + 1) * ShardCount + Shard;
}
