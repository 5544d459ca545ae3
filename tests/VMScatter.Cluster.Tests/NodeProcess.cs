using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace VMScatter.Cluster.Tests;

/// <summary>A `vmscatter node` in its own process, as an operator runs it; its output lines can be awaited.</summary>
public sealed class NodeProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Seen)> _waiters = new();
    private string? _ownConfig;

    private NodeProcess(string name, Process process)
    {
        Name = name;
        _process = process;
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string Name { get; }
    public int ProcessId => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    public string Output => string.Join('\n', _lines);

    /// <remarks>
    /// Waits up to 60 s for its seeds unless told otherwise: the suite runs test classes side by side on two cores, and a
    /// node once took more than the operators' 10 s to join there (FailoverTests, in a fresh-clone CI run).
    /// </remarks>
    public static NodeProcess Start(string name, params string[] args)
    {
        string config = Path.Combine(Path.GetTempPath(), $"vmscatter-test-node-{Guid.NewGuid():N}.conf");
        var node = StartCommand(name, "node", WithFastMembership(args.Contains("--join-timeout") ? args : [.. args, "--join-timeout", "60"], config));
        node._ownConfig = config;
        return node;
    }

    /// <summary>
    /// Node processes of the suite (many a run, on 2 cores) compile serializers where they are first used: the warm-up
    /// cost ~1.8 s of CPU a node, and no multi-process test holds a pause to less than the decision bound (30 s). The
    /// in-process clusters, whose pauses tests do hold to the downtime target, warm them at start.
    /// </summary>
    public const string TestNodeHocon = "vmscatter.node.serializer-warmup = on-first-use";

    /// <summary>What every node process of the suite runs with, before a test's own configuration (also for harnesses that start nodes themselves).</summary>
    public static readonly string SuiteNodeHocon = Hosting.LocalClusterOptions.FastMembership + "\n" + TestNodeHocon;

    /// <summary>
    /// The nodes of a test cluster all run on this machine: they take <see cref="Hosting.LocalClusterOptions.FastMembership"/>'s
    /// membership ticks (join and leave in a fraction of Akka's 1 s ticks; failure detection unchanged) and
    /// <see cref="TestNodeHocon"/> (together <see cref="SuiteNodeHocon"/>), followed by the test's own --config, which
    /// wins where both set a value.
    /// </summary>
    private static string[] WithFastMembership(string[] args, string config)
    {
        int i = Array.IndexOf(args, "--config");
        File.WriteAllText(config, SuiteNodeHocon + "\n" + (i >= 0 ? File.ReadAllText(args[i + 1]) : ""));
        if (i < 0) return [.. args, "--config", config];
        var merged = args.ToArray();
        merged[i + 1] = config;
        return merged;
    }

    /// <summary>Any `vmscatter` command (e.g. `migrate`) in its own process.</summary>
    public static NodeProcess StartCommand(string name, string command, params string[] args) => StartIn(null, name, command, args);

    /// <summary>A `vmscatter` command in a network namespace (<c>ip netns exec</c>), as on another host; null: this one.</summary>
    public static NodeProcess StartIn(string? netns, string name, string command, params string[] args)
    {
        var psi = new ProcessStartInfo(netns is null ? "dotnet" : "ip") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        if (netns is not null) foreach (var a in new[] { "netns", "exec", netns, "dotnet" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "vmscatter.dll"));
        psi.ArgumentList.Add(command);
        foreach (var a in args) psi.ArgumentList.Add(a);
        return new NodeProcess(name, Process.Start(psi)!);
    }

    /// <summary>Any program (e.g. a deploy script) in its own process, with extra environment variables.</summary>
    public static NodeProcess StartProgram(string name, string file, IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (key, value) in environment) psi.Environment[key] = value;
        return new NodeProcess(name, Process.Start(psi)!);
    }

    /// <summary>Waits for the process to end (within <paramref name="timeout"/>) and gives its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try { await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { throw new TimeoutException($"{Name} did not exit within {timeout.TotalSeconds:0}s; it printed:\n{Output}"); }
        return _process.ExitCode;
    }

    /// <summary>A free loopback port for a seed node.</summary>
    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>Waits for an output line (already printed or to come) that matches.</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var seen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waiters)
        {
            foreach (var l in _lines)
                if (match(l)) { seen.SetResult(l); return seen.Task; }
            _waiters.Add((match, seen));
        }
        return seen.Task.WaitAsync(timeout).ContinueWith(t => t.IsCompletedSuccessfully ? t.Result
            : throw new TimeoutException($"{Name}: no matching line within {timeout.TotalSeconds:0}s; it printed:\n{Output}"), TaskScheduler.Default);
    }

    /// <summary>SIGKILL: no leaving, no shutdown hooks, as a crashed host.</summary>
    public void Kill() => _process.Kill(entireProcessTree: true);

    /// <summary>SIGTERM, as a service manager stops a node: it leaves the cluster and exits.</summary>
    public void Terminate()
    {
        if (SysKill(_process.Id, 15) != 0) throw new InvalidOperationException($"{Name}: kill -TERM failed (errno {Marshal.GetLastPInvokeError()})");
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync().ConfigureAwait(false);
        _process.Dispose();
        if (_ownConfig is not null) File.Delete(_ownConfig);
    }

    private void Line(string? line)
    {
        if (line is null) return;
        lock (_waiters)
        {
            _lines.Enqueue(line);
            foreach (var w in _waiters.Where(w => w.Match(line)).ToArray())
            {
                w.Seen.TrySetResult(line);
                _waiters.Remove(w);
            }
        }
    }
}
