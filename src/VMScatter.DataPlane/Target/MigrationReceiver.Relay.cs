using System.Net;
using System.Net.Sockets;
using System.Numerics;
using System.Threading.Channels;
using VMScatter.DataPlane.Wire;

namespace VMScatter.DataPlane.Target;

/// <summary>
/// Handing a content batch on to the next host of its group in a relay chain, re-sealed under the key of the link to
/// it (<see cref="DataPlaneKeys.ForLink"/>): the next host opens it with that key and takes nothing but content batches
/// on it, so a relaying host can pass on contents (checked against their hash there) and nothing else.
/// </summary>
public sealed partial class MigrationReceiver
{
    /// <summary>
    /// Hands a frame to the relay towards the next host of its group. Relaying is its own stage (a bounded queue and a
    /// writer per peer): the receive loop goes on reading while the frame crosses this host's egress link, so a hop
    /// runs at the slower of its in- and out-link rather than at their sum. A full queue pushes back on the sender.
    /// </summary>
    private async Task RelayAsync(ulong laterMask, FrameHeader header, ReadOnlyMemory<byte> payload)
    {
        int next = BitOperations.TrailingZeroCount(laterMask);
        var key = _keys.Link(next);
        if (key.IsEmpty)
        {
            // Not sent: that host misses the batch and the source sees it lost (as with a relay that cannot connect).
            RelayFailure = $"no key for the relay link to host {next}";
            return;
        }
        Relay relay;
        lock (_relays)
            if (!_relays.TryGetValue(next, out relay!))
                _relays[next] = relay = new Relay(this, next);
        // The same sequence (the source's, accepted here once) and the same plaintext, under the link's key.
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(FrameHeader.Size + payload.Length);
        int length = FrameCodec.Encode(FrameType.ContentBatch, MigrationId, header.Sequence, payload.Span, key, copy, relayedBy: SelfIndex);
        try { await relay.Queue.Writer.WriteAsync((copy, length)).ConfigureAwait(false); }
        catch (ChannelClosedException)
        {
            // The relay failed; nothing more goes that way.
            System.Buffers.ArrayPool<byte>.Shared.Return(copy);
        }
    }

    private sealed class Relay
    {
        private const int QueuedFrames = 32;
        private readonly MigrationReceiver _owner;
        private readonly int _peer;
        private readonly TcpClient _client;
        private readonly Task _writer;

        public Relay(MigrationReceiver owner, int peer)
        {
            _owner = owner;
            _peer = peer;
            _client = owner._options.Place.Create(() => new TcpClient { NoDelay = true });
            _writer = Task.Run(WriteAsync);
        }

        public Channel<(byte[] Frame, int Length)> Queue { get; } = Channel.CreateBounded<(byte[], int)>(QueuedFrames);

        private async Task WriteAsync()
        {
            try
            {
                using var timeout = new CancellationTokenSource(_owner._options.ConnectTimeout);
                await _client.ConnectAsync(_owner._peers[_peer], timeout.Token).ConfigureAwait(false);
                var stream = _client.GetStream();
                await foreach (var (frame, length) in Queue.Reader.ReadAllAsync().ConfigureAwait(false))
                {
                    try
                    {
                        await _owner._egress.AcquireAsync(length, CancellationToken.None).ConfigureAwait(false);
                        // Counted when handed to the socket: the next host may have applied it before this write returns.
                        Interlocked.Add(ref _owner._bytesRelayed, length);
                        await stream.WriteAsync(frame.AsMemory(0, length)).ConfigureAwait(false);
                    }
                    finally { System.Buffers.ArrayPool<byte>.Shared.Return(frame); }
                }
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // Not this host's failure: the next host misses these frames, does not apply the round, and the source
                // takes it as lost (round timeout) and sends the round again to the others without it.
                _owner.RelayFailure = $"relay to host {_peer} at {_owner._peers[_peer]} failed: {e.Message}";
                // Close the queue so the receive loop is not left waiting for room that will never come.
                Queue.Writer.TryComplete();
                while (Queue.Reader.TryRead(out var left)) System.Buffers.ArrayPool<byte>.Shared.Return(left.Frame);
            }
        }

        public async Task CloseAsync()
        {
            Queue.Writer.TryComplete();
            try { await _writer.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false); } catch (TimeoutException) { }
            _client.Dispose();
        }
    }
}
