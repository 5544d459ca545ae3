using System.Net;

namespace VMScatter.DataPlane.Multicast;

/// <summary>
/// vmscatter.data-plane.multicast: where a migration's multicast channels live and how they behave. Channel c of a
/// migration is the group address <see cref="Group"/> + c (a group of its own, so a switch copies its datagrams only to
/// its members' links), up to <see cref="Channels"/> of them; the addresses are shared by migrations, each of which takes
/// a port of <see cref="PortBase"/>..<see cref="PortBase"/>+<see cref="Ports"/>-1 from its id (a datagram of another
/// migration on the same port is refused by its id and key). The interface is the host's data-plane address unless set
/// here: a target's listener address, the source's local address of its connections.
/// </summary>
public sealed record MulticastSettings
{
    public IPAddress Group { get; init; } = IPAddress.Parse("239.255.90.1");
    public int PortBase { get; init; } = 46000;
    public int Ports { get; init; } = 1000;

    /// <summary>Channels a migration may open (<see cref="ChannelPlan"/>): channel 0 for every member, the rest for the groups that gain most from one.</summary>
    public int Channels { get; init; } = 16;

    public const int MaxChannels = 64;

    /// <summary>Null: the host's data-plane address.</summary>
    public IPAddress? Interface { get; init; }

    /// <summary>Largest channel message (a content batch with its per-member tags); at least 8 KiB, so a page and 64 tags fit.</summary>
    public int MaxMessageBytes { get; init; } = 32768;

    public TimeSpan ReceiverTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Receivers drop this fraction of arriving datagrams (loss injection, tests and the bench).</summary>
    public double DropFraction { get; init; }

    public const int MinMessageBytes = 8192;

    /// <summary>Channel <paramref name="channel"/>'s group and port for a migration.</summary>
    public IPEndPoint GroupFor(Guid migrationId, int channel)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(channel);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(channel, Channels);
        Span<byte> id = stackalloc byte[16];
        migrationId.TryWriteBytes(id);
        uint h = BitConverter.ToUInt32(id) ^ BitConverter.ToUInt32(id[4..]) ^ BitConverter.ToUInt32(id[8..]) ^ BitConverter.ToUInt32(id[12..]);
        return new IPEndPoint(Offset(Group, channel), PortBase + (int)(h % (uint)Ports));
    }

    private static IPAddress Offset(IPAddress a, int by)
    {
        var b = a.GetAddressBytes();
        uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(b) + (uint)by;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return new IPAddress(b);
    }

    /// <summary>The channel's options for one end of it.</summary>
    public MulticastOptions ToOptions(IPEndPoint group, IPAddress @interface, int maxMessageBytes, long linkBitsPerSecond, int seed, Net.NetworkPlace? place = null) => new()
    {
        Place = place ?? Net.NetworkPlace.Here,
        Group = group, Interface = @interface, MaxMessageBytes = maxMessageBytes, ReceiverTimeout = ReceiverTimeout,
        LinkBitsPerSecond = linkBitsPerSecond, DropFraction = DropFraction, Seed = seed,
    };

    /// <summary>Why these settings cannot work, or null.</summary>
    public string? Problem() =>
        !Group.IsIPv4MulticastAddress() ? $"group {Group} is not an IPv4 multicast address"
        : PortBase is < 1 or > 65535 || Ports < 1 || PortBase + Ports - 1 > 65535 ? $"ports {PortBase}..{PortBase + Ports - 1} outside 1..65535"
        : Channels is < 1 or > MaxChannels ? $"channels {Channels} outside 1..{MaxChannels}"
        : !Offset(Group, Channels - 1).IsIPv4MulticastAddress() ? $"group {Group} + {Channels - 1} channels leaves the multicast range"
        : MaxMessageBytes is < MinMessageBytes or > 60000 ? $"max-message {MaxMessageBytes} outside {MinMessageBytes}..60000"
        : DropFraction is < 0 or >= 1 ? $"drop-fraction {DropFraction} outside [0, 1)"
        : null;
}

internal static class IPAddressMulticast
{
    public static bool IsIPv4MulticastAddress(this IPAddress a) =>
        a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && (a.GetAddressBytes()[0] & 0xF0) == 0xE0;
}
