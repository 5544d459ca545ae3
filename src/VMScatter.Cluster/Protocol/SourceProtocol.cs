using Akka.Actor;
using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// Scheduler → source host.

/// <summary>Round 0: hash and deduplicate the VMs' memory and report profiles for placement. VMs keep running.</summary>
public sealed record AnalyzeVms(MigrationId MigrationId, IReadOnlyList<VmId> VmIds, MigrationOptions Options) : IVmScatterMessage;

/// <summary>Placement is decided and the targets are ready: send round 0, then dirty rounds, then stop and copy.</summary>
/// <remarks>
/// <paramref name="DataPlaneSecret"/>: the migration's master secret; the source derives each target's key from it
/// (<see cref="VMScatter.DataPlane.Wire.DataPlaneKeys"/>). Only the scheduler and the source hold it.
/// </remarks>
public sealed record BeginTransfer(MigrationId MigrationId, byte[] DataPlaneSecret, IReadOnlyList<TargetEndpoint> Targets, IReadOnlyList<VmAssignment> Assignments) : IVmScatterMessage;

/// <summary>
/// Scheduler → source: the VM's digests match; grant it to <paramref name="TargetHostId"/> and tell that target to start
/// it. The source grants each paused VM to one place only (its resume fence), so the start goes through it.
/// </summary>
public sealed record GrantHandover(MigrationId MigrationId, VmId VmId, HostId TargetHostId, IActorRef Target) : IVmScatterMessage;

/// <summary>Source → scheduler: the VM was not granted (it runs on the source again); its handover failed.</summary>
public sealed record HandoverRefused(MigrationId MigrationId, VmId VmId, string Reason) : IVmScatterMessage;

/// <summary>The VM is verified and running on its target: stop it here.</summary>
public sealed record ReleaseSourceVm(MigrationId MigrationId, VmId VmId) : IVmScatterMessage;

/// <summary>The VM's handover failed: let it run here again.</summary>
public sealed record ResumeSourceVm(MigrationId MigrationId, VmId VmId, string Reason) : IVmScatterMessage;

/// <summary>Give up the migration; every VM not yet released keeps (or resumes) running here.</summary>
public sealed record AbortMigration(MigrationId MigrationId, string Reason) : IVmScatterMessage;

/// <summary>
/// Scheduler → source migration: the target is lost (it left the cluster, or its data plane failed). Nothing more goes
/// to it; its VMs not granted to it run here again and are reported back (<see cref="VmsOrphaned"/>) for re-placement.
/// <paramref name="VoidedGrants"/>: VMs granted to it that it never confirmed running, where its guests ended with it
/// (it left the cluster, and its guests live in its process): no copy runs there, so they are orphans too.
/// </summary>
public sealed record TargetLost(MigrationId MigrationId, HostId HostId, int TargetIndex, string Reason, IReadOnlyList<VmId>? VoidedGrants = null) : IVmScatterMessage;

/// <summary>
/// Scheduler → source migration: a lost target came back (its node restarted and re-adopted its guests) without these
/// VMs, granted to it and never confirmed: no copy runs there, so the source may run them again (and re-place them).
/// </summary>
public sealed record GrantsVoided(MigrationId MigrationId, HostId HostId, int TargetIndex, IReadOnlyList<VmId> VmIds, string Reason) : IVmScatterMessage;

/// <summary>
/// Scheduler → source migration: where the orphans of a lost target go (targets ready for them), and which stay here
/// (no capacity left; the scheduler resumes them here as failed handovers).
/// </summary>
/// <param name="Targets">The migration's targets now: the same, then any it did not use before (the source connects to them).</param>
public sealed record ReplaceVms(MigrationId MigrationId, IReadOnlyList<VmAssignment> Assignments, IReadOnlyList<VmId> Unplaced, IReadOnlyList<TargetEndpoint> Targets) : IVmScatterMessage;

// Source host → scheduler.

/// <summary>The source's data plane lost a target: a connection failed, a write stalled, or a round was not applied in time.</summary>
public sealed record TargetUnreachable(MigrationId MigrationId, int TargetIndex, HostId HostId, string Reason) : IVmScatterMessage;

/// <summary>
/// The lost target's VMs that run on the source again (none was granted to it), for re-placement; VMs granted to it are
/// not among them (the grant decides those).
/// </summary>
public sealed record VmsOrphaned(MigrationId MigrationId, HostId LostHostId, IReadOnlyList<VmId> VmIds) : IVmScatterMessage;

public sealed record VmsAnalyzed(MigrationId MigrationId, IReadOnlyList<VmProfile> Profiles, long DistinctPages) : IVmScatterMessage;

/// <param name="Wave">The wave the round belongs to (-1: round 0, which serves every target group).</param>
/// <param name="WaveTargets">The target hosts of that wave (empty for round 0).</param>
/// <param name="StopAndCopy">The round is its wave's stop-and-copy (its VMs are paused).</param>
/// <param name="ContentRecordsInRound">Content records the round sends once built (0 before): with <paramref name="ContentRecordsSent"/>, how far the round is.</param>
public sealed record TransferProgress(MigrationId MigrationId, int Round, long BytesSent, long ContentRecordsSent, long PagesInRound, int Wave = -1, IReadOnlyList<HostId>? WaveTargets = null, bool StopAndCopy = false, long ContentRecordsInRound = 0) : IVmScatterMessage;

/// <summary>
/// A wave is in (staggered handover): its target applied its stop-and-copy round; its VMs are paused here with these
/// digests and may be handed over while the other waves go on.
/// </summary>
public sealed record VmsTransferred(MigrationId MigrationId, IReadOnlyList<VmDigest> SourceDigests, IReadOnlyDictionary<VmId, long> PausedAtUnixMs) : IVmScatterMessage;

/// <summary>Every round is applied on every target; the VMs are paused here with these digests (every wave's).</summary>
public sealed record TransferCompleted(MigrationId MigrationId, IReadOnlyList<VmDigest> SourceDigests, IReadOnlyDictionary<VmId, long> PausedAtUnixMs, TransferStats Stats) : IVmScatterMessage;

public sealed record TransferFailed(MigrationId MigrationId, string Reason) : IVmScatterMessage;

public sealed record SourceVmReleased(MigrationId MigrationId, VmId VmId) : IVmScatterMessage;

/// <summary>The VM runs on the source again (its handover failed or the migration was aborted).</summary>
public sealed record SourceVmResumed(MigrationId MigrationId, VmId VmId) : IVmScatterMessage;

// Target host → source migration (data-plane round acknowledgements travel on the control plane).


/// <summary>The target did not start the VM after all: the grant returns, and the VM may run on the source again.</summary>
public sealed record ReturnResumeGrant(MigrationId MigrationId, VmId VmId, HostId HostId) : IVmScatterMessage;

public sealed record RoundApplied(MigrationId MigrationId, int TargetIndex, int Round, bool Final, string? Error) : IVmScatterMessage;
