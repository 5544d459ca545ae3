using System.CommandLine;
using VMScatter.Bench;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain.Synthetic;
using VMScatter.Domain.Units;
using VMScatter.Qemu;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter demo`: a whole cluster on this machine (scheduler, one source, N targets), one migration, a report.</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var backend = new Option<string>("--backend") { Description = "synthetic (modelled guests) | qemu (real QEMU guests, TCG)", DefaultValueFactory = _ => "synthetic" };
        var vms = new Option<int?>("--vms") { Description = "VMs on the source (default: 8 synthetic, 3 qemu)" };
        var vmMemory = new Option<string>("--vm-memory") { Description = "Memory of each VM (e.g. 256MiB)", DefaultValueFactory = _ => "256MiB" };
        var targets = new Option<int?>("--targets") { Description = "Target hosts (default: 4 synthetic, 2 qemu)" };
        var capacity = new Option<string?>("--target-capacity") { Description = "Memory each target accepts (default: just enough to spread the VMs evenly)" };
        var seed = new Option<long>("--seed") { Description = "Seed of the synthetic guests", DefaultValueFactory = _ => 42 };
        var applications = new Option<int>("--applications") { Description = "Distinct applications among the VMs (VMs of one share its pages)", DefaultValueFactory = _ => 4 };
        var osImages = new Option<int>("--os-images") { Description = "Distinct OS images among the VMs", DefaultValueFactory = _ => 1 };
        var dirtyRate = new Option<double?>("--dirty-rate") { Description = "Pages each guest writes per second while running (default 2000)" };
        var wws = new Option<int?>("--wws") { Description = "Writable working set in pages (default 4096)" };
        var journal = new Option<string?>("--journal") { Description = "SQLite file of the scheduler's journal (default: a fresh one in the temp folder, removed afterwards)" };
        var shared = new MigrationOptionSet();
        var command = new Command("demo", "Migrate synthetic running VMs from one source to several targets over a local Akka cluster and verify every byte");
        foreach (var o in new Option[] { backend, vms, vmMemory, targets, capacity, seed, applications, osImages, dirtyRate, wws, journal }) command.Options.Add(o);
        shared.AddTo(command);

        command.SetAction(async (parse, cancellationToken) =>
        {
            var plot = shared.PlotPath(parse);
            bool qemu = QemuSetup.Backend(parse.GetValue(backend)) == GuestBackend.Qemu;
            int vmCount = parse.GetValue(vms) ?? (qemu ? 3 : 8), targetCount = parse.GetValue(targets) ?? (qemu ? 2 : 4);
            if (vmCount < 1) throw new UserError("--vms must be at least 1");
            if (targetCount < 1) throw new UserError("--targets must be at least 1 (zero target hosts cannot receive anything)");
            if (targetCount > TargetMask.MaxTargets) throw new UserError($"--targets must be at most {TargetMask.MaxTargets}");
            long memory = Size(parse.GetValue(vmMemory)!, "--vm-memory");
            if (memory % 4096 != 0) throw new UserError("--vm-memory must be a multiple of 4 KiB");
            long targetCapacity = parse.GetValue(capacity) is { } c ? Size(c, "--target-capacity") : (vmCount + targetCount - 1) / targetCount * memory;
            // Every node runs in this process: the source's guests and the targets' (backed) capacity must fit here.
            long need = vmCount * memory + targetCount * targetCapacity, available = HostMemory.AvailableBytes();
            if (need > available)
                throw new UserError($"{vmCount} VMs x {ByteSize.Format(memory)} and {targetCount} targets x {ByteSize.Format(targetCapacity)} need {ByteSize.Format(need)}, but this machine has {ByteSize.Format(available)} available");
            var model = new SyntheticGuestModel { MemoryBytes = memory };
            if (parse.GetValue(dirtyRate) is { } rate) model = model with { DirtyPagesPerSecond = rate };
            if (parse.GetValue(wws) is { } w) model = model with { WritableWorkingSetPages = w };
            var spec = new SyntheticFleetSpec(vmCount, model, parse.GetValue(seed), parse.GetValue(osImages), parse.GetValue(applications));
            try { spec.Validate(); } catch (ArgumentException e) { throw new UserError(e.Message); }
            var options = shared.Resolve(parse, NodeConfig.Build(null, ""));
            var output = shared.Output(parse);

            if (qemu) return await RunQemuAsync(vmCount, memory, targetCount, targetCapacity, options, parse.GetValue(journal), parse.GetValue(shared.Json), plot, output, cancellationToken);

            output.WriteLine($"Starting a local cluster: scheduler, 1 source with {vmCount} × {ByteSize.Format(memory)} running guests, {targetCount} targets × {ByteSize.Format(targetCapacity)}");
            var fleet = SyntheticFleet.Create(spec);
            // A demo is one run: by default its journal is a fresh file that does not outlive it.
            bool ownJournal = parse.GetValue(journal) is null;
            var journalPath = Path.GetFullPath(parse.GetValue(journal) ?? Path.Combine(Path.GetTempPath(), $"vmscatter-demo-{Guid.NewGuid():N}.db"));
            using var removeJournal = new JournalCleanup(ownJournal ? journalPath : null);
            await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = fleet, Targets = targetCount, TargetCapacityBytes = targetCapacity, JournalConnectionString = $"Data Source={journalPath}",
            }, cancellationToken);
            await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targetCount, TimeSpan.FromSeconds(30), cancellationToken);
            var request = new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options);
            var timeline = new MigrationTimeline();
            var outcome = await MigrationView.FollowAsync(output, onEvent =>
                MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy, request, timeline.Recording(onEvent), TimeSpan.FromSeconds(30), cancellationToken));
            return Finish(outcome, parse.GetValue(shared.Json), output, plot, timeline);
        });
        return command;
    }

    /// <summary>The demo on real guests: boot them, migrate them over the cluster, show each one counting on at its target.</summary>
    private static async Task<int> RunQemuAsync(int vmCount, long memory, int targetCount, long targetCapacity, MigrationOptions options, string? journalFile, string? json, string? plot, HumanOutput output, CancellationToken cancellationToken)
    {
        var (config, image) = await QemuSetup.PrepareAsync(null, cancellationToken);
        output.WriteLine($"Booting {vmCount} QEMU guests × {ByteSize.Format(memory)} ({config.Accelerator}, workload: {config.Workload})");
        var guests = await config.BootGuestsAsync(image, vmCount, memory, cancellationToken);
        var journalPath = Path.GetFullPath(journalFile ?? Path.Combine(Path.GetTempPath(), $"vmscatter-demo-{Guid.NewGuid():N}.db"));
        using var removeJournal = new JournalCleanup(journalFile is null ? journalPath : null);
        var backends = new System.Collections.Concurrent.ConcurrentDictionary<string, QemuTargetBackend>();
        try
        {
            output.WriteLine($"Starting a local cluster: scheduler, 1 source with {vmCount} running guests, {targetCount} targets × {ByteSize.Format(targetCapacity)}");
            await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = guests, Targets = targetCount, TargetCapacityBytes = targetCapacity, JournalConnectionString = $"Data Source={journalPath}",
                TargetBackendFor = host => backends.GetOrAdd(host, h => new QemuTargetBackend(h, config.Settings)),
            }, cancellationToken);
            await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targetCount, TimeSpan.FromSeconds(30), cancellationToken);
            var request = new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options);
            var timeline = new MigrationTimeline();
            var outcome = await MigrationView.FollowAsync(output, onEvent =>
                MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy, request, timeline.Recording(onEvent), TimeSpan.FromSeconds(120), cancellationToken));
            int exit = Finish(outcome, json, output, plot, timeline);
            foreach (var g in guests)
            {
                var landed = backends.Values.Select(b => b.Landed.GetValueOrDefault(g.Description.Id)).FirstOrDefault(l => l is not null);
                if (landed is null) { output.WriteLine($"{g.Description.Id}: still running on the source ({g.State})"); continue; }
                // Show the guest alive where it landed: its own counter passes the value it had when paused.
                await SerialConsole.WaitForCounterAboveAsync(landed.SerialLogPath, g.CounterAtPause + 2, TimeSpan.FromSeconds(60), () => landed.State == VmRunState.Running, cancellationToken);
                output.WriteLine($"{g.Description.Id}: serial counter {g.CounterAtPause} when paused on the source, {SerialConsole.LastCounter(landed.SerialLogPath)} now on its target (QEMU pid {landed.ProcessId})");
            }
            return exit;
        }
        finally { foreach (var g in guests) await g.DisposeAsync(); }
    }

    /// <summary>Shared ending of demo and migrate: table, JSON (to a file, or alone on standard output with <c>--json -</c>), the timeline plot, exit code.</summary>
    public static int Finish(MigrationOutcome outcome, string? jsonPath, HumanOutput output, string? plotPath = null, MigrationTimeline? timeline = null)
    {
        if (outcome.RejectedBecause is not null) throw new UserError($"migration rejected: {outcome.RejectedBecause}");
        var report = outcome.Report!;
        MigrationView.RenderReport(report, output.Console);
        if (MigrationOptionSet.IsStandardOutput(jsonPath)) output.StandardOutput.WriteLine(report.ToJson());
        else if (jsonPath is not null)
        {
            File.WriteAllText(jsonPath, report.ToJson());
            output.WriteLine($"report written to {jsonPath}");
        }
        if (plotPath is not null)
        {
            TimelinePlot.Save(report, timeline ?? new MigrationTimeline(), plotPath);
            output.WriteLine($"timeline drawn to {plotPath}");
        }
        return report.Verified ? ExitCodes.Success : ExitCodes.MigrationFailed;
    }

    /// <summary>Deletes a journal file (and SQLite's side files) when the demo ends.</summary>
    private sealed class JournalCleanup(string? path) : IDisposable
    {
        public void Dispose()
        {
            if (path is null) return;
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var f in new[] { path, path + "-wal", path + "-shm" }) try { File.Delete(f); } catch (IOException) { }
        }
    }

    public static long Size(string text, string option) =>
        ByteSize.TryParse(text, out long bytes) && bytes > 0 ? bytes : throw new UserError($"{option}: '{text}' is not a size (e.g. 256MiB, 1GiB)");
}
