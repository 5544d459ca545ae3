namespace VMScatter.Domain.Placement;

/// <summary>What placement knows of a VM: its size and vCPUs (its pages are in an <see cref="IContentModel"/>).</summary>
public sealed record PlacementVm(string Id, long MemoryBytes, int VCpus = 1);

/// <summary>A target host: free memory, free vCPU slots (0 = not limited), and the rack (switch) it hangs off, if any.</summary>
public sealed record PlacementHost(string Id, long CapacityBytes, int CpuSlots = 0, string? Rack = null);

/// <summary>
/// A tree network: the source's uplink, one link per rack (switch), one per host. A distinct page needed by a set of
/// hosts crosses each link of the tree that reaches them once (a multicast tree), so the traffic of a placement is
/// Σ over links of weight × distinct pages needed below that link. The flat network is one switch, no racks.
/// </summary>
public sealed record NetworkTopology(double SourceLinkWeight = 1, double RackLinkWeight = 1, double HostLinkWeight = 1)
{
    public static readonly NetworkTopology Flat = new();
}

/// <summary>A VM → host assignment and its traffic in page-link units (pages × link weight, summed over links).</summary>
public sealed record PlacementResult(string Strategy, IReadOnlyDictionary<string, string> HostOf, double Traffic, double PlanSeconds);

public sealed class PlacementException(string message) : Exception(message);

/// <summary>Spelled as <see cref="Units.EnumNames{T}"/> derives it: traffic-aware, paper-greedy, first-fit-decreasing, round-robin, random.</summary>
public enum PlacementStrategy { TrafficAware, PaperGreedy, FirstFitDecreasing, RoundRobin, Random }
