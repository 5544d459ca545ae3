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

/// <summary>Per-target keys: what a target's own key material lets it do to another target (nothing but relay contents).</summary>
public partial class DataPlaneTests
{
    private static byte[] Sealed(Guid migration, ulong sequence, FrameType type, byte[] payload, ReadOnlySpan<byte> key, int relayedBy = FrameHeader.FromSource)
    {
        var frame = new byte[FrameHeader.Size + payload.Length];
        FrameCodec.Encode(type, migration, sequence, payload, key, frame, relayedBy);
        return frame;
    }

    /// <summary>Sends one frame on a connection of its own and waits until the listener closes it (it closes it on a bad frame).</summary>
    private static async Task SendRefused(DataPlaneListener listener, byte[] frame)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(listener.LocalEndPoint);
        await client.GetStream().WriteAsync(frame);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Assert.Equal(0, await client.GetStream().ReadAsync(new byte[1], timeout.Token));
    }

    /// <summary>A one-content batch for <paramref name="mask"/>, ending in a tag per host after the first made with <paramref name="tagKey"/>(host).</summary>
    private static byte[] ContentPayload(int round, ulong mask, long id, byte[] page, ulong sequence, Func<int, byte[]> tagKey, ContentHash? claimed = null)
    {
        var payload = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size + Records.SourceTagsSize(mask)];
        int at = Records.WriteContentBatchHeader(payload, round, mask, 1);
        at += Records.WriteContentRecord(payload.AsSpan(at), id, claimed ?? ContentHash.Compute(page), PageEncoding.Raw, page);
        int signed = at;
        foreach (int t in DataPlaneSender.Targets(mask).Skip(1))
        {
            FrameCodec.SourceTag(tagKey(t), sequence, payload.AsSpan(0, signed), payload.AsSpan(at, Records.SourceTagSize));
            at += Records.SourceTagSize;
        }
        return payload[..at];
    }

    private static byte[] PageOfVm(MigrationReceiver r, int page)
    {
        var bytes = new byte[Page.Size];
        r.Vms.Single().Memory.ReadPage(page, bytes);
        return bytes;
    }

    [Fact]
    public void Target_keys_derive_apart_and_a_target_gets_no_key_that_opens_another_targets_frames()
    {
        var id = Guid.NewGuid();
        const int targets = 5;
        var own = Enumerable.Range(0, targets).Select(t => DataPlaneKeys.ForTarget(Key, id, t)).ToArray();
        Assert.Equal(targets, own.Select(Convert.ToHexString).Distinct().Count());
        for (int t = 0; t < targets; t++)
        {
            var keys = DataPlaneKeys.ForReceiver(Key, id, t, targets);
            Assert.Equal(own[t], keys.Own);
            var held = new List<byte[]> { keys.Own };
            for (int p = 0; p < targets; p++)
                if (p != t) held.Add(keys.Link(p).ToArray());
            // Neither the master secret nor any other target's own key is among what it holds.
            foreach (var k in held)
            {
                Assert.NotEqual(Key, k);
                for (int u = 0; u < targets; u++)
                    if (u != t) Assert.NotEqual(own[u], k);
            }
            // Both ends of a link hold the same link key, and nobody else does.
            for (int p = t + 1; p < targets; p++)
                Assert.Equal(DataPlaneKeys.ForLink(Key, id, t, p), keys.Link(p).ToArray());
            Assert.DoesNotContain(Convert.ToHexString(keys.Own), keys.ToString());
            Assert.Equal("ReceiverKeys { 5 links, redacted }", keys.ToString());
        }
        // Another migration, other keys from the same secret.
        Assert.NotEqual(own[0], DataPlaneKeys.ForTarget(Key, Guid.NewGuid(), 0));
    }

    [Fact]
    public async Task Maps_and_round_ends_sealed_with_one_targets_keys_are_refused_by_another_which_applies_nothing()
    {
        var contents = new Contents { Pages = { [1] = PageOf(1), [2] = PageOf(2), [3] = PageOf(3) } };
        await using var h = new Harness(targets: 2, vmTarget: [0, 1], pagesPerVm: 2, GroupTransport.RelayChain);
        await h.Sender.ConnectAsync(CancellationToken.None);
        // Round 0 lands: target B (1) holds content 2 in page 0 and content 3 in page 1.
        var first = await h.RoundAsync(new RoundTransfer(0, false, [new GroupTransfer(0b01, [1]), new GroupTransfer(0b10, [2, 3])],
            [[new PageMap(0, 0, 1)], [new PageMap(1, 0, 2), new PageMap(1, 1, 3)]], []), contents);
        Assert.All(first, o => Assert.Null(o.Error));
        var b = h.Receivers[1];
        var before = (Page0: PageOfVm(b, 0), Page1: PageOfVm(b, 1), Digest: b.DigestOf(1, []), Contents: b.ContentRecordsReceived, Held: b.DistinctContentsHeld);
        Assert.Equal(PageOf(2), before.Page0);

        // What target A (0) holds: its own key and the key of its link to B.
        var a = DataPlaneKeys.ForReceiver(Key, h.MigrationId, 0, 2);
        // Page maps that would zero B's pages, a round end that would end round 1 of B with nothing in it (final), and a
        // withdrawal: sealed as from the source with A's own key, then on A's relay link to B.
        var maps = Records.MapBatchPayload(1, 1, [new PageMap(1, 0, 0), new PageMap(1, 1, 0)]);
        var end = Records.WriteRoundEnd(new RoundEnd(1, 1, 0, 2, Final: true));
        ulong sequence = 1_000_000;
        var forged = new[]
        {
            Sealed(h.MigrationId, sequence++, FrameType.MapBatch, maps, a.Own),
            Sealed(h.MigrationId, sequence++, FrameType.RoundEnd, end, a.Own),
            Sealed(h.MigrationId, sequence++, FrameType.MapBatch, maps, a.Link(1), relayedBy: 0),
            Sealed(h.MigrationId, sequence++, FrameType.RoundEnd, end, a.Link(1), relayedBy: 0),
            Sealed(h.MigrationId, sequence++, FrameType.ContentsWithdrawn, Records.WithdrawnPayload(1, 1, [2]), a.Link(1), relayedBy: 0),
        };
        var reasons = new List<string?>();
        foreach (var frame in forged)
        {
            await SendRefused(h.Listeners[1], frame);
            reasons.Add(h.Listeners[1].LastRejection);
        }
        Assert.Equal(5, h.Listeners[1].FramesRejected);
        Assert.Equal("frame authentication failed", reasons[0]);
        Assert.Equal("frame authentication failed", reasons[1]);
        Assert.Equal("a MapBatch frame relayed by host 0: a relay link carries content batches only", reasons[2]);
        Assert.Equal("a RoundEnd frame relayed by host 0: a relay link carries content batches only", reasons[3]);
        Assert.Equal("a ContentsWithdrawn frame relayed by host 0: a relay link carries content batches only", reasons[4]);

        // B applied nothing: same bytes, same page hashes, same counts, no round outcome, and the migration goes on there.
        Assert.Equal(before.Page0, PageOfVm(b, 0));
        Assert.Equal(before.Page1, PageOfVm(b, 1));
        Assert.Equal(before.Digest, b.DigestOf(1, []));
        Assert.Equal(before.Contents, b.ContentRecordsReceived);
        Assert.Equal(before.Held, b.DistinctContentsHeld);
        Assert.False(b.Outcomes.TryRead(out _));
        var next = await h.RoundAsync(new RoundTransfer(1, false, [new GroupTransfer(0b11, [1])], [[], [new PageMap(1, 1, 1)]], []), contents);
        Assert.All(next, o => Assert.Equal(new RoundOutcome(1, false, null), o));
        Assert.Equal(PageOf(2), PageOfVm(b, 0));
        Assert.Equal(PageOf(1), PageOfVm(b, 1));
    }

    [Fact]
    public async Task A_relay_link_takes_content_batches_from_the_host_before_signed_by_the_source_and_checked_against_their_hash()
    {
        await using var h = new Harness(targets: 3, vmTarget: [0, 1, 2], pagesPerVm: 1, GroupTransport.RelayChain);
        var id = h.MigrationId;
        byte[] Source(int t) => DataPlaneKeys.ForTarget(Key, id, t);
        var host0 = DataPlaneKeys.ForReceiver(Key, id, 0, 3);
        var host1 = DataPlaneKeys.ForReceiver(Key, id, 1, 3);
        ulong s = 1_000;

        // Host 0 relays a batch of group {0, 1} to host 1 on their link, with the source's tag for host 1: taken, and it
        // completes host 1's round.
        using (var relay = new TcpClient())
        using (var source = new TcpClient())
        {
            await relay.ConnectAsync(h.Listeners[1].LocalEndPoint);
            await relay.GetStream().WriteAsync(Sealed(id, ++s, FrameType.ContentBatch, ContentPayload(0, 0b011, 7, PageOf(7), s, Source), host0.Link(1), relayedBy: 0));
            await source.ConnectAsync(h.Listeners[1].LocalEndPoint);
            await source.GetStream().WriteAsync(Sealed(id, ++s, FrameType.MapBatch, Records.MapBatchPayload(0, 1, [new PageMap(1, 0, 7)]), Source(1)));
            await source.GetStream().WriteAsync(Sealed(id, ++s, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 1, 1, 1, false)), Source(1)));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            Assert.Equal(new RoundOutcome(0, false, null), await h.Receivers[1].Outcomes.ReadAsync(timeout.Token));
        }
        Assert.Equal(PageOf(7), PageOfVm(h.Receivers[1], 0));
        Assert.Equal(0, h.Listeners[1].FramesRejected);

        // Host 1 cannot open a frame relayed by a later host, nor with a key it does not share with host 2.
        await SendRefused(h.Listeners[1], Sealed(id, ++s, FrameType.ContentBatch, ContentPayload(0, 0b110, 8, PageOf(8), s, Source), host1.Link(2), relayedBy: 2));
        Assert.Equal("host 2 does not relay to host 1", h.Listeners[1].LastRejection);
        // Host 0 holds the link key to host 2, but in group {0, 1, 2} host 1, not 0, hands host 2 its contents.
        await SendRefused(h.Listeners[2], Sealed(id, ++s, FrameType.ContentBatch, ContentPayload(1, 0b111, 8, PageOf(8), s, Source), host0.Link(2), relayedBy: 0));
        Assert.Equal("content batch relayed by host 0, which is not the host before 2 in its group", h.Listeners[2].LastRejection);
        Assert.Equal(0, h.Receivers[2].ContentRecordsReceived);
        // Host 0 makes up contents of its own for host 1 (with a check that fits them), tagged with what it holds: refused,
        // nothing of it written.
        await SendRefused(h.Listeners[1], Sealed(id, ++s, FrameType.ContentBatch, ContentPayload(1, 0b011, 9, PageOf(9), s, _ => host0.Own), host0.Link(1), relayedBy: 0));
        Assert.Equal("content batch relayed by host 0 without the source's tag for host 1", h.Listeners[1].LastRejection);
        Assert.Equal(PageOf(7), PageOfVm(h.Receivers[1], 0));
        Assert.Equal(1, h.Receivers[1].ContentRecordsReceived);

        // Contents relayed, even signed by the source, must match the hash they carry.
        await using var h2 = new Harness(targets: 2, vmTarget: [0, 1], pagesPerVm: 1, GroupTransport.RelayChain);
        var link = DataPlaneKeys.ForLink(Key, h2.MigrationId, 0, 1);
        await SendRefused(h2.Listeners[1], Sealed(h2.MigrationId, ++s, FrameType.ContentBatch,
            ContentPayload(0, 0b011, 9, PageOf(9), s, t => DataPlaneKeys.ForTarget(Key, h2.MigrationId, t), ContentHash.Compute(PageOf(10))), link, relayedBy: 0));
        Assert.Equal("content 9 does not match its content hash", h2.Listeners[1].LastRejection);
        Assert.Equal(0, h2.Receivers[1].ContentRecordsReceived);
    }

    [Fact]
    public void A_header_names_who_sealed_it_and_a_relayed_frame_opens_only_under_its_link_key()
    {
        var id = Guid.NewGuid();
        var link = DataPlaneKeys.ForLink(Key, id, 2, 5);
        var frame = Sealed(id, 42, FrameType.ContentBatch, [1, 2, 3], link, relayedBy: 2);
        var (header, payload) = FrameCodec.Decode(frame, link, 1024);
        Assert.Equal(new FrameHeader(FrameType.ContentBatch, id, 42, 3, RelayedBy: 2), header);
        Assert.Equal(new byte[] { 1, 2, 3 }, payload.ToArray());
        Assert.Equal(FrameHeader.FromSource, FrameCodec.ParseHeader(Sealed(id, 43, FrameType.Hello, [], link), 0).RelayedBy);
        Assert.Contains("authentication", Assert.Throws<FrameRejectedException>(() => FrameCodec.Decode(frame, DataPlaneKeys.ForTarget(Key, id, 5), 1024)).Message);
        // The sealer is authenticated: a frame re-labelled as the source's (or another relay's) does not open.
        var relabelled = (byte[])frame.Clone();
        relabelled[7] = 0;
        Assert.Contains("authentication", Assert.Throws<FrameRejectedException>(() => FrameCodec.Decode(relabelled, link, 1024)).Message);
    }

    [Fact]
    public async Task A_target_that_joins_mid_migration_gets_its_keys_and_the_relay_chain_reaches_it_re_sealed()
    {
        var options = new DataPlaneOptions { Transport = GroupTransport.RelayChain, Compression = CompressionMode.None };
        var id = Guid.NewGuid();
        var listeners = Enumerable.Range(0, 3).Select(_ => new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), options)).ToArray();
        var endpoints = listeners.Select(l => l.LocalEndPoint).ToArray();
        ReceiverVm Vm(int v) => new(v, new VmDescription(new VmId($"vm-{v}"), Page.Size, 1, "test", ""), new NativeGuestMemory(1));
        // Two targets at first: their keys are for two hosts.
        var receivers = new List<MigrationReceiver>();
        for (int t = 0; t < 2; t++) receivers.Add(new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, t, 2), t, endpoints[..2], [Vm(t)], options));
        for (int t = 0; t < 2; t++) listeners[t].Register(receivers[t]);
        var sender = new DataPlaneSender(id, Key, endpoints[..2], options);
        try
        {
            await sender.ConnectAsync(CancellationToken.None);
            var contents = new Contents { Pages = { [1] = PageOf(1), [2] = PageOf(2) } };
            await sender.SendRoundAsync(new RoundTransfer(0, false, [new GroupTransfer(0b11, [1])], [[new PageMap(0, 0, 1)], [new PageMap(1, 0, 1)]], []), contents, CancellationToken.None);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            for (int t = 0; t < 2; t++) Assert.Equal(new RoundOutcome(0, false, null), await receivers[t].Outcomes.ReadAsync(timeout.Token));

            // Host 2 joins (a VM re-placed on it): it gets its keys for three hosts, the others the links to it, keys before peers.
            receivers.Add(new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 2, 3), 2, endpoints, [Vm(2)], options));
            listeners[2].Register(receivers[2]);
            for (int t = 0; t < 2; t++)
            {
                // Only added to: a different own key, or links that change, are refused.
                Assert.Throws<ArgumentException>(() => receivers[t].UpdateKeys(DataPlaneKeys.ForReceiver(Key, Guid.NewGuid(), t, 3)));
                receivers[t].UpdateKeys(DataPlaneKeys.ForReceiver(Key, id, t, 3));
                receivers[t].UpdatePeers(endpoints);
            }
            sender.AddTargets([endpoints[2]]);
            await sender.ConnectAsync(CancellationToken.None);
            await sender.SendRoundAsync(new RoundTransfer(1, false, [new GroupTransfer(0b111, [2])],
                [[new PageMap(0, 0, 2)], [new PageMap(1, 0, 2)], [new PageMap(2, 0, 2)]], [], ActiveTargets: 0b111), contents, CancellationToken.None);
            Assert.Equal(new RoundOutcome(1, false, null), await receivers[0].Outcomes.ReadAsync(timeout.Token));
            Assert.Equal(new RoundOutcome(1, false, null), await receivers[1].Outcomes.ReadAsync(timeout.Token));
            // Host 2 was in none of the rounds before: its first is 1.
            Assert.Equal(new RoundOutcome(1, false, null), await receivers[2].Outcomes.ReadAsync(timeout.Token));
            // One frame left the source for the group; hosts 0 and 1 each re-sealed it for the next.
            Assert.Equal(1, receivers[2].ContentRecordsReceived);
            Assert.True(receivers[1].BytesRelayed > 0);
            Assert.All(receivers, r => Assert.Equal(PageOf(2), PageOfVm(r, 0)));
            Assert.All(listeners, l => Assert.Equal(0, l.FramesRejected));
        }
        finally
        {
            await sender.DisposeAsync();
            foreach (var r in receivers) await r.DisposeAsync();
            foreach (var l in listeners) await l.DisposeAsync();
            foreach (var r in receivers) foreach (var v in r.Vms) ((NativeGuestMemory)v.Memory).Dispose();
        }
    }
}
