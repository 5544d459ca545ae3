using VMScatter.Qemu.Migration;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>
/// The reader of a live QEMU stream: each RAM record of its block reaches the visitor with its bytes, however the
/// stream's reads are cut; the device state is drained unread; anything else is refused with a
/// <see cref="MigrationStreamException"/>, never another exception.
/// </summary>
public sealed class RamRecordReaderTests
{
    private const ulong Mem = 64 << 10; // 16 pages
    private const ulong Bios = 8 << 10;

    /// <summary>QEMU's shape: setup, a bulk part, a part re-sending written pages, the end with the last ones, devices.</summary>
    private static (byte[] Stream, int DeviceStart) Sample()
    {
        var b = new MigrationStreamBuilder().Header().RamStart(3, ignoreShared: false, ("mem0", Mem), ("pc.bios", Bios)).EndOfRam().Footer(3);
        b.U8(MigrationStreamFormat.SectionPart).U32(3).Page("mem0", 0, 0x11).Fill(null, 4096).Page(null, 2 * 4096, 0x22).Page("pc.bios", 0, 0x99).Fill("mem0", 3 * 4096, 0x05);
        for (ulong p = 4; p < 16; p++) b.Fill(null, p * 4096);
        b.EndOfRam().Footer(3);
        b.U8(MigrationStreamFormat.SectionEnd).U32(3).Page("mem0", 2 * 4096, 0x33).Fill(null, 15 * 4096).EndOfRam().Footer(3);
        int deviceStart = b.Raw().Length;
        b.Device(4, "timer", new byte[24]);
        return (b.End(), deviceStart);
    }

    private static async Task<List<(int Page, string What)>> ReadAsync(Stream stream, string block = "mem0", ulong bytes = Mem)
    {
        var seen = new List<(int, string)>();
        var reader = new RamRecordReader(stream, block, bytes, (page, data, fill, isFill) =>
            seen.Add((page, isFill ? $"fill {fill:x2}" : data.Length == 4096 && data.IndexOfAnyExcept(data[0]) < 0 ? $"page {data[0]:x2}" : "page torn")));
        await reader.RunAsync(CancellationToken.None);
        Assert.Equal(seen.Count, reader.Records);
        Assert.Equal(stream.Length, reader.Bytes);
        return seen;
    }

    private static readonly (int, string)[] Expected =
    [
        (0, "page 11"), (1, "fill 00"), (2, "page 22"), (3, "fill 05"),
        .. Enumerable.Range(4, 12).Select(p => (p, "fill 00")),
        (2, "page 33"), (15, "fill 00"),
    ];

    [Fact]
    public async Task Each_record_of_its_block_reaches_the_visitor_in_stream_order_and_other_blocks_and_devices_are_passed_over()
    {
        Assert.Equal(Expected, await ReadAsync(new MemoryStream(Sample().Stream)));
    }

    [Fact]
    public async Task Its_device_state_is_the_stream_qemu_writes_with_x_ignore_shared_and_a_target_accepts_it()
    {
        var (stream, _) = Sample();
        var reader = new RamRecordReader(new MemoryStream(stream), "mem0", Mem, (_, _, _, _) => { });
        await reader.RunAsync(CancellationToken.None);
        var state = reader.DeviceState();

        long biosBytes = 0;
        var summary = MigrationStream.Parse(state, r => { if (r.Block == "pc.bios") biosBytes += r.IsFill ? 1 : r.Bytes.Length; });
        Assert.Equal("pc-i440fx-7.2", summary.MachineType);
        Assert.Equal(["x-ignore-shared"], summary.Capabilities);
        Assert.Equal([new RamBlockInfo("mem0", Mem, 0), new RamBlockInfo("pc.bios", Bios, 0)], summary.RamBlocks);
        // None of the shared block's pages (the target maps its own RAM file); the other block's latest page.
        Assert.Equal(0, summary.RecordsOf("mem0"));
        Assert.Equal(1, summary.RecordsOf("pc.bios"));
        Assert.Equal(4096, biosBytes);
        Assert.Equal(["timer"], summary.Devices.Select(d => d.Name));
        Assert.Equal(summary.Devices, DeviceStateCheck.Check(state, "mem0", (long)Mem).Devices);
        // Asked before the stream reached its device state, there is none.
        var cut = new RamRecordReader(new MemoryStream(stream[..100]), "mem0", Mem, (_, _, _, _) => { });
        await Assert.ThrowsAsync<MigrationStreamException>(() => cut.RunAsync(CancellationToken.None));
        Assert.Throws<InvalidOperationException>(() => cut.DeviceState());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4097)]
    public async Task A_stream_read_a_few_bytes_at_a_time_gives_the_same_records(int chunk)
    {
        Assert.Equal(Expected, await ReadAsync(new ChunkedStream(Sample().Stream, chunk)));
    }

    [Fact]
    public async Task A_stream_cut_before_its_device_state_is_refused()
    {
        var (stream, deviceStart) = Sample();
        for (int cut = 0; cut < deviceStart; cut++)
        {
            var e = await Assert.ThrowsAsync<MigrationStreamException>(() => ReadAsync(new MemoryStream(stream[..cut])));
            Assert.Contains("ends early", e.Message);
        }
    }

    [Theory]
    [InlineData("ignore-shared", "x-ignore-shared is on")]
    [InlineData("other block", "no RAM block 'mem0' of 65536 bytes")]
    [InlineData("past the block", "past block 'mem0'")]
    [InlineData("unlisted block", "which the setup did not list")]
    [InlineData("xbzrle", "not read")]
    [InlineData("second iterative section", "not read")]
    [InlineData("no footer", "has no footer")]
    [InlineData("not qemu", "no QEVM magic")]
    public async Task A_forged_stream_is_refused_naming_its_fault(string forgery, string reason)
    {
        var b = forgery switch
        {
            "ignore-shared" => new MigrationStreamBuilder().Header(capabilities: "x-ignore-shared").RamStart(3, ignoreShared: true, ("mem0", Mem)).EndOfRam().Footer(3),
            "other block" => new MigrationStreamBuilder().Header().RamStart(3, ignoreShared: false, ("mem1", Mem)).EndOfRam().Footer(3),
            "not qemu" => new MigrationStreamBuilder().U32(0x12345678).U32(3),
            _ => new MigrationStreamBuilder().Header().RamStart(3, ignoreShared: false, ("mem0", Mem)).EndOfRam().Footer(3),
        };
        switch (forgery)
        {
            case "past the block": b.U8(MigrationStreamFormat.SectionPart).U32(3).Page("mem0", Mem, 1); break;
            case "unlisted block": b.U8(MigrationStreamFormat.SectionPart).U32(3).Page("pc.rom", 0, 1); break;
            case "xbzrle": b.U8(MigrationStreamFormat.SectionPart).U32(3).U64((ulong)MigrationStreamFormat.RamFlags.Xbzrle).Name("mem0"); break;
            case "second iterative section": b.U8(MigrationStreamFormat.SectionStart).U32(5).Name("block").U32(0).U32(1); break;
            case "no footer": b.U8(MigrationStreamFormat.SectionPart).U32(3).EndOfRam().U8(0x42); break;
        }
        var e = await Assert.ThrowsAsync<MigrationStreamException>(() => ReadAsync(new MemoryStream(b.End())));
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public async Task Random_mutations_are_read_or_refused_and_never_throw_anything_else()
    {
        var (stream, _) = Sample();
        var random = new Random(20261202);
        for (int i = 0; i < 2000; i++)
        {
            var mutated = (byte[])stream.Clone();
            for (int m = random.Next(1, 4); m > 0; m--) mutated[random.Next(mutated.Length)] = (byte)random.Next(256);
            try { await ReadAsync(new MemoryStream(mutated)); }
            catch (MigrationStreamException) { }
        }
        for (int i = 0; i < 500; i++)
        {
            var noise = new byte[random.Next(0, 300)];
            random.NextBytes(noise);
            await Assert.ThrowsAsync<MigrationStreamException>(() => ReadAsync(new MemoryStream(noise)));
        }
    }

    /// <summary>A stream that returns at most <paramref name="chunk"/> bytes per read, as a socket may.</summary>
    private sealed class ChunkedStream(byte[] data, int chunk) : MemoryStream(data)
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            base.ReadAsync(buffer[..Math.Min(buffer.Length, chunk)], cancellationToken);
    }
}
