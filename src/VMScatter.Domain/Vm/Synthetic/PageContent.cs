using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Synthetic;

/// <summary>
/// Deterministic page contents. A synthetic guest stores one 64-bit content key per page and renders the bytes
/// on demand, so 8 × 256 MiB of guests cost 4 MiB of keys on the source. Key 0 is the zero page.
/// </summary>
public static class PageContent
{
    public enum Kind : ulong { OsImage = 1, Application = 2, Unique = 3, Duplicate = 4, Written = 5 }

    public static ulong Key(Kind kind, long owner, long index)
    {
        ulong k = Mix64.Mix(Mix64.Mix((ulong)kind * 0x9E3779B97F4A7C15UL ^ (ulong)owner) ^ (ulong)index);
        return k == 0 ? 1 : k;
    }

    /// <summary>Renders the page for <paramref name="key"/>: the first part random, the rest a repeated pattern.</summary>
    public static void Render(ulong key, double lowEntropyFraction, Span<byte> page)
    {
        if (key == 0) { page.Clear(); return; }
        ulong state = key;
        int randomBytes = (int)(page.Length * (1 - lowEntropyFraction)) & ~7;
        for (int i = 0; i < randomBytes; i += 8)
            BinaryPrimitives.WriteUInt64LittleEndian(page[i..], Next(ref state));
        Span<byte> pattern = stackalloc byte[64];
        for (int i = 0; i < pattern.Length; i += 8)
            BinaryPrimitives.WriteUInt64LittleEndian(pattern[i..], Next(ref state) & 0x0000_00FF_00FF_00FFUL);
        for (int i = randomBytes; i < page.Length; i += pattern.Length)
            pattern[..Math.Min(pattern.Length, page.Length - i)].CopyTo(page[i..]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Next(ref ulong state)
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix64.Mix(state);
    }
}
