using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace VMScatter.Bench.Chaos;

/// <summary>One node of a chaos cluster, as it runs now (a restart is a new incarnation at a new address).</summary>
public sealed record ChaosNode(string HostId, ChaosRole Role, VmScatterProcess Process, string Address, int Incarnation);

/// <summary>
/// The processes of one run: two scheduler-role nodes, a source, targets, each `vmscatter node` in its own process.
/// Kills with SIGKILL and restarts a node as its role calls for (same host id, new port; a source's synthetic guests
/// died with it, so it comes back with none); kills every process it started when disposed.
/// </summary>
public sealed class ChaosCluster : IAsyncDisposable
{
    private static readonly TimeSpan UpTimeout = TimeSpan.FromSeconds(120);
    private readonly ChaosOptions _options;
    private readonly string _directory;
    private readonly string _config;
    private readonly Stopwatch _clock;
    private readonly List<VmScatterProcess> _started = new();
    private readonly Dictionary<string, ChaosNode> _nodes = new();

    private ChaosCluster(ChaosOptions options, string directory, string config, Stopwatch clock)
    {
        _options = options;
        _directory = directory;
        _config = config;
        _clock = clock;
    }

    /// <summary>The nodes as they run now, by host id.</summary>
    public IReadOnlyList<ChaosNode> Nodes
    {
        get { lock (_nodes) return _nodes.Values.ToArray(); }
    }

    public ChaosNode this[string hostId]
    {
        get { lock (_nodes) return _nodes[hostId]; }
    }

    /// <summary>Addresses of the scheduler-role nodes now up: seeds for anyone joining.</summary>
    public IReadOnlyList<string> Seeds => Nodes.Where(n => n.Role == ChaosRole.Scheduler && !n.Process.HasExited).Select(n => n.Address).ToArray();

    public static async Task<ChaosCluster> StartAsync(ChaosOptions options, string directory, string config, Stopwatch clock)
    {
        var cluster = new ChaosCluster(options, directory, config, clock);
        try
        {
            // The first scheduler node seeds the cluster (and is the oldest: the singleton starts there); the rest join it together.
            int port = FreePort();
            await cluster.StartNodeAsync("scheduler-1", ChaosRole.Scheduler, ["--port", port.ToString()], 1);
            var seeds = cluster.Seeds;
            var rest = new List<Task>
            {
                cluster.StartNodeAsync("scheduler-2", ChaosRole.Scheduler, cluster.Args(ChaosRole.Scheduler, seeds, restarted: false), 1),
                cluster.StartNodeAsync("source-1", ChaosRole.Source, cluster.Args(ChaosRole.Source, seeds, restarted: false), 1),
            };
            for (int t = 1; t <= options.Targets; t++)
                rest.Add(cluster.StartNodeAsync($"target-{t}", ChaosRole.Target, cluster.Args(ChaosRole.Target, seeds, restarted: false), 1));
            await Task.WhenAll(rest);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>SIGKILL, as a crashed host.</summary>
    public void Kill(string hostId) => this[hostId].Process.Kill();

    /// <summary>
    /// Starts the node again as a service manager would: same host id, a new port, the live scheduler nodes as seeds;
    /// a source with no guests (its synthetic guests ended with its process). Returns once it is up.
    /// </summary>
    public Task RestartAsync(string hostId)
    {
        var old = this[hostId];
        return StartNodeAsync(hostId, old.Role, Args(old.Role, Seeds, restarted: true), old.Incarnation + 1);
    }

    /// <summary>Nodes (as they run now) whose process exited, other than the one killed on purpose.</summary>
    public IReadOnlyList<string> Exited(VmScatterProcess? killed) => Nodes.Where(n => n.Process.HasExited && n.Process != killed)
        .Select(n => $"{n.HostId} (incarnation {n.Incarnation}) exited with {n.Process.ExitCode}: {n.Process.Lines.LastOrDefault(l => l.StartsWith("error:")) ?? n.Process.Lines.LastOrDefault() ?? ""}").ToArray();

    public async ValueTask DisposeAsync()
    {
        VmScatterProcess[] started;
        lock (_started) started = _started.ToArray();
        foreach (var p in started) await p.DisposeAsync();
    }

    private string[] Args(ChaosRole role, IReadOnlyList<string> seeds, bool restarted)
    {
        var args = new List<string> { "--seeds" };
        args.AddRange(seeds);
        // A node restarted at once joins only once the cluster downed its previous incarnation (failure detection, then
        // the resolver's stable-after): longer than the default 10 s join timeout.
        if (restarted) args.AddRange(["--join-timeout", "90"]);
        switch (role)
        {
            case ChaosRole.Source:
                args.AddRange(["--vms", restarted ? "0" : _options.Vms.ToString(), "--vm-memory", _options.VmMemory, "--seed", _options.Seed.ToString()]);
                break;
            case ChaosRole.Target:
                args.AddRange(["--capacity", _options.TargetCapacity]);
                break;
        }
        return args.ToArray();
    }

    private async Task StartNodeAsync(string hostId, ChaosRole role, string[] args, int incarnation)
    {
        string name = incarnation == 1 ? hostId : $"{hostId}#{incarnation}";
        var all = new List<string> { "node", "--role", role.ToString().ToLowerInvariant(), "--host-id", hostId, "--config", _config };
        all.AddRange(args);
        var process = VmScatterProcess.Start(_options.VmscatterDll, name, Path.Combine(_directory, $"{name}.log"), _clock, all);
        lock (_started) _started.Add(process);
        var up = await process.WaitForLineAsync(l => l.StartsWith($"node {hostId} up at "), UpTimeout)
            ?? throw new InvalidOperationException($"{name} did not come up within {UpTimeout.TotalSeconds:0} s{(process.HasExited ? $" (exited {process.ExitCode})" : "")}: {string.Join(" | ", process.Lines.TakeLast(3))}");
        int at = up.IndexOf(" up at ", StringComparison.Ordinal) + 7;
        string address = up[at..up.IndexOf(' ', at)];
        lock (_nodes) _nodes[hostId] = new ChaosNode(hostId, role, process, address, incarnation);
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
