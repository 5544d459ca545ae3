namespace VMScatter.Domain.Placement;

/// <summary>
/// The exact optimum by exhaustive search (depth-first over VMs, pruned by capacity), for small instances only:
/// it is the yardstick the heuristics are measured against.
/// </summary>
public static class ExhaustivePlacer
{
    public static (int[] HostOf, double Traffic) Optimum(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, ExactContentModel contents, NetworkTopology? topology = null)
    {
        if (Math.Pow(hosts.Count, vms.Count) > 5e7) throw new ArgumentException("instance too large for exhaustive search");
        topology ??= NetworkTopology.Flat;
        var racks = hosts.Select(h => h.Rack).Where(r => r is not null).Distinct().ToList();
        var rackOf = hosts.Select(h => h.Rack is null ? -1 : racks.IndexOf(h.Rack)).ToArray();
        ulong allVms = vms.Count == 64 ? ulong.MaxValue : (1UL << vms.Count) - 1;
        double sourceCost = topology.SourceLinkWeight * contents.SizeOf(allVms);
        var memory = hosts.Select(h => h.CapacityBytes).ToArray();
        var cpus = hosts.Select(h => h.CpuSlots == 0 ? int.MaxValue : h.CpuSlots).ToArray();
        var masks = new ulong[hosts.Count];
        var hostOf = new int[vms.Count];
        var best = (HostOf: (int[]?)null, Traffic: double.MaxValue);

        void Visit(int v)
        {
            if (v == vms.Count)
            {
                double cost = sourceCost;
                var rackMasks = new ulong[racks.Count];
                for (int h = 0; h < hosts.Count; h++)
                {
                    cost += topology.HostLinkWeight * contents.SizeOf(masks[h]);
                    if (rackOf[h] >= 0) rackMasks[rackOf[h]] |= masks[h];
                }
                foreach (var m in rackMasks) cost += topology.RackLinkWeight * contents.SizeOf(m);
                if (cost < best.Traffic) best = ((int[])hostOf.Clone(), cost);
                return;
            }
            for (int h = 0; h < hosts.Count; h++)
            {
                if (memory[h] < vms[v].MemoryBytes || cpus[h] < vms[v].VCpus) continue;
                memory[h] -= vms[v].MemoryBytes; cpus[h] -= vms[v].VCpus; masks[h] |= 1UL << v; hostOf[v] = h;
                Visit(v + 1);
                memory[h] += vms[v].MemoryBytes; cpus[h] += vms[v].VCpus; masks[h] &= ~(1UL << v);
            }
        }

        Visit(0);
        if (best.HostOf is null) throw new PlacementException("no assignment fits the capacities");
        return (best.HostOf, best.Traffic);
    }
}
