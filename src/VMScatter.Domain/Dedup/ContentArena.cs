using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>
/// Append-only store of page contents. The dedup index keeps its own copy of each distinct content, so a byte
/// compare is against the bytes that were hashed, even after the guest has rewritten the page it came from,
/// and the data plane can send exactly those bytes. Readers on other threads see every slot that was appended
/// before they were told about it (chunks are published with a volatile swap, never resized in place).
/// </summary>
public sealed class ContentArena
{
    private const int PagesPerChunk = 256;
    private volatile byte[][] _chunks = [];
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public long Bytes => (long)Count * Page.Size;

    public int Append(ReadOnlySpan<byte> page)
    {
        int slot = _count;
        int chunk = slot / PagesPerChunk;
        var chunks = _chunks;
        if (chunk == chunks.Length)
        {
            var grown = new byte[chunks.Length + 1][];
            chunks.CopyTo(grown, 0);
            grown[chunk] = GC.AllocateUninitializedArray<byte>(PagesPerChunk * Page.Size);
            _chunks = chunks = grown;
        }
        page[..Page.Size].CopyTo(chunks[chunk].AsSpan(slot % PagesPerChunk * Page.Size, Page.Size));
        Volatile.Write(ref _count, slot + 1);
        return slot;
    }

    public ReadOnlySpan<byte> Get(int slot)
    {
        if ((uint)slot >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(slot));
        return _chunks[slot / PagesPerChunk].AsSpan(slot % PagesPerChunk * Page.Size, Page.Size);
    }
}
