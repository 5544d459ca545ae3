using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using VMScatter.DataPlane.Multicast;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.DataPlane.Source;

/// <summary>
/// The source host's side of the data plane: one connection per target host, frames built from the round's
/// groups. With the relay chain each group's content goes out once, to the group's first host.
/// Two stages: one builds frames (reads, compresses, seals with AES-GCM), the other hands them to the paced link and the sockets,
/// so building the next frames goes on while the link is busy with the last ones.
/// Counters are read by the control plane for progress and the report.
/// A target whose connection fails (connect, a write error, or a write with no progress for
/// <see cref="DataPlaneOptions.WriteTimeout"/>) is not the round's failure: it is listed in <see cref="Failures"/>, gets
/// nothing more, and the round goes on to the others; so does a target the control plane dropped (<see cref="DropTarget"/>).
/// Content for a group goes only to its hosts still reachable, so a relay chain skips a lost host.
/// Every frame is sealed under its addressee's own key (<see cref="DataPlaneKeys.ForTarget"/>), a relay chain's content
/// batch under its first host's: no target holds a key that opens frames for another.
/// With <see cref="GroupTransport.Multicast"/> the content batches go once on one of the migration's reliable multicast
/// channels instead (DataPlaneSender.Channels.cs).
/// </summary>
public sealed partial class DataPlaneSender : IAsyncDisposable
{
    private readonly Guid _migrationId;
    // The migration's master secret: each target's frames are sealed under that target's key, derived from it.
    private readonly byte[] _master;
    private readonly byte[]?[] _targetKeys = new byte[]?[TargetMask.MaxTargets];
    // Room for every target a migration may ever have: targets are added (VMs re-placed on a host it did not use yet)
    // while the writer reads these, so they never move.
    private readonly IPEndPoint?[] _targets = new IPEndPoint?[TargetMask.MaxTargets];
    private int _targetCount;
    private readonly DataPlaneOptions _options;
    private readonly NetworkStream?[] _streams = new NetworkStream?[TargetMask.MaxTargets];
    private readonly TcpClient?[] _clients = new TcpClient?[TargetMask.MaxTargets];
    /// <summary>Frames built but not yet handed to the link: enough to cover a late wake-up, little memory (≤ 1 MiB).</summary>
    private const int QueuedFrames = 4;
    private Channel<OutgoingFrame>? _outgoing;
    private CancellationToken _producing;
    // Rounds go out one at a time, so one payload buffer serves every group (not a large-object allocation per group).
    private readonly byte[] _payload;
    private readonly LinkPacer _egress;
    private long _sequence;
    // Targets that get nothing more: dropped by the control plane, or whose connection failed (reason in _failures).
    private long _skipped;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, string> _failures = new();
    private long _bytesSent, _framesSent, _contentRecords, _contentRawBytes, _contentEncodedBytes, _mapRecords, _contentsWithdrawn;
    private readonly long[] _pagesByEncoding = new long[Enum.GetValues<PageEncoding>().Length];
    private GroupTransport _transportUsed;

    /// <param name="masterSecret">The migration's master secret (<see cref="DataPlaneKeys"/>); targets get only keys derived from it.</param>
    public DataPlaneSender(Guid migrationId, byte[] masterSecret, IReadOnlyList<IPEndPoint> targets, DataPlaneOptions options)
    {
        if (targets.Count is 0 or > TargetMask.MaxTargets) throw new ArgumentException($"a migration has 1..{TargetMask.MaxTargets} target hosts", nameof(targets));
        if (masterSecret.Length != FrameCodec.KeySize) throw new ArgumentException($"the master secret must be {FrameCodec.KeySize} bytes", nameof(masterSecret));
        _migrationId = migrationId;
        _master = masterSecret;
        AddTargets(targets);
        _options = options;
        _payload = new byte[options.MaxPayloadBytes];
        _egress = new LinkPacer(options.LinkBitsPerSecond, options.LinkQueueBytes);
        _transportUsed = options.Transport;
    }

    /// <summary>Data-plane bytes the source put on its link: TCP frames and, with multicast, the channel's datagrams (repairs and round ends included).</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent) + ChannelBytes;

    /// <summary>The transport content actually goes by: <see cref="DataPlaneOptions.Transport"/>, or the relay chain when the multicast channel could not be set up.</summary>
    public GroupTransport TransportUsed => _transportUsed;

    /// <summary>Why multicast was asked for and not used (channel 0 could not be set up), or by some targets only; null if it was used by all.</summary>
    public string? TransportFallback => _fallbacks.IsEmpty ? null : string.Join("; ", _fallbacks);

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _fallbacks = new();

    public long FramesSent => Interlocked.Read(ref _framesSent);
    public long ContentRecordsSent => Interlocked.Read(ref _contentRecords);
    public long ContentRawBytes => Interlocked.Read(ref _contentRawBytes);
    public long ContentEncodedBytes => Interlocked.Read(ref _contentEncodedBytes);

    /// <summary>Content records sent in <paramref name="encoding"/> (raw: a page that did not shrink).</summary>
    public long PagesEncoded(PageEncoding encoding) => Interlocked.Read(ref _pagesByEncoding[(int)encoding]);
    public long MapRecordsSent => Interlocked.Read(ref _mapRecords);

    /// <summary>Contents taken out of pre-copy rounds because their pages were rewritten before their turn.</summary>
    public long ContentsWithdrawn => Interlocked.Read(ref _contentsWithdrawn);

    /// <summary>Targets that get nothing more (dropped, or their connection failed), as a mask.</summary>
    public ulong Skipped => (ulong)Interlocked.Read(ref _skipped);

    /// <summary>Targets whose connection failed, with why; the control plane decides what that means for the migration.</summary>
    public IReadOnlyDictionary<int, string> Failures => _failures;

    /// <summary>The control plane gave the target up: nothing more goes to it, and a write blocked on it ends now.</summary>
    public void DropTarget(int target)
    {
        Skip(target);
        LeaveChannel(1UL << target);
        _clients[target]?.Dispose();
    }

    private void Skip(int target)
    {
        long bit = (long)(1UL << target), seen;
        do seen = Interlocked.Read(ref _skipped);
        while ((seen & bit) == 0 && Interlocked.CompareExchange(ref _skipped, seen | bit, seen) != seen);
    }

    private bool IsSkipped(int target) => (Skipped >> target & 1) != 0;

    private void TargetFailed(int target, string reason)
    {
        if (IsSkipped(target)) return;
        _failures.TryAdd(target, reason);
        Skip(target);
        LeaveChannel(1UL << target);
        _clients[target]?.Dispose();
    }

    public int TargetCount => Volatile.Read(ref _targetCount);

    /// <summary>More targets, after the others (<see cref="ConnectAsync(CancellationToken)"/> connects them).</summary>
    public void AddTargets(IEnumerable<IPEndPoint> endpoints)
    {
        foreach (var e in endpoints)
        {
            if (_targetCount == TargetMask.MaxTargets) throw new ArgumentException($"a migration has at most {TargetMask.MaxTargets} target hosts");
            _targets[_targetCount] = e;
            _targetKeys[_targetCount] = DataPlaneKeys.ForTarget(_master, _migrationId, _targetCount);
            Volatile.Write(ref _targetCount, _targetCount + 1);
        }
    }

    /// <summary>Connects to every target not connected yet nor skipped; one that cannot be reached is listed in <see cref="Failures"/>, not thrown.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        await Task.WhenAll(Enumerable.Range(0, TargetCount).Where(t => !IsSkipped(t) && _clients[t] is null).Select(t => ConnectAsync(t, cancellationToken))).ConfigureAwait(false);
        if (_options.Transport == GroupTransport.Multicast) await OpenFirstChannelAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task ConnectAsync(int t, CancellationToken cancellationToken)
    {
        var client = _options.Place.Create(() => new TcpClient { NoDelay = true });
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.ConnectTimeout);
        try
        {
            await client.ConnectAsync(_targets[t]!, timeout.Token).ConfigureAwait(false);
            _clients[t] = client;
            _streams[t] = client.GetStream();
            await WriteDirectAsync(t, FrameType.Hello, [], timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            client.Dispose();
            TargetFailed(t, $"cannot reach the data plane of target {t} at {_targets[t]}: {e.Message}");
        }
    }

    public async Task SendRoundAsync(RoundTransfer round, IContentReader contents, CancellationToken cancellationToken)
    {
        using var writerFailed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _outgoing = Channel.CreateBounded<OutgoingFrame>(new BoundedChannelOptions(QueuedFrames) { SingleReader = true, SingleWriter = true });
        _producing = writerFailed.Token;
        var writer = Task.Run(() => WriteFramesAsync(_outgoing.Reader, writerFailed, cancellationToken), CancellationToken.None);
        try { await BuildRoundAsync(round, contents).ConfigureAwait(false); }
        catch (OperationCanceledException) when (writerFailed.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // The writer failed: its error is the one to report (awaited below).
        }
        finally { _outgoing.Writer.TryComplete(); }
        await writer.ConfigureAwait(false);
        for (int t = 0; t < TargetCount; t++)
        {
            if (IsSkipped(t) || _streams[t] is null) continue;
            try { await _streams[t]!.FlushAsync(cancellationToken).ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException && !cancellationToken.IsCancellationRequested) { TargetFailed(t, $"flush: {e.Message}"); }
        }
        await _egress.DrainAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The writer stage: each frame waits for room on the link, then goes to its host's socket.</summary>
    private async Task WriteFramesAsync(ChannelReader<OutgoingFrame> frames, CancellationTokenSource failed, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var frame in frames.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    if (IsSkipped(frame.Target)) continue;
                    var stream = _streams[frame.Target] ?? throw new InvalidOperationException("not connected");
                    await _egress.AcquireAsync(frame.Length, cancellationToken).ConfigureAwait(false);
                    using (var stalled = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
                    {
                        stalled.CancelAfter(_options.WriteTimeout);
                        try { await stream.WriteAsync(frame.Buffer.AsMemory(0, frame.Length), stalled.Token).ConfigureAwait(false); }
                        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
                        {
                            TargetFailed(frame.Target, e is OperationCanceledException
                                ? $"target {frame.Target} at {_targets[frame.Target]} took no data for {_options.WriteTimeout.TotalSeconds:0.#} s"
                                : $"writing to target {frame.Target} at {_targets[frame.Target]}: {e.Message}");
                            continue;
                        }
                    }
                    Interlocked.Add(ref _bytesSent, frame.Length);
                    Interlocked.Increment(ref _framesSent);
                    _options.Metrics?.FrameSent(frame.Length);
                    Interlocked.Add(ref _contentRecords, frame.ContentRecords);
                    Interlocked.Add(ref _mapRecords, frame.MapRecords);
                }
                finally { ArrayPool<byte>.Shared.Return(frame.Buffer); }
            }
        }
        catch
        {
            failed.Cancel(); // unblocks the builder waiting for room
            while (frames.TryRead(out var left)) ArrayPool<byte>.Shared.Return(left.Buffer);
            throw;
        }
    }

    private async Task BuildRoundAsync(RoundTransfer round, IContentReader contents)
    {
        var cancellationToken = _producing;
        // The targets when the round was planned (more may be added while it goes out; they are in the next one).
        int targets = round.MapsByTarget.Count;
        // Page maps first: a receiver that knows a content's pages when it arrives writes them directly and keeps
        // the content in the first of them, instead of storing every content and copying it out afterwards.
        for (int t = 0; t < targets; t++)
            if (!IsSkipped(t)) await SendMapsAsync(round.Round, t, round.MapsByTarget[t], cancellationToken).ConfigureAwait(false);
        await BeginChannelRoundAsync(round, cancellationToken).ConfigureAwait(false);
        var expected = new int[targets];
        var withdrawn = new List<long>[targets];
        for (int t = 0; t < withdrawn.Length; t++) withdrawn[t] = new();
        foreach (var group in round.Groups)
        {
            ValidateMask(group.TargetMask);
            // Only to the group's hosts still reachable (a relay chain then skips a lost host).
            var reachable = group with { TargetMask = group.TargetMask & ~Skipped };
            if (reachable.TargetMask == 0) continue;
            int sent = await SendGroupAsync(round.Round, round.Final, reachable, contents, withdrawn, cancellationToken).ConfigureAwait(false);
            foreach (int t in Targets(reachable.TargetMask)) expected[t] += sent;
        }
        // The round's ends go only once every member holds every content batch the channels carried (a member dropped
        // meanwhile is a failed target, skipped below).
        await EndChannelRoundAsync(round.Round, cancellationToken).ConfigureAwait(false);
        for (int t = 0; t < targets; t++)
            if (!IsSkipped(t)) await SendWithdrawnAsync(round.Round, t, withdrawn[t], cancellationToken).ConfigureAwait(false);
        foreach (var device in round.DeviceStates)
            if (!IsSkipped(device.TargetIndex)) await SendDeviceStateAsync(device, cancellationToken).ConfigureAwait(false);
        for (int t = 0; t < targets; t++)
        {
            if ((round.ActiveTargets >> t & 1) == 0 || IsSkipped(t)) continue;
            bool final = round.Final && (round.FinalTargets >> t & 1) != 0;
            int[] deviceStates = final ? [.. round.DeviceStates.Where(d => d.TargetIndex == t).Select(d => d.VmIndex).Order()] : [];
            var end = Records.WriteRoundEnd(new RoundEnd(round.Round, t, expected[t], round.MapsByTarget[t].Count, final, deviceStates));
            await SendFrameAsync(t, FrameType.RoundEnd, end, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Sends a group's contents; returns how many went (the others were withdrawn, and are listed per host).</summary>
    private async Task<int> SendGroupAsync(int round, bool final, GroupTransfer group, IContentReader contents, List<long>[] withdrawn, CancellationToken cancellationToken)
    {
        // Records are encoded once per group; fan-out re-frames them per host with a single-host mask.
        var payload = _payload;
        var encoded = new byte[PageCodec.MaxEncodedSize];
        var page = new byte[Page.Size];
        int at = Records.ContentBatchHeader, count = 0, sent = 0;
        var mode = BatchCompression();
        // A relay chain's batch ends in the source's tags for the hosts after the first.
        // A channel message holds the sequence and a tag for every member.
        int room = _transportUsed switch
        {
            GroupTransport.RelayChain => payload.Length - Records.SourceTagsSize(group.TargetMask),
            GroupTransport.Multicast when BitOperations.PopCount(group.TargetMask & ChannelMembers) > 1 => Math.Min(payload.Length, _options.Multicast.MaxMessageBytes - Records.ChannelContentHeader) - Records.ChannelTagsSize(group.TargetMask),
            _ => payload.Length,
        };
        foreach (long id in group.ContentIds)
        {
            // A paused guest writes nothing: the final round sends all it announced. Before that, a content goes out
            // unless the pages it was going for were rewritten before its turn (they go next round).
            ContentHash hash = default;
            bool withdraw = !final && contents.TryWithdraw(id, group.TargetMask);
            if (!withdraw && !contents.TryRead(id, group.TargetMask, page, out hash))
            {
                if (final) throw new InvalidOperationException($"content {id} of the stop-and-copy round is held by no page of the paused guests");
                withdraw = true;
            }
            if (withdraw)
            {
                foreach (int t in Targets(group.TargetMask)) withdrawn[t].Add(id);
                Interlocked.Increment(ref _contentsWithdrawn);
                continue;
            }
            sent++;
            var (encoding, length) = PageCodec.Encode(page, encoded, mode);
            if (at + Records.ContentRecordHeader + length > room)
            {
                await SendContentPayloadAsync(round, group.TargetMask, payload, at, count, cancellationToken).ConfigureAwait(false);
                at = Records.ContentBatchHeader;
                count = 0;
                mode = BatchCompression();
            }
            at += Records.WriteContentRecord(payload.AsSpan(at), id, hash, encoding, encoded.AsSpan(0, length));
            count++;
            Interlocked.Add(ref _contentRawBytes, Page.Size);
            Interlocked.Add(ref _contentEncodedBytes, length);
            Interlocked.Increment(ref _pagesByEncoding[(int)encoding]);
        }
        if (count > 0) await SendContentPayloadAsync(round, group.TargetMask, payload, at, count, cancellationToken).ConfigureAwait(false);
        return sent;
    }

    /// <summary>The codec of the next batch: the configured one, or by the adaptive policy from the frames waiting for the link (none on a multicast channel, which paces itself: LZ4 there).</summary>
    private CompressionMode BatchCompression() =>
        _options.Compression == CompressionMode.Adaptive ? AdaptiveCompression.Choose(_outgoing?.Reader.Count ?? 0) : _options.Compression;

    private async Task SendWithdrawnAsync(int round, int target, List<long> ids, CancellationToken cancellationToken)
    {
        int perFrame = (_options.MaxPayloadBytes - Records.WithdrawnHeader) / Records.WithdrawnRecordSize;
        for (int start = 0; start < ids.Count; start += perFrame)
        {
            var payload = Records.WithdrawnPayload(round, target, CollectionsMarshal.AsSpan(ids).Slice(start, Math.Min(perFrame, ids.Count - start)));
            await SendFrameAsync(target, FrameType.ContentsWithdrawn, payload, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task SendContentPayloadAsync(int round, ulong mask, byte[] payload, int length, int count, CancellationToken cancellationToken)
    {
        if (_transportUsed == GroupTransport.Multicast)
            // Once on a channel to its members with a tag each; by TCP to any host of the group that is not on one.
            mask &= ~await SendOnChannelAsync(round, mask, payload, length, count, cancellationToken).ConfigureAwait(false);
        else if (_transportUsed == GroupTransport.RelayChain)
        {
            Records.WriteContentBatchHeader(payload, round, mask, count);
            // The hosts after the first get it relayed: each checks the source's tag under its own key.
            ulong sequence = NextSequence();
            int tagged = length + WriteSourceTags(Targets(mask).Skip(1), sequence, payload.AsSpan(0, length), payload.AsSpan(length));
            await SendFrameAsync(BitOperations.TrailingZeroCount(mask), FrameType.ContentBatch, payload.AsMemory(0, tagged), cancellationToken, contentRecords: count, sequence: sequence).ConfigureAwait(false);
            return;
        }
        foreach (int t in Targets(mask))
        {
            Records.WriteContentBatchHeader(payload, round, 1UL << t, count);
            await SendFrameAsync(t, FrameType.ContentBatch, payload.AsMemory(0, length), cancellationToken, contentRecords: count).ConfigureAwait(false);
        }
    }

    private async Task SendMapsAsync(int round, int target, IReadOnlyList<PageMap> maps, CancellationToken cancellationToken)
    {
        var payload = new byte[Math.Min(_options.MaxPayloadBytes, Records.MapBatchHeader + Math.Max(1, maps.Count) * Records.MaxMapRecordSize)];
        for (int start = 0; start < maps.Count;)
        {
            // Records are variable-sized: fill the frame while the largest record still fits, then write the count.
            int at = Records.MapBatchHeader, n = 0, previousPage = 0;
            while (start + n < maps.Count && at + Records.MaxMapRecordSize <= payload.Length)
                at += Records.WriteMap(payload.AsSpan(at), maps[start + n++], ref previousPage);
            Records.WriteMapBatchHeader(payload, round, target, n);
            await SendFrameAsync(target, FrameType.MapBatch, payload.AsMemory(0, at), cancellationToken, mapRecords: n).ConfigureAwait(false);
            start += n;
        }
    }

    private async Task SendDeviceStateAsync(DeviceStateTransfer device, CancellationToken cancellationToken)
    {
        int chunk = _options.MaxPayloadBytes - Records.DeviceStateHeader;
        var payload = new byte[Math.Min(_options.MaxPayloadBytes, Records.DeviceStateHeader + device.State.Length)];
        for (int offset = 0; offset < device.State.Length; offset += chunk)
        {
            int n = Math.Min(chunk, device.State.Length - offset);
            int at = Records.WriteDeviceStateHeader(payload, device.VmIndex, device.State.Length, offset);
            device.State.AsSpan(offset, n).CopyTo(payload.AsSpan(at));
            await SendFrameAsync(device.TargetIndex, FrameType.DeviceState, payload.AsMemory(0, at + n), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Builds a frame (the payload may be reused as soon as this returns) and queues it for the writer.</summary>
    private ulong NextSequence() => (ulong)Interlocked.Increment(ref _sequence);

    /// <summary>The source's tag over <paramref name="signed"/> for each of <paramref name="hosts"/>, under that host's own key, one after another into <paramref name="tags"/>; how many bytes they take.</summary>
    private int WriteSourceTags(IEnumerable<int> hosts, ulong sequence, ReadOnlySpan<byte> signed, Span<byte> tags)
    {
        int at = 0;
        foreach (int t in hosts)
        {
            FrameCodec.SourceTag(_targetKeys[t], sequence, signed, tags.Slice(at, Records.SourceTagSize));
            at += Records.SourceTagSize;
        }
        return at;
    }

    /// <summary>A frame written straight to a target's connection, outside a round's paced pipeline (hello, channel open), and counted.</summary>
    private async Task WriteDirectAsync(int t, FrameType type, byte[] payload, CancellationToken cancellationToken)
    {
        var frame = new byte[FrameHeader.Size + payload.Length];
        int length = FrameCodec.Encode(type, _migrationId, NextSequence(), payload, _targetKeys[t], frame);
        await _streams[t]!.WriteAsync(frame.AsMemory(0, length), cancellationToken).ConfigureAwait(false);
        Interlocked.Add(ref _bytesSent, length);
        Interlocked.Increment(ref _framesSent);
        _options.Metrics?.FrameSent(length);
    }

    private async Task SendFrameAsync(int target, FrameType type, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken, int contentRecords = 0, int mapRecords = 0, ulong sequence = 0)
    {
        if (IsSkipped(target)) return;
        if (_streams[target] is null) throw new InvalidOperationException("not connected");
        var buffer = ArrayPool<byte>.Shared.Rent(FrameHeader.Size + payload.Length);
        int length = FrameCodec.Encode(type, _migrationId, sequence != 0 ? sequence : NextSequence(), payload.Span, _targetKeys[target], buffer);
        try { await _outgoing!.Writer.WriteAsync(new OutgoingFrame(target, buffer, length, contentRecords, mapRecords), cancellationToken).ConfigureAwait(false); }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    private readonly record struct OutgoingFrame(int Target, byte[] Buffer, int Length, int ContentRecords, int MapRecords);

    private void ValidateMask(ulong mask)
    {
        if (mask == 0 || !TargetMask.Within(mask, TargetCount)) throw new ArgumentException($"target mask {mask:x} names hosts outside 0..{TargetCount - 1}");
    }

    public static IEnumerable<int> Targets(ulong mask)
    {
        while (mask != 0)
        {
            yield return BitOperations.TrailingZeroCount(mask);
            mask &= mask - 1;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var c in _clients) c?.Dispose();
        await DisposeChannelsAsync().ConfigureAwait(false);
    }
}
