using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>A guest page known to hold a content: page <see cref="Page"/> of VM <see cref="Vm"/>, as of write-log generation <see cref="Generation"/>.</summary>
public readonly record struct PageRef(int Vm, int Page, int Generation)
{
    public static readonly PageRef None = new(-1, -1, 0);
    public bool IsNone => Vm < 0;
}

/// <summary>Compares <paramref name="page"/> with a held content (one no copy exists of): true only if proven equal.</summary>
public delegate bool HeldContentEquals(long contentId, ReadOnlySpan<byte> page);

/// <summary>
/// One dedup shard's index: the distinct page contents whose hash falls in this shard's range. A page is the same
/// content as an indexed one only if the hashes match and the bytes compare equal; equal hashes with different
/// bytes (a collision) get distinct content ids. Content ids are unique across shards and never 0, which stands
/// for the zero page. A content is either stored (its bytes copied into the arena) or held: only guest pages hold
/// its bytes (up to two are remembered), and whoever compares or reads it proves one of them unchanged.
/// </summary>
public sealed class ContentIndex
{
    private readonly Dictionary<ContentHash, int> _firstWithHash = new();
    private readonly List<int> _nextWithSameHash = new();
    private readonly List<ContentHash> _hashes = new();
    private readonly List<int> _arenaSlot = new();
    private readonly List<(PageRef First, PageRef Second)> _holders = new();

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
    /// <param name="held">Compares with a held content; without it held contents never match.</param>
    public bool TryFind(ContentHash hash, ReadOnlySpan<byte> page, out long contentId, bool countCollision = true, HeldContentEquals? held = null)
    {
        contentId = 0;
        if (!_firstWithHash.TryGetValue(hash, out int local)) return false;
        for (int candidate = local; candidate >= 0; candidate = _nextWithSameHash[candidate])
        {
            ByteCompares++;
            int stored = _arenaSlot[candidate];
            bool equal = stored >= 0 ? Arena.Get(stored).SequenceEqual(page[..Page.Size]) : held is not null && held(IdOf(candidate), page);
            if (equal) { contentId = IdOf(candidate); return true; }
        }
        if (countCollision) Collisions++;
        return false;
    }

    /// <summary>Indexes new content (not found by <see cref="TryFind"/>) as a copy; <paramref name="page"/> must be bytes that no longer change.</summary>
    public long Add(ContentHash hash, ReadOnlySpan<byte> page) => Insert(hash, Arena.Append(page), PageRef.None);

    /// <summary>Indexes new content that only the guest page <paramref name="holder"/> holds (no copy is made).</summary>
    public long AddHeld(ContentHash hash, PageRef holder) => Insert(hash, -1, holder);

    private long Insert(ContentHash hash, int arenaSlot, PageRef holder)
    {
        int slot = _hashes.Count;
        _hashes.Add(hash);
        _arenaSlot.Add(arenaSlot);
        _holders.Add((holder, PageRef.None));
        // New content goes to the head of its hash chain.
        _nextWithSameHash.Add(_firstWithHash.TryGetValue(hash, out int head) ? head : -1);
        _firstWithHash[hash] = slot;
        return IdOf(slot);
    }

    public bool IsStored(long contentId) => _arenaSlot[SlotOf(contentId)] >= 0;

    /// <summary>The bytes of a stored content.</summary>
    public ReadOnlySpan<byte> BytesOf(long contentId)
    {
        int stored = _arenaSlot[SlotOf(contentId)];
        if (stored < 0) throw new InvalidOperationException($"content {contentId} is held by guest pages, not stored");
        return Arena.Get(stored);
    }

    public ContentHash HashOf(long contentId) => _hashes[SlotOf(contentId)];

    /// <summary>The guest pages remembered as holding a held content (either may be <see cref="PageRef.None"/>).</summary>
    public (PageRef First, PageRef Second) HoldersOf(long contentId) => _holders[SlotOf(contentId)];

    public void SetHolders(long contentId, PageRef first, PageRef second) => _holders[SlotOf(contentId)] = (first, second);

    public int SlotOf(long contentId)
    {
        if (contentId <= 0 || contentId % ShardCount != Shard) throw new ArgumentOutOfRangeException(nameof(contentId), contentId, $"not a content id of shard {Shard}");
        long slot = contentId / ShardCount - 1;
        if (slot >= _hashes.Count) throw new ArgumentOutOfRangeException(nameof(contentId), contentId, "unknown content id");
        return (int)slot;
    }

    private long IdOf(int slot) => ((long)slot + 1) * ShardCount + Shard;
}
