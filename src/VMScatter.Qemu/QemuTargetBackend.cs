using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using VMScatter.Domain;
using VMScatter.Qemu.Migration;

namespace VMScatter.Qemu;

/// <summary>
/// How a target host runs arriving QEMU guests: their pages are written into a fresh RAM file on tmpfs while they
/// arrive. QEMU is started on that file as soon as the guest is announced (validated machine arguments, vCPUs held,
/// waiting for an incoming migration, already listening on its socket), so its start-up (100-300 ms measured here) is
/// not part of the downtime; it does not touch guest RAM while waiting (x-ignore-shared relies on exactly that). Once the
/// final round is in, the device state the source captured is checked and fed to it over a private Unix socket, and it
/// loads it staying paused (-S); only the grant's resume continues the guest. A guest that
/// fails any step is killed here and its source copy keeps running. With a state file, waiting and landed guests
/// are listed in it, so that a restarted node re-adopts the landed ones and discards the waiting ones.
/// </summary>
public sealed class QemuTargetBackend(string hostId, QemuSettings settings, GuestStateFile? stateFile = null) : ITargetBackend
{
    private readonly ConcurrentDictionary<VmId, QemuLandedVm> _landed = new();

    public string Name => "qemu";

    public bool GuestsOutliveHost => true;

    /// <summary>Guests running on this host now, by id (their serial logs show them running).</summary>
    public IReadOnlyDictionary<VmId, QemuLandedVm> Landed => _landed;

    public IEnumerable<ILandedVm> Running => _landed.Values;

    public IWritableGuestMemory AllocateMemory(VmDescription vm)
    {
        var ram = QemuRamFile.Create(Path.Combine(settings.RamDirectory, $"vmscatter-{hostId}-{vm.Id}-{Guid.NewGuid().ToString("N")[..8]}.ram"), vm.MemoryBytes);
        Task<QemuProcess> qemu;
        string memoryBackendId = "";
        try
        {
            var machine = QemuMachine.Parse(vm.MachineArguments, vm.MemoryBytes);
            memoryBackendId = machine.MemoryBackendId;
            // Its disks and NICs against this host's configuration, before anything starts: refused here, it never runs.
            _ = machine.Devices.HostArguments(settings.Devices);
            qemu = Task.Run(async () =>
            {
                var started = await QemuProcess.StartAsync(vm.Id.Value, machine.WithPausedStart(), vm.MemoryBytes, ram.Path, incoming: true, settings).ConfigureAwait(false);
                // Listed while it waits: a node that crashes now leaves a QEMU its next start must discard.
                if (stateFile is not null) await stateFile.PutAsync(Entry(vm, started, ram, GuestPlace.Arriving)).ConfigureAwait(false);
                try
                {
                    // Listening for the device state already: two QMP round trips fewer inside the guest's pause. QEMU only
                    // opens the socket here; it reads nothing, RAM included, until the stream comes.
                    await started.RunAsync(QemuArrival.Load, "migrate-set-capabilities", QemuVm.IgnoreShared()).ConfigureAwait(false);
                    await started.RunAsync(QemuArrival.Load, "migrate-incoming", new JsonObject { ["uri"] = $"unix:{IncomingSocket(started)}" }).ConfigureAwait(false);
                }
                catch
                {
                    await started.DisposeAsync().ConfigureAwait(false);
                    throw;
                }
                return started;
            });
        }
        catch (ArgumentException e) { qemu = Task.FromException<QemuProcess>(new QemuStepException(vm.Id.Value, "check machine arguments", e.Message)); }
        return new QemuArrival(ram, qemu, Forget(vm.Id), IncomingSocket) { MemoryBackendId = memoryBackendId };
    }

    /// <summary>
    /// Before the grant: the device state is checked (<see cref="DeviceStateCheck"/>) and loaded into the waiting QEMU,
    /// which was started with -S and stays paused: the grant's resume only sends <c>cont</c>. Its memory is final by
    /// now (the last round was applied), and a guest never granted here is discarded without having run.
    /// </summary>
    public void Arrived(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState)
    {
        if (memory is QemuArrival arrival) arrival.Prepare(deviceState, vm.MemoryBytes, settings.StateTransferTimeout);
    }

    public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
    {
        if (memory is not QemuArrival arrival) throw new ArgumentException($"guest {vm.Id}: memory was not allocated by the qemu backend");
        var ram = arrival.Ram;
        var steps = new StepTimes();
        var qemu = await arrival.TakeQemuAsync().ConfigureAwait(false);
        steps.Mark("qemu started");
        try
        {
            var prepared = await arrival.TakePreparedAsync().ConfigureAwait(false);
            steps.Mark(prepared is null ? "not prepared" : "prepared");
            bool same = prepared is not null && prepared.State.AsSpan().SequenceEqual(deviceState);
            if (prepared is { Streamed: true })
            {
                // QEMU read its one incoming stream before the grant: what it loaded must be this device state, loaded whole.
                if (!same) throw qemu.Failure(QemuArrival.Load, "QEMU loaded another device state before the grant");
                if (prepared.LoadFailure is { } failure) throw failure as QemuStepException ?? qemu.Failure(QemuArrival.Load, failure.Message);
                steps.Mark("loaded before the grant");
            }
            else
            {
                using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
                {
                    // What QEMU loads is what was checked: the copy checked before the grant, if it is this device state.
                    byte[] state;
                    if (same)
                    {
                        if (prepared!.Refusal is { } refusal) throw qemu.Failure(QemuArrival.Load, $"device state refused: {refusal.Message}");
                        state = prepared.State;
                    }
                    else
                    {
                        CheckDeviceState(vm, arrival.MemoryBackendId, deviceState, qemu, QemuArrival.Load);
                        state = deviceState;
                    }
                    try
                    {
                        await socket.ConnectAsync(new UnixDomainSocketEndPoint(IncomingSocket(qemu)), cancellationToken).ConfigureAwait(false);
                        await socket.SendAsync(state, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                        socket.Shutdown(SocketShutdown.Send);
                    }
                    catch (SocketException e) { throw qemu.Failure(QemuArrival.Load, $"cannot stream the device state to QEMU: {e.Message}"); }
                }
                steps.Mark("stream");
                await QemuVm.WaitForMigrationAsync(qemu, QemuArrival.Load, settings.StateTransferTimeout, cancellationToken).ConfigureAwait(false);
                steps.Mark("loaded");
            }
            // QEMU announces a start (RESUME) before it answers the cont that made it, on the same monitor: seen by
            // the reply, it says the guest runs, with no query-status round trip (254 ms measured on a loaded machine,
            // holding back the VM's landing and its migration's next wave). A cont that only armed a start (an
            // incoming migration still loading) sends none: then query-status says how the guest is.
            int resumed = 0;
            void OnEvent(JsonObject e) { if (e["event"]?.GetValue<string>() == "RESUME") Volatile.Write(ref resumed, 1); }
            qemu.Qmp.EventReceived += OnEvent;
            try { await qemu.RunAsync("resume on target (cont)", "cont", cancellationToken: cancellationToken).ConfigureAwait(false); }
            finally { qemu.Qmp.EventReceived -= OnEvent; }
            // The guest runs from here: its downtime ends now, not after the checks and the record below.
            long runningAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            steps.Mark("cont");
            if (Volatile.Read(ref resumed) == 0)
            {
                var status = await qemu.RunAsync("resume on target (query-status)", "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
                if (status?["running"]?.GetValue<bool>() != true)
                    throw qemu.Failure("resume on target", $"guest is '{status?["status"]}' after cont, not running");
                steps.Mark("query-status");
            }
            else steps.Mark("RESUME seen");
            ram.DeleteOnDispose = true;
            if (stateFile is not null) await stateFile.PutAsync(Entry(vm, qemu, ram, GuestPlace.Landed)).ConfigureAwait(false);
            steps.Mark("state file");
            var landed = Land(vm, qemu, ram, runningAt);
            landed.LastSteps = steps;
            return landed;
        }
        catch
        {
            await qemu.DisposeAsync().ConfigureAwait(false);
            await Forget(vm.Id)().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The device state came from a peer: checked whole before QEMU loads it (<see cref="DeviceStateCheck"/>).</summary>
    private static void CheckDeviceState(VmDescription vm, string memoryBackendId, byte[] deviceState, QemuProcess qemu, string step)
    {
        try { DeviceStateCheck.Check(deviceState, memoryBackendId, vm.MemoryBytes); }
        catch (MigrationStreamException e) { throw qemu.Failure(step, $"device state refused: {e.Message}"); }
    }

    /// <summary>Finds again a guest that landed here before this node stopped or crashed (its state file entry); it runs on.</summary>
    public async Task<QemuLandedVm> ReattachAsync(GuestStateEntry entry, CancellationToken cancellationToken = default)
    {
        const string step = "re-adopt";
        if (entry.Process is not { } pid || entry.RuntimeDirectory is null) throw new QemuStepException(entry.Id, step, "its entry names no QEMU process of this node");
        QemuMachine machine;
        try { machine = QemuMachine.Parse(entry.Machine, entry.MemoryBytes); }
        catch (ArgumentException e) { throw new QemuStepException(entry.Id, step, $"its machine arguments: {e.Message}"); }
        var qemu = await QemuProcess.ReattachAsync(entry.Id, pid, entry.RuntimeDirectory, entry.QmpSocket, entry.SerialLog ?? "", settings, cancellationToken).ConfigureAwait(false);
        try
        {
            var status = await qemu.RunAsync(step, "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (status?["running"]?.GetValue<bool>() != true) throw qemu.Failure(step, $"the guest is '{status?["status"]}', not running");
            QemuRamFile ram;
            try { ram = QemuRamFile.OpenForReading(entry.RamFile, entry.MemoryBytes); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw qemu.Failure(step, e.Message); }
            ram.DeleteOnDispose = true;
            return Land(new VmDescription(new VmId(entry.Id), entry.MemoryBytes, entry.VCpus, "qemu", machine.Serialize()), qemu, ram);
        }
        catch
        {
            await qemu.DetachAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Where a waiting QEMU listens for its guest's device state (in its private runtime directory).</summary>
    private static string IncomingSocket(QemuProcess qemu) => Path.Combine(qemu.RuntimeDirectory!, "incoming.sock");

    private QemuLandedVm Land(VmDescription vm, QemuProcess qemu, QemuRamFile ram, long? runningAt = null)
    {
        var landed = new QemuLandedVm(vm, qemu, ram, async (v, quit) =>
        {
            _landed.TryRemove(v.Description.Id, out _);
            if (quit) await Forget(v.Description.Id)().ConfigureAwait(false);
        }) { RunningSinceUnixMs = runningAt };
        _landed[vm.Id] = landed;
        return landed;
    }

    private Func<Task> Forget(VmId id) => () => stateFile?.RemoveAsync(GuestStateEntry.KeyOf(id.Value, GuestPlace.Landed)) ?? Task.CompletedTask;

    private static GuestStateEntry Entry(VmDescription vm, QemuProcess qemu, QemuRamFile ram, GuestPlace place) =>
        new(vm.Id.Value, place, qemu.QmpSocket, ram.Path, vm.MemoryBytes, vm.VCpus, vm.MachineArguments, qemu.ProcessId, qemu.Pid?.StartTicks ?? 0, qemu.RuntimeDirectory, qemu.SerialLogPath, Foreign: false);
}

/// <summary>
/// An arriving guest: its RAM file, written page by page, and the QEMU waiting to load its device state. Disposed
/// without a handover (the migration failed or the VM was discarded), both go, and so does its state file entry.
/// </summary>
public sealed class QemuArrival(QemuRamFile ram, Task<QemuProcess> qemu, Func<Task>? forget = null, Func<QemuProcess, string>? incomingSocket = null) : IWritableGuestMemory
{
    private Task<QemuProcess>? _qemu = qemu;
    private Task<PreparedLoad?>? _prepared;

    /// <summary>
    /// A device state checked before the grant (a copy: what is loaded cannot change after its check). Streamed: sent to
    /// the waiting QEMU already, its one incoming stream spent; loaded with the guest still paused unless LoadFailure says
    /// otherwise, which the start then fails with.
    /// </summary>
    internal sealed record PreparedLoad(byte[] State, MigrationStreamException? Refusal, bool Streamed = false, Exception? LoadFailure = null);

    /// <summary>The step a device state's check and load are named by in failures.</summary>
    internal const string Load = "load device state";

    /// <summary>
    /// Checks a copy of the device state and has the waiting QEMU load it (started with -S, it stays paused), once, off the
    /// caller's thread, within <paramref name="loadTimeout"/>; a failure is left for the start to meet.
    /// </summary>
    internal void Prepare(byte[] deviceState, long memoryBytes, TimeSpan loadTimeout)
    {
        if (Volatile.Read(ref _qemu) is not { } pending || incomingSocket is null) return;
        var state = deviceState.ToArray();
        var prepare = new Task<Task<PreparedLoad?>>(async () =>
        {
            try { DeviceStateCheck.Check(state, MemoryBackendId, memoryBytes); }
            catch (MigrationStreamException e) { return new PreparedLoad(state, e); }
            QemuProcess qemu;
            try { qemu = await pending.ConfigureAwait(false); }
            catch (Exception) { return new PreparedLoad(state, null); } // the start meets QEMU's failure itself, naming guest and step
            // Bounded as a whole: a QEMU that takes the connection and stops reading holds neither the start nor a discard.
            using var bound = new CancellationTokenSource(loadTimeout);
            bool sent = false;
            try
            {
                using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(incomingSocket(qemu)), bound.Token).ConfigureAwait(false);
                    // From here QEMU's one incoming stream counts as spent: whatever happens next is the start's failure.
                    sent = true;
                    await socket.SendAsync(state, SocketFlags.None, bound.Token).ConfigureAwait(false);
                    socket.Shutdown(SocketShutdown.Send);
                }
                await QemuVm.WaitForMigrationAsync(qemu, Load, loadTimeout, bound.Token).ConfigureAwait(false);
                var status = await qemu.RunAsync($"{Load} (query-status)", "query-status", cancellationToken: bound.Token).ConfigureAwait(false);
                string run = status?["status"]?.GetValue<string>() ?? "unknown";
                if (run == "paused") return new PreparedLoad(state, null, Streamed: true);
                // Never under -S. A guest running before any grant could run twice: its QEMU is killed now, and its start fails.
                await qemu.DisposeAsync().ConfigureAwait(false);
                return new PreparedLoad(state, null, Streamed: true, qemu.Failure(Load, $"the guest was '{run}' after loading its device state, not paused; its QEMU was killed"));
            }
            catch (Exception e)
            {
                // Not sent: the start connects again and meets the failure itself.
                return new PreparedLoad(state, null, Streamed: sent, !sent ? null
                    : e is OperationCanceledException ? qemu.Failure(Load, $"QEMU did not load the device state within {loadTimeout.TotalSeconds:0}s") : e);
            }
        });
        if (Interlocked.CompareExchange(ref _prepared, prepare.Unwrap(), null) is null) prepare.Start(TaskScheduler.Default);
    }

    /// <summary>What <see cref="Prepare"/> found, now the caller's; null if it never ran.</summary>
    internal async Task<PreparedLoad?> TakePreparedAsync() =>
        Interlocked.Exchange(ref _prepared, Task.FromResult<PreparedLoad?>(null)) is { } prepared ? await prepared.ConfigureAwait(false) : null;

    public QemuRamFile Ram { get; } = ram;

    /// <summary>The id its RAM block has in QEMU's streams, from the machine arguments checked when it was announced.</summary>
    public string MemoryBackendId { get; init; } = "";

    public int PageCount => Ram.PageCount;
    public void ReadPage(int index, Span<byte> destination) => Ram.ReadPage(index, destination);
    public void WritePage(int index, ReadOnlySpan<byte> source) => Ram.WritePage(index, source);

    /// <summary>The waiting QEMU, now owned by the caller (a failed start surfaces here, naming guest and step).</summary>
    public Task<QemuProcess> TakeQemuAsync() =>
        Interlocked.Exchange(ref _qemu, null) ?? throw new InvalidOperationException("the arriving guest's QEMU was already taken");

    public async ValueTask DisposeAsync()
    {
        // Whatever a load before the grant came to (it is bounded), the QEMU goes below.
        try { await TakePreparedAsync().ConfigureAwait(false); }
        catch (Exception) { }
        if (Interlocked.Exchange(ref _qemu, null) is { } pending)
        {
            try { await (await pending.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false); }
            catch (QemuStepException) { /* it never started: nothing to stop */ }
            if (forget is not null) await forget().ConfigureAwait(false);
        }
        Ram.Dispose();
    }
}

/// <summary>
/// A guest running on this target host in its own QEMU; disposing quits it and removes its RAM file and state entry,
/// detaching (the node stops) leaves all three.
/// </summary>
public sealed class QemuLandedVm : ILandedVm, IDetachableGuest, IStepTimed
{
    private readonly QemuProcess _qemu;
    private readonly QemuRamFile _ram;
    private readonly Func<QemuLandedVm, bool, Task> _onGone;
    private int _disposed;

    internal QemuLandedVm(VmDescription description, QemuProcess qemu, QemuRamFile ram, Func<QemuLandedVm, bool, Task> onGone)
    {
        Description = description;
        _qemu = qemu;
        _ram = ram;
        _onGone = onGone;
    }

    public VmDescription Description { get; }

    /// <summary>The steps of its resume here, timed (null for one re-adopted).</summary>
    public StepTimes? LastSteps { get; internal set; }

    public long? RunningSinceUnixMs { get; init; }
    public VmRunState State => _disposed == 0 && !_qemu.HasExited ? VmRunState.Running : VmRunState.Stopped;
    public string SerialLogPath => _qemu.SerialLogPath;
    public string RamFilePath => _ram.Path;
    public string RuntimeDirectory => _qemu.RuntimeDirectory!;
    public int ProcessId => _qemu.ProcessId;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _qemu.DisposeAsync().ConfigureAwait(false);
        _ram.Dispose();
        await _onGone(this, true).ConfigureAwait(false);
    }

    public async ValueTask DetachAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _qemu.DetachAsync().ConfigureAwait(false);
        _ram.DeleteOnDispose = false;
        _ram.Dispose();
        await _onGone(this, false).ConfigureAwait(false);
    }
}
