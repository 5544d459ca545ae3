using System.Buffers.Binary;
using static VMScatter.Qemu.Migration.MigrationStreamFormat;

namespace VMScatter.Qemu.Migration;

/// <summary>A RAM block as the stream's setup names it: its id, its size and (with x-ignore-shared) its guest address.</summary>
public sealed record RamBlockInfo(string Name, ulong UsedLength, ulong? Address);

/// <summary>A device section: who it is, its version and how many bytes of state it carried.</summary>
public sealed record DeviceSection(string Name, uint InstanceId, uint Version, long Bytes);

/// <summary>What a stream held, once every byte of it was accounted for.</summary>
public sealed record MigrationStreamSummary(
    string MachineType,
    IReadOnlyList<string> Capabilities,
    IReadOnlyList<RamBlockInfo> RamBlocks,
    long PageRecords,
    long FillRecords,
    IReadOnlyDictionary<string, long> RecordsPerBlock,
    IReadOnlyList<DeviceSection> Devices)
{
    public bool IgnoresSharedRam => Capabilities.Contains("x-ignore-shared");

    /// <summary>Page and fill records the stream holds for block <paramref name="name"/>.</summary>
    public long RecordsOf(string name) => RecordsPerBlock.GetValueOrDefault(name);

    public RamBlockInfo? Block(string name) => RamBlocks.FirstOrDefault(b => b.Name == name);
}

/// <summary>One RAM record: a block's page, either its bytes or one fill byte repeated (QEMU's zero page).</summary>
public readonly ref struct RamRecord(string block, ulong offset, ReadOnlySpan<byte> bytes, byte fill, bool isFill)
{
    public string Block { get; } = block;
    public ulong Offset { get; } = offset;
    public ReadOnlySpan<byte> Bytes { get; } = bytes;
    public byte Fill { get; } = fill;
    public bool IsFill { get; } = isFill;
}

public delegate void RamRecordVisitor(RamRecord record);

/// <summary>Bounds a stream must keep before anything acts on it.</summary>
public sealed record MigrationStreamLimits
{
    public int MaxDevices { get; init; } = 1024;
    public int MaxRamBlocks { get; init; } = 256;
    public int MaxCapabilities { get; init; } = 64;
    public int MaxDescriptionBytes { get; init; } = 16 << 20;
    public static readonly MigrationStreamLimits Default = new();
}

/// <summary>
/// Reads a whole QEMU 7.2 migration stream and accounts for every byte: the header and configuration, each RAM
/// record (within its block, of a kind this reader knows), each device section against the description QEMU
/// appends (its size, its subsections' names and versions), every section's footer, the end marker and nothing
/// after the description. Refuses anything else with a <see cref="MigrationStreamException"/> naming the fault and
/// its byte. Compression, XBZRLE, postcopy, COLO and block migration are refused: VMScatter never turns them on.
/// </summary>
public static class MigrationStream
{
    public static MigrationStreamSummary Parse(ReadOnlySpan<byte> stream, RamRecordVisitor? visitor = null, MigrationStreamLimits? limits = null)
    {
        limits ??= MigrationStreamLimits.Default;
        int descriptionAt = FindDescription(stream, limits);
        var layouts = DeviceStateLayout.ParseAll(stream[(descriptionAt + 5)..], descriptionAt, limits.MaxDevices);

        var c = new StreamCursor(stream[..descriptionAt]);
        if (c.Remaining < 8 || c.U32() != Magic) throw new MigrationStreamException("not a QEMU migration stream (no QEVM magic)", 0);
        uint version = c.U32();
        if (version != StreamVersion) throw new MigrationStreamException($"stream version {version}, not {StreamVersion}", 4);
        if (c.U8() != Configuration) throw c.Fail("no configuration section after the header");
        uint machineLength = c.U32();
        if (machineLength is 0 or > 255) throw c.Fail($"a machine type name of {machineLength} bytes");
        string machine = c.Text(machineLength, "machine type");
        var capabilities = new List<string>();
        while (c.Peek() == Subsection)
        {
            c.U8();
            string name = c.Name("configuration subsection");
            c.U32(); // its version
            switch (name)
            {
                case "configuration/capabilities":
                    uint count = c.U32();
                    if (count > limits.MaxCapabilities) throw c.Fail($"{count} capabilities, more than {limits.MaxCapabilities}");
                    for (int i = 0; i < count; i++) capabilities.Add(c.Name("capability"));
                    break;
                case "configuration/page-bits":
                    if (c.U8() != 12) throw c.Fail("target pages are not 4 KiB");
                    break;
                case "configuration/uuid":
                    c.Take(16);
                    break;
                default: throw c.Fail($"unknown configuration subsection '{name}'");
            }
        }

        var state = new RamState(capabilities.Contains("x-ignore-shared"), limits.MaxRamBlocks);
        var devices = new List<DeviceSection>();
        var open = new Dictionary<uint, string>();
        var seen = new HashSet<uint>();
        int nextLayout = 0;
        while (true)
        {
            byte type = c.U8();
            if (type == EndOfStream) break;
            uint sectionId;
            switch (type)
            {
                case SectionStart or SectionFull:
                {
                    sectionId = c.U32();
                    string name = c.Name("section");
                    uint instance = c.U32(), sectionVersion = c.U32();
                    if (!seen.Add(sectionId)) throw c.Fail($"section id {sectionId} used twice");
                    if (type == SectionStart)
                    {
                        if (name != "ram") throw c.Fail($"iterative section '{name}' is not read (only RAM: block and bitmap migration are never on)");
                        if (open.ContainsValue("ram")) throw c.Fail("a second RAM section");
                        open[sectionId] = name;
                        ReadRam(ref c, state, visitor, setup: true);
                    }
                    else
                    {
                        if (nextLayout >= layouts.Count) throw c.Fail($"device section '{name}' is not in the device description");
                        var layout = layouts[nextLayout++];
                        if (layout.Name != name || layout.InstanceId != instance)
                            throw c.Fail($"device section '{name}' #{instance} where the description has '{layout.Name}' #{layout.InstanceId}");
                        if (layout.Version != sectionVersion && layout.Version != 0)
                            throw c.Fail($"device section '{name}' has version {sectionVersion}, its description {layout.Version}");
                        int start = c.Position;
                        c.Take(layout.FieldBytes);
                        foreach (var sub in layout.Subsections) ReadSubsection(ref c, sub);
                        devices.Add(new DeviceSection(name, instance, sectionVersion, c.Position - start));
                    }
                    break;
                }
                case SectionPart or SectionEnd:
                    sectionId = c.U32();
                    if (!open.ContainsKey(sectionId)) throw c.Fail($"a part of section {sectionId}, which is not an open iterative section");
                    ReadRam(ref c, state, visitor, setup: false);
                    if (type == SectionEnd) open.Remove(sectionId);
                    break;
                case Command: throw c.Fail("a command section (postcopy or COLO): not read");
                default: throw c.Fail($"unknown section type 0x{type:x2}");
            }
            if (c.U8() != SectionFooter) throw c.Fail($"section {sectionId} has no footer");
            if (c.U32() != sectionId) throw c.Fail($"section {sectionId}'s footer names another section");
        }
        if (!c.AtEnd) throw c.Fail($"{c.Remaining} bytes between the end marker and the device description");
        if (nextLayout != layouts.Count) throw c.Fail($"the device description lists {layouts.Count} devices, the stream has {nextLayout}");
        return new MigrationStreamSummary(machine, capabilities, state.Blocks, state.Pages, state.Fills, state.PerBlock, devices);
    }

    /// <summary>
    /// Where the description starts: its marker, a length that reaches exactly the stream's end, a JSON object, and
    /// the end marker before it. JSON text holds no 0x06 byte, so it is the last such marker in the stream.
    /// </summary>
    private static int FindDescription(ReadOnlySpan<byte> s, MigrationStreamLimits limits)
    {
        int floor = Math.Max(1, s.Length - limits.MaxDescriptionBytes - 5);
        for (int p = s.Length - 6; p >= floor; p--)
        {
            if (s[p] != VmDescription || s[p + 5] != (byte)'{' || s[p - 1] != EndOfStream) continue;
            if (BinaryPrimitives.ReadUInt32BigEndian(s[(p + 1)..]) == (uint)(s.Length - p - 5)) return p;
        }
        throw new MigrationStreamException("no device description at the stream's end (QEMU writes one unless suppress-vmdesc is set)", s.Length);
    }

    private static void ReadSubsection(ref StreamCursor c, SubsectionLayout sub)
    {
        if (c.U8() != Subsection) throw c.Fail($"subsection '{sub.Name}' is missing");
        string name = c.Name("subsection");
        if (name != sub.Name) throw c.Fail($"subsection '{name}' where the description has '{sub.Name}'");
        uint version = c.U32();
        if (version != sub.Version) throw c.Fail($"subsection '{name}' has version {version}, its description {sub.Version}");
        c.Take(sub.FieldBytes);
        foreach (var inner in sub.Subsections) ReadSubsection(ref c, inner);
    }

    private sealed class RamState(bool ignoreShared, int maxBlocks)
    {
        public readonly bool IgnoreShared = ignoreShared;
        public readonly int MaxBlocks = maxBlocks;
        public readonly List<RamBlockInfo> Blocks = [];
        public readonly Dictionary<string, RamBlockInfo> ByName = new(StringComparer.Ordinal);
        public RamBlockInfo? Last;
        public readonly Dictionary<string, long> PerBlock = new(StringComparer.Ordinal);
        public long Pages, Fills;
    }

    private const ulong Known = (ulong)(RamFlags.Zero | RamFlags.MemSize | RamFlags.Page | RamFlags.EndOfSection | RamFlags.Continue);

    private static void ReadRam(ref StreamCursor c, RamState state, RamRecordVisitor? visitor, bool setup)
    {
        while (true)
        {
            ulong word = c.U64();
            ulong flags = word & FlagMask, address = word & ~FlagMask;
            if ((flags & ~Known) != 0) throw c.Fail($"RAM record flags 0x{flags:x} (compression, XBZRLE or RDMA): not read");
            var kind = (RamFlags)(flags & ~(ulong)RamFlags.Continue);
            bool cont = (flags & (ulong)RamFlags.Continue) != 0;
            switch (kind)
            {
                case RamFlags.EndOfSection when !cont:
                    return;
                case RamFlags.MemSize when !cont:
                    if (!setup || state.Blocks.Count > 0) throw c.Fail("RAM block list outside the RAM section's start");
                    ReadBlocks(ref c, state, total: word & ~FlagMask);
                    break;
                case RamFlags.Zero or RamFlags.Page:
                {
                    RamBlockInfo block;
                    if (cont) block = state.Last ?? throw c.Fail("a RAM record continues a block before any was named");
                    else
                    {
                        string name = c.Name("RAM block");
                        block = state.ByName.GetValueOrDefault(name) ?? throw c.Fail($"RAM record for block '{name}', which the setup did not list");
                        state.Last = block;
                    }
                    if (address >= block.UsedLength) throw c.Fail($"RAM record at 0x{address:x}, past block '{block.Name}' of 0x{block.UsedLength:x} bytes");
                    state.PerBlock[block.Name] = state.PerBlock.GetValueOrDefault(block.Name) + 1;
                    if (kind == RamFlags.Zero)
                    {
                        byte fill = c.U8();
                        state.Fills++;
                        visitor?.Invoke(new RamRecord(block.Name, address, default, fill, isFill: true));
                    }
                    else
                    {
                        var page = c.Take(PageSize);
                        state.Pages++;
                        visitor?.Invoke(new RamRecord(block.Name, address, page, 0, isFill: false));
                    }
                    break;
                }
                default: throw c.Fail($"RAM record flags 0x{flags:x}: not one record kind");
            }
        }
    }

    private static void ReadBlocks(ref StreamCursor c, RamState state, ulong total)
    {
        ulong listed = 0;
        while (listed < total)
        {
            if (state.Blocks.Count >= state.MaxBlocks) throw c.Fail($"more than {state.MaxBlocks} RAM blocks");
            string name = c.Name("RAM block");
            ulong length = c.U64();
            if (length == 0 || length % PageSize != 0 || length > total - listed) throw c.Fail($"RAM block '{name}' of {length} bytes does not fit the announced total");
            ulong? address = state.IgnoreShared ? c.U64() : null;
            var block = new RamBlockInfo(name, length, address);
            if (!state.ByName.TryAdd(name, block)) throw c.Fail($"RAM block '{name}' listed twice");
            state.Blocks.Add(block);
            listed += length;
        }
    }
}
