namespace VMScatter.Domain.Pages;

/// <summary>Guest memory is moved in x86 base pages; every index, count and offset in VMScatter is in these units.</summary>
public static class Page
{
    public const int Size = 4096;

    public static bool IsZero(ReadOnlySpan<byte> page) => !page.ContainsAnyExcept((byte)0);

    public static long BytesOf(long pages) => pages * Size;

    /// <summary>Page <paramref name="index"/> of <paramref name="pageCount"/> pages mapped at <paramref name="memory"/>, checked; <paramref name="owner"/> is named if it was freed.</summary>
    public static unsafe Span<byte> In(byte* memory, int pageCount, int index, object owner)
    {
        if ((uint)index >= (uint)pageCount) throw new ArgumentOutOfRangeException(nameof(index), index, $"page index outside 0..{pageCount - 1}");
        ObjectDisposedException.ThrowIf(memory == null, owner);
        return new Span<byte>(memory + (long)index * Size, Size);
    }

    public static int CountFor(long memoryBytes)
    {
        if (memoryBytes <= 0 || memoryBytes % Size != 0)
            throw new ArgumentOutOfRangeException(nameof(memoryBytes), memoryBytes, $"memory size must be a positive multiple of {Size} bytes");
        long pages = memoryBytes / Size;
        if (pages > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(memoryBytes), memoryBytes, "memory size too large");
        return (int)pages;
    }
}
