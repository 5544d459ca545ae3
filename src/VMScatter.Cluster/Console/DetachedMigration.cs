using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Console;

/// <summary>
/// `migrate --detach` and `status --follow`: a migration submitted and watched through the cluster client, so the
/// console neither joins the cluster nor has to stay for the migration to go on.
/// </summary>
public static class DetachedMigration
{
    /// <summary>Asks until the scheduler knows at least one source and one target, or <paramref name="wait"/> passes.</summary>
    public static async Task<RegisteredHosts> WaitForHostsAsync(AdminClient client, TimeSpan wait, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + wait;
        while (true)
        {
            var hosts = await client.AskAsync<RegisteredHosts>(AdminClient.SchedulerPath, GetRegisteredHosts.Instance, "the migration scheduler", cancellationToken).ConfigureAwait(false);
            if (hosts.Sources.Count > 0 && hosts.Targets.Count > 0) return hosts;
            if (DateTime.UtcNow >= deadline)
                throw new ConsoleTimeoutException($"within {wait.TotalSeconds:0}s only {hosts.Sources.Count} source(s) and {hosts.Targets.Count} target(s) registered; need one of each");
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Submits <paramref name="request"/>; null once accepted, else the scheduler's reason.</summary>
    public static async Task<string?> SubmitAsync(AdminClient client, StartMigration request, CancellationToken cancellationToken = default)
    {
        var answer = await client.AskAsync<IVmScatterMessage>(AdminClient.SchedulerPath, request, "the migration scheduler", cancellationToken).ConfigureAwait(false);
        return answer switch
        {
            MigrationAccepted => null,
            MigrationRejected r => r.Reason,
            _ => throw new InvalidOperationException($"the scheduler answered {answer.GetType().Name} to a migration request"),
        };
    }

    /// <summary>
    /// Polls the scheduler (interval <paramref name="every"/>) until the migration has a report, telling
    /// <paramref name="onStatus"/> its state in flight each time; the journal's report at the end.
    /// </summary>
    public static async Task<Domain.Reports.MigrationReport> FollowAsync(AdminClient client, MigrationId id, TimeSpan every, Action<MigrationStatus, MigrationInFlight?> onStatus, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var status = await client.AskAsync<MigrationStatus>(AdminClient.SchedulerPath, new GetMigrationStatus(id), "the migration scheduler", cancellationToken).ConfigureAwait(false);
            if (status.Phase == Scheduler.MigrationPhase.Unknown) throw new UnknownMigrationException($"no migration {id} is known to the scheduler");
            if (status.Report is { } report) return report;
            var scheduler = await client.AskAsync<SchedulerStatus>(AdminClient.SchedulerPath, GetSchedulerStatus.Instance, "the migration scheduler", cancellationToken).ConfigureAwait(false);
            onStatus(status, scheduler.Migrations.FirstOrDefault(m => m.MigrationId == id));
            await Task.Delay(every, cancellationToken).ConfigureAwait(false);
        }
    }
}

public sealed class UnknownMigrationException(string message) : Exception(message);
