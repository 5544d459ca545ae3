namespace VMScatter.Domain;

/// <summary>Read access to a guest's physical memory, one page at a time.</summary>
public interface IGuestMemory
{
    int PageCount { get; }

    /// <summary>Copies page <paramref name="index"/> into <paramref name="destination"/> (exactly one page long).</summary>
    void ReadPage(int index, Span<byte> destination);
}

/// <summary>
/// Memory whose pages can be read in place (mapped guest RAM), without a copy. Digests of paused guests use it:
/// copying 2 GiB just to hash it doubled the work inside the downtime window.
/// </summary>
public interface IDirectPageAccess
{
    /// <summary>Page <paramref name="index"/> in place, if this memory has it in place; valid while the memory lives.</summary>
    bool TryGetPage(int index, out ReadOnlySpan<byte> page);
}
