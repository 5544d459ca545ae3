using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;
using Xunit;

namespace VMScatter.Domain.Tests;

public class SchedulePropertyTests
{
    private sealed class Memory(byte[][] pages) : IGuestMemory
    {
        public int PageCount => pages.Length;
        public void ReadPage(int index, Span<byte> destination) => pages[index].CopyTo(destination);
    }

    /// <summary>
    /// Over random fleets and placements: every distinct non-zero content is planned exactly once, in the group of
    /// exactly the targets whose VMs hold it; every page of every VM is mapped, on its own target; and the group
    /// order sends every group exactly once.
    /// </summary>
    [Property(MaxTest = 100)]
    public Property The_schedule_delivers_every_distinct_page_to_exactly_its_target_set(PositiveInt seed)
    {
        var random = new Random(seed.Get);
        int vms = random.Next(1, 7), targets = random.Next(1, 5), shards = random.Next(1, 4), palette = random.Next(1, 20);
        var contentOf = new byte[palette + 1][];
        contentOf[0] = new byte[Page.Size];
        for (int c = 1; c <= palette; c++) { contentOf[c] = new byte[Page.Size]; contentOf[c][0] = (byte)c; contentOf[c][1] = 1; }
        var memories = Enumerable.Range(0, vms).Select(_ => Enumerable.Range(0, random.Next(1, 30)).Select(_ => random.Next(palette + 1)).ToArray()).ToArray();
        var targetOf = Enumerable.Range(0, vms).Select(_ => random.Next(targets)).ToArray();
        var dedup = Enumerable.Range(0, shards).Select(s => new DedupShard(s, shards)).ToArray();
        foreach (var d in dedup) d.BeginRound(0);
        for (int v = 0; v < vms; v++)
        {
            var mem = new Memory(memories[v].Select(c => contentOf[c]).ToArray());
            for (int p = 0; p < memories[v].Length; p++)
            {
                var bytes = contentOf[memories[v][p]];
                var hash = ContentHash.Compute(bytes);
                dedup[Page.IsZero(bytes) ? 0 : ContentIndex.ShardOf(hash, shards)].Add(v, mem, p, hash);
            }
        }
        var plans = dedup.Select(d => d.Plan(targetOf, targets)).ToArray();
        var groupOfContent = new Dictionary<long, ulong>();
        foreach (var plan in plans)
            foreach (var (mask, ids) in plan.ContentsByGroup)
                foreach (var id in ids)
                    if (!groupOfContent.TryAdd(id, mask)) return false.Label($"content {id} planned twice");
        // Expected target set of each palette content, from the fleet itself.
        var expected = new Dictionary<int, ulong>();
        for (int v = 0; v < vms; v++) foreach (var c in memories[v]) if (c != 0) expected[c] = expected.GetValueOrDefault(c) | 1UL << targetOf[v];
        var maps = plans.SelectMany(p => p.MapsByTarget.SelectMany((list, t) => list.Select(m => (Target: t, m.Vm, m.Page, m.ContentId)))).ToList();
        if (groupOfContent.Count != expected.Count) return false.Label("distinct contents planned != held");
        foreach (var (target, vm, page, id) in maps)
        {
            if (target != targetOf[vm]) return false.Label("map on the wrong target");
            int c = memories[vm][page];
            if (c == 0 || groupOfContent[id] != expected[c]) return false.Label($"content of {vm}/{page} goes to the wrong group");
        }
        int nonZero = memories.Sum(m => m.Count(c => c != 0));
        if (maps.Count != nonZero || maps.Select(m => (m.Vm, m.Page)).Distinct().Count() != nonZero) return false.Label("not every non-zero page mapped once");
        var order = GroupScheduler.Order(groupOfContent.Values.Distinct().ToArray());
        return (order.Count == groupOfContent.Values.Distinct().Count() && order.Distinct().Count() == order.Count).Label("each group once");
    }
}
