using VMScatter.Cluster.Protocol;
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

    // What a scheduler that takes over needs to reconcile the migration with its hosts (absent from an older journal's
    // events: SourceHostId stays null then, and the migration is only recorded as aborted).
    public HostId? SourceHostId { get; set; }
    public IReadOnlyList<VmId> VmIds { get; set; } = [];
    public IReadOnlyList<HostId> TargetHostIds { get; set; } = [];
    public DateTime StartedUtc { get; set; }
    public string Strategy { get; set; } = "";
    public Dictionary<VmId, HostId> TargetOfVm { get; } = new();
    public Dictionary<VmId, VmHandedOver> HandedOverEvents { get; } = new();
    public Dictionary<VmId, string> FailReasons { get; } = new();
    public string? AbortReason { get; set; }
}
