using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Source;

/// <summary>A round as the data plane sends it, and what its group order costs in joins and leaves.</summary>
public sealed record BuiltRound(RoundTransfer Transfer, long GroupSwitches, long GroupSwitchesLowerBound);

/// <summary>
/// Merges the shards' plans of a round into one <see cref="RoundTransfer"/>: two passes over the target groups, first
/// the contents several pages need, then those one page alone needs (the guest's writable working set is among them;
/// what it rewrites before its turn is withdrawn, not sent), each pass in the order that makes target hosts join and
/// leave least (a round starts and ends with none joined).
/// </summary>
public static class RoundTransferBuilder
{
    public static BuiltRound Build(int round, IEnumerable<(int Shard, ShardRoundPlan Plan)> plans, int targetCount, bool stopAndCopy,
        IReadOnlyList<DeviceStateTransfer> deviceStates, ulong activeTargets, ulong finalTargets)
    {
        var groups = new Dictionary<ulong, List<long>>();
        var soleGroups = new Dictionary<ulong, List<long>>();
        var maps = Enumerable.Range(0, targetCount).Select(_ => new List<PageMap>()).ToArray();
        foreach (var (_, plan) in plans.OrderBy(p => p.Shard))
        {
            foreach (var (mask, ids) in plan.ContentsByGroup)
                foreach (long id in ids)
                {
                    var pass = plan.SoleContents.Contains(id) ? soleGroups : groups;
                    if (!pass.TryGetValue(mask, out var list)) pass[mask] = list = new();
                    list.Add(id);
                }
            for (int t = 0; t < targetCount; t++)
                foreach (var (vm, page, id) in plan.MapsByTarget[t]) maps[t].Add(new PageMap(vm, page, id));
        }
        var order = GroupScheduler.Order(groups.Keys);
        var soleOrder = GroupScheduler.Order(soleGroups.Keys, start: order.Count > 0 ? order[^1] : 0);
        long switches = GroupScheduler.Switches([.. order, .. soleOrder]);
        long lowerBound = GroupScheduler.LowerBound(groups.Keys.Union(soleGroups.Keys).ToArray());
        var ordered = order.Select(mask => new GroupTransfer(mask, groups[mask]))
            .Concat(soleOrder.Select(mask => new GroupTransfer(mask, soleGroups[mask]))).ToArray();
        var transfer = new RoundTransfer(round, stopAndCopy, ordered, maps, deviceStates, activeTargets, stopAndCopy ? finalTargets : 0);
        return new BuiltRound(transfer, switches, lowerBound);
    }
}
