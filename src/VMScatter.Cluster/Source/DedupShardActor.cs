using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;

namespace VMScatter.Cluster.Source;

/// <summary>
/// A per-page-class dedup actor: owns one range of the content-hash space for one migration. Collects every VM's
/// pages of a round, resolves them to content ids (hash, then byte compare), and when asked plans which target groups
/// still need which contents. The shard is its state alone: to send a round, the data plane reads contents from it,
/// so the plan lends the shard to the source migration, and this actor stashes everything until the lease comes back.
/// </summary>
public sealed class DedupShardActor : ReceiveActor, IWithStash
{
    private readonly int _shardIndex;
    private readonly DedupShard _shard;
    private readonly IReadOnlyList<IGuestMemory> _vms;
    private readonly HashSet<int> _vmsReported = new();
    private int _round = -1;
    private int _pages;

    public DedupShardActor(int shardIndex, int shardCount, bool deduplicate, IReadOnlyList<IGuestMemory> vms)
    {
        _shardIndex = shardIndex;
        _shard = new DedupShard(shardIndex, shardCount, deduplicate);
        _vms = vms;
        Owning();
    }

    public IStash Stash { get; set; } = null!;

    private void Owning()
    {
        Receive<PageHashBatch>(batch =>
        {
            if (batch.Round != _round)
            {
                _shard.BeginRound(batch.Round);
                _round = batch.Round;
                _vmsReported.Clear();
                _pages = 0;
            }
            var memory = _vms[batch.VmIndex];
            _shard.Reported(batch.VmIndex, memory, batch.LogGeneration, batch.RoundPages);
            for (int i = 0; i < batch.Pages.Length; i++) _shard.Add(batch.VmIndex, memory, batch.Pages[i], batch.Hashes[i], batch.LogGeneration);
            _pages += batch.Pages.Length;
            _vmsReported.Add(batch.VmIndex);
            if (_vmsReported.Count == batch.Participants)
                Context.Parent.Tell(new ShardRoundHashed(_round, _shardIndex, _pages, _shard.DistinctContents));
        });

        Receive<ForgetTargets>(m => _shard.ForgetTargets(m.Mask));

        Receive<PlanShardRound>(m =>
        {
            if (m.Round != _round) throw new InvalidOperationException($"shard {_shardIndex} asked to plan round {m.Round} while holding round {_round}");
            var plan = _shard.Plan(m.TargetOfVm, m.TargetCount, m.SetAside, m.DeferSingleTarget, m.ReleaseDeferredOf);
            var counters = new ShardCounters(_shard.DistinctContents, _shard.Index.ByteCompares, _shard.Index.Collisions, _shard.RacedPages);
            Sender.Tell(new ShardRoundPlanned(m.Round, _shardIndex, plan, counters, _shard));
            Become(Lent);
        });
    }

    /// <summary>The round is being sent and reads the shard: nothing touches it here until it is given back.</summary>
    private void Lent()
    {
        Receive<ReturnShardLease>(m => m.Round == _round, _ =>
        {
            Stash.UnstashAll();
            Become(Owning);
        });
        ReceiveAny(_ => Stash.Stash());
    }
}
