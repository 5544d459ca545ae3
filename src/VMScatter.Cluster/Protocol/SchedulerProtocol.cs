using Akka.Actor;
using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// Commands to the migration scheduler singleton.

/// <summary>A source host announces itself and the VMs it runs (sent periodically; idempotent).</summary>
public sealed record RegisterSourceHost(HostId HostId, IActorRef Host, IReadOnlyList<VmDescription> Vms) : IVmScatterMessage;

/// <summary>A target host announces its free capacity and data-plane endpoint (sent periodically; idempotent).</summary>
public sealed record RegisterTargetHost(HostId HostId, IActorRef Host, long FreeBytes, string DataPlaneHost, int DataPlanePort, string Backend, string Rack = "", bool GuestsOutliveHost = false, long CapacityBytes = 0) : IVmScatterMessage;

public sealed record HostRegistered(HostId HostId) : IVmScatterMessage;

/// <summary>The host id is registered by another live host: a second node cannot take over its name (nor its VMs' traffic).</summary>
public sealed record HostRegistrationRefused(HostId HostId, string Reason) : IVmScatterMessage;

/// <summary>Migrate the VMs of a source host (all, or <paramref name="VmIds"/>) to the given targets (all, if empty).</summary>
public sealed record StartMigration(
    MigrationId MigrationId,
    HostId SourceHostId,
    IReadOnlyList<HostId> TargetHostIds,
    IReadOnlyList<VmId> VmIds,
    MigrationOptions Options) : IVmScatterMessage;

public sealed record GetMigrationStatus(MigrationId MigrationId) : IVmScatterMessage;

public sealed record GetRegisteredHosts : IVmScatterMessage
{
    public static readonly GetRegisteredHosts Instance = new();
}

// Replies and events from the scheduler to whoever started a migration.

public sealed record MigrationAccepted(MigrationId MigrationId, int Vms, int Targets) : IVmScatterMessage;

public sealed record MigrationRejected(MigrationId MigrationId, string Reason) : IVmScatterMessage;

public sealed record RegisteredHosts(IReadOnlyList<HostId> Sources, IReadOnlyList<HostId> Targets) : IVmScatterMessage;

public sealed record MigrationPlaced(MigrationId MigrationId, string Strategy, IReadOnlyDictionary<VmId, HostId> TargetOfVm, double EstimatedPages, long DistinctPages, DataPlane.GroupTransport GroupTransport) : IVmScatterMessage;

/// <summary>Sent at each round's start and end and every progress-interval between: bytes sent so far, the round, and its wave's target hosts (none for round 0).</summary>
/// <param name="StopAndCopy">The round is its wave's stop-and-copy (its VMs are paused).</param>
/// <param name="ContentRecordsInRound">Content records the round sends once built (0 before it is built): how far the round is, for an ETA.</param>
public sealed record MigrationProgress(MigrationId MigrationId, Scheduler.MigrationPhase Phase, int Round, long BytesSent, long ContentRecordsSent, long PagesInRound, int Wave = -1, IReadOnlyList<HostId>? WaveTargets = null, bool StopAndCopy = false, long ContentRecordsInRound = 0) : IVmScatterMessage;

/// <summary>A target was lost mid-migration; its VMs not handed over are re-placed (see <see cref="VmsReplaced"/>).</summary>
public sealed record MigrationTargetLost(MigrationId MigrationId, HostId HostId, string Reason) : IVmScatterMessage;

/// <summary>The handover checks passed: the VM runs on its target and its source copy is stopped.</summary>
public sealed record VmHandedOver(MigrationId MigrationId, VmId VmId, HostId TargetHostId, string Digest, double DowntimeMs) : IPersistedEvent;

/// <summary>The VM could not be handed over; it keeps running on the source.</summary>
public sealed record VmHandoverFailed(MigrationId MigrationId, VmId VmId, string Reason) : IPersistedEvent;

public sealed record MigrationFinished(MigrationId MigrationId, Domain.Reports.MigrationReport Report) : IVmScatterMessage;

public sealed record MigrationStatus(
    MigrationId MigrationId,
    Scheduler.MigrationPhase Phase,
    IReadOnlyList<VmId> HandedOver,
    IReadOnlyList<VmId> Failed,
    Domain.Reports.MigrationReport? Report) : IVmScatterMessage;

// Events the scheduler persists (its journal is the record of what was moved where).

/// <summary>Written and deleted at a scheduler node's start, under that node's own persistence id (see Hosting.JournalWarmup).</summary>
public sealed record JournalWarmedUp(HostId HostId, DateTime AtUtc) : IPersistedEvent;

public sealed record MigrationStarted(MigrationId MigrationId, HostId SourceHostId, IReadOnlyList<HostId> TargetHostIds, IReadOnlyList<VmId> VmIds, DateTime AtUtc) : IPersistedEvent;

public sealed record PlacementChosen(MigrationId MigrationId, string Strategy, IReadOnlyDictionary<VmId, HostId> TargetOfVm) : IPersistedEvent;

/// <summary>A target was lost mid-migration; its VMs not yet handed over go to these targets instead.</summary>
public sealed record VmsReplaced(MigrationId MigrationId, HostId LostHostId, IReadOnlyDictionary<VmId, HostId> TargetOfVm) : IPersistedEvent;

public sealed record MigrationCompleted(MigrationId MigrationId, Domain.Reports.MigrationReport Report) : IPersistedEvent;

/// <summary>
/// The migration ended without every VM handed over, cut short by a scheduler that moved or restarted.
/// <paramref name="Report"/>: which VMs were handed over and which stayed on the source, as reconciled with the hosts
/// (null in journals written before reconciliation existed).
/// </summary>
public sealed record MigrationAborted(MigrationId MigrationId, string Reason, Domain.Reports.MigrationReport? Report = null) : IPersistedEvent;
