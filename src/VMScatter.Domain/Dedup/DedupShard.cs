using System.Collections.Immutable;
using System.Numerics;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>
/// One shard's share of a round: contents per target group (mask of target indexes) and page maps per target.
/// <see cref="SoleContents"/>: those of the contents that one page alone needs sent, the ones a guest is likely to
/// rewrite before their turn (a page shared across VMs rarely is): sending them last gives the guest that time.
/// </summary>
public sealed record ShardRoundPlan(IReadOnlyDictionary<ulong, IReadOnlyList<long>> ContentsByGroup, IReadOnlyList<IReadOnlyList<(int Vm, int Page, long ContentId)>> MapsByTarget)
{
    public IReadOnlySet<long> SoleContents { get; init; } = new HashSet<long>();

    /// <summary>Per VM, pages this round deferred to the VM's own wave (their content goes to its target alone).</summary>
    public IReadOnlyDictionary<int, int> DeferredPages { get; init; } = new Dictionary<int, int>();
}

/// <summary>
/// The dedup logic of one page class (a fixed range of the content-hash space). For each page reported in a round
/// it re-reads the page, re-checks the hash it was routed by (a page rewritten since then is left to the next dirty
/// round, which will carry it), and resolves it to a content id through <see cref="ContentIndex"/>. Given the VM
/// placement it decides which target groups still need each content: a content a host already holds is never
/// sent to it again, only referenced.
/// A guest whose write log proves a page unchanged (<see cref="IWriteLoggedGuest"/>) and whose memory can be read in
/// place is never copied: a content is held by the page it was found in (and a second one, once another page compares
/// equal), and is read from whichever of them the log shows unwritten since. Copying every distinct content of 2 GiB of
/// guests cost the source as much CPU as hashing it several times over (fresh memory is slow to fault in here).
/// </summary>
public sealed partial class DedupShard
{
    private readonly Dictionary<long, ulong> _targetsHolding = new();
    private readonly List<(int Vm, int Page, long ContentId)> _round = new();
    private readonly Dictionary<int, int> _roundGeneration = new();
    private (long Id, int Vm, int Page)[]? _roundByContent;
    private readonly Dictionary<int, IGuestMemory> _guests = new();
    // Per VM, every page it hashed this round (across all shards, ascending): what the round carries anew.
    private readonly Dictionary<int, ImmutableArray<int>> _roundPagesOf = new();
    private readonly Dictionary<int, List<(int Page, long ContentId)>> _deferred = new();
    private readonly byte[] _page = new byte[Page.Size];
    private readonly bool _deduplicate;
    private readonly HeldContentEquals _heldEquals;
    private readonly Dictionary<long, (IGuestMemory Vm, int Page)> _live = new();
    // This round's contents that one page alone needs sent, and that page: if the guest rewrites it before the
    // content's turn, the content need not go (see TryWithdraw).
    private readonly Dictionary<long, (int Vm, int Page)> _solePage = new();
    private readonly HashSet<long> _manyPages = new();
    private long _uniqueCount;
    private int _currentRound = -1;

    /// <param name="deduplicate">
    /// False for the one-to-one pre-copy baseline (as QEMU does): zero pages are still elided, but every other page
    /// is its own content, never compared or referenced, and its bytes are read from the guest when sent.
    /// </param>
    public DedupShard(int shard, int shardCount, bool deduplicate = true)
    {
        Index = new ContentIndex(shard, shardCount);
        _deduplicate = deduplicate;
        _heldEquals = HeldEquals;
    }

    public ContentIndex Index { get; }

    /// <summary>Pages whose content changed between hashing and this shard reading them (resent next round).</summary>
    public long RacedPages { get; private set; }

    public int PagesInRound => _round.Count;

    public void BeginRound(int round)
    {
        if (round <= _currentRound) throw new InvalidOperationException($"round {round} after round {_currentRound}");
        _currentRound = round;
        _round.Clear();
        _roundGeneration.Clear();
        _roundPagesOf.Clear();
        _roundByContent = null;
    }

    /// <summary>
    /// A VM takes part in this round (even with no pages here): its guest, the write-log generation its pages were hashed
    /// under, and every page it hashed this round, whichever shard each went to (ascending).
    /// </summary>
    public void Reported(int vmIndex, IGuestMemory vm, int generation, ImmutableArray<int> roundPages = default)
    {
        _guests[vmIndex] = vm;
        _roundGeneration[vmIndex] = generation;
        if (!roundPages.IsDefault) _roundPagesOf[vmIndex] = roundPages;
    }

    /// <param name="generation">The guest's write-log generation its pages of this round were hashed under (write-logged guests).</param>
    public void Add(int vmIndex, IGuestMemory vm, int page, ContentHash routedBy, int generation = 0)
    {
        Reported(vmIndex, vm, generation);
        // Round 0 maps no zero page (target memory starts zeroed), so it need not read one: a page written since it was
        // found zero is in the guest's next collection either way.
        if (_currentRound == 0 && routedBy == ContentHash.OfZeroPage) return;
        // A write-logged guest's RAM is read in place (no copy): its log tells whether the bytes are still what was
        // hashed, and afterwards whether a page still holds them. Other guests are read into a copy.
        ReadOnlySpan<byte> bytes = default;
        var log = vm as IWriteLoggedGuest;
        bool live = log is not null && vm is IDirectPageAccess direct && direct.TryGetPage(page, out bytes);
        if (!live) { vm.ReadPage(page, _page); bytes = _page; }
        long id;
        if (routedBy == ContentHash.OfZeroPage)
        {
            // The VM actor found the page zero: a zero check, not a hash. Later rounds must map a page that became zero.
            if (!Page.IsZero(bytes)) { RacedPages++; return; }
            _round.Add((vmIndex, page, ContentIndex.ZeroContentId));
            return;
        }
        if (!_deduplicate)
        {
            if (ContentHash.Compute(bytes) != routedBy) { RacedPages++; return; }
            id = (++_uniqueCount) * Index.ShardCount + Index.Shard;
            _live[id] = (vm, page);
        }
        else if (live)
        {
            // Unwritten since the collection it was hashed after: the bytes are still the ones hashed.
            if (!log!.UnwrittenSince(page, generation)) { RacedPages++; return; }
            var self = new PageRef(vmIndex, page, generation);
            if (!Index.TryFind(routedBy, bytes, out id, countCollision: false, _heldEquals)) id = Index.AddHeld(routedBy, self);
            // Equal to a content proven unchanged, and itself unwritten since the compare: it holds that content too.
            else if (!Index.IsStored(id) && log.UnwrittenSince(page, generation)) RememberHolder(id, self);
        }
        else
        {
            var hash = ContentHash.Compute(bytes);
            if (hash != routedBy) { RacedPages++; return; }
            if (!Index.TryFind(hash, bytes, out id)) id = Index.Add(hash, _page);
        }
        _round.Add((vmIndex, page, id));
    }

    /// <summary>Distinct contents this shard has seen (every non-zero page, without dedup).</summary>
    public long DistinctContents => _deduplicate ? Index.Count : _uniqueCount;

    /// <summary>Contents of which the source keeps a copy (guests that cannot prove a page unchanged).</summary>
    public int StoredContents => Index.Arena.Count;

    /// <summary>Whether a page this round reported has been written since it was hashed (false for guests without a write log).</summary>
    public bool Rewritten(int vmIndex, int page) =>
        _guests.GetValueOrDefault(vmIndex) is IWriteLoggedGuest log && !log.UnwrittenSince(page, _roundGeneration.GetValueOrDefault(vmIndex));

}
