using System.Text.Json;
using System.Text.Json.Serialization;

namespace VMScatter.Domain.Reports;

/// <summary>Per-VM outcome of a migration.</summary>

public sealed record VmReport(
    string Id,
    string Target,
    bool DigestMatched,
    bool HandedOver,
    double DowntimeMs,
    string? SourceDigest,
    string? TargetDigest,
    string? Error)
{
    /// <summary>How the source found the VM's dirty pages, e.g. "re-hash: 4 whole-memory passes" (null: not reported).</summary>
    public string? DirtyTracking { get; init; }
}

/// <summary>A VM whose target was lost mid-migration, and where it went instead (empty: it stayed on the source).</summary>
public sealed record VmReplacement(string Vm, string LostTarget, string NewTarget);

/// <summary>
/// The report a migration produces. Field names are stable (the JSON written by --json); later features add fields.
/// bytesSent counts data-plane bytes leaving the source, framing included; naiveBytes is what copying every
/// non-zero page of every VM once, separately, would send (page bytes only, no framing).
/// </summary>
public sealed record MigrationReport
{
    public required string MigrationId { get; init; }
    public required int Vms { get; init; }
    public required int Targets { get; init; }
    public required long GuestBytes { get; init; }
    public required long NaiveBytes { get; init; }
    public required long DistinctPages { get; init; }
    public required long ZeroPages { get; init; }
    public required long BytesSent { get; init; }
    public required long BytesReceived { get; init; }
    public required bool Verified { get; init; }
    public required double TotalSeconds { get; init; }
    public required string PlacementStrategy { get; init; }
    /// <summary>VM id → target host id.</summary>
    public required IReadOnlyDictionary<string, string> Placement { get; init; }
    /// <summary>Bytes over every link of the (flat) network: each frame counts once per link it crosses.</summary>
    public required long LinkBytes { get; init; }
    /// <summary>Join + leave events of target hosts implied by the order the groups were sent in, over all rounds.</summary>
    public required long GroupSwitches { get; init; }
    public required long GroupSwitchesLowerBound { get; init; }
    /// <summary>The group transport content actually went by: the requested one, or relay-chain when the multicast channel could not be set up.</summary>
    public required string GroupTransport { get; init; }
    /// <summary>Why the requested transport was not used (multicast that could not be set up), or null.</summary>
    public string? TransportFallback { get; init; }
    /// <summary>Multicast channel: NACK datagrams the source received, datagrams it repaired (sent again), and their bytes.</summary>
    public long MulticastNacks { get; init; }
    public long MulticastRepairs { get; init; }
    public long MulticastRepairBytes { get; init; }
    /// <summary>
    /// Multicast channels opened (each its own IP multicast group), and the joins and leaves their members made on the
    /// wire: beside <see cref="GroupSwitches"/>, the schedule's figure for one group per set of hosts, and its lower bound.
    /// </summary>
    public int MulticastChannels { get; init; }
    /// <summary>Multicast datagrams the targets refused (stray, forged, truncated, another migration's) and ones that came again after delivery (repairs, replays), as of their last digests.</summary>
    public long MulticastDatagramsRejected { get; init; }
    public long MulticastDatagramsDuplicate { get; init; }
    public long MulticastJoins { get; init; }
    public long MulticastLeaves { get; init; }
    /// <summary>Rounds a VM went through: round 0, its wave's pre-copy rounds and its stop-and-copy round (the most of any VM).</summary>
    public required int Rounds { get; init; }
    /// <summary>Waves of the handover: target hosts whose VMs completed together, one after another (1: all at once).</summary>
    public int Waves { get; init; } = 1;
    /// <summary>Rounds the data plane sent in all, every wave's; <see cref="DirtyPagesPerRound"/> and <see cref="RoundSeconds"/> have one entry each.</summary>
    public int DataPlaneRounds { get; init; }
    public required IReadOnlyList<int> DirtyPagesPerRound { get; init; }
    /// <summary>Pages rewritten between analysis and round 0's plan: left out of round 0, sent (as they were then) in round 1.</summary>
    public int SetAsidePages { get; init; }
    /// <summary>Contents a pre-copy round did not send because the guest rewrote their page before its turn (the next round carries it).</summary>
    public long ContentsWithdrawn { get; init; }
    public required double CompressionRatio { get; init; }
    public required long ByteCompares { get; init; }
    public required long HashCollisions { get; init; }
    public required double DowntimeMsMax { get; init; }
    public required double DowntimeMsMedian { get; init; }
    /// <summary>
    /// True only when every wave's stop-and-copy fitted the downtime target (as decided, and as its pause found it) and
    /// every VM handed over paused within it (<see cref="VmReport.DowntimeMs"/>); false when the round limit forced a
    /// stop-and-copy or a pause ran over.
    /// </summary>
    public required bool Converged { get; init; }
    /// <summary>How the pre-copy rounds ended, with the dirty rate seen; when a pause ran over the target, which VMs and how long, first.</summary>
    public required string Convergence { get; init; }
    /// <summary>False for the one-to-one pre-copy baseline (no content dedup).</summary>
    public required bool Deduplicate { get; init; }
    /// <summary>Each host's modelled egress link (0: unlimited).</summary>
    public required long LinkBitsPerSecond { get; init; }
    /// <summary>Round 0 hashing and dedup on the source, before placement.</summary>
    public required double AnalysisSeconds { get; init; }
    /// <summary>Each round from planning to every target having applied it; the last is the stop-and-copy round.</summary>
    public required IReadOnlyList<double> RoundSeconds { get; init; }
    public required double SourceDigestSeconds { get; init; }
    /// <summary>
    /// CPU seconds the source spent reading guest memory in each data-plane round, from the threads' CPU clocks: dirty
    /// collection (a QEMU guest's is a re-hash of all its RAM), page hashing and the handover digests of VMs paused in it.
    /// </summary>
    public IReadOnlyList<double> SourceCpuSecondsPerRound { get; init; } = [];
    public required string? Error { get; init; }
    /// <summary>Target hosts lost during the migration, with why.</summary>
    public IReadOnlyList<string> LostTargets { get; init; } = [];
    /// <summary>VMs re-placed because their target was lost (automatic rebalancing).</summary>
    public IReadOnlyList<VmReplacement> Replaced { get; init; } = [];
    /// <summary>
    /// What the scheduler saw over time, for `show --plot` (seconds since the migration started): its progress samples
    /// (at most <see cref="ReportTimeline.MaxSamples"/>), when it was placed, each VM's handover. Empty when the
    /// scheduler that finished it did not see it run (a failover).
    /// </summary>
    public ReportTimeline Timeline { get; init; } = ReportTimeline.Empty;
    public required IReadOnlyList<VmReport> PerVm { get; init; }

    /// <summary>bytesSent / naiveBytes: below 1 is saving.</summary>
    public double SentToNaive => NaiveBytes == 0 ? 0 : (double)BytesSent / NaiveBytes;

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static MigrationReport FromJson(string json) => JsonSerializer.Deserialize<MigrationReport>(json, Json) ?? throw new JsonException("empty report");
}

/// <summary>A progress sample, as the scheduler recorded it or a console received it: the bytes the source had sent by then, in which round, of which wave (-1: round 0, to every target group; <c>WaveTargets</c> empty).</summary>
public sealed record ReportSample(double Seconds, int Round, long BytesSent, int Wave, IReadOnlyList<string> WaveTargets);

/// <summary>A VM's handover (or failure), as the scheduler recorded it or a console received it; its pause ended about then and lasted <c>DowntimeMs</c>.</summary>
public sealed record ReportHandover(double Seconds, string Vm, string Target, double DowntimeMs, bool HandedOver);

public sealed record ReportTimeline(double? PlacedAtSeconds, IReadOnlyList<ReportSample> Samples, IReadOnlyList<ReportHandover> Handovers)
{
    public const int MaxSamples = 4096;
    public static readonly ReportTimeline Empty = new(null, [], []);
}
