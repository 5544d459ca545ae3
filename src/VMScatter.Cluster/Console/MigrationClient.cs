using System.Threading.Channels;
using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Reports;

namespace VMScatter.Cluster.Console;

/// <summary>How a submitted migration ended, from the console's point of view.</summary>
public sealed record MigrationOutcome(MigrationReport? Report, string? RejectedBecause);

public sealed class ConsoleTimeoutException(string message) : Exception(message);

/// <summary>Console-side helpers: wait for hosts, submit a migration and follow it to the end.</summary>
public static class MigrationClient
{
    /// <summary>Waits until the scheduler answers and knows at least the given numbers of hosts.</summary>
    public static async Task<RegisteredHosts> WaitForHostsAsync(IActorRef schedulerProxy, int sources, int targets, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        RegisteredHosts? last = null;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                last = await schedulerProxy.Ask<RegisteredHosts>(GetRegisteredHosts.Instance, TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
                if (last.Sources.Count >= sources && last.Targets.Count >= targets) return last;
            }
            catch (AskTimeoutException) { }
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken).ConfigureAwait(false);
        }
        throw new ConsoleTimeoutException(last is null
            ? $"the migration scheduler did not answer within {timeout.TotalSeconds:0}s"
            : $"within {timeout.TotalSeconds:0}s only {last.Sources.Count} source(s) and {last.Targets.Count} target(s) registered; expected {sources} and {targets}");
    }

    /// <summary>Submits <paramref name="request"/> and reports each event to <paramref name="onEvent"/> until it ends.</summary>
    public static Task<MigrationOutcome> RunAsync(ActorSystem system, IActorRef schedulerProxy, StartMigration request, Action<IVmScatterProtocol> onEvent, TimeSpan acceptTimeout, CancellationToken cancellationToken = default) =>
        RunAsync(system, schedulerProxy, m => m, request, onEvent, acceptTimeout, cancellationToken);

    /// <summary>
    /// The same through a console's <see cref="AdminClient"/> (`vmscatter migrate`): the request and the follower's polls go
    /// through its cluster client to the scheduler proxy, the events come back through a receptionist; the console never joins.
    /// </summary>
    public static Task<MigrationOutcome> RunAsync(AdminClient client, StartMigration request, Action<IVmScatterProtocol> onEvent, TimeSpan acceptTimeout, CancellationToken cancellationToken = default) =>
        RunAsync(client.System, client.Client, m => AdminClient.Envelope(AdminClient.SchedulerPath, m), request, onEvent, acceptTimeout, cancellationToken);

    private static async Task<MigrationOutcome> RunAsync(ActorSystem system, IActorRef via, Func<object, object> envelope, StartMigration request, Action<IVmScatterProtocol> onEvent, TimeSpan acceptTimeout, CancellationToken cancellationToken)
    {
        var channel = Channel.CreateUnbounded<IVmScatterProtocol>();
        var follower = system.ActorOf(Props.Create(() => new MigrationFollowerActor(via, envelope, request, channel.Writer)), $"follow-{request.MigrationId:N}");
        bool accepted = false;
        try
        {
            while (true)
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                if (!accepted) wait.CancelAfter(acceptTimeout);
                IVmScatterProtocol message;
                try
                {
                    if (!await channel.Reader.WaitToReadAsync(wait.Token).ConfigureAwait(false))
                        throw new InvalidOperationException("the migration ended without a report");
                    message = await channel.Reader.ReadAsync(wait.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new ConsoleTimeoutException($"the scheduler did not accept the migration within {acceptTimeout.TotalSeconds:0}s");
                }
                onEvent(message);
                switch (message)
                {
                    case MigrationAccepted: accepted = true; break;
                    case MigrationRejected r: return new MigrationOutcome(null, r.Reason);
                    case MigrationFinished f: return new MigrationOutcome(f.Report, null);
                }
            }
        }
        finally
        {
            system.Stop(follower);
        }
    }
}
