using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Source;

/// <summary>After a wave: the scheduler's handover decisions, and failure (every VM not handed over runs here again).</summary>
public sealed partial class SourceMigrationActor
{
    private void HandingOver()
    {
        Handovers();
        Receive<AbortMigration>(m => ResumeUnsettled(m.Reason));
        Receive<VmStepFailed>(m => _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, VmId(m.VmIndex), m.Step, m.Error));
        Receive<ChildFailed>(m => _log.Error("Migration {0}: {1}", _migrationId, m.Reason));
        Receive<RoundApplied>(_ => { });
        Receive<RoundSent>(m => Broadcast(_shardActors, new ReturnShardLease(m.Round)));
        Receive<ProgressTick>(_ => { });
    }

    /// <summary>
    /// The scheduler's decisions on VMs whose wave is through: stop a VM here once its target runs it, or let it run here
    /// again. They may come while later waves are still being sent.
    /// </summary>
    private void Handovers()
    {
        Receive<ReleaseSourceVm>(m => WithVm(m.VmId, vm => _vmActors[vm].Tell(new StopSourceVm("handed over"))));
        Receive<ResumeSourceVm>(m => WithVm(m.VmId, vm =>
        {
            _log.Warning("Migration {0}: VM {1} resumes on the source: {2}", _migrationId, m.VmId, m.Reason);
            _vmActors[vm].Tell(new ResumeVm(m.Reason));
        }));
        Receive<VmStopped>(m =>
        {
            var released = new SourceVmReleased(_migrationId, VmId(m.VmIndex));
            _scheduler.Tell(released);
            if (_transferred.Count == _vms.Count) Context.Parent.Tell(released);
            else _freeLater.Add(released);
            Settle(m.VmIndex);
        });
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

    private void Settle(int vmIndex)
    {
        _settled.Add(vmIndex);
        if (_settled.Count == _vms.Count) Context.Stop(Self);
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
        if (tellScheduler) _scheduler.Tell(new TransferFailed(_migrationId, reason));
        ResumeUnsettled(reason);
        Become(HandingOver);
    }

    private void ResumeUnsettled(string reason)
    {
        // Sent to every unsettled VM, paused or not: a pause still in flight completes before the VM actor takes this.
        for (int v = 0; v < _vms.Count; v++)
            if (!_settled.Contains(v) && !_transferred.Contains(v)) _vmActors[v].Tell(new ResumeVm(reason));
    }
}
