using Akka.Actor;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// Scheduler → target host.

/// <summary>Get ready to receive these VMs on the data plane; round acknowledgements go to <paramref name="SourceMigration"/>.</summary>
/// <remarks>
/// <paramref name="Keys"/>: this target's own data-plane key and its relay-link keys, derived from the migration's master
/// secret (which no target gets); never another target's key. Printed redacted.
/// </remarks>
public sealed record PrepareReceive(
    MigrationId MigrationId,
    ReceiverKeys Keys,
    int SelfIndex,
    IReadOnlyList<TargetEndpoint> Targets,
    IReadOnlyList<VmAssignment> Vms,
    IActorRef SourceMigration,
    long LinkBitsPerSecond) : IVmScatterMessage;

/// <summary>
/// VMs re-placed from a lost target: more VMs of a migration for this host (a host whose receiver is closed, or that
/// had none, makes one), and the migration's target endpoints now (hosts it did not use before come after the
/// others; every target learns them, for relay chains). <paramref name="Vms"/> may be empty: endpoints only.
/// <paramref name="Keys"/>: as in <see cref="PrepareReceive"/>, for the targets now (the same own key, links to the new hosts added).
/// </summary>
public sealed record ExtendReceive(
    MigrationId MigrationId,
    ReceiverKeys Keys,
    int SelfIndex,
    IReadOnlyList<TargetEndpoint> Targets,
    IReadOnlyList<VmAssignment> Vms,
    IActorRef SourceMigration,
    long LinkBitsPerSecond) : IVmScatterMessage;

/// <summary>Digest verified: start the VM here.</summary>
/// <remarks>
/// Sent by the source, which granted the VM to this target, on the scheduler's behalf (replies go to the scheduler);
/// a target that does not start it hands the grant back to <paramref name="GrantedBy"/>.
/// </remarks>
public sealed record ResumeOnTarget(MigrationId MigrationId, VmId VmId, IActorRef GrantedBy) : IVmScatterMessage;

/// <summary>Drop what was received for these VMs (the handover failed or the migration was aborted).</summary>
public sealed record DiscardReceived(MigrationId MigrationId, IReadOnlyList<VmId> VmIds) : IVmScatterMessage;

// Target host → scheduler.

public sealed record ReceiverReady(MigrationId MigrationId, HostId HostId) : IVmScatterMessage;

public sealed record ReceiverRefused(MigrationId MigrationId, HostId HostId, string Reason) : IVmScatterMessage;

/// <summary>The host is ready for the VMs of an <see cref="ExtendReceive"/> (or refuses them, with why).</summary>
public sealed record ReceiverExtended(MigrationId MigrationId, HostId HostId, IReadOnlyList<VmId> VmIds, string? Refusal) : IVmScatterMessage;

/// <param name="FramesRejected">TCP frames the host's data-plane listener refused (any migration's).</param>
/// <param name="DatagramsRejected">Multicast datagrams this migration's channels refused here (stray, forged, truncated, another migration's).</param>
/// <param name="DatagramsDuplicate">Multicast datagrams that came again after they were delivered (repairs another member asked for, replays).</param>
public sealed record TargetDigests(MigrationId MigrationId, HostId HostId, IReadOnlyList<VmDigest> Digests, long BytesReceived, long BytesRelayed, long ContentRecordsReceived, long FramesRejected,
    long DatagramsRejected = 0, long DatagramsDuplicate = 0) : IVmScatterMessage;

public sealed record VmResumedOnTarget(MigrationId MigrationId, VmId VmId, HostId HostId, long ResumedAtUnixMs) : IVmScatterMessage;

public sealed record VmResumeFailed(MigrationId MigrationId, VmId VmId, HostId HostId, string Reason) : IVmScatterMessage;
