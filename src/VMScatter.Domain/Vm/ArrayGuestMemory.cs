using VMScatter.Domain.Pages;

namespace VMScatter.Domain;

/// <summary>Guest memory held in one managed array; starts all-zero, so zero pages never need to be written.</summary>
public sealed class ArrayGuestMemory : IWritableGuestMemory
{
    private readonly byte[] _bytes;

    public ArrayGuestMemory(int pageCount)
    {
        PageCount = pageCount;
        _bytes = new byte[(long)pageCount * Page.Size];
    }

    public int PageCount { get; }

    public ReadOnlySpan<byte> Bytes => _bytes;

    public void ReadPage(int index, Span<byte> destination) => Slice(index).CopyTo(destination);

    public void WritePage(int index, ReadOnlySpan<byte> source)
    {
        if (source.Length != Page.Size) throw new ArgumentException("a page write must be exactly one page", nameof(source));
        source.CopyTo(Slice(index));
    }

    public string ComputeDigest(ReadOnlySpan<byte> deviceState) => MemoryDigest.Compute(this, deviceState);

    public void Dispose() { }

    private Span<byte> Slice(int index)
    {
        if ((uint)index >= (uint)PageCount) throw new ArgumentOutOfRangeException(nameof(index), index, $"page index outside 0..{PageCount - 1}");
        return _bytes.AsSpan(index * Page.Size, Page.Size);
    }
}
