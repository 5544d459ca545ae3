using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using VMScatter.DataPlane.Wire;

namespace VMScatter.DataPlane.Target;

/// <summary>
/// A target host's data-plane endpoint. Each connection is read frame by frame: the header is checked first
/// (so a hostile length cannot make it allocate), then the payload is opened (AES-GCM tag, then CRC) with the key of the
/// migration the frame names (the target's own key for the source's frames, a link key for a content batch an earlier
/// host relayed; <see cref="MigrationReceiver.KeyFor"/>); only then is it handed to that migration's receiver. A bad frame closes the
/// connection it came on and is counted.
/// </summary>
public sealed class DataPlaneListener : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly DataPlaneOptions _options;
    private readonly ConcurrentDictionary<Guid, MigrationReceiver> _receivers = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<TcpClient, byte> _connections = new();
    private readonly Task _acceptLoop;
    private long _framesRejected, _connectionsRefused, _handshakesTimedOut, _readsTimedOut;
    private int _disposed;
    private volatile string? _lastRejection;

    public DataPlaneListener(IPEndPoint bind, DataPlaneOptions options)
    {
        _options = options;
        _listener = options.Place.Create(() =>
        {
            var listener = new TcpListener(bind);
            listener.Start();
            return listener;
        });
        LocalEndPoint = (IPEndPoint)_listener.LocalEndpoint;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public IPEndPoint LocalEndPoint { get; }
    public long FramesRejected => Interlocked.Read(ref _framesRejected);
    /// <summary>Connections closed on arrival because <see cref="DataPlaneOptions.MaxConnections"/> were open.</summary>
    public long ConnectionsRefused => Interlocked.Read(ref _connectionsRefused);
    /// <summary>Connections closed because no valid frame header came within <see cref="DataPlaneOptions.HandshakeTimeout"/>.</summary>
    public long HandshakesTimedOut => Interlocked.Read(ref _handshakesTimedOut);
    public int OpenConnections => _connections.Count;

    /// <summary>Connections closed because a frame, once begun, did not come whole within the read timeout.</summary>
    public long ReadsTimedOut => Interlocked.Read(ref _readsTimedOut);
    public string? LastRejection => _lastRejection;

    public void Register(MigrationReceiver receiver)
    {
        if (!_receivers.TryAdd(receiver.MigrationId, receiver)) throw new InvalidOperationException($"migration {receiver.MigrationId} is already being received here");
    }

    public void Unregister(Guid migrationId) => _receivers.TryRemove(migrationId, out _);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
            if (_connections.Count >= _options.MaxConnections)
            {
                Interlocked.Increment(ref _connectionsRefused);
                client.Dispose();
                continue;
            }
            client.NoDelay = true;
            _connections[client] = 0;
            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using var _ = client;
        var stream = client.GetStream();
        // Until a valid header has come, the connection holds only this: a flood of silent or garbage connections
        // costs a few dozen bytes each, and each is closed after the handshake timeout.
        var header = new byte[FrameHeader.Size];
        byte[]? frame = null, plaintext = null;
        MigrationReceiver? receiver = null;
        int? sealer = null;
        // The whole first frame, header and payload, must come and open within the handshake timeout: a header that
        // names a known migration (its id is no secret) followed by silence would otherwise hold buffers and a slot.
        using var handshake = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        handshake.CancelAfter(_options.HandshakeTimeout);
        var reading = handshake.Token;
        CancellationTokenSource? frameTimer = null;
        try
        {
            if (!await ReadExactlyOrEndAsync(stream, header, reading).ConfigureAwait(false)) return;
            while (true)
            {
                var parsed = FrameCodec.ParseHeader(header, _options.MaxPayloadBytes);
                if (!_receivers.TryGetValue(parsed.MigrationId, out var r)) throw new FrameRejectedException($"no migration {parsed.MigrationId} on this host");
                // The same migration may get a new receiver here (VMs re-placed on this host after its first one closed).
                if (receiver is not null && receiver.MigrationId != r.MigrationId) throw new FrameRejectedException("one connection carries one migration");
                receiver = r;
                // One connection, one sealer: the source's, or one relaying host's.
                if (sealer is { } s && s != parsed.RelayedBy) throw new FrameRejectedException("one connection carries the frames of one sealer");
                sealer = parsed.RelayedBy;
                // Which key opens it (and whether a frame of this type may come from this sealer at all), before it is read.
                r.KeyFor(parsed);
                frame ??= ArrayPool<byte>.Shared.Rent(FrameHeader.Size + _options.MaxPayloadBytes);
                // The opened payload goes here; the frame keeps its sealed bytes, which a relay forwards as they came.
                plaintext ??= ArrayPool<byte>.Shared.Rent(_options.MaxPayloadBytes);
                header.CopyTo(frame, 0);
                await stream.ReadExactlyAsync(frame.AsMemory(FrameHeader.Size, parsed.PayloadLength), reading).ConfigureAwait(false);
                int length = FrameHeader.Size + parsed.PayloadLength;
                FrameCodec.Open(frame.AsSpan(0, FrameHeader.Size), frame.AsSpan(FrameHeader.Size, parsed.PayloadLength), r.KeyFor(parsed), plaintext.AsSpan(0, parsed.PayloadLength));
                await r.AcceptAsync(parsed, frame.AsMemory(0, length), plaintext.AsMemory(0, parsed.PayloadLength)).ConfigureAwait(false);
                // An authenticated peer from here on: it may wait between frames as long as it likes, but a frame once
                // begun must come whole within the read timeout (its first byte starts the clock).
                int started = await stream.ReadAsync(header, _stop.Token).ConfigureAwait(false);
                if (started == 0) return;
                frameTimer?.Dispose();
                frameTimer = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                frameTimer.CancelAfter(_options.ReadTimeout);
                reading = frameTimer.Token;
                if (started < header.Length && !await ReadExactlyOrEndAsync(stream, header.AsMemory(started), reading).ConfigureAwait(false))
                    throw new EndOfStreamException("connection closed inside a frame header");
            }
        }
        catch (OperationCanceledException) when (handshake.IsCancellationRequested && !_stop.IsCancellationRequested && reading == handshake.Token)
        {
            Interlocked.Increment(ref _handshakesTimedOut);
        }
        catch (OperationCanceledException) when (frameTimer is { IsCancellationRequested: true } && !_stop.IsCancellationRequested && reading == frameTimer.Token)
        {
            Interlocked.Increment(ref _readsTimedOut);
        }
        catch (FrameRejectedException e)
        {
            Interlocked.Increment(ref _framesRejected);
            _lastRejection = e.Message;
        }
        catch (Exception e) when (e is IOException or SocketException or EndOfStreamException or OperationCanceledException or ObjectDisposedException)
        {
            // The peer went away mid-frame; the migration notices through its missing round, or the sender's error.
        }
        finally
        {
            frameTimer?.Dispose();
            _connections.TryRemove(client, out byte _);
            if (frame is not null) ArrayPool<byte>.Shared.Return(frame);
            if (plaintext is not null) ArrayPool<byte>.Shared.Return(plaintext, clearArray: true); // it held guest memory
        }
    }

    private static async Task<bool> ReadExactlyOrEndAsync(NetworkStream stream, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer[read..], cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                if (read == 0) return false;
                throw new EndOfStreamException("connection closed inside a frame header");
            }
            read += n;
        }
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _stop.Cancel();
        _listener.Stop();
        // Connections being served end now, not at their next frame: a host that stops receiving says so at once.
        foreach (var client in _connections.Keys) client.Dispose();
        await _acceptLoop.ConfigureAwait(false);
        _stop.Dispose();
    }
}
