using System.Diagnostics;
using System.Globalization;

namespace VMScatter.Bench;

/// <summary>Where the bench's hosts send: one namespace with modelled link bytes, or real links (<see cref="NetLab"/>).</summary>
public enum BenchLinks { Modelled, Real }

/// <summary>One host of a <see cref="NetLab"/>: its namespace, address, and the interface its traffic leaves by.</summary>
public sealed record LabHost(string Namespace, string Address, string Interface, string BridgePort);

/// <summary>
/// Hosts that are real network hosts, made as root: a network namespace per host, a Linux bridge with multicast
/// snooping, a veth pair per host, each host's egress capped by tc (tbf; netem is not available here). What a host
/// sent and received is read from the kernel's counters (its bridge port's: every byte on its link, headers and
/// acknowledgements included), not modelled. Everything made is removed on dispose, on process exit, and at the
/// next lab's start if a killed run left it behind (names carry the pid that made them).
/// The bridge is a switch in a namespace of its own, with the bridge netfilter hooks off there: where the host has
/// br_netfilter loaded (Docker does), a bridge in the host's namespace passed every frame through its iptables hooks,
/// reassembling each fragmented datagram and fragmenting it again for every port, which a switch does not do.
/// </summary>
public sealed class NetLab : IDisposable
{
    private const string Prefix = "vsl";
    private readonly string _bridge, _switch;
    private readonly List<string> _namespaces = new();
    private int _disposed;
    private static int _labs;

    /// <param name="hosts">How many hosts; host i gets <c>10.214.0.{i + 1}/24</c>.</param>
    /// <param name="linkBitsPerSecond">Each host's egress rate (tbf); 0: not capped.</param>
    /// <param name="mtu">Each link's MTU: Ethernet's 1500 by default; 9000 for jumbo frames, as migration networks often have.</param>
    public NetLab(int hosts, long linkBitsPerSecond, int mtu = DefaultMtu)
    {
        if (hosts is < 1 or > 250) throw new ArgumentOutOfRangeException(nameof(hosts), "1..250 hosts");
        if (mtu is < MinMtu or > MaxMtu) throw new ArgumentOutOfRangeException(nameof(mtu), $"{MinMtu}..{MaxMtu}");
        Mtu = mtu;
        if (Environment.UserName != "root") throw new InvalidOperationException("the network lab needs root (ip netns, bridges, veths, tc)");
        SweepLeftovers();
        // Names carry the pid (for the sweep) and a letter per lab of this process; interface names stay within 15 characters.
        string tag = $"{Environment.ProcessId}{(char)('a' + Interlocked.Increment(ref _labs) % 26)}";
        _bridge = $"{Prefix}b{tag}";
        _switch = $"{Prefix}{tag}sw";
        AppDomain.CurrentDomain.ProcessExit += OnExit;
        try
        {
            Run("ip", $"netns add {_switch}");
            _namespaces.Add(_switch);
            // Absent where br_netfilter is not loaded: then no hook runs anyway.
            foreach (var family in new[] { "iptables", "ip6tables", "arptables" })
                TryRun("ip", $"netns exec {_switch} sysctl -qw net.bridge.bridge-nf-call-{family}=0");
            Run("ip", $"-n {_switch} link add {_bridge} mtu {mtu} type bridge mcast_snooping 1");
            Run("ip", $"-n {_switch} link set {_bridge} up");
            for (int i = 0; i < hosts; i++)
            {
                string ns = $"{Prefix}{tag}h{i}", veth = $"{Prefix}{tag}v{i}", port = $"{Prefix}{tag}p{i}"; // at most 15 characters (pid up to 7 digits, host up to 3)
                Run("ip", $"netns add {ns}");
                _namespaces.Add(ns);
                // Made in place, each end in its namespace: nothing of the lab is ever in the host's namespace.
                Run("ip", $"link add {veth} mtu {mtu} netns {ns} type veth peer name {port} mtu {mtu} netns {_switch}");
                Run("ip", $"-n {_switch} link set {port} master {_bridge}");
                Run("ip", $"-n {_switch} link set {port} up");
                string address = $"10.214.0.{i + 1}"; // each lab is its own bridge: addresses need only differ within it
                Run("ip", $"-n {ns} addr add {address}/24 dev {veth}");
                Run("ip", $"-n {ns} link set {veth} up");
                Run("ip", $"-n {ns} link set lo up");
                if (linkBitsPerSecond > 0)
                {
                    // A burst of 2 ms of the rate, at least 256 KiB: veths hand tbf 64 KiB segments (GSO), which a
                    // smaller bucket would drop whole.
                    long burst = Math.Max(256 * 1024, linkBitsPerSecond / 8 / 500);
                    Run("tc", $"-n {ns} qdisc add dev {veth} root tbf rate {linkBitsPerSecond}bit burst {burst} latency 50ms");
                }
                Hosts.Add(new LabHost(ns, address, veth, port));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public List<LabHost> Hosts { get; } = new();

    /// <summary>Ethernet's MTU is the default; the lab takes 1280 (IPv6's minimum) to 65535 (a veth's maximum).</summary>
    public const int DefaultMtu = 1500, MinMtu = 1280, MaxMtu = 65535;

    /// <summary>The MTU of every link.</summary>
    public int Mtu { get; }

    /// <summary>The bridge the hosts' links meet on, in <see cref="SwitchNamespace"/>.</summary>
    public string Bridge => _bridge;

    /// <summary>The namespace the bridge and every host's bridge port are in.</summary>
    public string SwitchNamespace => _switch;

    /// <summary>Bytes each host has put on its link and received from it so far (kernel counters, one reading), by host index.</summary>
    public (long[] Sent, long[] Received) Counters()
    {
        var ports = PortCounters();
        return (Hosts.Select(h => ports[h.BridgePort].Rx).ToArray(), Hosts.Select(h => ports[h.BridgePort].Tx).ToArray());
    }

    /// <summary>Bytes each host has put on its link so far, by host index.</summary>
    public long[] SentBytes() => Counters().Sent;

    /// <summary>Bytes each host has received from its link so far, by host index.</summary>
    public long[] ReceivedBytes() => Counters().Received;

    /// <summary>
    /// Bytes on all host links so far, both directions: what the report's modelled link bytes count (a byte sent from
    /// one host to another crosses the sender's link and the receiver's), here as the kernel counted them.
    /// </summary>
    public long LinkBytes()
    {
        var (sent, received) = Counters();
        return sent.Sum() + received.Sum();
    }

    /// <summary>
    /// Every interface of the switch namespace with its byte counters, as `ip -s -j link` gives them (this process's
    /// /sys/class/net shows its own namespace's interfaces only).
    /// </summary>
    private Dictionary<string, (long Rx, long Tx)> PortCounters()
    {
        string args = $"-n {_switch} -s -j link show";
        var (code, output, errors) = Exec("ip", args);
        if (code != 0) throw new InvalidOperationException($"ip {args}: {errors}");
        var counters = new Dictionary<string, (long, long)>();
        try
        {
            using var json = System.Text.Json.JsonDocument.Parse(output);
            foreach (var link in json.RootElement.EnumerateArray())
                if (link.TryGetProperty("ifname", out var name) && (link.TryGetProperty("stats64", out var stats) || link.TryGetProperty("stats", out stats)))
                    counters[name.GetString()!] = (stats.GetProperty("rx").GetProperty("bytes").GetInt64(), stats.GetProperty("tx").GetProperty("bytes").GetInt64());
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or KeyNotFoundException)
        {
            throw new InvalidOperationException($"ip {args} gave counters this lab cannot read ({e.Message})", e);
        }
        if (Hosts.FirstOrDefault(h => !counters.ContainsKey(h.BridgePort)) is { } missing)
            throw new InvalidOperationException($"ip {args} has no counters for {missing.BridgePort}");
        return counters;
    }

    /// <summary>
    /// A LocalCluster node's data plane in its lab host: the source on host 0, target-i on host i (listening on and
    /// announcing that host's address). The control plane (Akka) stays on loopback: only data-plane bytes are counted.
    /// </summary>
    /// <summary><see cref="NodeHocon(string)"/>, and each target dropping this fraction of the multicast datagrams that reach it (loss injected in the receiver).</summary>
    public string NodeHocon(string hostId, double targetDropFraction) => NodeHocon(hostId) + DropHocon(hostId, targetDropFraction);

    /// <summary>For a target host, with a fraction above 0: the setting that drops that fraction of its multicast datagrams; else nothing.</summary>
    public static string DropHocon(string hostId, double fraction) =>
        fraction > 0 && hostId.StartsWith("target-", StringComparison.Ordinal) ? FormattableString.Invariant($"\nvmscatter.data-plane.multicast.drop-fraction = {fraction}") : "";

    public string NodeHocon(string hostId)
    {
        if (hostId == "source") return $"vmscatter.data-plane.network-namespace = {Hosts[0].Namespace}";
        if (!hostId.StartsWith("target-", StringComparison.Ordinal)) return "";
        var host = Hosts[int.Parse(hostId["target-".Length..], CultureInfo.InvariantCulture)];
        return $"vmscatter.data-plane.network-namespace = {host.Namespace}\nvmscatter.target.data-plane-hostname = \"{host.Address}\"";
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        AppDomain.CurrentDomain.ProcessExit -= OnExit;
        // Each veth pair by its bridge end (a namespace is torn down only once nothing holds it, a socket of a migration
        // just ended may still), then the namespaces, the switch's (with its bridge) among them.
        foreach (var h in Hosts) TryRun("ip", $"-n {_switch} link delete {h.BridgePort}");
        foreach (var ns in _namespaces) TryRun("ip", $"netns delete {ns}");
    }

    private void OnExit(object? sender, EventArgs e) => Dispose();

    /// <summary>Namespaces and bridges of labs whose process is gone (killed with -9: no dispose ran).</summary>
    private static void SweepLeftovers()
    {
        bool Dead(string name, string after)
        {
            string digits = new(name[after.Length..].TakeWhile(char.IsAsciiDigit).ToArray());
            return digits.Length > 0 && int.TryParse(digits, out int pid) && pid != Environment.ProcessId && !Directory.Exists($"/proc/{pid}");
        }
        if (Directory.Exists("/var/run/netns"))
            foreach (var ns in Directory.EnumerateFiles("/var/run/netns").Select(Path.GetFileName).OfType<string>())
                if (ns.StartsWith(Prefix, StringComparison.Ordinal) && Dead(ns, Prefix)) TryRun("ip", $"netns delete {ns}");
        // In the host's namespace: bridges of labs before the switch had a namespace, and veths of a run killed while
        // an older version moved them.
        foreach (var dev in Directory.EnumerateDirectories("/sys/class/net").Select(Path.GetFileName).OfType<string>())
            if (dev.StartsWith(Prefix, StringComparison.Ordinal) && (dev.StartsWith(Prefix + "b", StringComparison.Ordinal) ? Dead(dev, Prefix + "b") : Dead(dev, Prefix))) TryRun("ip", $"link delete {dev}");
    }

    private static void Run(string tool, string args)
    {
        var (code, output, errors) = Exec(tool, args);
        if (code != 0) throw new InvalidOperationException($"{tool} {args}: {(output + errors).Trim()}");
    }

    private static void TryRun(string tool, string args) => Exec(tool, args);

    private static (int Code, string Output, string Errors) Exec(string tool, string args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args.Split(' ')) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var errors = p.StandardError.ReadToEndAsync(); // both pipes drained at once: a full one would block the tool
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output.Trim(), errors.GetAwaiter().GetResult().Trim());
    }
}
