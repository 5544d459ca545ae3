using System.Buffers.Binary;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;

namespace VMScatter.DataPlane.Wire;

/// <summary>A distinct content as it travels: source-assigned id (unique per migration), hash, encoded bytes.</summary>
public readonly record struct ContentRecord(long ContentId, ContentHash Hash, PageEncoding Encoding, ReadOnlyMemory<byte> Encoded);

/// <summary>Page <see cref="PageIndex"/> of VM <see cref="VmIndex"/> holds content <see cref="ContentId"/> (0 = zero page).</summary>
public readonly record struct PageMap(int VmIndex, int PageIndex, long ContentId);

public readonly record struct ContentBatch(int Round, ulong RecipientMask, IReadOnlyList<ContentRecord> Records);

public readonly record struct MapBatch(int Round, int TargetIndex, IReadOnlyList<PageMap> Maps);

public readonly record struct RoundEnd(int Round, int TargetIndex, int ExpectedContents, int ExpectedMaps, bool Final);

/// <summary>Contents of this round that target <see cref="TargetIndex"/> awaits for some pages but will not get this round.</summary>
public readonly record struct ContentsWithdrawn(int Round, int TargetIndex, IReadOnlyList<long> ContentIds);

public readonly record struct DeviceStateChunk(int VmIndex, int TotalLength, int Offset, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// Payload layouts. Every reader checks each length against what remains before reading it and rejects
/// trailing bytes, so a payload that passed the MAC but was built wrong still cannot read out of bounds.
/// </summary>
public static class Records
{
    public const int ContentBatchHeader = 4 + 8 + 4;
    public const int ContentRecordHeader = 8 + ContentHash.Size + 1 + 2;
    public const int MapBatchHeader = 4 + 2 + 4;
    public const int MapRecordSize = 2 + 4 + 8;
    public const int RoundEndSize = 4 + 2 + 4 + 4 + 1;
    public const int DeviceStateHeader = 2 + 4 + 4;
    public const int WithdrawnHeader = 4 + 2 + 4;
    public const int WithdrawnRecordSize = 8;

    /// <summary>Largest device state accepted for one VM (QEMU's non-RAM state is about 1 MB).</summary>
    public const int MaxDeviceState = 64 << 20;

    public static int WriteContentBatchHeader(Span<byte> p, int round, ulong mask, int count)
    {
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt64BigEndian(p[4..], mask);
        BinaryPrimitives.WriteInt32BigEndian(p[12..], count);
        return ContentBatchHeader;
    }

    public static int WriteContentRecord(Span<byte> p, long contentId, ContentHash hash, PageEncoding encoding, ReadOnlySpan<byte> encoded)
    {
        BinaryPrimitives.WriteInt64BigEndian(p, contentId);
        hash.WriteTo(p[8..]);
        p[24] = (byte)encoding;
        BinaryPrimitives.WriteUInt16BigEndian(p[25..], checked((ushort)encoded.Length));
        encoded.CopyTo(p[ContentRecordHeader..]);
        return ContentRecordHeader + encoded.Length;
    }

    public static ContentBatch ReadContentBatch(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int round = r.Int32();
        ulong mask = r.UInt64();
        int count = r.Count(ContentRecordHeader + 1);
        var records = new ContentRecord[count];
        for (int i = 0; i < count; i++)
        {
            long id = r.Int64();
            if (id <= 0) throw new FrameRejectedException($"content id {id} is not positive");
            var hash = ContentHash.ReadFrom(r.Bytes(ContentHash.Size).Span);
            var encoding = (PageEncoding)r.Byte();
            if (!Enum.IsDefined(encoding)) throw new FrameRejectedException($"unknown page encoding {(byte)encoding}");
            int length = r.UInt16();
            if (length == 0 || length > PageCodec.MaxEncodedSize) throw new FrameRejectedException($"encoded page length {length} outside 1..{PageCodec.MaxEncodedSize}");
            records[i] = new ContentRecord(id, hash, encoding, r.Bytes(length));
        }
        r.End();
        return new ContentBatch(round, mask, records);
    }

    public static int WriteMapBatchHeader(Span<byte> p, int round, int targetIndex, int count)
    {
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt16BigEndian(p[4..], (ushort)targetIndex);
        BinaryPrimitives.WriteInt32BigEndian(p[6..], count);
        return MapBatchHeader;
    }

    public static int WriteMap(Span<byte> p, PageMap map)
    {
        BinaryPrimitives.WriteUInt16BigEndian(p, checked((ushort)map.VmIndex));
        BinaryPrimitives.WriteInt32BigEndian(p[2..], map.PageIndex);
        BinaryPrimitives.WriteInt64BigEndian(p[6..], map.ContentId);
        return MapRecordSize;
    }

    public static MapBatch ReadMapBatch(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int round = r.Int32();
        int target = r.UInt16();
        int count = r.Count(MapRecordSize);
        var maps = new PageMap[count];
        for (int i = 0; i < count; i++)
        {
            int vm = r.UInt16();
            int page = r.Int32();
            long content = r.Int64();
            if (page < 0 || content < 0) throw new FrameRejectedException("negative page index or content id");
            maps[i] = new PageMap(vm, page, content);
        }
        r.End();
        return new MapBatch(round, target, maps);
    }

    public static byte[] WriteRoundEnd(RoundEnd e)
    {
        var p = new byte[RoundEndSize];
        BinaryPrimitives.WriteInt32BigEndian(p, e.Round);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)e.TargetIndex);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(6), e.ExpectedContents);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(10), e.ExpectedMaps);
        p[14] = e.Final ? (byte)1 : (byte)0;
        return p;
    }

    public static RoundEnd ReadRoundEnd(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        var e = new RoundEnd(r.Int32(), r.UInt16(), r.Int32(), r.Int32(), r.Byte() switch { 0 => false, 1 => true, var b => throw new FrameRejectedException($"bad final flag {b}") });
        r.End();
        if (e.Round < 0 || e.ExpectedContents < 0 || e.ExpectedMaps < 0) throw new FrameRejectedException("negative round or count");
        return e;
    }

    public static int WriteWithdrawnHeader(Span<byte> p, int round, int targetIndex, int count)
    {
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt16BigEndian(p[4..], checked((ushort)targetIndex));
        BinaryPrimitives.WriteInt32BigEndian(p[6..], count);
        return WithdrawnHeader;
    }

    public static ContentsWithdrawn ReadWithdrawn(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int round = r.Int32();
        int target = r.UInt16();
        int count = r.Count(WithdrawnRecordSize);
        var ids = new long[count];
        for (int i = 0; i < count; i++)
            if ((ids[i] = r.Int64()) <= 0) throw new FrameRejectedException($"withdrawn content id {ids[i]} is not positive");
        r.End();
        if (round < 0) throw new FrameRejectedException("negative round");
        return new ContentsWithdrawn(round, target, ids);
    }

    public static int WriteDeviceStateHeader(Span<byte> p, int vmIndex, int total, int offset)
    {
        BinaryPrimitives.WriteUInt16BigEndian(p, checked((ushort)vmIndex));
        BinaryPrimitives.WriteInt32BigEndian(p[2..], total);
        BinaryPrimitives.WriteInt32BigEndian(p[6..], offset);
        return DeviceStateHeader;
    }

    public static DeviceStateChunk ReadDeviceState(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int vm = r.UInt16();
        int total = r.Int32();
        int offset = r.Int32();
        if (total <= 0 || total > MaxDeviceState) throw new FrameRejectedException($"device state size {total} outside 1..{MaxDeviceState}");
        var bytes = r.Rest();
        if (offset < 0 || bytes.Length == 0 || (long)offset + bytes.Length > total) throw new FrameRejectedException("device state chunk outside its declared size");
        return new DeviceStateChunk(vm, total, offset, bytes);
    }

    /// <summary>Bounds-checked big-endian reader over a payload.</summary>
    private struct Reader(ReadOnlyMemory<byte> data)
    {
        private int _at;

        private ReadOnlySpan<byte> Take(int n)
        {
            if (n < 0 || data.Length - _at < n) throw new FrameRejectedException("payload truncated");
            var s = data.Span.Slice(_at, n);
            _at += n;
            return s;
        }

        public byte Byte() => Take(1)[0];
        public int UInt16() => BinaryPrimitives.ReadUInt16BigEndian(Take(2));
        public int Int32() => BinaryPrimitives.ReadInt32BigEndian(Take(4));
        public long Int64() => BinaryPrimitives.ReadInt64BigEndian(Take(8));
        public ulong UInt64() => BinaryPrimitives.ReadUInt64BigEndian(Take(8));

        public ReadOnlyMemory<byte> Bytes(int n)
        {
            Take(n);
            return data.Slice(_at - n, n);
        }

        /// <summary>A record count, checked against the bytes left so it cannot size an allocation beyond the payload.</summary>
        public int Count(int minRecordSize)
        {
            int n = Int32();
            if (n < 0 || (long)n * minRecordSize > data.Length - _at) throw new FrameRejectedException($"record count {n} does not fit the payload");
            return n;
        }

        public ReadOnlyMemory<byte> Rest()
        {
            var rest = data[_at..];
            _at = data.Length;
            return rest;
        }

        public readonly void End()
        {
            if (_at != data.Length) throw new FrameRejectedException("trailing bytes after records");
        }
    }
}
