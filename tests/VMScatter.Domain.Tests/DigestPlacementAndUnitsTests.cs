using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain.Units;
using Xunit;

namespace VMScatter.Domain.Tests;

public class DigestPlacementAndUnitsTests
{
    [Fact]
    public void Digest_covers_every_byte_of_memory_and_the_device_state()
    {
        using var a = new NativeGuestMemory(300);
        using var b = new NativeGuestMemory(300);
        var page = new byte[Page.Size];
        page[17] = 5;
        a.WritePage(299, page);
        b.WritePage(299, page);
        byte[] device = [1, 2, 3];
        Assert.Equal(MemoryDigest.Compute(a, device), MemoryDigest.Compute(b, device));
        page[4095] = 1;
        b.WritePage(299, page);
        Assert.NotEqual(MemoryDigest.Compute(a, device), MemoryDigest.Compute(b, device));
        Assert.NotEqual(MemoryDigest.Compute(a, device), MemoryDigest.Compute(a, [1, 2, 4]));
    }

    private static (PlacementVm Vm, long[] Contents) Vm(string id, long memory, params int[] contentRanges)
    {
        var set = new HashSet<long>();
        for (int r = 0; r < contentRanges.Length; r += 2)
            for (int c = contentRanges[r]; c < contentRanges[r + 1]; c++) set.Add(c);
        return (new PlacementVm(id, memory), set.ToArray());
    }

    private static SketchContentModel Sketches(IEnumerable<long[]> contents, int k = 256) =>
        new(contents.Select(set =>
        {
            var sketch = new BottomKSketch(k);
            foreach (var c in set) sketch.Add(new ContentHash(7, (ulong)c));
            return sketch;
        }).ToArray());

    [Fact]
    public void Traffic_aware_placement_puts_vms_that_share_pages_together_within_capacity()
    {
        // os: 0..3000 in all; app A: 10000..14000 (a1, a2); app B: 20000..24000 (b1, b2); each VM 2000 unique pages.
        var fleet = new[]
        {
            // In this order round-robin splits both pairs.
            Vm("a1", 100, 0, 3000, 10000, 14000, 100000, 102000), Vm("a2", 100, 0, 3000, 10000, 14000, 120000, 122000),
            Vm("b1", 100, 0, 3000, 20000, 24000, 110000, 112000), Vm("b2", 100, 0, 3000, 20000, 24000, 130000, 132000),
        };
        var vms = fleet.Select(f => f.Vm).ToArray();
        var hosts = new[] { new PlacementHost("h1", 200), new PlacementHost("h2", 200) };
        foreach (IContentModel model in new IContentModel[] { Sketches(fleet.Select(f => f.Contents)), new ExactContentModel(fleet.Select(f => f.Contents).ToArray()) })
        {
            var ours = Placer.Place(vms, hosts, model, PlacementStrategy.TrafficAware);
            Assert.Equal(ours.HostOf["a1"], ours.HostOf["a2"]);
            Assert.Equal(ours.HostOf["b1"], ours.HostOf["b2"]);
            Assert.NotEqual(ours.HostOf["a1"], ours.HostOf["b1"]);
            var roundRobin = Placer.Place(vms, hosts, model, PlacementStrategy.RoundRobin);
            Assert.True(ours.Traffic < roundRobin.Traffic * 0.9, $"{ours.Traffic} vs {roundRobin.Traffic}");
        }
        // Exactly: uplink carries 3000 + 2*4000 + 4*2000 = 19000 pages; each host 3000 + 4000 + 2*2000 = 11000.
        var exact = Placer.Place(vms, hosts, new ExactContentModel(fleet.Select(f => f.Contents).ToArray()), PlacementStrategy.TrafficAware);
        Assert.Equal(19000 + 2 * 11000, exact.Traffic);
    }

    [Fact]
    public void Racks_pull_vms_that_share_pages_under_one_switch()
    {
        // Two racks of two hosts, one VM per host: the pair sharing an application should share a rack.
        var fleet = new[] { Vm("a1", 100, 0, 1000, 5000, 9000), Vm("b1", 100, 0, 1000, 20000, 24000), Vm("a2", 100, 0, 1000, 5000, 9000), Vm("b2", 100, 0, 1000, 20000, 24000) };
        var hosts = new[] { new PlacementHost("r1h1", 100, Rack: "r1"), new PlacementHost("r1h2", 100, Rack: "r1"), new PlacementHost("r2h1", 100, Rack: "r2"), new PlacementHost("r2h2", 100, Rack: "r2") };
        var model = new ExactContentModel(fleet.Select(f => f.Contents).ToArray());
        var r = Placer.Place(fleet.Select(f => f.Vm).ToArray(), hosts, model, PlacementStrategy.TrafficAware, new NetworkTopology(RackLinkWeight: 4));
        string Rack(string vm) => r.HostOf[vm][..2];
        Assert.Equal(Rack("a1"), Rack("a2"));
        Assert.Equal(Rack("b1"), Rack("b2"));
        var (_, optimum) = ExhaustivePlacer.Optimum(fleet.Select(f => f.Vm).ToArray(), hosts, model, new NetworkTopology(RackLinkWeight: 4));
        Assert.Equal(optimum, r.Traffic);
    }

    [Fact]
    public void A_vm_larger_than_every_host_is_refused_with_its_name()
    {
        var (vm, contents) = Vm("big", 500, 0, 10);
        var e = Assert.Throws<PlacementException>(() => Placer.Place([vm], [new PlacementHost("h", 400)], new ExactContentModel([contents]), PlacementStrategy.TrafficAware));
        Assert.Contains("big", e.Message);
    }

    [Property(MaxTest = 150)]
    public Property Every_vm_is_placed_exactly_once_within_capacity_and_never_below_the_optimum(PositiveInt seed)
    {
        var random = new Random(seed.Get);
        int n = random.Next(1, 8), m = random.Next(1, 4);
        var fleet = Enumerable.Range(0, n).Select(i => Vm($"v{i}", random.Next(1, 5) * 64, 0, random.Next(1, 500), 1000 + i * 300, 1000 + i * 300 + random.Next(1, 300))).ToArray();
        var vms = fleet.Select(f => f.Vm).ToArray();
        var hosts = Enumerable.Range(0, m).Select(h => new PlacementHost($"h{h}", random.Next(4, 12) * 64, CpuSlots: random.Next(0, 4))).ToArray();
        var model = new ExactContentModel(fleet.Select(f => f.Contents).ToArray());
        double optimum;
        try { optimum = ExhaustivePlacer.Optimum(vms, hosts, model).Traffic; }
        catch (PlacementException) { optimum = double.NaN; }
        foreach (var strategy in Enum.GetValues<PlacementStrategy>())
        {
            PlacementResult r;
            try { r = Placer.Place(vms, hosts, model, strategy, seed: seed.Get); }
            catch (PlacementException) { continue; } // a heuristic may fail to pack; it never packs over capacity
            if (r.HostOf.Count != n || vms.Any(v => !r.HostOf.ContainsKey(v.Id))) return false.ToProperty();
            foreach (var h in hosts)
            {
                var on = vms.Where(v => r.HostOf[v.Id] == h.Id).ToArray();
                if (on.Sum(v => v.MemoryBytes) > h.CapacityBytes || (h.CpuSlots > 0 && on.Sum(v => v.VCpus) > h.CpuSlots)) return false.ToProperty();
            }
            if (double.IsNaN(optimum) || r.Traffic < optimum - 1e-9) return false.ToProperty(); // it fit, so the optimum exists and bounds it
            // Few enough assignments to try them all: the traffic-aware search finds the optimum itself.
            if (strategy == PlacementStrategy.TrafficAware && Math.Pow(m, n) <= 64 && Math.Abs(r.Traffic - optimum) > 1e-9) return false.ToProperty();
        }
        return true.ToProperty();
    }

    [Property(MaxTest = 200)]
    public Property Group_order_visits_every_group_once_and_is_never_below_its_lower_bound(PositiveInt seed)
    {
        var random = new Random(seed.Get);
        var groups = Enumerable.Range(0, random.Next(1, 40)).Select(_ => (ulong)random.Next(1, 1 << 6)).Distinct().ToArray();
        var order = GroupScheduler.Order(groups);
        long switches = GroupScheduler.Switches(order), bound = GroupScheduler.LowerBound(groups);
        bool sameGroups = order.Count == groups.Length && !order.Except(groups).Any();
        return (sameGroups && switches >= bound && switches <= GroupScheduler.Switches(groups)).ToProperty();
    }

    [Fact]
    public void Group_order_beats_page_index_order_and_meets_a_tight_bound_on_a_nested_family()
    {
        // Hosts 0..5; groups are all intervals [i, j]: the consecutive-ones property allows 2 events per host.
        var groups = new List<ulong>();
        for (int i = 0; i < 6; i++) for (int j = i; j < 6; j++) groups.Add(((1UL << (j + 1)) - 1) & ~((1UL << i) - 1));
        var pageOrder = Enumerable.Range(0, 200).Select(p => groups[p * 7 % groups.Count]).ToArray();
        var order = GroupScheduler.Order(groups);
        Assert.True(GroupScheduler.Switches(order) < GroupScheduler.Switches(pageOrder) / 5);
        Assert.True(GroupScheduler.Switches(order) <= 1.1 * GroupScheduler.LowerBound(groups), $"{GroupScheduler.Switches(order)} vs bound {GroupScheduler.LowerBound(groups)}");
    }

    [Theory]
    [InlineData("256MiB", 256L << 20)]
    [InlineData("1GiB", 1L << 30)]
    [InlineData("4096", 4096)]
    [InlineData("1.5GB", 1_500_000_000)]
    public void Sizes_parse(string text, long bytes)
    {
        Assert.True(ByteSize.TryParse(text, out var parsed));
        Assert.Equal(bytes, parsed);
    }

    [Theory]
    [InlineData("1Gbit", 1_000_000_000)]
    [InlineData("100 Mbit", 100_000_000)]
    [InlineData("2.5gbps", 2_500_000_000)]
    [InlineData("unlimited", 0)]
    [InlineData("0", 0)]
    public void Link_rates_parse(string text, long bits)
    {
        Assert.True(LinkRate.TryParse(text, out var parsed));
        Assert.Equal(bits, parsed);
    }

    [Theory]
    [InlineData("fast")]
    [InlineData("1GB")]
    [InlineData("0 Mbit")]
    public void Bad_link_rates_do_not_parse(string text) => Assert.False(LinkRate.TryParse(text, out _));

    [Theory]
    [InlineData("")]
    [InlineData("MiB")]
    [InlineData("12XB")]
    [InlineData("-5")]
    public void Bad_sizes_do_not_parse(string text) => Assert.False(ByteSize.TryParse(text, out _));
}
