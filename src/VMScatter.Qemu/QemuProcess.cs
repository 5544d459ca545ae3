using System.ComponentModel;
using System.Diagnostics;

namespace VMScatter.Qemu;

/// <summary>
/// One QEMU process for one guest: started with the guest's machine arguments plus this host's RAM file, monitor
/// socket and serial log; spoken to over QMP. QEMU runs daemonized (its own session, reparented to init): it is
/// not this node's child, so a node that stops, crashes or is killed with its process group or tree leaves it
/// running, and the node (or its next incarnation) finds it again by pid, monitor socket and RAM file. Ours owns a
/// private runtime directory (socket, serial log, pidfile) that goes when it is quit. A QEMU adopted by its monitor
/// socket (started by someone else) has no runtime directory of ours and no pid we know. Every failure names the
/// guest and the step.
/// </summary>
public sealed class QemuProcess : IAsyncDisposable
{
    private int _disposed;

    private QemuProcess(string guestId, GuestPid? pid, string? runtimeDirectory, string qmpSocket, string serialLogPath, QmpClient qmp)
    {
        GuestId = guestId;
        Pid = pid;
        RuntimeDirectory = runtimeDirectory;
        QmpSocket = qmpSocket;
        SerialLogPath = serialLogPath;
        Qmp = qmp;
    }

    public string GuestId { get; }

    /// <summary>Our private directory for this QEMU (null when adopted).</summary>
    public string? RuntimeDirectory { get; }

    public string QmpSocket { get; }

    /// <summary>Where the guest's serial console goes ("" when an adopted guest's log was not given).</summary>
    public string SerialLogPath { get; }
    public QmpClient Qmp { get; }

    /// <summary>The QEMU process (null when adopted: only its monitor is known).</summary>
    public GuestPid? Pid { get; }

    /// <summary>Started by someone else and taken over by its monitor socket: its files are its owner's.</summary>
    public bool Adopted => RuntimeDirectory is null;
    public int ProcessId => Pid?.Pid ?? -1;

    /// <summary>The QEMU process as far as it is known: this node's own, else the one listening on the monitor socket.</summary>
    public int MonitorProcessId => Pid?.Pid ?? Qmp.PeerProcessId;
    public bool HasExited => Pid is { } pid ? !pid.IsAlive : Qmp.IsClosed;

    /// <summary>Takes over a running QEMU through its monitor socket (it must be free: QMP serves one client).</summary>
    public static async Task<QemuProcess> AdoptAsync(string guestId, string qmpSocket, string? serialLogPath, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        try
        {
            var qmp = await ConnectPinnedAsync(qmpSocket, settings.CommandTimeout, null, cancellationToken).ConfigureAwait(false);
            return new QemuProcess(guestId, null, null, qmpSocket, serialLogPath ?? "", qmp);
        }
        catch (QmpException e) { throw new QemuStepException(guestId, "adopt (connect to QMP)", e.Message); }
    }

    /// <summary>
    /// Finds again a QEMU this node started before it stopped or crashed: the same process (pid and start time), its
    /// monitor answering. Its runtime directory stays ours, so quitting it later removes it.
    /// </summary>
    public static async Task<QemuProcess> ReattachAsync(string guestId, GuestPid pid, string runtimeDirectory, string qmpSocket, string serialLogPath, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        if (!pid.IsAlive) throw new QemuStepException(guestId, "re-adopt", $"its QEMU (pid {pid.Pid}) is gone");
        try
        {
            var qmp = await ConnectPinnedAsync(qmpSocket, settings.CommandTimeout, () => pid.IsAlive, cancellationToken).ConfigureAwait(false);
            return new QemuProcess(guestId, pid, runtimeDirectory, qmpSocket, serialLogPath, qmp);
        }
        catch (QmpException e) { throw new QemuStepException(guestId, "re-adopt (connect to QMP)", e.Message); }
    }

    /// <summary>
    /// The monitor of a QEMU of the release whose migration stream VMScatter reads (a target checks every device
    /// state it is sent against that format); any other release is refused here, before any guest moves.
    /// </summary>
    private static async Task<QmpClient> ConnectPinnedAsync(string qmpSocket, TimeSpan timeout, Func<bool>? processAlive, CancellationToken cancellationToken)
    {
        var qmp = await QmpClient.ConnectAsync(qmpSocket, timeout, processAlive, cancellationToken).ConfigureAwait(false);
        if (Migration.MigrationStreamFormat.Reads(qmp.Version)) return qmp;
        await qmp.DisposeAsync().ConfigureAwait(false);
        throw new QmpException($"QEMU {qmp.Version}: VMScatter reads QEMU {Migration.MigrationStreamFormat.QemuRelease}'s migration stream only");
    }

    private static string SerialLog(string dir) => Path.Combine(dir, "serial.log");

    /// <summary>
    /// <see cref="StartAsync"/> on a RAM file path that does not exist yet, which QEMU makes: a start that fails or is
    /// cancelled (Ctrl-C) after QEMU made the file, and killed QEMU, removes the file too.
    /// </summary>
    public static async Task<QemuProcess> StartOnNewRamFileAsync(string guestId, QemuMachine machine, long memoryBytes, string ramFile, bool incoming, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        try { return await StartAsync(guestId, machine, memoryBytes, ramFile, incoming, settings, cancellationToken).ConfigureAwait(false); }
        catch
        {
            try { File.Delete(ramFile); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // the start's own failure is what the caller needs
            throw;
        }
    }

    /// <summary>
    /// Starts QEMU (paused at the incoming step when <paramref name="incoming"/>) and connects to its monitor. Throws
    /// <see cref="ArgumentException"/> before starting anything if the machine's devices are not allowed here.
    /// </summary>
    public static async Task<QemuProcess> StartAsync(string guestId, QemuMachine machine, long memoryBytes, string ramFile, bool incoming, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        if (ramFile.Contains(',')) throw new ArgumentException($"RAM file path '{ramFile}' must not contain a comma (QEMU option syntax)");
        // Disks and NICs from this host's configuration (throws ArgumentException for what it does not allow).
        var deviceArguments = machine.Devices.HostArguments(settings.Devices);
        // Absolute: the daemon changes its directory to /.
        ramFile = Path.GetFullPath(ramFile);
        string dir = Path.GetFullPath(Path.Combine(settings.RuntimeDirectory, $"vmscatter-{Sanitize(guestId)}-{Guid.NewGuid().ToString("N")[..8]}"));
        Directory.CreateDirectory(dir);
        string qmpSocket = Path.Combine(dir, "qmp.sock");
        string pidFile = Path.Combine(dir, "qemu.pid");
        var psi = new ProcessStartInfo(settings.Binary) { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in machine.Arguments.Concat(deviceArguments)) psi.ArgumentList.Add(a);
        foreach (var a in new[]
        {
            "-object", $"memory-backend-file,id={machine.MemoryBackendId},size={memoryBytes},mem-path={ramFile},share=on",
            "-machine", $"memory-backend={machine.MemoryBackendId}",
            "-display", "none",
            "-chardev", $"file,id=ser0,path={SerialLog(dir)}", "-serial", "chardev:ser0",
            "-qmp", $"unix:{qmpSocket},server=on,wait=off",
            "-name", Sanitize(guestId),
            // The guest must outlive this node: QEMU forks into its own session and the launcher exits once the
            // daemon is set up (its monitor listening), or with QEMU's error on stderr.
            "-daemonize", "-pidfile", pidFile,
        }) psi.ArgumentList.Add(a);
        if (incoming) { psi.ArgumentList.Add("-incoming"); psi.ArgumentList.Add("defer"); }

        Process launcher;
        try { launcher = Process.Start(psi) ?? throw new QmpException("Process.Start returned nothing"); }
        catch (Win32Exception e)
        {
            Directory.Delete(dir, recursive: true);
            throw new QemuStepException(guestId, "start QEMU", $"cannot run '{settings.Binary}' ({e.Message}); install it with: apt-get install qemu-system-x86");
        }
        var said = new List<string>();
        launcher.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (said) if (said.Count < 20) said.Add(e.Data); };
        launcher.OutputDataReceived += (_, _) => { };
        launcher.BeginErrorReadLine();
        launcher.BeginOutputReadLine();
        GuestPid? pid = null;
        try
        {
            using (launcher)
            {
                using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                bounded.CancelAfter(settings.CommandTimeout);
                try { await launcher.WaitForExitAsync(bounded.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    launcher.Kill(entireProcessTree: true);
                    throw new QmpException($"QEMU did not finish starting within {settings.CommandTimeout.TotalSeconds:0}s");
                }
                catch (OperationCanceledException)
                {
                    // Cancelled (Ctrl-C): a launcher abandoned mid-daemonize would leave a QEMU nobody knows. Let it
                    // finish (bounded) so its pidfile names the daemon the catch below kills.
                    using var grace = new CancellationTokenSource(settings.CommandTimeout);
                    try { await launcher.WaitForExitAsync(grace.Token).ConfigureAwait(false); }
                    catch (OperationCanceledException) { launcher.Kill(entireProcessTree: true); }
                    throw;
                }
                if (launcher.ExitCode != 0) throw new QmpException($"QEMU exited with code {launcher.ExitCode}");
            }
            pid = File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), out int n) ? GuestPid.Of(n) : null;
            if (pid is null) throw new QmpException("QEMU exited right after starting (no live pid in its pidfile)");
            var alive = pid;
            var qmp = await ConnectPinnedAsync(qmpSocket, settings.CommandTimeout, () => alive.IsAlive, cancellationToken).ConfigureAwait(false);
            return new QemuProcess(guestId, pid, dir, qmpSocket, SerialLog(dir), qmp);
        }
        catch (Exception e)
        {
            if (pid is null && File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), out int late)) pid = GuestPid.Of(late);
            if (pid is not null)
            {
                pid.Kill();
                await pid.WaitForExitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            }
            string stderr;
            lock (said) stderr = string.Join(" | ", said);
            Directory.Delete(dir, recursive: true);
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested) throw;
            throw new QemuStepException(guestId, "start QEMU", $"{e.Message}{(stderr.Length > 0 ? $"; QEMU said: {stderr}" : "")}");
        }
    }

    /// <summary>Runs a QMP command as one named step of this guest's migration.</summary>
    public async Task<System.Text.Json.Nodes.JsonNode?> RunAsync(string step, string command, System.Text.Json.Nodes.JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        try { return await Qmp.ExecuteAsync(command, arguments, timeout, cancellationToken).ConfigureAwait(false); }
        catch (QmpException e) { throw Failure(step, e.Message); }
    }

    /// <summary>An exception for this guest's <paramref name="step"/>, saying whether QEMU is gone.</summary>
    public QemuStepException Failure(string step, string reason)
    {
        string exit = !HasExited ? "" : Pid is { } pid ? $"; QEMU exited (pid {pid.Pid})" : "; QEMU's monitor is gone (QEMU exited)";
        return new QemuStepException(GuestId, step, $"{reason}{exit}");
    }

    /// <summary>Lets go of this QEMU without stopping it (this node stops; the guest did not move): only the monitor connection closes.</summary>
    public async Task DetachAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await Qmp.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Asks QEMU to quit, kills it if it does not within a few seconds, and removes our runtime directory.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (!HasExited)
        {
            try { await Qmp.ExecuteAsync("quit", null, TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
            catch (QmpException) { /* it may close the monitor before answering; killed below if it still runs */ }
        }
        if (Pid is { } pid && !await pid.WaitForExitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false))
        {
            pid.Kill();
            await pid.WaitForExitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        }
        await Qmp.DisposeAsync().ConfigureAwait(false);
        if (RuntimeDirectory is { } dir)
            try { Directory.Delete(dir, recursive: true); } catch (DirectoryNotFoundException) { }
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
