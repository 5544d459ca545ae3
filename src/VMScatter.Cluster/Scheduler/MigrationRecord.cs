using VMScatter.Domain;
using VMScatter.Domain.Reports;

namespace VMScatter.Cluster.Scheduler;

/// <summary>What the journal says about one migration.</summary>
public sealed class MigrationRecord
{
    public MigrationPhase Phase { get; set; } = MigrationPhase.Analysing;
    public List<VmId> HandedOver { get; } = new();
    public List<VmId> Failed { get; } = new();
    /// <summary>VMs re-placed after their target was lost, and their new target.</summary>
    public Dictionary<VmId, HostId> Replaced { get; } = new();
    public MigrationReport? Report { get; set; }
    public bool Ended => Phase is MigrationPhase.Completed or MigrationPhase.Aborted;
}
