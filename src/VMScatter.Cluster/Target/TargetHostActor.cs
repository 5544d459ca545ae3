using System.Net;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Target;
using VMScatter.Domain;

namespace VMScatter.Cluster.Target;

/// <summary>
/// The receiver of a target host. Prepares memory for arriving VMs and registers a receiver with the host's
/// data-plane listener; forwards every applied round to the source migration; computes digests when asked; and
/// resumes a VM only when the scheduler says its digest matched.
/// </summary>
public sealed class TargetHostActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly string _hostId;
    private readonly long _capacityBytes;
    private readonly DataPlaneListener _listener;
    private readonly DataPlaneOptions _dataPlane;
    private readonly ITargetBackend _backend;
    private readonly IActorRef _scheduler;
    private readonly TimeSpan _registrationInterval;
    private readonly Dictionary<Guid, Incoming> _incoming = new();
    private readonly Dictionary<string, ILandedVm> _running = new();

    private readonly string _rack;

    public TargetHostActor(string hostId, long capacityBytes, DataPlaneListener listener, DataPlaneOptions dataPlane, ITargetBackend backend, IActorRef scheduler, TimeSpan registrationInterval, string rack = "")
    {
        _rack = rack;
        _hostId = hostId;
        _capacityBytes = capacityBytes;
        _listener = listener;
        _dataPlane = dataPlane;
        _backend = backend;
        _scheduler = scheduler;
        _registrationInterval = registrationInterval;

        Receive<Announce>(_ => _scheduler.Tell(new RegisterTargetHost(_hostId, Self, FreeBytes(), _listener.LocalEndPoint.Address.ToString(), _listener.LocalEndPoint.Port, _backend.Name, _rack)));
        Receive<HostRegistered>(_ => { });

        Receive<PrepareReceive>(m =>
        {
            Serialization.SerializerWarmup.EnsureWarm(Context.System);
            long needed = m.Vms.Sum(v => v.Vm.MemoryBytes);
            if (_incoming.ContainsKey(m.MigrationId)) { Sender.Tell(new ReceiverReady(m.MigrationId, _hostId)); return; }
            if (needed > FreeBytes())
            {
                Sender.Tell(new ReceiverRefused(m.MigrationId, _hostId, $"needs {needed} bytes, {FreeBytes()} free"));
                return;
            }
            var vms = m.Vms.Select(v => new ReceiverVm(v.VmIndex, v.Vm, _backend.AllocateMemory(v.Vm))).ToArray();
            var peers = m.Targets.OrderBy(t => t.Index).Select(t => new IPEndPoint(IPAddress.Parse(t.Host), t.Port)).ToArray();
            var receiver = new MigrationReceiver(m.MigrationId, m.DataPlaneKey, m.SelfIndex, peers, vms, _dataPlane with { LinkBitsPerSecond = m.LinkBitsPerSecond });
            _listener.Register(receiver);
            _incoming[m.MigrationId] = new Incoming(receiver, vms, m.SourceMigration, Sender);
            PumpOutcome(m.MigrationId, receiver);
            Sender.Tell(new ReceiverReady(m.MigrationId, _hostId));
        });

        Receive<OutcomeArrived>(m =>
        {
            if (!_incoming.TryGetValue(m.MigrationId, out var inc)) return;
            inc.SourceMigration.Tell(new RoundApplied(m.MigrationId, inc.Receiver.SelfIndex, m.Outcome.Round, m.Outcome.Final, m.Outcome.Error));
            if (m.Outcome.Error is not null) return;
            if (m.Outcome.Final) ComputeDigests(m.MigrationId, inc.Scheduler);
            else PumpOutcome(m.MigrationId, inc.Receiver);
        });

        // Digests are computed as soon as the stop-and-copy round is in (alongside the source's), and again on request.
        Receive<ComputeTargetDigests>(m => ComputeDigests(m.MigrationId, Sender));

        Receive<ResumeOnTarget>(m =>
        {
            var replyTo = Sender;
            if (!_incoming.TryGetValue(m.MigrationId, out var inc) || inc.Vms.FirstOrDefault(v => v.Description.Id == m.VmId) is not { } vm)
            {
                replyTo.Tell(new VmResumeFailed(m.MigrationId, m.VmId, _hostId, "not received on this host"));
                return;
            }
            var state = inc.Receiver.DeviceStateOf(vm.VmIndex) ?? [];
            ResumeAsync(m.MigrationId, vm, state).PipeTo(Self, replyTo);
        });

        Receive<Landed>(m =>
        {
            _running[m.Vm.Description.Id] = m.Vm;
            if (_incoming.TryGetValue(m.MigrationId, out var inc)) inc.Resumed.Add(m.Vm.Description.Id);
            Sender.Tell(new VmResumedOnTarget(m.MigrationId, m.Vm.Description.Id, _hostId, m.ResumedAtUnixMs));
            ReleaseIfSettled(m.MigrationId);
            Self.Tell(Announce.Instance);
        });

        Receive<LandingFailed>(m => Sender.Tell(new VmResumeFailed(m.MigrationId, m.VmId, _hostId, m.Reason)));

        Receive<DiscardReceived>(m =>
        {
            if (!_incoming.TryGetValue(m.MigrationId, out var inc)) return;
            foreach (var id in m.VmIds) inc.Discarded.Add(id);
            ReleaseIfSettled(m.MigrationId);
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        Self.Tell(Announce.Instance);
        Timers.StartPeriodicTimer("announce", Announce.Instance, _registrationInterval);
    }

    protected override void PostStop()
    {
        foreach (var inc in _incoming.Values) Release(inc);
        foreach (var vm in _running.Values) vm.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(10));
    }

    /// <summary>Capacity less running VMs and memory reserved for arrivals.</summary>
    private long FreeBytes() =>
        _capacityBytes - _running.Values.Sum(v => v.Description.MemoryBytes)
        - _incoming.Values.Sum(i => i.Vms.Where(v => !i.Resumed.Contains(v.Description.Id)).Sum(v => v.Description.MemoryBytes));

    private void ComputeDigests(Guid migrationId, IActorRef replyTo)
    {
        if (!_incoming.TryGetValue(migrationId, out var inc))
        {
            replyTo.Tell(new TargetDigests(migrationId, _hostId, [], 0, 0, 0, _listener.FramesRejected));
            return;
        }
        long rejected = _listener.FramesRejected;
        // Built from the page hashes recorded as pages were written (a SHA-256 over 16 bytes per page: a millisecond or
        // two), so it runs on the pool rather than queueing behind whole-memory work on the bulk threads (in a local
        // cluster those also digest the source's paused guests), which held it up to ~0.2 s inside the downtime.
        Task.Run(() =>
        {
            var digests = inc.Vms.Select(v =>
            {
                var state = inc.Receiver.DeviceStateOf(v.VmIndex);
                return new VmDigest(v.Description.Id, state is null ? "missing-device-state" : inc.Receiver.DigestOf(v.VmIndex, state));
            }).ToArray();
            return new TargetDigests(migrationId, _hostId, digests, inc.Receiver.BytesReceived, inc.Receiver.BytesRelayed, inc.Receiver.ContentRecordsReceived, rejected);
        }).PipeTo(replyTo);
    }

    private void PumpOutcome(Guid migrationId, MigrationReceiver receiver) =>
        receiver.Outcomes.ReadAsync().AsTask().PipeTo(Self,
            success: o => new OutcomeArrived(migrationId, o),
            failure: e => new OutcomeArrived(migrationId, new RoundOutcome(-1, false, $"receiver closed: {e.GetBaseException().Message}")));

    private async Task<object> ResumeAsync(Guid migrationId, ReceiverVm vm, byte[] deviceState)
    {
        try
        {
            var landed = await _backend.ResumeAsync(vm.Description, vm.Memory, deviceState, CancellationToken.None).ConfigureAwait(false);
            return new Landed(migrationId, landed, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        }
        catch (Exception e)
        {
            return new LandingFailed(migrationId, vm.Description.Id, $"{_backend.Name} backend could not resume {vm.Description.Id}: {e.GetBaseException().Message}");
        }
    }

    /// <summary>Once every VM of a migration is resumed or discarded, its receiver and leftover memory go.</summary>
    private void ReleaseIfSettled(Guid migrationId)
    {
        if (!_incoming.TryGetValue(migrationId, out var inc)) return;
        if (inc.Vms.Any(v => !inc.Resumed.Contains(v.Description.Id) && !inc.Discarded.Contains(v.Description.Id))) return;
        Release(inc);
        _incoming.Remove(migrationId);
        Self.Tell(Announce.Instance);
    }

    private void Release(Incoming inc)
    {
        _listener.Unregister(inc.Receiver.MigrationId);
        inc.Receiver.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
        foreach (var vm in inc.Vms.Where(v => !inc.Resumed.Contains(v.Description.Id))) vm.Memory.Dispose();
    }

    private sealed record Incoming(MigrationReceiver Receiver, IReadOnlyList<ReceiverVm> Vms, IActorRef SourceMigration, IActorRef Scheduler)
    {
        public HashSet<string> Resumed { get; } = new();
        public HashSet<string> Discarded { get; } = new();
    }

    private sealed record Announce { public static readonly Announce Instance = new(); }
    private sealed record OutcomeArrived(Guid MigrationId, RoundOutcome Outcome);
    private sealed record Landed(Guid MigrationId, ILandedVm Vm, long ResumedAtUnixMs);
    private sealed record LandingFailed(Guid MigrationId, string VmId, string Reason);
}
