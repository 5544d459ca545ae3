using System.ComponentModel;
using System.Diagnostics;

namespace VMScatter.Qemu;

/// <summary>
/// One QEMU process for one guest: started with the guest's machine arguments plus this host's RAM file, monitor
/// socket and serial log; spoken to over QMP. Owns a private runtime directory (socket, serial log) that goes
/// with it. Every failure names the guest and the step, and says what QEMU last printed. A QEMU adopted by its
/// monitor socket (started by someone else) has no process handle or runtime directory of ours: it is only
/// quit when its guest has moved, never when this node merely stops.
/// </summary>
public sealed class QemuProcess : IAsyncDisposable
{
    private readonly Process? _process;
    private readonly LinkedList<string> _stderr;
    private int _disposed;

    private QemuProcess(string guestId, Process? process, string? runtimeDirectory, string serialLogPath, QmpClient qmp, LinkedList<string> stderr)
    {
        _stderr = stderr;
        GuestId = guestId;
        _process = process;
        RuntimeDirectory = runtimeDirectory;
        SerialLogPath = serialLogPath;
        Qmp = qmp;
    }

    public string GuestId { get; }

    /// <summary>Our private directory for this QEMU (null when adopted).</summary>
    public string? RuntimeDirectory { get; }

    /// <summary>Where the guest's serial console goes ("" when an adopted guest's log was not given).</summary>
    public string SerialLogPath { get; }
    public QmpClient Qmp { get; }
    public bool Adopted => _process is null;
    public int ProcessId => _process?.Id ?? -1;
    public bool HasExited => _process?.HasExited ?? Qmp.IsClosed;

    /// <summary>Takes over a running QEMU through its monitor socket (it must be free: QMP serves one client).</summary>
    public static async Task<QemuProcess> AdoptAsync(string guestId, string qmpSocket, string? serialLogPath, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        try
        {
            var qmp = await QmpClient.ConnectAsync(qmpSocket, settings.CommandTimeout, null, cancellationToken).ConfigureAwait(false);
            return new QemuProcess(guestId, null, null, serialLogPath ?? "", qmp, new LinkedList<string>());
        }
        catch (QmpException e) { throw new QemuStepException(guestId, "adopt (connect to QMP)", e.Message); }
    }

    private static string SerialLog(string dir) => Path.Combine(dir, "serial.log");

    /// <summary>Starts QEMU (paused at the incoming step when <paramref name="incoming"/>) and connects to its monitor.</summary>
    public static async Task<QemuProcess> StartAsync(string guestId, QemuMachine machine, long memoryBytes, string ramFile, bool incoming, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        if (ramFile.Contains(',')) throw new ArgumentException($"RAM file path '{ramFile}' must not contain a comma (QEMU option syntax)");
        string dir = Path.Combine(settings.RuntimeDirectory, $"vmscatter-{Sanitize(guestId)}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(dir);
        string qmpSocket = Path.Combine(dir, "qmp.sock");
        var psi = new ProcessStartInfo(settings.Binary) { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in machine.Arguments) psi.ArgumentList.Add(a);
        foreach (var a in new[]
        {
            "-object", $"memory-backend-file,id={machine.MemoryBackendId},size={memoryBytes},mem-path={ramFile},share=on",
            "-machine", $"memory-backend={machine.MemoryBackendId}",
            "-display", "none",
            "-chardev", $"file,id=ser0,path={SerialLog(dir)}", "-serial", "chardev:ser0",
            "-qmp", $"unix:{qmpSocket},server=on,wait=off",
            "-name", Sanitize(guestId),
        }) psi.ArgumentList.Add(a);
        if (incoming) { psi.ArgumentList.Add("-incoming"); psi.ArgumentList.Add("defer"); }

        Process process;
        try { process = Process.Start(psi) ?? throw new QmpException("Process.Start returned nothing"); }
        catch (Win32Exception e)
        {
            Directory.Delete(dir, recursive: true);
            throw new QemuStepException(guestId, "start QEMU", $"cannot run '{settings.Binary}' ({e.Message}); install it with: apt-get install qemu-system-x86");
        }
        var stderr = new LinkedList<string>();
        process.ErrorDataReceived += (_, e) => { if (e.Data is null) return; lock (stderr) { stderr.AddLast(e.Data); if (stderr.Count > 20) stderr.RemoveFirst(); } };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            var qmp = await QmpClient.ConnectAsync(qmpSocket, settings.CommandTimeout, () => !process.HasExited, cancellationToken).ConfigureAwait(false);
            return new QemuProcess(guestId, process, dir, SerialLog(dir), qmp, stderr);
        }
        catch (Exception e)
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            string said;
            lock (stderr) said = string.Join(" | ", stderr);
            process.Dispose();
            Directory.Delete(dir, recursive: true);
            throw new QemuStepException(guestId, "start QEMU", $"{e.Message}{(said.Length > 0 ? $"; QEMU said: {said}" : "")}");
        }
    }

    /// <summary>Runs a QMP command as one named step of this guest's migration.</summary>
    public async Task<System.Text.Json.Nodes.JsonNode?> RunAsync(string step, string command, System.Text.Json.Nodes.JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        try { return await Qmp.ExecuteAsync(command, arguments, timeout, cancellationToken).ConfigureAwait(false); }
        catch (QmpException e) { throw Failure(step, e.Message); }
    }

    /// <summary>An exception for this guest's <paramref name="step"/>, with what QEMU last printed if it died.</summary>
    public QemuStepException Failure(string step, string reason)
    {
        string said;
        lock (_stderr) said = string.Join(" | ", _stderr);
        string exit = _process is null ? (Qmp.IsClosed ? "; QEMU's monitor is gone (QEMU exited)" : "") : _process.HasExited ? $"; QEMU exited with code {_process.ExitCode}" : "";
        return new QemuStepException(GuestId, step, $"{reason}{exit}{(said.Length > 0 ? $"; QEMU said: {said}" : "")}");
    }

    /// <summary>Lets go of an adopted QEMU without stopping it (this node stops; the guest did not move).</summary>
    public async Task DetachAsync()
    {
        if (_process is not null) throw new InvalidOperationException("only an adopted QEMU can be detached");
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await Qmp.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Asks QEMU to quit, kills it if it does not within a few seconds, and removes the runtime directory.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_process is null)
        {
            // Adopted: no process to wait for or kill; quit over QMP, and the monitor closing says it is gone.
            try { await Qmp.ExecuteAsync("quit", null, TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
            catch (QmpException) { /* it may close the monitor before answering */ }
            await Qmp.DisposeAsync().ConfigureAwait(false);
            return;
        }
        if (!_process.HasExited)
        {
            try { await Qmp.ExecuteAsync("quit", null, TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
            catch (QmpException) { /* it may exit before answering; killed below if not */ }
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try { await _process.WaitForExitAsync(wait.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false); }
        }
        else await _process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
        await Qmp.DisposeAsync().ConfigureAwait(false);
        _process.Dispose();
        try { Directory.Delete(RuntimeDirectory!, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private static string Sanitize(string id) => new(id.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_').ToArray());
}

/// <summary>A QEMU step failed for one guest: which guest, which step, and why.</summary>
public sealed class QemuStepException(string guestId, string step, string reason)
    : Exception($"guest {guestId}: {step} failed: {reason}")
{
    public string GuestId { get; } = guestId;
    public string Step { get; } = step;
}
