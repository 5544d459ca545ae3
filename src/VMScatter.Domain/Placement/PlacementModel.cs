using VMScatter.Domain.Dedup;

namespace VMScatter.Domain.Placement;

/// <summary>What placement knows of a VM: its size and a sketch of its distinct non-zero page contents.</summary>
public sealed record PlacementVm(string Id, long MemoryBytes, long DistinctPages, BottomKSketch Sketch);

/// <summary>A target host and the memory it can take.</summary>
public sealed record PlacementHost(string Id, long CapacityBytes);

/// <summary>A VM → host assignment and the pages it is expected to move (sum over hosts of distinct pages per host).</summary>
public sealed record PlacementResult(string Strategy, IReadOnlyDictionary<string, string> HostOf, double EstimatedPages);

public sealed class PlacementException(string message) : Exception(message);

public enum PlacementStrategy { TrafficAware, RoundRobin, FirstFitDecreasing }
