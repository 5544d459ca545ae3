using System.Diagnostics;

namespace VMScatter.Domain.Placement;

/// <summary>(One search's state and its moves together, ~330 lines: the cost bookkeeping of host and rack sets is shared by every move.) The traffic-aware strategy: greedy insertion by added page-links, then moves and swaps while they lower the cost and the budget lasts.</summary>
public static partial class Placer
{
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
            if (Math.Pow(_hosts.Count, _vms.Count) <= ExhaustiveLimit && Exhaustive() is { } optimum)
            {
                Reset();
                for (int v = 0; v < _vms.Count; v++) Put(v, optimum[v]);
                return _hostOf;
            }
            var best = Construct();
            Reset();
            for (int v = 0; v < _vms.Count; v++) Put(v, best![v]);
            Improve();
            IteratedLocalSearch();
            return _hostOf;
        }

        /// <summary>Assignments few enough to price every one: a small fleet's placement is then exact and quick, where the local search below would run out its budget on it.</summary>
        private const int ExhaustiveLimit = 64;

        /// <summary>The cheapest assignment that fits, by depth-first search over VMs; null if none fits (the constructions then name the VM) or the budget ran out first.</summary>
        private int[]? Exhaustive()
        {
            Reset();
            int[]? best = null;
            double bestCost = double.MaxValue;
            bool outOfTime = false;
            void Visit(int v)
            {
                if (outOfTime || (outOfTime = OutOfTime)) return;
                if (v == _vms.Count)
                {
                    double cost = EstimatedCost();
                    if (cost < bestCost - 1e-9) { bestCost = cost; best = (int[])_hostOf.Clone(); }
                    return;
                }
                for (int h = 0; h < _hosts.Count; h++)
                {
                    if (!_room.Fits(v, h)) continue;
                    Put(v, h);
                    Visit(v + 1);
                    Remove(v);
                }
            }
            Visit(0);
            return outOfTime ? null : best;
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
}
