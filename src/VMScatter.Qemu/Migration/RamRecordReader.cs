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
    private readonly Dictionary<string, ulong> _blocks = new(StringComparer.Ordinal);
    private string? _last;

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
        await TextAsync((int)machineLength, "machine type", cancellationToken);
        while (await PeekAsync(cancellationToken) == Subsection)
        {
            await U8Async(cancellationToken);
            string name = await NameAsync("configuration subsection", cancellationToken);
            await U32Async(cancellationToken);
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
                    await SkipAsync(8, cancellationToken); // instance and version
                    if (name != "ram" || ram is not null) throw Fail($"iterative section '{name}' is not read (only one RAM section)");
                    ram = id;
                    await RamAsync(setup: true, cancellationToken);
                    break;
                }
                case SectionPart or SectionEnd:
                    id = await U32Async(cancellationToken);
                    if (id != ram) throw Fail($"a part of section {id}, which is not the RAM section");
                    await RamAsync(setup: false, cancellationToken);
                    break;
                case SectionFull or EndOfStream:
                    // The device state: the guest is stopped and every RAM record is in. Read to QEMU's close.
                    do _start = _end;
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
                        await SkipAsync(isPage ? PageSize : 1, cancellationToken);
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
