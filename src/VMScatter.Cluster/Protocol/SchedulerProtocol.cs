using Akka.Actor;
using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// Commands to the migration scheduler singleton.

/// <summary>A source host announces itself and the VMs it runs (sent periodically; idempotent).</summary>
public sealed record RegisterSourceHost(string HostId, IActorRef Host, IReadOnlyList<VmDescription> Vms) : IVmScatterMessage;

/// <summary>A target host announces its free capacity and data-plane endpoint (sent periodically; idempotent).</summary>
public sealed record RegisterTargetHost(string HostId, IActorRef Host, long FreeBytes, string DataPlaneHost, int DataPlanePort, string Backend, string Rack = "") : IVmScatterMessage;

public sealed record HostRegistered(string HostId) : IVmScatterMessage;

/// <summary>Migrate the VMs of a source host (all, or <paramref name="VmIds"/>) to the given targets (all, if empty).</summary>
public sealed record StartMigration(
    Guid MigrationId,
    string SourceHostId,
    IReadOnlyList<string> TargetHostIds,
    IReadOnlyList<string> VmIds,
    MigrationOptions Options) : IVmScatterMessage;

public sealed record GetMigrationStatus(Guid MigrationId) : IVmScatterMessage;

public sealed record GetRegisteredHosts : IVmScatterMessage
{
    public static readonly GetRegisteredHosts Instance = new();
}

// Replies and events from the scheduler to whoever started a migration.

public sealed record MigrationAccepted(Guid MigrationId, int Vms, int Targets) : IVmScatterMessage;

public sealed record MigrationRejected(Guid MigrationId, string Reason) : IVmScatterMessage;

public sealed record RegisteredHosts(IReadOnlyList<string> Sources, IReadOnlyList<string> Targets) : IVmScatterMessage;

public sealed record MigrationPlaced(Guid MigrationId, string Strategy, IReadOnlyDictionary<string, string> TargetOfVm, double EstimatedPages, long DistinctPages, DataPlane.GroupTransport GroupTransport) : IVmScatterMessage;

public sealed record MigrationProgress(Guid MigrationId, Scheduler.MigrationPhase Phase, int Round, long BytesSent, long ContentRecordsSent, long PagesInRound) : IVmScatterMessage;

/// <summary>The handover checks passed: the VM runs on its target and its source copy is stopped.</summary>
public sealed record VmHandedOver(Guid MigrationId, string VmId, string TargetHostId, string Digest, double DowntimeMs) : IPersistedEvent;

/// <summary>The VM could not be handed over; it keeps running on the source.</summary>
public sealed record VmHandoverFailed(Guid MigrationId, string VmId, string Reason) : IPersistedEvent;

public sealed record MigrationFinished(Guid MigrationId, Domain.Reports.MigrationReport Report) : IVmScatterMessage;

public sealed record MigrationStatus(
    Guid MigrationId,
    Scheduler.MigrationPhase Phase,
    IReadOnlyList<string> HandedOver,
    IReadOnlyList<string> Failed,
    Domain.Reports.MigrationReport? Report) : IVmScatterMessage;

// Events the scheduler persists (its journal is the record of what was moved where).

public sealed record MigrationStarted(Guid MigrationId, string SourceHostId, IReadOnlyList<string> TargetHostIds, IReadOnlyList<string> VmIds, DateTime AtUtc) : IPersistedEvent;

public sealed record PlacementChosen(Guid MigrationId, string Strategy, IReadOnlyDictionary<string, string> TargetOfVm) : IPersistedEvent;

public sealed record MigrationCompleted(Guid MigrationId, Domain.Reports.MigrationReport Report) : IPersistedEvent;

public sealed record MigrationAborted(Guid MigrationId, string Reason) : IPersistedEvent;
