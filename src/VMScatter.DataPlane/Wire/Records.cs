using System.Buffers.Binary;
using System.Numerics;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;

namespace VMScatter.DataPlane.Wire;

// Every record's writer and reader side by side (~300 lines): the wire format is in one place, checked both ways.

/// <summary>
/// A distinct content as it travels: source-assigned id (unique per migration), a 32-bit check of its content hash
/// (the receiver hashes the decoded page and compares: a codec fault shows here, before the handover digest),
/// encoded bytes. The frame's AES-GCM tag already covers the bytes in transit; the full hash is recomputed, not sent.
/// </summary>
public readonly record struct ContentRecord(long ContentId, uint Check, PageEncoding Encoding, ReadOnlyMemory<byte> Encoded)
{
    public static uint CheckOf(ContentHash hash) => (uint)hash.Low;
}

/// <summary>Page <see cref="PageIndex"/> of VM <see cref="VmIndex"/> holds content <see cref="ContentId"/> (0 = zero page).</summary>
public readonly record struct PageMap(int VmIndex, int PageIndex, long ContentId);

/// <summary>
/// Contents for a group. A batch for more than one host ends in <see cref="SourceTags"/>: for each host after the
/// group's first, in index order, a 16-byte tag the source made under that host's own key over the payload before the
/// tags (<see cref="FrameCodec.SourceTag"/>), so a host the batch is relayed to knows the source sent exactly these
/// records, whoever relayed them. <see cref="SignedLength"/>: the payload's length without the tags.
/// </summary>
public readonly record struct ContentBatch(int Round, ulong RecipientMask, IReadOnlyList<ContentRecord> Records, int SignedLength = 0, ReadOnlyMemory<byte> SourceTags = default);

/// <summary>Join channel <see cref="Channel"/> on <see cref="Group"/>, feed back to <see cref="Feedback"/>; messages are at most <see cref="MaxMessageBytes"/>.</summary>
public readonly record struct ChannelOpen(int Channel, System.Net.IPEndPoint Group, System.Net.IPEndPoint Feedback, int MaxMessageBytes);

public readonly record struct MapBatch(int Round, int TargetIndex, IReadOnlyList<PageMap> Maps);

/// <summary>
/// The end of round <see cref="Round"/> for one target. A final round also names the VMs whose device state it carries
/// there (<see cref="DeviceStates"/>, ascending): it is applied once each of them is whole. VMs re-placed onto the target
/// for a later wave are not among them, so their arrival cannot hold this round up.
/// </summary>
public readonly record struct RoundEnd(int Round, int TargetIndex, int ExpectedContents, int ExpectedMaps, bool Final, IReadOnlyList<int>? DeviceStates = null)
{
    public IReadOnlyList<int> DeviceStateVms => DeviceStates ?? [];

    public bool Equals(RoundEnd other) =>
        (Round, TargetIndex, ExpectedContents, ExpectedMaps, Final) == (other.Round, other.TargetIndex, other.ExpectedContents, other.ExpectedMaps, other.Final)
        && DeviceStateVms.SequenceEqual(other.DeviceStateVms);

    public override int GetHashCode() => HashCode.Combine(Round, TargetIndex, ExpectedContents, ExpectedMaps, Final, DeviceStateVms.Count);
}

/// <summary>Contents of this round that target <see cref="TargetIndex"/> awaits for some pages but will not get this round.</summary>
public readonly record struct ContentsWithdrawn(int Round, int TargetIndex, IReadOnlyList<long> ContentIds);

public readonly record struct DeviceStateChunk(int VmIndex, int TotalLength, int Offset, ReadOnlyMemory<byte> Bytes);

/// <summary>
/// Payload layouts. Every reader checks each length against what remains before reading it and rejects
/// trailing bytes, so a payload that passed authentication but was built wrong still cannot read out of bounds.
/// </summary>
public static class Records
{
    public const int ContentBatchHeader = 4 + 8 + 4;
    /// <summary>Largest record header: id (varint, ≤ 9 bytes), check, encoding, length.</summary>
    public const int ContentRecordHeader = MaxVarint64 + 4 + 1 + 2;
    private const int MinContentRecord = 1 + 4 + 1 + 2 + 1;
    public const int MapBatchHeader = 4 + 2 + 4;
    /// <summary>Largest map record: VM (varint ≤ 3), page as a zigzag delta from the previous map's (≤ 5), content id (≤ 9).</summary>
    public const int MaxMapRecordSize = 3 + 5 + MaxVarint64;
    private const int MinMapRecord = 3;
    private const int MaxVarint64 = 9; // ids are positive int64: 63 bits
    /// <summary>A round end without device states; each VM named adds <see cref="RoundEndVmSize"/>.</summary>
    public const int RoundEndSize = 4 + 2 + 4 + 4 + 1 + 2;
    public const int RoundEndVmSize = 2;
    public const int DeviceStateHeader = 2 + 4 + 4;
    public const int WithdrawnHeader = 4 + 2 + 4;
    public const int WithdrawnRecordSize = 8;

    /// <summary>Largest device state accepted for one VM (QEMU's non-RAM state is about 1 MB).</summary>
    public const int MaxDeviceState = 64 << 20;

    public const int SourceTagSize = 16;

    /// <summary>The source's tags at the end of a content batch for <paramref name="mask"/>: one per host after the first.</summary>
    public static int SourceTagsSize(ulong mask) => SourceTagSize * Math.Max(0, BitOperations.PopCount(mask) - 1);

    /// <summary>
    /// A content batch on the multicast channel: the source's sequence for it (8 bytes: the nonce of its tags, and its
    /// place in the receiver's replay check, from the same counter as the TCP frames), then a content batch payload whose
    /// tags cover every member of its mask (no member got it sealed under its own key).
    /// </summary>
    public const int ChannelContentHeader = 8;

    /// <summary>The tags of a channel content batch for <paramref name="mask"/>: one per member.</summary>
    public static int ChannelTagsSize(ulong mask) => SourceTagSize * BitOperations.PopCount(mask);

    /// <summary>Reads a channel message (<see cref="ChannelContentHeader"/>): its sequence and batch, whose tags are one per member.</summary>
    public static (ulong Sequence, ContentBatch Batch) ReadChannelContent(ReadOnlyMemory<byte> message)
    {
        if (message.Length < ChannelContentHeader + ContentBatchHeader) throw new FrameRejectedException("channel message shorter than its headers");
        ulong sequence = BinaryPrimitives.ReadUInt64BigEndian(message.Span);
        if (sequence == 0) throw new FrameRejectedException("channel message without a sequence");
        var payload = message[ChannelContentHeader..];
        ulong mask = BinaryPrimitives.ReadUInt64BigEndian(payload.Span[4..]);
        if (mask == 0) throw new FrameRejectedException("channel content batch for nobody");
        int tags = ChannelTagsSize(mask);
        if (payload.Length - tags < ContentBatchHeader) throw new FrameRejectedException("channel content batch shorter than its header and tags");
        int signed = payload.Length - tags;
        var batch = ReadContentRecords(payload[..signed]);
        return (sequence, batch with { SignedLength = signed, SourceTags = payload[signed..] });
    }

    public static byte[] WriteChannelOpen(ChannelOpen open)
    {
        var p = new byte[4 + 4 + 2 + 4 + 2 + 4];
        BinaryPrimitives.WriteInt32BigEndian(p, open.Channel);
        open.Group.Address.GetAddressBytes().CopyTo(p, 4);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(8), (ushort)open.Group.Port);
        open.Feedback.Address.GetAddressBytes().CopyTo(p, 10);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(14), (ushort)open.Feedback.Port);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(16), open.MaxMessageBytes);
        return p;
    }

    public static ChannelOpen ReadChannelOpen(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int channel = r.Int32();
        var group = new System.Net.IPAddress(r.Bytes(4).Span);
        int groupPort = r.UInt16();
        var feedback = new System.Net.IPAddress(r.Bytes(4).Span);
        int feedbackPort = r.UInt16();
        int max = r.Int32();
        r.End();
        if (channel is < 0 or >= Multicast.MulticastSettings.MaxChannels) throw new FrameRejectedException($"channel {channel} outside 0..{Multicast.MulticastSettings.MaxChannels - 1}");
        if ((group.GetAddressBytes()[0] & 0xF0) != 0xE0) throw new FrameRejectedException($"channel group {group} is not a multicast address");
        if (groupPort == 0 || feedbackPort == 0) throw new FrameRejectedException("channel port 0");
        if (max is < 1024 or > 65000) throw new FrameRejectedException($"channel message size {max} outside 1024..65000");
        return new ChannelOpen(channel, new System.Net.IPEndPoint(group, groupPort), new System.Net.IPEndPoint(feedback, feedbackPort), max);
    }

    public static int WriteContentBatchHeader(Span<byte> p, int round, ulong mask, int count)
    {
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt64BigEndian(p[4..], mask);
        BinaryPrimitives.WriteInt32BigEndian(p[12..], count);
        return ContentBatchHeader;
    }

    public static int WriteContentRecord(Span<byte> p, long contentId, ContentHash hash, PageEncoding encoding, ReadOnlySpan<byte> encoded)
    {
        if (contentId <= 0) throw new ArgumentOutOfRangeException(nameof(contentId));
        int at = WriteVarint(p, (ulong)contentId);
        BinaryPrimitives.WriteUInt32BigEndian(p[at..], ContentRecord.CheckOf(hash));
        p[at + 4] = (byte)encoding;
        BinaryPrimitives.WriteUInt16BigEndian(p[(at + 5)..], checked((ushort)encoded.Length));
        encoded.CopyTo(p[(at + 7)..]);
        return at + 7 + encoded.Length;
    }

    /// <summary>Bytes a content record takes on the wire.</summary>
    public static int ContentRecordSize(long contentId, int encodedLength) => VarintSize((ulong)contentId) + 7 + encodedLength;

    public static ContentBatch ReadContentBatch(ReadOnlyMemory<byte> payload)
    {
        if (payload.Length < ContentBatchHeader) throw new FrameRejectedException("content batch shorter than its header");
        int tags = SourceTagsSize(BinaryPrimitives.ReadUInt64BigEndian(payload.Span[4..]));
        if (payload.Length - tags < ContentBatchHeader) throw new FrameRejectedException("content batch shorter than its header and source tags");
        int signed = payload.Length - tags;
        return ReadContentRecords(payload[..signed]) with { SignedLength = signed, SourceTags = payload[signed..] };
    }

    /// <summary>A content batch's header and records, with nothing after them.</summary>
    private static ContentBatch ReadContentRecords(ReadOnlyMemory<byte> signed)
    {
        var r = new Reader(signed);
        int round = r.Int32();
        ulong mask = r.UInt64();
        int count = r.Count(MinContentRecord);
        var records = new ContentRecord[count];
        for (int i = 0; i < count; i++)
        {
            long id = r.PositiveId();
            uint check = r.UInt32();
            var encoding = (PageEncoding)r.Byte();
            if (!Enum.IsDefined(encoding)) throw new FrameRejectedException($"unknown page encoding {(byte)encoding}");
            int length = r.UInt16();
            if (length == 0 || length > PageCodec.MaxEncodedSize) throw new FrameRejectedException($"encoded page length {length} outside 1..{PageCodec.MaxEncodedSize}");
            records[i] = new ContentRecord(id, check, encoding, r.Bytes(length));
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

    /// <summary>
    /// Writes one map record; <paramref name="previousPage"/> is the page of the batch's previous record (0 before the
    /// first): pages go as deltas, which are small because maps come in page order per VM and shard.
    /// </summary>
    public static int WriteMap(Span<byte> p, PageMap map, ref int previousPage)
    {
        int at = WriteVarint(p, checked((ushort)map.VmIndex));
        long delta = (long)map.PageIndex - previousPage;
        at += WriteVarint(p[at..], (ulong)((delta << 1) ^ (delta >> 63)));
        at += WriteVarint(p[at..], checked((ulong)map.ContentId));
        previousPage = map.PageIndex;
        return at;
    }

    /// <summary>A whole map batch as one payload (tests, small batches).</summary>
    public static byte[] MapBatchPayload(int round, int targetIndex, IReadOnlyList<PageMap> maps)
    {
        var p = new byte[MapBatchHeader + maps.Count * MaxMapRecordSize];
        int at = WriteMapBatchHeader(p, round, targetIndex, maps.Count), previous = 0;
        foreach (var map in maps) at += WriteMap(p.AsSpan(at), map, ref previous);
        return p[..at];
    }

    public static MapBatch ReadMapBatch(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        int round = r.Int32();
        int target = r.UInt16();
        int count = r.Count(MinMapRecord);
        var maps = new PageMap[count];
        long page = 0;
        for (int i = 0; i < count; i++)
        {
            ulong vm = r.Varint();
            ulong zigzag = r.Varint();
            page += (long)(zigzag >> 1) ^ -(long)(zigzag & 1);
            ulong content = r.Varint();
            if (vm > ushort.MaxValue) throw new FrameRejectedException($"VM index {vm} out of range");
            if (page is < 0 or > int.MaxValue || content > long.MaxValue) throw new FrameRejectedException("page index or content id out of range");
            maps[i] = new PageMap((int)vm, (int)page, (long)content);
        }
        r.End();
        return new MapBatch(round, target, maps);
    }

    public static byte[] WriteRoundEnd(RoundEnd e)
    {
        var vms = e.DeviceStateVms;
        var p = new byte[RoundEndSize + vms.Count * RoundEndVmSize];
        BinaryPrimitives.WriteInt32BigEndian(p, e.Round);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), (ushort)e.TargetIndex);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(6), e.ExpectedContents);
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(10), e.ExpectedMaps);
        p[14] = e.Final ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(15), checked((ushort)vms.Count));
        for (int i = 0; i < vms.Count; i++) BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(RoundEndSize + i * RoundEndVmSize), checked((ushort)vms[i]));
        return p;
    }

    public static RoundEnd ReadRoundEnd(ReadOnlyMemory<byte> payload)
    {
        var r = new Reader(payload);
        var (round, target, contents, maps) = (r.Int32(), r.UInt16(), r.Int32(), r.Int32());
        bool final = r.Byte() switch { 0 => false, 1 => true, var b => throw new FrameRejectedException($"bad final flag {b}") };
        int count = r.UInt16();
        if (count > 0 && !final) throw new FrameRejectedException("device states named at the end of a round that is not final");
        if (payload.Length != RoundEndSize + count * RoundEndVmSize) throw new FrameRejectedException($"round end naming {count} VMs is {payload.Length} bytes");
        var vms = new int[count];
        for (int i = 0; i < count; i++)
        {
            vms[i] = r.UInt16();
            if (i > 0 && vms[i] <= vms[i - 1]) throw new FrameRejectedException("device states named out of order or twice");
        }
        r.End();
        if (round < 0 || contents < 0 || maps < 0) throw new FrameRejectedException("negative round or count");
        return new RoundEnd(round, target, contents, maps, final, vms);
    }

    /// <summary>A withdrawn-contents payload: round, target, then each content id.</summary>
    public static byte[] WithdrawnPayload(int round, int targetIndex, ReadOnlySpan<long> contentIds)
    {
        var p = new byte[WithdrawnHeader + contentIds.Length * WithdrawnRecordSize];
        BinaryPrimitives.WriteInt32BigEndian(p, round);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), checked((ushort)targetIndex));
        BinaryPrimitives.WriteInt32BigEndian(p.AsSpan(6), contentIds.Length);
        for (int i = 0; i < contentIds.Length; i++) BinaryPrimitives.WriteInt64BigEndian(p.AsSpan(WithdrawnHeader + i * WithdrawnRecordSize), contentIds[i]);
        return p;
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

    private static int WriteVarint(Span<byte> p, ulong value)
    {
        int at = 0;
        while (value >= 0x80)
        {
            p[at++] = (byte)(value | 0x80);
            value >>= 7;
        }
        p[at++] = (byte)value;
        return at;
    }

    private static int VarintSize(ulong value)
    {
        int n = 1;
        while (value >= 0x80) { value >>= 7; n++; }
        return n;
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
        public uint UInt32() => BinaryPrimitives.ReadUInt32BigEndian(Take(4));

        /// <summary>An unsigned LEB128 value of at most 64 bits (10 bytes); longer or overflowing encodings are refused.</summary>
        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                byte b = Byte();
                if (shift == 63 && b > 1) throw new FrameRejectedException("varint overflows 64 bits");
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return value;
            }
            throw new FrameRejectedException("varint longer than 10 bytes");
        }

        public long PositiveId()
        {
            ulong id = Varint();
            if (id == 0 || id > long.MaxValue) throw new FrameRejectedException($"content id {id} is not a positive 64-bit id");
            return (long)id;
        }
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
