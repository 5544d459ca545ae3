using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
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
        Assert.Equal(a.ComputeDigest(device), b.ComputeDigest(device));
        Assert.Equal(a.ComputeDigest(device), MemoryDigest.Compute(a, device));
        page[4095] = 1;
        b.WritePage(299, page);
        Assert.NotEqual(a.ComputeDigest(device), b.ComputeDigest(device));
        Assert.NotEqual(a.ComputeDigest(device), a.ComputeDigest([1, 2, 4]));
    }

    private static PlacementVm Vm(string id, long memory, params int[] contentRanges)
    {
        var sketch = new BottomKSketch(256);
        var set = new HashSet<int>();
        for (int r = 0; r < contentRanges.Length; r += 2)
            for (int c = contentRanges[r]; c < contentRanges[r + 1]; c++) set.Add(c);
        foreach (var c in set) sketch.Add(new ContentHash(7, (ulong)c));
        return new PlacementVm(id, memory, set.Count, sketch);
    }

    [Fact]
    public void Traffic_aware_placement_puts_vms_that_share_pages_together_within_capacity()
    {
        // os: 0..3000 in all; app A: 10000..14000 (a1, a2); app B: 20000..24000 (b1, b2); each VM 2000 unique pages.
        var vms = new[]
        {
            // In this order round-robin splits both pairs.
            Vm("a1", 100, 0, 3000, 10000, 14000, 100000, 102000), Vm("a2", 100, 0, 3000, 10000, 14000, 120000, 122000),
            Vm("b1", 100, 0, 3000, 20000, 24000, 110000, 112000), Vm("b2", 100, 0, 3000, 20000, 24000, 130000, 132000),
        };
        var hosts = new[] { new PlacementHost("h1", 200), new PlacementHost("h2", 200) };
        var ours = Placer.Place(vms, hosts, PlacementStrategy.TrafficAware);
        Assert.Equal(ours.HostOf["a1"], ours.HostOf["a2"]);
        Assert.Equal(ours.HostOf["b1"], ours.HostOf["b2"]);
        Assert.NotEqual(ours.HostOf["a1"], ours.HostOf["b1"]);
        var roundRobin = Placer.Place(vms, hosts, PlacementStrategy.RoundRobin);
        Assert.True(ours.EstimatedPages < roundRobin.EstimatedPages * 0.85, $"{ours.EstimatedPages} vs {roundRobin.EstimatedPages}");
    }

    [Fact]
    public void A_vm_larger_than_every_host_is_refused_with_its_name()
    {
        var e = Assert.Throws<PlacementException>(() => Placer.Place([Vm("big", 500, 0, 10)], [new PlacementHost("h", 400)], PlacementStrategy.TrafficAware));
        Assert.Contains("big", e.Message);
    }

    [Property(MaxTest = 150)]
    public Property Every_vm_is_placed_exactly_once_within_capacity(PositiveInt seed)
    {
        var random = new Random(seed.Get);
        int n = random.Next(1, 9), m = random.Next(1, 4);
        var vms = Enumerable.Range(0, n).Select(i => Vm($"v{i}", random.Next(1, 5) * 64, 0, random.Next(1, 500), 1000 + i * 300, 1000 + i * 300 + random.Next(1, 300))).ToArray();
        var hosts = Enumerable.Range(0, m).Select(h => new PlacementHost($"h{h}", random.Next(4, 12) * 64)).ToArray();
        bool fits = vms.Sum(v => v.MemoryBytes) <= hosts.Sum(h => h.CapacityBytes) && vms.Max(v => v.MemoryBytes) <= hosts.Max(h => h.CapacityBytes);
        foreach (var strategy in Enum.GetValues<PlacementStrategy>())
        {
            PlacementResult r;
            try { r = Placer.Place(vms, hosts, strategy); }
            catch (PlacementException) { continue; } // bin packing can fail heuristically; never silently over capacity
            if (r.HostOf.Count != n || vms.Any(v => !r.HostOf.ContainsKey(v.Id))) return false.ToProperty();
            foreach (var h in hosts)
                if (vms.Where(v => r.HostOf[v.Id] == h.Id).Sum(v => v.MemoryBytes) > h.CapacityBytes) return false.ToProperty();
        }
        return true.ToProperty().Classify(fits, "fits");
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
    [InlineData("")]
    [InlineData("MiB")]
    [InlineData("12XB")]
    [InlineData("-5")]
    public void Bad_sizes_do_not_parse(string text) => Assert.False(ByteSize.TryParse(text, out _));
}
