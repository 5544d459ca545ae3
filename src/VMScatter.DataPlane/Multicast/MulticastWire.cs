using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using VMScatter.DataPlane.Wire;

namespace VMScatter.DataPlane.Multicast;

/// <summary>
/// Datagrams of a reliable multicast channel. Each is one sealed data-plane frame (<see cref="FrameCodec"/>: AES-256-GCM
/// under a key derived from the migration's for this channel, so its nonces never meet the TCP frames'). The frame
/// sequence is the nonce, in three disjoint spaces: data datagrams count from 0 (their sequence is the channel's
/// order), the sender's round ends carry bit 62, and each receiver's feedback bit 63 with the receiver id in bits 40-55.
/// </summary>
public static class MulticastWire
{
    public const ulong SenderControlBit = 1UL << 62;
    public const ulong FeedbackBit = 1UL << 63;
    public const int MaxReceiverId = 0xFFFF;
    /// <summary>A NACK names at most this many gaps (it stays one small datagram).</summary>
    public const int MaxNackRanges = 128;

    public static byte[] ChannelKey(ReadOnlySpan<byte> migrationKey, int channel) =>
        HKDF.DeriveKey(HashAlgorithmName.SHA256, migrationKey.ToArray(), FrameCodec.KeySize, salt: [], info: Encoding.ASCII.GetBytes($"vmscatter multicast channel {channel}"));

    public static ulong FeedbackSequence(int receiverId, ulong counter) => FeedbackBit | ((ulong)receiverId << 40) | (counter & 0xFF_FFFF_FFFF);

    public static int ReceiverOf(ulong feedbackSequence) => (int)((feedbackSequence >> 40) & 0xFFFF);

    public static byte[] RoundEnd(int round, ulong count)
    {
        var p = new byte[12];
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(4), count);
        return p;
    }

    public static (int Round, ulong Count) ReadRoundEnd(ReadOnlySpan<byte> p)
    {
        if (p.Length != 12) throw new FrameRejectedException("round end of the wrong size");
        int round = BinaryPrimitives.ReadInt32BigEndian(p);
        if (round < 0) throw new FrameRejectedException("negative round");
        return (round, BinaryPrimitives.ReadUInt64BigEndian(p[4..]));
    }

    /// <summary>"I hold every data datagram below <paramref name="contiguous"/>; the last round end I saw is <paramref name="round"/>" (-1: none).</summary>
    public static byte[] Ack(int round, ulong contiguous)
    {
        var p = new byte[12];
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(4), contiguous);
        return p;
    }

    public static (int Round, ulong Contiguous) ReadAck(ReadOnlySpan<byte> p)
    {
        if (p.Length != 12) throw new FrameRejectedException("ack of the wrong size");
        int round = BinaryPrimitives.ReadInt32BigEndian(p);
        if (round < -1) throw new FrameRejectedException("bad round in ack");
        return (round, BinaryPrimitives.ReadUInt64BigEndian(p[4..]));
    }

    public static byte[] Nack(IReadOnlyList<(ulong Start, uint Count)> gaps)
    {
        if (gaps.Count is 0 or > MaxNackRanges) throw new ArgumentOutOfRangeException(nameof(gaps));
        var p = new byte[2 + gaps.Count * 12];
        BinaryPrimitives.WriteUInt16BigEndian(p, (ushort)gaps.Count);
        for (int i = 0; i < gaps.Count; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(2 + i * 12), gaps[i].Start);
            BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(10 + i * 12), gaps[i].Count);
        }
        return p;
    }

    public static (ulong Start, uint Count)[] ReadNack(ReadOnlySpan<byte> p)
    {
        if (p.Length < 2) throw new FrameRejectedException("short nack");
        int n = BinaryPrimitives.ReadUInt16BigEndian(p);
        if (n is 0 or > MaxNackRanges || p.Length != 2 + n * 12) throw new FrameRejectedException("nack of the wrong size");
        var gaps = new (ulong, uint)[n];
        for (int i = 0; i < n; i++)
        {
            ulong start = BinaryPrimitives.ReadUInt64BigEndian(p[(2 + i * 12)..]);
            uint count = BinaryPrimitives.ReadUInt32BigEndian(p[(10 + i * 12)..]);
            if (count == 0 || start >= SenderControlBit || start + count >= SenderControlBit) throw new FrameRejectedException("bad nack range");
            gaps[i] = (start, count);
        }
        return gaps;
    }
}
