using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using VMScatter.Cluster.Hosting;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The control plane on mutual TLS (vmscatter.security.certificate), nodes as separate processes with certificates from
/// deploy/make-certs.sh: a node of the cluster CA joins; one of another CA, and one without TLS, neither join nor reach it.
/// </summary>
public class ControlPlaneTlsTests
{
    private const string Password = "test-pfx-password";

    [Fact]
    public async Task Only_a_node_with_a_certificate_of_the_cluster_ca_joins_the_cluster_on_tls()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-tls-").FullName;
        var nodes = new List<NodeProcess>();
        try
        {
            await MakeCertsAsync(Path.Combine(work, "cluster-ca"), "scheduler-1", "good");
            await MakeCertsAsync(Path.Combine(work, "other-ca"), "rogue");
            string schedulerConf = await ConfigAsync(work, "scheduler-1", Path.Combine(work, "cluster-ca", "scheduler-1.pfx"));
            string goodConf = await ConfigAsync(work, "good", Path.Combine(work, "cluster-ca", "good.pfx"));
            string rogueConf = await ConfigAsync(work, "rogue", Path.Combine(work, "other-ca", "rogue.pfx"));

            int port = NodeProcess.FreePort();
            string seed = $"127.0.0.1:{port}";
            var scheduler = NodeProcess.Start("scheduler", "--role", "scheduler", "--port", port.ToString(), "--host-id", "scheduler-1",
                "--journal", Path.Combine(work, "journal.db"), "--config", schedulerConf);
            nodes.Add(scheduler);
            await scheduler.WaitForLineAsync(l => l.StartsWith($"node scheduler-1 up at akka.ssl.tcp://vmscatter@127.0.0.1:{port} "), TimeSpan.FromSeconds(60));

            // (a) a certificate of the cluster CA, (b) one of another CA, (c) no TLS at all: all three at once.
            var good = NodeProcess.Start("good", "--role", "target", "--seeds", seed, "--host-id", "good", "--capacity", "16MiB", "--config", goodConf, "--join-timeout", "60");
            var rogue = NodeProcess.Start("rogue", "--role", "target", "--seeds", seed, "--host-id", "rogue", "--capacity", "16MiB", "--config", rogueConf, "--join-timeout", "8");
            var plain = NodeProcess.Start("plain", "--role", "target", "--seeds", seed, "--host-id", "plain", "--capacity", "16MiB", "--join-timeout", "8");
            nodes.AddRange([good, rogue, plain]);

            string up = await good.WaitForLineAsync(l => l.StartsWith("node good up at "), TimeSpan.FromSeconds(60));
            string goodAddress = up["node good up at ".Length..].Split(' ')[0];
            Assert.StartsWith("akka.ssl.tcp://vmscatter@127.0.0.1:", goodAddress);

            // Neither becomes Up: each gives up after its join timeout (exit 2) without ever printing its 'up' line.
            foreach (var refused in new[] { rogue, plain })
            {
                Assert.Equal(2, await refused.WaitForExitAsync(TimeSpan.FromSeconds(60)));
                Assert.Contains(refused.Output.Split('\n'), l => l.StartsWith($"error: could not join the cluster via ") && l.Contains("within 8s"));
                Assert.DoesNotContain(refused.Output.Split('\n'), l => l.Contains(" up at "));
            }
            // The scheduler refused the rogue's certificate (it does not chain to the cluster CA) and the plain node's bytes (no TLS record).
            await scheduler.WaitForLineAsync(l => l.Contains("TLS: refused") && l.Contains("certificate CN=rogue"), TimeSpan.FromSeconds(10));
            await scheduler.WaitForLineAsync(l => l.Contains("not an SSL/TLS record"), TimeSpan.FromSeconds(10));
            Assert.DoesNotContain(scheduler.Output.Split('\n'), l => l.Contains("TLS: refused") && l.Contains("CN=good"));

            // Membership as the scheduler's node sees it, asked by a console with a certificate of the cluster CA: itself and good, both Up.
            var status = NodeProcess.StartCommand("status", "status", "--seeds", seed, "--config", goodConf, "--json", "--timeout", "30");
            nodes.Add(status);
            Assert.Equal(0, await status.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            var members = Members(status.Output);
            Assert.Equal(
                [($"akka.ssl.tcp://vmscatter@127.0.0.1:{port}", "scheduler", "Up"), (goodAddress, "target", "Up")],
                members.OrderBy(m => m.Roles).ToArray());

            // A console without TLS cannot deliver its question to the same node: no answer, exit 2.
            var plainStatus = NodeProcess.StartCommand("plain-status", "status", "--seeds", seed, "--json", "--timeout", "5");
            nodes.Add(plainStatus);
            Assert.Equal(2, await plainStatus.WaitForExitAsync(TimeSpan.FromSeconds(60)));
            Assert.Contains(plainStatus.Output.Split('\n'), l => l.StartsWith("error: ") && l.Contains("did not answer within 5s"));
            Assert.False(scheduler.HasExited, scheduler.Output);
            Assert.False(good.HasExited, good.Output);
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    [Fact]
    public async Task A_peer_certificate_is_accepted_only_if_it_chains_to_the_ca_bundled_in_the_nodes_own_pfx()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-tls-").FullName;
        try
        {
            await MakeCertsAsync(Path.Combine(work, "cluster-ca"), "a", "b");
            await MakeCertsAsync(Path.Combine(work, "other-ca"), "rogue");
            var (a, authorities) = ControlPlaneTls.Load(new SecuritySettings(Path.Combine(work, "cluster-ca", "a.pfx"), Password));
            Assert.Equal("CN=a", a.Subject);
            Assert.True(a.HasPrivateKey);
            var ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(work, "cluster-ca", "ca.crt"));
            Assert.Equal([ca.Thumbprint], authorities.Select(c => c.Thumbprint).ToArray());

            var (b, _) = ControlPlaneTls.Load(new SecuritySettings(Path.Combine(work, "cluster-ca", "b.pfx"), Password));
            var (rogue, _) = ControlPlaneTls.Load(new SecuritySettings(Path.Combine(work, "other-ca", "rogue.pfx"), Password));
            Assert.Null(ControlPlaneTls.Refusal(b, authorities));
            Assert.NotNull(ControlPlaneTls.Refusal(rogue, authorities));
            // The CA itself is no node certificate (no serverAuth/clientAuth).
            Assert.NotNull(ControlPlaneTls.Refusal(ca, authorities));
        }
        finally { Directory.Delete(work, recursive: true); }
    }

    [Fact]
    public async Task A_missing_certificate_or_a_wrong_password_is_one_error_line_and_exit_2()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-tls-").FullName;
        var nodes = new List<NodeProcess>();
        try
        {
            await MakeCertsAsync(Path.Combine(work, "cluster-ca"), "node");
            string missing = Path.Combine(work, "missing.conf");
            await File.WriteAllTextAsync(missing, $"vmscatter.security.certificate = {NodeConfig.Quote(Path.Combine(work, "nowhere.pfx"))}\n");
            string wrong = Path.Combine(work, "wrong.conf");
            await File.WriteAllTextAsync(wrong, $"vmscatter.security.certificate = {NodeConfig.Quote(Path.Combine(work, "cluster-ca", "node.pfx"))}\nvmscatter.security.certificate-password = \"not-it\"\n");
            foreach (var (conf, expected) in new[] { (missing, "nowhere.pfx does not exist"), (wrong, "wrong vmscatter.security.certificate-password") })
            {
                var node = NodeProcess.Start("node", "--role", "scheduler", "--config", conf);
                nodes.Add(node);
                Assert.Equal(2, await node.WaitForExitAsync(TimeSpan.FromSeconds(60)));
                var lines = node.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                var line = Assert.Single(lines);
                Assert.StartsWith("error: vmscatter.security.certificate: ", line);
                Assert.Contains(expected, line);
            }
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>Members (address, roles, status) from `status --json`.</summary>
    private static (string Address, string Roles, string Status)[] Members(string output)
    {
        string json = output[output.IndexOf('{')..(output.LastIndexOf('}') + 1)];
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.GetProperty("members").GetProperty("members").EnumerateArray()
            .Select(m => (m.GetProperty("address").GetString()!, string.Join(",", m.GetProperty("roles").EnumerateArray().Select(r => r.GetString())), m.GetProperty("status").GetString()!))
            .ToArray();
    }

    private static async Task<string> ConfigAsync(string work, string name, string pfx)
    {
        string path = Path.Combine(work, $"{name}.conf");
        await File.WriteAllTextAsync(path, $"""
            vmscatter.security.certificate = {NodeConfig.Quote(pfx)}
            vmscatter.security.certificate-password = {NodeConfig.Quote(Password)}
            """);
        return path;
    }

    /// <summary>deploy/make-certs.sh DIR NODE=127.0.0.1 ..., as an operator runs it.</summary>
    private static async Task MakeCertsAsync(string dir, params string[] nodes)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Script());
        psi.ArgumentList.Add(dir);
        foreach (var n in nodes) psi.ArgumentList.Add($"{n}=127.0.0.1");
        psi.Environment["VMSCATTER_CERT_PASSWORD"] = Password;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(p.ExitCode == 0, $"make-certs.sh exited {p.ExitCode}:\n{await stdout}\n{await stderr}");
        foreach (var n in nodes) Assert.True(File.Exists(Path.Combine(dir, $"{n}.pfx")), await stdout);
    }

    private static string Script()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "deploy", "make-certs.sh");
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException("deploy/make-certs.sh not found above " + AppContext.BaseDirectory);
    }
}
