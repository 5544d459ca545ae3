using System.Diagnostics;
using System.IO.Hashing;
using System.Net;
using System.Security.Cryptography;
using VMScatter.DataPlane.Multicast;
using VMScatter.DataPlane.Net;
using VMScatter.DataPlane.Wire;

namespace VMScatter.Bench;

/// <summary>One goodput run: a stream of messages on one channel to every receiver, until all hold all of it.</summary>
/// <param name="LinkBitsPerSecond">Each host's link (tbf) and the sender's pacing; 0: uncapped.</param>
/// <param name="Seconds">From the first message handed to the channel until every receiver acknowledged the last.</param>
/// <param name="GoodputBytesPerSecond">Payload delivered to each receiver per second.</param>
/// <param name="OfLinkRate">Goodput as a fraction of the link rate (NaN when uncapped).</param>
/// <param name="SourceLinkBytes">What the sender's link carried (kernel counter): one copy for all receivers.</param>
/// <param name="ReceiverLinkBytes">What each receiver's link carried to it (kernel counters).</param>
/// <param name="CpuSeconds">This process's CPU over the run: the sender and every receiver (all hosts run in it).</param>
/// <param name="Verified">Every receiver delivered the whole stream, in order, byte for byte (a hash of it).</param>
public sealed record GoodputRun(long LinkBitsPerSecond, int Receivers, long PayloadBytes, double Seconds, double GoodputBytesPerSecond, double OfLinkRate,
    long SourceLinkBytes, long[] ReceiverLinkBytes, long Datagrams, long Repairs, long Nacks, double CpuSeconds, bool Verified)
{
    /// <summary>The MTU of the lab's links.</summary>
    public int Mtu { get; init; } = NetLab.DefaultMtu;
}

/// <summary>
/// `vmscatter bench goodput`: the reliable multicast channel alone, between real hosts (a <see cref="NetLab"/>: host 0
/// sends, the others receive, each on its own veth on one bridge), with the sealing, acknowledgements and repairs a
/// migration's channel has, and nothing else (no dedup, no guests). It answers how much of a link one channel fills.
/// </summary>
public static class MulticastGoodput
{
    public static async Task<GoodputRun> RunAsync(int receivers, long linkBitsPerSecond, long payloadBytes, int messageBytes, Action<string> progress, CancellationToken cancellationToken, int mtu = NetLab.DefaultMtu)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(receivers, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(receivers, 200); // a lab host each, on one /24
        ArgumentOutOfRangeException.ThrowIfLessThan(payloadBytes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(messageBytes, 1);
        using var lab = new NetLab(receivers + 1, linkBitsPerSecond, mtu);
        var id = Guid.NewGuid();
        var key = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
        var settings = new MulticastSettings();
        var group = settings.GroupFor(id, 0);
        messageBytes = Math.Min(messageBytes, settings.MaxMessageBytes);
        var source = lab.Hosts[0];
        var sendOptions = settings.ToOptions(group, IPAddress.Parse(source.Address), settings.MaxMessageBytes, linkBitsPerSecond, seed: 1, NetworkPlace.Named(source.Namespace));
        // The stream: messages cut from a random block, each stamped with its number so no two are alike.
        var block = RandomNumberGenerator.GetBytes(1 << 20);
        int count = (int)((payloadBytes + messageBytes - 1) / messageBytes);
        byte[] Message(int i)
        {
            int length = (int)Math.Min(messageBytes, payloadBytes - (long)i * messageBytes);
            var m = new byte[length];
            for (int at = 0; at < length; at += block.Length) block.AsSpan(0, Math.Min(block.Length, length - at)).CopyTo(m.AsSpan(at));
            BitConverter.TryWriteBytes(m.AsSpan(0, Math.Min(4, length)), i);
            return m;
        }
        var expected = new XxHash3();
        for (int i = 0; i < count; i++) expected.Append(Message(i));
        ulong want = expected.GetCurrentHashAsUInt64();

        await using var sender = new MulticastSender(id, key, 0, Enumerable.Range(0, receivers), sendOptions);
        var hashes = Enumerable.Range(0, receivers).Select(_ => new XxHash3()).ToArray();
        var delivered = new long[receivers];
        var whole = Enumerable.Range(0, receivers).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).ToArray();
        var channels = new List<MulticastReceiver>();
        try
        {
            for (int r = 0; r < receivers; r++)
            {
                int self = r;
                var host = lab.Hosts[r + 1];
                var options = settings.ToOptions(group, IPAddress.Parse(host.Address), settings.MaxMessageBytes, 0, seed: r + 1, NetworkPlace.Named(host.Namespace));
                channels.Add(new MulticastReceiver(id, key, 0, self, sender.FeedbackEndPoint, options, m =>
                {
                    // One receive loop per receiver delivers in order: no lock needed for its own hash.
                    hashes[self].Append(m);
                    if ((delivered[self] += m.Length) == payloadBytes) whole[self].TrySetResult();
                    return ValueTask.CompletedTask;
                }));
            }
            var (sentBefore, receivedBefore) = lab.Counters();
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            progress($"goodput: {count:N0} messages of {messageBytes:N0} bytes to {receivers} receivers, links {(linkBitsPerSecond > 0 ? $"{linkBitsPerSecond / 1e6:0} Mbit/s" : "uncapped")}, MTU {mtu}");
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < count; i++) await sender.SendAsync(Message(i), cancellationToken).ConfigureAwait(false);
            var dropped = await sender.EndRoundAsync(0, cancellationToken).ConfigureAwait(false);
            // Every receiver acknowledged the last datagram; its receive loop may still be handing the last messages on.
            bool all = true;
            try { await Task.WhenAll(whole.Select(w => w.Task)).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false); }
            catch (TimeoutException) { all = false; }
            double seconds = clock.Elapsed.TotalSeconds;
            double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
            var (sentAfter, receivedAfter) = lab.Counters();
            long[] sent = sentAfter.Zip(sentBefore, (a, b) => a - b).ToArray();
            long[] received = receivedAfter.Zip(receivedBefore, (a, b) => a - b).ToArray();
            var stats = sender.Stats;
            bool verified = all && dropped.Count == 0 && delivered.All(d => d == payloadBytes) && hashes.All(h => h.GetCurrentHashAsUInt64() == want);
            double goodput = payloadBytes / seconds;
            return new GoodputRun(linkBitsPerSecond, receivers, payloadBytes, seconds, goodput, linkBitsPerSecond > 0 ? goodput * 8 / linkBitsPerSecond : double.NaN,
                sent[0], received[1..], stats.Datagrams, stats.Repairs, stats.Nacks, cpuSeconds, verified) { Mtu = mtu };
        }
        finally
        {
            foreach (var channel in channels) await channel.DisposeAsync().ConfigureAwait(false);
        }
    }
}
