namespace VMScatter.Qemu;

/// <summary>A bit per page in 64-bit words, set by one thread and taken by another (marks, re-read requests).</summary>
internal static class PageBits
{
    /// <summary>Clears every set bit and adds its page to <paramref name="into"/>, in page order.</summary>
    public static void TakeAll(ulong[] words, List<int> into)
    {
        for (int w = 0; w < words.Length; w++)
        {
            if (Volatile.Read(ref words[w]) == 0) continue;
            for (ulong bits = Interlocked.Exchange(ref words[w], 0); bits != 0; bits &= bits - 1)
                into.Add(w * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits));
        }
    }
}
