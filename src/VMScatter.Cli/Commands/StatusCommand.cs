using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter status`: members, hosts and migrations in flight, or (--follow ID) one migration to its report. Through <see cref="AdminClient"/>: the console never joins the cluster.</summary>
public static class StatusCommand
{
    public static Command Create()
    {
        var options = new AdminOptionSet();
        var follow = new Option<string?>("--follow") { Description = "Follow one migration (id from `migrate --detach` or `list`) to its end, then print its report" };
        var command = new Command("status", "Members, registered hosts and the migrations in flight of a running cluster");
        command.Options.Add(follow);
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            MigrationId? followed = parse.GetValue(follow) is { } f ? AdminOptionSet.MigrationIdOf(f) : null;
            await using var client = options.Connect(parse);
            if (followed is { } id) return await Follow(client, id, parse.GetValue(options.Json), cancellationToken);
            var members = client.AskAsync<ClusterMembers>(AdminClient.ClusterInfoPath, GetClusterMembers.Instance, "the cluster", cancellationToken);
            var scheduler = client.AskAsync<SchedulerStatus>(AdminClient.SchedulerPath, GetSchedulerStatus.Instance, "the migration scheduler", cancellationToken);
            await Task.WhenAll(members, scheduler);
            if (parse.GetValue(options.Json)) AdminJson.Print(new { members = members.Result, scheduler = scheduler.Result });
            else StatusView.Render(members.Result, scheduler.Result);
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>A line whenever the migration's phase, round or handovers change (not with --json); its report at the end.</summary>
    private static async Task<int> Follow(AdminClient client, MigrationId id, bool json, CancellationToken cancellationToken)
    {
        string last = "";
        MigrationReport report;
        try
        {
            report = await DetachedMigration.FollowAsync(client, id, TimeSpan.FromSeconds(1), (status, run) =>
            {
                string round = run is null || run.Round < 0 ? "" : run.Wave < 0 ? $", round {run.Round}" : $", wave {run.Wave} round {run.Round}";
                string sent = run is null ? "" : $", {ByteSize.Format(run.BytesSent)} sent at {ByteSize.Format(run.BytesPerSecond)}/s";
                string line = $"{status.Phase.ToString().ToLowerInvariant()}{round}{sent}; {status.HandedOver.Count} handed over, {status.Failed.Count} stay on the source";
                if (json || line == last) return;
                Console.WriteLine(line);
                last = line;
            }, cancellationToken);
        }
        catch (UnknownMigrationException e) { throw new UserError(e.Message); }
        if (json) Console.Out.WriteLine(report.ToJson());
        else MigrationView.RenderReport(report, Spectre.Console.AnsiConsole.Console);
        return report.Verified ? ExitCodes.Success : ExitCodes.MigrationFailed;
    }
}
