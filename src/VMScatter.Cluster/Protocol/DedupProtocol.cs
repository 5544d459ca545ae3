using System.Collections.Frozen;
using System.Collections.Immutable;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;

namespace VMScatter.Cluster.Protocol;

// Local to the source node: source-VM actors, dedup shard actors and the source migration actor. These carry
// page indexes and hashes (never page bytes) and are not sent over the network.

/// <param name="AllPages">Every page, not only the dirty ones: the VM was re-placed onto a target that has none of it yet.</param>
public sealed record CollectDirtyPages(int Round, bool AllPages = false);

/// <param name="Stopped">The guest is stopped already: its hypervisor's pre-copy converged and stopped it (QEMU's stream).</param>
public sealed record DirtyPagesCollected(int VmIndex, int Round, int Pages, bool Stopped = false);

/// <summary>
/// Before round 0 is planned: take the pages written since analysis out of round 0 (their analysed bytes are stale)
/// and carry them into round 1, which sends them as they are then.
/// </summary>
public sealed record SetAsideDirtyPages
{
    public static readonly SetAsideDirtyPages Instance = new();
}

public sealed record DirtyPagesSetAside(int VmIndex, FrozenSet<int> Pages);

/// <summary>
/// Hash this round's pages and route them to the shards; pause first if this is the stop-and-copy round.
/// <paramref name="Participants"/>: how many VMs take part in the round (a wave's), so the shards know when it is in.
/// <paramref name="HoldBack"/>: hash none of the collected pages now; they join the next round (the stop-and-copy).
/// </summary>
public sealed record HashRound(int Round, bool StopAndCopy, int Participants, bool HoldBack = false);

/// <summary>
/// A VM's pages of one round whose hashes fall in the receiving shard's range (sent even when empty: it ends the VM's
/// part). <paramref name="LogGeneration"/>: the guest's write-log generation the pages were hashed under (0 without a
/// write log), by which the shard proves a page still holds what was hashed. <paramref name="Participants"/>: VMs in the round.
/// <paramref name="RoundPages"/>: all of the VM's pages this round, whichever shard they went to (ascending; one array shared by the batches).
/// </summary>
public sealed record PageHashBatch(int Round, int VmIndex, ImmutableArray<int> Pages, ImmutableArray<ContentHash> Hashes, int LogGeneration, int Participants, ImmutableArray<int> RoundPages);

/// <summary>A shard has every VM's pages of the round; <paramref name="DistinctContents"/>: its index size after them.</summary>
public sealed record ShardRoundHashed(int Round, int Shard, int Pages, long DistinctContents);

/// <summary>
/// A VM's round 0 hashed and routed (told after its batches, so anything the shards are asked later comes after them):
/// what placement needs, from the page hashes: counts and a bottom-k sketch of its distinct contents. Placement then
/// goes ahead while the shards still byte-compare and index; its sketch equals theirs up to hash collisions.
/// </summary>
public sealed record VmContentsProfiled(int VmIndex, int Pages, int NonZeroPages, int ZeroPages, int DistinctContents, IReadOnlyList<ulong> Sketch);

/// <param name="SetAside">Per VM, pages this round must leave out (they go next round); null: none.</param>
/// <param name="DeferSingleTarget">Round 0 of a staggered handover: plan only pages whose content several targets need.</param>
/// <param name="ReleaseDeferredOf">The VMs whose deferred pages join this round (the first round of their wave).</param>
public sealed record PlanShardRound(int Round, ImmutableArray<int> TargetOfVm, int TargetCount, IReadOnlyList<FrozenSet<int>>? SetAside = null,
    bool DeferSingleTarget = false, ImmutableArray<int>? ReleaseDeferredOf = null);

/// <summary>
/// A shard's plan of the round, its counters so far, and the shard itself, lent for the round's send: its actor touches
/// it again only after <see cref="ReturnShardLease"/>.
/// </summary>
public sealed record ShardRoundPlanned(int Round, int Shard, ShardRoundPlan Plan, ShardCounters Counters, DedupShard Lease);

/// <summary>What the dedup shards counted (summed over shards), sent with each round's plan.</summary>
public sealed record ShardCounters(long DistinctContents, long ByteCompares, long HashCollisions, long RacedPages)
{
    public static readonly ShardCounters Zero = new(0, 0, 0, 0);

    public ShardCounters Add(ShardCounters o) => new(DistinctContents + o.DistinctContents, ByteCompares + o.ByteCompares, HashCollisions + o.HashCollisions, RacedPages + o.RacedPages);
}

/// <summary>The round is sent (or given up): the shard's actor owns it again.</summary>
public sealed record ReturnShardLease(int Round);

/// <summary>
/// These targets no longer hold what they were sent (a target whose VMs started is re-used for re-placed VMs): later
/// plans send them every content they need.
/// </summary>
public sealed record ForgetTargets(ulong Mask);

/// <param name="PausedAtUnixMs">When the pause was asked for (wall clock): the guest stops executing within that call, so its pause began no earlier.</param>
/// <param name="Pause">Which pause of this VM (a VM re-placed after a target was lost pauses again): a digest names its pause.</param>
/// <param name="Pages">The pages the stop-and-copy round carries for it: those decided on and those written until the pause.</param>
public sealed record VmPaused(int VmIndex, long PausedAtUnixMs, ImmutableArray<byte> DeviceState, int Pause = 0, int Pages = 0);

/// <param name="DirtyTracking">How the VM's dirty pages were found up to this pause (<see cref="Domain.IDirtyTrackingAccount"/>).</param>
public sealed record SourceDigestComputed(int VmIndex, string Digest, int Pause = 0, string? DirtyTracking = null);

public sealed record StopSourceVm(string Reason);

/// <param name="Settles">False: the VM runs here only until it is re-placed (its target was lost); it stays in the migration.</param>
public sealed record ResumeVm(string Reason, bool Settles = true);

public sealed record VmStopped(int VmIndex);

public sealed record VmResumedHere(int VmIndex, bool Settles = true);

public sealed record VmStepFailed(int VmIndex, string Step, string Error);

/// <summary>
/// Source migration → its host: the VM was granted to its target (or the grant came back). The host keeps this beside
/// the migration's own fence, so that if the migration actor dies it resumes only VMs no target may be running.
/// </summary>
public sealed record SourceVmGranted(MigrationId MigrationId, VmId VmId, bool Granted);

/// <summary>Every VM of the migration runs in one place again: its VMs may be migrated anew (the actor lingers to answer late grant requests).</summary>
public sealed record SourceMigrationSettled(MigrationId MigrationId);
