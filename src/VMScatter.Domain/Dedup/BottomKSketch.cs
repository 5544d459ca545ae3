using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Dedup;

/// <summary>
/// A bottom-k MinHash sketch of a set of page contents: the k smallest 64-bit hashes. Sketches of two sets merge
/// into the sketch of their union, and estimate set and union sizes within about 1/sqrt(k), so placement can
/// reason about page sharing among thousands of VMs without shipping their page sets.
/// </summary>
public sealed class BottomKSketch
{
    private readonly SortedSet<ulong> _values = new();

    public BottomKSketch(int k)
    {
        if (k < 2) throw new ArgumentOutOfRangeException(nameof(k));
        K = k;
    }

    public int K { get; }

    public IReadOnlyCollection<ulong> Values => _values;

    public static ulong ElementHash(ContentHash content) => PagesMix(content.High ^ PagesMix(content.Low));

    public void Add(ContentHash content) => AddHash(ElementHash(content));

    public void AddHash(ulong h)
    {
        if (_values.Count < K) { _values.Add(h); return; }
        if (h >= _values.Max || _values.Contains(h)) return;
        _values.Remove(_values.Max);
        _values.Add(h);
    }

    public static BottomKSketch FromValues(int k, IEnumerable<ulong> values)
    {
        var s = new BottomKSketch(k);
        foreach (var v in values) s.AddHash(v);
        return s;
    }

    public BottomKSketch Union(BottomKSketch other)
    {
        var u = FromValues(Math.Min(K, other.K), _values);
        foreach (var v in other._values) u.AddHash(v);
        return u;
    }

    /// <summary>Estimated number of distinct elements: exact below k, else (k−1) / (k-th smallest as a fraction of 2^64).</summary>
    public double EstimateCount()
    {
        if (_values.Count < K) return _values.Count;
        double kth = _values.Max / 18446744073709551616.0;
        return kth <= 0 ? _values.Count : (K - 1) / kth;
    }

    private static ulong PagesMix(ulong z) => Synthetic.PageContent.Mix(z);
}
