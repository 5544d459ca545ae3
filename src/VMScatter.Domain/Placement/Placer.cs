using System.Diagnostics;
using VMScatter.Domain.Units;

namespace VMScatter.Domain.Placement;

/// <summary>
/// Places VMs on target hosts within capacity (memory, vCPU slots). The traffic-aware strategy minimises the
/// traffic of the network's multicast trees (<see cref="NetworkTopology"/>): greedily, each VM where it adds the
/// fewest page-links, then single moves and pairwise swaps while they lower the cost and the time budget lasts.
/// The baselines are what other schedulers do: the VMScatter paper's greedy (fill the largest host first with the
/// VMs sharing most pages with it), load-balancing first-fit-decreasing, round-robin and random.
/// </summary>
public static partial class Placer
{
    public static readonly TimeSpan DefaultBudget = TimeSpan.FromMilliseconds(700);

    public static PlacementResult Place(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IContentModel contents,
        PlacementStrategy strategy, NetworkTopology? topology = null, int seed = 0, TimeSpan? budget = null)
    {
        if (contents.VmCount != vms.Count) throw new ArgumentException("content model and VM list differ in length");
        Validate(vms, hosts);
        topology ??= NetworkTopology.Flat;
        var clock = Stopwatch.StartNew();
        var hostOf = strategy switch
        {
            PlacementStrategy.TrafficAware => new Search(vms, hosts, contents, topology, clock, budget ?? DefaultBudget).Run(),
            PlacementStrategy.PaperGreedy => PaperGreedy(vms, hosts, contents),
            PlacementStrategy.FirstFitDecreasing => FirstFitDecreasing(vms, hosts),
            PlacementStrategy.RoundRobin => RoundRobin(vms, hosts),
            PlacementStrategy.Random => RandomFit(vms, hosts, seed),
            _ => throw new ArgumentOutOfRangeException(nameof(strategy)),
        };
        double seconds = clock.Elapsed.TotalSeconds;
        var map = new Dictionary<string, string>();
        for (int v = 0; v < vms.Count; v++) map[vms[v].Id] = hosts[hostOf[v]].Id;
        return new PlacementResult(strategy.ToName(), map, Cost(contents, hosts, topology, hostOf), seconds);
    }

    /// <summary>Traffic of an assignment: Σ over links (source uplink, racks, hosts) of weight × distinct pages below it.</summary>
    public static double Cost(IContentModel contents, IReadOnlyList<PlacementHost> hosts, NetworkTopology topology, int[] hostOf)
    {
        var all = contents.Empty;
        var perHost = new IContentSet[hosts.Count];
        var perRack = new Dictionary<string, IContentSet>();
        for (int h = 0; h < hosts.Count; h++) perHost[h] = contents.Empty;
        for (int v = 0; v < hostOf.Length; v++)
        {
            all = all.With(v);
            perHost[hostOf[v]] = perHost[hostOf[v]].With(v);
            if (hosts[hostOf[v]].Rack is { } rack) perRack[rack] = perRack.GetValueOrDefault(rack, contents.Empty).With(v);
        }
        return topology.SourceLinkWeight * all.Size + topology.HostLinkWeight * perHost.Sum(s => s.Size) + topology.RackLinkWeight * perRack.Values.Sum(s => s.Size);
    }

    private static void Validate(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        if (CapacityProblem(vms, hosts) is { } problem) throw new PlacementException(problem);
    }

    /// <summary>Why these VMs cannot fit these hosts whatever the strategy (one too large for any host, or too much in all); null when they may.</summary>
    public static string? CapacityProblem(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        if (hosts.Count == 0) return "no target hosts to place VMs on";
        long largest = hosts.Max(h => h.CapacityBytes);
        foreach (var vm in vms)
        {
            if (vm.MemoryBytes > largest)
                return $"VM {vm.Id} needs {ByteSize.Format(vm.MemoryBytes)} but the largest target has {ByteSize.Format(largest)} free";
            if (!hosts.Any(h => h.CapacityBytes >= vm.MemoryBytes && (h.CpuSlots == 0 || h.CpuSlots >= vm.VCpus)))
                return $"VM {vm.Id} needs {vm.VCpus} vCPUs and {ByteSize.Format(vm.MemoryBytes)}; no target has both free";
        }
        long need = vms.Sum(v => v.MemoryBytes), have = hosts.Sum(h => h.CapacityBytes);
        return need > have ? $"the VMs need {ByteSize.Format(need)} but the targets have {ByteSize.Format(have)} free in all" : null;
    }

    /// <summary>Free memory and vCPU slots per host.</summary>
    private sealed class Room(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        public readonly long[] Memory = hosts.Select(h => h.CapacityBytes).ToArray();
        public readonly int[] Cpus = hosts.Select(h => h.CpuSlots == 0 ? int.MaxValue : h.CpuSlots).ToArray();
        public bool Fits(int v, int h) => Memory[h] >= vms[v].MemoryBytes && Cpus[h] >= vms[v].VCpus;
        public void Take(int v, int h) { Memory[h] -= vms[v].MemoryBytes; Cpus[h] -= vms[v].VCpus; }
        public void Give(int v, int h) { Memory[h] += vms[v].MemoryBytes; Cpus[h] += vms[v].VCpus; }
    }

    private static PlacementException NoFit(PlacementVm vm, string how) =>
        new($"VM {vm.Id} ({ByteSize.Format(vm.MemoryBytes)}, {vm.VCpus} vCPUs) does not fit on any target after placing the others ({how})");

}
