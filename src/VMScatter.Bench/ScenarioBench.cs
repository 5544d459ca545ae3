using System.Diagnostics;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Synthetic;
using VMScatter.DataPlane;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Placement;

namespace VMScatter.Bench;

/// <summary>One way of moving the scenario's VMs, and what it cost.</summary>
public sealed record BenchRun(
    string Method,
    string Description,
    long BytesSent,
    long LinkBytes,
    double TotalSeconds,
    double DowntimeMsMax,
    double DowntimeMsMedian,
    int Rounds,
    bool Verified,
    bool Converged,
    double ReductionBytes,
    double ReductionTime,
    double ReductionLinkBytes,
    long? MeasuredLinkBytes = null,
    double? ReductionMeasuredLinkBytes = null,
    MulticastCounters? Multicast = null);

/// <summary>
/// A multicast run's channel figures, summed over its migrations: loss injected at the receivers, NACKs, repairs, the
/// channels opened with their members' joins and leaves, beside the schedule's group switches and their lower bound.
/// <see cref="RepairOverhead"/>: repair bytes over the bytes the source sent.
/// </summary>
public sealed record MulticastCounters(double InjectedLoss, long Nacks, long Repairs, long RepairBytes, int Channels, long Joins, long Leaves, long GroupSwitches, long GroupSwitchesLowerBound, double RepairOverhead);

public sealed record ScenarioResult(string Scenario, string Description, int Vms, long VmMemoryBytes, int Targets, long LinkBitsPerSecond, IReadOnlyList<BenchRun> Runs);

/// <summary>
/// `vmscatter bench --scenario`: the same VMs (same model, seed and workload), moved by VMScatter and by the
/// baselines through the same cluster and data plane, each on a fresh local cluster, in one run:
/// one-to-one pre-copy as QEMU/KVM does it (each VM to one target over unicast, zero pages elided, no dedup, no
/// compression), one VM after another and all at once; and gang migration (dedup across VMs, over unicast).
/// Reductions are against the sequential one-to-one baseline.
/// </summary>
public static class ScenarioBench
{
    public const string Sequential = "one-to-one-sequential";
    public const string Multicast = "vmscatter-multicast";

    private const long WarmupVmMemory = 32L << 20;

    /// <param name="lab">Hosts on real links (source = host 0, target i = host i): each method's link bytes are also
    /// measured, from the kernel's counters. Null: in this process's namespace, link bytes modelled only.</param>
    public static async Task<ScenarioResult> RunAsync(Scenario scenario, long linkBitsPerSecond, int downtimeMs, string journalDirectory, Action<string>? progress = null,
        NetLab? lab = null, CancellationToken cancellationToken = default, bool multicast = false, IReadOnlyList<double>? losses = null)
    {
        if (lab is not null && lab.Hosts.Count < scenario.Targets + 1) throw new ArgumentException($"{scenario.Name} needs {scenario.Targets + 1} lab hosts, the lab has {lab.Hosts.Count}");
        var methods = new (string Name, string Description, MigrationOptions Options, bool OneAtATime, double Loss)[]
        {
            ("vmscatter", "traffic-aware placement, dedup across VMs, relay chain per target group, LZ4",
                new(PlacementStrategy.TrafficAware, GroupTransport.RelayChain, CompressionMode.Lz4, 8, downtimeMs, true, linkBitsPerSecond), false, 0),
            (Sequential, "QEMU-style pre-copy: each VM to one target, unicast, zero pages elided, no dedup or compression, one VM after another",
                new(PlacementStrategy.FirstFitDecreasing, GroupTransport.FanOut, CompressionMode.None, 30, downtimeMs, false, linkBitsPerSecond, SetAsideDirty: false, Handover: HandoverMode.Together), true, 0),
            ("one-to-one-parallel", "the same, all VMs at once",
                new(PlacementStrategy.FirstFitDecreasing, GroupTransport.FanOut, CompressionMode.None, 30, downtimeMs, false, linkBitsPerSecond, SetAsideDirty: false, Handover: HandoverMode.Together), false, 0),
            ("gang", "gang migration: dedup across VMs, unicast to each target, no compression",
                new(PlacementStrategy.FirstFitDecreasing, GroupTransport.FanOut, CompressionMode.None, 8, downtimeMs, true, linkBitsPerSecond, SetAsideDirty: false, Handover: HandoverMode.Together), false, 0),
        };
        if (multicast)
        {
            var options = methods[0].Options with { GroupTransport = GroupTransport.Multicast };
            const string about = "vmscatter as above, content once per group on reliable IP multicast channels (maps, round ends on TCP)";
            methods = [methods[0], (Multicast, about, options, false, 0),
                .. (losses ?? []).Select(loss => (FormattableString.Invariant($"{Multicast} {loss:P0} loss"), FormattableString.Invariant($"{about}, each receiver dropping {loss:P0} of the datagrams"), options, false, loss)), .. methods[1..]];
        }
        var raw = new List<(string Name, string Description, long Bytes, long Link, double Seconds, double Max, double Median, int Rounds, bool Verified, bool Converged, long? Measured, MulticastCounters? Multicast)>();
        // Nodes are long-lived processes: the first migration in a fresh one also pays for JIT-compiling its code
        // paths and growing the heap. A small migration by every method first, unmeasured, so that no method pays
        // it for the others (whichever ran first did before).
        progress?.Invoke($"{scenario.Name}: warming up (unmeasured)");
        // The fleet's memory and its targets' copy of it.
        MemoryWarmup.Run(2L * scenario.Fleet.VmCount * scenario.Fleet.Model.MemoryBytes, line => progress?.Invoke($"{scenario.Name}: {line}"));
        var warmup = scenario.Scaled(scenario.Fleet.VmCount, WarmupVmMemory);
        foreach (var (_, _, options, oneAtATime, loss) in methods.DistinctBy(m => (m.Options, m.OneAtATime)))
            await MigrateAsync(warmup, options, oneAtATime, journalDirectory, lab, loss, cancellationToken).ConfigureAwait(false);
        foreach (var (name, planned, options, oneAtATime, loss) in methods)
        {
            string description = planned;
            progress?.Invoke($"{scenario.Name}: {name}");
            long before = lab?.LinkBytes() ?? 0;
            var reports = await MigrateAsync(scenario, options, oneAtATime, journalDirectory, lab, loss, cancellationToken).ConfigureAwait(false);
            long? measured = lab is null ? null : lab.LinkBytes() - before;
            // A multicast run whose channel could not be set up went by the relay chain: its row says so.
            if (reports.Select(r => r.Report.TransportFallback).FirstOrDefault(f => f is not null) is { } fallback) description += $" [fell back: {fallback}]";
            var downtimes = reports.SelectMany(r => r.Report.PerVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs)).Order().ToArray();
            raw.Add((name, description, reports.Sum(r => r.Report.BytesSent), reports.Sum(r => r.Report.LinkBytes), reports.Sum(r => r.WallSeconds),
                downtimes.Length == 0 ? 0 : downtimes[^1], downtimes.Length == 0 ? 0 : downtimes[downtimes.Length / 2],
                reports.Max(r => r.Report.Rounds), reports.All(r => r.Report.Verified), reports.All(r => r.Report.Converged), measured,
                reports.All(r => r.Report.GroupTransport == "multicast") ? Counters(reports.Select(r => r.Report).ToArray(), loss) : null));
        }
        var baseline = raw.Single(r => r.Name == Sequential);
        var runs = raw.Select(r => new BenchRun(r.Name, r.Description, r.Bytes, r.Link, r.Seconds, r.Max, r.Median, r.Rounds, r.Verified, r.Converged,
            1 - (double)r.Bytes / baseline.Bytes, 1 - r.Seconds / baseline.Seconds, 1 - (double)r.Link / baseline.Link,
            r.Measured, r.Measured is { } m && baseline.Measured is > 0 ? 1 - (double)m / baseline.Measured.Value : null, r.Multicast)).ToArray();
        return new ScenarioResult(scenario.Name, scenario.Description, scenario.Fleet.VmCount, scenario.Fleet.Model.MemoryBytes, scenario.Targets, linkBitsPerSecond, runs);
    }

    private static MulticastCounters Counters(IReadOnlyList<MigrationReport> reports, double loss) => new(loss,
        reports.Sum(r => r.MulticastNacks), reports.Sum(r => r.MulticastRepairs), reports.Sum(r => r.MulticastRepairBytes),
        reports.Sum(r => r.MulticastChannels), reports.Sum(r => r.MulticastJoins), reports.Sum(r => r.MulticastLeaves),
        reports.Sum(r => r.GroupSwitches), reports.Sum(r => r.GroupSwitchesLowerBound),
        reports.Sum(r => r.BytesSent) is > 0 and var sent ? (double)reports.Sum(r => r.MulticastRepairBytes) / sent : 0);

    /// <summary>
    /// One method on a fresh cluster: one migration of all VMs, or one per VM in turn. Time: first start to last end.
    /// <paramref name="loss"/>: the fraction of multicast datagrams each target drops (loss injected in the receiver).
    /// </summary>
    private static async Task<List<(MigrationReport Report, double WallSeconds)>> MigrateAsync(Scenario scenario, MigrationOptions options, bool oneAtATime, string journalDirectory,
        NetLab? lab, double loss, CancellationToken cancellationToken)
    {
        string Hocon(string host) => lab?.NodeHocon(host, loss) ?? NetLab.DropHocon(host, loss);
        var fleet = SyntheticFleet.Create(scenario.Fleet);
        long capacity = (scenario.Fleet.VmCount + scenario.Targets - 1) / scenario.Targets * scenario.Fleet.Model.MemoryBytes;
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = scenario.Targets, TargetCapacityBytes = capacity,
            JournalConnectionString = $"Data Source={Path.Combine(journalDirectory, $"bench-{Guid.NewGuid():N}.db")}",
            ExtraHoconFor = Hocon,
        }, cancellationToken).ConfigureAwait(false);
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, scenario.Targets, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
        var batches = oneAtATime ? fleet.Select(vm => (IReadOnlyList<VmId>)[vm.Description.Id]).ToList() : [[]];
        var results = new List<(MigrationReport, double)>();
        foreach (var vmIds in batches)
        {
            var clock = Stopwatch.StartNew();
            var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                new StartMigration(MigrationId.New(), cluster.Source.HostId, [], vmIds, options), _ => { }, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
            if (outcome.RejectedBecause is not null) throw new InvalidOperationException($"{scenario.Name}: migration rejected: {outcome.RejectedBecause}");
            results.Add((outcome.Report!, clock.Elapsed.TotalSeconds));
        }
        return results;
    }
}
