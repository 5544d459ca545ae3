using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Scheduler;

/// <summary>A request the scheduler can run: its source, its VMs and its targets, all registered.</summary>
internal sealed record ValidatedRequest(RegisterSourceHost Source, IReadOnlyList<VmDescription> Vms, IReadOnlyList<HostId> TargetHostIds);

/// <summary>Checks a <see cref="StartMigration"/> against what the scheduler knows; pure.</summary>
internal static class MigrationRequestValidator
{
    /// <param name="freeBytes">A registered target's free memory less what migrations in flight placed on it.</param>
    /// <param name="migrating">Whether a VM is part of a migration in flight.</param>
    public static ValidatedRequest Validate(StartMigration m, bool exists, IReadOnlyDictionary<HostId, RegisterSourceHost> sources,
        IReadOnlyDictionary<HostId, RegisterTargetHost> targets, Func<HostId, long> freeBytes, Func<VmId, bool> migrating, out string? rejection)
    {
        rejection = Check(m, exists, sources, targets, freeBytes, migrating, out var request);
        return request!;
    }

    private static string? Check(StartMigration m, bool exists, IReadOnlyDictionary<HostId, RegisterSourceHost> sources,
        IReadOnlyDictionary<HostId, RegisterTargetHost> targets, Func<HostId, long> freeBytes, Func<VmId, bool> migrating, out ValidatedRequest? request)
    {
        request = null;
        if (exists) return $"migration {m.MigrationId} already exists";
        if (!sources.TryGetValue(m.SourceHostId, out var source))
            return $"unknown source host '{m.SourceHostId}' (registered: {List(sources.Keys)})";
        var all = source.Vms.ToDictionary(v => v.Id);
        var missing = m.VmIds.Where(id => !all.ContainsKey(id)).ToArray();
        if (missing.Length > 0) return $"source {m.SourceHostId} does not run {string.Join(", ", missing)}";
        IReadOnlyList<VmDescription> vms = m.VmIds.Count == 0 ? source.Vms : m.VmIds.Distinct().Select(id => all[id]).ToArray();
        if (vms.Count == 0) return $"source {m.SourceHostId} runs no VMs";
        var busy = vms.Where(v => migrating(v.Id)).Select(v => v.Id).ToArray();
        if (busy.Length > 0) return $"already migrating: {string.Join(", ", busy)}";
        IReadOnlyList<HostId> targetIds = m.TargetHostIds.Count == 0 ? targets.Keys.Order().ToArray() : m.TargetHostIds.Distinct().ToArray();
        if (targetIds.Count == 0) return "no target hosts: at least one is required";
        var unknown = targetIds.Where(t => !targets.ContainsKey(t)).ToArray();
        if (unknown.Length > 0) return $"unknown target host(s) {string.Join(", ", unknown)} (registered: {List(targets.Keys)})";
        if (targetIds.Count > TargetMask.MaxTargets) return $"at most {TargetMask.MaxTargets} target hosts per migration";
        if (targetIds.Contains(m.SourceHostId)) return "the source host cannot also be a target";
        // The placer's own capacity check, on what is free now: a request that cannot fit is refused before anything starts.
        var hosts = targetIds.Select(t => new PlacementHost(t.Value, Math.Max(0, freeBytes(t)))).ToArray();
        string? capacity = Placer.CapacityProblem(vms.Select(v => new PlacementVm(v.Id.Value, v.MemoryBytes)).ToArray(), hosts);
        if (capacity is not null) return capacity;
        request = new ValidatedRequest(source, vms, targetIds);
        return null;
    }

    private static string List(IEnumerable<HostId> names) => names.Any() ? string.Join(", ", names.Order()) : "none";
}
