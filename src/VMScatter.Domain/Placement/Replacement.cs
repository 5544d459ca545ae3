namespace VMScatter.Domain.Placement;

/// <summary>Where re-placed VMs go (VM id → host id), and those that fit nowhere, with why.</summary>
public sealed record ReplacementPlan(IReadOnlyDictionary<string, string> HostOf, IReadOnlyDictionary<string, string> Unplaced);

/// <summary>
/// Re-placement of a lost target's VMs onto the targets left: the traffic-aware cost (distinct pages a host receives
/// anew) with what each host already receives counted, within capacity. Unlike a first placement, the hosts are not
/// empty: a VM is worth most where the VMs already placed there share its pages, since those the host holds are
/// referenced, not sent. Greedy, largest VM first (few VMs, at a moment that should not wait for a search): each goes
/// where it adds the fewest new pages, ties to the host with more free memory. A VM no host has room for stays where
/// it runs (on the source).
/// </summary>
public static class Replacement
{
    /// <param name="vms">The VMs to re-place: indexes 0..n-1 of <paramref name="contents"/>.</param>
    /// <param name="hosts">The targets left, with their free capacity.</param>
    /// <param name="placedOn">Per host id, the indexes in <paramref name="contents"/> of the VMs it already receives (their pages it holds).</param>
    public static ReplacementPlan Plan(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IContentModel contents,
        IReadOnlyDictionary<string, IReadOnlyList<int>> placedOn)
    {
        var free = hosts.Select(h => h.CapacityBytes).ToArray();
        var cpus = hosts.Select(h => h.CpuSlots == 0 ? int.MaxValue : h.CpuSlots).ToArray();
        var held = hosts.Select(h => placedOn.GetValueOrDefault(h.Id, []).Aggregate(contents.Empty, (set, v) => set.With(v))).ToArray();
        var hostOf = new Dictionary<string, string>();
        var unplaced = new Dictionary<string, string>();
        foreach (int v in Enumerable.Range(0, vms.Count).OrderByDescending(v => vms[v].MemoryBytes).ThenBy(v => vms[v].Id, StringComparer.Ordinal))
        {
            int best = -1;
            double bestCost = double.MaxValue;
            for (int h = 0; h < hosts.Count; h++)
            {
                if (free[h] < vms[v].MemoryBytes || cpus[h] < vms[v].VCpus) continue;
                double cost = held[h].SizeWith(v) - held[h].Size;
                if (best < 0 || cost < bestCost - 1e-9 || (Math.Abs(cost - bestCost) <= 1e-9 && free[h] > free[best])) (best, bestCost) = (h, cost);
            }
            if (best < 0)
            {
                unplaced[vms[v].Id] = hosts.Count == 0 ? "no target left" : $"no target left has room for its {Units.ByteSize.Format(vms[v].MemoryBytes)}";
                continue;
            }
            free[best] -= vms[v].MemoryBytes;
            cpus[best] -= vms[v].VCpus;
            held[best] = held[best].With(v);
            hostOf[vms[v].Id] = hosts[best].Id;
        }
        return new ReplacementPlan(hostOf, unplaced);
    }
}
