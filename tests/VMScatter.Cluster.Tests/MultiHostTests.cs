using VMScatter.Bench;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>A cluster across separate network hosts (namespaces on a bridge), started with the README's flags only.</summary>
public class MultiHostTests
{
    [Fact]
    public async Task Nodes_on_separate_hosts_started_with_hostname_and_seeds_alone_migrate_every_vm_over_the_hosts_addresses()
    {
        using var net = new NetLab(4, linkBitsPerSecond: 0);
        var (schedulerNs, schedulerIp) = (net.Hosts[0].Namespace, net.Hosts[0].Address);
        string work = Directory.CreateTempSubdirectory("vmscatter-multihost-").FullName;
        var nodes = new List<NodeProcess>();
        try
        {
            string seed = $"{schedulerIp}:4053";
            var scheduler = NodeProcess.StartIn(schedulerNs, "scheduler", "node", "--role", "scheduler", "--hostname", schedulerIp, "--port", "4053",
                "--host-id", "scheduler", "--journal", Path.Combine(work, "journal.db"));
            nodes.Add(scheduler);
            await scheduler.WaitForLineAsync(l => l.StartsWith("node scheduler up"), TimeSpan.FromSeconds(60));
            var source = NodeProcess.StartIn(net.Hosts[1].Namespace, "source", "node", "--role", "source", "--hostname", net.Hosts[1].Address, "--seeds", seed,
                "--host-id", "source", "--vms", "4", "--vm-memory", "16MiB");
            var targets = Enumerable.Range(2, 2).Select(h => NodeProcess.StartIn(net.Hosts[h].Namespace, $"target-{h}", "node", "--role", "target",
                "--hostname", net.Hosts[h].Address, "--seeds", seed, "--host-id", $"target-{h}", "--capacity", "128MiB")).ToArray();
            nodes.Add(source);
            nodes.AddRange(targets);
            await source.WaitForLineAsync(l => l.StartsWith("node source up"), TimeSpan.FromSeconds(60));
            for (int h = 2; h < 4; h++)
            {
                // Each target's data plane listens on its host's address, not loopback.
                string up = await targets[h - 2].WaitForLineAsync(l => l.StartsWith($"node target-{h} up"), TimeSpan.FromSeconds(60));
                Assert.Contains($"data plane on {net.Hosts[h].Address}:", up);
            }

            string reportPath = Path.Combine(work, "report.json");
            var migrate = NodeProcess.StartIn(schedulerNs, "migrate", "migrate", "--seeds", seed, "--hostname", schedulerIp, "--json", reportPath, "--wait-seconds", "60");
            nodes.Add(migrate);
            Assert.Equal(0, await migrate.WaitForExitAsync(TimeSpan.FromSeconds(120)));
            var report = Domain.Reports.MigrationReport.FromJson(await File.ReadAllTextAsync(reportPath));
            Assert.True(report.Verified, migrate.Output);
            Assert.Equal(4, report.PerVm.Count(v => v.HandedOver && v.DigestMatched));
            Assert.True(report.BytesReceived > 0);
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }
}
