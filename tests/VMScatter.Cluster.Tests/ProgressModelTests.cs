using VMScatter.Cli.View;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.DataPlane;
using VMScatter.Domain;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>The live progress view, folded from event sequences like the demo's (cumulative counters, a report at each round's start, end and every interval).</summary>
public class ProgressModelTests
{
    private const long MiB = 1 << 20;
    private static readonly MigrationId Id = MigrationId.Create("0f6b1c9e-3a51-4c55-9d1e-6a2b8f0e7c11");
    private static readonly HostId T1 = HostId.Create("target-1"), T2 = HostId.Create("target-2");

    private static MigrationPlaced Placed() => new(Id, "traffic-aware",
        new Dictionary<VmId, HostId> { [VmId.Create("vm-000")] = T1, [VmId.Create("vm-001")] = T1, [VmId.Create("vm-002")] = T2, [VmId.Create("vm-003")] = T2 },
        1000, 1000, GroupTransport.RelayChain);

    private static MigrationProgress P(int round, long bytes, long records, long pages, int wave = -1, HostId? target = null, bool stopAndCopy = false, long planned = 0,
        MigrationPhase phase = MigrationPhase.Transferring) =>
        new(Id, phase, round, bytes, records, pages, wave, target is { } t ? [t] : [], stopAndCopy, planned);

    private static ProgressModel Fold(params (double At, IVmScatterProtocol Message)[] events) =>
        events.Aggregate(ProgressModel.Empty, (m, e) => m.Apply(e.Message, e.At));

    [Fact]
    public void A_round_counts_its_own_bytes_when_the_cumulative_counter_crosses_rounds()
    {
        // Round 0 ends at 34 MiB; round 1 starts with 0.25 MiB already out, and its collection ticks repeat the old total.
        var model = Fold(
            (0.0, new MigrationAccepted(Id, 4, 2)), (0.1, Placed()),
            (0.2, P(0, 0, 0, 500_000, planned: 16_000)), (0.3, P(0, 20 * MiB, 9_000, 500_000, planned: 16_000)), (0.4, P(0, 34 * MiB, 16_000, 500_000, planned: 16_000)),
            (0.5, P(1, 34 * MiB + MiB / 4, 16_000, 50_000, 0, T1)), (0.7, P(1, 60 * MiB, 28_000, 50_000, 0, T1, planned: 30_000)));

        Assert.Equal([0, 1], model.Rounds.Select(r => r.Round));
        Assert.True(model.Rounds[0].Closed);
        Assert.Equal(34 * MiB, model.Rounds[0].Bytes); // not the 34.25 MiB the counter showed at round 1's first report
        Assert.Equal(16_000, model.Rounds[0].Records);
        Assert.Equal(26 * MiB, model.Rounds[1].Bytes); // 60 - 34, not 60
        Assert.Equal(12_000, model.Rounds[1].Records);
        Assert.False(model.Rounds[1].Closed);
        Assert.Equal(60 * MiB, model.BytesSent);
    }

    [Fact]
    public void The_rate_is_over_a_sliding_window_and_the_eta_from_the_records_left_in_the_round()
    {
        // 10 MiB and 1,000 records a second for 4 s: the 2 s window sees exactly that rate.
        var events = new List<(double, IVmScatterProtocol)> { (0, Placed()) };
        for (int s = 0; s <= 4; s++) events.Add((s, P(1, s * 10 * MiB, s * 1_000, 20_000, 0, T1, planned: 10_000)));
        var model = Fold([.. events]);

        var rate = model.Rate(4)!.Value;
        Assert.Equal(10.0 * MiB, rate.Bytes, 3);
        Assert.Equal(1_000, rate.Records, 3);
        var row = model.View(4).Rows.Single(r => r.Wave == 0);
        Assert.Equal(WaveState.PreCopy, row.State);
        Assert.Equal(0.4, row.Fraction!.Value, 3); // 4,000 of the 10,000 records the round plans
        Assert.Equal(6.0, row.Eta!.Value.TotalSeconds, 3); // 6,000 left at 1,000/s
        Assert.Equal(40 * MiB, row.RoundBytes);

        // Nothing new for a second: the window's rate falls (it halves over the 2 s), and the ETA grows.
        var later = model.View(5).Rows.Single(r => r.Wave == 0);
        Assert.Equal(5.0 * MiB, later.BytesPerSecond!.Value, 3);
        Assert.Equal(12.0, later.Eta!.Value.TotalSeconds, 3);
        // Only the samples the window needs are kept.
        Assert.True(model.Samples.Count <= 4);
    }

    [Fact]
    public void Before_the_round_is_built_its_progress_is_counted_against_its_dirty_pages()
    {
        var model = Fold((0, Placed()), (1, P(3, 0, 0, 2_000, 1, T2)), (2, P(3, 4 * MiB, 500, 2_000, 1, T2)));
        var row = model.View(2).Rows.Single(r => r.Wave == 1);
        Assert.Equal(0.25, row.Fraction!.Value, 3);
        // Round 0 has no such fallback: its pages are every page hashed, most never sent.
        Assert.Null(ProgressModel.RoundFraction(Fold((0, P(0, MiB, 100, 500_000))).Rounds[0]));
    }

    [Fact]
    public void Waves_go_from_waiting_to_pre_copy_stop_and_copy_verifying_and_handed_over()
    {
        var events = new List<(double, IVmScatterProtocol)>
        {
            (0, new MigrationAccepted(Id, 4, 2)), (0.1, Placed()),
        };
        var model = Fold([.. events]);
        var rows = model.View(0.1).Rows;
        Assert.Equal(["round 0 · every target group", "target-1 · its wave not begun", "target-2 · its wave not begun"], rows.Select(r => r.Label));
        Assert.Equal("hashing + dedup", ProgressText.State(rows[0], MigrationPhase.Analysing));

        model = model.Apply(P(0, 10 * MiB, 1_000, 500_000, planned: 2_000), 0.2)
            .Apply(P(1, 10 * MiB, 1_000, 40_000, 0, T1), 0.3)
            .Apply(P(1, 30 * MiB, 9_000, 40_000, 0, T1, planned: 30_000), 0.4);
        rows = model.View(0.4).Rows;
        Assert.Equal([WaveState.HandedOver, WaveState.PreCopy, WaveState.Waiting], rows.Select(r => r.State));
        Assert.Equal("sent", ProgressText.State(rows[0], model.Phase)); // round 0 hands nothing over itself
        Assert.Equal("wave 1/2 · target-1", rows[1].Label);

        model = model.Apply(P(2, 31 * MiB, 9_100, 1_000, 0, T1, stopAndCopy: true, planned: 1_000), 0.5);
        Assert.Equal(WaveState.StopAndCopy, model.View(0.5).Rows[1].State);
        Assert.Equal(2, model.View(0.5).Rows[1].Rounds);
        Assert.Equal(MiB, model.View(0.5).Rows[1].RoundBytes);
        Assert.Equal(21 * MiB, model.View(0.5).Rows[1].WaveBytes);

        // The next wave starts; wave 1's VMs are still being verified, then handed over one by one.
        model = model.Apply(P(3, 32 * MiB, 9_200, 40_000, 1, T2, phase: MigrationPhase.HandingOver), 0.6);
        rows = model.View(0.6).Rows;
        Assert.Equal(["round 0 · every target group", "wave 1/2 · target-1", "wave 2/2 · target-2"], rows.Select(r => r.Label));
        Assert.Equal([WaveState.HandedOver, WaveState.Verifying, WaveState.PreCopy], rows.Select(r => r.State));
        model = model.Apply(new VmHandedOver(Id, VmId.Create("vm-000"), T1, "d", 100), 0.7);
        Assert.Equal("verifying, handed over 1/2", ProgressText.State(model.View(0.7).Rows[1], model.Phase));
        model = model.Apply(new VmHandedOver(Id, VmId.Create("vm-001"), T1, "d", 100), 0.8);
        Assert.Equal("handed over 2/2", ProgressText.State(model.View(0.8).Rows[1], model.Phase));
        Assert.Equal(2, model.View(0.8).HandedOver);

        // The last wave's stop-and-copy closes once one of its VMs is decided, before the migration ends.
        model = model.Apply(P(4, 40 * MiB, 9_900, 700, 1, T2, stopAndCopy: true, planned: 700), 0.9);
        model = model.Apply(new VmHandoverFailed(Id, VmId.Create("vm-002"), "digest mismatch"), 1.0);
        Assert.True(model.Rounds[^1].Closed);
        model = model.Apply(new VmHandedOver(Id, VmId.Create("vm-003"), T2, "d", 100), 1.1);
        Assert.Equal("handed over 1/2, 1 failed", ProgressText.State(model.View(1.1).Rows[2], model.Phase));
    }

    [Fact]
    public void A_log_gets_each_round_once_with_its_own_bytes_and_interval_lines_within_long_rounds()
    {
        var events = new List<(double At, IVmScatterProtocol Message)>
        {
            (0, new MigrationAccepted(Id, 4, 2)), (0.1, Placed()),
            (0.2, P(0, 0, 0, 500_000)), (0.5, P(0, 34 * MiB, 16_000, 500_000)),
            (0.6, P(1, 34 * MiB, 16_000, 40_000, 0, T1)),
        };
        // A long round 1: a report every 0.25 s for 3 s.
        for (int i = 1; i <= 12; i++) events.Add((0.6 + i * 0.25, P(1, 34 * MiB + i * 5 * MiB, 16_000 + i * 2_000, 40_000, 0, T1, planned: 24_000)));
        events.Add((4.0, P(2, 94 * MiB, 40_000, 900, 0, T1, stopAndCopy: true)));
        events.Add((4.2, P(2, 97 * MiB, 40_900, 900, 0, T1, stopAndCopy: true)));
        events.Add((4.3, new VmHandedOver(Id, VmId.Create("vm-000"), T1, "0123456789abcdef", 80)));

        var lines = new List<string>();
        var model = ProgressModel.Empty;
        double last = double.NegativeInfinity;
        foreach (var (at, message) in events)
        {
            var next = model.Apply(message, at);
            lines.AddRange(ProgressText.PlainLines(model, next, message, at, TimeSpan.FromSeconds(1), ref last));
            model = next;
        }

        Assert.Equal(1, lines.Count(l => l.StartsWith("round 0, every target group: 34.0 MiB sent", StringComparison.Ordinal)));
        // The migration's first data shows at once (nothing was logged for an interval before it).
        Assert.Equal("round 0, every target group: 34.0 MiB so far", lines.Single(l => l.Contains(" so far", StringComparison.Ordinal) && l.StartsWith("round 0", StringComparison.Ordinal))[..44]);
        Assert.Equal(1, lines.Count(l => l.StartsWith("round 1, wave 1 (target-1), pre-copy: 60.0 MiB sent", StringComparison.Ordinal)));
        Assert.Equal(1, lines.Count(l => l.StartsWith("round 2, wave 1 (target-1), stop-and-copy: 3.0 MiB sent", StringComparison.Ordinal)));
        // Round 2 is closed by its VM's handover, and its line comes before the handover's.
        Assert.True(lines.FindIndex(l => l.StartsWith("round 2,", StringComparison.Ordinal)) < lines.FindIndex(l => l.StartsWith("handed over vm-000", StringComparison.Ordinal)));
        var soFar = lines.Where(l => l.StartsWith("round 1, wave 1: ", StringComparison.Ordinal)).ToArray();
        Assert.InRange(soFar.Length, 2, 3); // about one a second over 3 s
        Assert.All(soFar, l => Assert.Contains("so far", l));
    }
}
