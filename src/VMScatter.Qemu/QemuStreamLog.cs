using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using VMScatter.Domain.Pages;
using VMScatter.Qemu.Migration;

namespace VMScatter.Qemu;

/// <summary>
/// QEMU's own dirty log for one guest. QEMU migrates the guest, RAM included, into a loopback socket this process reads
/// (<see cref="RamRecordReader"/>): it sends a page when its dirty bitmap says so, every page once (its bulk pass), then
/// each page written since it was sent. Each record's content is hashed as it arrives and compared with the hash the
/// guest's log holds for that page; a changed page is marked. A round then costs what was written, not the RAM size.
/// QEMU 7.2 ends its pre-copy when it judges it converged (nothing holds it off in this release): it stops the guest,
/// sends the pages written last and the device state, and the stream ends. The guest is then paused (postmigrate)
/// until it is continued here or handed over.
/// </summary>
internal sealed class QemuStreamLog
{
    private const string Step = "QEMU's dirty log (its migration stream)";

    /// <summary>QEMU's largest downtime limit (2,000 s): asked for, its pre-copy converges at its next check.</summary>
    private const long ConvergeNowMs = 2_000_000;

    private readonly QemuProcess _qemu;
    private readonly ContentHash[] _hashes;
    private readonly ulong[] _marks;
    private readonly ulong[] _seen;
    private readonly int _pageCount;
    private int _seenPages;
    private long _hashTicks;
    private long _stoppedAt;
    private readonly TaskCompletionSource _bulk = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Task _reader = Task.CompletedTask;
    private RamRecordReader? _records;

    private QemuStreamLog(QemuProcess qemu, ContentHash[] hashes)
    {
        _qemu = qemu;
        _hashes = hashes;
        _pageCount = hashes.Length;
        _marks = new ulong[(_pageCount + 63) / 64];
        _seen = new ulong[_marks.Length];
    }

    /// <summary>The stream was read to its end: QEMU stopped the guest and sent everything. Faults if the stream was refused or broke.</summary>
    public Task Ended => _reader;

    /// <summary>Every page of the block came once (QEMU's bulk pass is through), or the stream ended.</summary>
    public Task BulkDone => _bulk.Task;

    /// <summary>RAM records of the guest's block read so far, and the stream's bytes.</summary>
    public long Records => _records?.Records ?? 0;
    public long Bytes => _records?.Bytes ?? 0;

    /// <summary>Once the stream ended: its device state, as a target with x-ignore-shared loads it (<see cref="RamRecordReader.DeviceState"/>).</summary>
    public byte[] DeviceState() => _records?.DeviceState() ?? throw new InvalidOperationException("no stream");

    /// <summary>When QEMU stopped the guest (its STOP event), once it did.</summary>
    public long? StoppedAtUnixMs => Interlocked.Read(ref _stoppedAt) is > 0 and var t ? t : null;

    /// <summary>Time the reader spent hashing page records, taken since the last call.</summary>
    public double TakeHashSeconds() => (double)Interlocked.Exchange(ref _hashTicks, 0) / Stopwatch.Frequency;

    /// <summary>Starts QEMU's migration of the running guest into a socket of this process and reads it from there on.</summary>
    public static async Task<QemuStreamLog> StartAsync(QemuProcess qemu, string block, ulong blockBytes, ContentHash[] hashes, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        var log = new QemuStreamLog(qemu, hashes);
        qemu.Qmp.EventReceived += log.OnEvent;
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(1);
        Task<TcpClient>? accepted = null;
        bool migrating = false;
        try
        {
            await qemu.RunAsync(Step, "migrate-set-capabilities", Capabilities(ignoreShared: false), cancellationToken: cancellationToken).ConfigureAwait(false);
            // No bandwidth cap (QEMU's default is 128 MiB/s): the bulk pass is read here, not sent on a link.
            await qemu.RunAsync(Step, "migrate-set-parameters", new JsonObject { ["downtime-limit"] = settings.StreamDowntimeLimitMs, ["max-bandwidth"] = 1L << 40 },
                cancellationToken: cancellationToken).ConfigureAwait(false);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(settings.StateTransferTimeout);
            accepted = listener.AcceptTcpClientAsync(timeout.Token).AsTask();
            await qemu.RunAsync(Step, "migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            migrating = true;
            TcpClient client;
            try { client = await accepted.ConfigureAwait(false); }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { throw qemu.Failure(Step, "QEMU did not connect its migration stream"); }
            log._records = new RamRecordReader(client.GetStream(), block, blockBytes, log.Visit);
            log._reader = Task.Run(async () =>
            {
                using (client)
                {
                    try { await log._records.RunAsync(CancellationToken.None).ConfigureAwait(false); }
                    catch (Exception e) when (e is IOException or SocketException or MigrationStreamException) { throw qemu.Failure(Step, e.Message); }
                    finally { log._bulk.TrySetResult(); }
                }
            }, CancellationToken.None);
            return log;
        }
        catch
        {
            qemu.Qmp.EventReceived -= log.OnEvent;
            // Nothing may be left migrating the guest (it would stop it when it converged), nor a socket QEMU writes to.
            _ = accepted?.ContinueWith(t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            if (migrating)
                try { await qemu.RunAsync(Step, "migrate_cancel").ConfigureAwait(false); }
                catch (QemuStepException) { }
            throw;
        }
        finally { listener.Stop(); }
    }

    private void Visit(int page, ReadOnlySpan<byte> bytes, byte fill, bool isFill)
    {
        long start = Stopwatch.GetTimestamp();
        ContentHash hash;
        if (!isFill) hash = ContentHash.OfPage(bytes);
        else if (fill == 0) hash = ContentHash.OfZeroPage;
        else
        {
            Span<byte> filled = stackalloc byte[Page.Size];
            filled.Fill(fill);
            hash = ContentHash.OfPage(filled);
        }
        ulong bit = 1UL << (page & 63);
        // The page as QEMU sent it: its content changed since the log last looked, so a round sends it.
        if (hash != _hashes[page])
        {
            _hashes[page] = hash;
            Interlocked.Or(ref _marks[page >> 6], bit);
        }
        if ((Interlocked.Or(ref _seen[page >> 6], bit) & bit) == 0 && Interlocked.Increment(ref _seenPages) == _pageCount) _bulk.TrySetResult();
        Interlocked.Add(ref _hashTicks, Stopwatch.GetTimestamp() - start);
    }

    private void OnEvent(JsonObject message)
    {
        if (message["event"]?.GetValue<string>() == "STOP" && QmpClient.TimestampMs(message) is { } at) Interlocked.CompareExchange(ref _stoppedAt, at, 0);
    }

    /// <summary>The pages marked since the last call (each once), in order.</summary>
    public void TakeMarked(List<int> into) => PageBits.TakeAll(_marks, into);

    /// <summary>Makes QEMU's pre-copy converge now (it stops the guest and sends the rest) and reads the stream to its end.</summary>
    public async Task ConvergeAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (!_reader.IsCompleted)
            await _qemu.RunAsync(Step, "migrate-set-parameters", new JsonObject { ["downtime-limit"] = ConvergeNowMs }, cancellationToken: cancellationToken).ConfigureAwait(false);
        try { await _reader.WaitAsync(timeout, cancellationToken).ConfigureAwait(false); }
        catch (TimeoutException) { throw _qemu.Failure(Step, $"QEMU's pre-copy did not end within {timeout.TotalSeconds:0}s"); }
        await QemuVm.WaitForMigrationAsync(_qemu, Step, timeout, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Ends QEMU's migration without a handover: cancelled while it runs (QEMU runs the guest on if it was running). A
    /// stream that completed left the guest paused: cont runs it.
    /// </summary>
    public async Task CancelAsync(TimeSpan timeout)
    {
        _qemu.Qmp.EventReceived -= OnEvent;
        if (_reader.IsCompleted) return;
        try { await _qemu.RunAsync(Step, "migrate_cancel").ConfigureAwait(false); }
        catch (QemuStepException) when (_qemu.HasExited) { return; }
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var info = await _qemu.RunAsync(Step, "query-migrate").ConfigureAwait(false);
            if (info?["status"]?.GetValue<string>() is "cancelled" or "failed" or "completed" or "none") break;
            await Task.Delay(5).ConfigureAwait(false);
        }
        try { await _reader.WaitAsync(timeout).ConfigureAwait(false); }
        catch (Exception e) when (e is QemuStepException or TimeoutException) { /* cancelled mid-stream: the reader saw it break */ }
    }

    /// <summary>Stops listening for QEMU's events (the stream ended and was accounted for).</summary>
    public void Detach() => _qemu.Qmp.EventReceived -= OnEvent;

    public static JsonObject Capabilities(bool ignoreShared) => new()
    {
        ["capabilities"] = new JsonArray(
            new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = ignoreShared },
            new JsonObject { ["capability"] = "pause-before-switchover", ["state"] = false }),
    };
}
