using System.Net;
using System.Net.Sockets;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>The data plane over real loopback sockets: what crosses, how often, and what a receiver refuses.</summary>
public partial class DataPlaneTests
{
    private static readonly byte[] Key = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();

    private static byte[] PageOf(int marker)
    {
        var p = new byte[Page.Size];
        new Random(marker).NextBytes(p);
        return p;
    }

    /// <summary>Contents by id, as a source's dedup shards would hold them.</summary>
    private sealed class Contents : IContentReader
    {
        public Dictionary<long, byte[]> Pages { get; } = new();
        public bool TryRead(long contentId, ulong targetMask, Span<byte> page, out ContentHash hash)
        {
            Pages[contentId].CopyTo(page);
            hash = ContentHash.Compute(Pages[contentId]);
            return true;
        }
    }

    private sealed class Harness : IAsyncDisposable
    {
        public Harness(int targets, int[] vmTarget, int pagesPerVm, GroupTransport transport, TimeSpan? handshakeTimeout = null, Func<DataPlaneOptions, DataPlaneOptions>? adjust = null)
        {
            Options = new DataPlaneOptions { Transport = transport, Compression = CompressionMode.None, HandshakeTimeout = handshakeTimeout ?? TimeSpan.FromSeconds(10) };
            if (adjust is not null) Options = adjust(Options);
            Listeners = Enumerable.Range(0, targets).Select(_ => new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), Options)).ToArray();
            var endpoints = Listeners.Select(l => l.LocalEndPoint).ToArray();
            Receivers = Enumerable.Range(0, targets).Select(t => new MigrationReceiver(MigrationId, DataPlaneKeys.ForReceiver(Key, MigrationId, t, targets), t, endpoints,
                Enumerable.Range(0, vmTarget.Length).Where(v => vmTarget[v] == t)
                    .Select(v => new ReceiverVm(v, new VmDescription(new VmId($"vm-{v}"), (long)pagesPerVm * Page.Size, 1, "test", ""), new NativeGuestMemory(pagesPerVm))).ToArray(),
                Options)).ToArray();
            for (int t = 0; t < targets; t++) Listeners[t].Register(Receivers[t]);
            Sender = new DataPlaneSender(MigrationId, Key, endpoints, Options);
        }

        public Guid MigrationId { get; } = Guid.NewGuid();
        public DataPlaneOptions Options { get; }
        public DataPlaneListener[] Listeners { get; }
        public MigrationReceiver[] Receivers { get; }
        public DataPlaneSender Sender { get; }

        public async Task<RoundOutcome[]> RoundAsync(RoundTransfer round, IContentReader contents)
        {
            await Sender.SendRoundAsync(round, contents, CancellationToken.None);
            var outcomes = new RoundOutcome[Receivers.Length];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            for (int t = 0; t < Receivers.Length; t++) outcomes[t] = await Receivers[t].Outcomes.ReadAsync(timeout.Token);
            return outcomes;
        }

        public async ValueTask DisposeAsync()
        {
            await Sender.DisposeAsync();
            foreach (var r in Receivers) await r.DisposeAsync();
            foreach (var l in Listeners) await l.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_connected_source_is_a_peer_past_the_handshake_timeout_however_long_until_its_first_round()
    {
        var contents = new Contents { Pages = { [1] = PageOf(1) } };
        await using var h = new Harness(targets: 1, vmTarget: [0], pagesPerVm: 1, GroupTransport.RelayChain, handshakeTimeout: TimeSpan.FromSeconds(1));
        await h.Sender.ConnectAsync(CancellationToken.None);
        // Nothing for this target for 2.5 handshake timeouts (a long round 0 elsewhere): its Hello made it a peer.
        // (A second, not less: under a loaded test run the sender's continuation after connecting can be late.)
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        var outcomes = await h.RoundAsync(new RoundTransfer(0, Final: false, [new GroupTransfer(0b1, [1])], [[new PageMap(0, 0, 1)]], []), contents);
        Assert.Null(outcomes[0].Error);
        Assert.Equal(0, h.Listeners[0].HandshakesTimedOut);
        Assert.Equal(1, h.Receivers[0].ContentRecordsReceived);
    }

    private static readonly int ContentFrame = FrameHeader.Size + Records.ContentBatchHeader + Records.ContentRecordSize(1, Page.Size);
    private static int TwoMapFrame(PageMap a, PageMap b) => FrameHeader.Size + Records.MapBatchPayload(0, 0, [a, b]).Length;
    private const int RoundEndFrame = FrameHeader.Size + Records.RoundEndSize;
    // Every connection opens with an authenticated, empty Hello frame.
    private const int HelloFrame = FrameHeader.Size;

    [Theory]
    [InlineData(GroupTransport.RelayChain, 3)]
    [InlineData(GroupTransport.FanOut, 4)]
    public async Task A_page_shared_by_vms_of_one_target_group_leaves_the_source_once(GroupTransport transport, int contentRecords)
    {
        // In a relay chain the shared page's frame ends in the source's tag for the second host.
        int contentBytes = contentRecords * ContentFrame + (transport == GroupTransport.RelayChain ? Records.SourceTagSize : 0);
        // vm0 → target 0 and vm1 → target 1 both hold content 1; each has one page of its own.
        var contents = new Contents { Pages = { [1] = PageOf(1), [2] = PageOf(2), [3] = PageOf(3) } };
        await using var h = new Harness(targets: 2, vmTarget: [0, 1], pagesPerVm: 3, transport);
        await h.Sender.ConnectAsync(CancellationToken.None);
        var round = new RoundTransfer(0, Final: false,
            [new GroupTransfer(0b11, [1]), new GroupTransfer(0b01, [2]), new GroupTransfer(0b10, [3])],
            [[new PageMap(0, 0, 1), new PageMap(0, 1, 2)], [new PageMap(1, 2, 1), new PageMap(1, 0, 3)]], []);
        var outcomes = await h.RoundAsync(round, contents);

        Assert.All(outcomes, o => Assert.Null(o.Error));
        Assert.Equal(contentRecords, h.Sender.ContentRecordsSent);
        Assert.Equal(contentBytes + TwoMapFrame(new(0, 0, 1), new(0, 1, 2)) + TwoMapFrame(new(1, 2, 1), new(1, 0, 3)) + 2 * RoundEndFrame + 2 * HelloFrame, h.Sender.BytesSent);
        // Each target received the shared page exactly once, whichever way it came.
        Assert.Equal([2L, 2L], h.Receivers.Select(r => r.ContentRecordsReceived));
        Assert.Equal(transport == GroupTransport.RelayChain ? ContentFrame + Records.SourceTagSize : 0, h.Receivers[0].BytesRelayed);
        Assert.Equal(h.Sender.BytesSent + h.Receivers[0].BytesRelayed, h.Receivers.Sum(r => r.BytesReceived));

        // The rebuilt memories are byte-identical to what the VMs hold.
        using var expected0 = new NativeGuestMemory(3);
        expected0.WritePage(0, contents.Pages[1]);
        expected0.WritePage(1, contents.Pages[2]);
        using var expected1 = new NativeGuestMemory(3);
        expected1.WritePage(2, contents.Pages[1]);
        expected1.WritePage(0, contents.Pages[3]);
        Assert.Equal(MemoryDigest.Compute(expected0, []), DigestOf(h, 0, 0));
        Assert.Equal(MemoryDigest.Compute(expected1, []), DigestOf(h, 1, 1));
        // The targets' handover digest, built from the hash of each page as it was written, agrees with hashing all memory.
        Assert.Equal(MemoryDigest.Compute(expected0, [7]), h.Receivers[0].DigestOf(0, [7]));
        Assert.Equal(MemoryDigest.Compute(expected1, [7]), h.Receivers[1].DigestOf(1, [7]));
    }

    /// <summary>Contents a round withdraws when asked: as a source whose guest rewrote those pages before their turn.</summary>
    private sealed class WithdrawingContents(Contents inner, params long[] rewritten) : IContentReader
    {
        public List<(long Id, ulong Mask)> Withdrawn { get; } = new();
        public bool TryRead(long contentId, ulong targetMask, Span<byte> page, out ContentHash hash) => inner.TryRead(contentId, targetMask, page, out hash);
        public bool TryWithdraw(long contentId, ulong targetMask)
        {
            if (!rewritten.Contains(contentId)) return false;
            Withdrawn.Add((contentId, targetMask));
            return true;
        }
    }

    [Fact]
    public async Task A_content_withdrawn_from_a_round_is_not_sent_its_pages_stop_waiting_and_the_next_round_fills_them()
    {
        var contents = new Contents { Pages = { [1] = PageOf(1), [2] = PageOf(2), [3] = PageOf(3), [4] = PageOf(4) } };
        await using var h = new Harness(targets: 2, vmTarget: [0, 1], pagesPerVm: 3, GroupTransport.RelayChain);
        await h.Sender.ConnectAsync(CancellationToken.None);
        // Content 2 (vm0 page 1) and content 3 (vm1 page 0) were rewritten before their turn.
        var reader = new WithdrawingContents(contents, 2, 3);
        var round0 = new RoundTransfer(0, Final: false,
            [new GroupTransfer(0b11, [1]), new GroupTransfer(0b01, [2]), new GroupTransfer(0b10, [3])],
            [[new PageMap(0, 0, 1), new PageMap(0, 1, 2)], [new PageMap(1, 2, 1), new PageMap(1, 0, 3)]], []);
        var outcomes = await h.RoundAsync(round0, reader);

        Assert.All(outcomes, o => Assert.Null(o.Error));
        Assert.Equal([(2L, 0b01UL), (3L, 0b10UL)], reader.Withdrawn);
        Assert.Equal((2L, 1L), (h.Sender.ContentsWithdrawn, h.Sender.ContentRecordsSent)); // only content 1, relayed by host 0
        Assert.Equal([1L, 1L], h.Receivers.Select(r => r.ContentRecordsReceived));
        Assert.Equal([1L, 1L], h.Receivers.Select(r => r.ContentsWithdrawn));
        using var expected0 = new NativeGuestMemory(3);
        expected0.WritePage(0, contents.Pages[1]); // page 1 keeps what it had (zero) until the next round
        using var expected1 = new NativeGuestMemory(3);
        expected1.WritePage(2, contents.Pages[1]);
        Assert.Equal(MemoryDigest.Compute(expected0, []), DigestOf(h, 0, 0));
        Assert.Equal(MemoryDigest.Compute(expected1, []), DigestOf(h, 1, 1));

        // The next (final) round carries the rewritten pages; nothing is withdrawn from a final round.
        var final = new RoundTransfer(1, Final: true, [new GroupTransfer(0b01, [4]), new GroupTransfer(0b10, [3])],
            [[new PageMap(0, 1, 4)], [new PageMap(1, 0, 3)]], [new DeviceStateTransfer(0, 0, [1]), new DeviceStateTransfer(1, 1, [2])]);
        var reader1 = new WithdrawingContents(contents, 3, 4);
        outcomes = await h.RoundAsync(final, reader1);
        Assert.All(outcomes, o => Assert.Equal((1, true, (string?)null), (o.Round, o.Final, o.Error)));
        Assert.Empty(reader1.Withdrawn);
        expected0.WritePage(1, contents.Pages[4]);
        expected1.WritePage(0, contents.Pages[3]);
        Assert.Equal(MemoryDigest.Compute(expected0, [1]), h.Receivers[0].DigestOf(0, [1]));
        Assert.Equal(MemoryDigest.Compute(expected1, [2]), h.Receivers[1].DigestOf(1, [2]));
        Assert.Equal(MemoryDigest.Compute(expected0, []), DigestOf(h, 0, 0));
    }

    [Fact]
    public async Task A_receiver_refuses_a_withdrawal_of_content_no_page_awaits_or_after_the_round_ended()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(2);
        await using var r = OneVmReceiver(id, memory);
        await Accept(r, Frame(id, 1, FrameType.MapBatch, MapsPayload(0, new PageMap(0, 0, 5), new PageMap(0, 1, 6))));
        await Accept(r, Frame(id, 2, FrameType.ContentsWithdrawn, Records.WithdrawnPayload(0, 0, [6])));
        await Accept(r, Frame(id, 3, FrameType.ContentBatch, ContentPayload(0, 5, PageOf(5))));
        await Accept(r, Frame(id, 4, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 0, 1, 2, false))));
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Equal(new RoundOutcome(0, false, null), outcome);
        Assert.Equal(1, r.ContentsWithdrawn);

        // Round 1: content 7 is awaited; withdrawing 9 (awaited by nothing) is refused and fails the migration here.
        await Accept(r, Frame(id, 5, FrameType.MapBatch, MapsPayload(1, new PageMap(0, 1, 7))));
        var refused = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 6, FrameType.ContentsWithdrawn, Records.WithdrawnPayload(1, 0, [9]))));
        Assert.Contains("no page here awaits it", refused.Message);
        Assert.True(r.Outcomes.TryRead(out var failed));
        Assert.NotNull(failed.Error);

        // After a round's end, a withdrawal is refused too (fresh receiver).
        var id2 = Guid.NewGuid();
        await using var r2 = OneVmReceiver(id2, memory);
        await Accept(r2, Frame(id2, 1, FrameType.MapBatch, MapsPayload(0, new PageMap(0, 0, 5))));
        await Accept(r2, Frame(id2, 2, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 0, 1, 1, false))));
        refused = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r2, Frame(id2, 3, FrameType.ContentsWithdrawn, Records.WithdrawnPayload(0, 0, [5]))));
        Assert.Contains("after round 0 ended", refused.Message);
    }

    private static string DigestOf(Harness h, int target, int vm) => MemoryDigest.Compute(h.Receivers[target].Vms.Single(v => v.VmIndex == vm).Memory, []);

    [Fact]
    public async Task A_relay_chain_of_four_delivers_every_group_to_each_member_once()
    {
        var contents = new Contents();
        for (int i = 1; i <= 40; i++) contents.Pages[i] = PageOf(i);
        await using var h = new Harness(targets: 4, vmTarget: [0, 1, 2, 3], pagesPerVm: 40, GroupTransport.RelayChain);
        await h.Sender.ConnectAsync(CancellationToken.None);
        // Contents 1..10 to all four, 11..20 to {1,3}, 21..40 each to one host.
        var groups = new List<GroupTransfer> { new(0b1111, Enumerable.Range(1, 10).Select(i => (long)i).ToArray()), new(0b1010, Enumerable.Range(11, 10).Select(i => (long)i).ToArray()) };
        for (int t = 0; t < 4; t++) groups.Add(new(1UL << t, Enumerable.Range(21 + t * 5, 5).Select(i => (long)i).ToArray()));
        var maps = new List<PageMap>[4];
        for (int t = 0; t < 4; t++)
        {
            maps[t] = Enumerable.Range(1, 10).Select(c => new PageMap(t, c - 1, c)).ToList();
            if (t is 1 or 3) maps[t].AddRange(Enumerable.Range(11, 10).Select(c => new PageMap(t, c - 1, c)));
            maps[t].AddRange(Enumerable.Range(21 + t * 5, 5).Select(c => new PageMap(t, 30 + (c - 21 - t * 5), c)));
        }
        var outcomes = await h.RoundAsync(new RoundTransfer(0, false, groups, maps, []), contents);
        Assert.All(outcomes, o => Assert.Null(o.Error));
        Assert.Equal(40, h.Sender.ContentRecordsSent); // each distinct content left the source once
        Assert.Equal([15L, 25L, 15L, 25L], h.Receivers.Select(r => r.ContentRecordsReceived));
    }

    [Fact]
    public async Task A_relay_whose_next_host_is_gone_does_not_fail_the_relaying_host_which_applies_its_own_part()
    {
        var contents = new Contents();
        for (int i = 1; i <= 100; i++) contents.Pages[i] = PageOf(i);
        await using var h = new Harness(targets: 2, vmTarget: [0, 1], pagesPerVm: 100, GroupTransport.RelayChain);
        await h.Sender.ConnectAsync(CancellationToken.None);
        await h.Listeners[1].DisposeAsync(); // host 1 goes away after the source connected
        var maps = Enumerable.Range(1, 100).Select(c => new PageMap(0, c - 1, c)).ToList();
        await h.Sender.SendRoundAsync(new RoundTransfer(0, false, [new GroupTransfer(0b11, Enumerable.Range(1, 100).Select(i => (long)i).ToArray())], [maps, []], []), contents, CancellationToken.None);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        // Host 1's loss is the source's to handle (it sees host 1 never apply the round); host 0 applies its part.
        var outcome = await h.Receivers[0].Outcomes.ReadAsync(timeout.Token);
        Assert.Equal(new RoundOutcome(0, false, null), outcome);
        Assert.Equal(100, h.Receivers[0].ContentRecordsReceived);
        while (h.Receivers[0].RelayFailure is null) await Task.Delay(20, timeout.Token); // the relay's connect fails by itself
        Assert.Contains("relay to host 1", h.Receivers[0].RelayFailure);
    }

    [Fact]
    public async Task Frames_with_a_wrong_key_are_rejected_and_the_migration_is_unharmed()
    {
        var contents = new Contents { Pages = { [1] = PageOf(1) } };
        await using var h = new Harness(1, [0], 1, GroupTransport.RelayChain);
        var forged = new byte[FrameHeader.Size + Records.RoundEndSize];
        var wrongKey = (byte[])Key.Clone();
        wrongKey[31] ^= 0xFF;
        FrameCodec.Encode(FrameType.RoundEnd, h.MigrationId, 1, Records.WriteRoundEnd(new RoundEnd(0, 0, 0, 0, true)), wrongKey, forged);
        using (var attacker = new TcpClient())
        {
            await attacker.ConnectAsync(h.Listeners[0].LocalEndPoint);
            await attacker.GetStream().WriteAsync(forged);
            // The listener closes a connection that sent a bad frame: reading sees the end.
            var buffer = new byte[1];
            Assert.Equal(0, await attacker.GetStream().ReadAsync(buffer));
        }
        Assert.Equal(1, h.Listeners[0].FramesRejected);
        Assert.Contains("authentication", h.Listeners[0].LastRejection);

        await h.Sender.ConnectAsync(CancellationToken.None);
        var outcomes = await h.RoundAsync(new RoundTransfer(0, false, [new GroupTransfer(1, [1])], [[new PageMap(0, 0, 1)]], []), contents);
        Assert.Null(outcomes[0].Error);
    }

    private static byte[] Frame(Guid migration, ulong sequence, FrameType type, byte[] payload)
    {
        var frame = new byte[FrameHeader.Size + payload.Length];
        FrameCodec.Encode(type, migration, sequence, payload, Key, frame);
        return frame;
    }

    private static async Task Accept(MigrationReceiver r, byte[] frame)
    {
        var (header, payload) = FrameCodec.Decode(frame, Key, 1 << 20);
        await r.AcceptAsync(header, frame, payload);
    }

    [Fact]
    public async Task A_map_that_arrives_before_its_content_is_applied_when_the_content_comes_and_the_final_round_waits_for_device_state()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(2);
        var vm = new ReceiverVm(0, new VmDescription(new VmId("vm-0"), 2 * Page.Size, 1, "test", ""), memory);
        await using var r = new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 0, 1), 0, [new IPEndPoint(IPAddress.Loopback, 1)], [vm], new DataPlaneOptions());
        var page = PageOf(9);

        var maps = Records.MapBatchPayload(0, 0, [new PageMap(0, 1, 77)]);
        await Accept(r, Frame(id, 1, FrameType.MapBatch, maps));
        await Accept(r, Frame(id, 2, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 0, 1, 1, Final: true, DeviceStates: [0]))));
        Assert.False(r.Outcomes.TryRead(out _)); // the content has not arrived

        var content = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size];
        int at = Records.WriteContentBatchHeader(content, 0, 1, 1);
        at += Records.WriteContentRecord(content.AsSpan(at), 77, ContentHash.Compute(page), PageEncoding.Raw, page);
        content = content[..at];
        await Accept(r, Frame(id, 3, FrameType.ContentBatch, content));
        var read = new byte[Page.Size];
        memory.ReadPage(1, read);
        Assert.Equal(page, read);
        Assert.False(r.Outcomes.TryRead(out _)); // final round: the device state is still missing

        var device = new byte[Records.DeviceStateHeader + 3];
        Records.WriteDeviceStateHeader(device, 0, 3, 0);
        device[^1] = 42;
        await Accept(r, Frame(id, 4, FrameType.DeviceState, device));
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Equal(new RoundOutcome(0, true, null), outcome);
        Assert.Equal([0, 0, 42], r.DeviceStateOf(0));

        // A replayed frame is refused, and an authenticated page whose bytes do not match its hash fails the migration.
        await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 3, FrameType.ContentBatch, content)));
    }

    /// <summary>A receiver on host 0 of a migration, for VM 0 only, whose memory is <paramref name="memory"/>.</summary>
    private static MigrationReceiver OneVmReceiver(Guid migrationId, NativeGuestMemory memory) =>
        new(migrationId, DataPlaneKeys.ForReceiver(Key, migrationId, 0, 1), 0, [new IPEndPoint(IPAddress.Loopback, 1)],
            [new ReceiverVm(0, new VmDescription(new VmId("vm-0"), (long)memory.PageCount * Page.Size, 1, "test", ""), memory)], new DataPlaneOptions());

    private static byte[] MapsPayload(int round, params PageMap[] maps) => Records.MapBatchPayload(round, 0, maps);

    private static byte[] ContentPayload(int round, long contentId, byte[] page)
    {
        var payload = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size];
        int at = Records.WriteContentBatchHeader(payload, round, 1, 1);
        at += Records.WriteContentRecord(payload.AsSpan(at), contentId, ContentHash.Compute(page), PageEncoding.Raw, page);
        return payload[..at];
    }

    [Fact]
    public async Task Contents_whose_pages_are_known_live_in_their_first_page_and_move_to_the_store_before_it_is_overwritten()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(3);
        await using var r = OneVmReceiver(id, memory);
        byte[] a = PageOf(1), b = PageOf(2), c = PageOf(3);
        ulong seq = 0;
        async Task Round(int round, PageMap[] maps, (long Id, byte[] Page)[] contents, bool final = false)
        {
            await Accept(r, Frame(id, ++seq, FrameType.MapBatch, MapsPayload(round, maps)));
            foreach (var (contentId, page) in contents) await Accept(r, Frame(id, ++seq, FrameType.ContentBatch, ContentPayload(round, contentId, page)));
            await Accept(r, Frame(id, ++seq, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(round, 0, contents.Length, maps.Length, final, final ? [0] : []))));
            if (final)
            {
                var device = new byte[Records.DeviceStateHeader + 1];
                Records.WriteDeviceStateHeader(device, 0, 1, 0);
                await Accept(r, Frame(id, ++seq, FrameType.DeviceState, device));
            }
            Assert.True(r.Outcomes.TryRead(out var outcome));
            Assert.Equal(new RoundOutcome(round, final, null), outcome);
        }
        string[] Memory() => Enumerable.Range(0, 3).Select(p => { var bytes = new byte[Page.Size]; memory.ReadPage(p, bytes); return Convert.ToHexString(bytes); }).ToArray();
        string[] Expect(params byte[][] pages) => pages.Select(Convert.ToHexString).ToArray();

        // Maps first: both contents are written where they belong and stored nowhere else.
        await Round(0, [new PageMap(0, 0, 7), new PageMap(0, 1, 7), new PageMap(0, 2, 8)], [(7, a), (8, b)]);
        Assert.Equal(Expect(a, a, b), Memory());
        Assert.Equal((2, 0), (r.DistinctContentsHeld, r.ContentsStored));

        // Page 2 (home of 8) takes content 7 from its home page 0; then page 0 (home of 7) takes new content 9.
        await Round(1, [new PageMap(0, 0, 9), new PageMap(0, 2, 7)], [(9, c)]);
        Assert.Equal(Expect(c, a, a), Memory());
        Assert.Equal((3, 2), (r.DistinctContentsHeld, r.ContentsStored)); // 7 and 8 moved to the store first

        // Both are still there for later references, and a content re-sent with other bytes is refused.
        await Round(2, [new PageMap(0, 1, 8), new PageMap(0, 2, 9)], [], final: true);
        Assert.Equal(Expect(c, b, c), Memory());
        Assert.Equal(MemoryDigest.Compute(memory, [0]), r.DigestOf(0, [0]));
        await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, ++seq, FrameType.ContentBatch, ContentPayload(3, 7, b))));
    }

    [Fact]
    public async Task A_closed_receiver_writes_nothing_more_into_guest_memory()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(1);
        var r = OneVmReceiver(id, memory);
        await r.DisposeAsync();
        var page = PageOf(5);
        var content = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size];
        int at = Records.WriteContentBatchHeader(content, 0, 1, 1);
        at += Records.WriteContentRecord(content.AsSpan(at), 7, ContentHash.Compute(page), PageEncoding.Raw, page);
        content = content[..at];
        var maps = Records.MapBatchPayload(0, 0, [new PageMap(0, 0, 7)]);

        // The host may already have handed this memory to another guest: a late frame must not touch it.
        var e = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 1, FrameType.ContentBatch, content)));
        Assert.Contains("closed", e.Message);
        await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 2, FrameType.MapBatch, maps)));
        var read = new byte[Page.Size];
        memory.ReadPage(0, read);
        Assert.True(Page.IsZero(read));
    }

    [Fact]
    public async Task Content_that_does_not_match_its_hash_fails_the_migration_on_that_host()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(1);
        await using var r = OneVmReceiver(id, memory);
        var page = PageOf(1);
        var content = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size];
        int at = Records.WriteContentBatchHeader(content, 0, 1, 1);
        at += Records.WriteContentRecord(content.AsSpan(at), 5, ContentHash.Compute(PageOf(2)), PageEncoding.Raw, page);
        content = content[..at];
        var e = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 1, FrameType.ContentBatch, content)));
        Assert.Contains("does not match its content hash", e.Message);
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Contains("content hash", outcome!.Error);
    }
}

/// <summary>The modelled link: a queue may hold frames ahead of the wire, the wire never beats its rate.</summary>
public class LinkPacerTests
{
    [Fact]
    public void Frames_go_to_the_queue_without_waiting_until_it_is_full_and_the_wire_still_carries_only_its_rate()
    {
        // 8 Mbit/s = 1,000,000 bytes/s; a 100,000-byte queue is 100 ms of wire.
        var pacer = new LinkPacer(8_000_000, queueBytes: 100_000);
        Assert.True(pacer.AcquireAsync(50_000, CancellationToken.None).IsCompleted);  // wire idle: goes at once
        Assert.True(pacer.AcquireAsync(50_000, CancellationToken.None).IsCompleted);  // 50 ms queued ahead: fits
        Assert.True(pacer.AcquireAsync(50_000, CancellationToken.None).IsCompleted);  // 100 ms ahead: just fits
        var fourth = pacer.AcquireAsync(50_000, CancellationToken.None);
        Assert.False(fourth.IsCompleted);                                               // 150 ms ahead: waits for room
        // Every booked byte leaves at the rate: 200,000 bytes are 200 ms of wire from the first.
        Assert.InRange(pacer.BacklogSeconds, 0.1, 0.2);

        var strict = new LinkPacer(8_000_000);
        Assert.True(strict.AcquireAsync(50_000, CancellationToken.None).IsCompleted);
        Assert.False(strict.AcquireAsync(50_000, CancellationToken.None).IsCompleted); // no queue: waits for the wire
    }
}
