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
public sealed class DedupShard
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
        // A write-logged guest's RAM is read in place (no copy): its log tells whether the bytes are still what was
        // hashed, and afterwards whether a page still holds them. Other guests are read into a copy.
        ReadOnlySpan<byte> bytes = default;
        var log = vm as IWriteLoggedGuest;
        bool live = log is not null && vm is IDirectPageAccess direct && direct.TryGetPage(page, out bytes);
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

    /// <summary>
    /// Copies a content into <paramref name="destination"/> and gives the hash of those bytes: a stored content from
    /// the index (the bytes that were compared); a held one from a guest page its log shows unwritten since it held
    /// them; without dedup, from the guest now (a page changed since is dirty again and goes again next round; the
    /// hash is of what is sent, so the target can check it). False: no page holds a held content any more, so every
    /// page of this round that needed it was rewritten (the next round carries them) and it is withdrawn from
    /// <paramref name="targetMask"/>, which is no longer counted as holding it.
    /// </summary>
    public bool TryRead(long contentId, ulong targetMask, Span<byte> destination, out ContentHash hash)
    {
        if (!_deduplicate)
        {
            var (vm, page) = _live[contentId];
            vm.ReadPage(page, destination);
            hash = ContentHash.Compute(destination[..Page.Size]);
            return true;
        }
        hash = Index.HashOf(contentId);
        if (Index.IsStored(contentId))
        {
            Index.BytesOf(contentId).CopyTo(destination);
            return true;
        }
        var (first, second) = Index.HoldersOf(contentId);
        if (ReadHeld(first, destination)) return true;
        if (ReadHeld(second, destination))
        {
            Index.SetHolders(contentId, second, PageRef.None);
            return true;
        }
        // Neither remembered page holds it any more: any page of this round that still does.
        foreach (var holder in RoundPagesOf(contentId))
            if (ReadHeld(holder, destination))
            {
                Index.SetHolders(contentId, holder, PageRef.None);
                return true;
            }
        Index.SetHolders(contentId, PageRef.None, PageRef.None);
        StopCounting(contentId, targetMask);
        return false;
    }

    /// <summary>Distinct contents this shard has seen (every non-zero page, without dedup).</summary>
    public long DistinctContents => _deduplicate ? Index.Count : _uniqueCount;

    /// <summary>Contents of which the source keeps a copy (guests that cannot prove a page unchanged).</summary>
    public int StoredContents => Index.Arena.Count;

    /// <summary>Whether a page this round reported has been written since it was hashed (false for guests without a write log).</summary>
    public bool Rewritten(int vmIndex, int page) =>
        _guests.GetValueOrDefault(vmIndex) is IWriteLoggedGuest log && !log.UnwrittenSince(page, _roundGeneration.GetValueOrDefault(vmIndex));

    /// <summary>
    /// Decides this round's sends for the given placement and records the targets as holders, so later rounds
    /// reference what they already have. Pages in <paramref name="setAside"/> (per VM) are left out: neither mapped
    /// nor counted as needing their content, which is sent only if other pages need it.
    /// With <paramref name="deferSingleTarget"/> (round 0 of a staggered handover) only the pages whose content more
    /// than one target needs are planned; the others wait for their target's wave, when
    /// <paramref name="releaseDeferredOf"/> names their VM: they join that round unless it carries the page anew.
    /// </summary>
    public ShardRoundPlan Plan(IReadOnlyList<int> targetOfVm, int targetCount, IReadOnlyList<IReadOnlySet<int>>? setAside = null,
        bool deferSingleTarget = false, IReadOnlyCollection<int>? releaseDeferredOf = null)
    {
        if (releaseDeferredOf is not null) ReleaseDeferred(releaseDeferredOf);
        var pages = setAside is null ? _round : _round.Where(r => !setAside[r.Vm].Contains(r.Page)).ToList();
        var deferred = new Dictionary<int, int>();
        if (deferSingleTarget)
        {
            var targets = new Dictionary<long, ulong>();
            foreach (var (vm, _, id) in pages)
                if (id != ContentIndex.ZeroContentId) targets[id] = targets.GetValueOrDefault(id) | 1UL << targetOfVm[vm];
            var shared = new List<(int Vm, int Page, long ContentId)>();
            foreach (var entry in pages)
            {
                if (entry.ContentId == ContentIndex.ZeroContentId || BitOperations.PopCount(targets[entry.ContentId]) > 1) { shared.Add(entry); continue; }
                if (!_deferred.TryGetValue(entry.Vm, out var list)) _deferred[entry.Vm] = list = new();
                list.Add((entry.Page, entry.ContentId));
                deferred[entry.Vm] = deferred.GetValueOrDefault(entry.Vm) + 1;
            }
            pages = shared;
        }
        var needed = new Dictionary<long, ulong>();
        _solePage.Clear();
        _manyPages.Clear();
        var maps = new List<(int, int, long)>[targetCount];
        for (int t = 0; t < targetCount; t++) maps[t] = new();
        foreach (var (vm, page, id) in pages)
        {
            int t = targetOfVm[vm];
            maps[t].Add((vm, page, id));
            if (id == ContentIndex.ZeroContentId) continue;
            ulong bit = 1UL << t;
            if ((_targetsHolding.GetValueOrDefault(id) & bit) != 0) continue;
            needed[id] = needed.GetValueOrDefault(id) | bit;
            if (_manyPages.Contains(id)) continue;
            if (_solePage.Remove(id)) _manyPages.Add(id);
            else _solePage[id] = (vm, page);
        }
        var groups = new Dictionary<ulong, List<long>>();
        foreach (var (id, mask) in needed)
        {
            _targetsHolding[id] = _targetsHolding.GetValueOrDefault(id) | mask;
            if (!groups.TryGetValue(mask, out var list)) groups[mask] = list = new();
            list.Add(id);
        }
        foreach (var list in groups.Values) list.Sort();
        return new ShardRoundPlan(
            groups.ToDictionary(g => g.Key, g => (IReadOnlyList<long>)g.Value),
            maps.Select(m => (IReadOnlyList<(int, int, long)>)m).ToArray())
        {
            SoleContents = _solePage.Keys.ToHashSet(),
            DeferredPages = deferred,
        };
    }

    /// <summary>
    /// Deferred pages of these VMs join this round, except those it carries anew (rewritten since round 0): those went to
    /// whichever shard their new content belongs to, so the VM's whole page list of the round says which they are.
    /// </summary>
    private void ReleaseDeferred(IReadOnlyCollection<int> vms)
    {
        foreach (int vm in vms)
        {
            if (!_deferred.Remove(vm, out var list)) continue;
            if (!_roundPagesOf.TryGetValue(vm, out var carried)) throw new InvalidOperationException($"VM {vm}'s pages of round {_currentRound} were not reported");
            foreach (var (page, id) in list)
                if (carried.AsSpan().BinarySearch(page) < 0) _round.Add((vm, page, id));
        }
        _roundByContent = null;
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
        StopCounting(contentId, targetMask);
        return true;
    }

    private void StopCounting(long contentId, ulong targetMask)
    {
        ulong left = _targetsHolding.GetValueOrDefault(contentId) & ~targetMask;
        if (left == 0) _targetsHolding.Remove(contentId);
        else _targetsHolding[contentId] = left;
    }

    private bool Unwritten(PageRef holder) =>
        _guests.GetValueOrDefault(holder.Vm) is IWriteLoggedGuest log && log.UnwrittenSince(holder.Page, holder.Generation);

    /// <summary>Copies the holder's page, then proves it unchanged: only then are the copied bytes the content.</summary>
    private bool ReadHeld(PageRef holder, Span<byte> destination)
    {
        if (holder.IsNone) return false;
        _guests[holder.Vm].ReadPage(holder.Page, destination);
        return Unwritten(holder);
    }

    /// <summary>Byte compare with a remembered holder's page in place, then proof that the page is unchanged.</summary>
    private bool HeldEquals(long contentId, ReadOnlySpan<byte> page)
    {
        var (first, second) = Index.HoldersOf(contentId);
        return EqualsHolder(first, page) || EqualsHolder(second, page);
    }

    private bool EqualsHolder(PageRef holder, ReadOnlySpan<byte> page)
    {
        if (holder.IsNone || _guests.GetValueOrDefault(holder.Vm) is not IDirectPageAccess direct || !direct.TryGetPage(holder.Page, out var held)) return false;
        return held.SequenceEqual(page[..Page.Size]) && Unwritten(holder);
    }

    /// <summary>Keeps a second page to read a held content from (or replaces a remembered one the guest rewrote).</summary>
    private void RememberHolder(long contentId, PageRef page)
    {
        var (first, second) = Index.HoldersOf(contentId);
        // The same page found holding it again (rewritten with the same bytes): remembered as of now.
        if (first.Vm == page.Vm && first.Page == page.Page) Index.SetHolders(contentId, page, second);
        else if (second.Vm == page.Vm && second.Page == page.Page) Index.SetHolders(contentId, first, page);
        else if (first.IsNone || !Unwritten(first)) Index.SetHolders(contentId, page, second);
        else if (second.IsNone || !Unwritten(second)) Index.SetHolders(contentId, first, page);
    }

    /// <summary>This round's pages of a content, found by a sort made the first time a round needs it (rarely).</summary>
    private IEnumerable<PageRef> RoundPagesOf(long contentId)
    {
        _roundByContent ??= _round.Select(r => (r.ContentId, r.Vm, r.Page)).OrderBy(r => r.ContentId).ToArray();
        var sorted = _roundByContent;
        int lo = 0, hi = sorted.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid].Id < contentId) lo = mid + 1; else hi = mid;
        }
        for (int i = lo; i < sorted.Length && sorted[i].Id == contentId; i++)
            yield return new PageRef(sorted[i].Vm, sorted[i].Page, _roundGeneration.GetValueOrDefault(sorted[i].Vm));
    }
}
