using System.Diagnostics;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// Hosts as Linux network namespaces on one bridge (as root): one namespace and veth pair per host, addresses on a
/// private /24. Everything made here is removed on dispose, after a failure too (deleting a namespace deletes its veth
/// pair; the bridge goes last).
/// </summary>
public sealed class NetworkNamespaces : IDisposable
{
    private readonly string _bridge;
    private readonly List<string> _namespaces = new();

    /// <param name="hosts">How many hosts; host i gets <c>10.213.{subnet}.{i + 1}</c>.</param>
    public NetworkNamespaces(int hosts)
    {
        if (Environment.UserName != "root") throw new InvalidOperationException("network namespace tests need root (ip netns, bridges, veths)");
        string tag = Random.Shared.Next(0x1000, 0xffff).ToString("x4");
        int subnet = Random.Shared.Next(1, 250);
        _bridge = $"vsbr{tag}";
        try
        {
            Ip($"link add {_bridge} type bridge");
            Ip($"link set {_bridge} up");
            for (int i = 0; i < hosts; i++)
            {
                string ns = $"vs{tag}h{i}", veth = $"vs{tag}v{i}";
                Ip($"netns add {ns}");
                _namespaces.Add(ns);
                Ip($"link add {veth} type veth peer name {veth}p");
                Ip($"link set {veth}p master {_bridge}");
                Ip($"link set {veth}p up");
                Ip($"link set {veth} netns {ns}");
                string address = $"10.213.{subnet}.{i + 1}";
                Ip($"-n {ns} addr add {address}/24 dev {veth}");
                Ip($"-n {ns} link set {veth} up");
                Ip($"-n {ns} link set lo up");
                Hosts.Add((ns, address));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Per host: its namespace and address.</summary>
    public List<(string Namespace, string Address)> Hosts { get; } = new();

    public void Dispose()
    {
        foreach (var ns in _namespaces) TryIp($"netns delete {ns}");
        TryIp($"link delete {_bridge}");
    }

    private static void Ip(string args)
    {
        var (code, output) = Run(args);
        if (code != 0) throw new InvalidOperationException($"ip {args}: {output}");
    }

    private static void TryIp(string args) => Run(args);

    private static (int Code, string Output) Run(string args)
    {
        var psi = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args.Split(' ')) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output.Trim());
    }
}
