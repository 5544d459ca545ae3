using System.Net;

namespace VMScatter.DataPlane.Multicast;

/// <summary>One reliable multicast channel: where its datagrams go and how the sender and receivers keep it whole.</summary>
public sealed record MulticastOptions
{
    /// <summary>The channel's IP multicast group and port (an administratively scoped 239.0.0.0/8 address).</summary>
    public required IPEndPoint Group { get; init; }

    /// <summary>The interface the sender sends on and receivers join on (its address); the TTL is 1: the channel never leaves the link.</summary>
    public IPAddress Interface { get; init; } = IPAddress.Loopback;

    /// <summary>Largest message a datagram carries (its sealed frame adds 56 bytes, UDP/IP 28).</summary>
    public int MaxMessageBytes { get; init; } = 8192;

    /// <summary>Sealed datagrams the sender keeps for repair; it waits for the slowest receiver's acknowledgements beyond that.</summary>
    public long WindowBytes { get; init; } = 32L << 20;

    /// <summary>A receiver waits up to this long (uniformly drawn) before asking for a gap, so a repair another asked for may come first (NORM's back-off).</summary>
    public TimeSpan NackBackoff { get; init; } = TimeSpan.FromMilliseconds(10);

    /// <summary>A gap asked for and still open after this long is asked for again (the repair, or the request, was lost).</summary>
    public TimeSpan NackRetry { get; init; } = TimeSpan.FromMilliseconds(60);

    /// <summary>The sender repairs one datagram at most once within this time, however many receivers ask.</summary>
    public TimeSpan RepairHoldoff { get; init; } = TimeSpan.FromMilliseconds(8);

    /// <summary>Receivers acknowledge what they hold at least this often (also their sign of life).</summary>
    public TimeSpan AckInterval { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>A receiver not heard from for this long is dropped from the channel; its target is then handled as lost.</summary>
    public TimeSpan ReceiverTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The end of a round is announced again this often until every receiver acknowledged all of it.</summary>
    public TimeSpan RoundEndInterval { get; init; } = TimeSpan.FromMilliseconds(25);

    /// <summary>The sender's egress rate in bits per second (0: unlimited), repairs included.</summary>
    public long LinkBitsPerSecond { get; init; }

    /// <summary>Receivers only: this fraction of arriving datagrams is dropped before it is looked at (loss injection; netem is not available here).</summary>
    public double DropFraction { get; init; }

    /// <summary>The network namespace the channel's sockets are made in (the host's data-plane place).</summary>
    public Net.NetworkPlace Place { get; init; } = Net.NetworkPlace.Here;

    /// <summary>Seeds the receivers' loss injection and back-off draws (reproducible runs).</summary>
    public int Seed { get; init; } = 1;
}
