using System.Buffers.Binary;
using System.Text;
using VMScatter.Qemu.Migration;

namespace VMScatter.Domain.Tests;

/// <summary>Writes small QEMU 7.2 migration streams byte by byte, so a test can forge exactly one fault.</summary>
internal sealed class MigrationStreamBuilder
{
    private readonly MemoryStream _body = new();
    private readonly List<string> _devices = [];

    public MigrationStreamBuilder U8(byte v) { _body.WriteByte(v); return this; }
    public MigrationStreamBuilder U32(uint v) { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); _body.Write(b); return this; }
    public MigrationStreamBuilder U64(ulong v) { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteUInt64BigEndian(b, v); _body.Write(b); return this; }
    public MigrationStreamBuilder Name(string s) { U8((byte)s.Length); _body.Write(Encoding.ASCII.GetBytes(s)); return this; }
    public MigrationStreamBuilder Bytes(byte[] b) { _body.Write(b); return this; }

    public MigrationStreamBuilder Header(uint version = MigrationStreamFormat.StreamVersion, params string[] capabilities)
    {
        U32(MigrationStreamFormat.Magic).U32(version).U8(MigrationStreamFormat.Configuration).U32(13).Bytes(Encoding.ASCII.GetBytes("pc-i440fx-7.2"));
        if (capabilities.Length > 0)
        {
            U8(MigrationStreamFormat.Subsection).Name("configuration/capabilities").U32(1).U32((uint)capabilities.Length);
            foreach (var c in capabilities) Name(c);
        }
        return this;
    }

    /// <summary>The RAM section's start: its header and block list (with guest addresses when x-ignore-shared is on).</summary>
    public MigrationStreamBuilder RamStart(uint sectionId, bool ignoreShared, params (string Name, ulong Length)[] blocks)
    {
        U8(MigrationStreamFormat.SectionStart).U32(sectionId).Name("ram").U32(0).U32(4);
        U64((ulong)blocks.Sum(b => (long)b.Length) | (ulong)MigrationStreamFormat.RamFlags.MemSize);
        foreach (var (name, length) in blocks) { Name(name).U64(length); if (ignoreShared) U64(0); }
        return this;
    }

    public MigrationStreamBuilder Page(string? block, ulong offset, byte content)
    {
        ulong flags = (ulong)MigrationStreamFormat.RamFlags.Page | (block is null ? (ulong)MigrationStreamFormat.RamFlags.Continue : 0);
        U64(offset | flags);
        if (block is not null) Name(block);
        return Bytes(Enumerable.Repeat(content, MigrationStreamFormat.PageSize).ToArray());
    }

    public MigrationStreamBuilder Fill(string? block, ulong offset, byte fill = 0)
    {
        ulong flags = (ulong)MigrationStreamFormat.RamFlags.Zero | (block is null ? (ulong)MigrationStreamFormat.RamFlags.Continue : 0);
        U64(offset | flags);
        if (block is not null) Name(block);
        return U8(fill);
    }

    public MigrationStreamBuilder EndOfRam() => U64((ulong)MigrationStreamFormat.RamFlags.EndOfSection);

    public MigrationStreamBuilder Footer(uint sectionId) => U8(MigrationStreamFormat.SectionFooter).U32(sectionId);

    /// <summary>A device section of <paramref name="state"/> bytes, listed in the description as one buffer field of <paramref name="describedBytes"/> (its true size unless forged).</summary>
    public MigrationStreamBuilder Device(uint sectionId, string name, byte[] state, int? describedBytes = null, bool listed = true)
    {
        U8(MigrationStreamFormat.SectionFull).U32(sectionId).Name(name).U32(0).U32(1).Bytes(state).Footer(sectionId);
        if (listed) _devices.Add($$"""{"name": "{{name}}", "instance_id": 0, "vmsd_name": "{{name}}", "version": 1, "fields": [{"name": "state", "type": "buffer", "size": {{describedBytes ?? state.Length}}}]}""");
        return this;
    }

    public MigrationStreamBuilder Describe(string device) { _devices.Add(device); return this; }

    /// <summary>The end marker and the description, as QEMU ends every stream.</summary>
    public byte[] End()
    {
        U8(MigrationStreamFormat.EndOfStream);
        return Described();
    }

    /// <summary>The bytes as written so far: no end marker, no description.</summary>
    public byte[] Raw() => _body.ToArray();

    /// <summary>The body as written so far, with the description appended (no end marker added).</summary>
    public byte[] Described()
    {
        var json = Encoding.UTF8.GetBytes($$"""{"page_size": 4096, "devices": [{{string.Join(", ", _devices)}}]}""");
        U8(MigrationStreamFormat.VmDescription).U32((uint)json.Length);
        _body.Write(json);
        return _body.ToArray();
    }
}
