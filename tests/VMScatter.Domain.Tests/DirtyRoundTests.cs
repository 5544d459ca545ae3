using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>Pre-copy rounds as the source runs them: dirty log → hash → dedup → plan, one round after another.</summary>
public class DirtyRoundTests
{
    private static (IReadOnlyList<long> Contents, IReadOnlyList<(int Vm, int Page, long ContentId)> Maps) Round(DedupShard shard, SyntheticVm vm, int round, IEnumerable<int> pages)
    {
        shard.BeginRound(round);
        var buffer = new byte[Page.Size];
        foreach (int p in pages)
        {
            vm.ReadPage(p, buffer);
            shard.Add(0, vm, p, ContentHash.Compute(buffer), vm.LogGeneration);
        }
        var plan = shard.Plan([0], 1);
        return (plan.ContentsByGroup.Values.SelectMany(c => c).ToArray(), plan.MapsByTarget[0]);
    }

    [Fact]
    public void A_page_rewritten_during_round_k_goes_in_round_k_plus_1_and_not_again_if_untouched()
    {
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, new SyntheticGuestModel { MemoryBytes = 1 << 20, DirtyPagesPerSecond = 0 }, 3), runWorkload: false).Single();
        var shard = new DedupShard(0, 1);
        vm.StartDirtyLogging();
        var round0 = Round(shard, vm, 0, Enumerable.Range(0, vm.PageCount));
        Assert.Equal(shard.Index.Count, round0.Contents.Count);

        vm.WritePageContent(17, 0xFEED);                    // during round 0
        var dirty1 = vm.CollectDirtyPages();
        Assert.Equal([17], dirty1);
        var round1 = Round(shard, vm, 1, dirty1);
        var page = new byte[Page.Size];
        vm.ReadPage(17, page);
        long id = Assert.Single(round1.Maps).ContentId;
        Assert.Equal((0, 17), (round1.Maps[0].Vm, round1.Maps[0].Page));
        Assert.Equal([id], round1.Contents);                  // new content: its bytes go
        var sent = new byte[Page.Size];
        Assert.True(shard.TryRead(id, 1, sent, out var hash));       // read from the guest page, which still holds it
        Assert.Equal(page, sent);
        Assert.Equal(ContentHash.Compute(page), hash);

        var dirty2 = vm.CollectDirtyPages();                 // untouched since
        Assert.Empty(dirty2);
        var round2 = Round(shard, vm, 2, dirty2);
        Assert.Empty(round2.Maps);
        Assert.Empty(round2.Contents);

        vm.WritePageContent(40, 0xFEED);                     // same content as page 17, which the target holds
        var round3 = Round(shard, vm, 3, vm.CollectDirtyPages());
        Assert.Equal([(0, 40, id)], round3.Maps);             // sent as a reference only
        Assert.Empty(round3.Contents);
    }
}
