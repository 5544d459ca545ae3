using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;
using VMScatter.Cluster.Scheduler;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.Domain.Reports;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.View;

/// <summary>
/// Shows a migration as it runs (a bar per wave on a terminal, plain lines otherwise) and the final table. What is shown
/// comes from <see cref="ProgressModel"/>, folded from the events; this class only draws it.
/// </summary>
public static class MigrationView
{
    /// <summary>How often a log gets a line about a round still under way (each round's end always gets one).</summary>
    public static readonly TimeSpan PlainInterval = TimeSpan.FromSeconds(1);

    public static async Task<MigrationOutcome> FollowAsync(HumanOutput output, Func<Action<IVmScatterProtocol>, Task<MigrationOutcome>> run)
    {
        var clock = Stopwatch.StartNew();
        var gate = new object();
        var model = ProgressModel.Empty;
        if (!output.Live)
        {
            double lastInterval = double.NegativeInfinity;
            return await run(message =>
            {
                lock (gate)
                {
                    double at = clock.Elapsed.TotalSeconds;
                    var next = model.Apply(message, at);
                    foreach (var line in ProgressText.PlainLines(model, next, message, at, PlainInterval, ref lastInterval)) output.WriteLine(line);
                    model = next;
                }
            }).ConfigureAwait(false);
        }

        var rows = new RowBoard();
        MigrationOutcome? outcome = null;
        // The in-process cluster's log lines would tear the bars apart: they go above them instead.
        using var strayLines = output.LinesAboveLiveView();
        await output.Console.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(
                new TaskDescriptionColumn { Alignment = Justify.Left },
                new ProgressBarColumn { Width = 24 },
                new RowColumn(rows, (row, phase) => ProgressText.Round(row)),
                new RowColumn(rows, (row, phase) => ProgressText.Bytes(row)),
                new RowColumn(rows, (row, phase) => row.Round < 0 ? "" : ProgressText.Rate(row.BytesPerSecond)),
                new RowColumn(rows, (row, phase) => row.State is WaveState.PreCopy or WaveState.StopAndCopy ? $"ETA {ProgressText.Eta(row.Eta)}" : ""),
                new RowColumn(rows, (row, phase) => ProgressText.State(row, phase)))
            .StartAsync(async ctx =>
            {
                var migration = run(message => { lock (gate) model = model.Apply(message, clock.Elapsed.TotalSeconds); });
                var tasks = new List<ProgressTask>();
                // The rate and ETA move between events too: redraw from the model a few times a second.
                while (true)
                {
                    ProgressView view;
                    lock (gate) view = model.View(clock.Elapsed.TotalSeconds);
                    rows.Update(view, tasks, ctx);
                    ctx.Refresh();
                    if (migration.IsCompleted) break;
                    await Task.WhenAny(migration, Task.Delay(200)).ConfigureAwait(false);
                }
                foreach (var t in tasks) t.StopTask();
                outcome = await migration.ConfigureAwait(false);
            }).ConfigureAwait(false);
        return outcome!;
    }

    /// <summary>The rows drawn now, one per progress task (by position); a task without a row draws nothing.</summary>
    private sealed class RowBoard
    {
        private volatile IReadOnlyDictionary<int, WaveRow> _rows = new Dictionary<int, WaveRow>();

        public MigrationPhase Phase { get; private set; }

        public WaveRow? Row(ProgressTask task) => _rows.GetValueOrDefault(task.Id);

        public void Update(ProgressView view, List<ProgressTask> tasks, ProgressContext ctx)
        {
            while (tasks.Count < view.Rows.Count) tasks.Add(ctx.AddTask(Markup.Escape(view.Rows[tasks.Count].Label), maxValue: 1));
            var rows = new Dictionary<int, WaveRow>();
            for (int i = 0; i < tasks.Count; i++)
            {
                var task = tasks[i];
                // A row that went away (pending targets now in one wave) keeps a dash: Spectre refuses an empty name.
                if (i >= view.Rows.Count) { task.Description = "-"; task.Value = 0; continue; }
                var row = view.Rows[i];
                rows[task.Id] = row;
                task.Description = Markup.Escape(row.Label);
                task.Value = row.Fraction ?? 0;
                task.IsIndeterminate = row.Fraction is null && row.State is WaveState.PreCopy or WaveState.StopAndCopy;
            }
            Phase = view.Phase;
            _rows = rows;
        }
    }

    /// <summary>A column showing one field of the task's row.</summary>
    private sealed class RowColumn(RowBoard board, Func<WaveRow, MigrationPhase, string> text) : ProgressColumn
    {
        protected override bool NoWrap => true;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text(board.Row(task) is { } row ? text(row, board.Phase) : "");
    }

    public static void RenderReport(MigrationReport r, IAnsiConsole console)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("VM").AddColumn("target").AddColumn("digest matched").AddColumn(new TableColumn("downtime").RightAligned()).AddColumn("dirty tracking").AddColumn("note");
        foreach (var vm in r.PerVm)
            table.AddRow(Markup.Escape(vm.Id), Markup.Escape(vm.Target), vm.DigestMatched ? "[green]yes[/]" : "[red]no[/]",
                vm.HandedOver ? $"{vm.DowntimeMs:0} ms" : "-", Markup.Escape(vm.DirtyTracking ?? "-"), Markup.Escape(vm.Error ?? (vm.SourceDigest is null ? "" : $"sha256 {vm.SourceDigest[..16]}…")));
        console.Write(table);
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
        if (r.TransportFallback is { } fallback) summary.AddRow("group transport", Markup.Escape(fallback));
        if (r.GroupTransport == "multicast")
        {
            summary.AddRow("multicast repairs", $"{r.MulticastNacks:N0} NACKs, {r.MulticastRepairs:N0} datagrams repaired ({ByteSize.Format(r.MulticastRepairBytes)})");
            summary.AddRow("multicast datagrams refused", $"{r.MulticastDatagramsRejected:N0} ({r.MulticastDatagramsDuplicate:N0} more came again after delivery)");
        }
        summary.AddRow("group joins + leaves", $"{r.GroupSwitches} (lower bound {r.GroupSwitchesLowerBound})"
            + (r.GroupTransport == "multicast" ? $"; on the wire: {r.MulticastJoins} + {r.MulticastLeaves} on {r.MulticastChannels} channels" : ""));
        string waves = r.Waves > 1 ? $"{r.Rounds} per VM in {r.Waves} waves, one target host each: {r.DataPlaneRounds} in all" : $"{r.Rounds}";
        summary.AddRow("rounds (pages per round)", $"{waves} ({string.Join(", ", r.DirtyPagesPerRound)}; {r.SetAsidePages:N0} set aside from round 0, {r.ContentsWithdrawn:N0} withdrawn when rewritten before their turn)");
        if (r.LostTargets.Count > 0) summary.AddRow("targets lost", Markup.Escape(string.Join("; ", r.LostTargets)));
        if (r.Replaced.Count > 0)
            summary.AddRow("re-placed VMs", Markup.Escape(string.Join(", ", r.Replaced.Select(x => $"{x.Vm} ({x.LostTarget} → {(x.NewTarget.Length > 0 ? x.NewTarget : "stayed on the source")})"))));
        summary.AddRow("downtime max", $"{r.DowntimeMsMax:0} ms");
        summary.AddRow("total time", $"{r.TotalSeconds:0.00} s");
        summary.AddRow("verified", r.Verified ? "[green]yes: every VM byte-identical and handed over[/]" : $"[red]NO[/] {Markup.Escape(r.Error ?? "")}");
        console.Write(summary);
    }
}
