using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Source;

/// <summary>Target hosts whose VMs complete together: their pre-copy rounds, stop-and-copy and handover.</summary>
/// <param name="Vms">The wave's VMs by migration-wide index, ascending.</param>
public sealed record Wave(int Index, ulong Targets, IReadOnlyList<int> Vms);

/// <summary>In which order target hosts complete. Staggered: one wave per target host used, in index order; together: one wave.</summary>
public static class WavePlan
{
    public static IReadOnlyList<Wave> Of(IReadOnlyList<int> targetOfVm, HandoverMode mode)
    {
        var used = targetOfVm.Distinct().Order().ToArray();
        int[][] groups = mode == HandoverMode.Staggered ? used.Select(t => new[] { t }).ToArray() : [used];
        return groups.Select((targets, i) =>
        {
            ulong mask = TargetMask.Of(targets);
            var vms = Enumerable.Range(0, targetOfVm.Count).Where(v => TargetMask.Contains(mask, targetOfVm[v])).ToArray();
            return new Wave(i, mask, vms);
        }).ToArray();
    }
}
