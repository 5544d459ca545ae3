using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>Handovers, failures and completion: each VM ends running in exactly one place, and the journal says where.</summary>
public sealed partial class MigrationSchedulerActor
{
    private void DecideHandovers(MigrationRun run)
    {
        foreach (var step in HandoverDecisions.Decide(run))
        {
            run.Phase = run.Transfer is null ? MigrationPhase.HandingOver : MigrationPhase.Verifying;
            switch (step)
            {
                case HandoverStep.Resume r:
                    run.ResumeRequested.Add(r.VmId);
                    run.SourceMigration!.Tell(new GrantHandover(run.Id, r.VmId, r.TargetHostId, run.TargetRefs[r.TargetHostId]));
                    break;
                case HandoverStep.Fail f:
                    FailVm(run, f.VmId, f.Reason);
                    break;
            }
        }
        MaybeComplete(run);
    }

    /// <summary>The VM runs on its target: journaled, and its source copy stopped.</summary>
    private void RecordResumed(MigrationRun run, VmHandedOver handed) => Record(handed, e =>
    {
        // Its memory there was counted against the target when the target reserved it (ReceiverReady, ReceiverExtended).
        run.HandedOver[e.VmId] = e;
        run.Handovers.Add(new(run.SecondsNow, e.VmId.Value, e.TargetHostId.Value, e.DowntimeMs, true));
        run.Requester.Tell(e);
        run.SourceHost.Tell(new ReleaseSourceVm(run.Id, e.VmId));
    });

    private void FailVm(MigrationRun run, VmId vmId, string reason)
    {
        if (run.Decided(vmId)) return;
        run.ResumeRequested.Remove(vmId);
        run.Failed[vmId] = reason;
        Record(new VmHandoverFailed(run.Id, vmId, reason), e =>
        {
            run.Requester.Tell(e);
            _log.Warning("Migration {0}: VM {1} stays on the source: {2}", run.Id, vmId, reason);
            run.SourceHost.Tell(new ResumeSourceVm(run.Id, vmId, reason));
            if (run.TargetOfVm.TryGetValue(vmId, out var target) && run.TargetRefs.TryGetValue(target, out var targetRef))
                targetRef.Tell(new DiscardReceived(run.Id, [vmId]));
            MaybeComplete(run);
        });
    }

    /// <summary>The whole migration fails: every VM not yet handed over stays (or resumes) on the source.</summary>
    private void FailRun(MigrationRun run, string reason, bool tellSource = true)
    {
        if (run.Error is not null) return;
        run.Error = reason;
        _log.Warning("Migration {0} failed: {1}", run.Id, reason);
        if (tellSource) run.SourceHost.Tell(new AbortMigration(run.Id, reason));
        Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "resuming on the source"), _settings.HandoverTimeout);
        var failed = HandoverDecisions.FailUndecided(run, reason);
        foreach (var f in failed) run.Failed[f.VmId] = reason;
        // The source resumes by itself the VMs it still transfers; those whose wave is through wait for this word.
        foreach (var f in failed) run.SourceHost.Tell(new ResumeSourceVm(run.Id, f.VmId, reason));
        RecordAll(failed, e => run.Requester.Tell(e));
        foreach (var (host, target) in run.TargetRefs)
            // Not a VM whose start was asked for: its grant may be on its way to the target, which answers it.
            target.Tell(new DiscardReceived(run.Id, run.Vms.Where(v => !run.HandedOver.ContainsKey(v.Id) && !run.ResumeRequested.Contains(v.Id)
                && run.TargetOfVm.GetValueOrDefault(v.Id) == host).Select(v => v.Id).ToArray()));
        DeferAsync(run.Id, _ => MaybeComplete(run));
    }

    private void TimedOut(MigrationRun run, string phase)
    {
        if (run.Error is null) { FailRun(run, $"timed out while {phase}"); return; }
        // Failed already, and not everyone answered: report what is known rather than wait forever. A VM whose target
        // never confirmed its resume is NOT resumed on the source (two running copies would be worse); the report says
        // where to look.
        run.SourceWillNotConfirm = true;
        var unknown = run.ResumeRequested.Where(v => !run.Decided(v))
            .Select(v => new VmHandoverFailed(run.Id, v, $"target {run.TargetOfVm[v]} did not confirm resuming it; left paused on the source, check the target before resuming either copy")).ToArray();
        foreach (var f in unknown) run.Failed[f.VmId] = f.Reason;
        RecordAll(unknown, e => run.Requester.Tell(e));
        DeferAsync(run.Id, _ => MaybeComplete(run));
    }

    private void MaybeComplete(MigrationRun run)
    {
        if (!run.AllSettled || !_runs.ContainsKey(run.Id)) return;
        _runs.Remove(run.Id);
        _keys.Remove(run.Id);
        Timers.Cancel(run.Id);
        Record(new MigrationCompleted(run.Id, MigrationReportBuilder.Build(run, DateTime.UtcNow)), e => run.Requester.Tell(new MigrationFinished(e.MigrationId, e.Report)));
    }

    private void HostLost(IActorRef host)
    {
        foreach (var (id, _) in _sources.Where(s => s.Value.Host.Equals(host)).ToArray())
        {
            _sources.Remove(id);
            foreach (var run in _runs.Values.Where(r => r.SourceHostId == id).ToArray())
            {
                run.SourceWillNotConfirm = true;
                FailRun(run, $"source host {id} left the cluster", tellSource: false);
                MaybeComplete(run);
            }
        }
        foreach (var (id, registration) in _targets.Where(t => t.Value.Host.Equals(host)).ToArray())
        {
            _targets.Remove(id);
            // Its host actor is gone, and with it every guest that lived in its process (synthetic): a start granted
            // there and never confirmed left no running copy.
            bool guestsEnded = !registration.GuestsOutliveHost;
            foreach (var run in _runs.Values.Where(r => r.Involves(id)).ToArray())
            {
                // Lost before (its data plane failed first) or the run failed meanwhile: only its unconfirmed starts are news.
                if (guestsEnded && (run.Error is not null || run.LostTargets.Contains(id)))
                    VoidUnconfirmed(run, id, Unconfirmed(run, id).ToArray(), $"{id} left the cluster and its guests ended with it");
                LoseTarget(run, id, "it left the cluster", guestsEnded);
            }
        }
    }
}
