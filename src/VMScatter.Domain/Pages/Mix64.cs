using System.Runtime.CompilerServices;

namespace VMScatter.Domain.Pages;

/// <summary>A 64-bit hash mixer (SplitMix64's finaliser): spreads every input bit over every output bit.</summary>
public static class Mix64
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
