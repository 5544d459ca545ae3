namespace VMScatter.Domain.Pages;

/// <summary>Guest memory is moved in x86 base pages; every index, count and offset in VMScatter is in these units.</summary>
public static class Page
{
    public const int Size = 4096;

    public static bool IsZero(ReadOnlySpan<byte> page) => !page.ContainsAnyExcept((byte)0);

    public static long BytesOf(long pages) => pages * Size;

    public static int CountFor(long memoryBytes)
    {
        if (memoryBytes <= 0 || memoryBytes % Size != 0)
            throw new ArgumentOutOfRangeException(nameof(memoryBytes), memoryBytes, $"memory size must be a positive multiple of {Size} bytes");
        long pages = memoryBytes / Size;
        if (pages > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(memoryBytes), memoryBytes, "memory size too large");
        return (int)pages;
    }
}
