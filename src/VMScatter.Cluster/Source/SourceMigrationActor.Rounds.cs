using System.Collections.Immutable;
using System.Runtime.InteropServices;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Source;

namespace VMScatter.Cluster.Source;

/// <summary>A round: planned by the shards, sent on the data plane, applied by the targets; then the wave's dirty pages, convergence and the next round or the wave's stop-and-copy.</summary>
public sealed partial class SourceMigrationActor
{
    private void PlanRound()
    {
        _roundClock.Restart();
        _planned.Clear();
        bool defer = _round == 0 && _options.Staggered;
        ImmutableArray<int>? release = _firstWaveRound && _options.Staggered ? [.. _wave.Vms] : null;
        Broadcast(_shardActors, new PlanShardRound(_round, _targetOfVm, _targetCount, _round == 0 ? _setAside : null, defer, release));
        Become(Planning);
    }

    private void Planning()
    {
        ShardsFinishingRoundZero();
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<ShardRoundPlanned>(m =>
        {
            _planned.Add(m);
            foreach (var (vm, pages) in m.Plan.DeferredPages) _deferredPages[vm] = _deferredPages.GetValueOrDefault(vm) + pages;
            if (_planned.Count < _shardActors.Length) return;
            _shardCounters = _planned.Aggregate(ShardCounters.Zero, (sum, p) => sum.Add(p.Counters));
            var devices = _stopAndCopy
                ? _paused.Values.OrderBy(p => p.VmIndex).Select(p => new DeviceStateTransfer(p.VmIndex, _targetOfVm[p.VmIndex], ImmutableCollectionsMarshal.AsArray(p.DeviceState)!)).ToArray()
                : [];
            // Merging the plans and ordering the groups is a pass over every page of the round: off this thread, so
            // the handover decisions for waves already through (which go through here) do not wait behind it.
            var plans = _planned.Select(p => (p.Shard, p.Plan)).ToArray();
            (int round, int targets, bool final, ulong active, ulong finalTargets) = (_round, _targetCount, _stopAndCopy, _activeTargets, _wave.Targets);
            Task.Run(() => RoundTransferBuilder.Build(round, plans, targets, final, devices, active, finalTargets))
                .PipeTo(Self, success: b => new RoundBuilt(b), failure: e => new TransferStepFailed($"build round {round}", e.GetBaseException().Message));
        });
        Receive<RoundBuilt>(m =>
        {
            var built = m.Round;
            _account.GroupsOrdered(built.GroupSwitches, built.GroupSwitchesLowerBound);
            if (_round == 0) _account.RoundPlanned(_pagesInRound);
            _applied.Clear();
            _roundSent = false;
            _roundStartBytes = _sender!.BytesSent;
            int round = _round;
            // Started on the pool: building frames (reading and compressing pages) runs synchronously until the
            // outgoing queue fills, which would otherwise be on this thread, ahead of every handover decision.
            var (sender, transfer, reader) = (_sender, built.Transfer, new LeasedShardReader(_planned.Select(p => (p.Shard, p.Lease)), _options.SetAsideDirty));
            _sending = Task.Run(() => sender.SendRoundAsync(transfer, reader, CancellationToken.None));
            _sending.PipeTo(Self, success: () => new RoundSent(round), failure: e => new TransferStepFailed($"send round {round}", e.GetBaseException().Message));
            Become(Transferring);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void Transferring()
    {
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<RoundSent>(m =>
        {
            Broadcast(_shardActors, new ReturnShardLease(m.Round));
            _roundSent = true;
            MaybeRoundDone();
        });
        Receive<RoundApplied>(m => m.MigrationId == _migrationId, m =>
        {
            if (m.Error is not null) { Fail($"target {m.TargetIndex} could not apply round {m.Round}: {m.Error}"); return; }
            if (m.Round != _round) { Fail($"target {m.TargetIndex} acknowledged round {m.Round} during round {_round}"); return; }
            _applied.Add(m.TargetIndex);
            MaybeRoundDone();
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void MaybeRoundDone()
    {
        if (!_roundSent || _applied.Count < System.Numerics.BitOperations.PopCount(_activeTargets)) return;
        _account.RoundEnded(_roundClock.Elapsed.TotalSeconds, _sender!.BytesSent - _roundStartBytes);
        ReportProgress();
        if (_stopAndCopy)
        {
            // The wave's targets have their VMs whole; they get nothing more. Each VM began digesting its memory when
            // it paused: wait for whichever are not done, then the next wave.
            _activeTargets &= ~_wave.Targets;
            _transferred.UnionWith(_wave.Vms);
            Become(Digesting);
            MaybeWaveTransferred();
            return;
        }
        _round++;
        if (_round == 1) StartWave(_waves[0]);
        else
        {
            _waveRounds++;
            _firstWaveRound = false;
            CollectWaveDirtyPages();
        }
    }

    /// <summary>A wave begins with its VMs' dirty pages (and, staggered, the pages of theirs that round 0 deferred).</summary>
    private void StartWave(Wave wave)
    {
        _wave = wave;
        _waveRounds = 1; // round 0 was theirs too
        _firstWaveRound = true;
        _stopAndCopy = false;
        CollectWaveDirtyPages();
    }

    private void CollectWaveDirtyPages()
    {
        _pending = _wave.Vms.Count;
        _pagesInRound = 0;
        foreach (int vm in _wave.Vms) _vmActors[vm].Tell(new CollectDirtyPages(_round));
        Become(CollectingDirty);
    }

    private void CollectingDirty()
    {
        Receive<DirtyPagesCollected>(m =>
        {
            _pagesInRound += m.Pages;
            if (--_pending > 0) return;
            // The wave's first round also carries the pages of its VMs that round 0 deferred; its dirty pages were
            // dirtied since the collection before round 0's send, later ones since the last round.
            var decision = _policy.Decide(new ConvergenceInput(
                DirtyPages: _pagesInRound,
                DirtySeconds: _firstWaveRound ? _clock.Elapsed.TotalSeconds - _collectedAllAt : _account.LastRoundSeconds,
                DeferredPages: _firstWaveRound ? _wave.Vms.Sum(v => _deferredPages.GetValueOrDefault(v)) : 0,
                WirePerPage: _sender!.ContentRawBytes > 0 ? (double)_sender.ContentEncodedBytes / _sender.ContentRawBytes : 1,
                RateBytesPerSecond: _account.MeasuredRate,
                WaveRounds: _waveRounds,
                WaveLabel: _waves.Count > 1 ? $"wave {_wave.Index + 1} of {_waves.Count}: " : ""));
            _account.WaveDecided(decision, _waveRounds);
            _stopAndCopy = decision.StopAndCopy;
            if (decision.StopAndCopy && !decision.Fits)
            {
                if (_options.NonConvergence == NonConvergencePolicy.Abort) { Fail($"{_account.Convergence}; aborted by policy, every VM keeps running on the source"); return; }
                _log.Warning("Migration {0}: {1}; forcing stop-and-copy", _migrationId, _account.Convergence);
            }
            _pagesInRound = decision.PagesThisRound;
            _account.RoundPlanned(_pagesInRound);
            _hashed.Clear();
            _paused.Clear();
            foreach (int vm in _wave.Vms) _vmActors[vm].Tell(new HashRound(_round, _stopAndCopy, _wave.Vms.Count, decision.HoldBack));
            Become(HashingDirty);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void HashingDirty()
    {
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<VmPaused>(m =>
        {
            if (_paused.Count == 0) _digestStarted = _clock.Elapsed.TotalSeconds;
            _paused[m.VmIndex] = m;
            _pausedAt[m.VmIndex] = m.PausedAtUnixMs;
            MaybeHashed();
        });
        Receive<ShardRoundHashed>(m => { _hashed.Add(m); MaybeHashed(); });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void MaybeHashed()
    {
        if (_hashed.Count < _shardActors.Length || (_stopAndCopy && _paused.Count < _wave.Vms.Count)) return;
        PlanRound();
    }

    private void Digesting()
    {
        Receive<SourceDigestComputed>(m => { _sourceDigests[m.VmIndex] = m.Digest; MaybeWaveTransferred(); });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    /// <summary>With the wave's digests in: its VMs go to the scheduler for handover, and the next wave starts.</summary>
    private void MaybeWaveTransferred()
    {
        if (_wave.Vms.Any(v => !_sourceDigests.ContainsKey(v))) return;
        _account.WaveDigested(_clock.Elapsed.TotalSeconds - _digestStarted);
        // The decision bound runs from when the scheduler can decide: now, with the wave's digests (large VMs digest
        // slowly); checked once before anyone can ask for them (a zero bound resumes them here at once).
        foreach (int vm in _wave.Vms) _fence.Transferred(VmId(vm), _targetHosts[_targetOfVm[vm]], _clock.Elapsed.TotalSeconds);
        ArmFence();
        Self.Tell(FenceTick.Instance);
        if (_wave.Index + 1 < _waves.Count)
        {
            _scheduler.Tell(new VmsTransferred(_migrationId, Digests(_wave.Vms), PausedAt(_wave.Vms)));
            _round++;
            StartWave(_waves[_wave.Index + 1]);
            return;
        }
        Timers.Cancel("progress");
        var all = Enumerable.Range(0, _vms.Count).ToArray();
        var sent = new SenderCounters(_sender!.BytesSent, _sender.FramesSent, _sender.ContentRecordsSent, _sender.ContentRawBytes, _sender.ContentEncodedBytes, _sender.MapRecordsSent, _sender.ContentsWithdrawn);
        _scheduler.Tell(new TransferCompleted(_migrationId, Digests(all), PausedAt(all), _account.Stats(sent, _shardCounters, _waves.Count, _round + 1)));
        FreeReleasedVms();
        Become(HandingOver);
    }
}
