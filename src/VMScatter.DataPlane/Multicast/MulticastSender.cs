using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using VMScatter.DataPlane.Wire;

namespace VMScatter.DataPlane.Multicast;

/// <summary>What a channel's sender did: datagrams and bytes on the wire (UDP payloads), repairs among them, and feedback.</summary>
public readonly record struct MulticastSenderStats(long Datagrams, long Bytes, long Repairs, long RepairBytes, long Nacks, long FeedbackRejected, IReadOnlyList<int> DroppedReceivers);

/// <summary>
/// Sends one ordered stream of messages to a group of receivers over IP multicast, reliably: every datagram is kept
/// (sealed, as sent) until every receiver acknowledged it, gaps a receiver reports (NACK) are sent again to the whole
/// group, at most once per holdoff whoever asks, and a round ends only when every receiver holds all of it. The window
/// is bounded: a slow receiver slows the sender (its acknowledgements free the window), and one not heard from within
/// the receiver timeout is dropped, so the others go on. Paced at the link rate, repairs included.
/// </summary>
public sealed class MulticastSender : IAsyncDisposable
{
    private readonly Guid _migrationId;
    private readonly byte[] _key;
    private readonly MulticastOptions _options;
    private readonly Socket _socket;
    private readonly Socket _feedback;
    private readonly LinkPacer _pacer;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<ulong> _repairs = Channel.CreateUnbounded<ulong>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _feedbackLoop;
    private readonly Task _repairLoop;

    private readonly object _gate = new();
    private readonly Dictionary<ulong, byte[]> _window = new();
    private readonly Dictionary<ulong, double> _repairedAt = new();
    private readonly Dictionary<int, Peer> _peers = new();
    private readonly List<int> _dropped = new();
    private ulong _base;
    private ulong _next;
    /// <summary>The round whose end is being announced (-1 before the first): a member that holds every datagram but has not acknowledged it is behind too.</summary>
    private int _ending = -1;
    private long _windowBytes;
    private ulong _control;
    // Every receiver was heard from once (it joined the group): until then the stream waits, so a member that is told to
    // join over TCP while the channel is already in use does not start with a gap to repair.
    private bool _joined;
    private TaskCompletionSource _progress = NewSignal();
    private long _datagrams, _bytes, _repairsSent, _repairBytes, _nacks, _rejected;

    private sealed class Peer
    {
        public ulong Acked;
        public int Round = -1;
        public double HeardAt;
        public ulong LastCounter;
        public bool AnyFeedback;
    }

    /// <param name="pacer">The host's link, shared with its other traffic (the data plane's TCP frames); null: a link of the channel's own at <see cref="MulticastOptions.LinkBitsPerSecond"/>.</param>
    public MulticastSender(Guid migrationId, ReadOnlySpan<byte> migrationKey, int channel, IEnumerable<int> receivers, MulticastOptions options, LinkPacer? pacer = null)
    {
        _migrationId = migrationId;
        _key = MulticastWire.ChannelKey(migrationKey, channel);
        _options = options;
        foreach (int r in receivers)
        {
            if (r is < 0 or > MulticastWire.MaxReceiverId) throw new ArgumentOutOfRangeException(nameof(receivers), $"receiver id {r}");
            _peers[r] = new Peer { HeardAt = 0 };
        }
        _pacer = pacer ?? new LinkPacer(options.LinkBitsPerSecond, DataPlaneOptions.DefaultLinkQueueBytes);
        // Only the sockets are made in the host's namespace: its loops start here, outside it (see NetworkPlace.Create).
        _socket = options.Place.Create(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        _socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastInterface, options.Interface.GetAddressBytes());
        _socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastTimeToLive, 1);
        _socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastLoopback, true);
        _socket.SendBufferSize = 4 << 20;
        _socket.Bind(new IPEndPoint(options.Interface, 0));
        _feedback = options.Place.Create(() => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        _feedback.ReceiveBufferSize = 1 << 20;
        _feedback.Bind(new IPEndPoint(options.Interface, 0));
        FeedbackEndPoint = (IPEndPoint)_feedback.LocalEndPoint!;
        _feedbackLoop = Task.Run(() => FeedbackLoopAsync(_stop.Token));
        _repairLoop = Task.Run(() => RepairLoopAsync(_stop.Token));
    }

    /// <summary>
    /// The receiver leaves the channel (its host is done, or lost): it no longer holds the window nor a round's end, and
    /// is not reported dropped. Its feedback is refused from now on.
    /// </summary>
    public void Remove(int receiver)
    {
        lock (_gate)
        {
            if (!_peers.Remove(receiver)) return;
            Release();
            Signal();
        }
    }

    /// <summary>
    /// The receivers furthest behind (the least acknowledged, when someone does not hold every datagram sent so far): for
    /// a sender that waited too long on a receiver that is alive (it acknowledges) but does not catch up, so the caller
    /// can decide they are lost. Only the furthest: on a busy host a healthy member may lag a little at that moment too,
    /// and it gets another bound to catch up once the one holding everyone up is gone. When every member holds every
    /// datagram, those that have not acknowledged the round end being announced (a member that drops most of what
    /// arrives may miss every repeat of it).
    /// </summary>
    public IReadOnlyList<int> Behind()
    {
        lock (_gate)
        {
            var behind = _peers.Where(p => p.Value.Acked < _next).ToArray();
            if (behind.Length == 0) return _peers.Where(p => p.Value.Round < _ending).Select(p => p.Key).Order().ToArray();
            ulong least = behind.Min(p => p.Value.Acked);
            return behind.Where(p => p.Value.Acked == least).Select(p => p.Key).Order().ToArray();
        }
    }

    /// <summary>Every receiver was heard from once (or was dropped meanwhile): the channel may send.</summary>
    public bool Joined
    {
        get { lock (_gate) return _joined; }
    }

    /// <summary>
    /// Waits until every receiver was heard from once; one never heard from within the receiver timeout (from the
    /// channel's start) is dropped as one that never joined, and the others go on.
    /// </summary>
    public async Task WhenJoinedAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            (int, bool)[] dropped;
            bool joined;
            lock (_gate)
            {
                dropped = DropSilent();
                joined = AllJoined();
                wait = _progress.Task;
            }
            Dropped(dropped);
            if (joined) return;
            await WaitProgressAsync(wait, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The channel's multicast group and port.</summary>
    public IPEndPoint Group => _options.Group;

    /// <summary>Where receivers send acknowledgements and NACKs (unicast).</summary>
    public IPEndPoint FeedbackEndPoint { get; }

    /// <summary>
    /// A receiver was dropped (silent past the receiver timeout), and whether it never joined: never heard from while the
    /// channel sent nothing (it waits for every member's first word), so it missed nothing and may be served otherwise.
    /// </summary>
    public event Action<int, bool>? ReceiverDropped;

    public MulticastSenderStats Stats
    {
        get { lock (_gate) return new(_datagrams, _bytes, _repairsSent, _repairBytes, _nacks, _rejected, _dropped.ToArray()); }
    }

    private double Now => _clock.Elapsed.TotalSeconds;

    /// <summary>Sends one message (at most <see cref="MulticastOptions.MaxMessageBytes"/>) as the stream's next datagram; waits until every receiver was heard from (joined), and while the window is full.</summary>
    public async ValueTask SendAsync(ReadOnlyMemory<byte> message, CancellationToken cancellationToken)
    {
        if (message.Length > _options.MaxMessageBytes) throw new ArgumentException($"message of {message.Length} bytes exceeds {_options.MaxMessageBytes}", nameof(message));
        var datagram = new byte[FrameHeader.Size + message.Length];
        while (true)
        {
            Task wait;
            (int, bool)[] dropped;
            bool sent = false;
            lock (_gate)
            {
                dropped = DropSilent();
                if (AllJoined() && (_windowBytes + datagram.Length <= _options.WindowBytes || _window.Count == 0))
                {
                    ulong seq = _next++;
                    FrameCodec.Encode(FrameType.ChannelData, _migrationId, seq, message.Span, _key, datagram);
                    _window[seq] = datagram;
                    _windowBytes += datagram.Length;
                    sent = true;
                }
                wait = _progress.Task;
            }
            Dropped(dropped);
            if (sent) break;
            await WaitProgressAsync(wait, cancellationToken).ConfigureAwait(false);
        }
        // From here the message is the stream's: if the send is cancelled, receivers find the gap and it is repaired
        // (a caller that sent it again would put it in the stream twice).
        try { await SendDatagramAsync(datagram, repair: false, cancellationToken).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
    }

    /// <summary>
    /// Ends round <paramref name="round"/>: announces how many datagrams the stream has, again and again, until every
    /// receiver still in the channel holds all of them. Returns the receivers dropped meanwhile (or before).
    /// </summary>
    public async Task<IReadOnlyList<int>> EndRoundAsync(int round, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        byte[] datagram;
        ulong count;
        lock (_gate)
        {
            count = _next;
            _ending = Math.Max(_ending, round);
            datagram = new byte[FrameHeader.Size + 12];
            FrameCodec.Encode(FrameType.ChannelRoundEnd, _migrationId, MulticastWire.SenderControlBit | _control++, MulticastWire.RoundEnd(round, count), _key, datagram);
        }
        while (true)
        {
            Task wait;
            (int, bool)[] dropped;
            int[]? done;
            lock (_gate)
            {
                dropped = DropSilent();
                done = _peers.Values.All(p => p.Acked >= count && p.Round >= round) ? _dropped.ToArray() : null;
                wait = _progress.Task;
            }
            Dropped(dropped);
            if (done is not null) return done;
            await SendDatagramAsync(datagram, repair: false, cancellationToken).ConfigureAwait(false);
            await WaitProgressAsync(wait, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task WaitProgressAsync(Task progress, CancellationToken cancellationToken)
    {
        try { await progress.WaitAsync(_options.RoundEndInterval, cancellationToken).ConfigureAwait(false); }
        catch (TimeoutException) { /* look again: a receiver may have gone silent */ }
    }

    private async ValueTask SendDatagramAsync(byte[] datagram, bool repair, CancellationToken cancellationToken)
    {
        await _pacer.AcquireAsync(datagram.Length + 28, cancellationToken).ConfigureAwait(false);
        await _socket.SendToAsync(datagram, SocketFlags.None, _options.Group, cancellationToken).ConfigureAwait(false);
        lock (_gate)
        {
            _datagrams++;
            _bytes += datagram.Length;
            if (repair) { _repairsSent++; _repairBytes += datagram.Length; }
        }
    }

    /// <summary>
    /// Under the gate: receivers silent past the timeout leave the channel (and stop holding the window). Returns them,
    /// for <see cref="Dropped"/> once the gate is released (a handler may take other channels' gates).
    /// </summary>
    private (int Id, bool NeverJoined)[] DropSilent()
    {
        double now = Now;
        List<(int, bool)>? dropped = null;
        foreach (var (id, peer) in _peers.ToArray())
        {
            if (now - peer.HeardAt < _options.ReceiverTimeout.TotalSeconds) continue;
            _peers.Remove(id);
            _dropped.Add(id);
            (dropped ??= new()).Add((id, !peer.AnyFeedback && _next == 0));
            Release();
            Signal();
        }
        return dropped?.ToArray() ?? [];
    }

    /// <summary>Under the gate: every receiver left was heard from once (once true, it stays true).</summary>
    private bool AllJoined() => _joined = _joined || _peers.Values.All(p => p.AnyFeedback);

    private void Dropped((int Id, bool NeverJoined)[] receivers)
    {
        foreach (var (r, neverJoined) in receivers) ReceiverDropped?.Invoke(r, neverJoined);
    }

    /// <summary>Under the gate: datagrams every receiver holds are forgotten.</summary>
    private void Release()
    {
        ulong upTo = _peers.Count == 0 ? _next : _peers.Values.Min(p => p.Acked);
        for (; _base < upTo; _base++)
        {
            if (_window.Remove(_base, out var d)) _windowBytes -= d.Length;
            _repairedAt.Remove(_base);
        }
    }

    private void Signal()
    {
        var old = _progress;
        _progress = NewSignal();
        old.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task FeedbackLoopAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[FrameHeader.Size + 2 + MulticastWire.MaxNackRanges * 12 + 1];
        var from = new IPEndPoint(IPAddress.Any, 0);
        while (!cancellationToken.IsCancellationRequested)
        {
            SocketReceiveFromResult got;
            try { got = await _feedback.ReceiveFromAsync(buffer, SocketFlags.None, from, cancellationToken).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (SocketException) { continue; } // an ICMP error from a receiver gone: its silence drops it
            try { OnFeedback(buffer.AsSpan(0, got.ReceivedBytes)); }
            catch (FrameRejectedException) { lock (_gate) _rejected++; }
        }
    }

    private void OnFeedback(ReadOnlySpan<byte> datagram)
    {
        var header = FrameCodec.ParseHeader(datagram, 2 + MulticastWire.MaxNackRanges * 12);
        if (datagram.Length != FrameHeader.Size + header.PayloadLength) throw new FrameRejectedException("datagram length does not match its header");
        if (header.MigrationId != _migrationId) throw new FrameRejectedException("another migration's feedback");
        if ((header.Sequence & MulticastWire.FeedbackBit) == 0) throw new FrameRejectedException("feedback outside the feedback sequence space");
        if (header.Type is not (FrameType.ChannelAck or FrameType.ChannelNack)) throw new FrameRejectedException($"{header.Type} is not feedback");
        var payload = new byte[header.PayloadLength];
        FrameCodec.Open(datagram[..FrameHeader.Size], datagram[FrameHeader.Size..], _key, payload);
        int receiver = MulticastWire.ReceiverOf(header.Sequence);
        ulong counter = header.Sequence & 0xFF_FFFF_FFFF;
        lock (_gate)
        {
            if (!_peers.TryGetValue(receiver, out var peer)) throw new FrameRejectedException($"receiver {receiver} is not in the channel");
            if (peer.AnyFeedback && counter <= peer.LastCounter) throw new FrameRejectedException("replayed feedback");
            peer.AnyFeedback = true;
            peer.LastCounter = counter;
            peer.HeardAt = Now;
            if (header.Type == FrameType.ChannelAck)
            {
                var (round, contiguous) = MulticastWire.ReadAck(payload);
                if (contiguous > _next) throw new FrameRejectedException($"ack of {contiguous} datagrams, only {_next} sent");
                peer.Acked = Math.Max(peer.Acked, contiguous);
                peer.Round = Math.Max(peer.Round, round);
                Release();
                Signal();
                return;
            }
            _nacks++;
            double now = Now;
            foreach (var (start, count) in MulticastWire.ReadNack(payload))
                for (ulong s = start; s < start + count && s < _next; s++)
                {
                    if (!_window.ContainsKey(s)) continue; // every receiver acknowledged it: a stale request
                    if (_repairedAt.TryGetValue(s, out var at) && now - at < _options.RepairHoldoff.TotalSeconds) continue;
                    _repairedAt[s] = now;
                    _repairs.Writer.TryWrite(s);
                }
        }
    }

    private async Task RepairLoopAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (ulong seq in _repairs.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                byte[]? datagram;
                lock (_gate) _window.TryGetValue(seq, out datagram);
                if (datagram is not null) await SendDatagramAsync(datagram, repair: true, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _repairs.Writer.TryComplete();
        _feedback.Dispose();
        _socket.Dispose();
        try { await Task.WhenAll(_feedbackLoop, _repairLoop).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { }
        _stop.Dispose();
    }
}
