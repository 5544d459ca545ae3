using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Source;

/// <summary>
/// The source node's host: owns the VMs running here, announces them to the scheduler singleton, and runs one
/// <see cref="SourceMigrationActor"/> per migration. A VM leaves the inventory only when its migration has
/// released it (verified and running on its target).
/// </summary>
public sealed class SourceHostActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly HostId _hostId;
    private readonly Dictionary<VmId, IMigratableVm> _vms;
    private readonly SourceSettings _settings;
    private readonly IActorRef _scheduler;
    private readonly PendingDisposals _disposals;
    private readonly GuestRelease _release;
    private readonly Dictionary<MigrationId, (IActorRef Actor, HashSet<VmId> VmIds)> _migrations = new();
    /// <summary>VMs a migration granted to their target: never resumed here by the host.</summary>
    private readonly HashSet<VmId> _granted = new();

    /// <summary>A host whose guests end with it (actor tests).</summary>
    public SourceHostActor(HostId hostId, IEnumerable<IMigratableVm> vms, SourceSettings settings, IActorRef scheduler, PendingDisposals disposals)
        : this(hostId, vms, settings, scheduler, disposals, new GuestRelease(false, disposals)) { }

    public SourceHostActor(HostId hostId, IEnumerable<IMigratableVm> vms, SourceSettings settings, IActorRef scheduler, PendingDisposals disposals, GuestRelease release)
    {
        _release = release;
        _hostId = hostId;
        _vms = vms.ToDictionary(v => v.Description.Id);
        _settings = settings;
        _scheduler = scheduler;
        _disposals = disposals;

        Receive<Announce>(_ => _scheduler.Tell(new RegisterSourceHost(_hostId, Self, _vms.Values.Select(v => v.Description).OrderBy(d => d.Id).ToArray())));
        Receive<HostRegistered>(_ => { });
        Receive<HostRegistrationRefused>(m => _log.Error("Source {0} is not registered: {1}", _hostId, m.Reason));

        Receive<AnalyzeVms>(m =>
        {
            Serialization.SerializerWarmup.EnsureWarm(Context.System);
            var busy = m.VmIds.Where(id => _migrations.Values.Any(x => x.VmIds.Contains(id))).ToArray();
            var missing = m.VmIds.Where(id => !_vms.ContainsKey(id)).ToArray();
            if (missing.Length > 0 || busy.Length > 0)
            {
                string reason = missing.Length > 0 ? $"source {_hostId} does not run {string.Join(", ", missing)}" : $"{string.Join(", ", busy)} already migrating";
                Sender.Tell(new TransferFailed(m.MigrationId, reason));
                return;
            }
            var vms = m.VmIds.Select(id => _vms[id]).ToArray();
            var scheduler = Sender;
            var actor = Context.ActorOf(Props.Create(() => new SourceMigrationActor(m.MigrationId, vms, m.Options, _settings, scheduler)), $"migration-{m.MigrationId.Value:N}");
            Context.Watch(actor);
            _migrations[m.MigrationId] = (actor, m.VmIds.ToHashSet());
        });

        Receive<ReleaseSourceVm>(m => Forward(m.MigrationId, m));
        Receive<ResumeSourceVm>(m => Forward(m.MigrationId, m));
        Receive<AbortMigration>(m => Forward(m.MigrationId, m));
        // A scheduler that took over asks about a migration: its actor answers, or (settled and gone) the host does.
        Receive<ReconcileMigration>(m =>
        {
            if (_migrations.ContainsKey(m.MigrationId)) { Forward(m.MigrationId, m); return; }
            Sender.Tell(new SourceMigrationState(m.MigrationId, MigrationActorFound: false, m.VmIds.Select(id => new SourceVmState(id,
                !_vms.TryGetValue(id, out var vm) ? SourceVmCondition.Absent : vm.State switch
                {
                    VmRunState.Running => SourceVmCondition.OnSource,
                    VmRunState.Stopped => SourceVmCondition.Released,
                    _ => SourceVmCondition.PausedUnsettled,
                }, null, null)).ToArray()));
        });

        Receive<GetHostInventory>(_ => Sender.Tell(new HostInventory(_hostId,
            _vms.Values.Where(v => v.State == VmRunState.Running).Select(v => v.Description.Id).Order().ToArray(),
            _vms.Values.Where(v => v.State == VmRunState.Paused).Select(v => v.Description.Id).Order().ToArray())));

        Receive<SourceVmReleased>(m =>
        {
            if (_vms.Remove(m.VmId, out var vm)) DisposeVm(vm);
            Self.Tell(Announce.Instance);
        });

        Receive<SourceVmGranted>(m =>
        {
            if (m.Granted) _granted.Add(m.VmId);
            else _granted.Remove(m.VmId);
        });
        Receive<SourceMigrationSettled>(m =>
        {
            if (_migrations.Remove(m.MigrationId, out var entry)) _granted.ExceptWith(entry.VmIds);
        });
        // A migration actor that ends without settling (it crashed and was stopped): its VMs still paused here run
        // again, except those granted to a target, which may be running them (they stay paused; the report says so).
        Receive<Terminated>(t =>
        {
            foreach (var (id, entry) in _migrations.Where(x => x.Value.Actor.Equals(t.ActorRef)).ToArray())
            {
                _migrations.Remove(id);
                foreach (var vmId in entry.VmIds)
                {
                    if (_granted.Remove(vmId)) { _log.Warning("VM {0} stays paused: it was granted to its target, which may be running it", vmId); continue; }
                    if (!_vms.TryGetValue(vmId, out var vm) || !vm.NeedsResume()) continue;
                    _log.Warning("VM {0} resumes: its migration {1} ended without settling it", vmId, id);
                    var log = _log;
                    _ = vm.ResumeAsync().ContinueWith(r => log.Error(r.Exception, "VM {0} did not resume", vmId), TaskContinuationOptions.OnlyOnFaulted);
                }
            }
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        Self.Tell(Announce.Instance);
        Timers.StartPeriodicTimer("announce", Announce.Instance, _settings.RegistrationInterval);
    }

    /// <summary>A migration actor that dies unexpectedly is stopped; its Terminated resumes what it must (see above).</summary>
    protected override SupervisorStrategy SupervisorStrategy() => new OneForOneStrategy(0, TimeSpan.Zero, e =>
    {
        _log.Error(e, "A source migration actor crashed; resuming its VMs that no target was granted");
        return Directive.Stop;
    });

    /// <summary>The node stops, its guests do not: a QEMU guest is let go running (re-adopted when the node comes back), a synthetic one ends with the process.</summary>
    protected override void PostStop()
    {
        var (log, host) = (_log, _hostId);
        foreach (var vm in _vms.Values)
        {
            var id = vm.Description.Id;
            _release.NodeStopping(vm, e => log.Error(e, "VM {0} could not be let go on source {1}", id, host));
        }
    }

    /// <summary>Ends the guest here without blocking this thread (quitting a QEMU takes up to seconds); the node awaits it when it stops.</summary>
    private void DisposeVm(IMigratableVm vm)
    {
        var (log, id, host) = (_log, vm.Description.Id, _hostId);
        _disposals.Track(vm.DisposeAsync().AsTask(), e => log.Error(e, "VM {0} could not be disposed on source {1}", id, host));
    }

    private void Forward(MigrationId migrationId, object message)
    {
        if (_migrations.TryGetValue(migrationId, out var m)) m.Actor.Forward(message);
    }

    private sealed record Announce { public static readonly Announce Instance = new(); }
}
