using System.Numerics;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>A round's plan: which target groups still need which contents; deferral of single-target pages to their wave; withdrawal of contents whose one page was rewritten.</summary>
public sealed partial class DedupShard
{
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

    /// <summary>These hosts hold nothing any more as far as later plans go (their receivers let go of what they had).</summary>
    public void ForgetTargets(ulong mask)
    {
        foreach (var (id, holding) in _targetsHolding.ToArray())
            if ((holding & mask) != 0) StopCounting(id, mask);
    }

    private void StopCounting(long contentId, ulong targetMask)
    {
        ulong left = _targetsHolding.GetValueOrDefault(contentId) & ~targetMask;
        if (left == 0) _targetsHolding.Remove(contentId);
        else _targetsHolding[contentId] = left;
    }
}
