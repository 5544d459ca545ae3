using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter show ID`: one migration's report. Through <see cref="AdminClient"/>: the console never joins the cluster.</summary>
public static class ShowCommand
{
    public static Command Create()
    {
        var options = new AdminOptionSet();
        var id = new Argument<string>("ID") { Description = "The migration's id (as `list` shows it)" };
        var plot = new Option<string?>("--plot") { Description = "Draw its timeline (bytes per wave over time, rounds, each VM's pause), as the scheduler saw it, to FILE.png or FILE.svg" };
        var command = new Command("show", "One migration's report (the same JSON as `migrate --json`)");
        command.Arguments.Add(id);
        command.Options.Add(plot);
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var migration = AdminOptionSet.MigrationIdOf(parse.GetValue(id)!);
            string? plotPath = parse.GetValue(plot);
            if (plotPath is not null) PlotFile.Check(plotPath);
            await using var client = options.Connect(parse);
            var status = await client.AskAsync<MigrationStatus>(AdminClient.SchedulerPath, new GetMigrationStatus(migration), "the migration scheduler", cancellationToken);
            if (status.Phase == MigrationPhase.Unknown) throw new UserError($"no migration {migration} is known to the scheduler");
            bool json = parse.GetValue(options.Json);
            if (status.Report is { } report)
            {
                if (json) Console.Out.WriteLine(report.ToJson());
                else MigrationView.RenderReport(report, Spectre.Console.AnsiConsole.Console);
                if (plotPath is not null)
                {
                    var t = report.Timeline;
                    TimelinePlot.Save(report, new MigrationTimeline(t, report.TotalSeconds), plotPath);
                    (json ? Console.Error : Console.Out).WriteLine($"timeline drawn to {plotPath}{(t.Samples.Count == 0 ? " (the scheduler that finished it did not see it run: rounds and pauses only)" : "")}");
                }
            }
            else if (plotPath is not null) throw new UserError($"migration {migration} has no report yet: nothing to draw");
            else if (json) AdminJson.Print(new { migrationId = status.MigrationId, phase = status.Phase, handedOver = status.HandedOver, failed = status.Failed });
            else Console.WriteLine($"migration {migration} is {status.Phase.ToString().ToLowerInvariant()}: {status.HandedOver.Count} VM(s) handed over, {status.Failed.Count} failed so far; no report yet (see `vmscatter status`)");
            return ExitCodes.Success;
        });
        return command;
    }
}
