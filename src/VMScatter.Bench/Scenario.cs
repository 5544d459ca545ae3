using VMScatter.Domain.Synthetic;

namespace VMScatter.Bench;

/// <summary>A workload to migrate: a fleet (model, seed, images, applications) and how many target hosts.</summary>
public sealed record Scenario(string Name, string Description, SyntheticFleetSpec Fleet, int Targets)
{
    private static SyntheticGuestModel Guest(double dirtyPagesPerSecond, int workingSetPages) =>
        new() { MemoryBytes = 256L << 20, DirtyPagesPerSecond = dirtyPagesPerSecond, WritableWorkingSetPages = workingSetPages };

    /// <summary>After the VMScatter paper's workloads, at this machine's scale: 8 guests of 256 MiB each, 4 targets.</summary>
    public static readonly IReadOnlyList<Scenario> All =
    [
        new("paper", "the demo fleet: one OS image, 4 applications, 2,000 pages/s within a 16 MiB working set",
            new SyntheticFleetSpec(8, Guest(2000, 4096), 42, OsImages: 1, Applications: 4), 4),
        new("idle", "idle guests of one OS image: 50 pages/s within 4 MiB",
            new SyntheticFleetSpec(8, Guest(50, 1024), 42, OsImages: 1, Applications: 4), 4),
        new("compile", "compile-like (distcc): high dirty rate, small working set: 6,000 pages/s (23 MiB/s) within 8 MiB",
            new SyntheticFleetSpec(8, Guest(6000, 2048), 42, OsImages: 1, Applications: 2), 4),
        new("database", "database/web (sysbench, TPC-W): large working set: 3,000 pages/s within 128 MiB",
            new SyntheticFleetSpec(8, Guest(3000, 32768), 42, OsImages: 1, Applications: 2), 4),
        new("mixed", "a mixed fleet of two OS images, 4 applications, 2,000 pages/s within 16 MiB",
            new SyntheticFleetSpec(8, Guest(2000, 4096), 42, OsImages: 2, Applications: 4), 4),
    ];

    public static Scenario? Named(string name) => All.FirstOrDefault(s => s.Name == name);

    public Scenario Scaled(int vms, long vmMemory) =>
        this with { Fleet = Fleet with { VmCount = vms, Model = Fleet.Model with { MemoryBytes = vmMemory, WritableWorkingSetPages = (int)Math.Min(Fleet.Model.WritableWorkingSetPages, vmMemory / 4096) } } };
}
