using System.Buffers.Binary;
using System.Security.Cryptography;
using VMScatter.Domain.Scheduling;

namespace VMScatter.DataPlane.Wire;

/// <summary>
/// The data plane's keys, all derived (HKDF-SHA256, the migration id as salt) from a migration's master secret, which
/// only the scheduler and the source hold:
///   target key K(t): frames the source seals for target t (hello, page maps, content, withdrawn, device state, round end);
///   link key K(i→j), i &lt; j: content batches target i relays to target j in a relay chain (re-sealed, not forwarded);
///   channel key K(c): the migration's multicast channel (<see cref="Multicast.MulticastWire.ChannelKey"/> derives each
///   channel's from it), given to every target only when the migration's transport is multicast.
/// Threat model: a target is trusted with its own VMs only. With K(t) and its link keys it cannot seal a frame another target
/// opens with its own key; on a relay link it can hand on content batches only (never maps, round ends, withdrawals, device
/// state), each carrying the source's tag under the next host's K (<see cref="FrameCodec.SourceTag"/>): it can drop, not forge.
/// </summary>
public static class DataPlaneKeys
{
    /// <summary>The key the source seals frames for target <paramref name="target"/> with.</summary>
    public static byte[] ForTarget(ReadOnlySpan<byte> master, Guid migrationId, int target) => Derive(master, migrationId, 1, target, 0);

    /// <summary>The key of the relay link from target <paramref name="from"/> to the later target <paramref name="to"/>.</summary>
    public static byte[] ForLink(ReadOnlySpan<byte> master, Guid migrationId, int from, int to)
    {
        if (from < 0 || to <= from || to >= TargetMask.MaxTargets) throw new ArgumentOutOfRangeException(nameof(to), $"a relay link goes from a target to a later one, not {from} → {to}");
        return Derive(master, migrationId, 2, from, to);
    }

    /// <summary>
    /// The migration's multicast channel key, shared by the source and every target. Residual risk: a member holds it, so it
    /// can disrupt the channel (inject datagrams, drop a round's place in it, forge feedback), never forge content: each
    /// content batch on it carries the source's tag per member under that member's own K(t) (<see cref="FrameCodec.SourceTag"/>).
    /// </summary>
    public static byte[] ForChannel(ReadOnlySpan<byte> master, Guid migrationId) => Derive(master, migrationId, 3, 0, 0);

    /// <summary>
    /// What target <paramref name="self"/> of <paramref name="targetCount"/> gets: its own key and the keys of the relay
    /// links it is an end of (from each earlier target, to each later one); nothing that opens another target's frames.
    /// </summary>
    /// <param name="channel">Whether the migration uses the multicast channel: then its key is included.</param>
    public static ReceiverKeys ForReceiver(ReadOnlySpan<byte> master, Guid migrationId, int self, int targetCount, bool channel = false)
    {
        if (self < 0 || self >= targetCount || targetCount > TargetMask.MaxTargets) throw new ArgumentOutOfRangeException(nameof(self), $"target {self} of {targetCount}");
        var links = new byte[targetCount * FrameCodec.KeySize];
        for (int peer = 0; peer < targetCount; peer++)
        {
            if (peer == self) continue;
            var key = peer < self ? ForLink(master, migrationId, peer, self) : ForLink(master, migrationId, self, peer);
            key.CopyTo(links, peer * FrameCodec.KeySize);
        }
        return new ReceiverKeys(ForTarget(master, migrationId, self), links, channel ? ForChannel(master, migrationId) : null);
    }

    private static byte[] Derive(ReadOnlySpan<byte> master, Guid migrationId, byte kind, int a, int b)
    {
        if (master.Length != FrameCodec.KeySize) throw new ArgumentException($"the migration's master secret must be {FrameCodec.KeySize} bytes", nameof(master));
        Span<byte> salt = stackalloc byte[16];
        migrationId.TryWriteBytes(salt, bigEndian: true, out _);
        // "vmscatter-dp3" | kind (1 target, 2 link, 3 channel) | a | b
        Span<byte> info = stackalloc byte[13 + 1 + 4 + 4];
        "vmscatter-dp3"u8.CopyTo(info);
        info[13] = kind;
        BinaryPrimitives.WriteInt32BigEndian(info[14..], a);
        BinaryPrimitives.WriteInt32BigEndian(info[18..], b);
        var key = new byte[FrameCodec.KeySize];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, master, key, salt, info);
        return key;
    }
}

/// <summary>
/// One target's key material (see <see cref="DataPlaneKeys.ForReceiver"/>): <see cref="Own"/>, and in
/// <see cref="Links"/> 32 bytes per target index, the key of the link with that target (zeros at its own index);
/// <see cref="Channel"/>: the multicast channel key (<see cref="DataPlaneKeys.ForChannel"/>), or null.
/// Never printed: <see cref="ToString"/> says only how many links it has.
/// </summary>
public sealed record ReceiverKeys(byte[] Own, byte[] Links, byte[]? Channel = null)
{
    public int LinkCount => Links.Length / FrameCodec.KeySize;

    /// <summary>The key of the link with target <paramref name="peer"/>, or empty when there is none.</summary>
    public ReadOnlySpan<byte> Link(int peer) =>
        peer >= 0 && peer < LinkCount ? Links.AsSpan(peer * FrameCodec.KeySize, FrameCodec.KeySize) : default;

    /// <summary>Why this material is malformed, or null.</summary>
    public string? Problem(int self) =>
        Own is not { Length: FrameCodec.KeySize } ? "data-plane key of the wrong size"
        : Links is null || Links.Length % FrameCodec.KeySize != 0 || LinkCount <= self ? "data-plane link keys of the wrong size"
        : Channel is not null && Channel.Length != FrameCodec.KeySize ? "multicast channel key of the wrong size"
        : null;

    public override string ToString() => Channel is null ? $"ReceiverKeys {{ {LinkCount} links, redacted }}" : $"ReceiverKeys {{ {LinkCount} links, a channel key, redacted }}";

    public bool Equals(ReceiverKeys? other) =>
        other is not null && Own.AsSpan().SequenceEqual(other.Own) && Links.AsSpan().SequenceEqual(other.Links)
        && (Channel is null ? other.Channel is null : other.Channel is not null && Channel.AsSpan().SequenceEqual(other.Channel));

    public override int GetHashCode() => Links.Length;
}
