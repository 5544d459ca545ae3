using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// A rest that fits the downtime target but takes longer than vmscatter.source.pause-send-floor to send gets one more
/// pre-copy round first, when the wave's last round shrank what was left enough that this one should halve it: the
/// pause then sends what that round left, not the rest.
/// </summary>
public class ShorterPauseTests
{
    // A 100 ms target keeps 50 ms to send. 1,800 fresh pages do not fit it (about 0.6 s at 100 Mbit/s uncompressed):
    // a pre-copy round. The 100 written while it runs fit (a 18th of that) and are over a 1 ms floor.
    private static readonly int[] Writes = [1_800, 100];

    private static async Task<MigrationReport> MigrateAsync(TimeSpan floor)
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, OneTargetRun.Idle, 47));
        var writing = new WritingVm(fleet[0], Writes);
        // Without pages set aside during round 0, every collection after it is a round's decision.
        var options = TestConfig.Options() with
        {
            DowntimeTargetMs = 100, LinkBitsPerSecond = 100_000_000, MaxRounds = 8, Handover = HandoverMode.Together, SetAsideDirty = false,
        };
        var report = await OneTargetRun.MigrateAsync([writing, fleet[1]], options, $"vmscatter.source.pause-send-floor = {floor.TotalMilliseconds}ms");
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
        return report;
    }

    [Fact]
    public async Task A_rest_over_the_floor_goes_in_one_more_pre_copy_round_and_the_pause_sends_only_what_that_round_left()
    {
        var report = await MigrateAsync(TimeSpan.FromMilliseconds(1));
        Assert.True(report.Verified, TestConfig.Why(report));
        // Round 0, the 1,800 pages, the 100 in a round of their own, then a stop-and-copy with nothing written since.
        Assert.True(report.Rounds == 4, OneTargetRun.Describe(report));
        Assert.True(report.DirtyPagesPerRound[2] >= Writes[1] && report.DirtyPagesPerRound[3] < Writes[1], OneTargetRun.Describe(report));
        Assert.StartsWith("converged after 3 pre-copy rounds", report.Convergence);

        // With the floor at the send budget a pause only has to fit: the 100 pages go in the stop-and-copy.
        var within = await MigrateAsync(TimeSpan.FromMilliseconds(50));
        Assert.True(within.Verified, TestConfig.Why(within));
        Assert.True(within.Rounds == 3 && within.DirtyPagesPerRound[2] >= Writes[1], OneTargetRun.Describe(within));
        Assert.StartsWith("converged after 2 pre-copy rounds", within.Convergence);
    }

    /// <summary>Writes <c>writes[k]</c> fresh pages just before its k-th dirty-page collection (the k-th decision after round 0).</summary>
    private sealed class WritingVm(SyntheticVm vm, int[] writes) : ForwardingVm(vm)
    {
        private int _collections;

        public override int[] CollectDirtyPages()
        {
            int k = _collections++;
            if (k < writes.Length) WriteFresh(writes[k], 0xF100 + k);
            return Inner.CollectDirtyPages();
        }
    }
}
