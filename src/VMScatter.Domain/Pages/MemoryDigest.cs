using System.Security.Cryptography;

namespace VMScatter.Domain.Pages;

/// <summary>
/// The handover proof: SHA-256 over every page's 128-bit content hash in index order (zero pages included),
/// followed by SHA-256 of the device state. Source and target compute it independently from their own bytes;
/// a VM is handed over only when they agree. The fast 128-bit page hash plus a zero check per page keeps this inside
/// the downtime window (a whole-memory SHA-256 of a 256 MiB guest alone would cost hundreds of milliseconds); the source
/// digests each paused VM on one thread, VMs in parallel, and a target builds it from the hashes it recorded as it
/// wrote pages. Against accidental differences two different memories agree with probability about 2^-128; the data
/// plane's AES-GCM sealing, not this digest, is what keeps out deliberate tampering.
/// </summary>
public static class MemoryDigest
{
    private const int PagesPerTask = 4096;

    /// <param name="parallel">How to spread the pages over threads (default: the thread pool, all cores).</param>
    public static string Compute(IGuestMemory memory, ReadOnlySpan<byte> deviceState, ParallelOptions? parallel = null)
    {
        var hashes = new byte[(long)memory.PageCount * ContentHash.Size];
        int chunks = (memory.PageCount + PagesPerTask - 1) / PagesPerTask;
        var direct = memory as IDirectPageAccess; // read in place where the memory has its pages in place
        Parallel.For(0, chunks, parallel ?? new ParallelOptions(), () => new byte[Page.Size], (chunk, _, page) =>
        {
            int end = Math.Min(memory.PageCount, (chunk + 1) * PagesPerTask);
            for (int i = chunk * PagesPerTask; i < end; i++)
            {
                if (direct is null || !direct.TryGetPage(i, out var bytes)) { memory.ReadPage(i, page); bytes = page; }
                ContentHash.OfPage(bytes).WriteTo(hashes.AsSpan(i * ContentHash.Size, ContentHash.Size));
            }
            return page;
        }, _ => { });
        return Finish(hashes, deviceState);
    }

    /// <summary>The same digest from page hashes already known (a target records each page's hash as it writes it).</summary>
    public static string FromPageHashes(ReadOnlySpan<ContentHash> pageHashes, ReadOnlySpan<byte> deviceState)
    {
        var hashes = new byte[(long)pageHashes.Length * ContentHash.Size];
        for (int i = 0; i < pageHashes.Length; i++) pageHashes[i].WriteTo(hashes.AsSpan(i * ContentHash.Size, ContentHash.Size));
        return Finish(hashes, deviceState);
    }

    private static string Finish(byte[] hashes, ReadOnlySpan<byte> deviceState)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(hashes);
        sha.AppendData(SHA256.HashData(deviceState));
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}
