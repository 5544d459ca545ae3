namespace VMScatter.Qemu;

/// <summary>A bit per page in 64-bit words, set by one thread and taken by another (marks, re-read requests).</summary>
internal static class PageBits
{
    /// <summary>Sets the bits of pages [<paramref name="first"/>, <paramref name="end"/>) (not atomically: for words no other thread uses yet).</summary>
    public static void SetRange(ulong[] words, int first, int end)
    {
        for (int p = first; p < end;)
        {
            int w = p >> 6, bit = p & 63, n = Math.Min(64 - bit, end - p);
            words[w] |= (n == 64 ? ulong.MaxValue : ((1UL << n) - 1)) << bit;
            p += n;
        }
    }

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
