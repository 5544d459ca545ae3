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
}

/// <summary>
/// The dedup logic of one page class (a fixed range of the content-hash space). For each page reported in a round
/// it re-reads the page, re-checks the hash it was routed by (a page rewritten since then is left to the next dirty
/// round, which will carry it), and resolves it to a content id through <see cref="ContentIndex"/>. Given the VM
/// placement it decides which target groups still need each content: a content a host already holds is never
/// sent to it again, only referenced.
/// </summary>
public sealed class DedupShard
{
    private readonly Dictionary<long, ulong> _holders = new();
    private readonly List<(int Vm, int Page, long ContentId)> _round = new();
    private readonly byte[] _page = new byte[Page.Size];
    private readonly bool _deduplicate;
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
    }

    public void Add(int vmIndex, IGuestMemory vm, int page, ContentHash routedBy)
    {
        // A write-logged guest's RAM is read in place (no copy): bytes the guest rewrites meanwhile make a torn read,
        // which either fails the checks below or matches a whole content byte for byte; either way the page is in
        // the dirty log and goes again next round. Only bytes that are indexed must not change: those are copied first.
        ReadOnlySpan<byte> bytes = default;
        bool live = vm is IWriteLoggedGuest and IDirectPageAccess direct && direct.TryGetPage(page, out bytes);
        if (!live) { vm.ReadPage(page, _page); bytes = _page; }
        long id;
        if (routedBy == ContentHash.OfZeroPage)
        {
            // The VM actor found the page zero: a zero check, not a hash. Round 0 does not map zero pages (target
            // memory starts zeroed); later rounds must map a page that became zero.
            if (!Page.IsZero(bytes)) { RacedPages++; return; }
            if (_currentRound == 0) return;
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
            // In place, a byte compare with an indexed content of the routed hash is the proof; no second hash. New
            // content is indexed from a stable copy, hashed again to check it still has the hash it is indexed under.
            if (!Index.TryFind(routedBy, bytes, out id, countCollision: false))
            {
                bytes.CopyTo(_page);
                if (ContentHash.Compute(_page) != routedBy) { RacedPages++; return; }
                if (!Index.TryFind(routedBy, _page, out id)) id = Index.Add(routedBy, _page);
            }
        }
        else
        {
            var hash = ContentHash.Compute(bytes);
            if (hash != routedBy) { RacedPages++; return; }
            if (!Index.TryFind(hash, bytes, out id)) id = Index.Add(hash, _page);
        }
        _round.Add((vmIndex, page, id));
    }

    /// <summary>
    /// Copies a content into <paramref name="destination"/> and returns the hash of those bytes: from the index when
    /// deduplicating (the bytes that were compared), else from the guest now (a page changed since is dirty again and
    /// goes again next round; the hash is of what is sent, so the target can check it).
    /// </summary>
    public ContentHash Read(long contentId, Span<byte> destination)
    {
        if (_deduplicate)
        {
            Index.BytesOf(contentId).CopyTo(destination);
            return Index.HashOf(contentId);
        }
        var (vm, page) = _live[contentId];
        vm.ReadPage(page, destination);
        return ContentHash.Compute(destination[..Page.Size]);
    }

    /// <summary>Distinct contents this shard has seen (every non-zero page, without dedup).</summary>
    public long DistinctContents => _deduplicate ? Index.Count : _uniqueCount;

    /// <summary>
    /// Decides this round's sends for the given placement and records the targets as holders, so later rounds
    /// reference what they already have. Pages in <paramref name="setAside"/> (per VM) are left out: neither mapped
    /// nor counted as needing their content, which is sent only if other pages need it.
    /// </summary>
    public ShardRoundPlan Plan(IReadOnlyList<int> targetOfVm, int targetCount, IReadOnlyList<IReadOnlySet<int>>? setAside = null)
    {
        var needed = new Dictionary<long, ulong>();
        _solePage.Clear();
        _manyPages.Clear();
        var maps = new List<(int, int, long)>[targetCount];
        for (int t = 0; t < targetCount; t++) maps[t] = new();
        foreach (var (vm, page, id) in _round)
        {
            if (setAside is not null && setAside[vm].Contains(page)) continue;
            int t = targetOfVm[vm];
            maps[t].Add((vm, page, id));
            if (id == ContentIndex.ZeroContentId) continue;
            ulong bit = 1UL << t;
            if ((_holders.GetValueOrDefault(id) & bit) != 0) continue;
            needed[id] = needed.GetValueOrDefault(id) | bit;
            if (_manyPages.Contains(id)) continue;
            if (_solePage.Remove(id)) _manyPages.Add(id);
            else _solePage[id] = (vm, page);
        }
        var groups = new Dictionary<ulong, List<long>>();
        foreach (var (id, mask) in needed)
        {
            _holders[id] = _holders.GetValueOrDefault(id) | mask;
            if (!groups.TryGetValue(mask, out var list)) groups[mask] = list = new();
            list.Add(id);
        }
        foreach (var list in groups.Values) list.Sort();
        return new ShardRoundPlan(
            groups.ToDictionary(g => g.Key, g => (IReadOnlyList<long>)g.Value),
            maps.Select(m => (IReadOnlyList<(int, int, long)>)m).ToArray())
        {
            SoleContents = _solePage.Keys.ToHashSet(),
        };
    }

    /// <summary>
    /// Takes a content out of the round being sent when the one page that needed it sent has been rewritten since it
    /// was hashed (so the next round carries that page): its target hosts are no longer counted as holding it.
    /// Called while the round is sent, when the shard is otherwise idle.
    /// </summary>
    public bool TryWithdraw(long contentId, ulong targetMask, Func<int, int, bool> rewritten)
    {
        if (!_solePage.TryGetValue(contentId, out var sole) || !rewritten(sole.Vm, sole.Page)) return false;
        _solePage.Remove(contentId);
        ulong left = _holders.GetValueOrDefault(contentId) & ~targetMask;
        if (left == 0) _holders.Remove(contentId);
        else _holders[contentId] = left;
        return true;
    }
}
