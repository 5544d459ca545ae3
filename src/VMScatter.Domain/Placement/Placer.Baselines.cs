using VMScatter.Domain.Units;

namespace VMScatter.Domain.Placement;

/// <summary>What other schedulers do, the yardsticks: the paper's greedy, first-fit-decreasing, round-robin and random.</summary>
public static partial class Placer
{
    /// <summary>
    /// The VMScatter paper's greedy: hosts by capacity, largest first; each is filled with the unplaced VM that has
    /// the most pages identical to those already on it (the first: the most pages shared with any other VM).
    /// </summary>
    private static int[] PaperGreedy(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IContentModel contents)
    {
        int n = vms.Count;
        var hostOf = Enumerable.Repeat(-1, n).ToArray();
        var room = new Room(vms, hosts);
        var alone = Enumerable.Range(0, n).Select(v => contents.Empty.SizeWith(v)).ToArray();
        // Pages of v shared with some other VM = |v| + |all but v| − |all|, from prefix/suffix unions.
        var prefix = new IContentSet[n + 1];
        var suffix = new IContentSet[n + 1];
        prefix[0] = contents.Empty;
        for (int v = 0; v < n; v++) prefix[v + 1] = prefix[v].With(v);
        suffix[n] = contents.Empty;
        for (int v = n - 1; v >= 0; v--) suffix[v] = suffix[v + 1].With(v);
        double all = prefix[n].Size;
        var sharedAnywhere = new double[n];
        for (int v = 0; v < n; v++) sharedAnywhere[v] = alone[v] + prefix[v].Union(suffix[v + 1]).Size - all;
        foreach (int h in Enumerable.Range(0, hosts.Count).OrderByDescending(h => hosts[h].CapacityBytes).ThenBy(h => h))
        {
            var set = contents.Empty;
            while (true)
            {
                int best = -1;
                double bestShared = double.MinValue;
                for (int v = 0; v < n; v++)
                {
                    if (hostOf[v] >= 0 || !room.Fits(v, h)) continue;
                    double shared = set.Size == 0 ? sharedAnywhere[v] : alone[v] + set.Size - set.SizeWith(v);
                    if (shared > bestShared + 1e-9) { bestShared = shared; best = v; }
                }
                if (best < 0) break;
                hostOf[best] = h;
                room.Take(best, h);
                set = set.With(best);
            }
        }
        for (int v = 0; v < n; v++) if (hostOf[v] < 0) throw NoFit(vms[v], "paper greedy");
        return hostOf;
    }

    /// <summary>Load balancing: biggest VM first, onto the host with the most free memory.</summary>
    private static int[] FirstFitDecreasing(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        var hostOf = new int[vms.Count];
        var room = new Room(vms, hosts);
        foreach (int v in Enumerable.Range(0, vms.Count).OrderByDescending(v => vms[v].MemoryBytes).ThenBy(v => v))
        {
            int best = -1;
            for (int h = 0; h < hosts.Count; h++)
                if (room.Fits(v, h) && (best < 0 || room.Memory[h] > room.Memory[best])) best = h;
            if (best < 0) throw NoFit(vms[v], "first-fit-decreasing");
            hostOf[v] = best;
            room.Take(v, best);
        }
        return hostOf;
    }

    private static int[] RoundRobin(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts)
    {
        var hostOf = new int[vms.Count];
        var room = new Room(vms, hosts);
        int next = 0;
        for (int v = 0; v < vms.Count; v++)
        {
            int tries = 0;
            while (!room.Fits(v, next) && tries++ < hosts.Count) next = (next + 1) % hosts.Count;
            if (!room.Fits(v, next)) throw NoFit(vms[v], "round-robin");
            hostOf[v] = next;
            room.Take(v, next);
            next = (next + 1) % hosts.Count;
        }
        return hostOf;
    }

    private static int[] RandomFit(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, int seed)
    {
        var random = new Random(seed);
        var hostOf = new int[vms.Count];
        var room = new Room(vms, hosts);
        foreach (int v in Enumerable.Range(0, vms.Count).OrderBy(_ => random.Next()))
        {
            var candidates = Enumerable.Range(0, hosts.Count).Where(h => room.Fits(v, h)).ToArray();
            if (candidates.Length == 0) throw NoFit(vms[v], "random");
            int h = candidates[random.Next(candidates.Length)];
            hostOf[v] = h;
            room.Take(v, h);
        }
        return hostOf;
    }
}
