using VMScatter.Domain.Concurrency;
using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

public sealed class BulkWorkTests
{
    [Fact]
    public async Task Bulk_work_runs_on_its_own_threads_never_more_at_once_than_there_are_cores()
    {
        int running = 0, most = 0;
        var names = new System.Collections.Concurrent.ConcurrentBag<string?>();
        var gate = new TaskCompletionSource();
        var tasks = Enumerable.Range(0, 4 * Environment.ProcessorCount + 2).Select(_ => BulkWork.Run(() =>
        {
            int now = Interlocked.Increment(ref running);
            InterlockedMax(ref most, now);
            names.Add(Thread.CurrentThread.Name);
            gate.Task.Wait(TimeSpan.FromSeconds(1)); // hold the thread so that concurrency, if any, would show
            Interlocked.Decrement(ref running);
            return now;
        })).ToArray();
        // Give a scheduler that would over-commit the chance to: everything queued waits on the gate for a while.
        await Task.WhenAny(Task.WhenAll(tasks), Task.Delay(300));
        gate.SetResult();
        await Task.WhenAll(tasks);
        Assert.InRange(most, 1, Environment.ProcessorCount);
        Assert.All(names, n => Assert.StartsWith("vmscatter-bulk-", n));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen) { }
    }

    /// <summary>Memory read through <see cref="IGuestMemory.ReadPage"/> only (no in-place access).</summary>
    private sealed class CopyingMemory(IGuestMemory inner) : IGuestMemory
    {
        public int PageCount => inner.PageCount;
        public void ReadPage(int index, Span<byte> destination) => inner.ReadPage(index, destination);
    }

    [Fact]
    public void A_digest_read_in_place_equals_one_read_by_copying()
    {
        using var memory = new NativeGuestMemory(3000);
        var page = new byte[Page.Size];
        var random = new Random(7);
        for (int p = 0; p < memory.PageCount; p += 3) { random.NextBytes(page); memory.WritePage(p, page); }
        byte[] state = [1, 2, 3];
        string inPlace = MemoryDigest.Compute(memory, state, new ParallelOptions { MaxDegreeOfParallelism = 1 });
        Assert.Equal(MemoryDigest.Compute(new CopyingMemory(memory), state), inPlace);
        memory.WritePage(2999, new byte[Page.Size].Select(_ => (byte)9).ToArray());
        Assert.NotEqual(inPlace, MemoryDigest.Compute(memory, state)); // and it sees a changed page
    }
}
