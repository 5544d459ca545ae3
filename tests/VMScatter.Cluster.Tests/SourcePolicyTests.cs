using Akka.Actor;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Source;
using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>The source migration's decisions, as pure functions of what it measured.</summary>
public class SourcePolicyTests
{
    // 300 ms target, 50 ms kept for the handover: 250 ms to send. At 100 MiB/s raw, 250 ms is 6,400 pages. A pause
    // floor at the send budget never asks for a round to shorten a pause that fits (see the floor's own tests).
    private static readonly ConvergencePolicy Policy = new(MaxRounds: 8, DowntimeTargetMs: 300, HandoverReserve: TimeSpan.FromMilliseconds(50), HoldBackAllowed: true,
        PauseSendFloor: TimeSpan.FromMilliseconds(250));
    private const double Rate = 100 << 20;

    private static ConvergenceInput Input(int dirty, int deferred = 0, int waveRounds = 1, double wirePerPage = 1, double dirtySeconds = 1) =>
        new(dirty, dirtySeconds, deferred, wirePerPage, Rate, waveRounds);

    [Fact]
    public void A_rest_that_fits_the_send_budget_stops_and_copies_and_one_over_it_does_another_round()
    {
        Assert.Equal(250, Policy.SendBudgetMs);
        var fits = Policy.Decide(Input(6_400));
        Assert.Equal((true, true, 6_400), (fits.StopAndCopy, fits.Fits, fits.PagesThisRound));
        Assert.StartsWith("converged after 1 pre-copy rounds: 6400 dirty pages left (guests dirtying 6400 pages/s)", fits.Account);
        var over = Policy.Decide(Input(6_401));
        Assert.Equal((false, false, 6_401), (over.StopAndCopy, over.Fits, over.PagesThisRound));
        // Compression counts: half the bytes on the wire, twice the pages fit.
        Assert.True(Policy.Decide(Input(12_800, wirePerPage: 0.5)).Fits);
    }

    [Fact]
    public void A_wave_whose_hypervisor_stopped_a_guest_stops_and_copies_now_fitting_or_not()
    {
        // Deferred pages or a rest over the budget would mean another pre-copy round, inside that guest's pause.
        var fits = Policy.Decide(Input(100, deferred: 50) with { StoppedGuests = 1 });
        Assert.Equal((true, true), (fits.StopAndCopy, fits.Fits));
        Assert.EndsWith("QEMU's own pre-copy stopped 1 of the wave's guests already", fits.Account);
        var over = Policy.Decide(Input(100_000) with { StoppedGuests = 2 });
        Assert.Equal((true, false), (over.StopAndCopy, over.Fits));
        Assert.StartsWith("NOT converged", over.Account);
        Assert.False(Policy.Decide(Input(100, deferred: 50)).StopAndCopy);
    }

    [Fact]
    public void The_round_limit_forces_a_stop_and_copy_that_does_not_fit_and_says_so()
    {
        var forced = Policy.Decide(Input(100_000, waveRounds: 7));
        Assert.Equal((true, false), (forced.StopAndCopy, forced.Fits));
        Assert.StartsWith("NOT converged after 7 pre-copy rounds", forced.Account);
        Assert.False(Policy.Decide(Input(100_000, waveRounds: 6)).StopAndCopy);
        // The handover reserve never takes more than three quarters of the target.
        Assert.Equal(25, (Policy with { DowntimeTargetMs = 100, HandoverReserve = TimeSpan.FromSeconds(1) }).SendBudgetMs);
    }

    [Fact]
    public void A_rest_that_fits_but_sends_longer_than_the_floor_gets_one_more_round_when_that_round_is_expected_to_halve_it()
    {
        var floored = Policy with { PauseSendFloor = TimeSpan.FromMilliseconds(10) };
        // 1,000 pages: 39 ms to send. Dirtied in 0.4 s (2,500 pages/s) by a wave round that carried 14,000 (29 µs a
        // page, faster than the link): the next round takes the link's 39 ms and should leave ~98.
        var input = Input(1_000, dirtySeconds: 0.4) with { PreviousRoundPages = 14_000 };
        var shorter = floored.Decide(input);
        Assert.Equal((false, true, 1_000), (shorter.StopAndCopy, shorter.Fits, shorter.PagesThisRound));
        Assert.EndsWith("; one more pre-copy round first, expected to leave ≈ 98 pages (≈ 4 ms) for the pause", shorter.Account);
        // A last round slower than the link (its cores the limit: 0.4 s for 4,000 pages, 100 µs a page) counts at its
        // own pace: 0.1 s, ~250 pages expected.
        Assert.EndsWith("≈ 250 pages (≈ 10 ms) for the pause", floored.Decide(input with { PreviousRoundPages = 4_000 }).Account);
        // Under the floor (256 pages: 10 ms), there is little left to win: stop and copy.
        Assert.True(floored.Decide(Input(256, dirtySeconds: 0.4) with { PreviousRoundPages = 14_000 }).StopAndCopy);
        Assert.False(floored.Decide(Input(257, dirtySeconds: 0.4) with { PreviousRoundPages = 14_000 }).StopAndCopy);
        // The wave's first round (no previous wave round: round 0 carried everything) may shorten too.
        Assert.False(floored.Decide(input with { PreviousRoundPages = null }).StopAndCopy);
        // The last round did not halve what was left (a working set rewritten as fast as it goes): at its pace the next
        // would not either. Stop and copy.
        Assert.True(floored.Decide(input with { PreviousRoundPages = 1_999 }).StopAndCopy);
        Assert.False(floored.Decide(input with { PreviousRoundPages = 2_000 }).StopAndCopy);
        // Guests dirtying fast enough to refill half of it during the round: stop and copy.
        Assert.True(floored.Decide(input with { DirtySeconds = 0.05 }).StopAndCopy);
        // Never past the round limit, nor with a guest its hypervisor stopped, nor when the rest does not fit at all.
        Assert.Equal((true, true), (floored.Decide(input with { WaveRounds = 7 }).StopAndCopy, floored.Decide(input with { WaveRounds = 7 }).Fits));
        Assert.True(floored.Decide(input with { StoppedGuests = 1 }).StopAndCopy);
        var over = floored.Decide(Input(7_000, dirtySeconds: 10));
        Assert.Equal((false, false), (over.StopAndCopy, over.Fits));
        Assert.DoesNotContain("one more pre-copy round first", over.Account);
        // At the send budget the floor never shortens: the policy of the tests above.
        Assert.True(Policy.Decide(input).StopAndCopy);
    }

    [Fact]
    public void The_pause_floor_is_10_ms_unless_configured()
    {
        // (HOCON has no negative durations: Akka's parser refuses "-5ms" itself.)
        Assert.Equal(TimeSpan.FromMilliseconds(10), SourceSettings.From(NodeConfig.Build(null, "")).PauseSendFloor);
        Assert.Equal(TimeSpan.FromMilliseconds(250), SourceSettings.From(NodeConfig.Build(null, "vmscatter.source.pause-send-floor = 250ms")).PauseSendFloor);
    }

    [Fact]
    public void A_stop_and_copy_whose_pause_finds_more_than_fits_goes_as_one_more_round_or_at_the_round_limit_says_not_converged()
    {
        var decided = Input(1_000);
        Assert.Equal((true, false), (Policy.AtPause(decided, 6_400).Fits, Policy.AtPause(decided, 6_400).AnotherRound));
        // 20,000 pages * 4 KiB at 100 MiB/s: 781 ms against the 250 ms budget.
        var over = Policy.AtPause(decided, 20_000);
        Assert.Equal((false, true), (over.Fits, over.AnotherRound));
        Assert.Equal("the pause after 1 pre-copy rounds found 20000 dirty pages (decided on 1000), ≈ 781 ms to send against 250 ms of a 300 ms target: " +
            "the VMs run again and it goes as one more pre-copy round", over.Account);
        // At the limit a stop-and-copy is forced anyway: one more round would make 9 of 8.
        var atLimit = Policy.AtPause(Input(1_000, waveRounds: 7), 20_000);
        Assert.Equal((false, false), (atLimit.Fits, atLimit.AnotherRound));
        Assert.EndsWith("NOT converged: the round limit (8) forces it", atLimit.Account);
        Assert.True(Policy.AtPause(Input(1_000, waveRounds: 6), 20_000).AnotherRound);
        // The deferred pages the round also carries count, as in the decision.
        Assert.StartsWith("wave 2 of 3: the pause after 1 pre-copy rounds found 7000 dirty pages (decided on 3000)", Policy.AtPause(Input(1_000, deferred: 2_000) with { WaveLabel = "wave 2 of 3: " }, 7_000).Account);
    }

    [Fact]
    public void A_pause_that_overran_stays_in_the_account_and_one_forced_at_the_limit_makes_the_run_not_converged()
    {
        var account = new RoundAccounting(assumedRateBytesPerSecond: 1);
        account.RoundPlanned(100);
        account.WaveDecided(new ConvergenceDecision(true, true, false, 10, "converged after 1 pre-copy rounds"), 1);
        account.RoundPlanned(10);
        account.PauseChecked(new PauseCheck(false, true, "the pause found 900: one more pre-copy round"), 900);
        Assert.Equal(900, account.LastRoundPages); // what the wave's next decision takes as its previous round
        account.WaveDecided(new ConvergenceDecision(true, true, false, 5, "converged after 2 pre-copy rounds"), 2);
        account.RoundPlanned(5);
        account.PauseChecked(new PauseCheck(true, false, "fits"), 7);
        var counters = (new SenderCounters(1, 2, 3, 4, 5, 6, 7), new ShardCounters(8, 9, 10, 11));
        var stats = account.Stats(counters.Item1, counters.Item2, waves: 1, dataPlaneRounds: 3);
        Assert.Equal((true, "converged after 2 pre-copy rounds; earlier, the pause found 900: one more pre-copy round", 3), (stats.Converged, stats.Convergence, stats.Rounds));
        Assert.Equal([100, 900, 7], stats.DirtyPagesPerRound);

        account.PauseChecked(new PauseCheck(false, false, "the pause found 50: NOT converged: the round limit (3) forces it"), 50);
        stats = account.Stats(counters.Item1, counters.Item2, waves: 1, dataPlaneRounds: 3);
        Assert.False(stats.Converged);
        Assert.StartsWith("the pause found 50: NOT converged: the round limit (3) forces it; earlier, the pause found 900", stats.Convergence);
    }

    [Fact]
    public void A_waves_rewritten_pages_wait_for_its_stop_and_copy_only_when_that_round_can_take_them()
    {
        // 20,000 deferred pages do not fit: a pre-copy round. 1,000 dirty pages at 1,000 pages/s, and the round sending
        // the deferred ones takes 20000 * 4 KiB / 100 MiB/s = 0.78 s: ~1,780 expected by then, which fits 6,400.
        var held = Policy.Decide(Input(1_000, deferred: 20_000));
        Assert.Equal((false, true, 20_000), (held.StopAndCopy, held.HoldBack, held.PagesThisRound));
        // Dirtying 10,000 pages/s, ~17,800 would be expected: they go now, with the deferred ones.
        var sent = Policy.Decide(Input(10_000, deferred: 20_000));
        Assert.Equal((false, false, 30_000), (sent.StopAndCopy, sent.HoldBack, sent.PagesThisRound));
        Assert.False((Policy with { HoldBackAllowed = false }).Decide(Input(1_000, deferred: 20_000)).HoldBack);
    }

    [Fact]
    public void Staggered_waves_are_one_per_target_used_in_index_order_and_together_is_one()
    {
        int[] targetOf = [2, 0, 2, 0, 3];
        var staggered = WavePlan.Of(targetOf, HandoverMode.Staggered);
        Assert.Equal([0b1UL, 0b100, 0b1000], staggered.Select(w => w.Targets));
        Assert.Equal([[1, 3], [0, 2], [4]], staggered.Select(w => w.Vms.ToArray()));
        Assert.Equal([0, 1, 2], staggered.Select(w => w.Index));
        var together = Assert.Single(WavePlan.Of(targetOf, HandoverMode.Together));
        Assert.Equal(0b1101UL, together.Targets);
        Assert.Equal([0, 1, 2, 3, 4], together.Vms);
    }

    [Fact]
    public void The_account_keeps_the_best_round_rate_and_the_convergence_of_a_wave_that_did_not_converge()
    {
        var account = new RoundAccounting(assumedRateBytesPerSecond: 1);
        account.RoundEnded(2, 200);  // the first measured round replaces the assumption
        Assert.Equal(100, account.MeasuredRate);
        account.RoundEnded(1, 50);   // a small round does not lower it
        account.RoundEnded(0.5, 100);
        Assert.Equal(200, account.MeasuredRate);
        var fits = new ConvergenceDecision(true, true, false, 10, "wave 1 of 2: converged");
        var forced = new ConvergenceDecision(true, false, false, 10, "wave 2 of 2: NOT converged");
        account.WaveDecided(new ConvergenceDecision(false, false, false, 10, "a pre-copy round"), 1);
        account.WaveDecided(forced, 3);
        account.WaveDecided(fits, 1);
        var stats = account.Stats(new SenderCounters(1, 2, 3, 4, 5, 6, 7), new ShardCounters(8, 9, 10, 11), waves: 2, dataPlaneRounds: 5);
        Assert.Equal((false, "wave 2 of 2: NOT converged", 4), (stats.Converged, stats.Convergence, stats.Rounds));
        Assert.Equal([2, 1, 0.5], stats.RoundSeconds);
        Assert.Equal((1L, 7L, 8L, 11L, 2, 5), (stats.BytesSent, stats.ContentsWithdrawn, stats.DistinctPages, stats.RacedPages, stats.Waves, stats.DataPlaneRounds));
    }

    [Fact]
    public void A_built_round_sends_shared_contents_before_sole_ones_and_maps_every_page_to_its_target()
    {
        var shard0 = new ShardRoundPlan(
            new Dictionary<ulong, IReadOnlyList<long>> { [0b11] = [2, 4], [0b01] = [6] },
            [[(0, 1, 2), (0, 2, 6)], [(1, 1, 4)]]) { SoleContents = new HashSet<long> { 6 } };
        var shard1 = new ShardRoundPlan(
            new Dictionary<ulong, IReadOnlyList<long>> { [0b10] = [3] },
            [[], [(1, 5, 3)]]) { SoleContents = new HashSet<long> { 3 } };
        var built = RoundTransferBuilder.Build(4, [(1, shard1), (0, shard0)], targetCount: 2, stopAndCopy: false, [], activeTargets: 0b11, finalTargets: 0b01);
        var t = built.Transfer;
        Assert.Equal((4, false, 0b11UL, 0UL), (t.Round, t.Final, t.ActiveTargets, t.FinalTargets));
        Assert.Equal(0b11UL, t.Groups[0].TargetMask);
        Assert.Equal([2L, 4L], t.Groups[0].ContentIds);
        Assert.Equal([6L, 3L], t.Groups.Skip(1).SelectMany(g => g.ContentIds).Order().Reverse());
        Assert.Equal([new PageMap(0, 1, 2), new PageMap(0, 2, 6)], t.MapsByTarget[0]);
        Assert.Equal([new PageMap(1, 1, 4), new PageMap(1, 5, 3)], t.MapsByTarget[1]);
        Assert.True(built.GroupSwitches >= built.GroupSwitchesLowerBound);
        var final = RoundTransferBuilder.Build(5, [(0, shard0), (1, shard1)], 2, stopAndCopy: true, [], 0b11, finalTargets: 0b01).Transfer;
        Assert.Equal((true, 0b01UL), (final.Final, final.FinalTargets));
    }
}

/// <summary>A shard is lent to the round's send and touched by nothing else until it is given back.</summary>
public class DedupShardLeaseTests : Akka.TestKit.Xunit2.TestKit
{
    public DedupShardLeaseTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    [Fact]
    public void A_lent_shard_stashes_the_next_rounds_batches_until_the_lease_returns()
    {
        var model = new SyntheticGuestModel { MemoryBytes = 64 * Page.Size, DirtyPagesPerSecond = 0 };
        using var vm = SyntheticFleet.Create(new SyntheticFleetSpec(1, model, 3), runWorkload: false).Single();
        var parent = CreateTestProbe();
        var shard = parent.ChildActorOf(Props.Create(() => new DedupShardActor(0, 1, true, new IGuestMemory[] { vm })));
        // A non-zero page, hashed under the write log as the VM actor does it (the shard proves it unwritten since).
        vm.StartDirtyLogging();
        int generation = vm.LogGeneration;
        var page = new byte[Page.Size];
        int p = Enumerable.Range(0, vm.PageCount).First(i => { vm.ReadPage(i, page); return !Page.IsZero(page); });
        var hash = ContentHash.Compute(page);
        shard.Tell(new PageHashBatch(0, 0, [p], [hash], generation, 1, [p]), parent.Ref);
        Assert.Equal(1, parent.ExpectMsg<ShardRoundHashed>().Pages);
        shard.Tell(new PlanShardRound(0, [0], 1), parent.Ref);
        var planned = parent.ExpectMsg<ShardRoundPlanned>();
        Assert.Equal(1, planned.Counters.DistinctContents);

        // Round 1's batch arrives while round 0 is still being sent: the shard does not begin round 1 under the reader.
        // Identify is answered by the actor cell in mailbox order, so its answer coming first proves the batch was held.
        shard.Tell(new PageHashBatch(1, 0, [p], [hash], generation, 1, [p]), parent.Ref);
        shard.Tell(new Identify(1), parent.Ref);
        Assert.Equal(1, parent.ExpectMsg<ActorIdentity>().MessageId);
        shard.Tell(new ReturnShardLease(0), parent.Ref);
        Assert.Equal(new ShardRoundHashed(1, 0, 1, 1), parent.ExpectMsg<ShardRoundHashed>());
        var reader = new LeasedShardReader([(0, planned.Lease)], skipRewritten: true);
        Assert.True(reader.TryRead(planned.Plan.ContentsByGroup[1][0], 1, page, out var read));
        Assert.Equal(hash, read);
    }
}
