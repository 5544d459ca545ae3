using System.Net;
using System.Net.Sockets;
using System.Numerics;
using System.Threading.Channels;
using VMScatter.DataPlane.Multicast;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.DataPlane.Target;

/// <summary>A VM this target host receives: its index in the migration, description and the memory being filled.</summary>
public sealed record ReceiverVm(int VmIndex, VmDescription Description, IWritableGuestMemory Memory);

/// <summary>A dirty round fully applied on this host (or the reason it cannot be).</summary>
public sealed record RoundOutcome(int Round, bool Final, string? Error);

/// <summary>
/// One migration as one target host sees it. Rebuilds each arriving VM's memory from content records (stored
/// once per host, whichever VM they came for) and page maps ("page i of VM v has content c"), resolving maps
/// whose content has not arrived yet when it does. A round is applied when its end marker and every record it
/// announced are in. Relays content frames to the next host of their group.
/// </summary>
public sealed partial class MigrationReceiver : IAsyncDisposable
{
    private readonly object _gate = new();
    // Its own key and those of its relay links; replaced whole (never changed in place) when hosts join the migration.
    private volatile ReceiverKeys _keys;
    // Replaced whole (never changed in place) when hosts join the migration: relays read it without the gate.
    private volatile IReadOnlyList<IPEndPoint> _peers;
    private readonly DataPlaneOptions _options;
    private readonly Dictionary<int, ReceiverVm> _vms;
    // A content is kept either in the store (_contentSlot: a slot of _contents) or only in the first guest page it
    // was written to, its home (_homeOf), when maps announced that page before the content came: round 0 then
    // writes each page once instead of storing it and copying it. A home about to be overwritten moves its content
    // into the store first (Evict), so later references still find the bytes.
    private readonly Dictionary<long, int> _contentSlot = new();
    private readonly ContentArena _contents = new();
    private readonly List<ContentHash> _contentHashes = new();
    private readonly Dictionary<long, (int Vm, int Page, ContentHash Hash)> _homeOf = new();
    private readonly Dictionary<(int Vm, int Page), long> _homeContent = new();
    private readonly byte[] _homeBytes = new byte[Page.Size];
    private readonly byte[] _evicted = new byte[Page.Size]; // Evict's own: it may run while _homeBytes is being written
    // Each page's content hash as written here, computed over the decoded bytes when they arrived: the target's
    // handover digest is built from it without reading all memory again.
    private readonly Dictionary<int, ContentHash[]> _pageHashes;
    private readonly Dictionary<long, List<(int Vm, int Page)>> _pending = new();
    private readonly HashSet<ulong> _seenSequences = new();
    private readonly Dictionary<int, RoundCounts> _rounds = new();
    private readonly Dictionary<int, byte[]> _deviceState = new();
    private readonly Dictionary<int, int> _deviceStateReceived = new();
    private readonly Dictionary<int, Dictionary<int, int>> _deviceStateChunks = new();
    // VMs started here: their memory is theirs, so no content lives in it and no frame writes to it.
    private readonly HashSet<int> _released = new();
    private readonly Channel<RoundOutcome> _outcomes = Channel.CreateUnbounded<RoundOutcome>();
    private readonly Dictionary<int, Relay> _relays = new();
    private readonly LinkPacer _egress;
    private int _nextRound;
    private bool _failed;
    private bool _closed;
    private long _bytesReceived, _bytesRelayed, _contentRecords, _contentsWithdrawn, _staleFrames;
    // The migration's multicast channels this host is on (the source says join, ChannelOpen; each at most once), until the
    // receiver closes; content batches of groups this host is in come on them, each with the source's tag for this host.
    private readonly Dictionary<int, MulticastReceiver> _channels = new();
    private readonly HashSet<int> _channelsOpened = new();
    private long _channelIgnored, _channelRejected;

    public MigrationReceiver(Guid migrationId, ReceiverKeys keys, int selfIndex, IReadOnlyList<IPEndPoint> peers, IReadOnlyList<ReceiverVm> vms, DataPlaneOptions options)
    {
        if (keys.Problem(selfIndex) is { } bad) throw new ArgumentException(bad, nameof(keys));
        MigrationId = migrationId;
        _keys = keys;
        SelfIndex = selfIndex;
        _peers = peers;
        _options = options;
        _vms = vms.ToDictionary(v => v.VmIndex);
        _pageHashes = vms.ToDictionary(v => v.VmIndex, v => Enumerable.Repeat(ContentHash.OfZeroPage, v.Memory.PageCount).ToArray());
        _egress = new LinkPacer(options.LinkBitsPerSecond, options.LinkQueueBytes);
    }

    public Guid MigrationId { get; }
    public int SelfIndex { get; }
    public IReadOnlyCollection<ReceiverVm> Vms => _vms.Values;

    /// <summary>
    /// The key that opens a frame with this header: this host's own for the source's frames; for a frame a target relayed,
    /// the key of the link from that earlier target, and only for a content batch (a relay hands on contents, nothing
    /// else). Throws <see cref="FrameRejectedException"/> otherwise, before the frame is read or anything is applied.
    /// </summary>
    public ReadOnlySpan<byte> KeyFor(FrameHeader header)
    {
        var keys = _keys;
        if (header.RelayedBy == FrameHeader.FromSource) return keys.Own;
        if (header.Type != FrameType.ContentBatch) throw new FrameRejectedException($"a {header.Type} frame relayed by host {header.RelayedBy}: a relay link carries content batches only");
        if (header.RelayedBy >= SelfIndex) throw new FrameRejectedException($"host {header.RelayedBy} does not relay to host {SelfIndex}");
        var key = keys.Link(header.RelayedBy);
        if (key.IsEmpty) throw new FrameRejectedException($"no relay link from host {header.RelayedBy}");
        return key;
    }

    /// <summary>
    /// The key material for the migration's hosts now (hosts joined it): the same own key and links, with the links to the
    /// new hosts added. Call before <see cref="UpdatePeers"/>, so a frame is relayed to a new host only once its link key is here.
    /// </summary>
    public void UpdateKeys(ReceiverKeys keys)
    {
        lock (_gate)
        {
            var now = _keys;
            if (keys.Problem(SelfIndex) is { } bad) throw new ArgumentException(bad, nameof(keys));
            if (!keys.Own.AsSpan().SequenceEqual(now.Own) || keys.Links.Length < now.Links.Length || !keys.Links.AsSpan(0, now.Links.Length).SequenceEqual(now.Links)
                || !(now.Channel ?? []).AsSpan().SequenceEqual(keys.Channel ?? []))
                throw new ArgumentException("a migration's data-plane keys may only be added to", nameof(keys));
            _keys = keys;
        }
    }
    public ChannelReader<RoundOutcome> Outcomes => _outcomes.Reader;
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);
    public long BytesRelayed => Interlocked.Read(ref _bytesRelayed);
    public long ContentRecordsReceived => Interlocked.Read(ref _contentRecords);
    public long ContentsWithdrawn => Interlocked.Read(ref _contentsWithdrawn);

    /// <summary>Why relaying to a next host stopped, if it did (that host then misses frames; the source sees it lost).</summary>
    public string? RelayFailure { get; private set; }

    /// <summary>Channel content batches for groups this host is not in: ignored.</summary>
    public long ChannelBatchesIgnored => Interlocked.Read(ref _channelIgnored);

    /// <summary>Channel content batches refused (a wrong tag, a replay, a malformed batch): each fails the migration here.</summary>
    public long ChannelBatchesRejected => Interlocked.Read(ref _channelRejected);

    /// <summary>The counters of the channels this host is on now, summed; null when it is on none.</summary>
    public MulticastReceiverStats? ChannelStats
    {
        get
        {
            MulticastReceiverStats[] each;
            lock (_gate) each = _channels.Values.Select(c => c.Stats).ToArray();
            return each.Length == 0 ? null : each.Aggregate((a, b) => new(a.Datagrams + b.Datagrams, a.InjectedDrops + b.InjectedDrops, a.Rejected + b.Rejected,
                a.Duplicates + b.Duplicates, a.Nacks + b.Nacks, a.Acks + b.Acks, a.Delivered + b.Delivered, Math.Min(a.RoundsComplete, b.RoundsComplete)));
        }
    }

    /// <summary>Why this host could not join a channel it was told to (its content then comes by TCP), or null.</summary>
    public string? ChannelJoinFailure { get; private set; }

    /// <summary>Channels the source told this host to join so far.</summary>
    public int ChannelsJoined
    {
        get { lock (_gate) return _channelsOpened.Count; }
    }

    /// <summary>Frames of a round the source gave up (sent again under a later number): dropped.</summary>
    public long StaleFrames => Interlocked.Read(ref _staleFrames);

    /// <summary>
    /// More VMs arrive here in this migration (re-placed from a lost target): their memory is filled by later rounds,
    /// with the contents this host already holds reused.
    /// </summary>
    public void AddVms(IReadOnlyList<ReceiverVm> vms)
    {
        lock (_gate)
        {
            foreach (var vm in vms)
                if (_vms.ContainsKey(vm.VmIndex)) throw new ArgumentException($"VM {vm.VmIndex} is received here already", nameof(vms));
            foreach (var vm in vms)
            {
                _vms[vm.VmIndex] = vm;
                _pageHashes[vm.VmIndex] = Enumerable.Repeat(ContentHash.OfZeroPage, vm.Memory.PageCount).ToArray();
            }
        }
    }

    /// <summary>
    /// Hosts joined the migration (VMs re-placed on a target it did not use yet): the same hosts first, then the new ones,
    /// so a relay chain can reach them.
    /// </summary>
    public void UpdatePeers(IReadOnlyList<IPEndPoint> peers)
    {
        lock (_gate)
        {
            if (peers.Count < _peers.Count || !_peers.SequenceEqual(peers.Take(_peers.Count)))
                throw new ArgumentException("the migration's hosts may only be added to, after the others", nameof(peers));
            _peers = peers.ToArray();
        }
    }

    /// <summary>
    /// The VM is about to run here: its pages become the guest's, so contents kept only in them are forgotten (a later
    /// reference would read what the guest wrote) and no frame may write them any more.
    /// </summary>
    public void ReleaseVm(int vmIndex)
    {
        lock (_gate)
        {
            if (!_released.Add(vmIndex)) return;
            // Its own pages looked up, nothing copied: a pass copying every VM's homes out took 20-45 ms here with a
            // wave's VMs starting at once, and the guest waits paused for it.
            if (_vms.TryGetValue(vmIndex, out var vm))
                for (int p = 0; p < vm.Memory.PageCount; p++)
                    if (_homeContent.Remove((vmIndex, p), out long content)) _homeOf.Remove(content);
            List<long>? emptied = null;
            foreach (var (content, pages) in _pending)
                if (pages.RemoveAll(p => p.Vm == vmIndex) > 0 && pages.Count == 0) (emptied ??= new()).Add(content);
            foreach (long content in emptied ?? []) _pending.Remove(content);
        }
    }
    public int DistinctContentsHeld { get { lock (_gate) return _contentSlot.Count + _homeOf.Count; } }

    /// <summary>Contents copied into the content store (the rest live only in the guest page they were written to).</summary>
    public int ContentsStored { get { lock (_gate) return _contentSlot.Count; } }

    public byte[]? DeviceStateOf(int vmIndex)
    {
        lock (_gate)
            return _deviceState.TryGetValue(vmIndex, out var s) && _deviceStateReceived[vmIndex] == s.Length ? s : null;
    }

    /// <summary>
    /// The handover digest of a received VM (see <see cref="MemoryDigest"/>), from the hashes of the pages as they were
    /// written here; only meaningful once the final round is applied.
    /// </summary>
    public string DigestOf(int vmIndex, ReadOnlySpan<byte> deviceState)
    {
        lock (_gate) return MemoryDigest.FromPageHashes(_pageHashes[vmIndex], deviceState);
    }

    /// <summary>Applies one authenticated frame. Throws <see cref="FrameRejectedException"/> for anything invalid.</summary>
    public async Task AcceptAsync(FrameHeader header, ReadOnlyMemory<byte> frame, ReadOnlyMemory<byte> payload)
    {
        Interlocked.Add(ref _bytesReceived, frame.Length);
        _options.Metrics?.FrameReceived(frame.Length);
        ulong relayMask = 0;
        ChannelOpen? join = null;
        try
        {
            // KeyFor let it in; this holds even for a caller that did not ask it.
            if (header.RelayedBy != FrameHeader.FromSource && header.Type != FrameType.ContentBatch)
                throw new FrameRejectedException($"a {header.Type} frame relayed by host {header.RelayedBy}: a relay link carries content batches only");
            lock (_gate)
            {
                if (_closed) throw new FrameRejectedException("the receiver is closed");
                if (_failed) throw new FrameRejectedException("migration already failed on this host");
                if (!_seenSequences.Add(header.Sequence)) throw new FrameRejectedException($"replayed frame {header.Sequence}");
                switch (header.Type)
                {
                    case FrameType.ContentBatch: relayMask = ApplyContents(Records.ReadContentBatch(payload), header, payload.Span); break;
                    case FrameType.MapBatch: ApplyMaps(Records.ReadMapBatch(payload)); break;
                    case FrameType.RoundEnd: ApplyRoundEnd(Records.ReadRoundEnd(payload)); break;
                    case FrameType.DeviceState: ApplyDeviceState(Records.ReadDeviceState(payload)); break;
                    case FrameType.ContentsWithdrawn: ApplyWithdrawn(Records.ReadWithdrawn(payload)); break;
                    case FrameType.Hello: if (payload.Length != 0) throw new FrameRejectedException("hello with a payload"); break;
                    case FrameType.ChannelOpen:
                        var open = Records.ReadChannelOpen(payload);
                        if (_keys.Channel is null) throw new FrameRejectedException("told to join a multicast channel without its key");
                        if (!_channelsOpened.Add(open.Channel)) throw new FrameRejectedException($"told to join multicast channel {open.Channel} twice");
                        join = open;
                        break;
                    default: throw new FrameRejectedException($"a {header.Type} frame does not belong on a connection");
                }
                CheckRoundComplete();
            }
        }
        catch (FrameRejectedException e)
        {
            Fail($"rejected an authenticated frame: {e.Message}");
            throw;
        }
        if (relayMask != 0) await RelayAsync(relayMask, header, payload).ConfigureAwait(false);
        if (join is { } channel) JoinChannel(channel);
    }

    /// <summary>
    /// Joins the channel: its sockets in this host's namespace, on its data-plane address. A join that fails is not this
    /// migration's failure: the source hears nothing from this host on the channel, and after its receiver timeout sends
    /// this host's content by TCP instead (<see cref="ChannelJoinFailure"/> says why).
    /// </summary>
    private void JoinChannel(ChannelOpen open)
    {
        var settings = _options.Multicast;
        var local = settings.Interface ?? IPAddress.Loopback;
        var options = settings.ToOptions(open.Group, local, open.MaxMessageBytes, 0, seed: SelfIndex + 1, _options.Place);
        var key = _keys.Channel!;
        MulticastReceiver receiver;
        try { receiver = new MulticastReceiver(MigrationId, key, open.Channel, SelfIndex, open.Feedback, options, OnChannelMessageAsync); }
        catch (Exception e) when (e is SocketException or ArgumentException or InvalidOperationException)
        {
            ChannelJoinFailure = $"cannot join multicast group {open.Group} on {local}: {e.Message}";
            return;
        }
        bool closed;
        lock (_gate)
        {
            closed = _closed;
            if (!closed) _channels[open.Channel] = receiver;
        }
        if (closed) _ = receiver.DisposeAsync().AsTask();
    }

    private ValueTask OnChannelMessageAsync(byte[] message)
    {
        try { AcceptChannelContent(message); }
        catch (FrameRejectedException) { /* counted, and the migration failed here */ }
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// A content batch from the multicast channel: applied if this host is in its group (others are ignored), once its
    /// tag for this host (the source's, under this host's own key) is checked, so no other member can forge it.
    /// Anything wrong with it throws <see cref="FrameRejectedException"/> and fails the migration here.
    /// </summary>
    public void AcceptChannelContent(ReadOnlyMemory<byte> message)
    {
        Interlocked.Add(ref _bytesReceived, message.Length);
        _options.Metrics?.FrameReceived(message.Length);
        try
        {
            var (sequence, batch) = Records.ReadChannelContent(message);
            lock (_gate)
            {
                if (_closed || _failed) return;
                if ((batch.RecipientMask >> SelfIndex & 1) == 0) { Interlocked.Increment(ref _channelIgnored); return; }
                if (!TargetMask.Within(batch.RecipientMask, _peers.Count)) throw new FrameRejectedException("channel content batch names unknown hosts");
                int tag = BitOperations.PopCount(batch.RecipientMask & ((1UL << SelfIndex) - 1)) * Records.SourceTagSize;
                if (!FrameCodec.IsSourceTag(_keys.Own, sequence, message.Span.Slice(Records.ChannelContentHeader, batch.SignedLength), batch.SourceTags.Span.Slice(tag, Records.SourceTagSize)))
                    throw new FrameRejectedException($"channel content batch {sequence} without the source's tag for host {SelfIndex}");
                if (!_seenSequences.Add(sequence)) throw new FrameRejectedException($"replayed channel content batch {sequence}");
                if (CheckRound(batch.Round)) StoreContents(batch);
                CheckRoundComplete();
            }
        }
        catch (FrameRejectedException e)
        {
            Interlocked.Increment(ref _channelRejected);
            Fail($"rejected a multicast content batch: {e.Message}");
            throw;
        }
    }

    /// <summary>Marks the migration failed on this host (bad data, or the data plane was lost).</summary>
    public void Fail(string reason)
    {
        lock (_gate)
        {
            if (_failed) return;
            _failed = true;
        }
        _outcomes.Writer.TryWrite(new RoundOutcome(_nextRound, false, reason));
    }

    /// <summary>
    /// Closes the receiver: once this returns no frame writes into the VMs' memory any more (every write happens under
    /// the gate), so the host may give that memory to another arrival (a pooled range is reused at once).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        lock (_gate) _closed = true;
        Relay[] relays;
        lock (_relays) relays = _relays.Values.ToArray();
        foreach (var relay in relays) await relay.CloseAsync().ConfigureAwait(false);
        MulticastReceiver[] channels;
        lock (_gate)
        {
            channels = _channels.Values.ToArray();
            _channels.Clear();
        }
        foreach (var channel in channels) await channel.DisposeAsync().ConfigureAwait(false);
        _outcomes.Writer.TryComplete();
    }

    private static readonly byte[] ZeroPage = new byte[Page.Size];

    private sealed class RoundCounts
    {
        public int Contents;
        public int Maps;
        public RoundEnd? End;
    }
}
