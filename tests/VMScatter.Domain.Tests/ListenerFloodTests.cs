using System.Net;
using System.Net.Sockets;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>A target's data-plane listener under a flood of connections that never become a migration.</summary>
public class ListenerFloodTests
{
    [Fact]
    public async Task Silent_and_garbage_connections_are_capped_and_closed_and_a_new_peer_is_served_after()
    {
        // Long enough that the flood is all in before the first silent connection times out, on a loaded test run too.
        var options = new DataPlaneOptions { MaxConnections = 8, HandshakeTimeout = TimeSpan.FromSeconds(5) };
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), options);
        var flood = new List<TcpClient>();
        try
        {
            // 8 silent connections fill the cap; each one after is closed on arrival.
            for (int i = 0; i < 8; i++) flood.Add(await Connect(listener));
            await Until(() => listener.OpenConnections == 8);
            var refused = new List<TcpClient>();
            for (int i = 0; i < 20; i++) refused.Add(await Connect(listener));
            foreach (var c in refused) Assert.True(await ClosedByPeer(c), "a connection beyond the cap stayed open");
            Assert.Equal(20, listener.ConnectionsRefused);
            refused.ForEach(c => c.Dispose());

            // The silent ones are closed after the handshake timeout, holding no frame buffer meanwhile.
            foreach (var c in flood) Assert.True(await ClosedByPeer(c), "a silent connection outlived the handshake timeout");
            Assert.Equal(8, listener.HandshakesTimedOut);
            await Until(() => listener.OpenConnections == 0);

            // Garbage instead of a header: refused at once, counted as a rejected frame.
            using var garbage = await Connect(listener);
            await garbage.GetStream().WriteAsync(Enumerable.Repeat((byte)0xEE, 64).ToArray());
            Assert.True(await ClosedByPeer(garbage), "a connection that sent garbage stayed open");
            Assert.Equal(1, listener.FramesRejected);
            Assert.Equal(8, listener.HandshakesTimedOut);

            // A valid-looking header that names no migration is refused at once too; a stalled frame is covered by the
            // handshake timeout like silence (the whole first frame must come and open in time).
            using var stalled = await Connect(listener);
            await stalled.GetStream().WriteAsync(new byte[] { 0x56, 0x4D, 0x53, 0x43 }); // part of a header, then nothing
            Assert.True(await ClosedByPeer(stalled), "a connection stalled inside its first header stayed open");
            Assert.Equal(9, listener.HandshakesTimedOut);

            // The cap freed: a new connection is served (it is open until its own handshake timeout).
            using var next = await Connect(listener);
            await Until(() => listener.OpenConnections == 1);
            Assert.Equal(20, listener.ConnectionsRefused);
        }
        finally
        {
            flood.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task A_peer_that_stops_in_the_middle_of_a_frame_is_cut_off_after_the_read_timeout_and_an_idle_one_is_not()
    {
        var options = new DataPlaneOptions { ReadTimeout = TimeSpan.FromMilliseconds(500) };
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), options);
        var id = Guid.NewGuid();
        var key = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        using var memory = new NativeGuestMemory(1);
        await using var receiver = new MigrationReceiver(id, new ReceiverKeys(key, new byte[FrameCodec.KeySize]), 0, [listener.LocalEndPoint],
            [new ReceiverVm(0, new VmDescription(new VmId("vm-0"), Page.Size, 1, "test", ""), memory)], options);
        listener.Register(receiver);
        using var idle = await Connect(listener);
        await idle.GetStream().WriteAsync(Hello(id, 1, key));
        using var stalled = await Connect(listener);
        await stalled.GetStream().WriteAsync(Hello(id, 2, key));
        await stalled.GetStream().WriteAsync(Hello(id, 3, key).AsMemory(0, 10)); // a frame begun, then silence

        Assert.True(await ClosedByPeer(stalled));
        Assert.Equal(1, listener.ReadsTimedOut);
        // The idle peer (between frames all along) is still served: its next frame is taken.
        await idle.GetStream().WriteAsync(Hello(id, 4, key));
        await Until(() => receiver.BytesReceived == 3 * FrameHeader.Size);
        Assert.Equal((1, 0L, 1L), (listener.OpenConnections, listener.FramesRejected, listener.ReadsTimedOut));
    }

    private static byte[] Hello(Guid migration, ulong sequence, byte[] key)
    {
        var frame = new byte[FrameHeader.Size];
        FrameCodec.Encode(FrameType.Hello, migration, sequence, [], key, frame);
        return frame;
    }

    private static async Task<TcpClient> Connect(DataPlaneListener listener)
    {
        var client = new TcpClient();
        await client.ConnectAsync(listener.LocalEndPoint);
        return client;
    }

    /// <summary>Whether the listener closed the connection (a read ends, or the connection resets) within 10 s.</summary>
    private static async Task<bool> ClosedByPeer(TcpClient client)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try { return await client.GetStream().ReadAsync(new byte[1], timeout.Token) == 0; }
        catch (IOException) { return true; }
        catch (OperationCanceledException) { return false; }
    }

    private static async Task Until(Func<bool> condition)
    {
        for (var clock = System.Diagnostics.Stopwatch.StartNew(); !condition(); await Task.Delay(10))
            if (clock.Elapsed > TimeSpan.FromSeconds(10)) throw new TimeoutException("condition not met within 10 s");
    }
}
