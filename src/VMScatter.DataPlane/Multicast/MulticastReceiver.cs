using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using VMScatter.DataPlane.Wire;

namespace VMScatter.DataPlane.Multicast;

/// <summary>What a channel's receiver saw: datagrams taken in, dropped by loss injection, rejected, duplicates, and its requests.</summary>
public readonly record struct MulticastReceiverStats(long Datagrams, long InjectedDrops, long Rejected, long Duplicates, long Nacks, long Acks, ulong Delivered, int RoundsComplete);

/// <summary>
/// Joins a channel's multicast group and delivers its messages in order, each once: datagrams are opened and checked
/// before anything is used, gaps are asked for (NACK, after a random back-off, again while open), and what it holds is
/// acknowledged regularly and at each round's end, which also tells the sender it is alive.
/// </summary>
public sealed class MulticastReceiver : IAsyncDisposable
{
    private readonly Guid _migrationId;
    private readonly byte[] _key;
    private readonly int _receiverId;
    private readonly IPEndPoint _sender;
    private readonly MulticastOptions _options;
    private readonly Func<byte[], ValueTask> _deliver;
    private readonly Socket _socket;
    private readonly Socket _feedback;
    private readonly Random _random;
    private readonly ReceiveWindow _window;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _receiveLoop;
    private readonly Task _timerLoop;
    private readonly object _gate = new();
    private ulong _feedbackCounter;
    private int _roundSeen = -1;
    private ulong _roundCount;
    private int _roundsComplete;
    private int _ackedRound = -1;
    private double _ackedAt;
    private ulong _ackedContiguous;
    private long _datagrams, _drops, _rejected, _nacks, _acks, _roundEndsAgain;
    private TaskCompletionSource<int> _roundSignal = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public MulticastReceiver(Guid migrationId, ReadOnlySpan<byte> migrationKey, int channel, int receiverId, IPEndPoint sender, MulticastOptions options, Func<byte[], ValueTask> deliver)
    {
        if (receiverId is < 0 or > MulticastWire.MaxReceiverId) throw new ArgumentOutOfRangeException(nameof(receiverId));
        _migrationId = migrationId;
        _key = MulticastWire.ChannelKey(migrationKey, channel);
        _receiverId = receiverId;
        _sender = sender;
        _options = options;
        _deliver = deliver;
        // Not HashCode.Combine, which is seeded per process: injected loss and NACK back-off repeat from run to run.
        _random = new Random(unchecked(options.Seed * 1_000_003 + receiverId * 10_007 + channel));
        _window = new ReceiveWindow(options.NackBackoff, options.NackRetry, _random);
        // Only the sockets are made in the host's namespace: its loops start here, outside it (see NetworkPlace.Create).
        _socket = options.Place.Create(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        _feedback = options.Place.Create(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        try
        {
            _socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            LargeReceiveBuffer(_socket, 8 << 20);
            // Bound to the group, not to any address: a migration's channels share its port, and a socket bound to any
            // address would also get the datagrams of every other channel this host joined (each refused, at a decryption's cost).
            _socket.Bind(new IPEndPoint(options.Group.Address, options.Group.Port));
            _socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.AddMembership, new MulticastOption(options.Group.Address, options.Interface));
            _feedback.Bind(new IPEndPoint(options.Interface, 0));
        }
        catch
        {
            // A join that fails is a normal path (a host that cannot join is served otherwise): nothing may stay open.
            _socket.Dispose();
            _feedback.Dispose();
            throw;
        }
        _receiveLoop = Task.Run(() => ReceiveLoopAsync(_stop.Token));
        _timerLoop = Task.Run(() => TimerLoopAsync(_stop.Token));
    }

    /// <summary>
    /// A burst the receiver has not read yet waits in its socket: the default cap (net.core.rmem_max, ~208 KiB) drops
    /// it after ~50 datagrams, each then a repair. Root may go past the cap (SO_RCVBUFFORCE); others get what it allows.
    /// </summary>
    private static void LargeReceiveBuffer(Socket socket, int bytes)
    {
        const int SolSocket = 1, SoRcvBufForce = 33;
        try { socket.SetRawSocketOption(SolSocket, SoRcvBufForce, BitConverter.GetBytes(bytes)); }
        catch (SocketException) { socket.ReceiveBufferSize = bytes; }
    }

    public MulticastReceiverStats Stats
    {
        get { lock (_gate) return new(_datagrams, _drops, _rejected, _window.Duplicates + _roundEndsAgain, _nacks, _acks, _window.Contiguous, _roundsComplete); }
    }

    private double Now => _clock.Elapsed.TotalSeconds;

    /// <summary>Completes once every datagram of round <paramref name="round"/> (or a later one) was delivered.</summary>
    public async Task WaitRoundAsync(int round, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task<int> signal;
            lock (_gate)
            {
                if (_roundsComplete > round) return;
                signal = _roundSignal.Task;
            }
            await signal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task ReceiveLoopAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[FrameHeader.Size + _options.MaxMessageBytes + 1];
        var from = new IPEndPoint(IPAddress.Any, 0);
        while (!cancellationToken.IsCancellationRequested)
        {
            SocketReceiveFromResult got;
            try { got = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, from, cancellationToken).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            IReadOnlyList<byte[]> ready;
            lock (_gate)
            {
                if (_options.DropFraction > 0 && _random.NextDouble() < _options.DropFraction) { _drops++; continue; }
                _datagrams++;
                try { ready = OnDatagram(buffer.AsSpan(0, got.ReceivedBytes)); }
                catch (Exception e) when (e is FrameRejectedException or ArgumentOutOfRangeException) { _rejected++; continue; }
            }
            foreach (var message in ready) await _deliver(message).ConfigureAwait(false);
            if (ready.Count > 0) await MaybeAckAsync(force: false, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Under the gate: checks and opens a datagram; returns the messages now deliverable in order.</summary>
    private IReadOnlyList<byte[]> OnDatagram(ReadOnlySpan<byte> datagram)
    {
        var header = FrameCodec.ParseHeader(datagram, _options.MaxMessageBytes);
        if (datagram.Length != FrameHeader.Size + header.PayloadLength) throw new FrameRejectedException("datagram length does not match its header");
        if (header.MigrationId != _migrationId) throw new FrameRejectedException("another migration's datagram");
        bool control = (header.Sequence & MulticastWire.SenderControlBit) != 0;
        if ((header.Sequence & MulticastWire.FeedbackBit) != 0) throw new FrameRejectedException("feedback on the group");
        if ((header.Type, control) is not ((FrameType.ChannelData, false) or (FrameType.ChannelRoundEnd, true)))
            throw new FrameRejectedException($"{header.Type} with sequence {header.Sequence} does not belong on the group");
        var payload = new byte[header.PayloadLength];
        FrameCodec.Open(datagram[..FrameHeader.Size], datagram[FrameHeader.Size..], _key, payload);
        if (header.Type == FrameType.ChannelData) return _window.Accept(header.Sequence, payload, Now);
        var (round, count) = MulticastWire.ReadRoundEnd(payload);
        // A round end heard before (the sender repeats it until every member has it; or a replay): counted, nothing more.
        if (round < _roundSeen || (round == _roundSeen && count != _roundCount)) { _roundEndsAgain++; return []; }
        if (count < _roundCount) throw new FrameRejectedException($"round {round} ends before the previous one");
        _window.KnownEnd(count, Now);
        _roundSeen = round;
        _roundCount = count;
        return [];
    }

    private async Task TimerLoopAsync(CancellationToken cancellationToken)
    {
        var tick = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(1).Ticks, Math.Min(_options.NackBackoff.Ticks, _options.AckInterval.Ticks) / 2));
        using var timer = new PeriodicTimer(tick);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                IReadOnlyList<(ulong Start, uint Count)> gaps;
                lock (_gate) gaps = _window.DueNacks(Now, MulticastWire.MaxNackRanges);
                if (gaps.Count > 0) await SendFeedbackAsync(FrameType.ChannelNack, MulticastWire.Nack(gaps), cancellationToken).ConfigureAwait(false);
                await MaybeAckAsync(force: false, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>Acknowledges when a round just completed, every 64 datagrams, or at the ack interval (a sign of life).</summary>
    private async Task MaybeAckAsync(bool force, CancellationToken cancellationToken)
    {
        byte[]? ack = null;
        lock (_gate)
        {
            ulong contiguous = _window.Contiguous;
            bool roundDone = _roundSeen > _ackedRound && contiguous >= _roundCount;
            if (roundDone && _roundsComplete <= _roundSeen)
            {
                _roundsComplete = _roundSeen + 1;
                var signal = _roundSignal;
                _roundSignal = new(TaskCreationOptions.RunContinuationsAsynchronously);
                signal.TrySetResult(_roundSeen);
            }
            if (force || roundDone || contiguous - _ackedContiguous >= 64 || Now - _ackedAt >= _options.AckInterval.TotalSeconds)
            {
                int round = contiguous >= _roundCount ? _roundSeen : _roundSeen - 1;
                ack = MulticastWire.Ack(Math.Max(-1, round), contiguous);
                if (roundDone) _ackedRound = _roundSeen;
                _ackedContiguous = contiguous;
                _ackedAt = Now;
            }
        }
        if (ack is not null) await SendFeedbackAsync(FrameType.ChannelAck, ack, cancellationToken).ConfigureAwait(false);
    }

    private async Task SendFeedbackAsync(FrameType type, byte[] payload, CancellationToken cancellationToken)
    {
        var datagram = new byte[FrameHeader.Size + payload.Length];
        lock (_gate)
        {
            FrameCodec.Encode(type, _migrationId, MulticastWire.FeedbackSequence(_receiverId, ++_feedbackCounter), payload, _key, datagram);
            if (type == FrameType.ChannelNack) _nacks++; else _acks++;
        }
        try { await _feedback.SendToAsync(datagram, SocketFlags.None, _sender, cancellationToken).ConfigureAwait(false); }
        catch (SocketException) { /* the sender is gone or not yet there: the next tick asks again */ }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _socket.Dispose();
        _feedback.Dispose();
        try { await Task.WhenAll(_receiveLoop, _timerLoop).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { }
        _stop.Dispose();
    }
}
