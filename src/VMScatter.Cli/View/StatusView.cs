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
            // Round, bytes, rate and ETA are the VM's wave's current round (the source sends a wave's VMs together); "-" when unknown.
            var t = new Table().Border(TableBorder.Rounded).AddColumn("VM").AddColumn("target").AddColumn("phase").AddColumn(new TableColumn("round").RightAligned())
                .AddColumn(new TableColumn("sent").RightAligned()).AddColumn(new TableColumn("rate").RightAligned()).AddColumn(new TableColumn("ETA").RightAligned());
            foreach (var vm in run.Vms)
            {
                var (vmRound, sent, rate, eta) = VmColumns(vm);
                t.AddRow(Markup.Escape(vm.VmId.Value), Markup.Escape(vm.TargetHostId?.Value ?? "-"), Markup.Escape(vm.Phase), vmRound, sent, rate, eta);
            }
            AnsiConsole.Write(t);
        }
    }

    /// <summary>A VM's round, bytes sent in it, rate and ETA as the table shows them: "-" for what is not known (no round under way, no rate yet).</summary>
    public static (string Round, string Sent, string Rate, string Eta) VmColumns(VmInFlight vm) => vm.Round < 0
        ? ("-", "-", "-", "-")
        : (vm.Round.ToString(System.Globalization.CultureInfo.InvariantCulture), ByteSize.Format(vm.RoundBytes),
            ProgressText.Rate(vm.BytesPerSecond > 0 ? vm.BytesPerSecond : null), ProgressText.Eta(vm.EtaSeconds is { } s ? TimeSpan.FromSeconds(s) : null));
}
