using System.Net;
using Akka.Actor;
using Akka.Cluster.Tools.Client;
using Akka.Cluster.Tools.Singleton;
using Akka.Event;
using Akka.Configuration;
using VMScatter.Cluster.Scheduler;
using VMScatter.Cluster.Source;
using VMScatter.Cluster.Target;
using VMScatter.DataPlane.Target;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;

namespace VMScatter.Cluster.Hosting;

public sealed class ClusterJoinException(string message) : Exception(message);

/// <summary>
/// One VMScatter cluster node: an actor system with the roles it was given. Every node gets a proxy to the
/// scheduler singleton; scheduler nodes host the singleton; source nodes a <see cref="SourceHostActor"/>;
/// target nodes a data-plane listener and a <see cref="TargetHostActor"/>.
/// </summary>
public sealed class VmScatterNode : IAsyncDisposable
{
    private readonly GuestMemoryPool? _memoryPool;
    private readonly PendingDisposals _disposals;
    private readonly VmScatterMetrics _metrics;

    /// <summary>How long a stopping node waits for the guests and receivers its actors were still disposing.</summary>
    private static readonly TimeSpan DisposalsTimeout = TimeSpan.FromSeconds(30);

    private VmScatterNode(ActorSystem system, HostId hostId, IActorRef schedulerProxy, DataPlaneListener? listener, GuestMemoryPool? memoryPool, PendingDisposals disposals, VmScatterMetrics metrics)
    {
        _memoryPool = memoryPool;
        _disposals = disposals;
        _metrics = metrics;
        System = system;
        HostId = hostId;
        SchedulerProxy = schedulerProxy;
        Listener = listener;
    }

    public ActorSystem System { get; }
    public HostId HostId { get; }
    public IActorRef SchedulerProxy { get; }
    public DataPlaneListener? Listener { get; }
    /// <summary>Where this node serves its metrics for a Prometheus scrape (vmscatter.metrics.prometheus-endpoint); null: it does not.</summary>
    public string? MetricsEndpoint => _metrics.Endpoint;
    public Address Address => Akka.Cluster.Cluster.Get(System).SelfAddress;

    public static async Task<VmScatterNode> StartAsync(NodeOptions options, CancellationToken cancellationToken = default)
    {
        var overrides = $"""
            akka.remote.dot-netty.tcp.hostname = {NodeConfig.Quote(options.Hostname)}
            akka.remote.dot-netty.tcp.port = {options.Port}
            akka.cluster.roles = [{string.Join(", ", options.Roles.Select(NodeConfig.Quote))}]
            {(options.JournalConnectionString is null ? "" : $"vmscatter.persistence.connection-string = {NodeConfig.Quote(options.JournalConnectionString)}")}
            {(options.TargetCapacityBytes is null ? "" : $"vmscatter.target.capacity = {options.TargetCapacityBytes}")}
            {options.ExtraHocon}
            """;
        var config = NodeConfig.Build(options.ConfigFile, overrides);
        // With vmscatter.security.certificate set, the control plane runs over mutual TLS (akka.ssl.tcp seeds).
        var setup = ControlPlaneTls.Setup(config);
        bool tls = SecuritySettings.From(config).TlsEnabled;
        var seeds = options.Seeds.Select(s => NodeOptions.SeedAddress(s, tls)).ToArray();
        var metricsSettings = MetricsSettings.From(config);
        int minThreads = config.GetInt("vmscatter.node.min-threads");
        ThreadPool.GetMinThreads(out int workers, out int io);
        if (workers < minThreads) ThreadPool.SetMinThreads(minThreads, Math.Max(io, minThreads));
        var system = ActorSystem.Create(NodeOptions.SystemName, setup);
        _ = JitWarmup.Start().ContinueWith(t => system.Log.Debug("JIT warm-up: {0} methods compiled in {1:0.00} s", t.Result, JitWarmup.Elapsed.TotalSeconds),
            CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        var metrics = VmScatterMetrics.For(system);
        GuestMemoryPool? pool = null;
        var disposals = new PendingDisposals();
        try
        {
            var cluster = Akka.Cluster.Cluster.Get(system);
            var joinTimeout = config.GetTimeSpan("vmscatter.node.join-timeout");
            var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            cluster.RegisterOnMemberUp(() => up.TrySetResult());
            if (seeds.Length == 0)
            {
                if (!options.Roles.Contains("scheduler")) throw new ClusterJoinException("a node without the scheduler role needs --seeds");
                cluster.Join(cluster.SelfAddress);
            }
            else cluster.JoinSeedNodes(seeds.Select(Address.Parse));
            var finished = await Task.WhenAny(up.Task, Task.Delay(joinTimeout, cancellationToken)).ConfigureAwait(false);
            if (finished != up.Task)
                throw new ClusterJoinException($"could not join the cluster via {(seeds.Length == 0 ? "itself" : string.Join(", ", seeds))} within {joinTimeout.TotalSeconds:0}s (vmscatter.node.join-timeout)");

            var hostId = new HostId(string.IsNullOrEmpty(options.HostId)
                ? (config.GetString("vmscatter.node.host-id") is { Length: > 0 } h ? h : $"{options.Roles.FirstOrDefault() ?? "node"}-{cluster.SelfAddress.Port}")
                : options.HostId);

            // Extensions inject their default config on first use (the singleton settings on every Create), and each
            // injection replaces the system's Serialization, Hyperion's compiled serializers with it: do all of that
            // before the warm-up below, or the migration pays for compiling them again (measured: ~3.5 s of CPU).
            var singletonSettings = ClusterSingletonManagerSettings.Create(system).WithRole("scheduler");
            var proxySettings = ClusterSingletonProxySettings.Create(system).WithRole("scheduler");
            // The admin console reaches the cluster through this node's receptionist (akka.cluster.client.receptionist).
            var receptionist = ClusterClientReceptionist.Get(system);
            if (options.Roles.Contains("scheduler"))
            {
                var persistence = Akka.Persistence.Persistence.Instance.Apply(system);
                // The plugins inject theirs while they are constructed: wait until both answer. Not the join's bound: a
                // journal on PostgreSQL connects (and may create its tables) first, which took over 10 s while six nodes
                // started at once on 2 busy cores (CI).
                var pluginTimeout = joinTimeout + PluginStartGrace;
                try
                {
                    await Task.WhenAll(persistence.JournalFor(null).Ask<ActorIdentity>(new Identify(null), pluginTimeout, cancellationToken),
                        persistence.SnapshotStoreFor(null).Ask<ActorIdentity>(new Identify(null), pluginTimeout, cancellationToken)).ConfigureAwait(false);
                }
                catch (AskTimeoutException)
                {
                    throw new ClusterJoinException($"the scheduler's journal did not start within {pluginTimeout.TotalSeconds:0}s (is its database reachable? see akka.persistence.journal)");
                }
                // In the background: the node is up without it, and a migration is seldom asked for in the first second.
                // A journal that refuses the write is the scheduler's to report (the warm-up logs it).
                _ = JournalWarmup.Run(system, hostId);
            }
            // Before any actor records: instruments nobody listens to yet drop what they are given.
            metrics.Export(metricsSettings, hostId, options.Roles.Contains("scheduler"));
            if (Serialization.SerializerWarmupSettings.From(config) == Serialization.SerializerWarmupPolicy.AtStart)
                await Task.Run(() => Serialization.SerializerWarmup.Run(system, (type, e) => system.Log.Debug("Serializer warm-up skipped {0}: {1}", type.Name, e.Message)), cancellationToken).ConfigureAwait(false);

            if (options.Roles.Contains("scheduler"))
            {
                var settings = SchedulerSettings.From(config);
                system.ActorOf(ClusterSingletonManager.Props(
                    Props.Create(() => new MigrationSchedulerActor(settings)),
                    PoisonPill.Instance,
                    singletonSettings), "scheduler");
            }
            var proxy = system.ActorOf(ClusterSingletonProxy.Props("/user/scheduler", proxySettings), "scheduler-proxy");
            system.ActorOf(Props.Create(() => new MembershipWatcher()), "membership");
            receptionist.RegisterService(proxy);
            receptionist.RegisterService(system.ActorOf(Props.Create(() => new ClusterInfoActor()), ClusterInfoActor.Name));

            DataPlaneListener? listener = null;
            var sourceSettings = SourceSettings.From(config);
            sourceSettings = sourceSettings with { DataPlane = sourceSettings.DataPlane with { Metrics = metrics } };
            var release = GuestRelease.From(config, disposals);
            if (options.Roles.Contains("source"))
                system.ActorOf(Props.Create(() => new SourceHostActor(hostId, options.SourceVms, sourceSettings, proxy, disposals, release)), "source-host");
            if (options.Roles.Contains("target"))
            {
                var dataPlane = DataPlaneSettings.From(config) with { Metrics = metrics };
                // The data plane binds to and announces the node's own address unless it is given one of its own.
                string dataPlaneHost = config.GetString("vmscatter.target.data-plane-hostname") is { Length: > 0 } own ? own : config.GetString("akka.remote.dot-netty.tcp.hostname");
                if (!IPAddress.TryParse(dataPlaneHost, out var dataPlaneAddress) || dataPlaneAddress.Equals(IPAddress.Any) || dataPlaneAddress.Equals(IPAddress.IPv6Any))
                    throw new ConfigurationException($"the data plane needs an IP address the other hosts reach it by, not '{dataPlaneHost}' (set --hostname or --data-plane-address)");
                var bind = new IPEndPoint(dataPlaneAddress, config.GetInt("vmscatter.target.data-plane-port"));
                try { listener = new DataPlaneListener(bind, dataPlane); }
                catch (System.Net.Sockets.SocketException e)
                {
                    throw new ConfigurationException($"the data plane cannot listen on {bind}: {e.Message} (is {bind.Address} an address of this host? see --data-plane-address)");
                }
                long capacity = config.GetByteSize("vmscatter.target.capacity") ?? throw new ConfigurationException("vmscatter.target.capacity missing");
                var backend = options.TargetBackend;
                if (backend is null)
                {
                    // The host's capacity is backed before it announces itself, as with a preallocated hugepage pool.
                    if (config.GetBoolean("vmscatter.target.prefault-memory") && OperatingSystem.IsLinux())
                    {
                        pool = new GuestMemoryPool(capacity);
                        var p = pool;
                        if (await Task.Factory.StartNew(() => p.Populate(cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false) is { } refused)
                            system.Log.Warning("Target {0}: guest memory is backed on first write instead: {1}", hostId, refused);
                    }
                    backend = new SyntheticTargetBackend(pool);
                }
                var l = listener;
                string rack = config.GetString("vmscatter.target.rack");
                system.ActorOf(Props.Create(() => new TargetHostActor(hostId, capacity, l, dataPlane, backend, proxy, sourceSettings.RegistrationInterval, disposals, rack, release)), "target-host");
            }
            return new VmScatterNode(system, hostId, proxy, listener, pool, disposals, metrics);
        }
        catch
        {
            await system.Terminate().ConfigureAwait(false);
            metrics.Dispose();
            await disposals.WhenAllEndedAsync(DisposalsTimeout).ConfigureAwait(false);
            pool?.Dispose();
            throw;
        }
    }

    /// <summary>Leaves the cluster gracefully (so a singleton hands over) and stops the node.</summary>
    public async ValueTask DisposeAsync()
    {
        var cluster = Akka.Cluster.Cluster.Get(System);
        if (!System.WhenTerminated.IsCompleted)
        {
            var left = cluster.LeaveAsync();
            await Task.WhenAny(left, Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
            await CoordinatedShutdown.Get(System).Run(CoordinatedShutdown.ClrExitReason.Instance).ConfigureAwait(false);
        }
        await System.WhenTerminated.ConfigureAwait(false);
        await _disposals.WhenAllEndedAsync(DisposalsTimeout).ConfigureAwait(false);
        if (Listener is not null) await Listener.DisposeAsync().ConfigureAwait(false);
        _metrics.Dispose();
        _memoryPool?.Dispose();
    }

    /// <summary>Stops the node abruptly, as a crash would (tests of host failure).</summary>
    private static readonly TimeSpan PluginStartGrace = TimeSpan.FromSeconds(60);

    public async Task CrashAsync()
    {
        // Its data plane goes at once (the actor system takes a while to terminate, and leaves the cluster meanwhile).
        if (Listener is not null) await Listener.DisposeAsync().ConfigureAwait(false);
        await System.Terminate().ConfigureAwait(false);
        await _disposals.WhenAllEndedAsync(DisposalsTimeout).ConfigureAwait(false);
        _metrics.Dispose();
        _memoryPool?.Dispose();
    }
}
