using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>Nodes as separate processes, one killed with SIGKILL: what survives.</summary>
public class CrashTests
{
    [Fact]
    public async Task Killing_the_scheduler_node_downs_it_alone_and_every_other_node_stays_up()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-crash-").FullName;
        // Faster failure detection than production's (10 s of heartbeat pause on a loaded 2-core machine).
        string config = Path.Combine(work, "fast.conf");
        await File.WriteAllTextAsync(config, """
            akka.cluster.failure-detector.acceptable-heartbeat-pause = 3s
            akka.cluster.split-brain-resolver.stable-after = 3s
            """);
        int port = NodeProcess.FreePort();
        string seed = $"127.0.0.1:{port}";
        var nodes = new List<NodeProcess>();
        try
        {
            var scheduler = NodeProcess.Start("scheduler", "--role", "scheduler", "--port", port.ToString(), "--host-id", "scheduler-1",
                "--journal", Path.Combine(work, "journal.db"), "--config", config);
            nodes.Add(scheduler);
            await scheduler.WaitForLineAsync(l => l.StartsWith("node scheduler-1 up"), TimeSpan.FromSeconds(60));
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
}
