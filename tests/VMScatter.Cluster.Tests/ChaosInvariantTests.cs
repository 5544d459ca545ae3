using VMScatter.Bench.Chaos;
using VMScatter.Domain.Reports;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>The chaos harness's invariants: what the hosts run and what the journal says in, counts and violations out.</summary>
public class ChaosInvariantTests
{
    private static readonly string[] Vms = ["vm-000", "vm-001", "vm-002"];

    private static RunObservation Observation(KilledNode killed, IReadOnlyDictionary<string, string> handedOver, params HostView[] hosts) =>
        new(Vms, "source-1", killed, hosts, [], new JournalView("Completed", handedOver), Report(handedOver), null, 20_000, [], []);

    private static MigrationReport Report(IReadOnlyDictionary<string, string> handedOver) => new()
    {
        MigrationId = Guid.NewGuid().ToString(), Vms = Vms.Length, Targets = 2, GuestBytes = 0, NaiveBytes = 0, DistinctPages = 0, ZeroPages = 0, BytesSent = 0,
        BytesReceived = 0, Verified = handedOver.Count == Vms.Length, TotalSeconds = 1, PlacementStrategy = "traffic-aware", Placement = new Dictionary<string, string>(),
        LinkBytes = 0, GroupSwitches = 0, GroupSwitchesLowerBound = 0, GroupTransport = "relay-chain", Rounds = 2, DirtyPagesPerRound = [], CompressionRatio = 1,
        ByteCompares = 0, HashCollisions = 0, DowntimeMsMax = 0, DowntimeMsMedian = 0, Converged = true, Convergence = "", Deduplicate = true, LinkBitsPerSecond = 0,
        AnalysisSeconds = 0, RoundSeconds = [], SourceDigestSeconds = 0, Error = null,
        PerVm = Vms.Select(v => handedOver.TryGetValue(v, out var t)
            ? new VmReport(v, t, true, true, 120, "d-" + v, "d-" + v, null)
            : new VmReport(v, "target-1", false, false, 0, null, null, "stayed")).ToArray(),
    };

    private static HostView Source(params string[] running) => new("source-1", ChaosRole.Source, running, []);
    private static HostView Target(string id, params string[] running) => new(id, ChaosRole.Target, running, []);
    private static readonly KilledNode TargetTwoKilled = new("target-2", ChaosRole.Target);

    [Fact]
    public void Each_vm_where_the_journal_puts_it_holds_every_invariant()
    {
        var v = InvariantChecker.Check(Observation(TargetTwoKilled, new Dictionary<string, string> { ["vm-000"] = "target-1", ["vm-001"] = "target-3" },
            Source("vm-002"), Target("target-1", "vm-000"), Target("target-3", "vm-001"), Target("target-2")));
        Assert.Empty(v.Violations);
        Assert.Equal((2, 1, 0, 0, 0), (v.HandedOver, v.OnSource, v.EndedWithTarget, v.Lost, v.RunTwice));
        Assert.Equal(120, v.LongestPauseMs);
    }

    [Fact]
    public void A_vm_on_two_hosts_runs_twice_and_one_on_none_is_lost()
    {
        var v = InvariantChecker.Check(Observation(TargetTwoKilled, new Dictionary<string, string> { ["vm-000"] = "target-1" },
            Source("vm-000"), Target("target-1", "vm-000"), Target("target-3", "vm-001")));
        Assert.Equal((1, 1), (v.RunTwice, v.Lost));
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.ExactlyOnce && x.Detail == "vm-000 runs on source-1 and target-1");
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.ExactlyOnce && x.Detail.StartsWith("vm-002 runs nowhere"));
        // vm-001 runs once, but not where the journal says (the source).
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.JournalMatches && x.Detail == "vm-001 runs on target-3, the journal puts it on source-1");
    }

    [Fact]
    public void Vms_whose_place_was_the_killed_synthetic_node_ended_with_it_and_are_not_lost()
    {
        var sourceKilled = InvariantChecker.Check(Observation(new KilledNode("source-1", ChaosRole.Source), new Dictionary<string, string> { ["vm-000"] = "target-1" },
            Source(), Target("target-1", "vm-000")));
        Assert.Empty(sourceKilled.Violations);
        Assert.Equal((1, 2, 0), (sourceKilled.HandedOver, sourceKilled.EndedWithSource, sourceKilled.Lost));

        var targetKilled = InvariantChecker.Check(Observation(TargetTwoKilled, new Dictionary<string, string> { ["vm-000"] = "target-2", ["vm-001"] = "target-1" },
            Source("vm-002"), Target("target-1", "vm-001"), Target("target-2")));
        Assert.Empty(targetKilled.Violations);
        Assert.Equal((1, 0), (targetKilled.EndedWithTarget, targetKilled.Lost));
    }

    [Fact]
    public void A_digest_mismatch_a_vm_left_paused_a_long_pause_and_an_unended_journal_are_violations()
    {
        var handed = new Dictionary<string, string> { ["vm-000"] = "target-1" };
        var o = Observation(TargetTwoKilled, handed, new HostView("source-1", ChaosRole.Source, ["vm-002"], ["vm-001"]), Target("target-1", "vm-000"));
        var report = o.Report! with { PerVm = [o.Report.PerVm[0] with { TargetDigest = "other" }, .. o.Report.PerVm.Skip(1)] };
        var v = InvariantChecker.Check(o with { Report = report, SampledPause = ("vm-001", 25_000), Journal = new JournalView("Transferring", handed) });
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.Digest && x.Detail.StartsWith("vm-000 on target-1"));
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.PauseBound && x.Detail == "vm-001 is still paused on source-1 after the run settled");
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.PauseBound && x.Detail == "vm-001 was paused 25000 ms (bound 20000 ms)");
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.JournalMatches && x.Detail.Contains("Transferring"));
        Assert.Equal(25_000, v.LongestPauseMs);
    }

    [Fact]
    public void The_report_and_the_journal_must_agree_and_a_node_that_exited_is_a_violation()
    {
        var o = Observation(TargetTwoKilled, new Dictionary<string, string> { ["vm-000"] = "target-1" }, Source("vm-001", "vm-002"), Target("target-1", "vm-000"));
        var v = InvariantChecker.Check(o with { Report = Report(new Dictionary<string, string>()), UnexpectedExits = ["target-3 exited with 3"] });
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.JournalMatches && x.Detail.StartsWith("migrate's report hands over []"));
        Assert.Contains(v.Violations, x => x.Invariant == InvariantChecker.Survivors);
    }

    [Fact]
    public void The_pause_tracker_measures_a_run_of_paused_samples_and_a_silent_host_extends_none()
    {
        var t = new PauseTracker();
        t.Observe(0, ["a", "b"], new HashSet<string> { "a" });
        t.Observe(250, ["a", "b"], new HashSet<string> { "a", "b" });
        t.Observe(500, ["a", "b"], new HashSet<string>());
        t.Observe(750, ["b"], new HashSet<string> { "b" });
        // The host of "a" answers no more: its last pause stays 250 ms; "b" was paused 250 → 250 then 750 → 750.
        t.Observe(5000, [], new HashSet<string>());
        Assert.Equal(("a", 250.0), t.Longest);
    }
}
