namespace VMScatter.Domain;

/// <summary>Read access to a guest's physical memory, one page at a time.</summary>
public interface IGuestMemory
{
    int PageCount { get; }

    /// <summary>Copies page <paramref name="index"/> into <paramref name="destination"/> (exactly one page long).</summary>
    void ReadPage(int index, Span<byte> destination);
}
