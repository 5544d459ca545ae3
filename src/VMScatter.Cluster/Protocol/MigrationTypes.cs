using System.Net;
using VMScatter.DataPlane;
using VMScatter.Domain;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Placement;

namespace VMScatter.Cluster.Protocol;

/// <summary>When the last pre-copy round still leaves more than the downtime target allows.</summary>
public enum NonConvergencePolicy
{
    /// <summary>Stop and copy anyway, with a longer pause (the report says converged: false).</summary>
    Force,
    /// <summary>Fail the migration: every VM keeps running on the source.</summary>
    Abort,
}

/// <summary>How VMs of different target hosts are paused and handed over.</summary>
public enum HandoverMode
{
    /// <summary>
    /// Round 0 sends only what several targets need, then one target host after another gets its VMs' own pages, dirty
    /// rounds, stop-and-copy and handover while the others keep running: a VM's own pages and working set go shortly
    /// before its own pause.
    /// </summary>
    Staggered,
    /// <summary>Every round runs over all VMs, and they all pause at once.</summary>
    Together,
}

/// <summary>
/// Per-migration choices; defaults come from HOCON, the console may override them. <paramref name="SetAsideDirty"/>:
/// leave out of round 0 the pages rewritten since they were analysed, and out of every pre-copy round a page's content
/// when the guest rewrote the page before its turn (as Xen's pre-copy skips pages dirtied during the current
/// iteration; needs a log that can be looked at without collecting it); QEMU sends them and then again, so the
/// QEMU-style baselines turn it off.
/// </summary>
public sealed record MigrationOptions(
    PlacementStrategy Placement,
    GroupTransport GroupTransport,
    CompressionMode Compression,
    int MaxRounds,
    int DowntimeTargetMs,
    bool Deduplicate = true,
    long LinkBitsPerSecond = 0,
    NonConvergencePolicy NonConvergence = NonConvergencePolicy.Force,
    bool SetAsideDirty = true,
    HandoverMode Handover = HandoverMode.Staggered) : IVmScatterMessage
{
    public bool Staggered => Handover == HandoverMode.Staggered;
}

/// <summary>What the source learned about a VM in round 0: sizes, counts and a sketch of its distinct contents.</summary>
public sealed record VmProfile(
    VmId VmId,
    long MemoryBytes,
    int NonZeroPages,
    int ZeroPages,
    int DistinctContents,
    int SketchSize,
    IReadOnlyList<ulong> Sketch) : IVmScatterMessage;

/// <summary>A target host as the source's data plane addresses it: index in the migration's target masks.</summary>
public sealed record TargetEndpoint(int Index, HostId HostId, string Host, int Port) : IVmScatterMessage
{
    /// <summary>The host's data-plane listener as a socket address (<see cref="Host"/> is an IP address, as the target announced it).</summary>
    public IPEndPoint ToIPEndPoint() => new(IPAddress.Parse(Host), Port);
}

/// <summary>A VM and where it goes, by migration-wide VM index and target index.</summary>
public sealed record VmAssignment(int VmIndex, VmDescription Vm, int TargetIndex) : IVmScatterMessage;

/// <summary>A VM's handover digest as one side computed it (memory + device state).</summary>
public sealed record VmDigest(VmId VmId, string Digest) : IVmScatterMessage
{
    /// <summary>The source's: how the VM's dirty pages were found (<see cref="Domain.IDirtyTrackingAccount"/>); null from a target.</summary>
    public string? DirtyTracking { get; init; }
}

/// <summary>
/// The source's account of one finished transfer. <paramref name="Rounds"/>: rounds a VM went through (round 0, its
/// wave's pre-copy rounds and its stop-and-copy; the most of any wave), what max-rounds bounds;
/// <paramref name="DataPlaneRounds"/>: rounds sent in all, every wave's (the length of the per-round lists).
/// </summary>
public sealed record TransferStats(
    int Rounds,
    long BytesSent,
    long FramesSent,
    long ContentRecordsSent,
    long ContentRawBytes,
    long ContentEncodedBytes,
    long MapRecordsSent,
    long DistinctPages,
    long ByteCompares,
    long HashCollisions,
    long RacedPages,
    IReadOnlyList<int> DirtyPagesPerRound,
    double AnalysisSeconds,
    IReadOnlyList<double> RoundSeconds,
    double SourceDigestSeconds,
    long GroupSwitches,
    long GroupSwitchesLowerBound,
    bool Converged,
    string Convergence,
    int SetAsidePages = 0,
    long ContentsWithdrawn = 0,
    long Round0DistinctPages = 0,
    int Waves = 1,
    int DataPlaneRounds = 0) : IVmScatterMessage
{
    /// <summary>CPU seconds the source spent reading guest memory in each data-plane round (dirty collection, hashing, digests).</summary>
    public IReadOnlyList<double> SourceCpuSecondsPerRound { get; init; } = [];
    /// <summary>The group transport content went by ("": as requested); the relay chain when multicast could not be set up.</summary>
    public string TransportUsed { get; init; } = "";
    /// <summary>Why the requested transport was not used, or null.</summary>
    public string? TransportFallback { get; init; }
    /// <summary>The multicast channel: NACK datagrams the source received, datagrams it sent again, and their bytes.</summary>
    public long MulticastNacks { get; init; }
    public long MulticastRepairs { get; init; }
    public long MulticastRepairBytes { get; init; }
    /// <summary>Multicast channels opened, and their members' joins and leaves (every membership ends with a leave).</summary>
    public int MulticastChannels { get; init; }
    public long MulticastJoins { get; init; }
    public long MulticastLeaves { get; init; }
}
