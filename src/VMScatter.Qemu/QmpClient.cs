using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace VMScatter.Qemu;

/// <summary>QEMU answered a QMP command with an error (its class and description), or the monitor went away.</summary>
public sealed class QmpException(string message) : Exception(message);

/// <summary>
/// A small QMP client of our own: connects to a QEMU monitor's Unix socket, reads the greeting, negotiates
/// capabilities, then runs one command at a time (matched by id) while asynchronous events are queued for
/// whoever waits on them. QMP is line-delimited JSON; a reader loop owns the socket's input.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _commandLock = new(1, 1);
    private readonly Channel<JsonObject> _events = Channel.CreateUnbounded<JsonObject>();
    private readonly Task _readLoop;
    private PendingCommand? _pending;
    private long _nextId;
    private volatile string? _closedReason;

    private QmpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, new UTF8Encoding(false));
        _readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>The monitor connection ended (QEMU exited, or this client was disposed).</summary>
    public bool IsClosed => _closedReason is not null;

    /// <summary>The process that listens on the monitor socket (SO_PEERCRED), or -1: the QEMU of an adopted guest.</summary>
    public int PeerProcessId { get; private set; } = -1;

    /// <summary>The QEMU version from the greeting, e.g. "7.2.19".</summary>
    public string Version { get; private set; } = "";

    private static int PeerPid(Socket socket)
    {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }, from SOL_SOCKET (1), SO_PEERCRED (17).
        Span<byte> credentials = stackalloc byte[12];
        try { return socket.GetRawSocketOption(1, 17, credentials) == 12 ? BitConverter.ToInt32(credentials) : -1; }
        catch (SocketException) { return -1; }
    }

    /// <summary>Connects (retrying while QEMU creates the socket), reads the greeting and leaves capabilities negotiation mode.</summary>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan timeout, Func<bool>? processAlive = null, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken).ConfigureAwait(false);
                var client = new QmpClient(socket) { PeerProcessId = PeerPid(socket) };
                try
                {
                    var greeting = await client.NextReplyAsync(deadline - DateTime.UtcNow, "greeting").ConfigureAwait(false);
                    var v = greeting["QMP"]?["version"]?["qemu"];
                    client.Version = v is null ? "" : $"{v["major"]}.{v["minor"]}.{v["micro"]}";
                    await client.ExecuteAsync("qmp_capabilities", null, deadline - DateTime.UtcNow, cancellationToken).ConfigureAwait(false);
                    return client;
                }
                catch
                {
                    await client.DisposeAsync().ConfigureAwait(false);
                    throw;
                }
            }
            catch (SocketException) when (DateTime.UtcNow < deadline && (processAlive?.Invoke() ?? true))
            {
                socket.Dispose();
                await Task.Delay(20, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                socket.Dispose();
                throw new QmpException(processAlive?.Invoke() == false ? "QEMU exited before its monitor socket opened" : $"no QMP monitor at {socketPath}: {e.Message}");
            }
        }
    }

    /// <summary>Runs a command and returns its "return" value; an "error" reply becomes a <see cref="QmpException"/>.</summary>
    public async Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        await _commandLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_closedReason is not null) throw new QmpException($"'{command}': {_closedReason}");
            string id = $"vmscatter-{Interlocked.Increment(ref _nextId)}";
            var request = new JsonObject { ["execute"] = command, ["id"] = id };
            if (arguments is not null) request["arguments"] = arguments.DeepClone();
            var pending = new PendingCommand(id);
            Volatile.Write(ref _pending, pending);
            var bytes = Encoding.UTF8.GetBytes(request.ToJsonString() + "\n");
            try { await _stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false); }
            catch (IOException e) { throw new QmpException($"'{command}': monitor connection lost ({e.Message})"); }
            var reply = await WaitAsync(pending.Reply.Task, timeout ?? TimeSpan.FromSeconds(30), $"'{command}'", cancellationToken).ConfigureAwait(false);
            if (reply["error"] is JsonObject error)
                throw new QmpException($"QEMU refused '{command}': {error["class"]?.GetValue<string>()}: {error["desc"]?.GetValue<string>()}");
            return reply["return"];
        }
        finally
        {
            Volatile.Write(ref _pending, null);
            _commandLock.Release();
        }
    }

    /// <summary>Each event as it arrives, on the monitor's reader (a handler must not block).</summary>
    public event Action<JsonObject>? EventReceived;

    /// <summary>When QEMU says an event happened (its "timestamp": host wall clock), in Unix milliseconds.</summary>
    public static long? TimestampMs(JsonObject message) =>
        message["timestamp"] is JsonObject t && t["seconds"]?.GetValue<long>() is { } s && t["microseconds"]?.GetValue<long>() is { } us ? s * 1000 + us / 1000 : null;

    /// <summary>Waits for the next event named <paramref name="name"/> (others are dropped) and returns its data.</summary>
    public async Task<JsonObject> WaitForEventAsync(string name, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            while (true)
            {
                var e = await _events.Reader.ReadAsync(cts.Token).ConfigureAwait(false);
                if (e["event"]?.GetValue<string>() == name) return e["data"] as JsonObject ?? new JsonObject();
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new QmpException($"no {name} event within {timeout.TotalSeconds:0.#}s");
        }
        catch (ChannelClosedException)
        {
            throw new QmpException($"waiting for {name}: {_closedReason ?? "monitor closed"}");
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (await _reader.ReadLineAsync().ConfigureAwait(false) is { } line)
            {
                if (line.Length == 0) continue;
                JsonObject? message;
                try { message = JsonNode.Parse(line) as JsonObject; }
                catch (JsonException) { continue; } // not QMP: ignore rather than desynchronise
                if (message is null) continue;
                if (message.ContainsKey("event"))
                {
                    _events.Writer.TryWrite(message);
                    // A handler's failure is its own: the monitor's reader goes on.
                    try { EventReceived?.Invoke(message); }
                    catch (Exception e) when (e is not OutOfMemoryException) { }
                }
                else if (message.ContainsKey("QMP")) _greeting.TrySetResult(message);
                else if (Volatile.Read(ref _pending) is { } p && message["id"]?.GetValue<string>() == p.Id) p.Reply.TrySetResult(message);
            }
            Close("QEMU closed its monitor (the process exited?)");
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            Close($"monitor connection lost ({e.Message})");
        }
    }

    private readonly TaskCompletionSource<JsonObject> _greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private Task<JsonObject> NextReplyAsync(TimeSpan timeout, string what) => WaitAsync(_greeting.Task, timeout, what, CancellationToken.None);

    private async Task<JsonObject> WaitAsync(Task<JsonObject> reply, TimeSpan timeout, string what, CancellationToken cancellationToken)
    {
        if (timeout <= TimeSpan.Zero) timeout = TimeSpan.FromMilliseconds(1);
        var done = await Task.WhenAny(reply, Task.Delay(timeout, cancellationToken)).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        if (done != reply) throw new QmpException($"{what}: no answer from QEMU within {timeout.TotalSeconds:0.#}s");
        return await reply.ConfigureAwait(false);
    }

    private void Close(string reason)
    {
        _closedReason ??= reason;
        _events.Writer.TryComplete();
        _greeting.TrySetException(new QmpException(reason));
        Volatile.Read(ref _pending)?.Reply.TrySetException(new QmpException(reason));
    }

    /// <summary>A command in flight; a late reply to an earlier, timed-out command carries another id and is dropped.</summary>
    private sealed record PendingCommand(string Id)
    {
        public TaskCompletionSource<JsonObject> Reply { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public async ValueTask DisposeAsync()
    {
        Close("client closed");
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { }
        _socket.Dispose();
        try { await _readLoop.ConfigureAwait(false); } catch (Exception) { /* the loop reports through Close */ }
        _reader.Dispose();
        _commandLock.Dispose();
    }
}
