using VMScatter.Domain.Compression;

namespace VMScatter.DataPlane;

/// <summary>
/// How a distinct page reaches the several hosts of a target group: the source sends a copy to each (fan-out), or sends
/// once to the first host, which relays down the chain, or sends once on the migration's reliable IP multicast channel
/// (<see cref="Multicast.MulticastSender"/>), which every target joined; maps, round ends and the rest stay on TCP.
/// </summary>
public enum GroupTransport { FanOut, RelayChain, Multicast }

/// <summary>Data-plane settings; every value comes from HOCON (vmscatter.data-plane) in the cluster nodes.</summary>
public sealed record DataPlaneOptions
{
    public int MaxPayloadBytes { get; init; } = 256 * 1024;
    public CompressionMode Compression { get; init; } = CompressionMode.Lz4;
    public GroupTransport Transport { get; init; } = GroupTransport.RelayChain;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A frame write that makes no progress for this long fails its target (a peer gone silent, its socket still open);
    /// the migration goes on without that target.
    /// </summary>
    public TimeSpan WriteTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Once a frame has begun, the rest of it must arrive within this time, or the listener closes the connection (a
    /// peer stuck mid-frame holds a frame buffer; between frames a connection may be idle for as long as it likes).
    /// </summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A target that has not applied a round this long after the source sent all of it is taken as lost.</summary>
    public TimeSpan RoundTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A target serves at most this many data-plane connections at once; more are closed as they arrive.</summary>
    public int MaxConnections { get; init; } = 256;

    /// <summary>A connection that has not sent a valid frame header within this time is closed (it holds nothing meanwhile).</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Each sending host's egress link, in bits per second (0: unlimited): a NIC, so comparisons reflect a network, not memcpy.</summary>
    public long LinkBitsPerSecond { get; init; }

    /// <summary>The modelled NIC's transmit queue (see <see cref="LinkPacer"/>); HOCON vmscatter.data-plane.link-queue.</summary>
    public long LinkQueueBytes { get; init; } = DefaultLinkQueueBytes;

    /// <summary>The network namespace this host's data-plane sockets are made in (vmscatter.data-plane.network-namespace).</summary>
    public Net.NetworkPlace Place { get; init; } = Net.NetworkPlace.Here;

    /// <summary>The multicast channel's settings (vmscatter.data-plane.multicast), used with <see cref="GroupTransport.Multicast"/>.</summary>
    public Multicast.MulticastSettings Multicast { get; init; } = new();

    /// <summary>Told every frame this host sends or receives (the node's metrics); null: nobody.</summary>
    public IDataPlaneMetrics? Metrics { get; init; }

    /// <summary>512 KiB: well inside a Linux NIC's usual queue (1,000 packets of 1,500 bytes), about 4 ms at 1 Gbit/s.</summary>
    public const long DefaultLinkQueueBytes = 512 * 1024;
}

/// <summary>What the data plane tells a node's metrics, from the threads that send and receive frames: must not block.</summary>
public interface IDataPlaneMetrics
{
    /// <summary>A frame of this many bytes, framing included, was written to a target's connection.</summary>
    void FrameSent(int bytes);

    /// <summary>A frame of this many bytes, framing included, arrived for a migration this host receives.</summary>
    void FrameReceived(int bytes);
}
