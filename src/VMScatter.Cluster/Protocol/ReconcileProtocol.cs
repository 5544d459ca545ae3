using Akka.Actor;
using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// A scheduler that took over (the singleton moved or restarted) ends each migration its journal left unended: it asks
// the source and the targets what they know, then journals what really happened (see ReconcileDecisions).

/// <summary>
/// New scheduler → source host: what do you know of this migration's VMs? The migration actor, if any, gives up the
/// migration first (every paused VM no target was granted runs here again) and answers with its state.
/// </summary>
public sealed record ReconcileMigration(MigrationId MigrationId, IReadOnlyList<VmId> VmIds) : IVmScatterMessage;

/// <summary>Where one VM of a migration stands, as its source sees it.</summary>
public enum SourceVmCondition
{
    /// <summary>Runs here, or its resume here is under way (it was granted to no target).</summary>
    OnSource,
    /// <summary>Paused here and granted to a target (<see cref="SourceVmState.GrantedTo"/>), which may be running it.</summary>
    Granted,
    /// <summary>Stopped here after its target was confirmed running it.</summary>
    Released,
    /// <summary>Paused here with no migration that can settle it (its migration actor died): its target may run it.</summary>
    PausedUnsettled,
    /// <summary>Not on this host (gone, or never here).</summary>
    Absent,
}

/// <param name="Digest">The source's handover digest, when its wave was through (a grant implies the target's matched it).</param>
public sealed record SourceVmState(VmId VmId, SourceVmCondition Condition, HostId? GrantedTo, string? Digest) : IVmScatterMessage;

/// <summary>Source → scheduler: the answer to <see cref="ReconcileMigration"/>; sent by the migration actor, or by the host when it has none.</summary>
public sealed record SourceMigrationState(MigrationId MigrationId, bool MigrationActorFound, IReadOnlyList<SourceVmState> Vms) : IVmScatterMessage;

/// <summary>
/// Scheduler → target host: do you run these VMs (granted to you by <paramref name="GrantedBy"/>)? A VM that is neither
/// running nor starting here is never started here afterwards, and its grant goes back to <paramref name="GrantedBy"/>,
/// so the source may run it again.
/// </summary>
public sealed record QueryLanded(MigrationId MigrationId, IReadOnlyList<VmId> VmIds, IActorRef GrantedBy) : IVmScatterMessage;

/// <summary>Target → scheduler: the answer to <see cref="QueryLanded"/>.</summary>
public sealed record LandedState(MigrationId MigrationId, HostId HostId, IReadOnlyList<VmId> Running, IReadOnlyList<VmId> Starting, IReadOnlyList<VmId> NotHere) : IVmScatterMessage;

/// <summary>
/// Console → scheduler: how does this migration stand? Answered with <see cref="MigrationFinished"/> (its journaled
/// report) once it ended, else with its <see cref="MigrationStatus"/>. A console polls with it when it has heard
/// nothing for a while (the singleton may have moved, and the new one does not know who started the migration).
/// </summary>
public sealed record FollowMigration(MigrationId MigrationId) : IVmScatterMessage;
