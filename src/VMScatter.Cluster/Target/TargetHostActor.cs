using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Target;

/// <summary>
/// The receiver of a target host. Prepares memory for arriving VMs and registers a receiver with the host's
/// data-plane listener; forwards every applied round to the source migration; computes digests once the
/// stop-and-copy round is in; and resumes a VM only when the scheduler says its digest matched.
/// </summary>
public sealed partial class TargetHostActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly HostId _hostId;
    private readonly long _capacityBytes;
    private readonly DataPlaneListener _listener;
    private readonly DataPlaneOptions _dataPlane;
    private readonly ITargetBackend _backend;
    private readonly IActorRef _scheduler;
    private readonly TimeSpan _registrationInterval;
    private readonly Dictionary<MigrationId, Incoming> _incoming = new();
    private readonly Dictionary<VmId, ILandedVm> _running = new();
    /// <summary>Per settled migration whose receiver is still closing: the bytes of its leftover memory, not yet freed.</summary>
    // By receiver, not migration: a migration's part here can close twice (VMs re-placed here after its first receiver closed).
    private readonly Dictionary<MigrationReceiver, long> _closing = new();
    private readonly PendingDisposals _disposals;
    private readonly GuestRelease _release;

    private readonly string _rack;

    /// <summary>A host whose landed guests end with it (actor tests).</summary>
    public TargetHostActor(HostId hostId, long capacityBytes, DataPlaneListener listener, DataPlaneOptions dataPlane, ITargetBackend backend, IActorRef scheduler,
        TimeSpan registrationInterval, PendingDisposals disposals, string rack = "")
        : this(hostId, capacityBytes, listener, dataPlane, backend, scheduler, registrationInterval, disposals, rack, new GuestRelease(false, disposals)) { }

    public TargetHostActor(HostId hostId, long capacityBytes, DataPlaneListener listener, DataPlaneOptions dataPlane, ITargetBackend backend, IActorRef scheduler,
        TimeSpan registrationInterval, PendingDisposals disposals, string rack, GuestRelease release)
    {
        _release = release;
        // Guests that landed here before the node restarted (re-adopted by the backend) run here: they hold memory.
        foreach (var vm in backend.Running) _running[vm.Description.Id] = vm;
        _rack = rack;
        _disposals = disposals;
        _hostId = hostId;
        _capacityBytes = capacityBytes;
        _listener = listener;
        // The multicast channel is joined on the host's data-plane address (its listener's) unless one is configured.
        _dataPlane = dataPlane with { Multicast = dataPlane.Multicast with { Interface = dataPlane.Multicast.Interface ?? listener.LocalEndPoint.Address } };
        _backend = backend;
        _scheduler = scheduler;
        _registrationInterval = registrationInterval;

        Receive<Announce>(_ => _scheduler.Tell(new RegisterTargetHost(_hostId, Self, FreeBytes(), _listener.LocalEndPoint.Address.ToString(), _listener.LocalEndPoint.Port, _backend.Name, _rack, _backend.GuestsOutliveHost, _capacityBytes)));
        Receive<HostRegistered>(_ => { });
        Receive<HostRegistrationRefused>(m => _log.Error("Target {0} is not registered: {1}", _hostId, m.Reason));

        Receive<PrepareReceive>(m =>
        {
            Serialization.SerializerWarmup.EnsureWarm(Context.System);
            if (_incoming.ContainsKey(m.MigrationId)) { Sender.Tell(new ReceiverReady(m.MigrationId, _hostId)); return; }
            // The wire does not run constructors: an id or size is checked here before it names a file or sizes memory.
            if (PrepareReceiveCheck.Problem(m, _capacityBytes) is { } invalid)
            {
                _log.Warning("Refused PrepareReceive for migration {0} from {1}: {2}", m.MigrationId, Sender, invalid);
                Sender.Tell(new ReceiverRefused(m.MigrationId, _hostId, invalid));
                return;
            }
            if (Prepare(m) is { } refusal) Sender.Tell(new ReceiverRefused(m.MigrationId, _hostId, refusal));
            else Sender.Tell(new ReceiverReady(m.MigrationId, _hostId));
        });

        // VMs re-placed here from a lost target: added to the migration's receiver, which keeps what it holds (or a new
        // receiver, if this host's part was over and its receiver closed).
        Receive<ExtendReceive>(m =>
        {
            var request = new PrepareReceive(m.MigrationId, m.Keys, m.SelfIndex, m.Targets, m.Vms, m.SourceMigration, m.LinkBitsPerSecond);
            var ids = m.Vms.Select(v => v.Vm.Id).ToArray();
            string? refusal;
            if (_incoming.TryGetValue(m.MigrationId, out var inc)) refusal = Extend(inc, m, request);
            // Nothing received here nor to receive: the endpoints alone need no receiver.
            else if (m.Vms.Count == 0) refusal = null;
            else refusal = PrepareReceiveCheck.Problem(request, _capacityBytes) ?? Prepare(request);
            if (refusal is not null) _log.Warning("Refused ExtendReceive for migration {0} from {1}: {2}", m.MigrationId, Sender, refusal);
            Sender.Tell(new ReceiverExtended(m.MigrationId, _hostId, ids, refusal));
        });

        Receive<OutcomeArrived>(m =>
        {
            // A closed receiver's last word (its outcomes end when it closes) is not the word of a new receiver that VMs
            // re-placed here got since: passed on, it would tell the source this healthy host had failed.
            if (!_incoming.TryGetValue(m.MigrationId, out var inc) || !ReferenceEquals(inc.Receiver, m.Receiver)) return;
            inc.SourceMigration.Tell(new RoundApplied(m.MigrationId, inc.Receiver.SelfIndex, m.Outcome.Round, m.Outcome.Final, m.Outcome.Error));
            if (m.Outcome.Error is not null)
            {
                // The source may have lost this host already (its connection closed first) and not say why: here it is said.
                _log.Warning("Migration {0}: this host's data plane failed in round {1}: {2}", m.MigrationId, m.Outcome.Round, m.Outcome.Error);
                return;
            }
            if (m.Outcome.Final) { _log.Debug("Migration {0}: final round {1} applied here", m.MigrationId, m.Outcome.Round); ComputeDigests(m.MigrationId, inc); }
            // A final round is not necessarily the last: VMs re-placed here later arrive in rounds of their own.
            PumpOutcome(m.MigrationId, inc.Receiver);
        });

        Receive<ResumeOnTarget>(m =>
        {
            var replyTo = Sender;
            // Running here already (its receiver closed since, or another one took VMs re-placed here): the grant is
            // its, never handed back (the source would run it too).
            if (_running.ContainsKey(m.VmId))
            {
                _log.Warning("Migration {0}: ignored a start of VM {1}, which runs here already", m.MigrationId, m.VmId);
                return;
            }
            if (!_incoming.TryGetValue(m.MigrationId, out var inc) || inc.Vms.FirstOrDefault(v => v.Description.Id == m.VmId) is not { } vm
                || inc.Discarded.Contains(m.VmId))
            {
                // Not started here: the grant goes back, so the VM can run on the source again.
                m.GrantedBy.Tell(new ReturnResumeGrant(m.MigrationId, m.VmId, _hostId));
                replyTo.Tell(new VmResumeFailed(m.MigrationId, m.VmId, _hostId, "not received on this host"));
                return;
            }
            // Starting or started already: a second start could run it twice (the grant stays with the first).
            if (inc.Resuming.Contains(m.VmId) || inc.Resumed.Contains(m.VmId))
            {
                _log.Warning("Migration {0}: ignored a second start of VM {1}", m.MigrationId, m.VmId);
                return;
            }
            _log.Debug("Migration {0}: resuming VM {1} here", m.MigrationId, m.VmId);
            inc.Resuming.Add(vm.Description.Id);
            ResumeAsync(m.MigrationId, inc.Receiver, vm, m.GrantedBy).PipeTo(Self, replyTo);
        });

        Receive<Landed>(m =>
        {
            _running[m.Vm.Description.Id] = m.Vm;
            if (_incoming.TryGetValue(m.MigrationId, out var inc))
            {
                inc.Resuming.Remove(m.Vm.Description.Id);
                inc.Resumed.Add(m.Vm.Description.Id);
            }
            _log.Debug("Migration {0}: VM {1} resumed here: {2}", m.MigrationId, m.Vm.Description.Id, m.Steps);
            var resumed = new VmResumedOnTarget(m.MigrationId, m.Vm.Description.Id, _hostId, m.ResumedAtUnixMs);
            Sender.Tell(resumed);
            // The granting source learns it too, a hop before the scheduler's journaled word: it holds its next wave's
            // whole-memory work back while this wave's guests are still paused (a hint only; the scheduler's word stops the copy).
            m.GrantedBy.Tell(resumed);
            ReleaseIfSettled(m.MigrationId);
            Self.Tell(Announce.Instance);
        });

        Receive<LandingFailed>(m =>
        {
            if (_incoming.TryGetValue(m.MigrationId, out var inc))
            {
                inc.Resuming.Remove(m.VmId);
                if (inc.SourceGone) inc.Discarded.Add(m.VmId);
            }
            Sender.Tell(new VmResumeFailed(m.MigrationId, m.VmId, _hostId, m.Reason));
            ReleaseIfSettled(m.MigrationId);
        });

        // The source migration is gone (it settled and stopped, or its node was lost): nothing not yet started here can
        // be granted any more, so what was received for those VMs goes; VMs started, or starting, stay.
        Receive<Terminated>(t =>
        {
            foreach (var (id, inc) in _incoming.Where(i => i.Value.SourceMigration.Equals(t.ActorRef)).ToArray())
            {
                inc.SourceGone = true;
                foreach (var vm in inc.Vms.Select(v => v.Description.Id).Where(v => !inc.Resumed.Contains(v) && !inc.Resuming.Contains(v))) inc.Discarded.Add(vm);
                ReleaseIfSettled(id);
            }
        });

        Receive<DiscardReceived>(m =>
        {
            if (!_incoming.TryGetValue(m.MigrationId, out var inc)) return;
            // A VM starting or started here is not the scheduler's to discard any more: its memory is the VM's.
            foreach (var id in m.VmIds.Where(id => !inc.Resuming.Contains(id) && !inc.Resumed.Contains(id))) inc.Discarded.Add(id);
            ReleaseIfSettled(m.MigrationId);
        });

        Receive<QueryLanded>(AnswerLanded);
        Receive<GetHostInventory>(_ => AnswerInventory());

        Receive<ReceiverClosed>(m =>
        {
            _closing.Remove(m.Receiver);
            Self.Tell(Announce.Instance);
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        Self.Tell(Announce.Instance);
        Timers.StartPeriodicTimer("announce", Announce.Instance, _registrationInterval);
    }

    /// <summary>
    /// Arriving copies (never run) are discarded; landed guests are let go running (QEMU: re-adopted when the node comes
    /// back) or end with the process (synthetic). Nothing here waits: the node awaits it after its actor system terminated.
    /// </summary>
    protected override void PostStop()
    {
        foreach (var inc in _incoming.Values) Close(inc);
        var log = _log;
        foreach (var vm in _running.Values)
        {
            var id = vm.Description.Id;
            _release.NodeStopping(vm, e => log.Error(e, "VM {0} could not be let go", id));
        }
    }

    /// <summary>
    /// A receiver for a migration's VMs here, registered with the listener; or why not. A request this host cannot serve
    /// (memory it cannot back, a bad endpoint or key) is refused with its reason: it must not throw here, where the
    /// restart that follows would dispose the VMs already landed.
    /// </summary>
    private string? Prepare(PrepareReceive m)
    {
        long needed = m.Vms.Sum(v => v.Vm.MemoryBytes);
        if (needed > FreeBytes()) return $"needs {needed} bytes, {FreeBytes()} free";
        var vms = new List<ReceiverVm>();
        MigrationReceiver receiver;
        try
        {
            foreach (var v in m.Vms) vms.Add(new ReceiverVm(v.VmIndex, v.Vm, _backend.AllocateMemory(v.Vm)));
            var peers = m.Targets.OrderBy(t => t.Index).Select(t => t.ToIPEndPoint()).ToArray();
            receiver = new MigrationReceiver(m.MigrationId.Value, m.Keys, m.SelfIndex, peers, vms, _dataPlane with { LinkBitsPerSecond = m.LinkBitsPerSecond });
        }
        catch (Exception e) when (e is ArgumentException or FormatException or IOException or InvalidOperationException or OutOfMemoryException)
        {
            ReleaseMemory(vms);
            return $"cannot prepare: {e.Message}";
        }
        _listener.Register(receiver);
        _incoming[m.MigrationId] = new Incoming(receiver, vms, m.SourceMigration, Sender);
        // Without its source migration no VM of it can be granted any more: see Terminated below.
        Context.Watch(m.SourceMigration);
        PumpOutcome(m.MigrationId, receiver);
        return null;
    }

    /// <summary>The migration's endpoints now, and more VMs, for a receiver already here; or why not.</summary>
    private string? Extend(Incoming inc, ExtendReceive m, PrepareReceive request)
    {
        if (inc.SourceGone) return "its source migration is gone";
        if (!inc.SourceMigration.Equals(m.SourceMigration) || inc.Receiver.SelfIndex != m.SelfIndex) return "it names another source migration or target index than this host's receiver";
        if (m.Keys is null || m.Keys.LinkCount != m.Targets.Count) return "no data-plane keys for the migration's hosts";
        // Keys first: a batch is relayed to a new host only once the key of the link to it is here.
        try { inc.Receiver.UpdateKeys(m.Keys); }
        catch (ArgumentException e) { return $"bad data-plane keys: {e.Message}"; }
        try { inc.Receiver.UpdatePeers(m.Targets.OrderBy(t => t.Index).Select(t => t.ToIPEndPoint()).ToArray()); }
        catch (Exception e) when (e is ArgumentException or FormatException) { return $"bad endpoints: {e.Message}"; }
        if (m.Vms.Count == 0) return null;
        if (PrepareReceiveCheck.Problem(request, _capacityBytes) is { } invalid) return invalid;
        if (m.Vms.FirstOrDefault(v => inc.Vms.Any(x => x.VmIndex == v.VmIndex || x.Description.Id == v.Vm.Id)) is { } twice) return $"VM {twice.Vm.Id} is received here already";
        long needed = m.Vms.Sum(v => v.Vm.MemoryBytes);
        if (needed > FreeBytes()) return $"needs {needed} bytes, {FreeBytes()} free";
        var vms = new List<ReceiverVm>();
        try
        {
            foreach (var v in m.Vms) vms.Add(new ReceiverVm(v.VmIndex, v.Vm, _backend.AllocateMemory(v.Vm)));
            inc.Receiver.AddVms(vms);
        }
        catch (Exception e) when (e is ArgumentException or IOException or InvalidOperationException or OutOfMemoryException)
        {
            ReleaseMemory(vms);
            return $"cannot prepare: {e.Message}";
        }
        inc.Vms.AddRange(vms);
        return null;
    }

    private void ReleaseMemory(IEnumerable<ReceiverVm> vms)
    {
        var log = _log;
        foreach (var v in vms) _disposals.Track(v.Memory.DisposeAsync().AsTask(), err => log.Error(err, "Memory for VM {0} could not be released", v.Description.Id));
    }

    /// <summary>Capacity less running VMs, memory reserved for arrivals and leftover memory not yet freed.</summary>
    private long FreeBytes() =>
        _capacityBytes - _running.Values.Sum(v => v.Description.MemoryBytes) - _closing.Values.Sum()
        - _incoming.Values.Sum(i => LeftoverBytes(i));

    /// <summary>The memory of a migration's VMs not resumed here (a resumed VM's memory is its landed VM's).</summary>
    private static long LeftoverBytes(Incoming inc) => inc.Vms.Where(v => !inc.Resumed.Contains(v.Description.Id)).Sum(v => v.Description.MemoryBytes);

    /// <summary>Digests of a migration's VMs as received here, for the scheduler; computed once its stop-and-copy round is in.</summary>
    private void ComputeDigests(MigrationId migrationId, Incoming inc)
    {
        long rejected = _listener.FramesRejected;
        // Built from the page hashes recorded as pages were written (a SHA-256 over 16 bytes per page: a millisecond or
        // two), so it runs on the pool rather than queueing behind whole-memory work on the bulk threads (in a local
        // cluster those also digest the source's paused guests), which held it up to ~0.2 s inside the downtime.
        var received = inc.Vms.ToArray(); // the list grows on this thread when VMs are re-placed here
        // Those not starting, started or discarded yet may prepare their start (read here: the sets change on this thread).
        var waiting = received.Where(v => !inc.Resuming.Contains(v.Description.Id) && !inc.Resumed.Contains(v.Description.Id) && !inc.Discarded.Contains(v.Description.Id)).ToArray();
        var backend = _backend;
        Task.Run(() =>
        {
            // Only VMs whose final round is in (whose device state is whole): one re-placed here later has its own.
            var digests = received.Select(v => (v, State: inc.Receiver.DeviceStateOf(v.VmIndex))).Where(x => x.State is not null)
                .Select(x => new VmDigest(x.v.Description.Id, inc.Receiver.DigestOf(x.v.VmIndex, x.State!))).ToArray();
            var channels = inc.Receiver.ChannelStats;
            return new TargetDigests(migrationId, _hostId, digests, inc.Receiver.BytesReceived, inc.Receiver.BytesRelayed, inc.Receiver.ContentRecordsReceived, rejected,
                channels?.Rejected ?? 0, channels?.Duplicates ?? 0);
        }).PipeTo(inc.Scheduler);
        // After the digests (the grant waits for them): what the start can do before its grant, e.g. QEMU's device-state
        // check and load (the guest stays paused), while the digests are compared.
        Task.Run(() =>
        {
            foreach (var v in waiting)
                if (inc.Receiver.DeviceStateOf(v.VmIndex) is { } state) backend.Arrived(v.Description, v.Memory, state);
        });
    }

    private void PumpOutcome(MigrationId migrationId, MigrationReceiver receiver) =>
        receiver.Outcomes.ReadAsync().AsTask().PipeTo(Self,
            success: o => new OutcomeArrived(migrationId, receiver, o),
            failure: e => new OutcomeArrived(migrationId, receiver, new RoundOutcome(-1, false, $"receiver closed: {e.GetBaseException().Message}")));

    /// <summary>
    /// Starts a VM the source granted to this host (the source relays the scheduler's word only once it granted the VM
    /// here and will not run it itself); a start that fails hands the grant back, so the VM can run on the source again.
    /// </summary>
    private async Task<object> ResumeAsync(MigrationId migrationId, MigrationReceiver receiver, ReceiverVm vm, IActorRef source)
    {
        var id = vm.Description.Id;
        try
        {
            // Off the actor thread: releasing is a pass over what the receiver holds, and the wave's other VMs' starts
            // (which come right behind this one) waited for it. Done before the backend resumes the guest.
            var steps = new StepTimes();
            var deviceState = await Task.Run(() =>
            {
                steps.Mark("queued");
                var state = receiver.DeviceStateOf(vm.VmIndex) ?? [];
                steps.Mark("device state");
                // From now on its memory is the guest's: no content is kept in it for VMs still arriving, nor written to it.
                receiver.ReleaseVm(vm.VmIndex);
                steps.Mark("release received contents");
                return state;
            }).ConfigureAwait(false);
            var landed = await _backend.ResumeAsync(vm.Description, vm.Memory, deviceState, CancellationToken.None).ConfigureAwait(false);
            long resumedAt = landed.RunningSinceUnixMs ?? DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            steps.Mark("backend resume", (landed as IStepTimed)?.LastSteps);
            return new Landed(migrationId, landed, resumedAt, source, steps);
        }
        catch (Exception e)
        {
            source.Tell(new ReturnResumeGrant(migrationId, id, _hostId));
            return new LandingFailed(migrationId, id, $"{_backend.Name} backend could not resume {id}: {e.GetBaseException().Message}");
        }
    }

    /// <summary>
    /// Once every VM of a migration is resumed or discarded, its receiver and leftover memory go. The memory stays
    /// counted as used until <see cref="ReceiverClosed"/> says it was freed; the host announces itself then.
    /// </summary>
    private void ReleaseIfSettled(MigrationId migrationId)
    {
        if (!_incoming.TryGetValue(migrationId, out var inc)) return;
        if (inc.Vms.Any(v => !inc.Resumed.Contains(v.Description.Id) && !inc.Discarded.Contains(v.Description.Id))) return;
        _incoming.Remove(migrationId);
        var receiver = inc.Receiver;
        _closing[receiver] = LeftoverBytes(inc);
        Close(inc).PipeTo(Self, success: () => new ReceiverClosed(receiver), failure: _ => new ReceiverClosed(receiver));
    }

    /// <summary>Unregisters the receiver and starts closing it (<see cref="CloseAsync"/>); the node awaits it if it stops meanwhile.</summary>
    private Task Close(Incoming inc)
    {
        _listener.Unregister(inc.Receiver.MigrationId);
        var closing = CloseAsync(inc.Receiver, inc.Vms.Where(v => !inc.Resumed.Contains(v.Description.Id)).Select(v => v.Memory).ToArray());
        var (log, id) = (_log, inc.Receiver.MigrationId);
        _disposals.Track(closing, e => log.Warning("Migration {0}: closing its receiver: {1}", id, e.Message));
        return closing;
    }

    /// <summary>
    /// Closes the receiver, and only then frees the memory of the VMs not resumed here: once its dispose returned no
    /// frame writes into that memory, so a late frame cannot land in a range handed back to the pool (and to the next
    /// arrival). The receiver shuts its gate before anything in its dispose can fail, so the memory is freed either way.
    /// </summary>
    private static async Task CloseAsync(MigrationReceiver receiver, IReadOnlyList<IWritableGuestMemory> leftovers)
    {
        var errors = new List<string>();
        try { await receiver.DisposeAsync().ConfigureAwait(false); }
        catch (Exception e) { errors.Add($"the receiver: {e.GetBaseException().Message}"); }
        // All at once: each may be a QEMU to quit.
        await Task.WhenAll(leftovers.Select(async memory =>
        {
            try { await memory.DisposeAsync().ConfigureAwait(false); }
            catch (Exception e) { lock (errors) errors.Add($"leftover memory: {e.GetBaseException().Message}"); }
        })).ConfigureAwait(false);
        if (errors.Count > 0) throw new InvalidOperationException(string.Join("; ", errors));
    }

    private sealed record Incoming(MigrationReceiver Receiver, List<ReceiverVm> Vms, IActorRef SourceMigration, IActorRef Scheduler)
    {
        public HashSet<VmId> Resumed { get; } = new();
        public HashSet<VmId> Discarded { get; } = new();
        /// <summary>Granted or asking for a grant: their memory is the starting VM's.</summary>
        public HashSet<VmId> Resuming { get; } = new();
        public bool SourceGone { get; set; }
    }

    private sealed record Announce { public static readonly Announce Instance = new(); }
    private sealed record OutcomeArrived(MigrationId MigrationId, MigrationReceiver Receiver, RoundOutcome Outcome);
    private sealed record Landed(MigrationId MigrationId, ILandedVm Vm, long ResumedAtUnixMs, IActorRef GrantedBy, StepTimes? Steps = null);
    private sealed record LandingFailed(MigrationId MigrationId, VmId VmId, string Reason);
    private sealed record ReceiverClosed(MigrationReceiver Receiver);
}
