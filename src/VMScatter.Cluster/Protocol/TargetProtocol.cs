using Akka.Actor;

namespace VMScatter.Cluster.Protocol;

// Scheduler → target host.

/// <summary>Get ready to receive these VMs on the data plane; round acknowledgements go to <paramref name="SourceMigration"/>.</summary>
public sealed record PrepareReceive(
    Guid MigrationId,
    byte[] DataPlaneKey,
    int SelfIndex,
    IReadOnlyList<TargetEndpoint> Targets,
    IReadOnlyList<VmAssignment> Vms,
    IActorRef SourceMigration,
    long LinkBitsPerSecond) : IVmScatterMessage;

/// <summary>Digest verified: start the VM here.</summary>
public sealed record ResumeOnTarget(Guid MigrationId, string VmId) : IVmScatterMessage;

/// <summary>Drop what was received for these VMs (the handover failed or the migration was aborted).</summary>
public sealed record DiscardReceived(Guid MigrationId, IReadOnlyList<string> VmIds) : IVmScatterMessage;

// Target host → scheduler.

public sealed record ReceiverReady(Guid MigrationId, string HostId) : IVmScatterMessage;

public sealed record ReceiverRefused(Guid MigrationId, string HostId, string Reason) : IVmScatterMessage;

public sealed record TargetDigests(Guid MigrationId, string HostId, IReadOnlyList<VmDigest> Digests, long BytesReceived, long BytesRelayed, long ContentRecordsReceived, long FramesRejected) : IVmScatterMessage;

public sealed record VmResumedOnTarget(Guid MigrationId, string VmId, string HostId, long ResumedAtUnixMs) : IVmScatterMessage;

public sealed record VmResumeFailed(Guid MigrationId, string VmId, string HostId, string Reason) : IVmScatterMessage;
