using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The downtime target is a promise: a guest whose dirty rate jumps during the final round (after the stop-and-copy
/// was decided, before its pause) makes that round run as one more pre-copy round, or, at the round limit, a report
/// that says it did not converge, with the numbers. A report never claims converged with a pause over the target.
/// </summary>
public class DowntimePromiseTests
{
    private const int TargetMs = 100;
    // 1,500 fresh 4 KiB pages at 100 Mbit/s: ~490 ms to send, ten times the 50 ms send budget of a 100 ms target.
    private const int BurstPages = 1_500;

    private static MigrationOptions Options(int maxRounds = 8, NonConvergencePolicy policy = NonConvergencePolicy.Force) =>
        // One wave of all targets and idle guests: nothing is deferred past round 0, so the first decision stops and copies.
        TestConfig.Options() with
        {
            DowntimeTargetMs = TargetMs, LinkBitsPerSecond = 100_000_000, MaxRounds = maxRounds, NonConvergence = policy, Handover = HandoverMode.Together,
        };

    /// <summary>The promise, whatever else happened: converged means every pause handed over was within the target.</summary>
    private static void AssertPromiseKept(MigrationReport report)
    {
        if (report.Converged) Assert.All(report.PerVm.Where(v => v.HandedOver), v => Assert.True(v.DowntimeMs <= TargetMs, $"{v.Id} paused {v.DowntimeMs} ms"));
        else Assert.StartsWith("NOT converged", report.Convergence);
    }

    [Fact]
    public void A_report_is_converged_only_when_every_vm_handed_over_paused_within_the_target_and_names_those_that_did_not()
    {
        static VmReport Vm(string id, double ms, bool handedOver = true) => new(id, "target-1", handedOver, handedOver, ms, "d", handedOver ? "d" : null, null);
        Assert.Equal((true, "converged after 1 pre-copy rounds"), MigrationReportBuilder.Convergence(true, "converged after 1 pre-copy rounds", [Vm("a", 300), Vm("b", 120)], 300));
        // The compile fleet of issue 16: decided as fitting, paused up to 471 ms against 300. A VM not handed over did not pause for a handover.
        var (converged, account) = MigrationReportBuilder.Convergence(true, "converged after 1 pre-copy rounds",
            [Vm("a", 471.4), Vm("b", 299), Vm("c", 344), Vm("d", 900, handedOver: false)], 300);
        Assert.False(converged);
        Assert.Equal("NOT converged: VM a paused 471 ms, VM c paused 344 ms, over the 300 ms downtime target; the source: converged after 1 pre-copy rounds", account);
        // A decision that did not fit stays not converged whatever the pauses.
        Assert.Equal((false, "NOT converged after 7"), MigrationReportBuilder.Convergence(false, "NOT converged after 7", [Vm("a", 10)], 300));
    }

    [Fact]
    public async Task A_burst_of_writes_as_the_stop_and_copy_begins_makes_it_one_more_pre_copy_round()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, OneTargetRun.Idle, 41));
        var bursting = new BurstingVm(fleet[0], BurstPages, bursts: 1);
        var report = await OneTargetRun.MigrateAsync([bursting, fleet[1]], Options());

        Assert.True(report.Verified, TestConfig.Why(report));
        Assert.Equal(1, bursting.BurstsWritten);
        // Round 0, the stop-and-copy that found the burst at its pause and went as a pre-copy round, the real one.
        Assert.True(3 == report.Rounds, OneTargetRun.Describe(report));
        Assert.True(report.DirtyPagesPerRound[^2] >= BurstPages, string.Join("/", report.DirtyPagesPerRound));
        Assert.True(report.DirtyPagesPerRound[^1] < BurstPages, string.Join("/", report.DirtyPagesPerRound));
        Assert.Matches($@"the pause after 1 pre-copy rounds found \d{{4,}} dirty pages \(decided on \d+\), ≈ \d+ ms to send against 50 ms of a {TargetMs} ms target: the VMs run again and it goes as one more pre-copy round", report.Convergence);
        AssertPromiseKept(report);
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
    }

    [Fact]
    public async Task A_burst_at_every_pause_up_to_the_round_limit_is_reported_not_converged_with_the_numbers_or_aborted()
    {
        foreach (var policy in new[] { NonConvergencePolicy.Force, NonConvergencePolicy.Abort })
        {
            var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, OneTargetRun.Idle, 43));
            var bursting = new BurstingVm(fleet[0], BurstPages, bursts: int.MaxValue);
            var report = await OneTargetRun.MigrateAsync([bursting, fleet[1]], Options(maxRounds: 3, policy));

            // The first pause ran as a pre-copy round; the second is at the limit (3 rounds): it cannot be put off.
            Assert.True(2 == bursting.BurstsWritten, OneTargetRun.Describe(report));
            Assert.False(report.Converged);
            if (policy == NonConvergencePolicy.Force)
            {
                Assert.True(report.Verified, TestConfig.Why(report));
                Assert.Equal(3, report.Rounds);
                Assert.Matches(@"the pause after 2 pre-copy rounds found \d{4,} dirty pages \(decided on \d+\), ≈ \d+ ms to send against 50 ms of a 100 ms target: NOT converged: the round limit \(3\) forces it", report.Convergence);
                AssertPromiseKept(report);
            }
            else
            {
                Assert.False(report.Verified);
                Assert.Contains("the round limit (3) forces it; aborted by policy", report.Error);
                Assert.All(report.PerVm, v => Assert.False(v.HandedOver));
                Assert.All(fleet, vm => Assert.Equal(VmRunState.Running, vm.State));
            }
        }
    }

    /// <summary>
    /// A synthetic guest that writes <c>pages</c> fresh pages as it is asked to pause, the first <c>bursts</c> times:
    /// its dirty rate jumps after the stop-and-copy was decided on the rest collected before, and the pause finds it.
    /// </summary>
    private sealed class BurstingVm(SyntheticVm vm, int pages, int bursts) : ForwardingVm(vm)
    {
        private int _burstsWritten;

        public int BurstsWritten => Volatile.Read(ref _burstsWritten);

        public override Task PauseAsync(CancellationToken cancellationToken = default)
        {
            int burst = _burstsWritten;
            if (burst < bursts)
            {
                WriteFresh(pages, 0x5EED + burst);
                Interlocked.Increment(ref _burstsWritten);
            }
            return Inner.PauseAsync(cancellationToken);
        }
    }
}
