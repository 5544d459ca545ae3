namespace VMScatter.Domain.Synthetic;

/// <summary>
/// How a synthetic guest's memory is made up and how it is written while it runs. Fractions are of the guest's
/// pages; what is left after zero, OS-image, application and duplicate pages is unique to the VM.
///
/// Defaults, and where they come from:
/// - <see cref="ZeroFraction"/> 0.40: an idle 256 MiB Debian guest measured on this machine under QEMU had 71% zero
///   pages (49,575 of 69,899); a guest with a running workload has fewer, so 40%.
/// - <see cref="OsImageFraction"/> 0.25 and <see cref="ApplicationFraction"/> 0.15: page-sharing studies of VMs of
///   one OS image (Difference Engine, OSDI '08; Gang migration, HPDC '11; VMScatter, VEE '13) report tens of percent
///   identical pages across such VMs: kernel text, shared libraries and page cache of the same image and packages.
/// - <see cref="DuplicateFraction"/> 0.05: pages repeated inside one guest (e.g. filled buffers, copied data).
/// - <see cref="LowEntropyFraction"/> 0.5: half of each synthetic page is patterned, so LZ4 roughly halves it,
///   in the range seen for code and data pages.
/// - <see cref="DirtyPagesPerSecond"/> 2,000 (8 MiB/s) within a writable working set of 4,096 pages (16 MiB):
///   a moderately busy server; scenarios override both.
/// Every value is a modelling choice, overridable from the command line; results depend on them, and reports say which were used.
/// </summary>
public sealed record SyntheticGuestModel
{
    public long MemoryBytes { get; init; } = 256L << 20;
    public double ZeroFraction { get; init; } = 0.40;
    public double OsImageFraction { get; init; } = 0.25;
    public double ApplicationFraction { get; init; } = 0.15;
    public double DuplicateFraction { get; init; } = 0.05;

    /// <summary>How many different contents the in-guest duplicate pages repeat.</summary>
    public int DuplicateContents { get; init; } = 64;

    public double LowEntropyFraction { get; init; } = 0.5;
    public double DirtyPagesPerSecond { get; init; } = 2000;
    public int WritableWorkingSetPages { get; init; } = 4096;

    public double UniqueFraction => 1.0 - ZeroFraction - OsImageFraction - ApplicationFraction - DuplicateFraction;

    public void Validate()
    {
        if (MemoryBytes <= 0 || MemoryBytes % Pages.Page.Size != 0)
            throw new ArgumentException($"guest memory must be a positive multiple of {Pages.Page.Size} bytes (got {MemoryBytes})");
        foreach (var (name, value) in new[] { ("zero", ZeroFraction), ("os-image", OsImageFraction), ("application", ApplicationFraction), ("duplicate", DuplicateFraction), ("low-entropy", LowEntropyFraction) })
            if (value is < 0 or > 1) throw new ArgumentException($"{name} fraction must be within 0..1 (got {value})");
        if (UniqueFraction < -1e-9) throw new ArgumentException("zero + os-image + application + duplicate fractions exceed 1");
        if (DirtyPagesPerSecond < 0) throw new ArgumentException("dirty rate must not be negative");
        if (WritableWorkingSetPages < 0) throw new ArgumentException("writable working set must not be negative");
        if (DuplicateContents < 1) throw new ArgumentException("duplicate contents must be at least 1");
    }
}

/// <summary>A fleet: which OS image and application each VM runs. VMs sharing either share those pages.</summary>
public sealed record SyntheticFleetSpec(int VmCount, SyntheticGuestModel Model, long Seed, int OsImages = 1, int Applications = 4)
{
    public void Validate()
    {
        if (VmCount < 1) throw new ArgumentException("at least one VM is required");
        if (OsImages < 1) throw new ArgumentException("at least one OS image is required");
        if (Applications < 1) throw new ArgumentException("at least one application is required");
        Model.Validate();
    }
}
