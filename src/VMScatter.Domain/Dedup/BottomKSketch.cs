using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>
/// A bottom-k MinHash sketch of a set of page contents: the k smallest 64-bit hashes, kept sorted. Sketches of
/// two sets merge (a linear merge) into the sketch of their union, and estimate set and union sizes within about
/// 1/sqrt(k), so placement can reason about page sharing among thousands of VMs without shipping page sets.
/// Built by <see cref="Add"/>, then treated as immutable once shared.
/// </summary>
public sealed class BottomKSketch
{
    private ulong[] _values;
    private int _count;

    public BottomKSketch(int k)
    {
        if (k < 2) throw new ArgumentOutOfRangeException(nameof(k));
        K = k;
        _values = new ulong[Math.Min(k, 64)];
    }

    private BottomKSketch(int k, ulong[] sorted, int count)
    {
        K = k;
        _values = sorted;
        _count = count;
    }

    public int K { get; }

    public int Count => _count;

    public IReadOnlyList<ulong> Values => new ArraySegment<ulong>(_values, 0, _count);

    public static ulong ElementHash(ContentHash content) => Mix64.Mix(content.High ^ Mix64.Mix(content.Low));

    public void Add(ContentHash content) => AddHash(ElementHash(content));

    public void AddHash(ulong h)
    {
        if (_count == K && h >= _values[_count - 1]) return;
        int at = Array.BinarySearch(_values, 0, _count, h);
        if (at >= 0) return;
        at = ~at;
        if (_count < K)
        {
            if (_count == _values.Length) Array.Resize(ref _values, Math.Min(K, _values.Length * 2));
            Array.Copy(_values, at, _values, at + 1, _count - at);
            _count++;
        }
        else Array.Copy(_values, at, _values, at + 1, _count - 1 - at);
        _values[at] = h;
    }

    public static BottomKSketch FromValues(int k, IEnumerable<ulong> values)
    {
        var s = new BottomKSketch(k);
        foreach (var v in values) s.AddHash(v);
        return s;
    }

    /// <summary>The sketch of the union (k of the smaller sketch).</summary>
    public BottomKSketch Union(BottomKSketch other)
    {
        int k = Math.Min(K, other.K);
        var merged = new ulong[Math.Min(k, _count + other._count)];
        int n = Merge(_values, _count, other._values, other._count, merged);
        return new BottomKSketch(k, merged, n);
    }

    /// <summary>Estimated size of this ∪ other, without building the union sketch.</summary>
    public double UnionCount(BottomKSketch other)
    {
        int k = Math.Min(K, other.K);
        int i = 0, j = 0, n = 0;
        ulong last = 0;
        while (n < k && (i < _count || j < other._count))
        {
            ulong a = i < _count ? _values[i] : ulong.MaxValue, b = j < other._count ? other._values[j] : ulong.MaxValue;
            if (a < b) { last = a; i++; }
            else if (b < a) { last = b; j++; }
            else { last = a; i++; j++; }
            n++;
        }
        return Estimate(k, n, last);
    }

    /// <summary>Estimated number of distinct elements: exact below k, else (k−1) / (k-th smallest as a fraction of 2^64).</summary>
    public double EstimateCount() => _count == 0 ? 0 : Estimate(K, _count, _values[_count - 1]);

    private static double Estimate(int k, int n, ulong kth)
    {
        if (n < k) return n;
        double fraction = kth / 18446744073709551616.0;
        return fraction <= 0 ? n : (k - 1) / fraction;
    }

    private static int Merge(ulong[] a, int na, ulong[] b, int nb, ulong[] into)
    {
        int i = 0, j = 0, n = 0;
        while (n < into.Length && (i < na || j < nb))
        {
            ulong x = i < na ? a[i] : ulong.MaxValue, y = j < nb ? b[j] : ulong.MaxValue;
            if (x < y) { into[n++] = x; i++; }
            else if (y < x) { into[n++] = y; j++; }
            else { into[n++] = x; i++; j++; }
        }
        return n;
    }
}
