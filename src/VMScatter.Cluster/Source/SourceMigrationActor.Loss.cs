using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Source;
using VMScatter.Domain;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Source;

/// <summary>
/// A target lost mid-migration (the scheduler's <see cref="TargetLost"/>): nothing more goes to it, a round it may have
/// cut short is sent again to the others, and its VMs not granted to it run here again (orphans) until the scheduler
/// re-places them (<see cref="ReplaceVms"/>): each joins its new target's wave if that is still open, else a new wave
/// at the end, and its first round carries every page (what the new target already holds is referenced, not sent).
/// </summary>
public sealed partial class SourceMigrationActor
{
    /// <summary>Targets lost to this migration.</summary>
    private ulong _lost;
    /// <summary>VMs out of every wave because their target was lost; they run here until re-placed, or settle here.</summary>
    private readonly HashSet<int> _orphaned = new();
    /// <summary>Orphans with a new target, applied at the next round boundary.</summary>
    private readonly List<(int Vm, int Target)> _replacements = new();
    /// <summary>Re-placed VMs whose next collection takes every page.</summary>
    private readonly HashSet<int> _fullCollect = new();
    /// <summary>Per VM, the pause its digest must name.</summary>
    private readonly Dictionary<int, int> _pauseOf = new();
    private readonly HashSet<int> _reportedUnreachable = new();
    /// <summary>From a wave's stop-and-copy hashing until its final round is applied: its paused guests' pages are read.</summary>
    private bool _finalRoundOpen;
    /// <summary>Orphans paused by that stop-and-copy: they run again once its round no longer reads their pages.</summary>
    private readonly List<int> _orphansHeldPaused = new();
    private bool _failed;

    // The round being sent, kept until every target still receiving applied it (see Resend).
    private BuiltRound? _built;
    private LeasedShardReader? _reader;
    private int _leaseRound;
    private ulong _roundActive;
    // The groups of the round on the wire (a resend's, not the built round's): who relays to whom.
    private IReadOnlyList<DataPlane.Source.GroupTransfer> _sentGroups = [];
    private bool _resend;

    private void Losses()
    {
        Receive<TargetLost>(m => m.MigrationId == _migrationId, m =>
        {
            if (!Sender.Equals(_scheduler)) { _log.Warning("Migration {0}: ignored TargetLost from {1}, not the scheduler", _migrationId, Sender); return; }
            LoseTarget(m.TargetIndex, m.Reason, m.VoidedGrants ?? []);
        });
        Receive<GrantsVoided>(m => m.MigrationId == _migrationId, m =>
        {
            if (!Sender.Equals(_scheduler)) { _log.Warning("Migration {0}: ignored GrantsVoided from {1}, not the scheduler", _migrationId, Sender); return; }
            VoidGrants(m);
        });
        Receive<ReplaceVms>(m => m.MigrationId == _migrationId, m =>
        {
            if (!Sender.Equals(_scheduler)) { _log.Warning("Migration {0}: ignored ReplaceVms from {1}, not the scheduler", _migrationId, Sender); return; }
            Replace(m);
        });
        Receive<TargetsConnected>(m =>
        {
            ReportUnreachable();
            Accept(m.Assignments);
        });
        Receive<UnreachableUndecided>(m =>
        {
            if ((_lost >> m.TargetIndex & 1) == 0) Fail($"target {m.TargetIndex} is unreachable and the scheduler did not decide within {_settings.DecisionTimeout.TotalSeconds:0.###} s");
        });
    }

    private void LoseTarget(int lost, string reason, IReadOnlyList<VmId> voidedGrants)
    {
        if (lost < 0 || lost >= _targetCount || (_lost >> lost & 1) != 0) return;
        ulong bit = 1UL << lost;
        _lost |= bit;
        _activeTargets &= ~bit;
        _sender?.DropTarget(lost);
        Timers.Cancel($"unreachable-{lost}");
        _log.Warning("Migration {0}: target {1} ({2}) is lost: {3}", _migrationId, lost, _targetHosts[lost], reason);
        var orphans = new List<int>();
        // Re-placements onto it not applied yet: those VMs are orphans again.
        foreach (var r in _replacements.Where(r => r.Target == lost).ToArray())
        {
            _replacements.Remove(r);
            orphans.Add(r.Vm);
        }
        if (!_failed)
            for (int v = 0; v < _vms.Count; v++)
            {
                if (_targetOfVm[v] != lost || _settled.Contains(v) || _orphaned.Contains(v) || _fence.IsResumedHere(VmId(v))) continue;
                // Granted to the lost target: it may be running it; the grant decides (the scheduler's handover timeout),
                // unless the scheduler voids it (the target's guests ended with it, unconfirmed).
                if (_transferred.Contains(v) && !_fence.Withdraw(VmId(v)))
                {
                    if (!voidedGrants.Contains(VmId(v)) || !_fence.Void(VmId(v), _targetHosts[lost])) continue;
                    Context.Parent.Tell(new SourceVmGranted(_migrationId, VmId(v), Granted: false));
                }
                _transferred.Remove(v);
                orphans.Add(v);
            }
        Orphan(orphans, lost);
    }

    /// <summary>A lost target's word, through the scheduler, that it runs none of these VMs granted to it: they are orphans like its others.</summary>
    private void VoidGrants(GrantsVoided m)
    {
        int lost = m.TargetIndex;
        if (lost < 0 || lost >= _targetCount || _targetHosts[lost] != m.HostId)
        {
            _log.Warning("Migration {0}: ignored voided grants for {1}, not a target of it", _migrationId, m.HostId);
            return;
        }
        // Not lost here yet: the scheduler failed the run, and its abort (through the host) has not arrived. Lost now,
        // its grants with it.
        if ((_lost >> lost & 1) == 0 && !_failed) { LoseTarget(lost, m.Reason, m.VmIds); return; }
        var orphans = new List<int>();
        foreach (var id in m.VmIds)
            WithVm(id, v =>
            {
                if (_settled.Contains(v) || !_fence.Void(id, m.HostId)) return;
                _log.Warning("Migration {0}: {1} does not run VM {2}, granted to it: {3}", _migrationId, m.HostId, id, m.Reason);
                Context.Parent.Tell(new SourceVmGranted(_migrationId, id, Granted: false));
                if (_failed) { ResumeHere(v, m.Reason); return; }
                _transferred.Remove(v);
                orphans.Add(v);
            });
        if (orphans.Count > 0) Orphan(orphans, lost);
    }

    /// <summary>VMs out of their waves, running here until re-placed; reported to the scheduler.</summary>
    private void Orphan(List<int> orphans, int lost)
    {
        ulong bit = 1UL << lost;
        foreach (int v in orphans)
        {
            _orphaned.Add(v);
            _pauseOf.Remove(v);
            _paused.Remove(v);
            _pausedAt.Remove(v);
            _sourceDigests.Remove(v);
            // A stop-and-copy round under way may read contents from its pages (shared with the wave's other VMs),
            // which must hold still: it runs again when that round is applied.
            if (_finalRoundOpen && _wave.Vms.Contains(v)) _orphansHeldPaused.Add(v);
            else _vmActors[v].Tell(new ResumeVm($"its target {_targetHosts[lost]} was lost; it runs here until re-placed", Settles: false));
        }
        var gone = orphans.ToHashSet();
        _waves = _waves.Select(w => w with { Targets = w.Targets & ~bit, Vms = w.Vms.Where(v => !gone.Contains(v)).ToArray() }).ToArray();
        _wave = _waves.Count > _wave.Index && _waves[_wave.Index].Index == _wave.Index ? _waves[_wave.Index] : _wave with { Vms = _wave.Vms.Where(v => !gone.Contains(v)).ToArray() };
        _scheduler.Tell(new VmsOrphaned(_migrationId, _targetHosts[lost], orphans.Order().Select(VmId).ToArray()));
        // The state in progress decides what follows: a round sent again, a wave now complete or empty.
        Self.Tell(LossHandled.Instance);
    }

    /// <summary>
    /// The scheduler's word on orphans: a new target each (applied at the next round boundary, once any target new to
    /// the migration is connected), or they stay here.
    /// </summary>
    private void Replace(ReplaceVms m)
    {
        foreach (var id in m.Unplaced)
            // The scheduler resumes it here as a failed handover (ResumeSourceVm), which settles it.
            WithVm(id, v => _orphaned.Remove(v));
        var targets = m.Targets.OrderBy(t => t.Index).ToArray();
        bool sameTargets = targets.Length >= _targetCount && targets.Length <= TargetMask.MaxTargets
            && targets.Select((t, i) => t.Index == i && (i >= _targetCount || t.HostId == _targetHosts[i])).All(ok => ok);
        if (!sameTargets) { _log.Warning("Migration {0}: ignored re-placements naming other targets than the migration's", _migrationId); return; }
        var valid = new List<(int, int)>();
        foreach (var a in m.Assignments)
        {
            if (a.VmIndex < 0 || a.VmIndex >= _vms.Count || !_orphaned.Contains(a.VmIndex) || a.TargetIndex < 0 || a.TargetIndex >= targets.Length
                || (_lost >> a.TargetIndex & 1) != 0 || VmId(a.VmIndex) != a.Vm.Id)
            {
                _log.Warning("Migration {0}: ignored re-placing VM {1} onto target {2}", _migrationId, a.Vm.Id, a.TargetIndex);
                continue;
            }
            valid.Add((a.VmIndex, a.TargetIndex));
        }
        if (targets.Length == _targetCount) { Accept(valid); return; }
        // Hosts the migration did not use yet: connected first (one that cannot be reached is reported, and lost).
        var added = targets.Skip(_targetCount).ToArray();
        _sender!.AddTargets(added.Select(t => t.ToIPEndPoint()));
        _targetHosts = [.. _targetHosts, .. added.Select(t => t.HostId)];
        _targetCount = targets.Length;
        _sender.ConnectAsync(CancellationToken.None).PipeTo(Self, success: () => new TargetsConnected(valid),
            failure: e => new TransferStepFailed("connect to new targets", e.GetBaseException().Message));
    }

    private void Accept(IEnumerable<(int Vm, int Target)> replacements)
    {
        _replacements.AddRange(replacements.Where(r => _orphaned.Contains(r.Vm) && (_lost >> r.Target & 1) == 0));
        Self.Tell(ReplacementsArrived.Instance);
    }

    /// <summary>
    /// At a round boundary: re-placed VMs join the open wave of their new target (from <paramref name="firstOpenWave"/> on)
    /// or a new wave at the end. A target whose wave was through is used again; its receiver may have let go of contents
    /// (its VMs started), so the shards forget what it held.
    /// </summary>
    private void ApplyReplacements(int firstOpenWave)
    {
        if (_replacements.Count == 0) return;
        var targetOf = _targetOfVm.ToArray();
        var waves = _waves.ToList();
        ulong forget = 0;
        bool currentGrew = false;
        foreach (var (v, t) in _replacements)
        {
            targetOf[v] = t;
            _orphaned.Remove(v);
            _fullCollect.Add(v);
            int w = waves.FindIndex(x => x.Index >= firstOpenWave && TargetMask.Contains(x.Targets, t));
            if (w < 0)
            {
                if ((_activeTargets >> t & 1) == 0) forget |= 1UL << t;
                _activeTargets |= 1UL << t;
                waves.Add(new Wave(waves.Count, 1UL << t, [v]));
                continue;
            }
            waves[w] = waves[w] with { Vms = waves[w].Vms.Append(v).Order().ToArray() };
            currentGrew |= w == _wave.Index;
        }
        _replacements.Clear();
        _targetOfVm = [.. targetOf];
        _waves = waves;
        if (_wave.Index < waves.Count && _wave.Index >= firstOpenWave) _wave = waves[_wave.Index];
        // A VM joining a wave under way gets that wave's pre-copy rounds afresh.
        if (currentGrew) _waveRounds = 1;
        if (forget != 0) Broadcast(_shardActors, new ForgetTargets(forget));
    }

    private void ResumeHeldOrphans()
    {
        _finalRoundOpen = false;
        foreach (int v in _orphansHeldPaused)
            if (_orphaned.Contains(v)) _vmActors[v].Tell(new ResumeVm("its target was lost; it runs here until re-placed", Settles: false));
        _orphansHeldPaused.Clear();
    }

    /// <summary>Where a loss or a re-placement changes nothing until the next round boundary.</summary>
    private void LossNoticesIgnored()
    {
        Receive<LossHandled>(_ => { });
        Receive<ReplacementsArrived>(_ => { });
    }

    /// <summary>The round's sending is over (and applied, or given up): the shards are their actors' again.</summary>
    private void ReturnLease()
    {
        if (_built is null) return;
        Broadcast(_shardActors, new ReturnShardLease(_leaseRound));
        _built = null;
    }

    /// <summary>All waves are through; orphans await the scheduler's word.</summary>
    private void AwaitingReplacement()
    {
        Receive<ReplacementsArrived>(_ => ResumeWaves());
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<RoundApplied>(_ => { });
        Receive<LossHandled>(_ => { });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        Losses();
        CommonFailures();
    }

    /// <summary>After the last wave: re-placed VMs get waves of their own; or the transfer is complete once no orphan awaits.</summary>
    private void ResumeWaves()
    {
        if (_failed) return;
        if (!Timers.IsTimerActive("progress")) Timers.StartPeriodicTimer("progress", ProgressTick.Instance, _settings.ProgressInterval);
        StartNextWave(_waves.Count);
    }

    /// <summary>Connections the data plane found failed: the scheduler decides whether the target is lost.</summary>
    private void ReportUnreachable()
    {
        foreach (var (t, why) in _sender!.Failures) Unreachable(t, why);
    }

    private void Unreachable(int target, string why)
    {
        if ((_lost >> target & 1) != 0 || !_reportedUnreachable.Add(target)) return;
        _log.Warning("Migration {0}: target {1} ({2}) unreachable: {3}", _migrationId, target, _targetHosts[target], why);
        _scheduler.Tell(new TargetUnreachable(_migrationId, target, _targetHosts[target], why));
        // No word within the decision bound (the scheduler lost): the migration fails here and every VM paused for it runs again.
        Timers.StartSingleTimer($"unreachable-{target}", new UnreachableUndecided(target), _settings.DecisionTimeout);
    }

    private sealed record LossHandled { public static readonly LossHandled Instance = new(); }
    private sealed record ReplacementsArrived { public static readonly ReplacementsArrived Instance = new(); }
    private sealed record RoundOverdue(int Round, OverdueStrike Strike = OverdueStrike.First);
    private sealed record TargetsConnected(List<(int Vm, int Target)> Assignments);
    private sealed record UnreachableUndecided(int TargetIndex);
}
