using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// Anyone → a source or target host actor: what runs here now. Read by the chaos harness (and an operator's check) to
// compare what the hosts really run with what the journal says, without trusting either side's report alone.

public sealed record GetHostInventory : IVmScatterMessage
{
    public static readonly GetHostInventory Instance = new();
}

/// <param name="Running">VMs running on this host now.</param>
/// <param name="Paused">VMs held paused here: on a source, paused for a handover; on a target, granted and still starting.</param>
public sealed record HostInventory(HostId HostId, IReadOnlyList<VmId> Running, IReadOnlyList<VmId> Paused) : IVmScatterMessage;
