using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>Held contents: read from a guest page the write log proves unwritten since it held them, never from a copy.</summary>
public sealed partial class DedupShard
{
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
