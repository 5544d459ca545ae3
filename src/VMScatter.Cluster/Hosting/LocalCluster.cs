using VMScatter.Domain;
using VMScatter.Domain.Synthetic;

namespace VMScatter.Cluster.Hosting;

/// <summary>What <see cref="LocalCluster"/> starts: one scheduler, one source with the given VMs, N targets.</summary>
public sealed record LocalClusterOptions
{
    public required IReadOnlyList<IMigratableVm> SourceVms { get; init; }
    public required int Targets { get; init; }
    public required long TargetCapacityBytes { get; init; }
    public required string JournalConnectionString { get; init; }
    /// <summary>Each target host's backend, by host id (the node's synthetic backend when not given).</summary>
    public Func<string, ITargetBackend>? TargetBackendFor { get; init; }

    /// <summary>
    /// Appended to every node's HOCON. One process runs the whole cluster and its guests: they end with it
    /// (vmscatter.node.guests-on-stop = quit) unless this says otherwise.
    /// </summary>
    public string ExtraHocon { get; init; } = "";

    /// <summary>Appended to one node's HOCON after <see cref="ExtraHocon"/>, by host id ("scheduler", "source", "target-1", ...): e.g. a port of its own.</summary>
    public Func<string, string>? ExtraHoconFor { get; init; }

    internal string NodeHocon(string hostId) => $"vmscatter.node.guests-on-stop = quit\n{FastMembership}\n{ExtraHocon}\n{ExtraHoconFor?.Invoke(hostId)}";

    /// <summary>
    /// Membership changes (join to Up, leave to Removed) take a few gossip and leader-action ticks, 1 s each by default:
    /// most of a short in-process run's start and stop. Every node here is on loopback in one process, so gossip is
    /// cheap: tick 5x as often. The scheduler singleton's node, leaving last with no successor, waits one hand-over retry
    /// before it stops the singleton (1 s). Failure detection (heartbeats, the acceptable pause, the split-brain
    /// resolver) is unchanged.
    /// </summary>
    public const string FastMembership = """
        akka.cluster.periodic-tasks-initial-delay = 100ms
        akka.cluster.gossip-interval = 200ms
        akka.cluster.leader-actions-interval = 200ms
        akka.cluster.unreachable-nodes-reaper-interval = 250ms
        akka.cluster.singleton.hand-over-retry-interval = 200ms
        """;
}

/// <summary>
/// A whole VMScatter cluster on this machine: separate actor systems (cluster nodes) talking over Akka.Remote on
/// loopback, with their own data-plane sockets, in one process. What `vmscatter demo` and the integration tests run.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    private LocalCluster(VmScatterNode scheduler, VmScatterNode source, IReadOnlyList<VmScatterNode> targets)
    {
        Scheduler = scheduler;
        Source = source;
        Targets = targets;
    }

    public VmScatterNode Scheduler { get; }
    public VmScatterNode Source { get; }
    public IReadOnlyList<VmScatterNode> Targets { get; }

    public static async Task<LocalCluster> StartAsync(LocalClusterOptions options, CancellationToken cancellationToken = default)
    {
        if (options.Targets < 1) throw new ArgumentException("at least one target host is required");
        var scheduler = await VmScatterNode.StartAsync(new NodeOptions
        {
            Roles = ["scheduler"], HostId = "scheduler", JournalConnectionString = options.JournalConnectionString, ExtraHocon = options.NodeHocon("scheduler"),
        }, cancellationToken).ConfigureAwait(false);
        var nodes = new List<VmScatterNode> { scheduler };
        try
        {
            string seed = $"{scheduler.Address.Host}:{scheduler.Address.Port}";
            var sourceTask = VmScatterNode.StartAsync(new NodeOptions
            {
                Roles = ["source"], HostId = "source", Seeds = [seed], SourceVms = options.SourceVms, ExtraHocon = options.NodeHocon("source"),
            }, cancellationToken);
            var targetTasks = Enumerable.Range(1, options.Targets).Select(i => VmScatterNode.StartAsync(new NodeOptions
            {
                Roles = ["target"], HostId = $"target-{i}", Seeds = [seed], TargetCapacityBytes = options.TargetCapacityBytes,
                TargetBackend = options.TargetBackendFor?.Invoke($"target-{i}"), ExtraHocon = options.NodeHocon($"target-{i}"),
            }, cancellationToken)).ToArray();
            var source = await sourceTask.ConfigureAwait(false);
            nodes.Add(source);
            var targets = new List<VmScatterNode>();
            foreach (var t in targetTasks) { var node = await t.ConfigureAwait(false); nodes.Add(node); targets.Add(node); }
            // Started means warmed, as a long-running node is by its first migration: VMScatter's code compiled
            // (JitWarmup, once per process). A demo's or bench's first migration otherwise ran on cold code.
            try { await JitWarmup.Start().WaitAsync(cancellationToken).ConfigureAwait(false); }
            catch (Exception e) when (e is not OperationCanceledException) { } // a warm-up that failed only leaves code cold
            return new LocalCluster(scheduler, source, targets);
        }
        catch
        {
            foreach (var n in nodes) await n.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        // The whole cluster is going away on purpose: each node's view of the others leaving is expected, not news.
        foreach (var node in Targets.Append(Source).Append(Scheduler)) ConsoleLogger.Mute(node.System);
        // Workers first, the scheduler (and its journal) last.
        await Task.WhenAll(Targets.Select(t => t.DisposeAsync().AsTask()).Append(Source.DisposeAsync().AsTask())).ConfigureAwait(false);
        await Scheduler.DisposeAsync().ConfigureAwait(false);
    }
}
