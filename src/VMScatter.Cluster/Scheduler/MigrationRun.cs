using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>The scheduler's working state for one migration in flight (not persisted; the journal holds the decisions).</summary>
internal sealed class MigrationRun
{
    public required Guid Id { get; init; }
    public required StartMigration Request { get; init; }
    public required IActorRef Requester { get; init; }
    public required string SourceHostId { get; init; }
    public required IActorRef SourceHost { get; init; }
    public required IReadOnlyList<VmDescription> Vms { get; init; }
    public required IReadOnlyList<string> TargetHostIds { get; init; }
    public required DateTime StartedUtc { get; init; }
    public MigrationPhase Phase { get; set; } = MigrationPhase.Analysing;
    public IActorRef? SourceMigration { get; set; }
    public IReadOnlyList<VmProfile> Profiles { get; set; } = [];
    public long DistinctPages { get; set; }
    public string Strategy { get; set; } = "";
    public Dictionary<string, string> TargetOfVm { get; } = new();
    public List<TargetEndpoint> Targets { get; } = new();
    public Dictionary<string, IActorRef> TargetRefs { get; } = new();
    public HashSet<string> ReadyTargets { get; } = new();
    public TransferCompleted? Transfer { get; set; }
    /// <summary>Source digests and pause times of the VMs whose wave is through (all of them once the transfer completed).</summary>
    public Dictionary<string, string> SourceDigestOf { get; } = new();
    public Dictionary<string, long> PausedAt { get; } = new();
    public Dictionary<string, TargetDigests> TargetDigests { get; } = new();
    public Dictionary<string, string> TargetDigestOf { get; } = new();
    public Dictionary<string, VmHandedOver> HandedOver { get; } = new();
    public HashSet<string> Released { get; } = new();
    public HashSet<string> ResumedOnSource { get; } = new();
    /// <summary>VMs a target was told to resume: only its answer (or its leaving) decides them, never a timeout.</summary>
    public HashSet<string> ResumeRequested { get; } = new();
    /// <summary>No confirmation will come from the source: it left, never started the migration, or timed out.</summary>
    public bool SourceWillNotConfirm { get; set; }
    public Dictionary<string, string> Failed { get; } = new();
    public string? Error { get; set; }

    public bool Decided(string vmId) => HandedOver.ContainsKey(vmId) || Failed.ContainsKey(vmId);

    public bool Moves(string vmId) => Vms.Any(v => v.Id == vmId);

    /// <summary>Every VM runs in exactly one place, confirmed: on its target (and stopped on the source), or on the source.</summary>
    public bool AllSettled => Vms.All(v =>
        (Failed.ContainsKey(v.Id) && (ResumedOnSource.Contains(v.Id) || SourceWillNotConfirm)) ||
        (HandedOver.ContainsKey(v.Id) && (Released.Contains(v.Id) || SourceWillNotConfirm)));
}
