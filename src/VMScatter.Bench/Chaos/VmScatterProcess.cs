using System.Diagnostics;

namespace VMScatter.Bench.Chaos;

/// <summary>
/// A `vmscatter` command (a node, or `migrate`) in its own process, started from the same binary as the caller. Its
/// lines go to a log file (kept for a failed run) and can be awaited.
/// </summary>
public sealed class VmScatterProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly Stopwatch _clock;
    private readonly List<string> _lines = new();
    private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Seen)> _waiters = new();

    private VmScatterProcess(string name, Process process, string logFile, Stopwatch clock)
    {
        Name = name;
        _process = process;
        _clock = clock;
        _log = new StreamWriter(logFile, append: true) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string Name { get; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;

    /// <summary>The lines printed so far.</summary>
    public IReadOnlyList<string> Lines
    {
        get { lock (_waiters) return _lines.ToArray(); }
    }

    /// <param name="vmscatterDll">vmscatter.dll: the harness starts what it is itself, with the same runtime.</param>
    /// <param name="clock">The run's clock: each logged line carries its time.</param>
    public static VmScatterProcess Start(string vmscatterDll, string name, string logFile, Stopwatch clock, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetDirectoryName(logFile)!,
        };
        psi.ArgumentList.Add(vmscatterDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        File.AppendAllText(logFile, $"{clock.Elapsed.TotalSeconds,8:0.000} $ vmscatter {string.Join(' ', psi.ArgumentList.Skip(1))}\n");
        return new VmScatterProcess(name, Process.Start(psi)!, logFile, clock);
    }

    /// <summary>Waits for a line (printed already or to come) that matches; null if the process exits or the time is up first.</summary>
    public async Task<string?> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        var seen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waiters)
        {
            if (_lines.FirstOrDefault(match) is { } already) return already;
            _waiters.Add((match, seen));
        }
        var exited = _process.WaitForExitAsync();
        var done = await Task.WhenAny(seen.Task, exited, Task.Delay(timeout)).ConfigureAwait(false);
        lock (_waiters)
        {
            _waiters.RemoveAll(w => w.Seen == seen);
            // Output read after the exit may still hold the line.
            if (done != seen.Task && _lines.FirstOrDefault(match) is { } late) return late;
        }
        return seen.Task.IsCompletedSuccessfully ? seen.Task.Result : null;
    }

    /// <summary>Waits for the process to exit; null if it did not within <paramref name="timeout"/>.</summary>
    public async Task<int?> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try { await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) { return null; }
        return _process.ExitCode;
    }

    /// <summary>SIGKILL: no leaving, no shutdown hooks, as a crashed host.</summary>
    public void Kill()
    {
        try
        {
            if (_process.HasExited) return;
            _process.Kill(entireProcessTree: true);
            Line("[chaos] killed with SIGKILL");
        }
        catch (InvalidOperationException) { } // exited meanwhile
    }

    public async ValueTask DisposeAsync()
    {
        Kill();
        await _process.WaitForExitAsync().ConfigureAwait(false);
        _process.Dispose();
        lock (_waiters) _log.Dispose();
    }

    private void Line(string? line)
    {
        if (line is null) return;
        lock (_waiters)
        {
            _lines.Add(line);
            try { _log.WriteLine($"{_clock.Elapsed.TotalSeconds,8:0.000} {Name}: {line}"); } catch (ObjectDisposedException) { }
            foreach (var w in _waiters.Where(w => w.Match(line)).ToArray())
            {
                w.Seen.TrySetResult(line);
                _waiters.Remove(w);
            }
        }
    }
}
