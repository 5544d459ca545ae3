using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using VMScatter.DataPlane.Multicast;
using VMScatter.DataPlane.Wire;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>
/// The reliable multicast channel on loopback: every receiver gets every message once, in order, byte for byte, with
/// and without injected loss; a silent receiver is dropped and the others finish; forged datagrams change nothing.
/// </summary>
public class MulticastChannelTests
{
    private static int _port = 47000 + Environment.ProcessId % 1000 * 10;

    private static MulticastOptions Options(double drop = 0, TimeSpan? receiverTimeout = null) => new()
    {
        Group = new IPEndPoint(IPAddress.Parse("239.255.77.1"), Interlocked.Increment(ref _port)),
        DropFraction = drop, LinkBitsPerSecond = 200_000_000, ReceiverTimeout = receiverTimeout ?? TimeSpan.FromSeconds(10), Seed = 5,
    };

    private static List<byte[]> Messages(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => { var m = new byte[random.Next(1, 8193)]; random.NextBytes(m); return m; }).ToList();
    }

    /// <summary>Byte for byte, in order (xunit's structural comparison of thousands of arrays takes seconds).</summary>
    private static void AssertSame(IReadOnlyList<byte[]> expected, IReadOnlyList<byte[]> got)
    {
        Assert.Equal(expected.Count, got.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(expected[i].AsSpan().SequenceEqual(got[i]), $"message {i} differs");
    }

    private sealed class Sink
    {
        public readonly List<byte[]> Got = new();
        public ValueTask Deliver(byte[] m) { lock (Got) Got.Add(m); return ValueTask.CompletedTask; }
    }

    private static async Task<(MulticastSenderStats Sender, MulticastReceiverStats[] Receivers, IReadOnlyList<int> Dropped)> RunAsync(
        MulticastOptions options, IReadOnlyList<byte[]> messages, Sink[] sinks, int members, int rounds = 2)
    {
        var id = Guid.NewGuid();
        var key = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
        await using var sender = new MulticastSender(id, key, channel: 3, Enumerable.Range(0, members), options);
        var receivers = sinks.Select((s, i) => new MulticastReceiver(id, key, 3, i, sender.FeedbackEndPoint, options with { Seed = options.Seed + i }, s.Deliver)).ToArray();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            IReadOnlyList<int> dropped = [];
            int perRound = messages.Count / rounds;
            for (int r = 0; r < rounds; r++)
            {
                foreach (var m in messages.Skip(r * perRound).Take(r == rounds - 1 ? messages.Count - r * perRound : perRound)) await sender.SendAsync(m, timeout.Token);
                dropped = await sender.EndRoundAsync(r, timeout.Token);
                foreach (var receiver in receivers) await receiver.WaitRoundAsync(r, timeout.Token);
            }
            return (sender.Stats, receivers.Select(r => r.Stats).ToArray(), dropped);
        }
        finally
        {
            foreach (var r in receivers) await r.DisposeAsync();
        }
    }

    [Fact]
    public async Task Three_receivers_get_every_message_once_in_order_and_nothing_is_repaired_without_loss()
    {
        var messages = Messages(1500, 1);
        var sinks = new[] { new Sink(), new Sink(), new Sink() };
        var (sender, receivers, dropped) = await RunAsync(Options(), messages, sinks, members: 3);
        Assert.Empty(dropped);
        Assert.All(sinks, s => AssertSame(messages, s.Got));
        Assert.All(receivers, r => Assert.Equal((1500UL, 2, 0L), (r.Delivered, r.RoundsComplete, r.Rejected)));
        // One copy on the wire for all three receivers: each message once, plus the round ends.
        Assert.Equal(0, sender.Repairs);
        Assert.InRange(sender.Datagrams, 1502, 1502 + 200);
        Assert.Equal(messages.Sum(m => (long)m.Length + FrameHeader.Size), sender.Bytes - (sender.Datagrams - 1500) * (FrameHeader.Size + 12));
    }

    [Theory]
    [InlineData(0.01)]
    [InlineData(0.05)]
    public async Task With_injected_loss_gaps_are_asked_for_and_repaired_until_every_receiver_holds_every_message(double loss)
    {
        var messages = Messages(3000, 2);
        var sinks = new[] { new Sink(), new Sink(), new Sink() };
        var (sender, receivers, dropped) = await RunAsync(Options(loss), messages, sinks, members: 3);
        Assert.Empty(dropped);
        Assert.All(sinks, s => AssertSame(messages, s.Got));
        Assert.All(receivers, r => Assert.True(r.InjectedDrops > 0 && r.Nacks > 0, $"drops {r.InjectedDrops}, nacks {r.Nacks}"));
        // Repaired, to the whole group. How many repairs a loss costs is the bench's figure, not this test's: the
        // kernel drops datagrams too when a receiver falls behind, and a lost repair is asked for again.
        Assert.True(sender.Repairs > 0);
        // Everything else on the wire is round ends: at least one per round.
        Assert.InRange(sender.Datagrams - sender.Repairs - messages.Count, 2, 2 + 400);
    }

    [Fact]
    public async Task A_receiver_that_never_answers_is_dropped_after_the_timeout_and_the_others_finish()
    {
        // The live ones say they are alive every 20 ms; 3 s leaves room for a cold start on a busy CI machine (500 ms did not).
        var messages = Messages(300, 3);
        var sinks = new[] { new Sink(), new Sink() };
        var (_, receivers, dropped) = await RunAsync(Options(receiverTimeout: TimeSpan.FromSeconds(3)), messages, sinks, members: 3, rounds: 1);
        Assert.Equal(new[] { 2 }, dropped);
        Assert.All(sinks, s => AssertSame(messages, s.Got));
        Assert.All(receivers, r => Assert.Equal(1, r.RoundsComplete));
    }

    /// <summary>
    /// A round's end that does not come: the member to blame is the one furthest behind (it drops most of what arrives),
    /// not a healthy one that may lag a moment on a busy machine; without it, the round ends for the others.
    /// </summary>
    [Fact]
    public async Task A_round_end_held_up_names_only_the_member_furthest_behind_and_the_others_finish_without_it()
    {
        var options = Options();
        var messages = Messages(400, 4);
        var sinks = new[] { new Sink(), new Sink(), new Sink() };
        var id = Guid.NewGuid();
        var key = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
        await using var sender = new MulticastSender(id, key, channel: 1, [0, 1, 2], options);
        var receivers = sinks.Select((s, i) => new MulticastReceiver(id, key, 1, i, sender.FeedbackEndPoint,
            options with { Seed = 10 + i, DropFraction = i == 1 ? 0.97 : 0 }, s.Deliver)).ToArray();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            foreach (var m in messages) await sender.SendAsync(m, timeout.Token);
            using (var held = new CancellationTokenSource(TimeSpan.FromSeconds(1)))
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sender.EndRoundAsync(0, held.Token));
            Assert.Equal([1], sender.Behind());
            sender.Remove(1);
            Assert.Empty(await sender.EndRoundAsync(0, timeout.Token));
            foreach (int r in new[] { 0, 2 }) await receivers[r].WaitRoundAsync(0, timeout.Token);
            AssertSame(messages, sinks[0].Got);
            AssertSame(messages, sinks[2].Got);
            Assert.True(sinks[1].Got.Count < messages.Count, $"{sinks[1].Got.Count} delivered");
            Assert.Empty(sender.Behind());
        }
        finally
        {
            foreach (var r in receivers) await r.DisposeAsync();
        }
    }

    /// <summary>
    /// A member that holds every datagram but never acknowledges the round's end (here it stops answering after the
    /// last one; in a migration, one dropping 99 % of what arrives missed every repeat of the end) is the one to blame,
    /// not "no one behind": the round could not end, and the caller must be able to name someone.
    /// </summary>
    [Fact]
    public async Task A_member_holding_every_datagram_but_not_the_round_end_is_named_behind()
    {
        var options = Options(receiverTimeout: TimeSpan.FromSeconds(60));
        var messages = Messages(50, 6);
        var sinks = new[] { new Sink(), new Sink() };
        var id = Guid.NewGuid();
        var key = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
        await using var sender = new MulticastSender(id, key, channel: 1, [0, 1], options);
        var receivers = sinks.Select((s, i) => new MulticastReceiver(id, key, 1, i, sender.FeedbackEndPoint, options with { Seed = 20 + i }, s.Deliver)).ToArray();
        bool quiet = false;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            foreach (var m in messages) await sender.SendAsync(m, timeout.Token);
            // Member 1 holds the whole stream (all delivered, so acknowledged once the sender has heard it), then goes quiet.
            while (Delivered(sinks[1]) < messages.Count || sender.Behind().Count > 0) await Task.Delay(10, timeout.Token);
            await receivers[1].DisposeAsync();
            quiet = true;
            using (var held = new CancellationTokenSource(TimeSpan.FromSeconds(1)))
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sender.EndRoundAsync(0, held.Token));
            Assert.Equal([1], sender.Behind());
            sender.Remove(1);
            Assert.Empty(await sender.EndRoundAsync(0, timeout.Token));
            Assert.Empty(sender.Behind());
            AssertSame(messages, sinks[0].Got);
        }
        finally
        {
            await receivers[0].DisposeAsync();
            if (!quiet) await receivers[1].DisposeAsync();
        }
    }

    private static int Delivered(Sink sink)
    {
        lock (sink.Got) return sink.Got.Count;
    }

    [Fact]
    public async Task Forged_and_malformed_datagrams_are_counted_and_change_nothing()
    {
        var options = Options();
        var id = Guid.NewGuid();
        var key = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
        await using var sender = new MulticastSender(id, key, 1, [0], options);
        var sink = new Sink();
        await using var receiver = new MulticastReceiver(id, key, 1, 0, sender.FeedbackEndPoint, options, sink.Deliver);
        using var attacker = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        attacker.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.MulticastInterface, IPAddress.Loopback.GetAddressBytes());
        var channelKey = MulticastWire.ChannelKey(key, 1);
        byte[] Seal(FrameType type, Guid migration, ulong seq, byte[] payload, byte[] k)
        {
            var d = new byte[FrameHeader.Size + payload.Length];
            FrameCodec.Encode(type, migration, seq, payload, k, d);
            return d;
        }
        var random = new Random(9);
        var junk = new byte[300];
        random.NextBytes(junk);
        var forged = new List<byte[]>
        {
            junk,
            Seal(FrameType.ChannelData, id, 0, [1, 2, 3], RandomNumberGenerator.GetBytes(32)), // wrong key
            Seal(FrameType.ChannelData, Guid.NewGuid(), 0, [1, 2, 3], channelKey), // another migration
            Seal(FrameType.ChannelData, id, 0, [1, 2, 3], key), // the migration's own key, not the channel's
            Seal(FrameType.ChannelAck, id, MulticastWire.FeedbackSequence(0, 1), MulticastWire.Ack(0, 0), channelKey), // feedback on the group
            Seal(FrameType.ChannelRoundEnd, id, 5, MulticastWire.RoundEnd(0, 10), channelKey), // round end in the data space
            Seal(FrameType.ChannelData, id, 0, [1, 2, 3], channelKey)[..40], // truncated
        };
        var tampered = Seal(FrameType.ChannelData, id, 0, [1, 2, 3], channelKey);
        tampered[^1] ^= 1;
        forged.Add(tampered);
        foreach (var d in forged) await attacker.SendToAsync(d, SocketFlags.None, options.Group);
        // Forged feedback to the sender: a stranger's key, and a receiver id not in the channel.
        await attacker.SendToAsync(Seal(FrameType.ChannelAck, id, MulticastWire.FeedbackSequence(0, 1), MulticastWire.Ack(0, 0), RandomNumberGenerator.GetBytes(32)), SocketFlags.None, sender.FeedbackEndPoint);
        await attacker.SendToAsync(Seal(FrameType.ChannelAck, id, MulticastWire.FeedbackSequence(7, 1), MulticastWire.Ack(0, 0), channelKey), SocketFlags.None, sender.FeedbackEndPoint);

        var messages = Messages(50, 4);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        foreach (var m in messages) await sender.SendAsync(m, timeout.Token);
        await sender.EndRoundAsync(0, timeout.Token);
        await receiver.WaitRoundAsync(0, timeout.Token);
        AssertSame(messages, sink.Got);
        Assert.Equal(forged.Count, receiver.Stats.Rejected);
        Assert.Equal(2, sender.Stats.FeedbackRejected);

        // The channel's own datagrams, as anyone on the link sees them, sent again: each counted as a duplicate, and nothing delivered twice.
        using var capture = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        capture.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        capture.Bind(options.Group);
        capture.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.AddMembership, new MulticastOption(options.Group.Address, IPAddress.Loopback));
        var more = Messages(20, 5);
        foreach (var m in more) await sender.SendAsync(m, timeout.Token);
        await sender.EndRoundAsync(1, timeout.Token);
        await receiver.WaitRoundAsync(1, timeout.Token);
        var buffer = new byte[65536];
        var own = new List<byte[]>();
        while (capture.Available > 0) own.Add(buffer[..capture.Receive(buffer)]);
        var data = own.Where(d => d[5] == (byte)FrameType.ChannelData).ToArray();
        Assert.True(data.Length >= 20, $"{data.Length} data datagrams captured");
        long before = receiver.Stats.Duplicates;
        foreach (var d in data) await attacker.SendToAsync(d, SocketFlags.None, options.Group);
        await WaitUntilAsync(() => receiver.Stats.Duplicates >= before + data.Length, timeout.Token);
        Assert.Equal(forged.Count, receiver.Stats.Rejected);
        AssertSame([.. messages, .. more], sink.Got);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, CancellationToken cancellationToken)
    {
        while (!condition()) await Task.Delay(5, cancellationToken);
    }

    [Fact]
    public void The_receive_window_delivers_in_order_holds_what_comes_early_and_asks_for_gaps_after_the_back_off()
    {
        var w = new ReceiveWindow(TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(50), new Random(1));
        Assert.Single(w.Accept(0, [0], now: 0));
        Assert.Empty(w.Accept(3, [3], now: 0)); // 1 and 2 missing
        Assert.Equal(2, w.Gaps);
        Assert.Equal(new[] { (1UL, 2U) }, w.DueNacks(now: 0.011, 16)); // after the drawn back-off (under 10 ms)
        Assert.Empty(w.DueNacks(now: 0.02, 16)); // asked; again only after the retry
        Assert.Equal(new[] { (1UL, 2U) }, w.DueNacks(now: 0.07, 16));
        Assert.Empty(w.Accept(2, [2], now: 0.08));
        Assert.Equal(new[] { 1, 2, 3 }, w.Accept(1, [1], now: 0.08).Select(m => (int)m[0]));
        Assert.Empty(w.Accept(1, [1], now: 0.09)); // a repair that came twice
        Assert.Equal(1, w.Duplicates);
        Assert.Equal(4UL, w.Contiguous);
        w.KnownEnd(6, now: 0.1); // the tail (4, 5) was lost
        Assert.Equal(new[] { (4UL, 2U) }, w.DueNacks(now: 0.2, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => w.Accept(1UL << 40, [9], 0.2));
    }

    [Fact]
    public void Feedback_and_round_end_parsers_refuse_every_malformed_payload_with_a_rejection()
    {
        var random = new Random(11);
        for (int i = 0; i < 5000; i++)
        {
            var p = new byte[random.Next(0, 64)];
            random.NextBytes(p);
            if (random.Next(4) == 0 && p.Length >= 2) { p[0] = 0; p[1] = (byte)((p.Length - 2) / 12); }
            foreach (var parse in new Action[] { () => MulticastWire.ReadNack(p), () => MulticastWire.ReadAck(p), () => MulticastWire.ReadRoundEnd(p) })
            {
                try { parse(); }
                catch (FrameRejectedException) { }
            }
        }
        Assert.Equal(new[] { (5UL, 3U) }, MulticastWire.ReadNack(MulticastWire.Nack([(5, 3)])));
        Assert.Equal((2, 9UL), MulticastWire.ReadAck(MulticastWire.Ack(2, 9)));
        Assert.Throws<FrameRejectedException>(() => MulticastWire.ReadNack(MulticastWire.Nack([(MulticastWire.SenderControlBit - 1, 5)])));
    }
}
