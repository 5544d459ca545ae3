using System.Collections.Immutable;
using Akka.Actor;
using Akka.Cluster.Tools.Client;
using VMScatter.Cluster.Hosting;

namespace VMScatter.Cluster.Console;

/// <summary>
/// The admin console's link to a running cluster: a plain remote actor system (never a cluster member, so it takes
/// no part in failure detection or downing) with a <see cref="ClusterClient"/> whose initial contacts are the seeds'
/// receptionists. Every question is an ask with a bounded wait: an unreachable cluster is a timeout, not a hang.
/// </summary>
public sealed class AdminClient : IAsyncDisposable
{
    public const string SchedulerPath = "/user/scheduler-proxy";
    public const string ClusterInfoPath = "/user/" + ClusterInfoActor.Name;

    private readonly ActorSystem _system;
    private readonly IActorRef _client;
    private readonly TimeSpan _timeout;
    private readonly string _seeds;

    private AdminClient(ActorSystem system, IActorRef client, TimeSpan timeout, string seeds)
    {
        _system = system;
        _client = client;
        _timeout = timeout;
        _seeds = seeds;
    }

    /// <summary>The console's own actor system (remote, not cluster) and its cluster client, for a follower that stays (`migrate`).</summary>
    internal ActorSystem System => _system;
    internal IActorRef Client => _client;

    /// <summary>What the cluster client takes to deliver <paramref name="message"/> to the service at <paramref name="path"/> (the receptionist's node's own, if it has one).</summary>
    internal static object Envelope(string path, object message) => new ClusterClient.Send(path, message, localAffinity: true);

    /// <summary>Starts the client; <paramref name="seeds"/> are host:port or akka.tcp:// addresses of cluster nodes.</summary>
    public static AdminClient Start(IReadOnlyList<string> seeds, string hostname, TimeSpan timeout, string? configFile = null)
    {
        // Remote, not cluster: the console's system is no member. Its own logging stays off, the error is reported once.
        var config = NodeConfig.Build(configFile, $"""
            akka.actor.provider = remote
            akka.remote.dot-netty.tcp.hostname = {NodeConfig.Quote(hostname)}
            akka.remote.dot-netty.tcp.port = 0
            akka.loglevel = OFF
            akka.cluster.client.buffer-size = 100
            """);
        // A cluster on mutual TLS takes only a console with a certificate from its CA (--config with vmscatter.security.*).
        var setup = ControlPlaneTls.Setup(config);
        bool tls = SecuritySettings.From(config).TlsEnabled;
        var addresses = seeds.Select(s => NodeOptions.SeedAddress(s, tls)).ToArray();
        var contacts = addresses.Select(a => ActorPath.Parse($"{a}/system/receptionist")).ToImmutableHashSet();
        var system = ActorSystem.Create("vmscatter-console", setup);
        var settings = ClusterClientSettings.Create(system).WithInitialContacts(contacts);
        var client = system.ActorOf(ClusterClient.Props(settings), "cluster-client");
        return new AdminClient(system, client, timeout, string.Join(", ", seeds));
    }

    /// <summary>Asks the service at <paramref name="path"/> (on the receptionist's node if it has one) and waits for a <typeparamref name="T"/>.</summary>
    public async Task<T> AskAsync<T>(string path, object message, string who = "the cluster", CancellationToken cancellationToken = default)
    {
        try
        {
            return await _client.Ask<T>(Envelope(path, message), _timeout, cancellationToken).ConfigureAwait(false);
        }
        catch (AskTimeoutException)
        {
            throw new ConsoleTimeoutException($"{who} did not answer within {_timeout.TotalSeconds:0}s (seeds: {_seeds})");
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Bounded: a system still trying to associate with an unreachable seed should not hold the console's exit.
        await Task.WhenAny(_system.Terminate(), Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
    }
}
