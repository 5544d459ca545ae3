using System.Buffers.Binary;
using System.Text;

namespace VMScatter.Qemu.Migration;

/// <summary>Big-endian reads over a stream held in memory; every read is bounds-checked and refuses with its offset.</summary>
internal ref struct StreamCursor(ReadOnlySpan<byte> data)
{
    private readonly ReadOnlySpan<byte> _data = data;

    public int Position { get; private set; }
    public readonly int Remaining => _data.Length - Position;
    public readonly bool AtEnd => Position == _data.Length;

    public readonly byte Peek() => Position < _data.Length ? _data[Position] : throw Fail("the stream ends early");

    public byte U8() => Take(1)[0];
    public uint U32() => BinaryPrimitives.ReadUInt32BigEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64BigEndian(Take(8));

    /// <summary>A length-prefixed (one byte) name: printable ASCII only, never empty.</summary>
    public string Name(string what)
    {
        int length = U8();
        if (length == 0) throw Fail($"{what}: an empty name");
        return Text(length, what);
    }

    /// <summary><paramref name="length"/> bytes of printable ASCII.</summary>
    public string Text(long length, string what)
    {
        var bytes = Take(length);
        foreach (byte b in bytes)
            if (b is < 0x20 or > 0x7e) throw Fail($"{what}: a name with a byte 0x{b:x2} that is not printable");
        return Encoding.ASCII.GetString(bytes);
    }

    public ReadOnlySpan<byte> Take(long count)
    {
        if (count < 0 || count > Remaining) throw Fail($"the stream ends early ({count} bytes wanted, {Remaining} left)");
        var span = _data.Slice(Position, (int)count);
        Position += (int)count;
        return span;
    }

    public readonly MigrationStreamException Fail(string reason) => new(reason, Position);
}
