using System.Security.Cryptography;
using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Placement;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// The migration scheduler, a cluster singleton; it orchestrates, the rules are elsewhere:
/// <see cref="MigrationRequestValidator"/> (is a request runnable), the <see cref="Placer"/> (run off this actor's
/// thread, its result comes back as a message), <see cref="HandoverDecisions"/> (when a VM is resumed on its target,
/// and which report of a resume counts), <see cref="MigrationJournal"/> (events → journaled state, on recovery and
/// after each persist) and <see cref="MigrationReportBuilder"/>. Per migration: analysing → placing → preparing →
/// transferring → handing over / verifying → completed. Decisions are event-sourced (Akka.Persistence.Sql), so the
/// record of what went where survives a restart; a migration cut short by a restart or a move is reconciled with its
/// hosts and ended. Three files by concern: this one takes requests, placement and registrations; .Handover.cs decides
/// handovers and failures; .Recovery.cs reconciles what a previous incarnation left in flight.
/// </summary>
public sealed partial class MigrationSchedulerActor : ReceivePersistentActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly SchedulerSettings _settings;
    private readonly Dictionary<HostId, RegisterSourceHost> _sources = new();
    private readonly Dictionary<HostId, RegisterTargetHost> _targets = new();
    private readonly MigrationJournal _journal = new();
    private readonly Dictionary<MigrationId, MigrationRun> _runs = new();
    // Per-migration data-plane keys; never journaled.
    private readonly Dictionary<MigrationId, byte[]> _keys = new();
    private readonly Hosting.VmScatterMetrics _metrics = Hosting.VmScatterMetrics.For(Context.System);

    public MigrationSchedulerActor(SchedulerSettings settings)
    {
        _settings = settings;
        PersistenceId = settings.PersistenceId;

        Recover<IPersistedEvent>(_journal.Apply);
        // Runs are not persisted: whatever was in flight when the previous incarnation stopped is reconciled with its
        // hosts and ended (.Recovery.cs).
        Recover<RecoveryCompleted>(_ => BeginReconciliation());
        ReconcileCommands();

        Command<RegisterSourceHost>(m =>
        {
            if (TakenByAnother(m.HostId, m.Host)) return;
            if (!_sources.ContainsKey(m.HostId)) Context.Watch(m.Host);
            _sources[m.HostId] = m;
            Sender.Tell(new HostRegistered(m.HostId));
        });
        Command<RegisterTargetHost>(m =>
        {
            if (TakenByAnother(m.HostId, m.Host)) return;
            bool returning = !_targets.ContainsKey(m.HostId);
            if (returning) Context.Watch(m.Host);
            _targets[m.HostId] = m;
            Sender.Tell(new HostRegistered(m.HostId));
            if (returning) AskReturnedTarget(m);
        });
        Command<GetRegisteredHosts>(_ => Sender.Tell(new RegisteredHosts(_sources.Keys.Order().ToArray(), _targets.Keys.Order().ToArray())));
        Command<GetMigrationStatus>(m => Sender.Tell(Status(m.MigrationId)));
        Command<Terminated>(t => HostLost(t.ActorRef));

        Command<StartMigration>(m =>
        {
            Serialization.SerializerWarmup.EnsureWarm(Context.System);
            Start(m);
        });
        Command<VmsAnalyzed>(m => WithRun(m.MigrationId, run => Place(run, m)));
        Command<PlacementComputed>(m => WithRun(m.MigrationId, run => Placed(run, m.Placement)));
        Command<PlacementFailed>(m => WithRun(m.MigrationId, run => FailRun(run, m.Reason)));
        Command<ReceiverReady>(m => WithRun(m.MigrationId, run =>
        {
            if (!run.TargetRefs.ContainsKey(m.HostId)) { Refuse(run, m, $"host {m.HostId} is not a target of it"); return; }
            if (!run.ReadyTargets.Add(m.HostId)) return;
            // Its memory for the run's VMs is reserved now, and Reserved stops counting it: until its next announcement
            // says so itself, the one held here (made before the reservation) must not offer that room to a re-placement.
            CountAgainst(m.HostId, PlacedOn(run, m.HostId));
            MaybeBeginTransfer(run);
        }));
        Command<ReceiverRefused>(m => WithRun(m.MigrationId, run => FailRun(run, $"target {m.HostId} refused: {m.Reason}")));
        Command<TransferProgress>(m => WithRun(m.MigrationId, run =>
        {
            run.Progress.Observe(m, DateTime.UtcNow);
            if (run.Samples.Count < Domain.Reports.ReportTimeline.MaxSamples)
                run.Samples.Add(new(run.SecondsNow, m.Round, m.BytesSent, m.Wave, (m.WaveTargets ?? []).Select(t => t.Value).ToArray()));
            run.Requester.Tell(new MigrationProgress(m.MigrationId, run.Phase, m.Round, m.BytesSent, m.ContentRecordsSent, m.PagesInRound, m.Wave, m.WaveTargets, m.StopAndCopy, m.ContentRecordsInRound));
        }));
        Command<TransferFailed>(m => WithRun(m.MigrationId, run =>
        {
            // Refused before any migration actor existed on the source: no VM was ever paused there.
            if (run.SourceMigration is null) run.SourceWillNotConfirm = true;
            FailRun(run, m.Reason, tellSource: false);
        }));
        // A wave of a staggered handover is through: its VMs can be handed over while the others still transfer.
        Command<VmsTransferred>(m => WithRun(m.MigrationId, run =>
        {
            _log.Debug("Migration {0}: VMs {1} transferred", m.MigrationId, string.Join(",", m.SourceDigests.Select(d => d.VmId)));
            Transferred(run, m.SourceDigests, m.PausedAtUnixMs);
            DecideHandovers(run);
        }));
        Command<TransferCompleted>(m => WithRun(m.MigrationId, run =>
        {
            run.Transfer = m;
            run.Phase = MigrationPhase.Verifying;
            Transferred(run, m.SourceDigests, m.PausedAtUnixMs);
            Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "handing over"), _settings.HandoverTimeout);
            // Targets send their digests by themselves once their last round is in; compare when both sides are here.
            DecideHandovers(run);
        }));
        Command<TargetDigests>(m => WithRun(m.MigrationId, run =>
        {
            if (!run.TargetRefs.ContainsKey(m.HostId)) { Refuse(run, m, $"host {m.HostId} is not a target of it"); return; }
            if (run.LostTargets.Contains(m.HostId)) { Refuse(run, m, $"host {m.HostId} is lost to it"); return; }
            _log.Debug("Migration {0}: digests from {1}", m.MigrationId, m.HostId);
            run.TargetDigests[m.HostId] = m;
            foreach (var d in m.Digests.Where(d => run.TargetOfVm.GetValueOrDefault(d.VmId) == m.HostId)) run.TargetDigestOf[d.VmId] = d.Digest;
            DecideHandovers(run);
        }));
        Command<VmResumedOnTarget>(m => WithRun(m.MigrationId, run =>
        {
            var handed = HandoverDecisions.Resumed(run, m, out var refusal);
            if (handed is null) { Refuse(run, m, refusal!); return; }
            RecordResumed(run, handed);
        }));
        Command<HandoverRefused>(m => WithRun(m.MigrationId, run =>
        {
            if (!Sender.Equals(run.SourceMigration)) { Refuse(run, m, "not from the run's source migration"); return; }
            FailVm(run, m.VmId, $"the source refused the handover: {m.Reason}");
        }));
        Command<VmResumeFailed>(m => WithRun(m.MigrationId, run =>
        {
            if (run.TargetOfVm.GetValueOrDefault(m.VmId) != m.HostId) { Refuse(run, m, $"host {m.HostId} is not VM {m.VmId}'s target"); return; }
            FailVm(run, m.VmId, m.Reason);
        }));
        Command<SourceVmReleased>(m => WithRun(m.MigrationId, run =>
        {
            run.Released.Add(m.VmId);
            MaybeComplete(run);
        }));
        Command<SourceVmResumed>(m => WithRun(m.MigrationId, run =>
        {
            run.ResumedOnSource.Add(m.VmId);
            MaybeComplete(run);
        }));
        Command<RunTimeout>(m => WithRun(m.MigrationId, run => TimedOut(run, m.Phase)));
        Rebalancing();
        ConsoleCommands();
    }

    public override string PersistenceId { get; }

    public ITimerScheduler Timers { get; set; } = null!;

    private void Start(StartMigration m)
    {
        var request = MigrationRequestValidator.Validate(m, _journal.Contains(m.MigrationId), _sources, _targets,
            t => _targets[t].FreeBytes - Reserved(t), vm => _runs.Values.Any(r => r.Moves(vm)), out var rejection);
        if (rejection is not null)
        {
            Sender.Tell(new MigrationRejected(m.MigrationId, rejection));
            return;
        }
        var requester = Sender;
        var started = new MigrationStarted(m.MigrationId, m.SourceHostId, request.TargetHostIds, request.Vms.Select(v => v.Id).ToArray(), DateTime.UtcNow);
        Record(started, e =>
        {
            var run = new MigrationRun
            {
                Id = e.MigrationId, Request = m, Requester = requester, SourceHostId = m.SourceHostId, SourceHost = request.Source.Host,
                Vms = request.Vms, TargetHostIds = request.TargetHostIds, StartedUtc = e.AtUtc,
            };
            _runs[run.Id] = run;
            _keys[run.Id] = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
            _log.Debug("Migration {0}: started (journalled) {1:F1} ms after its request arrived", run.Id, (DateTime.UtcNow - e.AtUtc).TotalMilliseconds);
            requester.Tell(new MigrationAccepted(run.Id, run.Vms.Count, run.TargetHostIds.Count));
            Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "analysing"), _settings.AnalysisTimeout);
            run.SourceHost.Tell(new AnalyzeVms(run.Id, run.Vms.Select(v => v.Id).ToArray(), m.Options));
        });
    }

    /// <summary>
    /// A host id belongs to the host that registered it until that host is gone (Terminated): another address announcing
    /// the same id is refused, or it would receive that host's migrations, keys and guest memory.
    /// </summary>
    private bool TakenByAnother(HostId id, IActorRef host)
    {
        var holder = _sources.TryGetValue(id, out var s) ? s.Host : _targets.TryGetValue(id, out var t) ? t.Host : null;
        if (holder is null || holder.Equals(host)) return false;
        _log.Warning("Refused host id {0} from {1}: registered by {2}", id, host.Path.Address, holder.Path.Address);
        Sender.Tell(new HostRegistrationRefused(id, $"host id {id} is registered by {holder.Path.Address}"));
        return true;
    }

    /// <summary>Memory a target took since its last announcement (which a later one counts itself).</summary>
    private void CountAgainst(HostId host, long bytes)
    {
        if (_targets.TryGetValue(host, out var t)) _targets[host] = t with { FreeBytes = t.FreeBytes - bytes };
    }

    /// <summary>Memory placed on a target by migrations in flight that the target has not yet reserved itself.</summary>
    private long Reserved(HostId targetId) => _runs.Values.Sum(r => r.ReadyTargets.Contains(targetId) ? 0 : PlacedOn(r, targetId));

    /// <summary>The memory of a run's VMs placed on a target.</summary>
    private static long PlacedOn(MigrationRun run, HostId targetId) => run.Vms.Where(v => run.TargetOfVm.GetValueOrDefault(v.Id) == targetId).Sum(v => v.MemoryBytes);

    /// <summary>The placer searches for up to its time budget: it runs on the pool, and its answer comes back as a message.</summary>
    private void Place(MigrationRun run, VmsAnalyzed m)
    {
        if (run.Phase != MigrationPhase.Analysing) { Refuse(run, m, $"profiles arrived while {run.Phase}"); return; }
        run.Phase = MigrationPhase.Placing;
        run.SourceMigration = Sender;
        run.Profiles = m.Profiles;
        run.DistinctPages = m.DistinctPages;
        _log.Debug("Migration {0}: profiles in at {1:F3} s", run.Id, run.SecondsNow);
        ComputePlacement(run);
    }

    private void ComputePlacement(MigrationRun run)
    {
        var vcpus = run.Vms.ToDictionary(v => v.Id, v => v.VCpus);
        var vms = run.Profiles.Select(p => new PlacementVm(p.VmId.Value, p.MemoryBytes, vcpus.GetValueOrDefault(p.VmId, 1))).ToArray();
        var contents = new SketchContentModel(run.Profiles.Select(p => BottomKSketch.FromValues(Math.Max(2, p.SketchSize), p.Sketch)).ToArray());
        var hosts = run.TargetHostIds.Where(t => !run.LostTargets.Contains(t)).Select(t => _targets.TryGetValue(t, out var h)
            ? new PlacementHost(t.Value, h.FreeBytes, Rack: string.IsNullOrEmpty(h.Rack) ? null : h.Rack)
            : new PlacementHost(t.Value, 0)).ToArray();
        var topology = new NetworkTopology(RackLinkWeight: _settings.RackLinkWeight);
        var strategy = run.Request.Options.Placement;
        var budget = _settings.PlacementBudget;
        Task.Run(() => Placer.Place(vms, hosts, contents, strategy, topology, budget: budget)).PipeTo(Self,
            success: placement => new PlacementComputed(run.Id, placement),
            failure: e => new PlacementFailed(run.Id, $"placement: {e.GetBaseException().Message}"));
    }

    private void Placed(MigrationRun run, PlacementResult placement)
    {
        if (run.Phase != MigrationPhase.Placing || run.Error is not null) return;
        // A target may have left while the placer ran.
        var targetOfVm = placement.HostOf.ToDictionary(p => new VmId(p.Key), p => new HostId(p.Value));
        var gone = targetOfVm.Values.Distinct().Where(h => !_targets.ContainsKey(h) || run.LostTargets.Contains(h)).Order().ToArray();
        if (gone.Length > 0)
        {
            // Nothing was sent yet: place again on the targets left (a placement that no longer fits fails the run, and every VM stays).
            _log.Warning("Migration {0}: target host(s) {1} lost while placing; placing again", run.Id, string.Join(", ", gone));
            ComputePlacement(run);
            return;
        }
        Record(new PlacementChosen(run.Id, placement.Strategy, targetOfVm), e =>
        {
            run.Strategy = e.Strategy;
            foreach (var (vm, host) in e.TargetOfVm) run.TargetOfVm[vm] = host;
            int index = 0;
            foreach (var hostId in e.TargetOfVm.Values.Distinct().Order())
            {
                var t = _targets[hostId];
                run.Targets.Add(new TargetEndpoint(index++, hostId, t.DataPlaneHost, t.DataPlanePort));
                run.TargetRefs[hostId] = t.Host;
            }
            run.Phase = MigrationPhase.Preparing;
            run.PlacedAtSeconds ??= run.SecondsNow;
            _log.Debug("Migration {0}: placed at {1:F3} s (the placer searched {2:F1} ms)", run.Id, run.SecondsNow, placement.PlanSeconds * 1000);
            run.Requester.Tell(new MigrationPlaced(run.Id, e.Strategy, e.TargetOfVm, placement.Traffic, run.DistinctPages, run.Request.Options.GroupTransport));
            var assignments = Assignments(run);
            foreach (var t in run.Targets)
                run.TargetRefs[t.HostId].Tell(new PrepareReceive(run.Id, DataPlaneKeys.ForReceiver(_keys[run.Id], run.Id.Value, t.Index, run.Targets.Count, run.Request.Options.GroupTransport == DataPlane.GroupTransport.Multicast), t.Index, run.Targets,
                    assignments.Where(a => a.TargetIndex == t.Index).ToArray(), run.SourceMigration!, run.Request.Options.LinkBitsPerSecond));
        });
    }

    private static IReadOnlyList<VmAssignment> Assignments(MigrationRun run)
    {
        var index = run.Targets.ToDictionary(t => t.HostId, t => t.Index);
        return run.Vms.Select((vm, i) => new VmAssignment(i, vm, index[run.TargetOfVm[vm.Id]])).ToArray();
    }

    private static void Transferred(MigrationRun run, IReadOnlyList<VmDigest> digests, IReadOnlyDictionary<VmId, long> pausedAt)
    {
        foreach (var d in digests.Where(d => run.Moves(d.VmId)))
        {
            run.SourceDigestOf[d.VmId] = d.Digest;
            if (d.DirtyTracking is { } tracking) run.DirtyTrackingOf[d.VmId] = tracking;
        }
        foreach (var (vm, at) in pausedAt.Where(p => run.Moves(p.Key))) run.PausedAt[vm] = at;
    }

    private MigrationStatus Status(MigrationId id)
    {
        if (_journal.Find(id) is not { } record) return new MigrationStatus(id, MigrationPhase.Unknown, [], [], null);
        var phase = _runs.TryGetValue(id, out var run) ? run.Phase : _reconciling.ContainsKey(id) ? MigrationPhase.Reconciling : record.Phase;
        return new MigrationStatus(id, phase, record.HandedOver.ToArray(), record.Failed.ToArray(), record.Report);
    }

    /// <summary>Persists an event, applies it to the journaled state, then runs what follows from it.</summary>
    private void Record<TEvent>(TEvent e, Action<TEvent> then) where TEvent : IPersistedEvent => Persist(e, x =>
    {
        _journal.Apply(x);
        _metrics.Recorded(x, _journal.UnendedCount);
        then(x);
    });

    private void RecordAll<TEvent>(IEnumerable<TEvent> events, Action<TEvent> then) where TEvent : IPersistedEvent => PersistAll(events, x =>
    {
        _journal.Apply(x);
        _metrics.Recorded(x, _journal.UnendedCount);
        then(x);
    });

    private void WithRun(MigrationId id, Action<MigrationRun> action)
    {
        if (_runs.TryGetValue(id, out var run)) action(run);
        else _log.Debug("Message for migration {0}, which is not in flight", id);
    }

    /// <summary>A control message that does not fit the run's state or sender is refused: logged, never acted on.</summary>
    private void Refuse(MigrationRun run, object message, string why) =>
        _log.Warning("Migration {0}: refused {1} from {2}: {3}", run.Id, message.GetType().Name, Sender, why);

    private sealed record RunTimeout(MigrationId MigrationId, string Phase);
    private sealed record PlacementComputed(MigrationId MigrationId, PlacementResult Placement);
    private sealed record PlacementFailed(MigrationId MigrationId, string Reason);
}
