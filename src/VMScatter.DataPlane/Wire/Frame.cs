using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;

namespace VMScatter.DataPlane.Wire;

public enum FrameType : byte
{
    /// <summary>Distinct page contents for a target group: id, content hash, encoding, bytes.</summary>
    ContentBatch = 1,
    /// <summary>"Page i of VM v has content c" for VMs of one target host.</summary>
    MapBatch = 2,
    /// <summary>End of a dirty round for one target: how many records it must have received.</summary>
    RoundEnd = 3,
    /// <summary>A chunk of a paused VM's device state.</summary>
    DeviceState = 4,
    /// <summary>Contents this round announced (by page maps) for one target but will not send: their pages were rewritten first.</summary>
    ContentsWithdrawn = 5,
    /// <summary>
    /// The first frame on every connection, sent as soon as it is open, with an empty payload: it authenticates the
    /// connection at once, so the listener's handshake timeout tells a peer from a squatter however long until the
    /// round has anything for this target.
    /// </summary>
    Hello = 6,
    /// <summary>Multicast channel: one message of the channel's ordered stream (its sequence is its place).</summary>
    ChannelData = 7,
    /// <summary>Multicast channel, sender → receivers: a round ended after this many data datagrams.</summary>
    ChannelRoundEnd = 8,
    /// <summary>Multicast channel, receiver → sender: what it holds (and a sign of life).</summary>
    ChannelAck = 9,
    /// <summary>Multicast channel, receiver → sender: data datagrams it misses.</summary>
    ChannelNack = 10,
    /// <summary>
    /// On a target's TCP connection, from the source: join one of the migration's multicast channels (its number, group,
    /// the sender's feedback endpoint, message size); content batches for groups with several members come on them.
    /// </summary>
    ChannelOpen = 11,
}

/// <summary>
/// One data-plane frame. Layout (big-endian), 56-byte header then payload:
///   0 magic 'VMSD' | 4 version | 5 type | 6 sealer | 8 migration id (16) | 24 sequence | 32 payload length
///   | 36 CRC-32 of the payload | 40 AES-256-GCM tag (16 bytes) | 56 payload, encrypted.
/// The payload is sealed with AES-256-GCM: the header's first 40 bytes are its associated data and the sequence its
/// nonce. The sealer (0: the source; h + 1: target h, relaying) says which key: the source seals each frame under its
/// addressee's own key, a relaying target re-seals a content batch under the key of its link to the next host
/// (<see cref="DataPlaneKeys"/>). The source numbers its frames once per migration and never reuses a number; a relay
/// keeps the number, and re-seals only what it accepted (each number once), so no key sees a nonce twice with other
/// bytes. So guest memory is encrypted on the wire, and a frame from anyone without the key, or altered, is rejected
/// before any of it is used. The CRC, over the plaintext, is checked after opening. (Version 1 sent the payload in
/// clear under an HMAC-SHA256, which cost ~4x the CPU: 1.36 against 5.5 GiB/s here. Version 2 had one key per
/// migration, shared by all its targets.)
/// </summary>
public readonly record struct FrameHeader(FrameType Type, Guid MigrationId, ulong Sequence, int PayloadLength, int RelayedBy = FrameHeader.FromSource)
{
    /// <summary><see cref="RelayedBy"/> of a frame the source sealed.</summary>
    public const int FromSource = -1;
    public const uint Magic = 0x564D5344; // "VMSD"
    public const byte Version = 3;
    public const int Size = 56;
    public const int MacSize = 16;
    public const int MacOffset = 40;
}

public sealed class FrameRejectedException(string reason) : Exception(reason);

public static class FrameCodec
{
    public const int KeySize = 32;

    /// <summary>Writes a whole frame (header + sealed payload) into <paramref name="destination"/>; returns its length.</summary>
    /// <remarks><paramref name="relayedBy"/>: the relaying target re-sealing it, or <see cref="FrameHeader.FromSource"/>.</remarks>
    public static int Encode(FrameType type, Guid migrationId, ulong sequence, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> key, Span<byte> destination, int relayedBy = FrameHeader.FromSource)
    {
        if (relayedBy < FrameHeader.FromSource || relayedBy >= VMScatter.Domain.Scheduling.TargetMask.MaxTargets) throw new ArgumentOutOfRangeException(nameof(relayedBy));
        if (key.Length != KeySize) throw new ArgumentException($"data-plane key must be {KeySize} bytes", nameof(key));
        int total = FrameHeader.Size + payload.Length;
        if (destination.Length < total) throw new ArgumentException("destination too small", nameof(destination));
        if (payload.Overlaps(destination)) throw new ArgumentException("payload and destination overlap", nameof(destination));
        var h = destination[..FrameHeader.Size];
        BinaryPrimitives.WriteUInt32BigEndian(h, FrameHeader.Magic);
        h[4] = FrameHeader.Version;
        h[5] = (byte)type;
        BinaryPrimitives.WriteUInt16BigEndian(h[6..], (ushort)(relayedBy + 1));
        migrationId.TryWriteBytes(h[8..24], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], sequence);
        BinaryPrimitives.WriteInt32BigEndian(h[32..], payload.Length);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], Crc32.HashToUInt32(payload));
        Span<byte> nonce = stackalloc byte[NonceSize];
        NonceOf(h, nonce);
        using var gcm = new AesGcm(key, FrameHeader.MacSize);
        gcm.Encrypt(nonce, payload, destination.Slice(FrameHeader.Size, payload.Length), h.Slice(FrameHeader.MacOffset, FrameHeader.MacSize), h[..FrameHeader.MacOffset]);
        return total;
    }

    /// <summary>
    /// Checks a received header's fixed fields and size limit. Call before reading the payload, so a hostile
    /// length never makes the receiver allocate or wait for more than <paramref name="maxPayload"/>.
    /// </summary>
    public static FrameHeader ParseHeader(ReadOnlySpan<byte> header, int maxPayload)
    {
        if (header.Length < FrameHeader.Size) throw new FrameRejectedException("short header");
        if (BinaryPrimitives.ReadUInt32BigEndian(header) != FrameHeader.Magic) throw new FrameRejectedException("bad magic");
        if (header[4] != FrameHeader.Version) throw new FrameRejectedException($"unsupported version {header[4]}");
        var type = (FrameType)header[5];
        if (!Enum.IsDefined(type)) throw new FrameRejectedException($"unknown frame type {header[5]}");
        int sealer = BinaryPrimitives.ReadUInt16BigEndian(header[6..]);
        if (sealer > VMScatter.Domain.Scheduling.TargetMask.MaxTargets) throw new FrameRejectedException($"unknown sealer {sealer}");
        var migration = new Guid(header[8..24], bigEndian: true);
        ulong sequence = BinaryPrimitives.ReadUInt64BigEndian(header[24..]);
        int length = BinaryPrimitives.ReadInt32BigEndian(header[32..]);
        if (length < 0 || length > maxPayload) throw new FrameRejectedException($"payload length {length} outside 0..{maxPayload}");
        return new FrameHeader(type, migration, sequence, length, sealer - 1);
    }

    /// <summary>
    /// Opens a frame whose header passed <see cref="ParseHeader"/>: checks the tag and decrypts the payload into
    /// <paramref name="plaintext"/> (exactly the payload's length; the sealed bytes stay as they are, for relaying),
    /// then checks the CRC of what came out.
    /// </summary>
    public static void Open(ReadOnlySpan<byte> header, ReadOnlySpan<byte> sealedPayload, ReadOnlySpan<byte> key, Span<byte> plaintext)
    {
        if (plaintext.Length != sealedPayload.Length) throw new ArgumentException("plaintext must be as long as the payload", nameof(plaintext));
        Span<byte> nonce = stackalloc byte[NonceSize];
        NonceOf(header, nonce);
        try
        {
            using var gcm = new AesGcm(key, FrameHeader.MacSize);
            gcm.Decrypt(nonce, sealedPayload, header.Slice(FrameHeader.MacOffset, FrameHeader.MacSize), plaintext, header[..FrameHeader.MacOffset]);
        }
        catch (CryptographicException)
        {
            plaintext.Clear();
            throw new FrameRejectedException("frame authentication failed");
        }
        if (BinaryPrimitives.ReadUInt32BigEndian(header[36..]) != Crc32.HashToUInt32(plaintext)) throw new FrameRejectedException("payload checksum mismatch");
    }

    /// <summary>Parses and opens a whole frame held in memory (tests, fuzzing); the payload comes back decrypted.</summary>
    public static (FrameHeader Header, ReadOnlyMemory<byte> Payload) Decode(ReadOnlyMemory<byte> frame, ReadOnlySpan<byte> key, int maxPayload)
    {
        var header = ParseHeader(frame.Span, maxPayload);
        if (frame.Length != FrameHeader.Size + header.PayloadLength) throw new FrameRejectedException("frame length does not match header");
        var plaintext = new byte[header.PayloadLength];
        Open(frame.Span[..FrameHeader.Size], frame.Span[FrameHeader.Size..], key, plaintext);
        return (header, plaintext);
    }

    /// <summary>
    /// The source's tag for one later host of a relay chain over a content batch's records (<see cref="ContentBatch.SourceTags"/>):
    /// an AES-GCM tag with nothing encrypted, under that host's own key, the frame's sequence as nonce (its last 4 bytes 1:
    /// frames use 0, so no nonce serves both).
    /// </summary>
    public static void SourceTag(ReadOnlySpan<byte> key, ulong sequence, ReadOnlySpan<byte> signed, Span<byte> tag)
    {
        Span<byte> nonce = stackalloc byte[NonceSize];
        nonce.Clear();
        BinaryPrimitives.WriteUInt64BigEndian(nonce, sequence);
        nonce[NonceSize - 1] = 1;
        using var gcm = new AesGcm(key, FrameHeader.MacSize);
        gcm.Encrypt(nonce, ReadOnlySpan<byte>.Empty, Span<byte>.Empty, tag[..FrameHeader.MacSize], signed);
    }

    /// <summary>Whether <paramref name="tag"/> is the source's tag over <paramref name="signed"/> under <paramref name="key"/>.</summary>
    public static bool IsSourceTag(ReadOnlySpan<byte> key, ulong sequence, ReadOnlySpan<byte> signed, ReadOnlySpan<byte> tag)
    {
        Span<byte> expected = stackalloc byte[FrameHeader.MacSize];
        SourceTag(key, sequence, signed, expected);
        return tag.Length == FrameHeader.MacSize && CryptographicOperations.FixedTimeEquals(expected, tag);
    }

    private const int NonceSize = 12;

    /// <summary>The frame's sequence, unique per migration key, in the first 8 of the 12 nonce bytes.</summary>
    private static void NonceOf(ReadOnlySpan<byte> header, Span<byte> nonce)
    {
        nonce.Clear();
        header.Slice(24, 8).CopyTo(nonce);
    }
}
