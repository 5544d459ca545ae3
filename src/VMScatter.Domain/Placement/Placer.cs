using VMScatter.Domain.Dedup;

namespace VMScatter.Domain.Placement;

/// <summary>
/// Places VMs on target hosts within capacity. The traffic-aware strategy minimises the pages that must reach
/// the hosts: a distinct content costs one transfer per host that needs it, so VMs sharing many pages should
/// share a host. Greedy (each VM where it adds the fewest new pages), then moves and swaps while they help.
/// Baselines (round-robin, first-fit-decreasing by memory) are what traffic-blind schedulers do.
/// </summary>
public static class Placer
{
    public static PlacementResult Place(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, PlacementStrategy strategy)
    {
        Validate(vms, hosts);
        var hostOf = strategy switch
        {
            PlacementStrategy.TrafficAware => TrafficAware(vms, hosts),
            PlacementStrategy.RoundRobin => RoundRobin(vms, hosts),
            PlacementStrategy.FirstFitDecreasing => FirstFitDecreasing(vms, hosts),
            _ => throw new ArgumentOutOfRangeException(nameof(strategy)),
        };
        var map = new Dictionary<string, string>();
        for (int v = 0; v < vms.Count; v++) map[vms[v].Id] = hosts[hostOf[v]].Id;
        return new PlacementResult(strategy.ToString(), map, Cost(vms, hosts.Count, hostOf));
    }

    /// <summary>Expected pages moved: Σ over hosts of the estimated distinct contents of the VMs placed there.</summary>
    public static double Cost(IReadOnlyList<PlacementVm> vms, int hostCount, int[] hostOf)
    {
        double total = 0;
        for (int h = 0; h < hostCount; h++) total += HostPages(vms, hostOf, h);
        return total;
    }

    private static void Validate(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        if (hosts.Count == 0) throw new PlacementException("no target hosts to place VMs on");
        long largest = hosts.Max(h => h.CapacityBytes);
        foreach (var vm in vms)
            if (vm.MemoryBytes > largest)
                throw new PlacementException($"VM {vm.Id} needs {Units.ByteSize.Format(vm.MemoryBytes)} but the largest target has {Units.ByteSize.Format(largest)} free");
        long need = vms.Sum(v => v.MemoryBytes), have = hosts.Sum(h => h.CapacityBytes);
        if (need > have)
            throw new PlacementException($"the VMs need {Units.ByteSize.Format(need)} but the targets have {Units.ByteSize.Format(have)} free in all");
    }

    private static int[] TrafficAware(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        int n = vms.Count, m = hosts.Count;
        var hostOf = new int[n];
        var free = hosts.Select(h => h.CapacityBytes).ToArray();
        var sketch = new BottomKSketch?[m];
        var order = Enumerable.Range(0, n).OrderByDescending(v => vms[v].MemoryBytes).ThenByDescending(v => vms[v].DistinctPages).ThenBy(v => vms[v].Id, StringComparer.Ordinal).ToArray();
        foreach (int v in order)
        {
            int best = -1;
            double bestAdded = double.MaxValue;
            for (int h = 0; h < m; h++)
            {
                if (free[h] < vms[v].MemoryBytes) continue;
                double added = sketch[h] is null ? vms[v].DistinctPages : Math.Max(0, sketch[h]!.Union(vms[v].Sketch).EstimateCount() - sketch[h]!.EstimateCount());
                // Ties go to the host with most room, so later VMs keep options.
                if (added < bestAdded - 1e-9 || (Math.Abs(added - bestAdded) <= 1e-9 && free[h] > free[best]))
                {
                    best = h;
                    bestAdded = added;
                }
            }
            if (best < 0) throw new PlacementException($"VM {vms[v].Id} ({Units.ByteSize.Format(vms[v].MemoryBytes)}) does not fit on any target after placing the others");
            hostOf[v] = best;
            free[best] -= vms[v].MemoryBytes;
            sketch[best] = sketch[best] is null ? vms[v].Sketch : sketch[best]!.Union(vms[v].Sketch);
        }
        Improve(vms, hosts, hostOf);
        return hostOf;
    }

    /// <summary>Local search: single moves and pairwise swaps that lower the cost, until none does.</summary>
    private static void Improve(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, int[] hostOf)
    {
        int n = vms.Count, m = hosts.Count;
        var load = new long[m];
        for (int v = 0; v < n; v++) load[hostOf[v]] += vms[v].MemoryBytes;
        var hostCost = new double[m];
        for (int h = 0; h < m; h++) hostCost[h] = HostPages(vms, hostOf, h);
        bool improved = true;
        for (int pass = 0; improved && pass < 20; pass++)
        {
            improved = false;
            for (int v = 0; v < n; v++)
            {
                int from = hostOf[v];
                for (int to = 0; to < m; to++)
                {
                    if (to == from || load[to] + vms[v].MemoryBytes > hosts[to].CapacityBytes) continue;
                    hostOf[v] = to;
                    double cf = HostPages(vms, hostOf, from), ct = HostPages(vms, hostOf, to);
                    if (cf + ct < hostCost[from] + hostCost[to] - 0.5)
                    {
                        load[from] -= vms[v].MemoryBytes; load[to] += vms[v].MemoryBytes;
                        hostCost[from] = cf; hostCost[to] = ct;
                        from = to;
                        improved = true;
                    }
                    else hostOf[v] = from;
                }
                for (int u = v + 1; u < n; u++)
                {
                    int hu = hostOf[u], hv = hostOf[v];
                    if (hu == hv) continue;
                    long dv = vms[u].MemoryBytes - vms[v].MemoryBytes;
                    if (load[hv] + dv > hosts[hv].CapacityBytes || load[hu] - dv > hosts[hu].CapacityBytes) continue;
                    hostOf[v] = hu; hostOf[u] = hv;
                    double cv = HostPages(vms, hostOf, hv), cu = HostPages(vms, hostOf, hu);
                    if (cv + cu < hostCost[hv] + hostCost[hu] - 0.5)
                    {
                        load[hv] += dv; load[hu] -= dv;
                        hostCost[hv] = cv; hostCost[hu] = cu;
                        improved = true;
                    }
                    else { hostOf[v] = hv; hostOf[u] = hu; }
                }
            }
        }
    }

    private static double HostPages(IReadOnlyList<PlacementVm> vms, int[] hostOf, int host)
    {
        BottomKSketch? union = null;
        long exactIfSingle = 0;
        int count = 0;
        for (int v = 0; v < vms.Count; v++)
        {
            if (hostOf[v] != host) continue;
            count++;
            exactIfSingle = vms[v].DistinctPages;
            union = union is null ? vms[v].Sketch : union.Union(vms[v].Sketch);
        }
        return count switch { 0 => 0, 1 => exactIfSingle, _ => union!.EstimateCount() };
    }

    private static int[] RoundRobin(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        var hostOf = new int[vms.Count];
        var free = hosts.Select(h => h.CapacityBytes).ToArray();
        int next = 0;
        for (int v = 0; v < vms.Count; v++)
        {
            int tries = 0;
            while (free[next] < vms[v].MemoryBytes && tries++ < hosts.Count) next = (next + 1) % hosts.Count;
            if (free[next] < vms[v].MemoryBytes) throw new PlacementException($"VM {vms[v].Id} does not fit round-robin");
            hostOf[v] = next;
            free[next] -= vms[v].MemoryBytes;
            next = (next + 1) % hosts.Count;
        }
        return hostOf;
    }

    /// <summary>Load balancing: biggest VM first, onto the host with the most free memory.</summary>
    private static int[] FirstFitDecreasing(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        var hostOf = new int[vms.Count];
        var free = hosts.Select(h => h.CapacityBytes).ToArray();
        foreach (int v in Enumerable.Range(0, vms.Count).OrderByDescending(v => vms[v].MemoryBytes).ThenBy(v => v))
        {
            int best = Enumerable.Range(0, hosts.Count).Where(h => free[h] >= vms[v].MemoryBytes).DefaultIfEmpty(-1).MaxBy(h => h < 0 ? long.MinValue : free[h]);
            if (best < 0) throw new PlacementException($"VM {vms[v].Id} does not fit");
            hostOf[v] = best;
            free[best] -= vms[v].MemoryBytes;
        }
        return hostOf;
    }
}
