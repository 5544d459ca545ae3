using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// One re-placement: the VMs each target is to take (an empty list: it only learns the targets' endpoints), until every
/// live target of the migration confirmed; then the source is told, with the targets as they were.
/// </summary>
internal sealed class ReplacementBatch
{
    public required IReadOnlyList<TargetEndpoint> Targets { get; init; }
    public Dictionary<HostId, List<VmAssignment>> Waiting { get; } = new();
    public List<VmAssignment> Confirmed { get; } = new();
}

/// <summary>The scheduler's working state for one migration in flight (not persisted; the journal holds the decisions).</summary>
internal sealed class MigrationRun
{
    public required MigrationId Id { get; init; }
    public required StartMigration Request { get; init; }
    public required IActorRef Requester { get; set; }
    public required HostId SourceHostId { get; init; }
    public required IActorRef SourceHost { get; init; }
    public required IReadOnlyList<VmDescription> Vms { get; init; }
    public required IReadOnlyList<HostId> TargetHostIds { get; init; }
    public required DateTime StartedUtc { get; init; }
    public MigrationPhase Phase { get; set; } = MigrationPhase.Analysing;
    /// <summary>What this scheduler saw over time (not journaled: a scheduler taking over starts none), for the report.</summary>
    public List<Domain.Reports.ReportSample> Samples { get; } = new();
    public List<Domain.Reports.ReportHandover> Handovers { get; } = new();
    public double? PlacedAtSeconds { get; set; }
    public double SecondsNow => (DateTime.UtcNow - StartedUtc).TotalSeconds;
    public IActorRef? SourceMigration { get; set; }
    public IReadOnlyList<VmProfile> Profiles { get; set; } = [];
    public long DistinctPages { get; set; }
    public string Strategy { get; set; } = "";
    public Dictionary<VmId, HostId> TargetOfVm { get; } = new();
    public List<TargetEndpoint> Targets { get; } = new();
    public Dictionary<HostId, IActorRef> TargetRefs { get; } = new();
    public HashSet<HostId> ReadyTargets { get; } = new();
    public TransferCompleted? Transfer { get; set; }
    /// <summary>Source digests and pause times of the VMs whose wave is through (all of them once the transfer completed).</summary>
    public Dictionary<VmId, string> SourceDigestOf { get; } = new();
    public Dictionary<VmId, long> PausedAt { get; } = new();
    /// <summary>How the source found each transferred VM's dirty pages (its report line), where the backend says.</summary>
    public Dictionary<VmId, string> DirtyTrackingOf { get; } = new();
    public Dictionary<HostId, TargetDigests> TargetDigests { get; } = new();
    public Dictionary<VmId, string> TargetDigestOf { get; } = new();
    public Dictionary<VmId, VmHandedOver> HandedOver { get; } = new();
    public HashSet<VmId> Released { get; } = new();
    public HashSet<VmId> ResumedOnSource { get; } = new();
    /// <summary>VMs a target was told to resume: only its answer (or its leaving) decides them, never a timeout.</summary>
    public HashSet<VmId> ResumeRequested { get; } = new();
    /// <summary>No confirmation will come from the source: it left, never started the migration, or timed out.</summary>
    public bool SourceWillNotConfirm { get; set; }
    public Dictionary<VmId, string> Failed { get; } = new();
    /// <summary>Targets lost mid-migration: they get nothing more, and their VMs not handed over are re-placed.</summary>
    public HashSet<HostId> LostTargets { get; } = new();
    public List<string> LostReasons { get; } = new();
    /// <summary>VMs of a lost target that run on the source until re-placed.</summary>
    public HashSet<VmId> Orphans { get; } = new();
    /// <summary>Re-placements waiting for their targets to be ready (<see cref="ReceiverExtended"/>), oldest first.</summary>
    public List<ReplacementBatch> PendingReplacements { get; } = new();
    public List<Domain.Reports.VmReplacement> Replacements { get; } = new();
    public string? Error { get; set; }
    /// <summary>The source's latest progress report and the rate since its first (the console's status).</summary>
    public TransferRate Progress { get; } = new();

    public bool Decided(VmId vmId) => HandedOver.ContainsKey(vmId) || Failed.ContainsKey(vmId);

    public bool Moves(VmId vmId) => Vms.Any(v => v.Id == vmId);

    /// <summary>A target of this migration: requested, or taken on for re-placed VMs.</summary>
    public bool Involves(HostId host) => TargetHostIds.Contains(host) || TargetRefs.ContainsKey(host);

    /// <summary>Every VM runs in exactly one place, confirmed: on its target (and stopped on the source), or on the source.</summary>
    public bool AllSettled => Vms.All(v =>
        (Failed.ContainsKey(v.Id) && (ResumedOnSource.Contains(v.Id) || SourceWillNotConfirm)) ||
        (HandedOver.ContainsKey(v.Id) && (Released.Contains(v.Id) || SourceWillNotConfirm)));
}
