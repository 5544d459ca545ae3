using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Domain.Tests;

public class DedupTests
{
    private static byte[] PageOf(byte fill, int marker = 0)
    {
        var p = new byte[Page.Size];
        Array.Fill(p, fill);
        BitConverter.TryWriteBytes(p.AsSpan(0, 4), marker);
        return p;
    }

    [Fact]
    public void Identical_bytes_get_one_content_id_and_are_byte_compared()
    {
        var index = new ContentIndex(shard: 0, shardCount: 1);
        var a = PageOf(7);
        var (first, isNew) = index.Resolve(ContentHash.Compute(a), a);
        var (second, isNew2) = index.Resolve(ContentHash.Compute(a), (byte[])a.Clone());
        Assert.True(isNew);
        Assert.False(isNew2);
        Assert.Equal(first, second);
        Assert.Equal(1, index.Count);
        Assert.Equal(1, index.ByteCompares);
        Assert.Equal(a, index.BytesOf(first).ToArray());
    }

    [Fact]
    public void Equal_hash_with_different_bytes_is_a_collision_not_a_duplicate()
    {
        var index = new ContentIndex(0, 1);
        var forged = new ContentHash(1, 2); // the same hash claimed for two different pages
        var (a, _) = index.Resolve(forged, PageOf(1));
        var (b, bNew) = index.Resolve(forged, PageOf(2));
        var (a2, a2New) = index.Resolve(forged, PageOf(1));
        Assert.NotEqual(a, b);
        Assert.True(bNew);
        Assert.False(a2New);
        Assert.Equal(a, a2);
        Assert.Equal(1, index.Collisions);
        Assert.Equal(PageOf(2), index.BytesOf(b).ToArray());
    }

    [Fact]
    public void Content_ids_are_unique_across_shards_and_never_zero()
    {
        var shards = Enumerable.Range(0, 4).Select(s => new ContentIndex(s, 4)).ToArray();
        var ids = new HashSet<long>();
        for (int i = 0; i < 100; i++)
        {
            var p = PageOf(3, i);
            var h = ContentHash.Compute(p);
            var (id, _) = shards[ContentIndex.ShardOf(h, 4)].Resolve(h, p);
            Assert.True(ids.Add(id));
            Assert.NotEqual(ContentIndex.ZeroContentId, id);
            Assert.Equal(h, shards[id % 4].HashOf(id));
        }
    }

    private sealed class PagesMemory(params byte[][] pages) : IGuestMemory
    {
        public byte[][] Pages { get; } = pages;
        public int PageCount => Pages.Length;
        public void ReadPage(int index, Span<byte> destination) => Pages[index].CopyTo(destination);
    }

    [Fact]
    public void Shard_plans_a_shared_content_once_for_the_group_and_never_again_for_holders()
    {
        var shared = PageOf(9);
        var vm0 = new PagesMemory(shared, PageOf(1, 1), new byte[Page.Size]);
        var vm1 = new PagesMemory(shared, PageOf(2, 2));
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        for (int p = 0; p < vm0.PageCount; p++) shard.Add(0, vm0, p, ContentHash.Compute(vm0.Pages[p]));
        for (int p = 0; p < vm1.PageCount; p++) shard.Add(1, vm1, p, ContentHash.Compute(vm1.Pages[p]));
        // Round 0's zero page needs no map (target memory starts zeroed); the shared page is one content.
        Assert.Equal((4, 3L), (shard.PagesInRound, shard.DistinctContents));

        var plan = shard.Plan(targetOfVm: [0, 1], targetCount: 2);
        long sharedId = plan.MapsByTarget[0].Single(m => m.Page == 0).ContentId;
        Assert.Equal([sharedId], plan.ContentsByGroup[0b11]);           // once, to the group {0, 1}
        Assert.Single(plan.ContentsByGroup[0b01]);                     // vm0's own page to target 0 only
        Assert.Single(plan.ContentsByGroup[0b10]);
        Assert.Equal(2, plan.MapsByTarget[0].Count);                   // zero page needs no map in round 0
        Assert.Equal(2, plan.MapsByTarget[1].Count);

        // Round 1: vm1 rewrites its page 1 with the shared content; target 1 holds it, so only a map goes.
        vm1.Pages[1] = shared;
        shard.BeginRound(1);
        shard.Add(1, vm1, 1, ContentHash.Compute(shared));
        var next = shard.Plan([0, 1], 2);
        Assert.Empty(next.ContentsByGroup);
        Assert.Equal([(1, 1, sharedId)], next.MapsByTarget[1]);
    }

    [Fact]
    public void Pages_set_aside_from_round_0_are_not_mapped_and_their_content_goes_only_where_other_pages_need_it()
    {
        var shared = PageOf(9);
        var vm0 = new PagesMemory(shared, PageOf(1, 1));
        var vm1 = new PagesMemory(shared, PageOf(2, 2));
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        for (int p = 0; p < 2; p++) shard.Add(0, vm0, p, ContentHash.Compute(vm0.Pages[p]));
        for (int p = 0; p < 2; p++) shard.Add(1, vm1, p, ContentHash.Compute(vm1.Pages[p]));

        // Both of vm1's pages were rewritten after analysis; vm0's page 1 too.
        var plan = shard.Plan([0, 1], 2, setAside: [new HashSet<int> { 1 }, new HashSet<int> { 0, 1 }]);
        long sharedId = plan.MapsByTarget[0].Single().ContentId;
        Assert.Equal([(0, 0, sharedId)], plan.MapsByTarget[0]);
        Assert.Empty(plan.MapsByTarget[1]);
        // The shared content still goes to target 0 (vm0's page 0 needs it), no longer to target 1; nothing else goes.
        Assert.Equal([sharedId], Assert.Single(plan.ContentsByGroup, g => g.Key == 0b01).Value);
        Assert.Single(plan.ContentsByGroup);

        // Round 1 carries vm1's page 0 (still the shared content): target 1 never got it, so it is sent now.
        shard.BeginRound(1);
        shard.Add(1, vm1, 0, ContentHash.Compute(shared));
        var next = shard.Plan([0, 1], 2);
        Assert.Equal([sharedId], next.ContentsByGroup[0b10]);
        Assert.Equal([(1, 0, sharedId)], next.MapsByTarget[1]);
    }

    [Fact]
    public void A_content_only_a_rewritten_page_needed_is_withdrawn_and_its_host_is_not_counted_as_holding_it()
    {
        var shared = PageOf(9);
        byte[] own0 = PageOf(1, 1), own1 = PageOf(2, 2);
        var vm0 = new PagesMemory(shared, own0, shared);
        var vm1 = new PagesMemory(shared, own1);
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        for (int p = 0; p < vm0.PageCount; p++) shard.Add(0, vm0, p, ContentHash.Compute(vm0.Pages[p]));
        for (int p = 0; p < vm1.PageCount; p++) shard.Add(1, vm1, p, ContentHash.Compute(vm1.Pages[p]));
        var plan = shard.Plan([0, 1], 2);
        long sharedId = plan.ContentsByGroup[0b11].Single();
        long own0Id = plan.ContentsByGroup[0b01].Single();
        long own1Id = plan.ContentsByGroup[0b10].Single();
        // The contents one page alone needs are marked to go last in the round; the shared one is not.
        Assert.Equal(new HashSet<long> { own0Id, own1Id }, plan.SoleContents);

        // The guests rewrote vm0's page 1 and both of vm0's shared pages, nothing of vm1's, before the contents' turn.
        var rewritten = new HashSet<(int, int)> { (0, 1), (0, 0), (0, 2) };
        bool Rewritten(int vm, int page) => rewritten.Contains((vm, page));
        Assert.True(shard.TryWithdraw(own0Id, 0b01, Rewritten));       // one page needed it, and it was rewritten
        Assert.False(shard.TryWithdraw(own1Id, 0b10, Rewritten));      // its page was not rewritten
        Assert.False(shard.TryWithdraw(sharedId, 0b11, Rewritten));    // vm1's page still needs it: only sole contents go
        Assert.False(shard.TryWithdraw(own0Id, 0b01, Rewritten));      // once withdrawn, it is no longer this round's

        // Round 1 carries vm0's page 1 again with the same bytes: target 0 does not hold them, so they are sent now,
        // while target 1 (which got its own content) is only mapped.
        shard.BeginRound(1);
        shard.Add(0, vm0, 1, ContentHash.Compute(own0));
        shard.Add(1, vm1, 1, ContentHash.Compute(own1));
        var next = shard.Plan([0, 1], 2);
        Assert.Equal([own0Id], next.ContentsByGroup[0b01]);
        Assert.False(next.ContentsByGroup.ContainsKey(0b10));
        Assert.Equal([(1, 1, own1Id)], next.MapsByTarget[1]);
    }

    [Fact]
    public void Reading_a_write_logged_guest_in_place_finds_the_same_contents_as_reading_copies_and_keeps_no_copy()
    {
        var vms = SyntheticFleet.Create(new SyntheticFleetSpec(2, new SyntheticGuestModel { MemoryBytes = 4L << 20 }, 3, OsImages: 1, Applications: 1), runWorkload: false);
        foreach (var vm in vms) vm.StartDirtyLogging();
        var inPlace = new DedupShard(0, 1);
        var copied = new DedupShard(0, 1);
        inPlace.BeginRound(0);
        copied.BeginRound(0);
        var page = new byte[Page.Size];
        // The same bytes, as plain copies (no in-place access, no write log).
        var copies = vms.Select(vm => new PagesMemory(Enumerable.Range(0, vm.PageCount).Select(i => { var b = new byte[Page.Size]; vm.ReadPage(i, b); return b; }).ToArray())).ToArray();
        for (int v = 0; v < 2; v++)
            for (int p = 0; p < vms[v].PageCount; p++)
            {
                vms[v].ReadPage(p, page);
                var hash = Page.IsZero(page) ? ContentHash.OfZeroPage : ContentHash.Compute(page);
                inPlace.Add(v, vms[v], p, hash, vms[v].LogGeneration);
                copied.Add(v, copies[v], p, hash);
            }
        Assert.Equal(copied.DistinctContents, inPlace.DistinctContents);
        Assert.True(inPlace.DistinctContents < vms.Sum(v => v.PageCount)); // the shared OS and application pages
        Assert.Equal(copied.PagesInRound, inPlace.PagesInRound);
        Assert.Equal((0, (int)copied.DistinctContents), (inPlace.StoredContents, copied.StoredContents));
        var held = new byte[Page.Size];
        for (long id = 1; id <= inPlace.Index.Count; id++)
        {
            Assert.True(inPlace.TryRead(id, 1, held, out var hash));
            Assert.Equal(copied.Index.BytesOf(id).ToArray(), held);
            Assert.Equal(copied.Index.HashOf(id), hash);
        }

        // A page rewritten after it was hashed is left to the next round, in place as from a copy.
        vms[0].ReadPage(0, page);
        var stale = ContentHash.Compute(page);
        vms[0].WritePageContent(0, 0xABCDEF);
        inPlace.BeginRound(1);
        inPlace.Add(0, vms[0], 0, stale, vms[0].LogGeneration);
        Assert.Equal(1, inPlace.RacedPages);
    }

    [Fact]
    public void A_held_content_is_read_from_another_page_when_the_guest_rewrote_the_first_and_withdrawn_when_none_holds_it()
    {
        var vms = SyntheticFleet.Create(new SyntheticFleetSpec(2, new SyntheticGuestModel { MemoryBytes = 1L << 20 }, 5, OsImages: 1, Applications: 1), runWorkload: false);
        const ulong Shared = 0x5EED, Own = 0x0DD;
        // One content on three pages (two VMs), another on one page only.
        vms[0].WritePageContent(3, Shared);
        vms[0].WritePageContent(9, Shared);
        vms[1].WritePageContent(4, Shared);
        vms[1].WritePageContent(7, Own);
        foreach (var vm in vms) vm.StartDirtyLogging();
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        var page = new byte[Page.Size];
        void Add(int v, int p) { vms[v].ReadPage(p, page); shard.Add(v, vms[v], p, ContentHash.Compute(page), vms[v].LogGeneration); }
        Add(0, 3); Add(0, 9); Add(1, 4); Add(1, 7);
        var plan = shard.Plan([0, 1], 2);
        long shared = plan.ContentsByGroup[0b11].Single(), own = plan.ContentsByGroup[0b10].Single();
        var expected = new byte[Page.Size];
        vms[0].ReadPage(3, expected);

        // The guest rewrites the page the content was found in: it is read from a page that still holds it.
        vms[0].WritePageContent(3, 0xBAD1);
        Assert.True(shard.TryRead(shared, 0b11, page, out var hash));
        Assert.Equal(expected, page);
        Assert.Equal(ContentHash.Compute(expected), hash);
        Assert.Equal(0, shard.StoredContents);

        // Every page that held it rewritten: no bytes are sent that are not the content; it is withdrawn instead.
        vms[0].WritePageContent(9, 0xBAD2);
        vms[1].WritePageContent(4, 0xBAD3);
        Assert.False(shard.TryRead(shared, 0b11, page, out _));
        vms[1].WritePageContent(7, 0xBAD4);
        Assert.False(shard.TryRead(own, 0b10, page, out _));

        // The next round carries the rewritten pages. No page held the withdrawn bytes any more, so the two pages that
        // have them again are a content of their own (nothing to compare them with), sent to both hosts.
        vms[0].WritePageContent(9, Shared);
        vms[1].WritePageContent(4, Shared);
        var dirty = vms.Select(vm => vm.CollectDirtyPages()).ToArray();
        Assert.Equal([3, 9], dirty[0]);
        Assert.Equal([4, 7], dirty[1]);
        shard.BeginRound(1);
        foreach (int p in dirty[0]) Add(0, p);
        foreach (int p in dirty[1]) Add(1, p);
        var next = shard.Plan([0, 1], 2);
        long again = next.ContentsByGroup[0b11].Single();              // the rewritten pages' new contents go one host each
        Assert.Contains((0, 9, again), next.MapsByTarget[0]);
        Assert.Contains((1, 4, again), next.MapsByTarget[1]);
        Assert.True(shard.TryRead(again, 0b11, page, out hash));
        Assert.Equal(expected, page);
        Assert.Equal(ContentHash.Compute(expected), hash);
    }

    [Fact]
    public void Round_0_of_a_staggered_handover_plans_what_several_targets_need_and_each_wave_takes_the_rest_of_its_vms()
    {
        // vm0 on target 0; vm1 and vm2 on target 1. One content on all three VMs (both targets), one on vm1 and vm2
        // (target 1 only), and each VM's own page.
        byte[] everywhere = PageOf(9), sameTarget = PageOf(8);
        var vm0 = new PagesMemory(everywhere, PageOf(1, 1));
        var vm1 = new PagesMemory(everywhere, sameTarget, PageOf(2, 2));
        var vm2 = new PagesMemory(everywhere, sameTarget, PageOf(3, 3));
        var vms = new[] { vm0, vm1, vm2 };
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        for (int v = 0; v < 3; v++)
        {
            shard.Reported(v, vms[v], 0, [.. Enumerable.Range(0, vms[v].PageCount)]);
            for (int p = 0; p < vms[v].PageCount; p++) shard.Add(v, vms[v], p, ContentHash.Compute(vms[v].Pages[p]));
        }
        int[] targetOf = [0, 1, 1];
        var round0 = shard.Plan(targetOf, 2, deferSingleTarget: true);
        long everywhereId = Assert.Single(round0.ContentsByGroup[0b11]);
        Assert.Single(round0.ContentsByGroup);                                    // nothing only one target needs
        Assert.Equal([(0, 0, everywhereId)], round0.MapsByTarget[0]);
        Assert.Equal([(1, 0, everywhereId), (2, 0, everywhereId)], round0.MapsByTarget[1]);
        Assert.Equal(new Dictionary<int, int> { [0] = 1, [1] = 2, [2] = 2 }, round0.DeferredPages);

        // Target 1's wave: vm2 rewrote its own page since round 0, so this round carries it anew (and the deferred map
        // of its old content is dropped); everything else target 1's VMs deferred joins the round.
        vm2.Pages[2] = PageOf(4, 4);
        shard.BeginRound(1);
        shard.Reported(1, vm1, 0, []);
        shard.Reported(2, vm2, 0, [2]);
        shard.Add(2, vm2, 2, ContentHash.Compute(vm2.Pages[2]));
        var wave = shard.Plan(targetOf, 2, releaseDeferredOf: [1, 2]);
        Assert.Empty(wave.MapsByTarget[0]);
        var maps = wave.MapsByTarget[1];
        Assert.Equal(4, maps.Count);
        Assert.Single(maps, m => (m.Vm, m.Page) == (2, 2));
        long sameTargetId = maps.Single(m => (m.Vm, m.Page) == (1, 1)).ContentId;
        Assert.Equal(sameTargetId, maps.Single(m => (m.Vm, m.Page) == (2, 1)).ContentId);
        var sent = Assert.Single(wave.ContentsByGroup, g => g.Key == 0b10).Value;
        Assert.Equal(3, sent.Count);                                              // the shared one once, vm1's own, vm2's new
        Assert.Contains(sameTargetId, sent);
        Assert.Single(wave.ContentsByGroup);
        Assert.Empty(wave.DeferredPages);

        // Target 0's wave later takes vm0's deferred page.
        shard.BeginRound(2);
        shard.Reported(0, vm0, 0, []);
        var last = shard.Plan(targetOf, 2, releaseDeferredOf: [0]);
        Assert.Equal([(0, 1, last.ContentsByGroup[0b01].Single())], last.MapsByTarget[0]);
    }

    [Fact]
    public void A_page_rewritten_between_hashing_and_dedup_is_left_to_the_next_round()
    {
        var vm = new PagesMemory(PageOf(4));
        var stale = ContentHash.Compute(vm.Pages[0]);
        vm.Pages[0] = PageOf(5);
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        shard.Add(0, vm, 0, stale);
        Assert.Equal(1, shard.RacedPages);
        Assert.Equal(0, shard.PagesInRound);
        Assert.Equal(0, shard.Index.Count);
    }

    [Fact]
    public void A_page_that_became_zero_is_mapped_to_the_zero_content_in_later_rounds()
    {
        var vm = new PagesMemory(PageOf(4));
        var shard = new DedupShard(0, 1);
        shard.BeginRound(0);
        shard.Add(0, vm, 0, ContentHash.Compute(vm.Pages[0]));
        shard.Plan([0], 1);
        vm.Pages[0] = new byte[Page.Size];
        shard.BeginRound(1);
        shard.Add(0, vm, 0, ContentHash.OfZeroPage);
        var plan = shard.Plan([0], 1);
        Assert.Equal([(0, 0, ContentIndex.ZeroContentId)], plan.MapsByTarget[0]);
        Assert.Empty(plan.ContentsByGroup);
    }

    [Fact]
    public void Bottom_k_sketch_estimates_set_and_union_sizes()
    {
        var a = new BottomKSketch(512);
        var b = new BottomKSketch(512);
        for (int i = 0; i < 40_000; i++) a.Add(new ContentHash(0, (ulong)i));
        for (int i = 20_000; i < 60_000; i++) b.Add(new ContentHash(0, (ulong)i));
        Assert.InRange(a.EstimateCount(), 40_000 * 0.85, 40_000 * 1.15);
        Assert.InRange(a.Union(b).EstimateCount(), 60_000 * 0.85, 60_000 * 1.15);
        var small = new BottomKSketch(512);
        for (int i = 0; i < 100; i++) small.Add(new ContentHash(1, (ulong)i));
        Assert.Equal(100, small.EstimateCount()); // exact below k
    }
}
