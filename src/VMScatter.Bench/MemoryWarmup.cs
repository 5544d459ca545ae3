using System.Diagnostics;
using System.Runtime.InteropServices;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Units;

namespace VMScatter.Bench;

/// <summary>
/// Touches memory once before a bench's first method, then frees it. On a virtual machine (this project's is one) the
/// hypervisor backs a page the first time the guest's kernel hands it out, at several times the cost of a page used
/// before: without this, whichever method runs first pays that for the memory its guests and targets take, and no later
/// method does. Freed pages go back to the kernel, which hands them out again to the guests and RAM files that follow.
/// </summary>
public static class MemoryWarmup
{
    private const long ChunkBytes = 64L << 20;

    /// <summary>How much to touch: what the run will take, at most half of what the machine has available.</summary>
    public static long Plan(long runBytes, long availableBytes) => Math.Max(0, Math.Min(runBytes, availableBytes / 2));

    /// <summary>Writes one byte in every page of <paramref name="bytes"/> of fresh memory, all of it held at once, then frees it; returns the pages touched.</summary>
    public static long Touch(long bytes)
    {
        var chunks = new List<nint>();
        long pages = 0;
        try
        {
            for (long done = 0; done < bytes; done += ChunkBytes)
            {
                long size = Math.Min(ChunkBytes, bytes - done);
                nint chunk = Marshal.AllocHGlobal((nint)size);
                chunks.Add(chunk);
                for (long offset = 0; offset < size; offset += Page.Size, pages++) Marshal.WriteByte(chunk + (nint)offset, 1);
            }
        }
        finally
        {
            foreach (nint chunk in chunks) Marshal.FreeHGlobal(chunk);
        }
        return pages;
    }

    /// <summary><see cref="Plan"/> then <see cref="Touch"/>, told as one progress line.</summary>
    public static void Run(long runBytes, Action<string>? progress)
    {
        long bytes = Plan(runBytes, HostMemory.AvailableBytes());
        if (bytes == 0) return;
        var clock = Stopwatch.StartNew();
        long pages;
        try { pages = Touch(bytes); }
        catch (OutOfMemoryException)
        {
            progress?.Invoke($"could not touch {ByteSize.Format(bytes)} of memory first; the first method may pay for pages used for the first time");
            return;
        }
        progress?.Invoke(FormattableString.Invariant($"touched {ByteSize.Format(Page.BytesOf(pages))} of memory first, so that the first method does not pay alone for pages this machine uses for the first time ({clock.Elapsed.TotalSeconds:0.00} s)"));
    }
}
