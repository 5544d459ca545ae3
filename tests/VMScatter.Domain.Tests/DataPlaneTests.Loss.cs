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

/// <summary>The data plane when a target is lost: what the others still get, rounds sent again, VMs re-placed onto a host.</summary>
public partial class DataPlaneTests
{
    [Fact]
    public async Task A_dropped_target_gets_nothing_more_and_a_relay_chain_goes_around_it()
    {
        var contents = new Contents();
        for (int i = 1; i <= 30; i++) contents.Pages[i] = PageOf(i);
        await using var h = new Harness(targets: 3, vmTarget: [0, 1, 2], pagesPerVm: 30, GroupTransport.RelayChain);
        await h.Sender.ConnectAsync(CancellationToken.None);
        h.Sender.DropTarget(1);
        var maps = Enumerable.Range(0, 3).Select(t => (IReadOnlyList<PageMap>)Enumerable.Range(1, 30).Select(c => new PageMap(t, c - 1, c)).ToList()).ToArray();
        await h.Sender.SendRoundAsync(new RoundTransfer(0, false, [new GroupTransfer(0b111, Enumerable.Range(1, 30).Select(i => (long)i).ToArray())], maps, [], ActiveTargets: 0b101), contents, CancellationToken.None);

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Assert.Equal(new RoundOutcome(0, false, null), await h.Receivers[0].Outcomes.ReadAsync(timeout.Token));
        Assert.Equal(new RoundOutcome(0, false, null), await h.Receivers[2].Outcomes.ReadAsync(timeout.Token));
        // Host 0 relayed straight to host 2; host 1 got no frame of the round.
        Assert.Equal([30L, 0L, 30L], h.Receivers.Select(r => r.ContentRecordsReceived));
        Assert.Equal(30, h.Sender.ContentRecordsSent);
        Assert.Equal(DigestOf(h, 0, 0), DigestOf(h, 2, 2));
        Assert.Empty(h.Sender.Failures); // dropped by the control plane, not failed
    }

    [Fact]
    public async Task A_target_that_takes_no_data_fails_alone_after_the_write_timeout_and_the_round_reaches_the_others()
    {
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var accepted = silent.AcceptTcpClientAsync(); // accepts, never reads
        var options = new DataPlaneOptions { Compression = CompressionMode.None, WriteTimeout = TimeSpan.FromSeconds(1) };
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), options);
        var id = Guid.NewGuid();
        const int pages = 3000; // 12 MiB for the silent host: more than the sockets buffer
        using var memory = new NativeGuestMemory(4);
        var endpoints = new[] { (IPEndPoint)silent.LocalEndpoint, listener.LocalEndPoint };
        await using var receiver = new MigrationReceiver(id, DataPlaneKeys.ForReceiver(Key, id, 1, endpoints.Length), 1, endpoints, [new ReceiverVm(1, new VmDescription(new VmId("vm-1"), 4 * Page.Size, 1, "test", ""), memory)], options);
        listener.Register(receiver);
        await using var sender = new DataPlaneSender(id, Key, endpoints, options);
        await sender.ConnectAsync(CancellationToken.None);
        using var client = await accepted;

        var contents = new Contents();
        for (int i = 1; i <= pages + 1; i++) contents.Pages[i] = PageOf(i);
        var toSilent = Enumerable.Range(1, pages).Select(c => new PageMap(0, c - 1, c)).ToList();
        var round = new RoundTransfer(0, false, [new GroupTransfer(0b01, Enumerable.Range(1, pages).Select(i => (long)i).ToArray()), new GroupTransfer(0b10, [pages + 1])],
            [toSilent, [new PageMap(1, 0, pages + 1)]], []);
        await sender.SendRoundAsync(round, contents, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal([0], sender.Failures.Keys);
        Assert.Contains("took no data for 1 s", sender.Failures[0]);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Assert.Equal(new RoundOutcome(0, false, null), await receiver.Outcomes.ReadAsync(timeout.Token));
        var read = new byte[Page.Size];
        memory.ReadPage(0, read);
        Assert.Equal(contents.Pages[pages + 1], read);
    }

    [Fact]
    public async Task A_round_given_up_is_applied_from_its_second_sending_and_its_late_frames_are_dropped()
    {
        var id = Guid.NewGuid();
        using var memory = new NativeGuestMemory(2);
        await using var r = OneVmReceiver(id, memory);
        // Round 0 as the first sending left it: maps and content 5 in, content 6 lost with a relaying host.
        await Accept(r, Frame(id, 1, FrameType.MapBatch, MapsPayload(0, new PageMap(0, 0, 5), new PageMap(0, 1, 6))));
        await Accept(r, Frame(id, 2, FrameType.ContentBatch, ContentPayload(0, 5, PageOf(5))));
        Assert.False(r.Outcomes.TryRead(out _));

        // Sent again as round 1 (the final round): the same maps and contents, content 5 withdrawn this time (its page
        // was rewritten; this host holds it already), its device state twice over.
        await Accept(r, Frame(id, 3, FrameType.MapBatch, MapsPayload(1, new PageMap(0, 0, 5), new PageMap(0, 1, 6))));
        await Accept(r, Frame(id, 4, FrameType.ContentsWithdrawn, Records.WithdrawnPayload(1, 0, [5])));
        await Accept(r, Frame(id, 5, FrameType.ContentBatch, ContentPayload(1, 6, PageOf(6))));
        var device = new byte[Records.DeviceStateHeader + 3];
        Records.WriteDeviceStateHeader(device, 0, 3, 0);
        device[^1] = 42;
        await Accept(r, Frame(id, 6, FrameType.DeviceState, device));
        await Accept(r, Frame(id, 7, FrameType.DeviceState, device));
        await Accept(r, Frame(id, 8, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(1, 0, 1, 2, Final: true, DeviceStates: [0]))));
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Equal(new RoundOutcome(1, true, null), outcome);
        Assert.Equal([0, 0, 42], r.DeviceStateOf(0));
        var read = new byte[Page.Size];
        memory.ReadPage(0, read);
        Assert.Equal(PageOf(5), read);
        memory.ReadPage(1, read);
        Assert.Equal(PageOf(6), read);

        // A frame of round 0 still on its way (relayed late) is dropped and counted, not applied, not a failure.
        await Accept(r, Frame(id, 9, FrameType.ContentBatch, ContentPayload(0, 6, PageOf(7))));
        Assert.Equal(1, r.StaleFrames);
        memory.ReadPage(1, read);
        Assert.Equal(PageOf(6), read);
        Assert.False(r.Outcomes.TryRead(out _));
    }

    /// <summary>
    /// A target lost during a wave's final round: the scheduler re-places its VMs, and a healthy target may get one of them
    /// (a later wave's) before its own final round, or that round sent again, is in. The round still applies: it waits for
    /// the device states it names, not for every VM the host now receives. (It waited for all of them: such a host never
    /// applied the round and was lost in turn, with its VMs left on the source.)
    /// </summary>
    [Fact]
    public async Task A_vm_re_placed_onto_a_host_during_its_final_round_does_not_hold_that_round_up()
    {
        var id = Guid.NewGuid();
        using var memory0 = new NativeGuestMemory(2);
        using var memory1 = new NativeGuestMemory(2);
        await using var r = OneVmReceiver(id, memory0);
        var device = new byte[Records.DeviceStateHeader + 2];
        Records.WriteDeviceStateHeader(device, 0, 2, 0);
        device[^1] = 7;
        await Accept(r, Frame(id, 1, FrameType.MapBatch, MapsPayload(1, new PageMap(0, 0, 5))));
        await Accept(r, Frame(id, 2, FrameType.ContentBatch, ContentPayload(1, 5, PageOf(5))));
        await Accept(r, Frame(id, 3, FrameType.DeviceState, device));
        r.AddVms([new ReceiverVm(1, new VmDescription(new VmId("vm-1"), 2 * Page.Size, 1, "test", ""), memory1)]);
        await Accept(r, Frame(id, 4, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(1, 0, 1, 1, Final: true, DeviceStates: [0]))));
        Assert.True(r.Outcomes.TryRead(out var outcome));
        Assert.Equal(new RoundOutcome(1, true, null), outcome);
        Assert.Equal([0, 7], r.DeviceStateOf(0));
        Assert.Null(r.DeviceStateOf(1));

        // Its own final round, later: it waits for VM 1's device state, which it names, and VM 0's is not asked again.
        await Accept(r, Frame(id, 5, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(3, 0, 0, 0, Final: true, DeviceStates: [1]))));
        Assert.False(r.Outcomes.TryRead(out _));
        Records.WriteDeviceStateHeader(device, 1, 2, 0);
        await Accept(r, Frame(id, 6, FrameType.DeviceState, device));
        Assert.True(r.Outcomes.TryRead(out outcome));
        Assert.Equal(new RoundOutcome(3, true, null), outcome);
    }

    [Fact]
    public async Task A_round_end_naming_a_vm_the_host_does_not_receive_or_runs_already_fails_the_migration_there()
    {
        foreach (var (vm, release) in new[] { (3, false), (0, true) })
        {
            var id = Guid.NewGuid();
            using var memory = new NativeGuestMemory(2);
            await using var r = OneVmReceiver(id, memory);
            if (release) r.ReleaseVm(0);
            var e = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 1, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 0, 0, 0, Final: true, DeviceStates: [vm])))));
            Assert.Contains($"device state for VM {vm}", e.Message);
            Assert.True(r.Outcomes.TryRead(out var outcome));
            Assert.NotNull(outcome.Error);
        }
    }

    [Fact]
    public async Task A_vm_added_to_a_receiver_reuses_the_contents_it_holds_and_a_started_vm_lends_none()
    {
        var id = Guid.NewGuid();
        using var memory0 = new NativeGuestMemory(2);
        using var memory1 = new NativeGuestMemory(2);
        await using var r = OneVmReceiver(id, memory0);
        await Accept(r, Frame(id, 1, FrameType.MapBatch, MapsPayload(0, new PageMap(0, 0, 5))));
        await Accept(r, Frame(id, 2, FrameType.ContentBatch, ContentPayload(0, 5, PageOf(5))));
        await Accept(r, Frame(id, 3, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(0, 0, 1, 1, false))));
        Assert.True(r.Outcomes.TryRead(out _));

        // VM 1 is re-placed here: content 5, held in VM 0's page 0, is referenced, not sent (round 3: this host was in no round between).
        r.AddVms([new ReceiverVm(1, new VmDescription(new VmId("vm-1"), 2 * Page.Size, 1, "test", ""), memory1)]);
        await Accept(r, Frame(id, 4, FrameType.MapBatch, MapsPayload(3, new PageMap(1, 0, 5))));
        await Accept(r, Frame(id, 5, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(3, 0, 0, 1, false))));
        Assert.True(r.Outcomes.TryRead(out var applied));
        Assert.Equal(new RoundOutcome(3, false, null), applied);
        var read = new byte[Page.Size];
        memory1.ReadPage(0, read);
        Assert.Equal(PageOf(5), read);

        // VM 0 starts here, and its guest rewrites page 0: content 5 no longer lives there, so a later reference waits for it.
        r.ReleaseVm(0);
        memory0.WritePage(0, PageOf(99));
        await Accept(r, Frame(id, 6, FrameType.MapBatch, MapsPayload(4, new PageMap(1, 1, 5))));
        await Accept(r, Frame(id, 7, FrameType.RoundEnd, Records.WriteRoundEnd(new RoundEnd(4, 0, 1, 1, false))));
        Assert.False(r.Outcomes.TryRead(out _));
        await Accept(r, Frame(id, 8, FrameType.ContentBatch, ContentPayload(4, 5, PageOf(5))));
        Assert.True(r.Outcomes.TryRead(out applied));
        Assert.Equal(new RoundOutcome(4, false, null), applied);
        memory1.ReadPage(1, read);
        Assert.Equal(PageOf(5), read);

        // A started VM's memory takes no more page maps.
        var refused = await Assert.ThrowsAsync<FrameRejectedException>(() => Accept(r, Frame(id, 9, FrameType.MapBatch, MapsPayload(5, new PageMap(0, 1, 5)))));
        Assert.Contains("runs here already", refused.Message);
    }
}
