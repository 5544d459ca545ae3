using Spectre.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>`vmscatter status` for people: members, hosts, migrations in flight (one row per VM).</summary>
public static class StatusView
{
    public static void Render(ClusterMembers members, SchedulerStatus scheduler)
    {
        var m = new Table().Border(TableBorder.Rounded).Title($"members (as {Markup.Escape(members.AnsweredBy)} sees them)")
            .AddColumn("address").AddColumn("roles").AddColumn("status").AddColumn("reachable");
        foreach (var member in members.Members)
            m.AddRow(Markup.Escape(member.Address), Markup.Escape(string.Join(",", member.Roles)), member.Status, member.Reachable ? "[green]yes[/]" : "[red]no[/]");
        AnsiConsole.Write(m);

        var h = new Table().Border(TableBorder.Rounded).Title($"hosts (scheduler at {Markup.Escape(scheduler.SchedulerAddress)})")
            .AddColumn("host").AddColumn("role").AddColumn("address").AddColumn(new TableColumn("capacity").RightAligned())
            .AddColumn(new TableColumn("free").RightAligned()).AddColumn("rack").AddColumn(new TableColumn("VMs").RightAligned()).AddColumn("backend");
        foreach (var host in scheduler.Hosts)
            h.AddRow(Markup.Escape(host.HostId.Value), host.Role, Markup.Escape(host.Address), host.CapacityBytes > 0 ? ByteSize.Format(host.CapacityBytes) : "-",
                host.Role == "target" ? ByteSize.Format(host.FreeBytes) : "-", Markup.Escape(host.Rack), host.Role == "source" ? host.Vms.ToString() : "-", Markup.Escape(host.Backend));
        AnsiConsole.Write(h);

        if (scheduler.Migrations.Count == 0)
        {
            Console.WriteLine("no migration in flight");
            return;
        }
        foreach (var run in scheduler.Migrations)
        {
            string round = run.Round < 0 ? "no transfer yet" : run.Wave < 0 ? $"round {run.Round}" : $"wave {run.Wave}, round {run.Round}";
            // A line of its own: a title is wrapped to the (narrow) table's width.
            Console.WriteLine($"migration {run.MigrationId} from {run.SourceHostId}: {run.Phase.ToString().ToLowerInvariant()}, {round}, "
                + $"{ByteSize.Format(run.BytesSent)} sent at {ByteSize.Format(run.BytesPerSecond)}/s, started {run.StartedUtc:u}" + (run.Error is null ? "" : $", failing: {run.Error}"));
            var t = new Table().Border(TableBorder.Rounded).AddColumn("VM").AddColumn("target").AddColumn("phase");
            foreach (var vm in run.Vms) t.AddRow(Markup.Escape(vm.VmId.Value), Markup.Escape(vm.TargetHostId?.Value ?? "-"), Markup.Escape(vm.Phase));
            AnsiConsole.Write(t);
        }
    }
}
