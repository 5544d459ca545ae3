using System.Buffers.Binary;
using System.Net;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>Content batches on the multicast channel: each member applies only what carries the source's tag for it.</summary>
public partial class DataPlaneTests
{
    /// <summary>A one-content channel message for <paramref name="mask"/>: sequence, batch, then a tag per member made with <paramref name="tagKey"/>(member).</summary>
    private static byte[] ChannelMessage(int round, ulong mask, long id, byte[] page, ulong sequence, Func<int, byte[]> tagKey)
    {
        var message = new byte[Records.ChannelContentHeader + Records.ContentBatchHeader + Records.ContentRecordHeader + Page.Size + Records.ChannelTagsSize(mask)];
        BinaryPrimitives.WriteUInt64BigEndian(message, sequence);
        var batch = message.AsSpan(Records.ChannelContentHeader);
        int at = Records.WriteContentBatchHeader(batch, round, mask, 1);
        at += Records.WriteContentRecord(batch[at..], id, ContentHash.Compute(page), PageEncoding.Raw, page);
        int signed = at;
        foreach (int t in DataPlaneSender.Targets(mask))
        {
            FrameCodec.SourceTag(tagKey(t), sequence, batch[..signed], batch.Slice(at, Records.SourceTagSize));
            at += Records.SourceTagSize;
        }
        return message[..(Records.ChannelContentHeader + at)];
    }

    [Fact]
    public async Task A_channel_batch_is_applied_by_the_members_of_its_group_only_and_a_member_cannot_forge_one_for_another()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(2);
        var vm = new ReceiverVm(0, new VmDescription(new VmId("vm-0"), 2 * Page.Size, 1, "test", ""), memory);
        var peers = Enumerable.Range(1, 3).Select(p => new IPEndPoint(IPAddress.Loopback, p)).ToArray();
        // Host 1 of 3, with the channel key (a multicast migration).
        var keys = DataPlaneKeys.ForReceiver(Key, id, 1, 3, channel: true);
        Assert.Equal(DataPlaneKeys.ForChannel(Key, id), keys.Channel);
        Assert.Equal(keys.Channel, DataPlaneKeys.ForReceiver(Key, id, 0, 3, channel: true).Channel);
        Assert.Null(DataPlaneKeys.ForReceiver(Key, id, 1, 3).Channel);
        Assert.Equal("ReceiverKeys { 3 links, a channel key, redacted }", keys.ToString());
        await using var r = new MigrationReceiver(id, keys, 1, peers, [vm], new DataPlaneOptions());
        byte[] Own(int t) => DataPlaneKeys.ForTarget(Key, id, t);
        byte[] page5 = PageOf(5), page6 = PageOf(6), forgedPage = PageOf(66);
        await Accept(r, Frame(id, 1, FrameType.MapBatch, Records.MapBatchPayload(0, 1, [new PageMap(0, 0, 5), new PageMap(0, 1, 6)])));

        // A group host 1 is not in: ignored, whatever it holds.
        r.AcceptChannelContent(ChannelMessage(0, 0b101, 6, forgedPage, 2, Own));
        Assert.Equal((1L, 0L), (r.ChannelBatchesIgnored, r.ContentRecordsReceived));
        Assert.Equal(new byte[Page.Size], PageOfVm(r, 1));
        // Its group's batch with the source's tag for each member: written.
        r.AcceptChannelContent(ChannelMessage(0, 0b111, 5, page5, 3, Own));
        Assert.Equal(page5, PageOfVm(r, 0));
        Assert.Equal(1L, r.ContentRecordsReceived);

        // Host 0 holds the channel key and its own key, not host 1's: its batch for {0, 1} with other bytes for content
        // 6 carries a tag for host 1 it had to make with a key of its own. Refused, nothing written, the round fails here.
        var forged = ChannelMessage(0, 0b011, 6, forgedPage, 4, t => t == 0 ? Own(0) : keys.Link(0).ToArray());
        var e = Assert.Throws<FrameRejectedException>(() => r.AcceptChannelContent(forged));
        Assert.Contains("without the source's tag for host 1", e.Message);
        Assert.Equal(new byte[Page.Size], PageOfVm(r, 1));
        Assert.Equal((1L, 1L), (r.ContentRecordsReceived, r.ChannelBatchesRejected));
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Contains("rejected a multicast content batch", outcome.Error);
        // The genuine batch now changes nothing either: the migration failed on this host.
        r.AcceptChannelContent(ChannelMessage(0, 0b011, 6, page6, 5, Own));
        Assert.Equal(new byte[Page.Size], PageOfVm(r, 1));
    }

    [Fact]
    public async Task A_channel_batch_replayed_or_told_to_join_without_a_channel_key_is_refused()
    {
        var id = Guid.NewGuid();
        byte[] Own(int t) => DataPlaneKeys.ForTarget(Key, id, t);
        using (var memory = new NativeGuestMemory(1))
        {
            var vm = new ReceiverVm(0, new VmDescription(new VmId("vm-0"), Page.Size, 1, "test", ""), memory);
            await using var r = new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 0, 2, channel: true), 0, [new IPEndPoint(IPAddress.Loopback, 1), new IPEndPoint(IPAddress.Loopback, 2)], [vm], new DataPlaneOptions());
            var message = ChannelMessage(0, 0b11, 5, PageOf(5), 7, Own);
            r.AcceptChannelContent(message);
            Assert.Contains("replayed", Assert.Throws<FrameRejectedException>(() => r.AcceptChannelContent(message)).Message);
        }
        using (var memory = new NativeGuestMemory(1))
        {
            // Relay-chain keys (no channel key): a ChannelOpen is refused before any socket is made.
            var vm = new ReceiverVm(0, new VmDescription(new VmId("vm-0"), Page.Size, 1, "test", ""), memory);
            await using var r = new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 0, 1), 0, [new IPEndPoint(IPAddress.Loopback, 1)], [vm], new DataPlaneOptions());
            var open = new ChannelOpen(0, new IPEndPoint(IPAddress.Parse("239.255.90.1"), 46001), new IPEndPoint(IPAddress.Loopback, 5000), 8192);
            Assert.Equal(open, Records.ReadChannelOpen(Records.WriteChannelOpen(open)));
            var e = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 1, FrameType.ChannelOpen, Records.WriteChannelOpen(open))));
            Assert.Contains("without its key", e.Message);
            Assert.Null(r.ChannelStats);
        }
    }

    /// <summary>
    /// A member joins each channel it is told to (real sockets on loopback: channel c is its own group), once; a second
    /// join of one channel is refused and fails the migration here.
    /// </summary>
    [Fact]
    public async Task A_member_joins_each_channel_it_is_told_to_once_and_refuses_a_second_join()
    {
        var id = Guid.NewGuid();
        var settings = new VMScatter.DataPlane.Multicast.MulticastSettings();
        ChannelOpen Open(int c) => new(c, settings.GroupFor(id, c), new IPEndPoint(IPAddress.Loopback, 5000), 8192);
        Assert.Equal(IPAddress.Parse("239.255.90.4"), Open(3).Group.Address); // base + c
        Assert.Equal(Open(0).Group.Port, Open(3).Group.Port);
        using var memory = new NativeGuestMemory(1);
        await using var r = new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 0, 2, channel: true), 0, [new IPEndPoint(IPAddress.Loopback, 1), new IPEndPoint(IPAddress.Loopback, 2)],
            [new ReceiverVm(0, new VmDescription(new VmId("vm-0"), Page.Size, 1, "test", ""), memory)], new DataPlaneOptions());
        await Accept(r, Frame(id, 1, FrameType.ChannelOpen, Records.WriteChannelOpen(Open(0))));
        await Accept(r, Frame(id, 2, FrameType.ChannelOpen, Records.WriteChannelOpen(Open(3))));
        Assert.Equal(2, r.ChannelsJoined);
        Assert.NotNull(r.ChannelStats);
        var e = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 3, FrameType.ChannelOpen, Records.WriteChannelOpen(Open(3)))));
        Assert.Contains("twice", e.Message);
        Assert.Equal(2, r.ChannelsJoined);
        foreach (var bad in new[] { -1, VMScatter.DataPlane.Multicast.MulticastSettings.MaxChannels })
            Assert.Throws<FrameRejectedException>(() => Records.ReadChannelOpen(Records.WriteChannelOpen(Open(0) with { Channel = bad })));
    }
}
