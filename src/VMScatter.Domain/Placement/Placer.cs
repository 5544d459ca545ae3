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
public static class Placer
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

    /// <summary>The traffic-aware strategy's state: members, content sets and costs per host and rack.</summary>
    private sealed class Search
    {
        private readonly IReadOnlyList<PlacementVm> _vms;
        private readonly IReadOnlyList<PlacementHost> _hosts;
        private readonly IContentModel _contents;
        private readonly NetworkTopology _topology;
        private readonly Stopwatch _clock;
        private readonly TimeSpan _budget;
        private readonly Room _room;
        private readonly int[] _hostOf;
        private readonly int[] _rackOfHost;
        private readonly List<int>[] _onHost;
        private readonly List<int>[] _onRack;
        private readonly IContentSet[] _hostSet;
        private readonly IContentSet[] _rackSet;

        public Search(IReadOnlyList<PlacementVm> vms, IReadOnlyList<PlacementHost> hosts, IContentModel contents, NetworkTopology topology, Stopwatch clock, TimeSpan budget)
        {
            _vms = vms; _hosts = hosts; _contents = contents; _topology = topology; _clock = clock; _budget = budget;
            _room = new Room(vms, hosts);
            _hostOf = new int[vms.Count];
            var racks = hosts.Select(h => h.Rack).Where(r => r is not null).Distinct().ToList();
            _rackOfHost = hosts.Select(h => h.Rack is null ? -1 : racks.IndexOf(h.Rack)).ToArray();
            _onHost = hosts.Select(_ => new List<int>()).ToArray();
            _onRack = racks.Select(_ => new List<int>()).ToArray();
            _hostSet = hosts.Select(_ => contents.Empty).ToArray();
            _rackSet = racks.Select(_ => contents.Empty).ToArray();
        }

        /// <summary>Two constructions (host filling, and VM-by-VM marginal greedy); the cheaper one is improved by local search.</summary>
        public int[] Run()
        {
            var best = Construct();
            Reset();
            for (int v = 0; v < _vms.Count; v++) Put(v, best![v]);
            Improve();
            IteratedLocalSearch();
            return _hostOf;
        }

        /// <summary>The cheapest of the constructions (host filling by new pages per byte, by shared pages, VM-by-VM greedy).</summary>
        private int[] Construct()
        {
            int[]? best = null;
            double bestCost = double.MaxValue;
            // With many VMs each host fill costs a third of the budget; the shared-pages rule rarely won there (measured).
            var constructions = _vms.Count > 200
                ? new Action[] { () => HostFill(sharedFirst: false), Greedy }
                : new Action[] { () => HostFill(sharedFirst: false), () => HostFill(sharedFirst: true), Greedy };
            foreach (var construct in constructions)
            {
                Reset();
                construct();
                double cost = EstimatedCost();
                if (cost < bestCost - 1e-9) { bestCost = cost; best = (int[])_hostOf.Clone(); }
            }
            return best!;
        }

        /// <summary>
        /// Escape local optima that moves and swaps cannot leave (capacity often blocks them): perturb the best
        /// assignment with a few random feasible moves, improve again, keep it if cheaper; until the budget ends or
        /// many perturbations in a row have not helped.
        /// </summary>
        private void IteratedLocalSearch()
        {
            const int Patience = 300;
            var random = new Random(_vms.Count * 7919 + _hosts.Count);
            var best = (int[])_hostOf.Clone();
            double bestCost = EstimatedCost();
            for (int stale = 0; stale < Patience && !OutOfTime; stale++)
            {
                for (int k = 0; k < 3; k++)
                {
                    int v = random.Next(_vms.Count), h = random.Next(_hosts.Count), u = random.Next(_vms.Count);
                    if (h != _hostOf[v] && _room.Fits(v, h))
                    {
                        Remove(v);
                        Put(v, h);
                    }
                    else if (_hostOf[u] != _hostOf[v] && SwapFits(v, u))
                    {
                        int hv = _hostOf[v], hu = _hostOf[u];
                        Remove(v);
                        Remove(u);
                        Put(v, hu);
                        Put(u, hv);
                    }
                }
                Improve();
                double cost = EstimatedCost();
                if (cost < bestCost - 0.5)
                {
                    best = (int[])_hostOf.Clone();
                    bestCost = cost;
                    stale = -1;
                }
                else if (!best.AsSpan().SequenceEqual(_hostOf))
                {
                    Reset();
                    for (int v = 0; v < _vms.Count; v++) Put(v, best[v]);
                }
            }
        }

        private void Reset()
        {
            for (int h = 0; h < _hosts.Count; h++)
            {
                foreach (int v in _onHost[h]) _room.Give(v, h);
                _onHost[h].Clear();
                _hostSet[h] = _contents.Empty;
            }
            for (int r = 0; r < _onRack.Length; r++) { _onRack[r].Clear(); _rackSet[r] = _contents.Empty; }
        }

        private double EstimatedCost() =>
            _topology.HostLinkWeight * _hostSet.Sum(s => s.Size) + _topology.RackLinkWeight * _rackSet.Sum(s => s.Size);

        /// <summary>
        /// Fill hosts one after another (rack by rack, largest first), each time with the VM that adds the fewest new
        /// page-links per byte of memory it takes (capacity goes to VMs that bring little new content) or, with
        /// <paramref name="sharedFirst"/>, the VM sharing most pages with the host (the paper's rule). Each host starts
        /// from the largest unplaced VM; with many VMs only those most similar to that seed are considered.
        /// </summary>
        private void HostFill(bool sharedFirst)
        {
            const int Candidates = 96;
            var placed = new bool[_vms.Count];
            int left = _vms.Count;
            var alone = Enumerable.Range(0, _vms.Count).Select(v => _contents.Empty.SizeWith(v)).ToArray();
            foreach (int h in Enumerable.Range(0, _hosts.Count).OrderBy(h => _hosts[h].Rack ?? "", StringComparer.Ordinal).ThenByDescending(h => _hosts[h].CapacityBytes).ThenBy(h => h))
            {
                if (left == 0) break;
                int seed = -1;
                for (int v = 0; v < _vms.Count; v++)
                    if (!placed[v] && _room.Fits(v, h) && (seed < 0 || _vms[v].MemoryBytes > _vms[seed].MemoryBytes || (_vms[v].MemoryBytes == _vms[seed].MemoryBytes && alone[v] > alone[seed]))) seed = v;
                if (seed < 0) continue;
                Put(seed, h); placed[seed] = true; left--;
                var seedSet = _contents.Empty.With(seed);
                var pool = Enumerable.Range(0, _vms.Count).Where(v => !placed[v])
                    .OrderByDescending(v => alone[v] + alone[seed] - seedSet.SizeWith(v)).Take(_vms.Count > 200 ? Candidates : _vms.Count).ToList();
                while (true)
                {
                    int best = -1;
                    double bestScore = double.MaxValue;
                    foreach (int v in pool)
                    {
                        if (placed[v] || !_room.Fits(v, h)) continue;
                        // Host links only: a rack term here made every host of a rack take the same mix (measured worse); the
                        // local search that follows prices rack links.
                        double added = AddCost(v, h, fromRack: _rackOfHost[h]);
                        double score = sharedFirst ? added - alone[v] : added / _vms[v].MemoryBytes;
                        if (score < bestScore - 1e-12) { bestScore = score; best = v; }
                    }
                    if (best < 0) break;
                    Put(best, h); placed[best] = true; left--;
                }
            }
            // Whatever did not fit where it was considered goes where it adds least.
            for (int v = 0; v < _vms.Count; v++)
            {
                if (placed[v]) continue;
                int best = -1;
                double bestAdded = double.MaxValue;
                for (int h = 0; h < _hosts.Count; h++)
                    if (_room.Fits(v, h) && AddCost(v, h, -2) < bestAdded) { bestAdded = AddCost(v, h, -2); best = h; }
                if (best < 0) throw NoFit(_vms[v], "traffic-aware");
                Put(v, best); placed[v] = true;
            }
        }

        private void Greedy()
        {
            var alone = Enumerable.Range(0, _vms.Count).Select(v => _contents.Empty.SizeWith(v)).ToArray();
            var order = Enumerable.Range(0, _vms.Count).OrderByDescending(v => _vms[v].MemoryBytes).ThenByDescending(v => alone[v]).ThenBy(v => _vms[v].Id, StringComparer.Ordinal);
            foreach (int v in order)
            {
                int best = -1;
                double bestAdded = double.MaxValue;
                for (int h = 0; h < _hosts.Count; h++)
                {
                    if (!_room.Fits(v, h)) continue;
                    double added = AddCost(v, h, fromRack: -2);
                    if (added < bestAdded - 1e-9 || (Math.Abs(added - bestAdded) <= 1e-9 && _room.Memory[h] > _room.Memory[best]))
                    {
                        best = h;
                        bestAdded = added;
                    }
                }
                if (best < 0) throw NoFit(_vms[v], "traffic-aware");
                Put(v, best);
            }
        }

        /// <summary>Page-links added by putting <paramref name="v"/> on host <paramref name="h"/> (its rack term unless it stays in <paramref name="fromRack"/>).</summary>
        private double AddCost(int v, int h, int fromRack)
        {
            double cost = _topology.HostLinkWeight * (_hostSet[h].SizeWith(v) - _hostSet[h].Size);
            int r = _rackOfHost[h];
            if (r >= 0 && r != fromRack) cost += _topology.RackLinkWeight * (_rackSet[r].SizeWith(v) - _rackSet[r].Size);
            return cost;
        }

        private void Put(int v, int h)
        {
            _hostOf[v] = h;
            _room.Take(v, h);
            _onHost[h].Add(v);
            _hostSet[h] = _hostSet[h].With(v);
            int r = _rackOfHost[h];
            if (r >= 0) { _onRack[r].Add(v); _rackSet[r] = _rackSet[r].With(v); }
        }

        private void Remove(int v)
        {
            int h = _hostOf[v];
            _room.Give(v, h);
            _onHost[h].Remove(v);
            _hostSet[h] = Build(_onHost[h]);
            int r = _rackOfHost[h];
            if (r >= 0) { _onRack[r].Remove(v); _rackSet[r] = Build(_onRack[r]); }
        }

        private IContentSet Build(IEnumerable<int> members, int except = -1, int plus = -1)
        {
            var s = _contents.Empty;
            foreach (int m in members) if (m != except) s = s.With(m);
            return plus >= 0 ? s.With(plus) : s;
        }

        private bool OutOfTime => _clock.Elapsed >= _budget;

        private void Improve()
        {
            bool improved = true;
            for (int pass = 0; improved && pass < 50 && !OutOfTime; pass++)
            {
                improved = false;
                for (int v = 0; v < _vms.Count && !OutOfTime; v++) improved |= TryMove(v);
                // Swaps cost O(n²) rebuilds: worthwhile when the fleet is small, where moves alone get stuck at capacity.
                if (_vms.Count <= 128)
                    for (int v = 0; v < _vms.Count && !OutOfTime; v++)
                        for (int u = v + 1; u < _vms.Count && !OutOfTime; u++) improved |= TrySwap(v, u);
                // Hosts differ in rack and room: exchanging all that two hosts hold can help where no single VM may move.
                if (_onRack.Length > 0)
                    for (int a = 0; a < _hosts.Count && !OutOfTime; a++)
                        for (int b = a + 1; b < _hosts.Count && !OutOfTime; b++) improved |= TryExchangeHosts(a, b);
            }
        }

        private bool TryMove(int v)
        {
            int from = _hostOf[v], fromRack = _rackOfHost[from];
            double removeGain = _topology.HostLinkWeight * (_hostSet[from].Size - Build(_onHost[from], except: v).Size);
            double rackRemoveGain = fromRack < 0 ? 0 : _topology.RackLinkWeight * (_rackSet[fromRack].Size - Build(_onRack[fromRack], except: v).Size);
            int best = -1;
            double bestDelta = -0.5; // strictly better by at least half a page
            for (int h = 0; h < _hosts.Count; h++)
            {
                if (h == from || !_room.Fits(v, h)) continue;
                double delta = AddCost(v, h, fromRack) - removeGain - (_rackOfHost[h] != fromRack ? rackRemoveGain : 0);
                if (delta < bestDelta) { bestDelta = delta; best = h; }
            }
            if (best < 0) return false;
            Remove(v);
            Put(v, best);
            return true;
        }

        private bool TryExchangeHosts(int a, int b)
        {
            int ra = _rackOfHost[a], rb = _rackOfHost[b];
            if (ra == rb || (_onHost[a].Count == 0 && _onHost[b].Count == 0)) return false;
            var onA = _onHost[a].ToArray();
            var onB = _onHost[b].ToArray();
            long memA = _hosts[a].CapacityBytes - onB.Sum(v => _vms[v].MemoryBytes), memB = _hosts[b].CapacityBytes - onA.Sum(v => _vms[v].MemoryBytes);
            long cpuA = (_hosts[a].CpuSlots == 0 ? int.MaxValue : _hosts[a].CpuSlots) - onB.Sum(v => (long)_vms[v].VCpus);
            long cpuB = (_hosts[b].CpuSlots == 0 ? int.MaxValue : _hosts[b].CpuSlots) - onA.Sum(v => (long)_vms[v].VCpus);
            if (memA < 0 || memB < 0 || cpuA < 0 || cpuB < 0) return false;
            double before = EstimatedCost();
            foreach (int v in onA) Remove(v);
            foreach (int v in onB) Remove(v);
            foreach (int v in onA) Put(v, b);
            foreach (int v in onB) Put(v, a);
            if (EstimatedCost() < before - 0.5) return true;
            foreach (int v in onA) Remove(v);
            foreach (int v in onB) Remove(v);
            foreach (int v in onA) Put(v, a);
            foreach (int v in onB) Put(v, b);
            return false;
        }

        private bool SwapFits(int v, int u)
        {
            int hv = _hostOf[v], hu = _hostOf[u];
            long memV = _room.Memory[hv] + _vms[v].MemoryBytes - _vms[u].MemoryBytes, memU = _room.Memory[hu] + _vms[u].MemoryBytes - _vms[v].MemoryBytes;
            long cpuV = (long)_room.Cpus[hv] + _vms[v].VCpus - _vms[u].VCpus, cpuU = (long)_room.Cpus[hu] + _vms[u].VCpus - _vms[v].VCpus;
            return memV >= 0 && memU >= 0 && cpuV >= 0 && cpuU >= 0;
        }

        private bool TrySwap(int v, int u)
        {
            int hv = _hostOf[v], hu = _hostOf[u];
            if (hv == hu || !SwapFits(v, u)) return false;
            double before = _topology.HostLinkWeight * (_hostSet[hv].Size + _hostSet[hu].Size);
            double after = _topology.HostLinkWeight * (Build(_onHost[hv], except: v, plus: u).Size + Build(_onHost[hu], except: u, plus: v).Size);
            int rv = _rackOfHost[hv], ru = _rackOfHost[hu];
            if (rv != ru)
            {
                if (rv >= 0) { before += _topology.RackLinkWeight * _rackSet[rv].Size; after += _topology.RackLinkWeight * Build(_onRack[rv], except: v, plus: u).Size; }
                if (ru >= 0) { before += _topology.RackLinkWeight * _rackSet[ru].Size; after += _topology.RackLinkWeight * Build(_onRack[ru], except: u, plus: v).Size; }
            }
            if (after >= before - 0.5) return false;
            Remove(v);
            Remove(u);
            Put(v, hu);
            Put(u, hv);
            return true;
        }
    }

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
