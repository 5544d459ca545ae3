using Spectre.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>`vmscatter list` for people: one row per journaled migration, oldest first.</summary>
public static class MigrationListView
{
    public static void Render(MigrationList list)
    {
        if (list.Migrations.Count == 0)
        {
            Console.WriteLine("no migrations recorded");
            return;
        }
        var t = new Table().Border(TableBorder.Rounded)
            .AddColumn(new TableColumn("id").NoWrap()).AddColumn(new TableColumn("started (UTC)").NoWrap()).AddColumn("phase").AddColumn(new TableColumn("VMs").RightAligned()).AddColumn("targets")
            .AddColumn("verified").AddColumn(new TableColumn("sent").RightAligned()).AddColumn(new TableColumn("duration").RightAligned())
            .AddColumn(new TableColumn("max downtime").RightAligned()).AddColumn("error");
        foreach (var m in list.Migrations)
            t.AddRow(m.MigrationId.ToString(), m.StartedUtc.ToString("yyyy-MM-dd HH:mm:ss"), m.Phase.ToString().ToLowerInvariant(), $"{m.HandedOver}/{m.Vms}",
                Markup.Escape(string.Join(",", m.Targets)), m.Verified ? "[green]yes[/]" : "[red]no[/]", ByteSize.Format(m.BytesSent),
                $"{m.TotalSeconds:0.0} s", $"{m.DowntimeMsMax:0} ms", Markup.Escape(m.Error ?? ""));
        AnsiConsole.Write(t);
    }
}
