using VMScatter.Domain;

namespace VMScatter.Cluster.Protocol;

// The admin console's questions and commands. They reach the cluster through ClusterClient (the receptionist on any
// node), so the console never joins it: /user/cluster-info answers membership, /user/scheduler-proxy the rest.

/// <summary>Asks the node that receives it for the cluster's members as that node sees them.</summary>
public sealed record GetClusterMembers : IVmScatterMessage
{
    public static readonly GetClusterMembers Instance = new();
}

/// <summary>One member: its address, roles, membership status (Up, Leaving, ...) and whether the answering node reaches it.</summary>
public sealed record ClusterMemberInfo(string Address, IReadOnlyList<string> Roles, string Status, bool Reachable) : IVmScatterMessage;

public sealed record ClusterMembers(string AnsweredBy, IReadOnlyList<ClusterMemberInfo> Members) : IVmScatterMessage;

/// <summary>Asks the scheduler for its registered hosts and the migrations in flight.</summary>
public sealed record GetSchedulerStatus : IVmScatterMessage
{
    public static readonly GetSchedulerStatus Instance = new();
}

/// <summary>A registered host. Sources: capacity is the memory of the VMs they run; targets: what they accept.</summary>
public sealed record HostStatus(HostId HostId, string Role, string Address, long CapacityBytes, long FreeBytes, string Rack, int Vms, string Backend) : IVmScatterMessage;

/// <summary>
/// One VM of a migration in flight and where it stands (transferring, paused, starting on target, ...). While its wave is
/// sent (phase "transferring"): the current round, the bytes it sent so far and its rate (the source sends a wave's VMs
/// together, so they are the wave's), and the ETA: the round's content records left at its records' rate, in seconds;
/// otherwise round -1, 0 and no ETA (null: unknown).
/// </summary>
public sealed record VmInFlight(VmId VmId, HostId? TargetHostId, string Phase, int Round = -1, long RoundBytes = 0, double BytesPerSecond = 0, double? EtaSeconds = null) : IVmScatterMessage;

/// <summary>
/// A migration in flight: its phase and, from the source's latest progress report, the round and wave, bytes sent and
/// the send rate since the first report.
/// </summary>
public sealed record MigrationInFlight(
    MigrationId MigrationId, HostId SourceHostId, Scheduler.MigrationPhase Phase, DateTime StartedUtc, int Round, int Wave,
    long BytesSent, double BytesPerSecond, long GuestBytes, IReadOnlyList<VmInFlight> Vms, string? Error) : IVmScatterMessage;

public sealed record SchedulerStatus(string SchedulerAddress, IReadOnlyList<HostStatus> Hosts, IReadOnlyList<MigrationInFlight> Migrations) : IVmScatterMessage;

/// <summary>Asks the scheduler for every migration its journal records.</summary>
public sealed record ListMigrations : IVmScatterMessage
{
    public static readonly ListMigrations Instance = new();
}

/// <summary>One journaled migration; the figures come from its report (zero while it is in flight).</summary>
public sealed record MigrationSummary(
    MigrationId MigrationId, DateTime StartedUtc, Scheduler.MigrationPhase Phase, HostId? SourceHostId, int Vms, IReadOnlyList<HostId> Targets,
    int HandedOver, bool Verified, long BytesSent, double TotalSeconds, double DowntimeMsMax, string? Error) : IVmScatterMessage;

public sealed record MigrationList(IReadOnlyList<MigrationSummary> Migrations) : IVmScatterMessage;

/// <summary>The operator stops a migration in flight: VMs not handed over keep (or resume) running on the source.</summary>
public sealed record CancelMigration(MigrationId MigrationId) : IVmScatterMessage;

/// <summary>Whether the cancel was taken; if not, why (unknown id, already ended, already failing).</summary>
public sealed record CancelAnswer(MigrationId MigrationId, bool Accepted, string Message) : IVmScatterMessage;
