using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Source;

/// <summary>After a wave: the scheduler's handover decisions, and failure (every VM not handed over runs here again).</summary>
public sealed partial class SourceMigrationActor
{
    private void HandingOver()
    {
        Handovers();
        Losses();
        Receive<ReplacementsArrived>(_ => ResumeWaves());
        Receive<LossHandled>(_ => { });
        Receive<SourceDigestComputed>(DigestComputed);
        Receive<AbortMigration>(m => ResumeUnsettled(m.Reason));
        SchedulerFailover();
        Receive<VmStepFailed>(m => _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, VmId(m.VmIndex), m.Step, m.Error));
        Receive<ChildFailed>(m => _log.Error("Migration {0}: {1}", _migrationId, m.Reason));
        Receive<RoundApplied>(_ => { });
        Receive<RoundSent>(_ => ReturnLease());
        Receive<ProgressTick>(_ => { });
    }

    /// <summary>
    /// The scheduler's decisions on VMs whose wave is through: stop a VM here once its target runs it, or let it run here
    /// again. They may come while later waves are still being sent.
    /// </summary>
    private void Handovers()
    {
        // Stopped here only once granted to its target (which asked before starting it): else no copy would run.
        Receive<ReleaseSourceVm>(m => WithVm(m.VmId, vm =>
        {
            if (_fence.IsGranted(m.VmId)) _vmActors[vm].Tell(new StopSourceVm("handed over"));
            else _log.Warning("Migration {0}: refused to stop VM {1}: no target was granted it", _migrationId, m.VmId);
        }));
        Receive<ResumeSourceVm>(m => WithVm(m.VmId, vm => ResumeHere(vm, m.Reason)));
        // Its target runs it (the scheduler's word that stops the copy here follows): a held next wave may start.
        Receive<VmResumedOnTarget>(m => m.MigrationId == _migrationId, m => WithVm(m.VmId, vm =>
        {
            if (_fence.HolderOf(m.VmId) != m.HostId) return;
            _landed.Add(vm);
            MaybeReleaseNextWave();
        }));
        // The start of a VM on its target goes through here: granted, the target is told (and answers the scheduler).
        Receive<GrantHandover>(m => m.MigrationId == _migrationId, m =>
        {
            if (_fence.Grant(m.VmId, m.TargetHostId) is { } refusal)
            {
                _log.Warning("Migration {0}: refused {1} the handover of VM {2}: {3}", _migrationId, m.TargetHostId, m.VmId, refusal);
                Sender.Tell(new HandoverRefused(_migrationId, m.VmId, refusal));
                return;
            }
            _log.Debug("Migration {0}: granted {1} the handover of VM {2}", _migrationId, m.TargetHostId, m.VmId);
            Context.Parent.Tell(new SourceVmGranted(_migrationId, m.VmId, Granted: true));
            m.Target.Tell(new ResumeOnTarget(_migrationId, m.VmId, Self), Sender);
        });
        Receive<ReturnResumeGrant>(m => m.MigrationId == _migrationId, m =>
        {
            if (!_fence.Return(m.VmId, m.HostId)) return;
            _log.Warning("Migration {0}: {1} did not start VM {2}; it may run here again", _migrationId, m.HostId, m.VmId);
            Context.Parent.Tell(new SourceVmGranted(_migrationId, m.VmId, Granted: false));
        });
        // No decision within the bound (the scheduler lost or silent): a VM nobody was granted runs here again.
        Receive<FenceTick>(_ =>
        {
            foreach (var id in _fence.Overdue(_clock.Elapsed.TotalSeconds, _settings.DecisionTimeout))
                WithVm(id, vm => ResumeHere(vm, $"no handover decision within {_settings.DecisionTimeout.TotalSeconds:0.###} s"));
        });
        Receive<VmStopped>(m =>
        {
            // Freed when every VM is settled: until then a round (for a VM re-placed after a target was lost) may still
            // read contents held by its pages.
            var released = new SourceVmReleased(_migrationId, VmId(m.VmIndex));
            _scheduler.Tell(released);
            _freeLater.Add(released);
            Settle(m.VmIndex);
        });
        // An orphan runs here until re-placed: still part of the migration.
        Receive<VmResumedHere>(m => !m.Settles, _ => { });
        Receive<VmResumedHere>(m =>
        {
            _scheduler.Tell(new SourceVmResumed(_migrationId, VmId(m.VmIndex)));
            Settle(m.VmIndex);
        });
        // Stopping or resuming one VM that failed does not fail the migration: that VM is settled as it is.
        Receive<VmStepFailed>(m => m.Step is "resume" or "stop", m =>
        {
            _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, VmId(m.VmIndex), m.Step, m.Error);
            Settle(m.VmIndex);
        });
    }

    /// <summary>Runs the VM here again unless it was granted to its target, which may be running it.</summary>
    private void ResumeHere(int vm, string reason)
    {
        if (_fence.ResumeHere(VmId(vm)) is { } refusal)
        {
            _log.Warning("Migration {0}: VM {1} stays paused here ({2}): {3}", _migrationId, VmId(vm), reason, refusal);
            return;
        }
        _log.Warning("Migration {0}: VM {1} resumes on the source: {2}", _migrationId, VmId(vm), reason);
        _vmActors[vm].Tell(new ResumeVm(reason));
        MaybeReleaseNextWave();
    }

    /// <summary>Checks the fence's waiting VMs against the decision bound, from the first transferred wave on.</summary>
    private void ArmFence()
    {
        if (_transferred.Count == 0 || Timers.IsTimerActive("fence")) return;
        var tick = TimeSpan.FromTicks(Math.Clamp(_settings.DecisionTimeout.Ticks / 4, TimeSpan.FromMilliseconds(10).Ticks, TimeSpan.FromSeconds(1).Ticks));
        Timers.StartPeriodicTimer("fence", FenceTick.Instance, tick);
    }

    private void Settle(int vmIndex)
    {
        _settled.Add(vmIndex);
        NoteSettled(vmIndex);
        if (_settled.Count < _vms.Count) { MaybeReleaseNextWave(); return; }
        ReportSettledAfterFailover();
        // Every VM runs in one place. A target the scheduler still tells to start a VM asks here first: the actor
        // stays a while to refuse late handover requests.
        Timers.CancelAll();
        // A round still being sent reads contents from guest pages, stopped VMs' included: they go when it ends.
        if (_sending.IsCompleted) FreeReleasedVms();
        Context.Parent.Tell(new SourceMigrationSettled(_migrationId));
        Timers.StartSingleTimer("linger", LingerOver.Instance, GrantLinger);
        Become(Settled);
    }

    private void Settled()
    {
        // Every VM is settled, so the fence refuses (a VM resumed here) or finds it granted already (stopped here).
        Receive<GrantHandover>(m => m.MigrationId == _migrationId, m =>
            Sender.Tell(new HandoverRefused(_migrationId, m.VmId, _fence.Grant(m.VmId, m.TargetHostId) ?? $"VM {m.VmId} was handed over already")));
        Receive<LingerOver>(_ => Context.Stop(Self));
        Receive<RoundSent>(_ => FreeReleasedVms());
        Receive<TransferStepFailed>(_ => { if (_sending.IsCompleted) FreeReleasedVms(); });
        SchedulerFailover();
        ReceiveAny(_ => { });
    }

    /// <summary>No round reads guest pages any more: the host may free the VMs stopped here.</summary>
    private void FreeReleasedVms()
    {
        foreach (var released in _freeLater) Context.Parent.Tell(released);
        _freeLater.Clear();
    }

    private void CommonFailures()
    {
        Receive<VmStepFailed>(m => Fail($"VM {VmId(m.VmIndex)}: {m.Step} failed: {m.Error}"));
        Receive<TransferStepFailed>(m => Fail($"{m.Step} failed: {m.Error}"));
        Receive<ChildFailed>(m => Fail(m.Reason));
        Receive<AbortMigration>(m => Fail(m.Reason, tellScheduler: false));
        SchedulerFailover();
    }

    /// <summary>
    /// Nothing is lost: every VM paused for this migration runs again here, and the scheduler is told why. A VM whose wave
    /// is through waits for the scheduler instead (its target may already be resuming it; the scheduler resumes it here
    /// when it has not).
    /// </summary>
    private void Fail(string reason, bool tellScheduler = true)
    {
        _log.Error("Migration {0} failed on the source: {1}", _migrationId, reason);
        Timers.CancelAll();
        ArmFence();
        _failed = true;
        if (_sending.IsCompleted) ReturnLease();
        _orphaned.Clear();
        _replacements.Clear();
        if (tellScheduler) _scheduler.Tell(new TransferFailed(_migrationId, reason));
        ResumeUnsettled(reason);
        Become(HandingOver);
    }

    private void ResumeUnsettled(string reason)
    {
        // A wave through but not yet announced (digests pending) waits for the scheduler too, under the same bound.
        foreach (int v in _transferred.Where(v => !_settled.Contains(v))) _fence.Transferred(VmId(v), _targetHosts[_targetOfVm[v]], _clock.Elapsed.TotalSeconds);
        ArmFence();
        // Sent to every unsettled VM, paused or not: a pause still in flight completes before the VM actor takes this.
        for (int v = 0; v < _vms.Count; v++)
            if (!_settled.Contains(v) && !_transferred.Contains(v)) _vmActors[v].Tell(new ResumeVm(reason));
    }
}
