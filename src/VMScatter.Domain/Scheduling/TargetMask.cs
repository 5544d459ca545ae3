namespace VMScatter.Domain.Scheduling;

/// <summary>
/// A set of target hosts of one migration as the bits of a <see cref="ulong"/> (bit t: target index t). Groups,
/// round ends and frame recipients all use it, so a migration has at most <see cref="MaxTargets"/> target hosts.
/// </summary>
public static class TargetMask
{
    public const int MaxTargets = 64;

    /// <summary>Targets 0..count-1.</summary>
    public static ulong All(int count)
    {
        if (count is < 0 or > MaxTargets) throw new ArgumentOutOfRangeException(nameof(count), count, $"at most {MaxTargets} targets");
        return count == MaxTargets ? ulong.MaxValue : (1UL << count) - 1;
    }

    public static ulong Of(IEnumerable<int> targets) => targets.Aggregate(0UL, (mask, t) => mask | 1UL << t);

    public static bool Contains(ulong mask, int target) => (mask >> target & 1) != 0;

    /// <summary>Whether the mask names only targets below <paramref name="count"/>.</summary>
    public static bool Within(ulong mask, int count) => (mask & ~All(count)) == 0;
}
