using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter cancel ID`: stop a migration in flight; VMs not handed over stay on the source. Through <see cref="AdminClient"/>: the console never joins the cluster.</summary>
public static class CancelCommand
{
    public static Command Create()
    {
        var options = new AdminOptionSet();
        var id = new Argument<string>("ID") { Description = "The migration in flight to stop" };
        var command = new Command("cancel", "Stop a migration in flight: VMs not yet handed over keep running on the source");
        command.Arguments.Add(id);
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var migration = AdminOptionSet.MigrationIdOf(parse.GetValue(id)!);
            await using var client = options.Connect(parse);
            var answer = await client.AskAsync<CancelAnswer>(AdminClient.SchedulerPath, new CancelMigration(migration), "the migration scheduler", cancellationToken);
            if (!answer.Accepted) throw new UserError(answer.Message);
            if (parse.GetValue(options.Json)) AdminJson.Print(answer);
            else Console.WriteLine(answer.Message);
            return ExitCodes.Success;
        });
        return command;
    }
}
