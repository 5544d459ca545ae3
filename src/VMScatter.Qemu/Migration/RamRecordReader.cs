using System.Buffers.Binary;
using System.Text;
using static VMScatter.Qemu.Migration.MigrationStreamFormat;

namespace VMScatter.Qemu.Migration;

/// <summary>One RAM record of the watched block: its page number, and its bytes or its fill byte (QEMU's zero page).</summary>
public delegate void RamPageVisitor(int page, ReadOnlySpan<byte> bytes, byte fill, bool isFill);

/// <summary>
/// Reads a live QEMU 7.2 migration stream as it arrives, without holding it whole, and hands each RAM record of one
/// block to a visitor. QEMU sends a page only when its own dirty bitmap says so (every page once, then the pages
/// written since), so the records are QEMU's dirty log as well as the pages. The header, configuration and the RAM
/// section's framing are checked as <see cref="MigrationStream"/> checks them. From the first device section on the
/// rest is drained unread (the device state is checked where it is loaded). Anything this reader does not know ends it
/// with a <see cref="MigrationStreamException"/>.
/// </summary>
public sealed class RamRecordReader(Stream stream, string block, ulong blockBytes, RamPageVisitor visitor)
{
    private readonly byte[] _buffer = new byte[1 << 16];
    private int _start, _end;
    private long _consumed;
    private readonly List<(string Name, ulong Length)> _blockList = [];
    private readonly Dictionary<string, ulong> _blocks = new(StringComparer.Ordinal);
    private string? _last;
    // What a stream for a target with x-ignore-shared is made of (see DeviceState).
    private string _machine = "";
    private readonly List<byte[]> _subsections = [];
    private uint _ramSection, _ramInstance, _ramVersion;
    private readonly Dictionary<(string Block, ulong Offset), byte[]> _otherPages = [];
    private MemoryStream? _tail;

    /// <summary>Records of the watched block seen so far (pages and fills).</summary>
    public long Records { get; private set; }

    /// <summary>Bytes read from the stream so far.</summary>
    public long Bytes => _consumed + _start;

    /// <summary>Reads until the stream ends (QEMU closes it after the end marker and the device description).</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        if (await U32Async(cancellationToken) != Magic) throw Fail("not a QEMU migration stream (no QEVM magic)");
        uint version = await U32Async(cancellationToken);
        if (version != StreamVersion) throw Fail($"stream version {version}, not {StreamVersion}");
        if (await U8Async(cancellationToken) != Configuration) throw Fail("no configuration section after the header");
        uint machineLength = await U32Async(cancellationToken);
        if (machineLength is 0 or > 255) throw Fail($"a machine type name of {machineLength} bytes");
        _machine = await TextAsync((int)machineLength, "machine type", cancellationToken);
        while (await PeekAsync(cancellationToken) == Subsection)
        {
            await U8Async(cancellationToken);
            string name = await NameAsync("configuration subsection", cancellationToken);
            uint subsectionVersion = await U32Async(cancellationToken);
            if (name is "configuration/page-bits" or "configuration/uuid")
            {
                int bytes = name == "configuration/uuid" ? 16 : 1;
                await EnsureAsync(bytes, cancellationToken);
                var raw = new MemoryStream();
                raw.WriteByte(Subsection);
                raw.WriteByte((byte)name.Length);
                raw.Write(Encoding.ASCII.GetBytes(name));
                var v = new byte[4];
                BinaryPrimitives.WriteUInt32BigEndian(v, subsectionVersion);
                raw.Write(v);
                raw.Write(_buffer.AsSpan(_start, bytes));
                _subsections.Add(raw.ToArray());
            }
            switch (name)
            {
                case "configuration/capabilities":
                    uint count = await U32Async(cancellationToken);
                    if (count > 64) throw Fail($"{count} capabilities");
                    for (int i = 0; i < count; i++)
                        if (await NameAsync("capability", cancellationToken) == "x-ignore-shared") throw Fail("x-ignore-shared is on: the stream carries no shared RAM");
                    break;
                case "configuration/page-bits":
                    if (await U8Async(cancellationToken) != 12) throw Fail("target pages are not 4 KiB");
                    break;
                case "configuration/uuid":
                    await SkipAsync(16, cancellationToken);
                    break;
                default: throw Fail($"unknown configuration subsection '{name}'");
            }
        }
        uint? ram = null;
        while (true)
        {
            byte type = await U8Async(cancellationToken);
            uint id;
            switch (type)
            {
                case SectionStart:
                {
                    id = await U32Async(cancellationToken);
                    string name = await NameAsync("section", cancellationToken);
                    _ramInstance = await U32Async(cancellationToken);
                    _ramVersion = await U32Async(cancellationToken);
                    if (name != "ram" || ram is not null) throw Fail($"iterative section '{name}' is not read (only one RAM section)");
                    ram = id;
                    _ramSection = id;
                    await RamAsync(setup: true, cancellationToken);
                    break;
                }
                case SectionPart or SectionEnd:
                    id = await U32Async(cancellationToken);
                    if (id != ram) throw Fail($"a part of section {id}, which is not the RAM section");
                    await RamAsync(setup: false, cancellationToken);
                    break;
                case SectionFull or EndOfStream:
                    // The device state: the guest is stopped and every RAM record is in. Kept as it is, to QEMU's close.
                    _tail = new MemoryStream();
                    _tail.WriteByte(type);
                    do
                    {
                        if (_tail.Length + (_end - _start) > MaxTailBytes) throw Fail($"more than {MaxTailBytes >> 20} MiB of device state");
                        _tail.Write(_buffer.AsSpan(_start, _end - _start));
                        _start = _end;
                    }
                    while (await FillAsync(cancellationToken));
                    return;
                default: throw Fail($"section type 0x{type:x2} is not read here");
            }
            if (await U8Async(cancellationToken) != SectionFooter) throw Fail($"section {id} has no footer");
            if (await U32Async(cancellationToken) != id) throw Fail($"section {id}'s footer names another section");
        }
    }

    private async Task RamAsync(bool setup, CancellationToken cancellationToken)
    {
        while (true)
        {
            ulong word = await U64Async(cancellationToken);
            ulong flags = word & FlagMask, address = word & ~FlagMask;
            bool cont = (flags & (ulong)RamFlags.Continue) != 0;
            switch ((RamFlags)(flags & ~(ulong)RamFlags.Continue))
            {
                case RamFlags.EndOfSection when !cont:
                    return;
                case RamFlags.MemSize when !cont && setup && _blocks.Count == 0:
                    for (ulong listed = 0, total = address; listed < total;)
                    {
                        if (_blocks.Count >= 256) throw Fail("more than 256 RAM blocks");
                        string name = await NameAsync("RAM block", cancellationToken);
                        ulong length = await U64Async(cancellationToken);
                        if (length == 0 || length % PageSize != 0 || length > total - listed || !_blocks.TryAdd(name, length))
                            throw Fail($"RAM block '{name}' of {length} bytes does not fit the announced total, or is listed twice");
                        _blockList.Add((name, length));
                        listed += length;
                    }
                    if (_blocks.GetValueOrDefault(block) != blockBytes) throw Fail($"no RAM block '{block}' of {blockBytes} bytes in the stream");
                    break;
                case RamFlags.Zero or RamFlags.Page:
                {
                    string name = cont ? _last ?? throw Fail("a RAM record continues a block before any was named") : await NameAsync("RAM block", cancellationToken);
                    if (!_blocks.TryGetValue(name, out ulong length)) throw Fail($"RAM record for block '{name}', which the setup did not list");
                    if (address >= length) throw Fail($"RAM record at 0x{address:x}, past block '{name}'");
                    _last = name;
                    bool isPage = (flags & (ulong)RamFlags.Page) != 0;
                    if (name != block)
                    {
                        // A small block (ROMs, ACPI tables): its latest content goes to the target with the device state.
                        await EnsureAsync(isPage ? PageSize : 1, cancellationToken);
                        if (!_otherPages.ContainsKey((name, address)) && _otherPages.Count >= MaxOtherPages) throw Fail($"more than {MaxOtherPages} pages outside block '{block}'");
                        _otherPages[(name, address)] = _buffer.AsSpan(_start, isPage ? PageSize : 1).ToArray();
                        _start += isPage ? PageSize : 1;
                        break;
                    }
                    await EnsureAsync(isPage ? PageSize : 1, cancellationToken);
                    Records++;
                    if (isPage) visitor((int)(address / PageSize), _buffer.AsSpan(_start, PageSize), 0, isFill: false);
                    else visitor((int)(address / PageSize), default, _buffer[_start], isFill: true);
                    _start += isPage ? PageSize : 1;
                    break;
                }
                default: throw Fail($"RAM record flags 0x{flags:x} (compression, XBZRLE or RDMA are never on): not read");
            }
        }
    }

    /// <summary>Pages of the blocks other than the watched one this reader keeps (the ROMs are a few hundred).</summary>
    private const int MaxOtherPages = 16384;

    private const int MaxTailBytes = 64 << 20;

    /// <summary>
    /// Once the stream was read to its end: the stream QEMU would have written with x-ignore-shared on, for a target
    /// whose QEMU maps the watched block from its own shared RAM file. The same header and configuration (with the
    /// capability listed), the block list with each block's guest address (0, as this QEMU's memory backends report),
    /// the other blocks' latest pages, and the device state exactly as QEMU sent it.
    /// </summary>
    public byte[] DeviceState()
    {
        if (_tail is null) throw new InvalidOperationException("the stream has not reached its device state");
        var o = new MemoryStream();
        var b = new byte[8];
        void U8(byte v) => o.WriteByte(v);
        void U32(uint v) { BinaryPrimitives.WriteUInt32BigEndian(b, v); o.Write(b, 0, 4); }
        void U64(ulong v) { BinaryPrimitives.WriteUInt64BigEndian(b, v); o.Write(b); }
        void Name(string n) { U8((byte)n.Length); o.Write(Encoding.ASCII.GetBytes(n)); }
        U32(Magic);
        U32(StreamVersion);
        U8(Configuration);
        U32((uint)_machine.Length);
        o.Write(Encoding.ASCII.GetBytes(_machine));
        foreach (var sub in _subsections) o.Write(sub);
        U8(Subsection);
        Name("configuration/capabilities");
        U32(1);
        U32(1);
        Name("x-ignore-shared");
        U8(SectionStart);
        U32(_ramSection);
        Name("ram");
        U32(_ramInstance);
        U32(_ramVersion);
        U64(_blockList.Aggregate(0UL, (t, x) => t + x.Length) | (ulong)RamFlags.MemSize);
        foreach (var (name, length) in _blockList)
        {
            Name(name);
            U64(length);
            U64(0);
        }
        U64((ulong)RamFlags.EndOfSection);
        U8(SectionFooter);
        U32(_ramSection);
        U8(SectionEnd);
        U32(_ramSection);
        foreach (var ((name, offset), bytes) in _otherPages.OrderBy(p => p.Key.Block, StringComparer.Ordinal).ThenBy(p => p.Key.Offset))
        {
            U64(offset | (ulong)(bytes.Length == PageSize ? RamFlags.Page : RamFlags.Zero));
            Name(name);
            o.Write(bytes);
        }
        U64((ulong)RamFlags.EndOfSection);
        U8(SectionFooter);
        U32(_ramSection);
        _tail.Position = 0;
        _tail.CopyTo(o);
        return o.ToArray();
    }

    private async ValueTask<string> NameAsync(string what, CancellationToken cancellationToken)
    {
        int length = await U8Async(cancellationToken);
        if (length == 0) throw Fail($"{what}: an empty name");
        return await TextAsync(length, what, cancellationToken);
    }

    private async ValueTask<string> TextAsync(int length, string what, CancellationToken cancellationToken)
    {
        await EnsureAsync(length, cancellationToken);
        var bytes = _buffer.AsSpan(_start, length);
        foreach (byte b in bytes)
            if (b is < 0x20 or > 0x7e) throw Fail($"{what}: a name with a byte 0x{b:x2} that is not printable");
        _start += length;
        return Encoding.ASCII.GetString(bytes);
    }

    private async ValueTask<byte> PeekAsync(CancellationToken cancellationToken)
    {
        await EnsureAsync(1, cancellationToken);
        return _buffer[_start];
    }

    private async ValueTask<byte> U8Async(CancellationToken cancellationToken)
    {
        await EnsureAsync(1, cancellationToken);
        return _buffer[_start++];
    }

    private async ValueTask<uint> U32Async(CancellationToken cancellationToken)
    {
        await EnsureAsync(4, cancellationToken);
        uint v = BinaryPrimitives.ReadUInt32BigEndian(_buffer.AsSpan(_start));
        _start += 4;
        return v;
    }

    private async ValueTask<ulong> U64Async(CancellationToken cancellationToken)
    {
        await EnsureAsync(8, cancellationToken);
        ulong v = BinaryPrimitives.ReadUInt64BigEndian(_buffer.AsSpan(_start));
        _start += 8;
        return v;
    }

    private async ValueTask SkipAsync(int count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            if (_start == _end && !await FillAsync(cancellationToken)) throw Fail("the stream ends early");
            int n = Math.Min(count, _end - _start);
            _start += n;
            count -= n;
        }
    }

    private async ValueTask EnsureAsync(int count, CancellationToken cancellationToken)
    {
        while (_end - _start < count)
            if (!await FillAsync(cancellationToken)) throw Fail("the stream ends early");
    }

    /// <summary>Moves what is unread to the front and reads more; false at the stream's end.</summary>
    private async ValueTask<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _consumed += _start;
            _end -= _start;
            _start = 0;
        }
        int n = await stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
        _end += n;
        return n > 0;
    }

    private MigrationStreamException Fail(string reason) => new(reason, _consumed + _start);
}
