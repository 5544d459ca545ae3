using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>Nodes as separate processes, one killed with SIGKILL: what survives.</summary>
public class CrashTests
{
    [Fact]
    public async Task Killing_the_scheduler_node_downs_it_alone_and_every_other_node_stays_up()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-crash-").FullName;
        var nodes = new List<NodeProcess>();
        try
        {
            var (scheduler, config, port) = await StartScheduler(work, nodes);
            string seed = $"127.0.0.1:{port}";
            var survivors = new[]
            {
                NodeProcess.Start("source", "--role", "source", "--seeds", seed, "--host-id", "source-1", "--vms", "2", "--vm-memory", "4MiB", "--config", config),
                NodeProcess.Start("target-1", "--role", "target", "--seeds", seed, "--host-id", "target-1", "--capacity", "64MiB", "--config", config),
                NodeProcess.Start("target-2", "--role", "target", "--seeds", seed, "--host-id", "target-2", "--capacity", "64MiB", "--config", config),
            };
            nodes.AddRange(survivors);
            foreach (var n in survivors) await n.WaitForLineAsync(l => l.StartsWith($"node {n.Name}") && l.Contains(" up at "), TimeSpan.FromSeconds(60));

            scheduler.Kill();

            // Every survivor sees the scheduler removed (downed by the majority), and is itself still running.
            foreach (var n in survivors)
                await n.WaitForLineAsync(l => l.Contains($"member akka.tcp://vmscatter@127.0.0.1:{port} (scheduler) removed"), TimeSpan.FromSeconds(60));
            Assert.All(survivors, n => Assert.False(n.HasExited, $"{n.Name} exited ({(n.HasExited ? n.ExitCode : 0)}):\n{n.Output}"));
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    [Fact]
    public async Task A_target_killed_mid_transfer_has_its_vms_re_placed_on_the_targets_left_and_migrate_exits_0()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-rebalance-").FullName;
        var nodes = new List<NodeProcess>();
        try
        {
            var (scheduler, config, port) = await StartScheduler(work, nodes);
            string seed = $"127.0.0.1:{port}";
            var workers = new List<NodeProcess> { NodeProcess.Start("source-1", "--role", "source", "--seeds", seed, "--host-id", "source-1", "--vms", "6", "--vm-memory", "32MiB", "--config", config) };
            for (int t = 1; t <= 3; t++)
                workers.Add(NodeProcess.Start($"target-{t}", "--role", "target", "--seeds", seed, "--host-id", $"target-{t}", "--capacity", "256MiB", "--config", config));
            nodes.AddRange(workers);
            foreach (var n in workers) await n.WaitForLineAsync(l => l.StartsWith($"node {n.Name}") && l.Contains(" up at "), TimeSpan.FromSeconds(60));

            string reportPath = Path.Combine(work, "report.json");
            var migrate = NodeProcess.StartCommand("migrate", "migrate", "--seeds", seed, "--link-rate", "300Mbit", "--json", reportPath, "--wait-seconds", "60");
            nodes.Add(migrate);
            // "placed (traffic-aware): vm-000→target-2, ...": the target with the most VMs is the one to kill once data flows.
            string placed = await migrate.WaitForLineAsync(l => l.StartsWith("placed ("), TimeSpan.FromSeconds(90));
            var placement = placed[(placed.IndexOf("): ", StringComparison.Ordinal) + 3)..].Split(", ").Select(p => p.Split('→')).ToDictionary(p => p[0], p => p[1]);
            string victim = placement.Values.GroupBy(h => h).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;
            await migrate.WaitForLineAsync(l => l.StartsWith("round ") && !l.Contains(" 0 B sent"), TimeSpan.FromSeconds(60));
            workers.Single(n => n.Name == victim).Kill();

            Assert.Equal(0, await migrate.WaitForExitAsync(TimeSpan.FromSeconds(120)));
            var report = Domain.Reports.MigrationReport.FromJson(await File.ReadAllTextAsync(reportPath));
            Assert.True(report.Verified, migrate.Output);
            Assert.All(report.PerVm, v => Assert.True(v.HandedOver && v.DigestMatched && v.Target != victim, $"{v.Id} on {v.Target}: {v.Error}"));
            var moved = placement.Where(p => p.Value == victim).Select(p => p.Key).Order().ToArray();
            Assert.True(moved.SequenceEqual(report.Replaced.Select(r => r.Vm).Order()),
                $"re-placed {string.Join(", ", report.Replaced.Select(r => $"{r.Vm} ({r.LostTarget} → {r.NewTarget})"))}, expected {string.Join(", ", moved)}:\n{migrate.Output}");
            Assert.All(report.Replaced, r => Assert.True(r.LostTarget == victim && r.NewTarget.Length > 0 && r.NewTarget != victim, $"{r.Vm}: {r.LostTarget} → {r.NewTarget}"));
            Assert.True(migrate.Output.Split('\n').Any(l => l.StartsWith($"target {victim} lost")), migrate.Output);
            // No other node went down with it.
            Assert.All(workers.Where(n => n.Name != victim).Append(scheduler), n => Assert.False(n.HasExited, $"{n.Name} exited:\n{n.Output}"));
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>
    /// A scheduler node (it seeds itself) with a journal in <paramref name="work"/> and faster failure detection than
    /// production's (10 s of heartbeat pause on a loaded 2-core machine; 5 s: at 3 s a second, healthy target was once lost too in a loaded run), written to a config file the other nodes take too.
    /// </summary>
    private static async Task<(NodeProcess Scheduler, string Config, int Port)> StartScheduler(string work, List<NodeProcess> nodes)
    {
        string config = Path.Combine(work, "fast.conf");
        await File.WriteAllTextAsync(config, """
            akka.cluster.failure-detector.acceptable-heartbeat-pause = 5s
            akka.cluster.split-brain-resolver.stable-after = 3s
            """);
        int port = NodeProcess.FreePort();
        var scheduler = NodeProcess.Start("scheduler", "--role", "scheduler", "--port", port.ToString(), "--host-id", "scheduler-1",
            "--journal", Path.Combine(work, "journal.db"), "--config", config);
        nodes.Add(scheduler);
        await scheduler.WaitForLineAsync(l => l.StartsWith("node scheduler-1 up"), TimeSpan.FromSeconds(60));
        return (scheduler, config, port);
    }
}
