using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter list`: the migrations the scheduler's journal records. Through <see cref="AdminClient"/>: the console never joins the cluster.</summary>
public static class ListCommand
{
    public static Command Create()
    {
        var options = new AdminOptionSet();
        var command = new Command("list", "Migrations the scheduler's journal records, oldest first");
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var client = options.Connect(parse);
            var list = await client.AskAsync<MigrationList>(AdminClient.SchedulerPath, ListMigrations.Instance, "the migration scheduler", cancellationToken);
            if (parse.GetValue(options.Json)) AdminJson.Print(list.Migrations);
            else MigrationListView.Render(list);
            return ExitCodes.Success;
        });
        return command;
    }
}
