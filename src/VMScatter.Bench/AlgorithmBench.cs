using System.Diagnostics;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain.Synthetic;
using VMScatter.Domain.Units;

namespace VMScatter.Bench;

/// <summary>Quality of one strategy over many small instances, relative to the exhaustive optimum.</summary>
public sealed record RatioStats(string Strategy, int Instances, double MeanRatio, double MaxRatio, double MeanHostLinkRatio, double MaxHostLinkRatio, int Failed);

/// <summary>One strategy on the large instance: exact traffic of its placement and how long planning took.</summary>
public sealed record LargeResult(string Strategy, double Traffic, double PlanSeconds);

public sealed record GroupScheduleResult(int Groups, long Switches, long LowerBound, double RatioToLowerBound, long PageIndexOrderSwitches, double ReductionVsPageIndexOrder);

public sealed record AlgorithmBenchReport(
    int SmallInstances,
    IReadOnlyList<RatioStats> Small,
    int LargeVms,
    int LargeHosts,
    IReadOnlyList<LargeResult> LargeFlat,
    IReadOnlyList<LargeResult> LargeRacks,
    double TrafficReductionVsFirstFitDecreasing,
    double TrafficReductionVsPaperGreedy,
    double RacksTrafficReductionVsFirstFitDecreasing,
    double RacksTrafficReductionVsPaperGreedy,
    GroupScheduleResult Groups,
    string Notes);

/// <summary>
/// `vmscatter bench algorithms`: placement and group scheduling measured against the exact optimum (small
/// instances, exhaustive search) and against baselines (a large instance). Placement runs as in production, on
/// bottom-k sketches; every traffic figure is then computed exactly from the VMs' page contents.
/// </summary>
public static class AlgorithmBench
{
    private const int SketchK = 512;

    public static AlgorithmBenchReport Run(int smallInstances, int seed, int largeVms = 1000, int largeHosts = 64, Action<string>? progress = null)
    {
        var small = RunSmall(smallInstances, seed, progress);
        progress?.Invoke($"large instance: {largeVms} VMs on {largeHosts} hosts");
        var (flat, racks, groups) = RunLarge(largeVms, largeHosts, seed);
        double Traffic(IReadOnlyList<LargeResult> r, PlacementStrategy s) => r.Single(x => x.Strategy == s.ToName()).Traffic;
        double Reduction(IReadOnlyList<LargeResult> r, PlacementStrategy baseline) => 1 - Traffic(r, PlacementStrategy.TrafficAware) / Traffic(r, baseline);
        return new AlgorithmBenchReport(smallInstances, small, largeVms, largeHosts, flat, racks,
            Reduction(flat, PlacementStrategy.FirstFitDecreasing), Reduction(flat, PlacementStrategy.PaperGreedy),
            Reduction(racks, PlacementStrategy.FirstFitDecreasing), Reduction(racks, PlacementStrategy.PaperGreedy), groups,
            "Traffic is in page-links: Σ over links of distinct pages crossing it (multicast trees). 'hostLink' ratios leave out the " +
            "source uplink, which every placement pays alike. Small instances: ≤ 8 VMs, ≤ 3 hosts, exact optimum by exhaustive search; " +
            "placement runs on bottom-k sketches (k = 512) as in production. Large: planning time measured on one thread.");
    }

    private static List<RatioStats> RunSmall(int count, int seed, Action<string>? progress)
    {
        var ratios = Enum.GetValues<PlacementStrategy>().ToDictionary(s => s, _ => new List<(double All, double Host)>());
        var failed = Enum.GetValues<PlacementStrategy>().ToDictionary(s => s, _ => 0);
        var random = new Random(seed);
        int solved = 0;
        while (solved < count)
        {
            int n = random.Next(3, 9), m = random.Next(2, 4);
            var model = new SyntheticGuestModel
            {
                MemoryBytes = random.Next(1, 3) << 20,
                ZeroFraction = 0.2 + random.NextDouble() * 0.2,
                OsImageFraction = 0.1 + random.NextDouble() * 0.15,
                ApplicationFraction = 0.05 + random.NextDouble() * 0.15,
                DuplicateFraction = 0.02,
                DirtyPagesPerSecond = 0,
            };
            var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(n, model, random.Next(), random.Next(1, 3), random.Next(1, 5)), runWorkload: false);
            var contents = fleet.Select(Contents).ToArray();
            var vms = fleet.Select((vm, i) => new PlacementVm($"v{i}", (1 + i % 2) * vm.Description.MemoryBytes, 1 + i % 3)).ToArray();
            long need = vms.Sum(v => v.MemoryBytes);
            // Capacities that bind: between the fair share and twice it, so packing and sharing pull against each other.
            var hosts = Enumerable.Range(0, m).Select(h => new PlacementHost($"h{h}",
                Math.Max(vms.Max(v => v.MemoryBytes), (long)(need / m * (1.0 + random.NextDouble()))),
                CpuSlots: random.Next(2) == 0 ? 0 : 2 * n, Rack: m == 3 && random.Next(2) == 0 ? (h < 2 ? "r1" : "r2") : null)).ToArray();
            var topology = hosts.Any(h => h.Rack is not null) ? new NetworkTopology(RackLinkWeight: 2) : NetworkTopology.Flat;
            var exact = new ExactContentModel(contents);
            (int[] HostOf, double Traffic) optimum;
            try { optimum = ExhaustivePlacer.Optimum(vms, hosts, exact, topology); }
            catch (PlacementException) { continue; }
            double uplink = topology.SourceLinkWeight * exact.SizeOf(n == 64 ? ulong.MaxValue : (1UL << n) - 1);
            var sketches = Sketches(contents);
            foreach (var strategy in Enum.GetValues<PlacementStrategy>())
            {
                try
                {
                    var r = Placer.Place(vms, hosts, sketches, strategy, topology, seed: solved);
                    var hostOf = vms.Select(v => Array.FindIndex(hosts, h => h.Id == r.HostOf[v.Id])).ToArray();
                    double traffic = Placer.Cost(exact, hosts, topology, hostOf);
                    ratios[strategy].Add((traffic / optimum.Traffic, (traffic - uplink) / Math.Max(1e-9, optimum.Traffic - uplink)));
                }
                catch (PlacementException) { failed[strategy]++; }
            }
            solved++;
            if (solved % 20 == 0) progress?.Invoke($"small instances: {solved}/{count} solved exactly");
        }
        return Enum.GetValues<PlacementStrategy>().Select(s => new RatioStats(s.ToName(), ratios[s].Count,
            ratios[s].Count == 0 ? double.NaN : ratios[s].Average(r => r.All), ratios[s].Count == 0 ? double.NaN : ratios[s].Max(r => r.All),
            ratios[s].Count == 0 ? double.NaN : ratios[s].Average(r => r.Host), ratios[s].Count == 0 ? double.NaN : ratios[s].Max(r => r.Host), failed[s])).ToList();
    }

    private static (List<LargeResult> Flat, List<LargeResult> Racks, GroupScheduleResult Groups) RunLarge(int vmCount, int hostCount, int seed)
    {
        // Three sizes of guest, one OS image per 250 VMs, an application per 25; contents scaled to 2,048 pages per GiB.
        var random = new Random(seed + 1);
        var vms = new List<PlacementVm>();
        var contents = new List<long[]>();
        int[] sizes = [1, 2, 4];
        for (int i = 0; i < vmCount; i++)
        {
            int gib = sizes[random.Next(sizes.Length)];
            var model = new SyntheticGuestModel { MemoryBytes = gib * 2048L * Page.Size, DirtyPagesPerSecond = 0 };
            var vm = new SyntheticVm(new VmDescription(new VmId($"vm-{i:D4}"), model.MemoryBytes, gib, "synthetic", ""), model,
                osImage: random.Next(Math.Max(1, vmCount / 250)), application: random.Next(Math.Max(1, vmCount / 25)), seed, runWorkload: false, materialize: false);
            vms.Add(new PlacementVm(vm.Description.Id.Value, gib * (1L << 30), gib));
            contents.Add(Contents(vm));
        }
        long need = vms.Sum(v => v.MemoryBytes);
        var flatHosts = Enumerable.Range(0, hostCount).Select(h => new PlacementHost($"h{h:D2}", (long)(need / hostCount * 1.15), CpuSlots: 0)).ToArray();
        var rackHosts = flatHosts.Select((h, i) => h with { Rack = $"r{i / 8}" }).ToArray();
        var sketches = Sketches(contents);
        var flat = new List<LargeResult>();
        var racks = new List<LargeResult>();
        Dictionary<string, string>? ours = null;
        foreach (var strategy in Enum.GetValues<PlacementStrategy>())
        {
            var r = Placer.Place(vms, flatHosts, sketches, strategy, NetworkTopology.Flat, seed);
            flat.Add(new LargeResult(r.Strategy, ExactTraffic(vms, flatHosts, contents, r.HostOf, NetworkTopology.Flat), r.PlanSeconds));
            if (strategy == PlacementStrategy.TrafficAware) ours = new(r.HostOf);
            var rr = Placer.Place(vms, rackHosts, sketches, strategy, new NetworkTopology(RackLinkWeight: 1), seed);
            racks.Add(new LargeResult(rr.Strategy, ExactTraffic(vms, rackHosts, contents, rr.HostOf, new NetworkTopology(RackLinkWeight: 1)), rr.PlanSeconds));
        }
        return (flat, racks, Schedule(vms, flatHosts, contents, ours!));
    }

    /// <summary>Target groups of the placement, ordered by us and in page-index order (each content sent when first met).</summary>
    public static GroupScheduleResult Schedule(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IReadOnlyList<long[]> contents, IReadOnlyDictionary<string, string> hostOf)
    {
        if (hosts.Count > 64) throw new ArgumentException("group masks hold at most 64 hosts");
        var index = hosts.Select((h, i) => (h.Id, i)).ToDictionary(x => x.Id, x => x.i);
        var mask = new Dictionary<long, ulong>();
        for (int v = 0; v < vms.Count; v++)
        {
            ulong bit = 1UL << index[hostOf[vms[v].Id]];
            foreach (var c in contents[v]) mask[c] = mask.GetValueOrDefault(c) | bit;
        }
        var pageOrder = new List<ulong>();
        var seen = new HashSet<long>();
        for (int v = 0; v < vms.Count; v++) foreach (var c in contents[v]) if (seen.Add(c)) pageOrder.Add(mask[c]);
        var groups = mask.Values.Distinct().ToArray();
        var order = GroupScheduler.Order(groups, budget: TimeSpan.FromSeconds(5));
        long ours = GroupScheduler.Switches(order), bound = GroupScheduler.LowerBound(groups), naive = GroupScheduler.Switches(pageOrder);
        return new GroupScheduleResult(groups.Length, ours, bound, (double)ours / bound, naive, 1 - (double)ours / naive);
    }

    public static double ExactTraffic(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IReadOnlyList<long[]> contents, IReadOnlyDictionary<string, string> hostOf, NetworkTopology topology)
    {
        var all = new HashSet<long>();
        var perHost = hosts.ToDictionary(h => h.Id, _ => new HashSet<long>());
        var perRack = new Dictionary<string, HashSet<long>>();
        var rackOf = hosts.ToDictionary(h => h.Id, h => h.Rack);
        for (int v = 0; v < vms.Count; v++)
        {
            string h = hostOf[vms[v].Id];
            all.UnionWith(contents[v]);
            perHost[h].UnionWith(contents[v]);
            if (rackOf[h] is { } rack) { if (!perRack.TryGetValue(rack, out var set)) perRack[rack] = set = new(); set.UnionWith(contents[v]); }
        }
        return topology.SourceLinkWeight * all.Count + topology.HostLinkWeight * perHost.Values.Sum(s => (double)s.Count) + topology.RackLinkWeight * perRack.Values.Sum(s => (double)s.Count);
    }

    /// <summary>A VM's distinct non-zero contents (synthetic content keys stand for page contents one to one).</summary>
    public static long[] Contents(SyntheticVm vm)
    {
        var set = new HashSet<long>();
        for (int p = 0; p < vm.PageCount; p++) { ulong k = vm.ContentKeyOf(p); if (k != 0) set.Add((long)k); }
        return set.ToArray();
    }

    public static SketchContentModel Sketches(IEnumerable<long[]> contents) =>
        new(contents.Select(set =>
        {
            var s = new BottomKSketch(SketchK);
            foreach (var c in set) s.AddHash(Mix64.Mix((ulong)c));
            return s;
        }).ToArray());
}
