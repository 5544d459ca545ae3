using System.Net;
using System.Net.Sockets;
using System.Numerics;
using System.Threading.Channels;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;

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
public sealed class MigrationReceiver : IAsyncDisposable
{
    private readonly object _gate = new();
    private readonly byte[] _key;
    private readonly IReadOnlyList<IPEndPoint> _peers;
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
    private readonly Channel<RoundOutcome> _outcomes = Channel.CreateUnbounded<RoundOutcome>();
    private readonly Dictionary<int, Relay> _relays = new();
    private readonly LinkPacer _egress;
    private int _nextRound;
    private bool _failed;
    private bool _closed;
    private long _bytesReceived, _bytesRelayed, _contentRecords, _contentsWithdrawn;

    public MigrationReceiver(Guid migrationId, byte[] key, int selfIndex, IReadOnlyList<IPEndPoint> peers, IReadOnlyList<ReceiverVm> vms, DataPlaneOptions options)
    {
        if (key.Length != FrameCodec.KeySize) throw new ArgumentException("bad key size", nameof(key));
        MigrationId = migrationId;
        _key = key;
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
    public ReadOnlySpan<byte> Key => _key;
    public ChannelReader<RoundOutcome> Outcomes => _outcomes.Reader;
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);
    public long BytesRelayed => Interlocked.Read(ref _bytesRelayed);
    public long ContentRecordsReceived => Interlocked.Read(ref _contentRecords);
    public long ContentsWithdrawn => Interlocked.Read(ref _contentsWithdrawn);
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
        ulong relayMask = 0;
        try
        {
            lock (_gate)
            {
                if (_closed) throw new FrameRejectedException("the receiver is closed");
                if (_failed) throw new FrameRejectedException("migration already failed on this host");
                if (!_seenSequences.Add(header.Sequence)) throw new FrameRejectedException($"replayed frame {header.Sequence}");
                switch (header.Type)
                {
                    case FrameType.ContentBatch: relayMask = ApplyContents(Records.ReadContentBatch(payload)); break;
                    case FrameType.MapBatch: ApplyMaps(Records.ReadMapBatch(payload)); break;
                    case FrameType.RoundEnd: ApplyRoundEnd(Records.ReadRoundEnd(payload)); break;
                    case FrameType.DeviceState: ApplyDeviceState(Records.ReadDeviceState(payload)); break;
                    case FrameType.ContentsWithdrawn: ApplyWithdrawn(Records.ReadWithdrawn(payload)); break;
                }
                CheckRoundComplete();
            }
        }
        catch (FrameRejectedException e)
        {
            Fail($"rejected an authenticated frame: {e.Message}");
            throw;
        }
        if (relayMask != 0) await RelayAsync(relayMask, frame).ConfigureAwait(false);
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

    private ulong ApplyContents(ContentBatch batch)
    {
        if ((batch.RecipientMask >> SelfIndex & 1) == 0) throw new FrameRejectedException($"content batch not addressed to host {SelfIndex}");
        if (!TargetMask.Within(batch.RecipientMask, _peers.Count)) throw new FrameRejectedException("content batch names unknown hosts");
        CheckRound(batch.Round);
        Span<byte> page = stackalloc byte[Page.Size];
        foreach (var record in batch.Records)
        {
            if (!PageCodec.TryDecode(record.Encoding, record.Encoded.Span, page)) throw new FrameRejectedException($"content {record.ContentId} does not decode to one page");
            var hash = ContentHash.Compute(page);
            if (ContentRecord.CheckOf(hash) != record.Check) throw new FrameRejectedException($"content {record.ContentId} does not match its content hash");
            if (Holds(record.ContentId))
            {
                if (!BytesOf(record.ContentId).SequenceEqual(page))
                    throw new FrameRejectedException($"content {record.ContentId} arrived twice with different bytes");
            }
            else if (_pending.Remove(record.ContentId, out var waiting))
            {
                // Its pages are known: write them, and keep the content in the first of them only.
                foreach (var (vm, p) in waiting) WriteBytes(vm, p, page, hash);
                var (homeVm, homePage) = waiting[0];
                _homeOf[record.ContentId] = (homeVm, homePage, hash);
                _homeContent[(homeVm, homePage)] = record.ContentId;
            }
            else
            {
                _contentSlot[record.ContentId] = _contents.Append(page);
                _contentHashes.Add(hash);
            }
        }
        Counts(batch.Round).Contents += batch.Records.Count;
        Interlocked.Add(ref _contentRecords, batch.Records.Count);
        // Relay to the next host of the group after this one, if any.
        ulong later = batch.RecipientMask & ~((2UL << SelfIndex) - 1);
        if (SelfIndex == 63) later = 0;
        return later;
    }

    private void ApplyMaps(MapBatch batch)
    {
        if (batch.TargetIndex != SelfIndex) throw new FrameRejectedException($"page maps for host {batch.TargetIndex} arrived at host {SelfIndex}");
        CheckRound(batch.Round);
        foreach (var map in batch.Maps)
        {
            if (!_vms.TryGetValue(map.VmIndex, out var vm)) throw new FrameRejectedException($"VM {map.VmIndex} is not received by this host");
            if (map.PageIndex >= vm.Memory.PageCount) throw new FrameRejectedException($"page {map.PageIndex} outside VM {map.VmIndex}'s {vm.Memory.PageCount} pages");
            if (map.ContentId == 0) WriteBytes(map.VmIndex, map.PageIndex, ZeroPage, ContentHash.OfZeroPage);
            else if (Holds(map.ContentId)) Write(map.VmIndex, map.PageIndex, map.ContentId);
            else
            {
                if (!_pending.TryGetValue(map.ContentId, out var list)) _pending[map.ContentId] = list = new();
                list.Add((map.VmIndex, map.PageIndex));
            }
        }
        Counts(batch.Round).Maps += batch.Maps.Count;
    }

    private bool Holds(long contentId) => _contentSlot.ContainsKey(contentId) || _homeOf.ContainsKey(contentId);

    /// <summary>Writes a content already held here (in the store or in its home page) to a page.</summary>
    private void Write(int vm, int page, long contentId)
    {
        if (_homeOf.TryGetValue(contentId, out var home))
        {
            if ((home.Vm, home.Page) == (vm, page)) return; // already there
            _vms[home.Vm].Memory.ReadPage(home.Page, _homeBytes);
            WriteBytes(vm, page, _homeBytes, home.Hash);
            return;
        }
        int slot = _contentSlot[contentId];
        WriteBytes(vm, page, _contents.Get(slot), _contentHashes[slot]);
    }

    private void WriteBytes(int vm, int page, ReadOnlySpan<byte> bytes, ContentHash hash)
    {
        if (_homeContent.Remove((vm, page), out long displaced)) Evict(displaced);
        _vms[vm].Memory.WritePage(page, bytes);
        _pageHashes[vm][page] = hash;
    }

    /// <summary>A content whose home page is about to be overwritten moves into the store.</summary>
    private void Evict(long contentId)
    {
        var (vm, page, hash) = _homeOf[contentId];
        _homeOf.Remove(contentId);
        _vms[vm].Memory.ReadPage(page, _evicted);
        _contentSlot[contentId] = _contents.Append(_evicted);
        _contentHashes.Add(hash);
    }

    /// <summary>The bytes of a content held here (store or home page); valid until the next write.</summary>
    private ReadOnlySpan<byte> BytesOf(long contentId)
    {
        if (_contentSlot.TryGetValue(contentId, out int slot)) return _contents.Get(slot);
        var (vm, page, _) = _homeOf[contentId];
        _vms[vm].Memory.ReadPage(page, _homeBytes);
        return _homeBytes;
    }

    private void ApplyRoundEnd(RoundEnd end)
    {
        if (end.TargetIndex != SelfIndex) throw new FrameRejectedException($"round end for host {end.TargetIndex} arrived at host {SelfIndex}");
        CheckRound(end.Round);
        var c = Counts(end.Round);
        if (c.End is not null) throw new FrameRejectedException($"round {end.Round} ended twice");
        c.End = end;
    }

    /// <summary>
    /// The source will not send these contents this round (the pages that needed them were rewritten before their
    /// turn): their pages stop waiting and keep what they hold until the next round, which carries them again.
    /// </summary>
    private void ApplyWithdrawn(ContentsWithdrawn withdrawn)
    {
        if (withdrawn.TargetIndex != SelfIndex) throw new FrameRejectedException($"withdrawn contents for host {withdrawn.TargetIndex} arrived at host {SelfIndex}");
        CheckRound(withdrawn.Round);
        if (Counts(withdrawn.Round).End is not null) throw new FrameRejectedException($"contents withdrawn after round {withdrawn.Round} ended");
        foreach (long id in withdrawn.ContentIds)
            if (!_pending.Remove(id)) throw new FrameRejectedException($"content {id} withdrawn but no page here awaits it");
        Interlocked.Add(ref _contentsWithdrawn, withdrawn.ContentIds.Count);
    }

    private void ApplyDeviceState(DeviceStateChunk chunk)
    {
        if (!_vms.ContainsKey(chunk.VmIndex)) throw new FrameRejectedException($"device state for VM {chunk.VmIndex}, which this host does not receive");
        if (!_deviceState.TryGetValue(chunk.VmIndex, out var state))
        {
            _deviceState[chunk.VmIndex] = state = new byte[chunk.TotalLength];
            _deviceStateReceived[chunk.VmIndex] = 0;
        }
        if (state.Length != chunk.TotalLength) throw new FrameRejectedException("device state size changed between chunks");
        chunk.Bytes.Span.CopyTo(state.AsSpan(chunk.Offset));
        _deviceStateReceived[chunk.VmIndex] += chunk.Bytes.Length;
        if (_deviceStateReceived[chunk.VmIndex] > state.Length) throw new FrameRejectedException("device state chunks overlap");
    }

    private void CheckRound(int round)
    {
        // Rounds are applied in order; the source starts round r+1 only after every host applied round r.
        if (round != _nextRound) throw new FrameRejectedException($"frame for round {round} while round {_nextRound} is open");
    }

    private void CheckRoundComplete()
    {
        if (!_rounds.TryGetValue(_nextRound, out var c) || c.End is not { } end) return;
        if (c.Contents > end.ExpectedContents || c.Maps > end.ExpectedMaps) throw new FrameRejectedException($"round {end.Round} got more records than announced");
        if (c.Contents < end.ExpectedContents || c.Maps < end.ExpectedMaps || _pending.Count > 0) return;
        if (end.Final && _vms.Keys.Any(v => !_deviceState.TryGetValue(v, out var s) || _deviceStateReceived[v] != s.Length)) return;
        _rounds.Remove(_nextRound);
        _nextRound++;
        _outcomes.Writer.TryWrite(new RoundOutcome(end.Round, end.Final, null));
    }

    private RoundCounts Counts(int round) => _rounds.TryGetValue(round, out var c) ? c : _rounds[round] = new RoundCounts();

    /// <summary>
    /// Hands a frame to the relay towards the next host of its group. Relaying is its own stage (a bounded queue and a
    /// writer per peer): the receive loop goes on reading while the frame crosses this host's egress link, so a hop
    /// runs at the slower of its in- and out-link rather than at their sum. A full queue pushes back on the sender.
    /// </summary>
    private async Task RelayAsync(ulong laterMask, ReadOnlyMemory<byte> frame)
    {
        int next = BitOperations.TrailingZeroCount(laterMask);
        Relay relay;
        lock (_relays)
            if (!_relays.TryGetValue(next, out relay!))
                _relays[next] = relay = new Relay(this, next);
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(frame.Length);
        frame.CopyTo(copy);
        try { await relay.Queue.Writer.WriteAsync((copy, frame.Length)).ConfigureAwait(false); }
        catch (ChannelClosedException)
        {
            // The relay failed (and failed the migration); nothing more goes that way.
            System.Buffers.ArrayPool<byte>.Shared.Return(copy);
        }
    }

    private sealed class Relay
    {
        private const int QueuedFrames = 32;
        private readonly MigrationReceiver _owner;
        private readonly int _peer;
        private readonly TcpClient _client = new() { NoDelay = true };
        private readonly Task _writer;

        public Relay(MigrationReceiver owner, int peer)
        {
            _owner = owner;
            _peer = peer;
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
                _owner.Fail($"relay to host {_peer} at {_owner._peers[_peer]} failed: {e.Message}");
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
