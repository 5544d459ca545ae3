using Akka.Actor;
using Akka.TestKit;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Source;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

public class SourceVmActorTests : Akka.TestKit.Xunit2.TestKit
{
    public SourceVmActorTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    private static readonly SyntheticGuestModel Model = new() { MemoryBytes = 1 << 20, DirtyPagesPerSecond = 0, WritableWorkingSetPages = 32 };

    [Fact]
    public void Round_zero_routes_every_page_to_the_shard_owning_its_hash_and_stop_and_copy_pauses_first()
    {
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, Model, 5), runWorkload: false).Single();
        var shards = Enumerable.Range(0, 4).Select(_ => CreateTestProbe()).ToArray();
        var actor = Sys.ActorOf(Props.Create(() => new SourceVmActor(0, vm, shards.Select(s => s.Ref).ToArray(), sketchSize: 16)));

        actor.Tell(new CollectDirtyPages(0));
        Assert.Equal(new DirtyPagesCollected(0, 0, 256), ExpectMsg<DirtyPagesCollected>());
        actor.Tell(new HashRound(0, StopAndCopy: false, 1));
        var seen = new HashSet<int>();
        var page = new byte[Page.Size];
        for (int s = 0; s < 4; s++)
        {
            var batch = shards[s].ExpectMsg<PageHashBatch>();
            Assert.Equal((0, 0), (batch.Round, batch.VmIndex));
            for (int i = 0; i < batch.Pages.Length; i++)
            {
                vm.ReadPage(batch.Pages[i], page);
                if (Page.IsZero(page)) Assert.Equal(0, s); // zero pages are counted by shard 0 in round 0
                else Assert.Equal(s, ContentIndex.ShardOf(batch.Hashes[i], 4));
                Assert.True(seen.Add(batch.Pages[i]));
            }
        }
        Assert.Equal(256, seen.Count);
        // After its batches, the VM's profile for placement: counts and the sketch of its distinct contents.
        var profile = ExpectMsg<VmContentsProfiled>();
        var contents = Enumerable.Range(0, 256).Select(p => { vm.ReadPage(p, page); return (Zero: Page.IsZero(page), Hash: ContentHash.Compute(page)); }).ToArray();
        var expectedSketch = new BottomKSketch(16);
        foreach (var c in contents.Where(c => !c.Zero)) expectedSketch.Add(c.Hash);
        Assert.Equal((256, contents.Count(c => !c.Zero), contents.Count(c => c.Zero), contents.Where(c => !c.Zero).Select(c => c.Hash).Distinct().Count()),
            (profile.Pages, profile.NonZeroPages, profile.ZeroPages, profile.DistinctContents));
        Assert.Equal(expectedSketch.Values, profile.Sketch);

        vm.WritePageContent(3, 0x1234);
        actor.Tell(new CollectDirtyPages(1));
        Assert.Equal(1, ExpectMsg<DirtyPagesCollected>().Pages);
        vm.WritePageContent(9, 0x5678); // written after the collection, before the pause: must still be sent
        long asked = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        actor.Tell(new HashRound(1, StopAndCopy: true, 1));
        var paused = ExpectMsg<VmPaused>();
        Assert.Equal(VmRunState.Paused, vm.State);
        Assert.NotEmpty(paused.DeviceState);
        // The pause is timed from the moment it was asked for, not after the collection and capture that follow it.
        Assert.InRange(paused.PausedAtUnixMs, asked, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        var routed = shards.SelectMany(s => s.ExpectMsg<PageHashBatch>().Pages).Order().ToArray();
        Assert.Equal([3, 9], routed);
        // The source checks the stop-and-copy's rest against this count: the page written after the collection is in it.
        Assert.Equal(2, paused.Pages);
        // The full-memory digest starts as soon as the VM is paused, alongside the last round.
        var digest = ExpectMsg<SourceDigestComputed>();
        Assert.Equal(MemoryDigest.Compute(vm, paused.DeviceState.AsSpan()), digest.Digest);

        actor.Tell(new ResumeVm("test"));
        ExpectMsg<VmResumedHere>();
        Assert.Equal(VmRunState.Running, vm.State);
    }

    [Fact]
    public void Pages_set_aside_before_round_0_is_planned_come_back_in_round_1_with_what_was_written_since()
    {
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, Model, 6), runWorkload: false).Single();
        var shards = Enumerable.Range(0, 2).Select(_ => CreateTestProbe()).ToArray();
        var actor = Sys.ActorOf(Props.Create(() => new SourceVmActor(0, vm, shards.Select(s => s.Ref).ToArray(), sketchSize: 16)));
        actor.Tell(new CollectDirtyPages(0));
        ExpectMsg<DirtyPagesCollected>();

        vm.WritePageContent(4, 0x11);
        vm.WritePageContent(7, 0x22);
        actor.Tell(SetAsideDirtyPages.Instance);
        var setAside = ExpectMsg<DirtyPagesSetAside>();
        Assert.Equal([4, 7], setAside.Pages.Order());

        vm.WritePageContent(7, 0x33); // rewritten again, and a new one
        vm.WritePageContent(12, 0x44);
        actor.Tell(new CollectDirtyPages(1));
        Assert.Equal(3, ExpectMsg<DirtyPagesCollected>().Pages);
        actor.Tell(new HashRound(1, StopAndCopy: false, 1));
        var routed = shards.SelectMany(s => s.ExpectMsg<PageHashBatch>().Pages).Order().ToArray();
        Assert.Equal([4, 7, 12], routed);

        // Carried once: the round after has only what was written since.
        actor.Tell(new CollectDirtyPages(2));
        Assert.Equal(0, ExpectMsg<DirtyPagesCollected>().Pages);
    }
}
