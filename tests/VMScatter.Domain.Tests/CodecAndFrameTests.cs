using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Domain.Tests;

public class CodecAndFrameTests
{
    private static readonly byte[] Key = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();

    [Property(MaxTest = 200)]
    public void Compression_round_trips_every_page_byte_exactly(ulong key, byte lowEntropyPercent, bool mode)
    {
        var page = new byte[Page.Size];
        PageContent.Render(key, lowEntropyPercent % 101 / 100.0, page);
        foreach (var m in new[] { CompressionMode.None, mode ? CompressionMode.Lz4 : CompressionMode.Zstd })
        {
            var encoded = new byte[PageCodec.MaxEncodedSize];
            var (encoding, length) = PageCodec.Encode(page, encoded, m);
            Assert.InRange(length, 1, Page.Size);
            var back = new byte[Page.Size];
            Assert.True(PageCodec.TryDecode(encoding, encoded.AsSpan(0, length), back));
            Assert.Equal(page, back);
        }
    }

    [Fact]
    public void Compressible_pages_shrink_and_random_pages_fall_back_to_raw()
    {
        var encoded = new byte[PageCodec.MaxEncodedSize];
        var zero = new byte[Page.Size];
        Assert.Equal(PageEncoding.Lz4, PageCodec.Encode(zero, encoded, CompressionMode.Lz4).Encoding);
        var random = new byte[Page.Size];
        new Random(1).NextBytes(random);
        var (encoding, length) = PageCodec.Encode(random, encoded, CompressionMode.Lz4);
        Assert.Equal((PageEncoding.Raw, Page.Size), (encoding, length));
    }

    [Fact]
    public void Decoding_rejects_malformed_input_instead_of_throwing()
    {
        var page = new byte[Page.Size];
        Assert.False(PageCodec.TryDecode(PageEncoding.Raw, new byte[100], page));
        Assert.False(PageCodec.TryDecode(PageEncoding.Lz4, new byte[] { 0xFF, 0xFF, 0xFF }, page));
        Assert.False(PageCodec.TryDecode(PageEncoding.Zstd, new byte[] { 1, 2, 3, 4, 5, 6 }, page));
        Assert.False(PageCodec.TryDecode((PageEncoding)9, new byte[10], page));
    }

    [Fact]
    public void A_round_end_naming_device_states_out_of_order_twice_on_a_round_not_final_or_with_a_wrong_length_is_refused()
    {
        var good = Records.WriteRoundEnd(new RoundEnd(1, 0, 0, 0, true, [1, 2]));
        Assert.Equal([1, 2], Records.ReadRoundEnd(good).DeviceStateVms);
        byte[] With(Action<byte[]> change) { var p = (byte[])good.Clone(); change(p); return p; }
        var refused = new (string Why, byte[] Payload)[]
        {
            ("out of order", With(p => (p[^1], p[^3]) = (p[^3], p[^1]))),
            ("twice", With(p => p[^1] = p[^3])),
            ("not final", With(p => p[14] = 0)),
            ("a VM short", good[..^2]),
            ("a byte over", [.. good, 0]),
            ("count over the payload", With(p => p[16] = 3)),
        };
        foreach (var (why, payload) in refused) Assert.Throws<FrameRejectedException>(() => Records.ReadRoundEnd(payload));
    }

    private static byte[] Frame(FrameType type, byte[] payload, ulong sequence = 1, byte[]? key = null)
    {
        var frame = new byte[FrameHeader.Size + payload.Length];
        FrameCodec.Encode(type, Guid.Parse("0b7c1d5e-0000-4000-8000-000000000001"), sequence, payload, key ?? Key, frame);
        return frame;
    }

    [Fact]
    public void Guest_memory_is_encrypted_on_the_wire_under_a_nonce_per_frame()
    {
        var page = new byte[Page.Size];
        "guest secret: the same text on every line. "u8.ToArray().CopyTo(page, 0);
        for (int i = 64; i < page.Length; i++) page[i] = page[i % 64];
        var first = Frame(FrameType.DeviceState, page, sequence: 1);
        var second = Frame(FrameType.DeviceState, page, sequence: 2);
        var sealed1 = first.AsSpan(FrameHeader.Size);
        // Neither the page nor any 16-byte piece of it appears in what crosses the network.
        Assert.Equal(-1, sealed1.IndexOf(page.AsSpan(0, 16)));
        Assert.False(sealed1.SequenceEqual(second.AsSpan(FrameHeader.Size))); // another sequence, another keystream
        Assert.Equal(page, FrameCodec.Decode(first, Key, 1 << 20).Payload.ToArray());
        Assert.Equal(page, FrameCodec.Decode(second, Key, 1 << 20).Payload.ToArray());
    }

    [Fact]
    public void A_frame_round_trips_and_any_flipped_bit_or_wrong_key_is_rejected()
    {
        var payload = Records.WriteRoundEnd(new RoundEnd(3, 1, 10, 20, true, [2, 7]));
        var frame = Frame(FrameType.RoundEnd, payload, sequence: 42);
        var (header, body) = FrameCodec.Decode(frame, Key, 1024);
        Assert.Equal((FrameType.RoundEnd, 42UL), (header.Type, header.Sequence));
        Assert.Equal(new RoundEnd(3, 1, 10, 20, true, [2, 7]), Records.ReadRoundEnd(body));

        for (int i = 0; i < frame.Length; i++)
        {
            var bad = (byte[])frame.Clone();
            bad[i] ^= 0x10;
            Assert.Throws<FrameRejectedException>(() => FrameCodec.Decode(bad, Key, 1024));
        }
        var otherKey = (byte[])Key.Clone();
        otherKey[0] ^= 1;
        Assert.Contains("authentication", Assert.Throws<FrameRejectedException>(() => FrameCodec.Decode(frame, otherKey, 1024)).Message);
    }

    [Fact]
    public void A_hostile_length_is_rejected_from_the_header_alone()
    {
        var frame = Frame(FrameType.MapBatch, new byte[64]);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(32), int.MaxValue);
        Assert.Contains("payload length", Assert.Throws<FrameRejectedException>(() => FrameCodec.ParseHeader(frame, 256 * 1024)).Message);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(32), -5);
        Assert.Throws<FrameRejectedException>(() => FrameCodec.ParseHeader(frame, 256 * 1024));
    }

    [Fact]
    public void Record_readers_reject_truncation_counts_that_do_not_fit_and_trailing_bytes()
    {
        var payload = new byte[Records.ContentBatchHeader + Records.ContentRecordHeader + 10];
        Records.WriteContentBatchHeader(payload, 0, 1, 1);
        int length = Records.ContentBatchHeader + Records.WriteContentRecord(payload.AsSpan(Records.ContentBatchHeader), 5, new ContentHash(1, 2), PageEncoding.Lz4, new byte[10]);
        payload = payload[..length];
        Assert.Equal(new ContentRecord(5, 2, PageEncoding.Lz4, default), Records.ReadContentBatch(payload).Records.Single() with { Encoded = default });
        Assert.Throws<FrameRejectedException>(() => Records.ReadContentBatch(payload.AsMemory(0, payload.Length - 1)));
        Assert.Throws<FrameRejectedException>(() => Records.ReadContentBatch(payload.Append((byte)0).ToArray()));
        Records.WriteContentBatchHeader(payload, 0, 1, int.MaxValue);
        Assert.Contains("does not fit", Assert.Throws<FrameRejectedException>(() => Records.ReadContentBatch(payload)).Message);

        var maps = Records.MapBatchPayload(0, 0, [new PageMap(1, 7, 4), new PageMap(1, -3, 4)]);
        Assert.Contains("out of range", Assert.Throws<FrameRejectedException>(() => Records.ReadMapBatch(maps)).Message);
        // Page deltas add up to the pages written, and ids and pages of any size come back.
        var wide = new PageMap[] { new(0, 9, 1), new(0, 2, long.MaxValue), new(65535, int.MaxValue, 300), new(3, 0, 0) };
        Assert.Equal(wide, Records.ReadMapBatch(Records.MapBatchPayload(2, 1, wide)).Maps);
        // A varint that never ends, or overflows 64 bits, is refused.
        var endless = Records.MapBatchPayload(0, 0, [new PageMap(0, 0, 1)]);
        endless = [.. endless[..Records.MapBatchHeader], .. Enumerable.Repeat((byte)0xFF, 11)];
        Assert.Throws<FrameRejectedException>(() => Records.ReadMapBatch(endless));

        var device = new byte[Records.DeviceStateHeader + 4];
        Records.WriteDeviceStateHeader(device, 0, total: 2, offset: 0);
        Assert.Contains("outside its declared size", Assert.Throws<FrameRejectedException>(() => Records.ReadDeviceState(device)).Message);
    }

    /// <summary>Fuzz: mutated valid frames and random bytes only ever produce a rejection, never another exception.</summary>
    [Fact]
    public void Fuzzed_frames_are_rejected_cleanly()
    {
        var random = new Random(12345);
        var seeds = new List<byte[]>();
        var content = new byte[Records.ContentBatchHeader + 2 * (Records.ContentRecordHeader + 16)];
        int at = Records.WriteContentBatchHeader(content, 0, 3, 2);
        at += Records.WriteContentRecord(content.AsSpan(at), 1, new ContentHash(1, 1), PageEncoding.Lz4, new byte[16]);
        at += Records.WriteContentRecord(content.AsSpan(at), 2, new ContentHash(2, 2), PageEncoding.Raw, new byte[16]);
        seeds.Add([.. content[..at], .. new byte[Records.SourceTagSize]]); // a batch for two hosts ends in the source's tag for the second
        seeds.Add(Records.MapBatchPayload(0, 0, [new PageMap(0, 5, 1), new PageMap(1, 2, 300), new PageMap(1, 9000, 0)]));
        seeds.Add(Records.WriteRoundEnd(new RoundEnd(0, 0, 1, 1, false)));
        seeds.Add(Records.WriteRoundEnd(new RoundEnd(2, 1, 0, 3, true, [0, 4])));
        var device = new byte[Records.DeviceStateHeader + 8];
        Records.WriteDeviceStateHeader(device, 0, 8, 0);
        seeds.Add(device);
        seeds.Add(Records.WithdrawnPayload(1, 0, [6, 5]));
        seeds.Add(Records.WriteChannelOpen(new ChannelOpen(3, new System.Net.IPEndPoint(System.Net.IPAddress.Parse("239.255.90.4"), 46001), new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 5000), 8192)));
        var types = new[] { FrameType.ContentBatch, FrameType.MapBatch, FrameType.RoundEnd, FrameType.RoundEnd, FrameType.DeviceState, FrameType.ContentsWithdrawn, FrameType.ChannelOpen };
        int rejected = 0, accepted = 0;
        for (int i = 0; i < 20_000; i++)
        {
            int s = random.Next(seeds.Count);
            var payload = (byte[])seeds[s].Clone();
            int flips = random.Next(1, 4);
            for (int f = 0; f < flips && payload.Length > 0; f++) payload[random.Next(payload.Length)] = (byte)random.Next(256);
            if (random.Next(4) == 0) payload = payload.AsSpan(0, random.Next(payload.Length + 1)).ToArray();
            // Authenticated garbage: the MAC is right, so only the record readers stand between it and the receiver.
            var frame = Frame(types[s], payload, (ulong)i);
            if (random.Next(3) == 0) frame[random.Next(frame.Length)] ^= (byte)(1 + random.Next(255));
            try
            {
                var (header, body) = FrameCodec.Decode(frame, Key, 1 << 20);
                switch (header.Type)
                {
                    case FrameType.ContentBatch: Records.ReadContentBatch(body); break;
                    case FrameType.MapBatch: Records.ReadMapBatch(body); break;
                    case FrameType.RoundEnd: Records.ReadRoundEnd(body); break;
                    case FrameType.DeviceState: Records.ReadDeviceState(body); break;
                    case FrameType.ContentsWithdrawn: Records.ReadWithdrawn(body); break;
                    case FrameType.ChannelOpen: Records.ReadChannelOpen(body); break;
                }
                accepted++;
            }
            catch (FrameRejectedException) { rejected++; }
        }
        Assert.Equal(20_000, rejected + accepted);
        Assert.True(rejected > 5_000, $"only {rejected} rejected");
    }
}
