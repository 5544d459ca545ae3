using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text.Json.Nodes;

namespace VMScatter.Domain.Qemu;

/// <summary>
/// How a target host runs arriving QEMU guests: their pages are written into a fresh RAM file on tmpfs while they
/// arrive; at handover QEMU starts on that file with the guest's (validated) machine arguments, paused and waiting
/// for an incoming migration; the device state the source captured is fed to it over a private Unix socket; and
/// only then is the guest continued. A guest that fails any step is killed here and its source copy keeps running.
/// </summary>
public sealed class QemuTargetBackend(string hostId, QemuSettings settings) : ITargetBackend
{
    private readonly ConcurrentDictionary<string, QemuLandedVm> _landed = new();

    public string Name => "qemu";

    /// <summary>Guests running on this host now, by id (their serial logs show them running).</summary>
    public IReadOnlyDictionary<string, QemuLandedVm> Landed => _landed;

    public IWritableGuestMemory AllocateMemory(VmDescription vm) =>
        QemuRamFile.Create(Path.Combine(settings.RamDirectory, $"vmscatter-{hostId}-{vm.Id}-{Guid.NewGuid().ToString("N")[..8]}.ram"), vm.MemoryBytes);

    public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
    {
        if (memory is not QemuRamFile ram) throw new ArgumentException($"guest {vm.Id}: memory was not allocated by the qemu backend");
        QemuMachine machine;
        try { machine = QemuMachine.Parse(vm.MachineArguments, vm.MemoryBytes); }
        catch (ArgumentException e) { throw new QemuStepException(vm.Id, "check machine arguments", e.Message); }
        var qemu = await QemuProcess.StartAsync(vm.Id, machine.WithPausedStart(), vm.MemoryBytes, ram.Path, incoming: true, settings, cancellationToken).ConfigureAwait(false);
        try
        {
            const string load = "load device state";
            await qemu.RunAsync(load, "migrate-set-capabilities", QemuVm.IgnoreShared(), cancellationToken: cancellationToken).ConfigureAwait(false);
            string socketPath = Path.Combine(qemu.RuntimeDirectory, "incoming.sock");
            await qemu.RunAsync(load, "migrate-incoming", new JsonObject { ["uri"] = $"unix:{socketPath}" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
            {
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
                    await socket.SendAsync(deviceState, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                    socket.Shutdown(SocketShutdown.Send);
                }
                catch (SocketException e) { throw qemu.Failure(load, $"cannot stream the device state to QEMU: {e.Message}"); }
            }
            await QemuVm.WaitForMigrationAsync(qemu, load, settings.StateTransferTimeout, cancellationToken).ConfigureAwait(false);
            await qemu.RunAsync("resume on target (cont)", "cont", cancellationToken: cancellationToken).ConfigureAwait(false);
            var status = await qemu.RunAsync("resume on target (query-status)", "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (status?["running"]?.GetValue<bool>() != true)
                throw qemu.Failure("resume on target", $"guest is '{status?["status"]}' after cont, not running");
            ram.DeleteOnDispose = true;
            var landed = new QemuLandedVm(vm, qemu, ram, v => _landed.TryRemove(v.Description.Id, out _));
            _landed[vm.Id] = landed;
            return landed;
        }
        catch
        {
            await qemu.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}

/// <summary>A guest running on this target host in its own QEMU; disposing quits it and removes its RAM file.</summary>
public sealed class QemuLandedVm : ILandedVm
{
    private readonly QemuProcess _qemu;
    private readonly QemuRamFile _ram;
    private readonly Action<QemuLandedVm> _onGone;
    private int _disposed;

    internal QemuLandedVm(VmDescription description, QemuProcess qemu, QemuRamFile ram, Action<QemuLandedVm> onGone)
    {
        Description = description;
        _qemu = qemu;
        _ram = ram;
        _onGone = onGone;
    }

    public VmDescription Description { get; }
    public VmRunState State => _disposed == 0 && !_qemu.HasExited ? VmRunState.Running : VmRunState.Stopped;
    public string SerialLogPath => _qemu.SerialLogPath;
    public string RamFilePath => _ram.Path;
    public string RuntimeDirectory => _qemu.RuntimeDirectory;
    public int ProcessId => _qemu.ProcessId;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await _qemu.DisposeAsync().ConfigureAwait(false);
        _ram.Dispose();
        _onGone(this);
    }
}
