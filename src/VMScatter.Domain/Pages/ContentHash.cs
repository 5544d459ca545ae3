using System.Buffers.Binary;
using System.IO.Hashing;

namespace VMScatter.Domain.Pages;

/// <summary>
/// 128-bit XxHash of a page's bytes. Used to find candidate duplicates quickly; two pages are only
/// treated as one after a byte compare (see <see cref="Dedup.ContentIndex"/>), so a collision costs a
/// compare, never correctness.
/// </summary>
public readonly record struct ContentHash(ulong High, ulong Low)
{
    public const int Size = 16;

    public static readonly ContentHash OfZeroPage = Compute(new byte[Page.Size]);

    /// <summary>A page's hash, by a zero check first: ten times cheaper than hashing, and most of a guest is zero pages.</summary>
    public static ContentHash OfPage(ReadOnlySpan<byte> page) => Page.IsZero(page) ? OfZeroPage : Compute(page);

    public static ContentHash Compute(ReadOnlySpan<byte> bytes)
    {
        UInt128 h = XxHash128.HashToUInt128(bytes);
        return new ContentHash((ulong)(h >> 64), (ulong)h);
    }

    public void WriteTo(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, High);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], Low);
    }

    public static ContentHash ReadFrom(ReadOnlySpan<byte> source) =>
        new(BinaryPrimitives.ReadUInt64BigEndian(source), BinaryPrimitives.ReadUInt64BigEndian(source[8..]));

    public override string ToString() => $"{High:x16}{Low:x16}";
}
