using VMScatter.Domain.Dedup;

namespace VMScatter.Domain.Placement;

/// <summary>
/// The page contents of the VMs being placed, as placement needs them: how many distinct contents a set of VMs
/// holds. Sets are built up one VM at a time (<see cref="IContentSet.With"/>) and priced without being built
/// (<see cref="IContentSet.SizeWith"/>).
/// </summary>
public interface IContentModel
{
    int VmCount { get; }
    IContentSet Empty { get; }
}

public interface IContentSet
{
    double Size { get; }
    double SizeWith(int vm);
    IContentSet With(int vm);
    IContentSet Union(IContentSet other);
}

/// <summary>Sketch-based: scales to thousands of VMs; sizes within about 1/sqrt(k), exact below k.</summary>
public sealed class SketchContentModel(IReadOnlyList<BottomKSketch> sketches) : IContentModel
{
    public int VmCount => _sketches.Count;
    public IContentSet Empty => new Set(this, null);

    private sealed class Set(SketchContentModel model, BottomKSketch? union) : IContentSet
    {
        public double Size { get; } = union?.EstimateCount() ?? 0;
        public double SizeWith(int vm) => union?.UnionCount(model._sketches[vm]) ?? model._sketches[vm].EstimateCount();
        public IContentSet With(int vm) => new Set(model, union is null ? model._sketches[vm] : union.Union(model._sketches[vm]));
        public IContentSet Union(IContentSet other) => other is Set { Sketch: { } theirs } ? new Set(model, union is null ? theirs : union.Union(theirs)) : this;
        private BottomKSketch? Sketch => union;
    }

    private readonly IReadOnlyList<BottomKSketch> _sketches = sketches;
}

/// <summary>
/// Exact, for up to 64 VMs: contents are grouped into classes by the set of VMs holding them (a bit mask), so the
/// size of any set of VMs is the count of contents in classes that meet it. What the exhaustive optimum uses.
/// </summary>
public sealed class ExactContentModel : IContentModel
{
    private readonly ulong[] _classMasks;
    private readonly long[] _classCounts;

    public ExactContentModel(IReadOnlyList<IEnumerable<long>> contentsOfVm)
    {
        if (contentsOfVm.Count > 64) throw new ArgumentException("the exact model takes at most 64 VMs");
        VmCount = contentsOfVm.Count;
        var maskOf = new Dictionary<long, ulong>();
        for (int v = 0; v < contentsOfVm.Count; v++)
            foreach (var c in contentsOfVm[v]) maskOf[c] = maskOf.GetValueOrDefault(c) | 1UL << v;
        var classes = maskOf.Values.GroupBy(m => m).ToArray();
        _classMasks = classes.Select(g => g.Key).ToArray();
        _classCounts = classes.Select(g => (long)g.Count()).ToArray();
    }

    public int VmCount { get; }
    public IContentSet Empty => new Set(this, 0);
    public int Classes => _classMasks.Length;

    public long SizeOf(ulong vms)
    {
        long n = 0;
        for (int i = 0; i < _classMasks.Length; i++) if ((_classMasks[i] & vms) != 0) n += _classCounts[i];
        return n;
    }

    private sealed class Set(ExactContentModel model, ulong vms) : IContentSet
    {
        public double Size { get; } = model.SizeOf(vms);
        public double SizeWith(int vm) => model.SizeOf(vms | 1UL << vm);
        public IContentSet With(int vm) => new Set(model, vms | 1UL << vm);
        public IContentSet Union(IContentSet other) => new Set(model, vms | ((Set)other).Mask);
        private ulong Mask => vms;
    }
}
