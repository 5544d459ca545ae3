using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using VMScatter.DataPlane;
using VMScatter.Qemu;

namespace VMScatter.Bench;

/// <summary>What QEMU's own migration of one guest cost.</summary>
/// <param name="ProgramAtStart">The guest program's progress marker when the migration began, and <paramref name="ProgramOnTarget"/> on its target (0 for dd, which prints none).</param>
public sealed record NativeMigrationResult(string GuestId, long BytesSent, double Seconds, double DowntimeMs, long CounterAtStart, long CounterOnTarget, long ProgramAtStart = 0, long ProgramOnTarget = 0);

/// <summary>
/// The bench's baseline: QEMU's own live migration of one guest to a fresh QEMU on this host over tcp loopback,
/// through a proxy that counts the stream's bytes and paces them at the same link rate VMScatter gets. Optionally
/// with multifd + zstd (QEMU's strongest compression). The target continues the guest; the source then quits.
/// </summary>
public static class QemuNativeMigration
{
    private static readonly TimeSpan CounterTimeout = TimeSpan.FromSeconds(60);

    /// <param name="program">What the guest runs: its progress marker must go on at the target too.</param>
    public static async Task<NativeMigrationResult> RunAsync(QemuVm guest, QemuSettings settings, long linkBitsPerSecond, bool multifdZstd, CancellationToken cancellationToken = default,
        GuestWorkload program = GuestWorkload.Dd)
    {
        var vm = guest.Description;
        var machine = QemuMachine.Parse(vm.MachineArguments, vm.MemoryBytes);
        string ramFile = Path.Combine(settings.RamDirectory, $"vmscatter-native-{vm.Id}-{Guid.NewGuid().ToString("N")[..8]}.ram");
        var target = await QemuProcess.StartOnNewRamFileAsync(vm.Id.Value, machine, vm.MemoryBytes, ramFile, incoming: true, settings, cancellationToken).ConfigureAwait(false);
        var source = guest.Process;
        try
        {
            const string step = "QEMU native migration";
            if (multifdZstd)
                foreach (var side in new[] { source, target })
                {
                    await side.RunAsync(step, "migrate-set-capabilities", new JsonObject
                    {
                        ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "multifd", ["state"] = true }),
                    }, cancellationToken: cancellationToken).ConfigureAwait(false);
                    await side.RunAsync(step, "migrate-set-parameters", new JsonObject { ["multifd-compression"] = "zstd" }, cancellationToken: cancellationToken).ConfigureAwait(false);
                }
            // QEMU's own cap is the link rate too (its default, 128 MiB/s, would otherwise cap an "unlimited" link).
            long bytesPerSecond = linkBitsPerSecond > 0 ? linkBitsPerSecond / 8 : 1L << 40;
            await source.RunAsync(step, "migrate-set-parameters", new JsonObject { ["max-bandwidth"] = bytesPerSecond }, cancellationToken: cancellationToken).ConfigureAwait(false);

            int incomingPort = FreePort();
            await target.RunAsync(step, "migrate-incoming", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{incomingPort}" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            await using var proxy = new CountingProxy(new IPEndPoint(IPAddress.Loopback, incomingPort), new LinkPacer(linkBitsPerSecond, DataPlaneOptions.DefaultLinkQueueBytes));
            long counterAtStart = SerialConsole.LastCounter(guest.SerialLogPath);
            long programAtStart = program.ProgressPrefix() is { } marker ? SerialConsole.LastValue(guest.SerialLogPath, marker) : 0;
            var clock = Stopwatch.StartNew();
            await source.RunAsync(step, "migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{proxy.Port}" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            await QemuVm.WaitForMigrationAsync(source, step, TimeSpan.FromMinutes(10), cancellationToken).ConfigureAwait(false);
            var info = await source.RunAsync(step, "query-migrate", cancellationToken: cancellationToken).ConfigureAwait(false);
            await WaitRunningAsync(target, step, cancellationToken).ConfigureAwait(false);
            double seconds = clock.Elapsed.TotalSeconds;
            double downtime = info?["downtime"]?.GetValue<long>() ?? double.NaN;
            // The guest goes on counting on its target: QEMU's handover worked.
            long counterOnTarget = await CountsOnAsync(vm.Id.Value, target, counterAtStart, cancellationToken).ConfigureAwait(false);
            long programOnTarget = program == GuestWorkload.Dd ? 0
                : await QemuBench.ProgramGoesOnAsync(vm.Id.Value, program, target.SerialLogPath, programAtStart, () => !target.HasExited, cancellationToken).ConfigureAwait(false);
            await proxy.DisposeAsync().ConfigureAwait(false);
            await guest.StopAsync(cancellationToken).ConfigureAwait(false);
            return new NativeMigrationResult(vm.Id.Value, proxy.BytesForwarded, seconds, downtime, counterAtStart, counterOnTarget, programAtStart, programOnTarget);
        }
        finally
        {
            await target.DisposeAsync().ConfigureAwait(false);
            File.Delete(ramFile);
        }
    }

    /// <summary>The guest's counter on its target once it passed <paramref name="counterAtStart"/>; a one-line step failure if it does not.</summary>
    private static async Task<long> CountsOnAsync(string guestId, QemuProcess target, long counterAtStart, CancellationToken cancellationToken)
    {
        const string step = "check the guest counts on at its target";
        try { return await SerialConsole.WaitForCounterAboveAsync(target.SerialLogPath, counterAtStart, CounterTimeout, () => !target.HasExited, cancellationToken).ConfigureAwait(false); }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            string last = SerialConsole.LastLine(target.SerialLogPath) is { } l ? $"its serial log ends with '{l}'" : "its serial log is empty";
            throw target.Failure(step, $"no counter above {counterAtStart} within {CounterTimeout.TotalSeconds:0}s ({e.Message}); {last}");
        }
    }

    private static async Task WaitRunningAsync(QemuProcess target, string step, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var status = await target.RunAsync(step, "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (status?["running"]?.GetValue<bool>() == true) return;
            if (DateTime.UtcNow > deadline) throw target.Failure(step, $"target still '{status?["status"]}' after the migration completed");
            await Task.Delay(5, cancellationToken).ConfigureAwait(false);
        }
    }

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Forwards every connection to the target, counting and pacing the source-to-target bytes as one link.</summary>
    private sealed class CountingProxy : IAsyncDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly IPEndPoint _target;
        private readonly LinkPacer _pacer;
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _pumps = new();
        private readonly Task _accepting;
        private long _bytes;

        public CountingProxy(IPEndPoint target, LinkPacer pacer)
        {
            _target = target;
            _pacer = pacer;
            _listener.Start();
            _accepting = AcceptAsync();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;
        public long BytesForwarded => Interlocked.Read(ref _bytes);

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    var inbound = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false);
                    lock (_pumps) _pumps.Add(PumpAsync(inbound));
                }
            }
            catch (OperationCanceledException) { }
            catch (SocketException) { }
        }

        private async Task PumpAsync(TcpClient inbound)
        {
            using var _ = inbound;
            using var outbound = new TcpClient();
            try
            {
                await outbound.ConnectAsync(_target, _stop.Token).ConfigureAwait(false);
                var from = inbound.GetStream();
                var to = outbound.GetStream();
                var forward = ForwardAsync(from, to, outbound.Client);
                var back = to.CopyToAsync(from, _stop.Token); // QEMU's return path, if any: not counted
                await Task.WhenAll(forward, back).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or SocketException) { }
        }

        private async Task ForwardAsync(Stream from, Stream to, Socket toSocket)
        {
            var buffer = new byte[64 << 10];
            int n;
            while ((n = await from.ReadAsync(buffer, _stop.Token).ConfigureAwait(false)) > 0)
            {
                await _pacer.AcquireAsync(n, _stop.Token).ConfigureAwait(false);
                await to.WriteAsync(buffer.AsMemory(0, n), _stop.Token).ConfigureAwait(false);
                Interlocked.Add(ref _bytes, n);
            }
            toSocket.Shutdown(SocketShutdown.Send);
        }

        public async ValueTask DisposeAsync()
        {
            if (_stop.IsCancellationRequested) return;
            _stop.Cancel();
            _listener.Stop();
            await _accepting.ConfigureAwait(false);
            Task[] pumps;
            lock (_pumps) pumps = _pumps.ToArray();
            try { await Task.WhenAll(pumps).ConfigureAwait(false); } catch (Exception) { /* torn down on purpose */ }
        }
    }
}
