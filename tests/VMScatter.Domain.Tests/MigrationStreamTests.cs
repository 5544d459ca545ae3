using System.IO.Compression;
using VMScatter.Qemu.Migration;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>
/// QEMU 7.2's migration stream as the target checks a peer's device state: a real stream QEMU wrote is read whole;
/// streams cut anywhere, mutated at random or forged one fault at a time are refused with a
/// <see cref="MigrationStreamException"/>, never another exception.
/// </summary>
public sealed class MigrationStreamTests
{
    private const ulong Mem = 128UL << 20;

    /// <summary>
    /// The device state of a 128 MiB guest of VMScatter's image, paused six seconds after boot, captured from
    /// qemu-system-x86_64 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18) with x-ignore-shared, as the source captures it.
    /// </summary>
    private static byte[] RealDeviceState()
    {
        using var file = File.OpenRead(Path.Combine(AppContext.BaseDirectory, "Fixtures", "qemu-7.2-pc-device-state.stream.gz"));
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var bytes = new MemoryStream();
        gzip.CopyTo(bytes);
        return bytes.ToArray();
    }

    [Fact]
    public void A_device_state_qemu_wrote_is_read_to_its_last_byte()
    {
        var state = RealDeviceState();
        long pageBytes = 0;
        var summary = MigrationStream.Parse(state, r => pageBytes += r.IsFill ? 0 : r.Bytes.Length);

        Assert.Equal("pc-i440fx-7.2", summary.MachineType);
        Assert.Equal(["x-ignore-shared"], summary.Capabilities);
        Assert.Equal(new RamBlockInfo("mem0", Mem, 0), summary.RamBlocks[0]);
        Assert.Contains(summary.RamBlocks, b => b.Name == "pc.bios" && b.UsedLength == 256 << 10);
        // x-ignore-shared: no record of the guest's RAM, only of the small ROM blocks.
        Assert.Equal(0, summary.RecordsOf("mem0"));
        Assert.Equal((50, 80), (summary.PageRecords, summary.FillRecords));
        Assert.Equal(50 * 4096, pageBytes);
        Assert.Equal(31, summary.Devices.Count);
        Assert.Equal(["timer", "cpu_common", "cpu"], summary.Devices.Take(3).Select(d => d.Name));
        Assert.Equal("globalstate", summary.Devices[^1].Name);
        // Each section's bytes are what the description says (fields, arrays of equal elements by their length), and
        // its subsections: cpu has 1,817 bytes of fields (added up by hand from the JSON) and two 8-byte subsections.
        Assert.Equal(1817 + (1 + 1 + "cpu/poll_control_msr".Length + 4 + 8) + (1 + 1 + "cpu/msr_smi_count".Length + 4 + 8), summary.Devices.Single(d => d.Name == "cpu").Bytes);

        Assert.Equal(summary.Devices, DeviceStateCheck.Check(state, "mem0", (long)Mem).Devices);
    }

    [Fact]
    public void A_target_refuses_device_state_for_another_ram_block_or_size()
    {
        var state = RealDeviceState();
        Assert.Contains("no RAM block 'mem1'", Assert.Throws<MigrationStreamException>(() => DeviceStateCheck.Check(state, "mem1", (long)Mem)).Message);
        Assert.Contains($"of {2 * Mem} bytes", Assert.Throws<MigrationStreamException>(() => DeviceStateCheck.Check(state, "mem0", 2 * (long)Mem)).Message);
    }

    [Fact]
    public void Device_state_that_writes_guest_ram_or_was_not_captured_for_shared_ram_is_refused()
    {
        // A well-formed stream whose records would overwrite the guest's RAM behind the data plane's digest.
        var writesRam = new MigrationStreamBuilder().Header(capabilities: "x-ignore-shared")
            .RamStart(2, ignoreShared: true, ("mem0", Mem)).Page("mem0", 0x1000, 0xcc).EndOfRam().Footer(2).End();
        Assert.Equal(1, MigrationStream.Parse(writesRam).RecordsOf("mem0"));
        Assert.Contains("1 pages of the guest's RAM", Assert.Throws<MigrationStreamException>(() => DeviceStateCheck.Check(writesRam, "mem0", (long)Mem)).Message);

        var notShared = new MigrationStreamBuilder().Header().RamStart(2, ignoreShared: false, ("mem0", Mem)).EndOfRam().Footer(2).End();
        Assert.Contains("x-ignore-shared", Assert.Throws<MigrationStreamException>(() => DeviceStateCheck.Check(notShared, "mem0", (long)Mem)).Message);
    }

    [Fact]
    public void Pages_and_fills_reach_the_visitor_with_their_block_and_offset()
    {
        var stream = new MigrationStreamBuilder().Header()
            .RamStart(2, ignoreShared: false, ("mem0", 4 * 4096), ("pc.rom", 4096))
            .Page("mem0", 0x2000, 7).Fill(null, 0x3000).Page("pc.rom", 0, 9).Page("mem0", 0, 5).EndOfRam().Footer(2)
            .U8(MigrationStreamFormat.SectionPart).U32(2).Fill("mem0", 0x1000, 3).EndOfRam().Footer(2)
            .Device(3, "serial", [1, 2, 3]).End();
        var seen = new List<(string, ulong, bool, byte)>();
        var summary = MigrationStream.Parse(stream, r => seen.Add((r.Block, r.Offset, r.IsFill, r.IsFill ? r.Fill : r.Bytes[4095])));
        Assert.Equal([("mem0", 0x2000UL, false, (byte)7), ("mem0", 0x3000UL, true, (byte)0), ("pc.rom", 0UL, false, (byte)9), ("mem0", 0UL, false, (byte)5), ("mem0", 0x1000UL, true, (byte)3)], seen);
        Assert.Equal((3L, 2L, 4L), (summary.PageRecords, summary.FillRecords, summary.RecordsOf("mem0")));
        Assert.Equal(new DeviceSection("serial", 0, 1, 3), Assert.Single(summary.Devices));
    }

    public static TheoryData<string, string> Forgeries => new()
    {
        { "version", "stream version 4" },
        { "magic", "no QEVM magic" },
        { "xbzrle", "flags 0x40" },
        { "block migration", "iterative section 'block'" },
        { "footer", "footer names another section" },
        { "past block", "past block 'mem0'" },
        { "unknown block", "block 'mem9', which the setup did not list" },
        { "continue first", "continues a block before any was named" },
        { "bytes after end", "between the end marker and the device description" },
        { "device longer than described", "has no footer" },
        { "device not described", "not in the device description" },
        { "described not sent", "lists 2 devices, the stream has 1" },
        { "no description", "no device description" },
        { "part of unknown section", "not an open iterative section" },
        { "block list too long", "does not fit the announced total" },
        { "command", "command section" },
        { "description not json", "not JSON" },
    };

    [Theory]
    [MemberData(nameof(Forgeries))]
    public void A_forged_stream_is_refused_naming_its_fault(string forgery, string reason)
    {
        var b = new MigrationStreamBuilder();
        byte[] stream = forgery switch
        {
            "version" => b.Header(version: 4).End(),
            "magic" => Patch(new MigrationStreamBuilder().Header().End(), 0, 0x51, 0x45, 0x56, 0x4e),
            "xbzrle" => b.Header().RamStart(2, false, ("mem0", Mem)).U64(0x1000 | 0x40).Name("mem0").EndOfRam().Footer(2).End(),
            "block migration" => b.Header().U8(MigrationStreamFormat.SectionStart).U32(2).Name("block").U32(0).U32(1).End(),
            "footer" => b.Header().RamStart(2, false, ("mem0", Mem)).EndOfRam().Footer(3).End(),
            "past block" => b.Header().RamStart(2, false, ("mem0", 8192)).Page("mem0", 8192, 1).EndOfRam().Footer(2).End(),
            "unknown block" => b.Header().RamStart(2, false, ("mem0", Mem)).Fill("mem9", 0).EndOfRam().Footer(2).End(),
            "continue first" => b.Header().RamStart(2, false, ("mem0", Mem)).Fill(null, 0).EndOfRam().Footer(2).End(),
            "bytes after end" => b.Header().Device(3, "serial", [1]).U8(0).U8(0).Described(),
            "device longer than described" => b.Header().Device(3, "serial", [1, 2, 3, 4], describedBytes: 3).End(),
            "device not described" => b.Header().Device(3, "serial", [1], listed: false).End(),
            "described not sent" => b.Header().Device(3, "serial", [1]).Describe("""{"name": "cpu", "instance_id": 0, "version": 1, "fields": []}""").End(),
            "no description" => b.Header().U8(0).U8(0).U8(0).U8(0).U8(0).U8(0).U8(0).U8(0).U8(0).U8(0).Raw(),
            "part of unknown section" => b.Header().U8(MigrationStreamFormat.SectionPart).U32(9).EndOfRam().Footer(9).End(),
            "block list too long" => b.Header().U8(MigrationStreamFormat.SectionStart).U32(2).Name("ram").U32(0).U32(4).U64(4096 | 4).Name("mem0").U64(8192).EndOfRam().Footer(2).End(),
            "command" => b.Header().U8(MigrationStreamFormat.Command).U32(0).End(),
            "description not json" => Patch(new MigrationStreamBuilder().Header().End(), -2, (byte)'x'),
            _ => throw new ArgumentOutOfRangeException(nameof(forgery)),
        };
        var e = Assert.Throws<MigrationStreamException>(() => MigrationStream.Parse(stream));
        Assert.Contains(reason, e.Message);
        Assert.InRange(e.Offset, 0, stream.Length);
    }

    [Fact]
    public void A_stream_cut_anywhere_is_refused_even_with_its_description_put_back()
    {
        var state = RealDeviceState();
        int end = DescriptionStart(state) - 1; // the end marker
        var description = state.AsSpan(end + 1).ToArray();
        var random = new Random(16);
        var cuts = Enumerable.Range(0, 400).Concat(Enumerable.Range(0, 500).Select(_ => random.Next(end))).Concat(Enumerable.Range(end - 100, 100)).Distinct();
        int refused = 0;
        foreach (int cut in cuts)
        {
            // Cut, with and without an end marker after the cut, the description re-attached: the sizes no longer add up.
            foreach (var forged in new[] { state[..cut], [.. state[..cut], .. description], [.. state[..cut], 0, .. description] })
            {
                var e = Assert.Throws<MigrationStreamException>(() => MigrationStream.Parse(forged));
                Assert.InRange(e.Offset, 0, forged.Length);
                refused++;
            }
        }
        Assert.True(refused > 2500, $"{refused} cut streams refused");
    }

    [Fact]
    public void Random_mutations_are_read_or_refused_and_never_throw_anything_else()
    {
        var state = RealDeviceState();
        var random = new Random(7);
        int refused = 0, read = 0;
        for (int i = 0; i < 1500; i++)
        {
            var mutated = (byte[])state.Clone();
            int flips = 1 + random.Next(4);
            for (int f = 0; f < flips; f++)
            {
                // Half the mutations land in the stream's first 16 KiB (headers, RAM setup, first sections), where structure is dense.
                int at = random.Next(2) == 0 ? random.Next(Math.Min(16384, mutated.Length)) : random.Next(mutated.Length);
                mutated[at] = (byte)random.Next(256);
            }
            try { MigrationStream.Parse(mutated); read++; }
            catch (MigrationStreamException) { refused++; }
        }
        // Both happen: a flip inside opaque device state or a ROM page is still a well-formed stream.
        Assert.True(refused > 250 && read > 50, $"{refused} refused, {read} read");
    }

    [Fact]
    public void Random_bytes_are_refused()
    {
        var random = new Random(3);
        for (int i = 0; i < 2000; i++)
        {
            var bytes = new byte[random.Next(0, 4096)];
            random.NextBytes(bytes);
            // Half of them start as a stream does.
            if (i % 2 == 0 && bytes.Length >= 8) { bytes[0] = 0x51; bytes[1] = 0x45; bytes[2] = 0x56; bytes[3] = 0x4d; bytes[4] = bytes[5] = bytes[6] = 0; bytes[7] = 3; }
            Assert.Throws<MigrationStreamException>(() => MigrationStream.Parse(bytes));
        }
    }

    private static int DescriptionStart(byte[] s)
    {
        for (int p = s.Length - 6; p > 0; p--)
            if (s[p] == MigrationStreamFormat.VmDescription && s[p + 5] == '{' && s[p - 1] == 0) return p;
        throw new InvalidOperationException("no description");
    }

    private static byte[] Patch(byte[] s, int at, params byte[] bytes)
    {
        if (at < 0) at += s.Length;
        bytes.CopyTo(s, at);
        return s;
    }
}
