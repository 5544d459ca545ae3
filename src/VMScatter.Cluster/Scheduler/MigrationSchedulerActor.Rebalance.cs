using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// A target lost mid-migration (it left the cluster, or the source's data plane lost it): the migration goes on. The
/// source is told (<see cref="TargetLost"/>), runs the lost target's VMs not granted to it again and reports them
/// (<see cref="VmsOrphaned"/>); they are re-placed on the targets left (<see cref="Replacement"/>, within capacity,
/// journaled as <see cref="VmsReplaced"/>), each new target extends its receiver, and the source sends them there.
/// A VM with no room left stays on the source, as a failed handover the report names.
/// </summary>
public sealed partial class MigrationSchedulerActor
{
    private void Rebalancing()
    {
        Command<ReturnedTargetInventory>(ReturnedTarget);
        Command<TargetUnreachable>(m => WithRun(m.MigrationId, run =>
        {
            if (!Sender.Equals(run.SourceMigration)) { Refuse(run, m, "not from the run's source migration"); return; }
            LoseTarget(run, m.HostId, $"the source's data plane lost it: {m.Reason}");
        }));
        Command<VmsOrphaned>(m => WithRun(m.MigrationId, run =>
        {
            if (!Sender.Equals(run.SourceMigration)) { Refuse(run, m, "not from the run's source migration"); return; }
            Orphaned(run, m);
        }));
        Command<ReceiverExtended>(m => WithRun(m.MigrationId, run =>
        {
            // Replies from one host come in the order it was asked.
            var batch = run.PendingReplacements.FirstOrDefault(b => b.Waiting.ContainsKey(m.HostId));
            if (batch is null || !run.TargetRefs.TryGetValue(m.HostId, out var target) || !Sender.Equals(target))
            {
                Refuse(run, m, $"no re-placement waits for {m.HostId} (or not from that host)");
                return;
            }
            batch.Waiting.Remove(m.HostId, out var assigned);
            if (m.Refusal is null)
            {
                batch.Confirmed.AddRange(assigned!);
                // Reserved there now, and no longer pending: counted until its next announcement counts it.
                CountAgainst(m.HostId, assigned!.Sum(a => a.Vm.MemoryBytes));
            }
            else
            {
                var ids = assigned!.Select(a => a.Vm.Id).ToArray();
                run.SourceMigration!.Tell(new ReplaceVms(run.Id, [], ids, batch.Targets));
                foreach (var id in ids) StayOnSource(run, id, $"re-placed on {m.HostId}, which refused it: {m.Refusal}");
            }
            MaybeReplaced(run);
        }));
    }

    /// <summary>
    /// A host id registers anew (its node restarted): if it was lost to a run holding VMs granted to it and never
    /// confirmed, what it runs now (its guests re-adopted) says where those VMs are.
    /// </summary>
    private void AskReturnedTarget(RegisterTargetHost m)
    {
        if (!_runs.Values.Any(r => r.LostTargets.Contains(m.HostId) && Unconfirmed(r, m.HostId).Any())) return;
        _log.Info("Lost target {0} is back: asking which of the VMs granted to it run there", m.HostId);
        m.Host.Ask<HostInventory>(GetHostInventory.Instance, _settings.ReconcileTimeout)
            .PipeTo(Self, success: inventory => new ReturnedTargetInventory(m.HostId, m.Host, inventory), failure: _ => new ReturnedTargetInventory(m.HostId, m.Host, null));
    }

    private static IEnumerable<VmId> Unconfirmed(MigrationRun run, HostId host) =>
        run.ResumeRequested.Where(v => run.TargetOfVm.GetValueOrDefault(v) == host && !run.Decided(v)).Order();

    /// <summary>
    /// A VM granted to the returned host that runs there was handed over (its digests matched before the grant); one it
    /// neither runs nor is still starting never started: the source may run it again, and it is re-placed (or stays
    /// on the source if the run failed meanwhile). No answer: nothing is decided, as before.
    /// </summary>
    private void ReturnedTarget(ReturnedTargetInventory m)
    {
        if (m.Inventory is not { } inventory || inventory.HostId != m.HostId || !_targets.TryGetValue(m.HostId, out var registered) || !registered.Host.Equals(m.Host)) return;
        foreach (var run in _runs.Values.Where(r => r.LostTargets.Contains(m.HostId)).ToArray())
        {
            var voided = new List<VmId>();
            foreach (var vm in Unconfirmed(run, m.HostId).ToArray())
            {
                if (inventory.Running.Contains(vm))
                {
                    _log.Warning("Migration {0}: {1} came back running VM {2}, granted to it before it was lost: handed over", run.Id, m.HostId, vm);
                    // When it resumed there is unknown: the downtime counted is its bound, from the pause to now.
                    long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                    RecordResumed(run, new VmHandedOver(run.Id, vm, m.HostId, run.TargetDigestOf.GetValueOrDefault(vm, ""), now - run.PausedAt.GetValueOrDefault(vm, now)));
                }
                else if (!inventory.Paused.Contains(vm)) voided.Add(vm);
            }
            VoidUnconfirmed(run, m.HostId, voided, $"{m.HostId} came back without it");
        }
    }

    /// <summary>
    /// Starts granted to a lost host that it certainly does not run: the source may run those VMs again, and re-places
    /// them (a failed run re-places nothing: they stay on the source, as failed handovers).
    /// </summary>
    private void VoidUnconfirmed(MigrationRun run, HostId host, IReadOnlyList<VmId> vms, string reason)
    {
        if (vms.Count == 0) return;
        _log.Warning("Migration {0}: {1} does not run {2}, granted to it: {3}", run.Id, host, string.Join(", ", vms), reason);
        foreach (var vm in vms) run.ResumeRequested.Remove(vm);
        if (run.Targets.FirstOrDefault(t => t.HostId == host) is { } endpoint)
            run.SourceMigration?.Tell(new GrantsVoided(run.Id, host, endpoint.Index, vms, reason));
        if (run.Error is null) return;
        foreach (var vm in vms)
        {
            run.Failed[vm] = reason;
            Record(new VmHandoverFailed(run.Id, vm, reason), e => { run.Requester.Tell(e); MaybeComplete(run); });
        }
    }

    private sealed record ReturnedTargetInventory(HostId HostId, IActorRef Host, HostInventory? Inventory);

    /// <summary>Re-placements every live target confirmed go to the source, oldest first.</summary>
    private static void MaybeReplaced(MigrationRun run)
    {
        while (run.PendingReplacements.Count > 0 && run.PendingReplacements[0].Waiting.Count == 0)
        {
            var batch = run.PendingReplacements[0];
            run.PendingReplacements.RemoveAt(0);
            foreach (var a in batch.Confirmed) run.Orphans.Remove(a.Vm.Id);
            run.SourceMigration!.Tell(new ReplaceVms(run.Id, batch.Confirmed, [], batch.Targets));
        }
    }

    private void LoseTarget(MigrationRun run, HostId host, string reason, bool guestsEnded = false)
    {
        if (run.Error is not null || !run.Involves(host) || !run.LostTargets.Add(host)) return;
        // Started there, unconfirmed, and the guests ended with the host: not running anywhere, so re-placed like the rest.
        // (A host whose guests outlive it may be running them: those wait for its word, or the handover timeout.)
        var voided = guestsEnded ? Unconfirmed(run, host).ToArray() : [];
        foreach (var v in voided) run.ResumeRequested.Remove(v);
        if (voided.Length > 0)
            _log.Warning("Migration {0}: {1} never confirmed starting {2}, and its guests ended with it: they run on the source again until re-placed",
                run.Id, host, string.Join(", ", voided));
        run.LostReasons.Add($"{host}: {reason}");
        _log.Warning("Migration {0}: target {1} is lost ({2}); its VMs not handed over are re-placed", run.Id, host, reason);
        run.Requester.Tell(new MigrationTargetLost(run.Id, host, reason));
        // If it is still there: what it received for VMs not started there goes.
        if (run.TargetRefs.TryGetValue(host, out var lostRef))
            lostRef.Tell(new DiscardReceived(run.Id, run.Vms.Where(v => run.TargetOfVm.GetValueOrDefault(v.Id) == host && !run.HandedOver.ContainsKey(v.Id)
                && !run.ResumeRequested.Contains(v.Id)).Select(v => v.Id).ToArray()));
        // Re-placements waiting for it: without its word, and its VMs among them go elsewhere.
        foreach (var batch in run.PendingReplacements.ToArray())
            if (batch.Waiting.Remove(host, out var pending) && pending.Count > 0) Replace(run, pending.Select(a => a.Vm.Id).ToList(), host);
        MaybeReplaced(run);
        switch (run.Phase)
        {
            case MigrationPhase.Analysing or MigrationPhase.Placing:
                return; // placement leaves it out (and places again if it had chosen it)
            case MigrationPhase.Preparing:
                MaybeBeginTransfer(run); // the source hears of the loss right after the plan
                return;
            default:
                TellSourceLost(run, host, reason, voided);
                return;
        }
    }

    /// <summary>Every target left is ready: the transfer begins, and the source learns of the targets lost meanwhile.</summary>
    private void MaybeBeginTransfer(MigrationRun run)
    {
        if (run.Phase != MigrationPhase.Preparing || run.Targets.Any(t => !run.ReadyTargets.Contains(t.HostId) && !run.LostTargets.Contains(t.HostId))) return;
        run.Phase = MigrationPhase.Transferring;
        // The analysis timer bounds analysis, placement and preparation, not the transfer (a long one is no fault); a
        // source lost during it fails the run, a target lost is re-placed, through their Terminated.
        Timers.Cancel(run.Id);
        _log.Debug("Migration {0}: targets ready at {1:F3} s", run.Id, run.SecondsNow);
        run.SourceMigration!.Tell(new BeginTransfer(run.Id, _keys[run.Id], run.Targets, Assignments(run)));
        foreach (var lost in run.LostTargets) TellSourceLost(run, lost, "lost while the targets prepared");
    }

    private static void TellSourceLost(MigrationRun run, HostId host, string reason, IReadOnlyList<VmId>? voidedGrants = null)
    {
        // A target the placement used; one it did not use had nothing to lose.
        if (run.Targets.FirstOrDefault(t => t.HostId == host) is { } endpoint)
            run.SourceMigration!.Tell(new TargetLost(run.Id, host, endpoint.Index, reason, voidedGrants));
    }

    private void Orphaned(MigrationRun run, VmsOrphaned m)
    {
        if (run.Error is not null) return;
        var orphans = m.VmIds.Where(v => run.Moves(v) && !run.Decided(v) && !run.ResumeRequested.Contains(v)).Distinct().ToList();
        var stale = m.VmIds.Except(orphans).ToArray();
        if (stale.Length > 0) run.SourceMigration!.Tell(new ReplaceVms(run.Id, [], stale, run.Targets.ToArray()));
        if (orphans.Count == 0) return;
        foreach (var v in orphans)
        {
            run.SourceDigestOf.Remove(v);
            run.DirtyTrackingOf.Remove(v);
            run.TargetDigestOf.Remove(v);
            run.PausedAt.Remove(v);
        }
        // Transfer again: the handover timer restarts when the source reports the transfer complete once more.
        if (run.Transfer is not null) Timers.Cancel(run.Id);
        Replace(run, orphans, m.LostHostId);
    }

    /// <summary>Chooses new targets for VMs of a lost target (<see cref="Replacement.Plan"/>), journals it and asks those targets to extend their receivers.</summary>
    private void Replace(MigrationRun run, List<VmId> vmIds, HostId lostHost)
    {
        run.Orphans.UnionWith(vmIds);
        var index = run.Vms.Select((v, i) => (v.Id, i)).ToDictionary(x => x.Id, x => x.i);
        var profileOf = run.Profiles.ToDictionary(p => p.VmId);
        var others = run.Vms.Where(v => !run.Orphans.Contains(v.Id) && !run.Decided(v.Id) && !run.ResumeRequested.Contains(v.Id) && run.TargetOfVm.ContainsKey(v.Id)).ToArray();
        // The content model: the orphans first, then the VMs each target left still receives (their pages it holds).
        var modelled = vmIds.Concat(others.Select(v => v.Id)).ToArray();
        var contents = new SketchContentModel(modelled.Select(id => profileOf.TryGetValue(id, out var p)
            ? BottomKSketch.FromValues(Math.Max(2, p.SketchSize), p.Sketch) : new BottomKSketch(2)).ToArray());
        var placedOn = others.Select((v, i) => (Host: run.TargetOfVm[v.Id], Index: vmIds.Count + i)).GroupBy(x => x.Host.Value)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<int>)g.Select(x => x.Index).ToArray());
        // The targets left, and (for a migration to every target) any target that joined since; within the mask's room.
        var used = run.Targets.Select(t => t.HostId).ToHashSet();
        var joined = (run.Request.TargetHostIds.Count == 0 ? _targets.Keys.ToArray() : run.TargetHostIds).Where(h => !used.Contains(h)).Order()
            .Take(TargetMask.MaxTargets - run.Targets.Count);
        var hosts = used.Concat(joined).Where(h => !run.LostTargets.Contains(h) && _targets.ContainsKey(h)).Order()
            .Select(h => new PlacementHost(h.Value, _targets[h].FreeBytes - PendingBytes(h), Rack: string.IsNullOrEmpty(_targets[h].Rack) ? null : _targets[h].Rack))
            .ToArray();
        var vms = vmIds.Select(id => run.Vms[index[id]]).Select(v => new PlacementVm(v.Id.Value, v.MemoryBytes, v.VCpus)).ToArray();
        var plan = Replacement.Plan(vms, hosts, contents, placedOn);

        var unplaced = plan.Unplaced.Select(u => (Id: new VmId(u.Key), Why: u.Value)).OrderBy(u => u.Id).ToArray();
        if (unplaced.Length > 0)
        {
            run.SourceMigration?.Tell(new ReplaceVms(run.Id, [], unplaced.Select(u => u.Id).ToArray(), run.Targets.ToArray()));
            foreach (var (id, why) in unplaced)
            {
                run.Replacements.Add(new VmReplacement(id.Value, lostHost.Value, ""));
                StayOnSource(run, id, $"its target {lostHost} was lost and {why}; it keeps running on the source");
            }
        }
        if (plan.HostOf.Count == 0) return;
        var targetOf = plan.HostOf.ToDictionary(p => new VmId(p.Key), p => new HostId(p.Value));
        Record(new VmsReplaced(run.Id, lostHost, targetOf), e =>
        {
            // A host new to the migration takes the next index; every live target learns the endpoints (relay chains).
            foreach (var host in e.TargetOfVm.Values.Distinct().Order().Where(h => run.Targets.All(t => t.HostId != h)))
            {
                if (!_targets.TryGetValue(host, out var registered)) continue;
                run.Targets.Add(new TargetEndpoint(run.Targets.Count, host, registered.DataPlaneHost, registered.DataPlanePort));
                run.TargetRefs[host] = registered.Host;
            }
            var endpointOf = run.Targets.ToDictionary(t => t.HostId);
            var batch = new ReplacementBatch { Targets = run.Targets.ToArray() };
            foreach (var t in run.Targets.Where(t => !run.LostTargets.Contains(t.HostId))) batch.Waiting[t.HostId] = new();
            foreach (var (vm, host) in e.TargetOfVm.OrderBy(p => p.Key))
            {
                if (!batch.Waiting.TryGetValue(host, out var list))
                {
                    StayOnSource(run, vm, $"its target {lostHost} was lost and {host}, chosen instead, left meanwhile");
                    continue;
                }
                run.TargetOfVm[vm] = host;
                run.Replacements.Add(new VmReplacement(vm.Value, lostHost.Value, host.Value));
                list.Add(new VmAssignment(index[vm], run.Vms[index[vm]], endpointOf[host].Index));
            }
            run.PendingReplacements.Add(batch);
            run.Requester.Tell(e);
            foreach (var (host, list) in batch.Waiting)
                run.TargetRefs[host].Tell(new ExtendReceive(run.Id, DataPlaneKeys.ForReceiver(_keys[run.Id], run.Id.Value, endpointOf[host].Index, batch.Targets.Count, run.Request.Options.GroupTransport == DataPlane.GroupTransport.Multicast), endpointOf[host].Index, batch.Targets, list.ToArray(),
                    run.SourceMigration!, run.Request.Options.LinkBitsPerSecond));
        });
    }

    /// <summary>A re-placement that found no home: the VM runs on the source (a failed handover, with why).</summary>
    private void StayOnSource(MigrationRun run, VmId vm, string why)
    {
        run.Orphans.Remove(vm);
        FailVm(run, vm, why);
    }

    /// <summary>Memory of re-placed VMs a target has not yet confirmed (its announcements do not count them yet).</summary>
    private long PendingBytes(HostId host) =>
        _runs.Values.Sum(r => r.PendingReplacements.Sum(b => b.Waiting.TryGetValue(host, out var list) ? list.Sum(a => a.Vm.MemoryBytes) : 0));
}
