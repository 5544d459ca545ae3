using System.Globalization;
using Spectre.Console;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>
/// Shows a migration as it runs (progress bars on a terminal, one line per event otherwise) and the final table.
/// </summary>
public static class MigrationView
{
    public static async Task<MigrationOutcome> FollowAsync(int vmCount, Func<Action<IVmScatterProtocol>, Task<MigrationOutcome>> run)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive) return await run(PrintLine).ConfigureAwait(false);
        MigrationOutcome? outcome = null;
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var analyse = ctx.AddTask("round 0: hash + dedup", maxValue: 1);
                var transfer = ctx.AddTask("pages to target groups", maxValue: 1);
                var handover = ctx.AddTask("verified + handed over", maxValue: vmCount);
                outcome = await run(message =>
                {
                    switch (message)
                    {
                        case MigrationPlaced p:
                            analyse.Value = 1;
                            analyse.StopTask();
                            transfer.MaxValue = Math.Max(1, p.GroupTransport == GroupTransport.FanOut ? p.EstimatedPages : p.DistinctPages);
                            break;
                        case MigrationProgress p:
                            transfer.Description = $"round {p.Round}: {ByteSize.Format(p.BytesSent)} sent";
                            transfer.Value = Math.Min(transfer.MaxValue, p.ContentRecordsSent);
                            break;
                        case VmHandedOver or VmHandoverFailed:
                            transfer.Value = transfer.MaxValue;
                            handover.Increment(1);
                            break;
                        case MigrationFinished:
                            transfer.StopTask();
                            handover.StopTask();
                            break;
                    }
                }).ConfigureAwait(false);
            }).ConfigureAwait(false);
        return outcome!;
    }

    private static int _lastRound = -1;
    private static DateTime _lastProgress;

    private static void PrintLine(IVmScatterProtocol message)
    {
        // Progress arrives every few hundred milliseconds; a log wants a line per round or per second at most.
        if (message is MigrationProgress progress)
        {
            if (progress.Round == _lastRound && DateTime.UtcNow - _lastProgress < TimeSpan.FromSeconds(1)) return;
            _lastRound = progress.Round;
            _lastProgress = DateTime.UtcNow;
        }
        string? line = message switch
        {
            MigrationAccepted a => $"accepted: {a.Vms} VMs to {a.Targets} target hosts",
            MigrationPlaced p => $"placed ({p.Strategy}): {string.Join(", ", p.TargetOfVm.OrderBy(x => x.Key).Select(x => $"{x.Key}→{x.Value}"))}",
            MigrationProgress p => $"round {p.Round}: {ByteSize.Format(p.BytesSent)} sent, {p.ContentRecordsSent} page records",
            VmHandedOver h => $"handed over {h.VmId} → {h.TargetHostId} (digest {h.Digest[..Math.Min(12, h.Digest.Length)]}, downtime {h.DowntimeMs:0} ms)",
            MigrationStatus s => $"scheduler: migration {s.MigrationId} is {s.Phase.ToString().ToLowerInvariant()}",
            VmHandoverFailed f => $"NOT handed over {f.VmId}: {f.Reason} (still running on the source)",
            MigrationTargetLost l => $"target {l.HostId} lost: {l.Reason}; its VMs not handed over are re-placed",
            VmsReplaced r => $"re-placed from {r.LostHostId}: {string.Join(", ", r.TargetOfVm.OrderBy(x => x.Key).Select(x => $"{x.Key}→{x.Value}"))}",
            _ => null,
        };
        if (line is not null) System.Console.WriteLine(line);
    }

    public static void RenderReport(MigrationReport r)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("VM").AddColumn("target").AddColumn("digest matched").AddColumn(new TableColumn("downtime").RightAligned()).AddColumn("note");
        foreach (var vm in r.PerVm)
            table.AddRow(Markup.Escape(vm.Id), Markup.Escape(vm.Target), vm.DigestMatched ? "[green]yes[/]" : "[red]no[/]",
                vm.HandedOver ? $"{vm.DowntimeMs:0} ms" : "-", Markup.Escape(vm.Error ?? (vm.SourceDigest is null ? "" : $"sha256 {vm.SourceDigest[..16]}…")));
        AnsiConsole.Write(table);
        var inv = CultureInfo.InvariantCulture;
        var summary = new Grid().AddColumn().AddColumn();
        summary.AddRow("VMs → targets", $"{r.Vms} → {r.Targets} ({r.PlacementStrategy}, {r.GroupTransport})");
        summary.AddRow("guest memory", ByteSize.Format(r.GuestBytes));
        summary.AddRow("zero pages (never sent)", r.ZeroPages.ToString("N0", inv));
        summary.AddRow("distinct non-zero pages", r.DistinctPages.ToString("N0", inv));
        summary.AddRow("naive per-VM copy", ByteSize.Format(r.NaiveBytes));
        summary.AddRow("sent by the source", $"{ByteSize.Format(r.BytesSent)} ({r.SentToNaive.ToString("P1", inv)} of naive, framing included)");
        summary.AddRow("received by targets", ByteSize.Format(r.BytesReceived));
        summary.AddRow("compression (lz4/zstd)", r.CompressionRatio.ToString("0.000", inv));
        summary.AddRow("link bytes (flat network)", ByteSize.Format(r.LinkBytes));
        summary.AddRow("group joins + leaves", $"{r.GroupSwitches} (lower bound {r.GroupSwitchesLowerBound})");
        string waves = r.Waves > 1 ? $"{r.Rounds} per VM in {r.Waves} waves, one target host each: {r.DataPlaneRounds} in all" : $"{r.Rounds}";
        summary.AddRow("rounds (pages per round)", $"{waves} ({string.Join(", ", r.DirtyPagesPerRound)}; {r.SetAsidePages:N0} set aside from round 0, {r.ContentsWithdrawn:N0} withdrawn when rewritten before their turn)");
        if (r.LostTargets.Count > 0) summary.AddRow("targets lost", Markup.Escape(string.Join("; ", r.LostTargets)));
        if (r.Replaced.Count > 0)
            summary.AddRow("re-placed VMs", Markup.Escape(string.Join(", ", r.Replaced.Select(x => $"{x.Vm} ({x.LostTarget} → {(x.NewTarget.Length > 0 ? x.NewTarget : "stayed on the source")})"))));
        summary.AddRow("downtime max", $"{r.DowntimeMsMax:0} ms");
        summary.AddRow("total time", $"{r.TotalSeconds:0.00} s");
        summary.AddRow("verified", r.Verified ? "[green]yes: every VM byte-identical and handed over[/]" : $"[red]NO[/] {Markup.Escape(r.Error ?? "")}");
        AnsiConsole.Write(summary);
    }
}
