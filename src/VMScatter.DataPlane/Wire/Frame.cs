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
}

/// <summary>
/// One data-plane frame. Layout (big-endian), 56-byte header then payload:
///   0 magic 'VMSD' | 4 version | 5 type | 6 flags (0) | 8 migration id (16) | 24 sequence | 32 payload length
///   | 36 CRC-32 of payload | 40 HMAC-SHA256(key, header[0..40] ‖ payload) truncated to 16 bytes | 56 payload.
/// The checksum catches corruption; the MAC, keyed per migration by the scheduler, rejects frames from anyone
/// else. Nothing in a frame is used before both pass.
/// </summary>
public readonly record struct FrameHeader(FrameType Type, Guid MigrationId, ulong Sequence, int PayloadLength)
{
    public const uint Magic = 0x564D5344; // "VMSD"
    public const byte Version = 1;
    public const int Size = 56;
    public const int MacSize = 16;
    public const int MacOffset = 40;
}

public sealed class FrameRejectedException(string reason) : Exception(reason);

public static class FrameCodec
{
    public const int KeySize = 32;

    /// <summary>Writes a whole frame (header + payload) into <paramref name="destination"/>; returns its length.</summary>
    public static int Encode(FrameType type, Guid migrationId, ulong sequence, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> key, Span<byte> destination)
    {
        if (key.Length != KeySize) throw new ArgumentException($"data-plane key must be {KeySize} bytes", nameof(key));
        int total = FrameHeader.Size + payload.Length;
        if (destination.Length < total) throw new ArgumentException("destination too small", nameof(destination));
        var h = destination[..FrameHeader.Size];
        BinaryPrimitives.WriteUInt32BigEndian(h, FrameHeader.Magic);
        h[4] = FrameHeader.Version;
        h[5] = (byte)type;
        BinaryPrimitives.WriteUInt16BigEndian(h[6..], 0);
        migrationId.TryWriteBytes(h[8..24], bigEndian: true, out _);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], sequence);
        BinaryPrimitives.WriteInt32BigEndian(h[32..], payload.Length);
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], Crc32.HashToUInt32(payload));
        payload.CopyTo(destination[FrameHeader.Size..]);
        ComputeMac(key, h[..FrameHeader.MacOffset], payload, h.Slice(FrameHeader.MacOffset, FrameHeader.MacSize));
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
        if (BinaryPrimitives.ReadUInt16BigEndian(header[6..]) != 0) throw new FrameRejectedException("unknown flags");
        var migration = new Guid(header[8..24], bigEndian: true);
        ulong sequence = BinaryPrimitives.ReadUInt64BigEndian(header[24..]);
        int length = BinaryPrimitives.ReadInt32BigEndian(header[32..]);
        if (length < 0 || length > maxPayload) throw new FrameRejectedException($"payload length {length} outside 0..{maxPayload}");
        return new FrameHeader(type, migration, sequence, length);
    }

    /// <summary>Verifies checksum and MAC of a complete frame whose header passed <see cref="ParseHeader"/>.</summary>
    public static void Verify(ReadOnlySpan<byte> header, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> key)
    {
        if (BinaryPrimitives.ReadUInt32BigEndian(header[36..]) != Crc32.HashToUInt32(payload)) throw new FrameRejectedException("payload checksum mismatch");
        Span<byte> mac = stackalloc byte[FrameHeader.MacSize];
        ComputeMac(key, header[..FrameHeader.MacOffset], payload, mac);
        if (!CryptographicOperations.FixedTimeEquals(mac, header.Slice(FrameHeader.MacOffset, FrameHeader.MacSize)))
            throw new FrameRejectedException("frame authentication failed");
    }

    /// <summary>Parses and verifies a whole frame held in memory (tests, fuzzing, relays).</summary>
    public static (FrameHeader Header, ReadOnlyMemory<byte> Payload) Decode(ReadOnlyMemory<byte> frame, ReadOnlySpan<byte> key, int maxPayload)
    {
        var header = ParseHeader(frame.Span, maxPayload);
        if (frame.Length != FrameHeader.Size + header.PayloadLength) throw new FrameRejectedException("frame length does not match header");
        var payload = frame[FrameHeader.Size..];
        Verify(frame.Span[..FrameHeader.Size], payload.Span, key);
        return (header, payload);
    }

    private static void ComputeMac(ReadOnlySpan<byte> key, ReadOnlySpan<byte> headerPrefix, ReadOnlySpan<byte> payload, Span<byte> mac)
    {
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, key);
        hmac.AppendData(headerPrefix);
        hmac.AppendData(payload);
        Span<byte> full = stackalloc byte[32];
        hmac.GetHashAndReset(full);
        full[..FrameHeader.MacSize].CopyTo(mac);
    }
}
