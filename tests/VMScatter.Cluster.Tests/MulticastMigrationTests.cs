using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Synthetic;
using Xunit;
using Xunit.Abstractions;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// --transport multicast end to end on loopback: content batches go once on the migration's reliable multicast channel,
/// maps and round ends on each target's connection; every VM verified, with and without loss, and the relay chain when
/// the channel cannot be set up.
/// </summary>
public class MulticastMigrationTests(ITestOutputHelper output)
{
    private static readonly SyntheticGuestModel Model = new() { MemoryBytes = 8L << 20, DirtyPagesPerSecond = 1500, WritableWorkingSetPages = 256 };

    private static async Task<MigrationReport> MigrateAsync(Func<string, string>? hocon = null, int osImages = 1, int applications = 1, MigrationId? id = null, Action? started = null, Action? finished = null, long linkBitsPerSecond = 0)
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(6, Model, 11, OsImages: osImages, Applications: applications));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(), ExtraHoconFor = hocon,
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
        started?.Invoke();
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(id ?? MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options(GroupTransport.Multicast) with { LinkBitsPerSecond = linkBitsPerSecond }), _ => { }, TimeSpan.FromSeconds(30));
        finished?.Invoke();
        Assert.Null(outcome.RejectedBecause);
        var report = outcome.Report!;
        Assert.True(report.Verified, TestConfig.Why(report));
        Assert.Equal((6, 3), (report.Vms, report.Targets));
        Assert.All(report.PerVm, vm => Assert.True(vm.DigestMatched && vm.HandedOver && vm.SourceDigest == vm.TargetDigest, vm.Id));
        Assert.Equal(3, report.PerVm.Select(v => v.Target).Distinct().Count());
        Assert.Empty(report.LostTargets);
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
        return report;
    }

    /// <summary>What sending every content once would take at most: round 0's distinct pages and every dirty page after, encoded, plus 15 % and 1 MiB for framing, maps and tags.</summary>
    private static long OnceBound(MigrationReport r) =>
        (long)((r.DistinctPages + r.DirtyPagesPerRound.Skip(1).Sum(p => (long)p)) * Page.Size * r.CompressionRatio * 1.15) + (1 << 20);

    [Fact]
    public async Task Content_goes_once_on_the_channel_and_every_vm_is_byte_identical_on_its_target()
    {
        var report = await MigrateAsync();
        Assert.True(report.GroupTransport == "multicast", report.TransportFallback);
        // Once on the wire for all its group: the source sent no more than the distinct contents (round 0's and the dirty
        // rounds'), not a copy per target, while the targets together took in more than it sent (each member gets every
        // channel datagram; most of this fleet's contents are one VM's own, which go to their one target by TCP).
        Assert.True(report.BytesSent <= OnceBound(report), $"sent {report.BytesSent}, bound {OnceBound(report)} ({report.DistinctPages} distinct, {string.Join("/", report.DirtyPagesPerRound)} dirty, ratio {report.CompressionRatio:0.000})");
        Assert.True(report.BytesReceived > report.BytesSent * 11 / 10, $"targets received {report.BytesReceived}, source sent {report.BytesSent}");
        Assert.True(report.BytesSent < 0.5 * report.NaiveBytes, $"sent {report.BytesSent} of naive {report.NaiveBytes}");
        // Every member joined channel 0 at the start, and every membership ended with a leave.
        Assert.True(report.MulticastChannels >= 1 && report.MulticastJoins >= 3 && report.MulticastJoins == report.MulticastLeaves,
            $"{report.MulticastChannels} channels, {report.MulticastJoins} joins, {report.MulticastLeaves} leaves");
    }

    /// <summary>
    /// Images shared by some VMs only: their groups are pairs of targets, and a group that would waste most on channel 0
    /// (every member) gets a channel of its own, its own IP group, joined by exactly its members: content still goes once.
    /// </summary>
    [Fact]
    public async Task Groups_of_some_targets_get_channels_of_their_own_joined_by_their_members_and_content_still_goes_once()
    {
        var report = await MigrateAsync(osImages: 3, applications: 2);
        Assert.True(report.GroupTransport == "multicast", report.TransportFallback);
        Assert.True(report.MulticastChannels >= 2, $"{report.MulticastChannels} channels");
        // Channel 0's three members, and at least two for each channel of a group.
        Assert.True(report.MulticastJoins >= 3 + 2 * (report.MulticastChannels - 1) && report.MulticastJoins == report.MulticastLeaves,
            $"{report.MulticastChannels} channels, {report.MulticastJoins} joins, {report.MulticastLeaves} leaves");
        Assert.True(report.BytesSent <= OnceBound(report), $"sent {report.BytesSent}, bound {OnceBound(report)}");
    }

    [Fact]
    public async Task With_5_percent_of_the_datagrams_lost_at_each_target_the_gaps_are_repaired_and_every_vm_verifies()
    {
        var report = await MigrateAsync(host => host.StartsWith("target-", StringComparison.Ordinal) ? "vmscatter.data-plane.multicast.drop-fraction = 0.05" : "");
        Assert.True(report.GroupTransport == "multicast", report.TransportFallback);
        Assert.True(report.MulticastNacks > 0 && report.MulticastRepairs > 0 && report.MulticastRepairBytes > 0,
            $"{report.MulticastNacks} NACKs, {report.MulticastRepairs} repairs, {report.MulticastRepairBytes} bytes");
    }

    // Skipped for a while as a known bug (3 fresh-clone CI runs): the 99 %-loss target was dropped, then both healthy
    // targets were lost for not applying the wave's final round sent again after it. Its re-placed VMs had reached them
    // first, and a final round waited for every VM a host received, those of later waves too
    // (DataPlaneTests.A_vm_re_placed_onto_a_host_during_its_final_round_does_not_hold_that_round_up).
    [Fact]
    public async Task A_member_that_never_catches_up_on_the_channel_is_lost_and_its_vms_are_re_placed_and_verified()
    {
        // Target 2 drops 99 % of what the channel brings (it is alive: it acknowledges and asks): the round cannot end
        // for it, so within the round timeout it is a lost target, and its VMs go to the others.
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(6, Model, 11, OsImages: 1, Applications: 1));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = 4 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            ExtraHoconFor = host => host switch
            {
                "target-2" => "vmscatter.data-plane.multicast.drop-fraction = 0.99",
                // Short enough to lose it soon, long enough for a healthy target to keep up beside the suite's other
                // classes on two cores (only the member furthest behind is dropped at each bound).
                "source" => "vmscatter.data-plane.round-timeout = 6s",
                _ => "",
            },
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
        // Round robin gives target 2 two VMs every time. Traffic-aware placement may leave it without any: one image
        // shared by every VM fits on two targets, and which two depends on how far the search got within its budget on
        // a loaded machine (a CI run placed none there, and the test had nothing to lose).
        var options = TestConfig.Options(GroupTransport.Multicast) with { Placement = PlacementStrategy.RoundRobin };
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options), _ => { }, TimeSpan.FromSeconds(60));
        var report = outcome.Report!;
        output.WriteLine(TestConfig.Why(report));
        Assert.True(report.Verified, TestConfig.Why(report));
        Assert.True(report.GroupTransport == "multicast", report.TransportFallback);
        var lost = Assert.Single(report.LostTargets);
        // Alive (it acknowledges), so not dropped for silence: lost for not catching up.
        Assert.True(lost.Contains("did not hold the round's multicast datagrams") || lost.Contains("held the multicast window"), lost);
        // Both of its VMs (none could be handed over to it) and nothing else.
        Assert.Equal(2, report.Replaced.Count);
        Assert.All(report.Replaced, r => Assert.Equal("target-2", r.LostTarget));
        Assert.All(report.Replaced, r => Assert.True(r.NewTarget is { Length: > 0 } && r.NewTarget != r.LostTarget, $"{r.Vm}: {r.LostTarget} -> {r.NewTarget}"));
        Assert.All(report.PerVm, vm => Assert.True(vm.DigestMatched && vm.HandedOver, vm.Id));
        Assert.DoesNotContain(report.PerVm, vm => report.Replaced.Any(r => r.Vm == vm.Id && r.LostTarget == vm.Target));
    }

    /// <summary>
    /// While a migration runs, thousands of datagrams (some 2,000 a second) go to its channels' groups and port: random bytes, its own datagrams
    /// replayed, truncated and with a byte flipped, and well-formed frames of another migration. Each is refused or
    /// counted as a duplicate; no target fails, and every VM verifies.
    /// </summary>
    [Fact]
    public async Task Thousands_of_stray_forged_replayed_and_truncated_datagrams_in_a_live_migration_are_counted_and_change_nothing()
    {
        var id = MigrationId.New();
        var settings = new VMScatter.DataPlane.Multicast.MulticastSettings(); // the nodes' defaults
        var groups = Enumerable.Range(0, 4).Select(c => settings.GroupFor(id.Value, c)).ToArray();
        using var stop = new CancellationTokenSource();
        int sent = 0, replayed = 0, dataSeen = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double firstData = -1, lastData = -1;
        Task? flood = null;
        double ended = 0;
        var report = await MigrateAsync(osImages: 3, applications: 2, id: id, started: () => flood = Task.Run(() => Flood(stop.Token)),
            finished: () => { ended = clock.Elapsed.TotalSeconds; stop.Cancel(); },
            linkBitsPerSecond: 100_000_000); // a paced link: the migration lasts a few seconds, the flood with it
        await flood!;
        output.WriteLine($"the channels' data seen from {firstData:0.000} to {lastData:0.000} s; migration over at {ended:0.000} s");
        Assert.True(report.GroupTransport == "multicast", report.TransportFallback);
        Assert.Empty(report.LostTargets);
        Assert.True(sent >= 1000 && replayed > 0, $"{sent} sent, {replayed} of them the migration's own");
        // Every member of a channel gets every datagram sent to it; refused: the forged, truncated and stray ones that
        // came while the members were on their channels (the others found no socket).
        string counts = $"{sent} sent ({replayed} from the migration's own; {dataSeen} data datagrams seen), {report.MulticastDatagramsRejected} refused, {report.MulticastDatagramsDuplicate} duplicates";
        output.WriteLine(counts);
        // (Replays counted as duplicates: MulticastChannelTests. Here the counts are a target's as of its final digests.)
        Assert.True(report.MulticastDatagramsRejected >= 100, counts);

        void Flood(CancellationToken token)
        {
            using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
            socket.SetSocketOption(System.Net.Sockets.SocketOptionLevel.IP, System.Net.Sockets.SocketOptionName.MulticastInterface, System.Net.IPAddress.Loopback.GetAddressBytes());
            socket.SetSocketOption(System.Net.Sockets.SocketOptionLevel.IP, System.Net.Sockets.SocketOptionName.MulticastLoopback, true);
            // The migration's own datagrams, as any host on the link sees them, with the channel each came on.
            var captures = groups.Select(g =>
            {
                var capture = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
                capture.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, true);
                capture.Bind(g);
                capture.SetSocketOption(System.Net.Sockets.SocketOptionLevel.IP, System.Net.Sockets.SocketOptionName.AddMembership, new System.Net.Sockets.MulticastOption(g.Address, System.Net.IPAddress.Loopback));
                return capture;
            }).ToArray();
            var random = new Random(7);
            var seen = new List<(byte[] Datagram, int Channel)>();
            var buffer = new byte[65536];
            var otherKey = new byte[32];
            random.NextBytes(otherKey);
            while (!token.IsCancellationRequested)
            {
                for (int c = 0; c < captures.Length; c++)
                    while (captures[c].Available > 0)
                    {
                        int n = captures[c].Receive(buffer);
                        if (n > 5 && buffer[5] == (byte)VMScatter.DataPlane.Wire.FrameType.ChannelData) { dataSeen++; lastData = clock.Elapsed.TotalSeconds; if (firstData < 0) firstData = lastData; }
                        if (seen.Count < 2000) seen.Add((buffer[..n], c));
                    }
                byte[] datagram;
                int to = random.Next(groups.Length);
                switch (random.Next(5))
                {
                    case 0:
                        datagram = new byte[random.Next(1, 2000)];
                        random.NextBytes(datagram);
                        break;
                    case 1 when seen.Count > 0:
                        (datagram, to) = seen[random.Next(seen.Count)]; // to its own channel: a true replay
                        replayed++;
                        break;
                    case 2 when seen.Count > 0:
                        var whole = seen[random.Next(seen.Count)].Datagram;
                        datagram = whole[..random.Next(whole.Length)];
                        replayed++;
                        break;
                    case 3 when seen.Count > 0:
                        datagram = (byte[])seen[random.Next(seen.Count)].Datagram.Clone();
                        datagram[random.Next(datagram.Length)] ^= (byte)(1 + random.Next(255));
                        replayed++;
                        break;
                    default:
                        // A well-formed channel datagram of another migration, under another key.
                        var payload = new byte[random.Next(16, 4000)];
                        random.NextBytes(payload);
                        datagram = new byte[VMScatter.DataPlane.Wire.FrameHeader.Size + payload.Length];
                        VMScatter.DataPlane.Wire.FrameCodec.Encode(VMScatter.DataPlane.Wire.FrameType.ChannelData, Guid.NewGuid(), (ulong)sent, payload, otherKey, datagram);
                        break;
                }
                socket.SendTo(datagram, groups[to]);
                if (++sent % 2 == 0) Thread.Sleep(1); // some 2,000 a second while the migration runs: a flood, not a denial of the suite's two cores
            }
            foreach (var capture in captures) capture.Dispose();
        }
    }

    [Fact]
    public async Task A_target_that_cannot_join_gets_its_content_by_tcp_and_the_report_says_so_while_the_others_stay_on_the_channels()
    {
        // 192.0.2.1 (TEST-NET-1) is no address of this host: target-3 cannot join any group on it. It says nothing on the
        // channels, so after the source's receiver timeout (5 s here) it is served by TCP; it missed nothing. The write
        // timeout is shorter: waiting for a member to join is not a stalled write.
        var report = await MigrateAsync(host => host switch
        {
            "target-3" => "vmscatter.data-plane.multicast.interface = \"192.0.2.1\"",
            "source" => "vmscatter.data-plane.multicast.receiver-timeout = 5s\nvmscatter.data-plane.write-timeout = 4s",
            _ => "",
        });
        Assert.Equal("multicast", report.GroupTransport);
        Assert.Contains("did not join multicast channel 0", report.TransportFallback);
        Assert.Contains("goes by TCP", report.TransportFallback);
        Assert.Empty(report.LostTargets); // checked by MigrateAsync too: every VM verified on its target
    }

    [Fact]
    public async Task A_channel_the_source_cannot_set_up_falls_back_to_the_relay_chain_and_the_report_says_so()
    {
        // 192.0.2.1 (TEST-NET-1) is no address of this host: the channel's sockets cannot bind to it.
        var report = await MigrateAsync(host => host == "source" ? "vmscatter.data-plane.multicast.interface = \"192.0.2.1\"" : "");
        Assert.Equal("relay-chain", report.GroupTransport);
        Assert.Contains("multicast channel not set up", report.TransportFallback);
        Assert.Equal(0, report.MulticastRepairs);
        Assert.Equal((0, 0L), (report.MulticastChannels, report.MulticastJoins));
    }
}
