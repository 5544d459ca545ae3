using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;

namespace VMScatter.Cluster.Source;

/// <summary>
/// A per-page-class dedup actor: owns one range of the content-hash space for one migration. Collects every
/// VM's pages of a round, resolves them to content ids (hash, then byte compare), and when asked plans which
/// target groups still need which contents.
/// </summary>
public sealed class DedupShardActor : ReceiveActor
{
    private readonly DedupShard _shard;
    private readonly IReadOnlyList<IGuestMemory> _vms;
    private readonly HashSet<int> _vmsReported = new();
    private int _round = -1;
    private int _pages;

    public DedupShardActor(int shardIndex, DedupShard shard, IReadOnlyList<IGuestMemory> vms)
    {
        _shard = shard;
        _vms = vms;

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
                Context.Parent.Tell(new ShardRoundHashed(_round, shardIndex, _pages, _shard.DistinctContents));
        });

        Receive<PlanShardRound>(m =>
        {
            if (m.Round != _round) throw new InvalidOperationException($"shard {shardIndex} asked to plan round {m.Round} while holding round {_round}");
            Sender.Tell(new ShardRoundPlanned(m.Round, shardIndex, _shard.Plan(m.TargetOfVm, m.TargetCount, m.SetAside, m.DeferSingleTarget, m.ReleaseDeferredOf)));
        });
    }
}
