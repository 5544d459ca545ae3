using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Target;

/// <summary>
/// What a target host checks in a <see cref="PrepareReceive"/> before it takes memory or names a file: the wire runs no
/// constructor, so ids, sizes, the key, the indexes and duplicates are checked here. Pure.
/// </summary>
public static class PrepareReceiveCheck
{
    /// <summary>Why the request cannot be served by a host of <paramref name="capacityBytes"/>; null when it can.</summary>
    public static string? Problem(PrepareReceive m, long capacityBytes)
    {
        if (m.Vms.Count == 0) return "no VMs to receive";
        if (m.SelfIndex < 0 || m.SelfIndex >= m.Targets.Count || m.Targets.Count > TargetMask.MaxTargets) return $"target index {m.SelfIndex} of {m.Targets.Count}";
        if (m.Keys is null) return "no data-plane keys";
        if (m.Keys.Problem(m.SelfIndex) is { } keys) return keys;
        if (m.Keys.LinkCount != m.Targets.Count) return $"data-plane link keys for {m.Keys.LinkCount} hosts, not the migration's {m.Targets.Count}";
        foreach (var v in m.Vms)
        {
            if (!Ids.IsValid(v.Vm.Id.Value)) return $"VM id '{v.Vm.Id.Value}' is not valid";
            if (v.Vm.MemoryBytes <= 0 || v.Vm.MemoryBytes % Page.Size != 0 || v.Vm.MemoryBytes > capacityBytes)
                return $"VM {v.Vm.Id}: memory size {v.Vm.MemoryBytes} is not a positive multiple of {Page.Size} within this host's {capacityBytes}";
            if (v.TargetIndex != m.SelfIndex) return $"VM {v.Vm.Id} is assigned to target {v.TargetIndex}, not to this host ({m.SelfIndex})";
        }
        return m.Vms.Select(v => v.Vm.Id).Distinct().Count() == m.Vms.Count && m.Vms.Select(v => v.VmIndex).Distinct().Count() == m.Vms.Count
            ? null : "a VM is listed twice";
    }
}
