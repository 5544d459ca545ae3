using System.Collections.Immutable;
using System.Runtime.InteropServices;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Source;
using VMScatter.Domain.Units;

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
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<ShardRoundPlanned>(m =>
        {
            _planned.Add(m);
            foreach (var (vm, pages) in m.Plan.DeferredPages) _deferredPages[vm] = _deferredPages.GetValueOrDefault(vm) + pages;
            if (_planned.Count < _shardActors.Length) return;
            _shardCounters = _planned.Aggregate(ShardCounters.Zero, (sum, p) => sum.Add(p.Counters));
            var devices = _stopAndCopy
                ? _paused.Values.Where(p => _wave.Vms.Contains(p.VmIndex)).OrderBy(p => p.VmIndex).Select(p => new DeviceStateTransfer(p.VmIndex, _targetOfVm[p.VmIndex], ImmutableCollectionsMarshal.AsArray(p.DeviceState)!)).ToArray()
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
            _roundStartBytes = _sender!.BytesSent;
            // Fan-out sends a group's content to each of its targets; a relay chain sends it once, to the chain's head.
            _roundRecords = built.Transfer.Groups.Sum(g => (long)g.ContentIds.Count * (_options.GroupTransport == DataPlane.GroupTransport.FanOut ? System.Numerics.BitOperations.PopCount(g.TargetMask) : 1));
            _roundRecordsOf = _round;
            // Kept until every target still receiving applied the round: a target lost meanwhile may have cut a relay
            // chain, and the round is then sent again from them (see Resend).
            _built = built;
            _reader = new LeasedShardReader(_planned.Select(p => (p.Shard, p.Lease)), _options.SetAsideDirty);
            _leaseRound = _round;
            _resend = false;
            Send(built.Transfer);
            _log.Debug("Migration {0}: round {1} planned and built in {2:0.#} ms", _migrationId, _round, _roundClock.Elapsed.TotalMilliseconds);
            ReportProgress(); // the round's start, for a timeline; its end is reported when it is applied
            Become(Transferring);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    /// <summary>Sends a round on the pool: building frames (reading, compressing) would otherwise run on this thread, ahead of every handover decision.</summary>
    private void Send(RoundTransfer transfer)
    {
        _applied.Clear();
        _roundSent = false;
        _roundActive = transfer.ActiveTargets & ~_lost;
        _sentGroups = transfer.Groups;
        int round = transfer.Round;
        var (sender, reader) = (_sender!, _reader!);
        _sending = Task.Run(() => sender.SendRoundAsync(transfer, reader, CancellationToken.None));
        _sending.PipeTo(Self, success: () => new RoundSent(round), failure: e => new TransferStepFailed($"send round {round}", e.GetBaseException().Message));
    }

    private void Transferring()
    {
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<RoundSent>(m =>
        {
            _roundSent = true;
            _log.Debug("Migration {0}: round {1} sent", _migrationId, m.Round);
            ReportUnreachable();
            if (_resend && !RoundComplete) { Resend(); return; }
            Timers.StartSingleTimer("round-timeout", new RoundOverdue(_round), _settings.DataPlane.RoundTimeout);
            MaybeRoundDone();
        });
        Receive<RoundApplied>(m => m.MigrationId == _migrationId, m =>
        {
            if ((_lost >> m.TargetIndex & 1) != 0) return;
            // A target that cannot apply a round is lost to this migration (the scheduler decides, and re-places its VMs).
            if (m.Error is not null) { Unreachable(m.TargetIndex, $"could not apply round {m.Round}: {m.Error}"); return; }
            if (m.Round != _round) return; // a round sent again under a later number; this is its first sending's
            _applied.Add(m.TargetIndex);
            MaybeRoundDone();
        });
        Receive<RoundOverdue>(m =>
        {
            if (m.Round != _round || RoundComplete) return;
            ulong unapplied = _roundActive & ~_lost & ~AppliedMask;
            // The transport the round went by: a multicast channel that could not be set up fell back to the relay chain.
            ulong suspects = OverdueBlame.Suspects(_sentGroups, unapplied, _sender!.TransportUsed, m.Strike);
            double overdueFor = ((int)m.Strike + 1) * _settings.DataPlane.RoundTimeout.TotalSeconds;
            foreach (int t in DataPlaneSender.Targets(suspects))
                Unreachable(t, $"did not apply round {m.Round} within {overdueFor:0.#} s of its sending");
            // Hosts behind a relay: a dead relay's loss resends them the round; if it does not, the blame widens.
            if (suspects != unapplied && m.Strike < OverdueStrike.Last)
                Timers.StartSingleTimer("round-timeout", new RoundOverdue(m.Round, m.Strike + 1), _settings.DataPlane.RoundTimeout);
        });
        Receive<LossHandled>(_ =>
        {
            // Only a relay chain's hosts get content through another target; by fan-out or on a multicast channel the
            // others got all of theirs whatever became of the lost one, and apply the round as sent.
            if (_sender!.TransportUsed != DataPlane.GroupTransport.RelayChain) { MaybeRoundDone(); return; }
            if (!_roundSent) { _resend = true; return; } // sent again once this sending ends
            if (RoundComplete) MaybeRoundDone();
            else Resend();
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    private ulong AppliedMask => _applied.Aggregate(0UL, (mask, t) => mask | 1UL << t);

    /// <summary>Every target that must apply the round, and is not lost, applied it.</summary>
    private bool RoundComplete => _roundSent && (_roundActive & ~_lost & ~AppliedMask) == 0;

    /// <summary>
    /// A target was lost while the round went out: its hosts after it in a relay chain may miss contents. The round goes
    /// again, under the next number, to the targets that have not applied it (a receiver drops a round the source moved
    /// on from, and what it already wrote is written again with the same bytes); the shards stay lent meanwhile.
    /// </summary>
    private void Resend()
    {
        var first = _built!.Transfer;
        ulong keep = _roundActive & ~_lost & ~AppliedMask;
        _round++;
        _resend = false;
        _log.Warning("Migration {0}: sending round {1} again as round {2} to targets {3} (a target was lost during it)", _migrationId, first.Round, _round,
            string.Join(",", DataPlaneSender.Targets(keep)));
        var again = first with
        {
            Round = _round,
            Groups = first.Groups.Select(g => g with { TargetMask = g.TargetMask & keep }).Where(g => g.TargetMask != 0).ToArray(),
            MapsByTarget = first.MapsByTarget.Select((maps, t) => (keep >> t & 1) != 0 ? maps : []).ToArray(),
            DeviceStates = first.DeviceStates.Where(d => (keep >> d.TargetIndex & 1) != 0).ToArray(),
            ActiveTargets = keep,
            FinalTargets = first.FinalTargets & keep,
        };
        Send(again);
    }

    private void MaybeRoundDone()
    {
        if (!RoundComplete) return;
        Timers.Cancel("round-timeout");
        ReturnLease();
        if (_finalRoundOpen) ResumeHeldOrphans();
        _account.RoundEnded(_roundClock.Elapsed.TotalSeconds, _sender!.BytesSent - _roundStartBytes);
        _log.Debug("Migration {0}: round {1} applied by its targets, {2:0.#} ms after its planning began; source CPU reading guest memory so far in it: {3:0.###} s",
            _migrationId, _round, _roundClock.Elapsed.TotalMilliseconds, _cpu.PerRound(_round + 1)[_round]);
        ReportProgress();
        if (_stopAndCopy)
        {
            // The wave's targets have their VMs whole; they get nothing more. Each VM began digesting its memory when
            // it paused: wait for whichever are not done, then the next wave.
            _activeTargets &= ~_wave.Targets;
            // Their part is over: the multicast channel stops waiting for them (VMs re-placed there later go by TCP).
            _sender.LeaveChannel(_wave.Targets);
            _transferred.UnionWith(_wave.Vms);
            Become(Digesting);
            MaybeWaveTransferred();
            return;
        }
        _round++;
        if (_round == 1) StartNextWave(0);
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
        ApplyReplacements(_wave.Index);
        // Its VMs all went with a lost target: nothing more to do in this wave.
        if (_wave.Vms.Count == 0) { StartNextWave(_wave.Index + 1); return; }
        _pending = _wave.Vms.Count;
        _pagesInRound = 0;
        _stoppedInRound = 0;
        foreach (int vm in _wave.Vms) _vmActors[vm].Tell(new CollectDirtyPages(_round, _fullCollect.Remove(vm)));
        Become(CollectingDirty);
    }

    /// <summary>The next wave with VMs from <paramref name="from"/> on (re-placed VMs may have added one); none left: the transfer is complete, once no lost target's VM awaits re-placement.</summary>
    private void StartNextWave(int from)
    {
        ApplyReplacements(from);
        for (int w = from; w < _waves.Count; w++)
            if (_waves[w].Vms.Count > 0) { StartWave(_waves[w]); return; }
        if (_orphaned.Count > 0) { Become(AwaitingReplacement); return; }
        Complete();
    }

    private void CollectingDirty()
    {
        Receive<DirtyPagesCollected>(m =>
        {
            _pagesInRound += m.Pages;
            if (m.Stopped) _stoppedInRound++;
            if (--_pending > 0) return;
            if (_wave.Vms.Count == 0) { StartNextWave(_wave.Index + 1); return; } // its VMs went with a lost target meanwhile
            // The wave's first round also carries the pages of its VMs that round 0 deferred; its dirty pages were
            // dirtied since the collection before round 0's send, later ones since the last round.
            var input = new ConvergenceInput(
                DirtyPages: _pagesInRound,
                DirtySeconds: _firstWaveRound ? _clock.Elapsed.TotalSeconds - _collectedAllAt : _account.LastRoundSeconds,
                DeferredPages: _firstWaveRound ? _wave.Vms.Sum(v => _deferredPages.GetValueOrDefault(v)) : 0,
                WirePerPage: _sender!.ContentRawBytes > 0 ? (double)_sender.ContentEncodedBytes / _sender.ContentRawBytes : 1,
                RateBytesPerSecond: _account.MeasuredRate,
                WaveRounds: _waveRounds,
                WaveLabel: _waves.Count > 1 ? $"wave {_wave.Index + 1} of {_waves.Count}: " : "")
            {
                StoppedGuests = _stoppedInRound,
                PreviousRoundPages = _firstWaveRound ? null : _account.LastRoundPages,
            };
            var decision = _policy.Decide(input);
            _log.Debug("Migration {0}: {1}", _migrationId, decision.Account);
            _account.WaveDecided(decision, _waveRounds);
            // A stop-and-copy decided as fitting is checked again against what its pause finds (see MaybeHashed).
            _decided = decision.StopAndCopy && decision.Fits ? input : null;
            _stopAndCopy = decision.StopAndCopy;
            _finalRoundOpen = decision.StopAndCopy;
            if (decision.StopAndCopy && !decision.Fits)
            {
                // Abort is for the round limit; a guest its hypervisor stopped already goes on as forced (it is reported).
                if (_options.NonConvergence == NonConvergencePolicy.Abort && input.StoppedGuests == 0) { Fail($"{_account.Convergence}; aborted by policy, every VM keeps running on the source"); return; }
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
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    private void HashingDirty()
    {
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<VmPaused>(m =>
        {
            // A VM whose target was lost meanwhile is out of the wave (it is told to run again).
            if (!_wave.Vms.Contains(m.VmIndex)) return;
            if (_paused.Count == 0) _digestStarted = _clock.Elapsed.TotalSeconds;
            _log.Debug("Migration {0}: VM {1} paused", _migrationId, VmId(m.VmIndex));
            _paused[m.VmIndex] = m;
            _pausedAt[m.VmIndex] = m.PausedAtUnixMs;
            _pauseOf[m.VmIndex] = m.Pause;
            _sourceDigests.Remove(m.VmIndex);
            MaybeHashed();
        });
        Receive<ShardRoundHashed>(m => { _hashed.Add(m); MaybeHashed(); });
        Receive<ProgressTick>(_ => ReportProgress());
        Receive<LossHandled>(_ => MaybeHashed());
        Handovers();
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    private void MaybeHashed()
    {
        if (_hashed.Count < _shardActors.Length || (_stopAndCopy && _wave.Vms.Any(v => !_paused.ContainsKey(v)))) return;
        if (_decided is { } decided && _stopAndCopy) CheckPause(decided);
        else PlanRound();
    }

    /// <summary>
    /// The rest a stop-and-copy really carries is known only once its VMs paused: the guests may have written faster
    /// than the decision's rate since its collection. Still fitting, the round goes; else, with a round left, the VMs run
    /// again and the round goes as a pre-copy round (nothing of it was sent, no target may start them: the fence stays
    /// shut); at the limit it goes anyway, reported as not converged (or, by policy, every VM runs here again).
    /// </summary>
    private void CheckPause(ConvergenceInput decided)
    {
        _decided = null;
        int pages = _wave.Vms.Sum(v => _paused[v].Pages) + decided.DeferredPages;
        var check = _policy.AtPause(decided, pages);
        _account.PauseChecked(check, pages);
        if (check.Fits) { PlanRound(); return; }
        _log.Warning("Migration {0}: {1}", _migrationId, check.Account);
        if (!check.AnotherRound && _options.NonConvergence == NonConvergencePolicy.Abort)
        {
            Fail($"{check.Account}; aborted by policy, every VM keeps running on the source");
            return;
        }
        if (check.AnotherRound)
        {
            _stopAndCopy = false;
            _finalRoundOpen = false;
            ResumeHeldOrphans();
            foreach (int vm in _wave.Vms)
            {
                // A digest of this pause is stale once it runs (DigestComputed drops it); the next pause has a new number.
                _paused.Remove(vm);
                _pausedAt.Remove(vm);
                _pauseOf.Remove(vm);
                _sourceDigests.Remove(vm);
                _vmActors[vm].Tell(new ResumeVm("its stop-and-copy would overrun the downtime target: one more pre-copy round", Settles: false));
            }
        }
        PlanRound();
    }

    private void Digesting()
    {
        Receive<SourceDigestComputed>(m => { DigestComputed(m); MaybeWaveTransferred(); });
        Receive<LossHandled>(_ => MaybeWaveTransferred());
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    /// <summary>A digest of the VM's current pause (one of an earlier pause, or of a VM since orphaned, is stale).</summary>
    private void DigestComputed(SourceDigestComputed m)
    {
        if (_orphaned.Contains(m.VmIndex) || _pauseOf.GetValueOrDefault(m.VmIndex, -1) != m.Pause) return;
        _log.Debug("Migration {0}: VM {1} digested on the source", _migrationId, VmId(m.VmIndex));
        _sourceDigests[m.VmIndex] = new VmDigest(VmId(m.VmIndex), m.Digest) { DirtyTracking = m.DirtyTracking };
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
        _log.Debug("Migration {0}: wave {1} transferred and digested", _migrationId, _wave.Index + 1);
        if (_wave.Vms.Count > 0) _scheduler.Tell(new VmsTransferred(_migrationId, Digests(_wave.Vms), PausedAt(_wave.Vms)));
        // The round counter moves past the stop-and-copy round either way: the next wave's first round is the next one.
        _round++;
        int next = _wave.Index + 1;
        if (_wave.Vms.Count > 0 && _waves.Skip(next).Any(w => w.Vms.Count > 0)) { HoldNextWave(_wave.Vms, next); return; }
        StartNextWave(next);
    }

    /// <summary>
    /// The next wave starts once this wave's paused VMs run again (on their targets, or here), or after
    /// <see cref="WaveHoldBound"/>. Started at once, its whole-memory collections and compression took both cores while
    /// those VMs were still paused, and their handover (digests, grant, QEMU's load) waited for a thread: on 2 cores a
    /// first wave's pause was 280-430 ms against 120-200 ms for the last wave's, in the bench.
    /// </summary>
    private void HoldNextWave(IReadOnlyList<int> vms, int from)
    {
        _heldFor = vms.ToHashSet();
        _heldFrom = from;
        Timers.StartSingleTimer("wave-hold", WaveHoldOver.Instance, WaveHoldBound);
        Become(HoldingNextWave);
        MaybeReleaseNextWave();
    }

    private void HoldingNextWave()
    {
        Receive<WaveHoldOver>(_ =>
        {
            _log.Debug("Migration {0}: wave {1} starts before the previous wave's VMs all run again", _migrationId, _heldFrom + 1);
            ReleaseNextWave();
        });
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<LossHandled>(_ => MaybeReleaseNextWave());
        Receive<ProgressTick>(_ => ReportProgress());
        Receive<RoundApplied>(_ => { });
        Handovers();
        Losses();
        Receive<ReplacementsArrived>(_ => { }); // applied when the next wave starts
        CommonFailures();
    }

    /// <summary>Starts the held wave once none of the VMs it waits for is still paused for its handover.</summary>
    private void MaybeReleaseNextWave()
    {
        if (_heldFor is null) return;
        if (_failed) { _heldFor = null; return; } // failed or given up meanwhile: no wave starts any more
        _heldFor.RemoveWhere(v => _landed.Contains(v) || _settled.Contains(v) || _orphaned.Contains(v) || !_transferred.Contains(v) || _fence.IsResumedHere(VmId(v)));
        if (_heldFor.Count == 0) ReleaseNextWave();
    }

    private void ReleaseNextWave()
    {
        if (_heldFor is null || _failed) return;
        _heldFor = null;
        Timers.Cancel("wave-hold");
        StartNextWave(_heldFrom);
    }

    /// <summary>Every wave is through: the account of the transfer, with the digests of every VM transferred.</summary>
    private void Complete()
    {
        Timers.Cancel("progress");
        var transferred = _transferred.Order().ToArray();
        var channel = _sender!.ChannelStats;
        var moves = _sender.ChannelMoves;
        var sent = new SenderCounters(_sender.BytesSent, _sender.FramesSent, _sender.ContentRecordsSent, _sender.ContentRawBytes, _sender.ContentEncodedBytes, _sender.MapRecordsSent, _sender.ContentsWithdrawn)
        {
            TransportUsed = _sender.TransportUsed.ToName(), TransportFallback = _sender.TransportFallback,
            MulticastNacks = channel?.Nacks ?? 0, MulticastRepairs = channel?.Repairs ?? 0, MulticastRepairBytes = channel?.RepairBytes ?? 0,
            MulticastChannels = moves.Channels, MulticastJoins = moves.Joins, MulticastLeaves = moves.Leaves,
        };
        _scheduler.Tell(new TransferCompleted(_migrationId, Digests(transferred), PausedAt(transferred), _account.Stats(sent, _shardCounters, _waves.Count(w => w.Vms.Count > 0), _round) with { SourceCpuSecondsPerRound = _cpu.PerRound(_round) }));
        Become(HandingOver);
    }
}
