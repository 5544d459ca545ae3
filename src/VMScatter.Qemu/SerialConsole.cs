using System.Globalization;

namespace VMScatter.Qemu;

/// <summary>What VMScatter's guest image prints on its serial console, and how to read it back.</summary>
public static class SerialConsole
{
    public const string ReadyMarker = "vmscatter-ready";
    public const string CounterPrefix = "vmscatter-counter ";

    /// <summary>What the guest's /init prints when something it was asked for cannot run (a workload, a module, a device).</summary>
    public const string ErrorPrefix = "vmscatter-error ";

    /// <summary>The highest counter value the guest has printed so far (0 if none).</summary>
    public static long LastCounter(string serialLog)
    {
        long last = 0;
        foreach (var line in ReadLines(serialLog)) last = Math.Max(last, CounterOf(line));
        return last;
    }

    /// <summary>Waits until the guest prints a counter above <paramref name="value"/> (it is running, and counting on from there); returns it.</summary>
    public static async Task<long> WaitForCounterAboveAsync(string serialLog, long value, TimeSpan timeout, Func<bool> alive, CancellationToken cancellationToken = default)
    {
        string line = await WaitForLineAsync(serialLog, l => CounterOf(l) > value, timeout, alive, cancellationToken).ConfigureAwait(false);
        return CounterOf(line);
    }

    /// <summary>The counter a line reports, or -1 for any other line.</summary>
    public static long CounterOf(string line) =>
        line.StartsWith(CounterPrefix, StringComparison.Ordinal) && long.TryParse(line.AsSpan(CounterPrefix.Length).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? n : -1;

    /// <summary>The guest's network counter (vmscatter.net=1): one more for each ping of its gateway that was answered.</summary>
    public const string NetPrefix = "vmscatter-net ";

    /// <summary>The value a "PREFIX N" line reports, or -1 for any other line.</summary>
    public static long ValueOf(string line, string prefix) =>
        line.StartsWith(prefix, StringComparison.Ordinal) && long.TryParse(line.AsSpan(prefix.Length).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? n : -1;

    /// <summary>The highest "PREFIX N" value the guest has printed so far (0 if none).</summary>
    public static long LastValue(string serialLog, string prefix)
    {
        long last = 0;
        foreach (var line in ReadLines(serialLog)) last = Math.Max(last, ValueOf(line, prefix));
        return last;
    }

    /// <summary>The "PREFIX N" values in the order the guest printed them.</summary>
    public static IReadOnlyList<long> Values(string serialLog, string prefix) =>
        ReadLines(serialLog).Select(l => ValueOf(l, prefix)).Where(v => v >= 0).ToArray();

    /// <summary>Waits until the guest prints a "PREFIX N" line with N above <paramref name="value"/>; returns N.</summary>
    public static async Task<long> WaitForValueAboveAsync(string serialLog, string prefix, long value, TimeSpan timeout, Func<bool> alive, CancellationToken cancellationToken = default)
    {
        string line = await WaitForLineAsync(serialLog, l => ValueOf(l, prefix) > value, timeout, alive, cancellationToken).ConfigureAwait(false);
        return ValueOf(line, prefix);
    }

    /// <summary>The last non-empty line of the log (what the guest printed last), or null if there is none.</summary>
    public static string? LastLine(string serialLog)
    {
        string? last = null;
        foreach (var line in ReadLines(serialLog)) if (line.Trim().Length > 0) last = line.Trim();
        return last is { Length: > 120 } ? last[..120] + "..." : last;
    }

    /// <summary>Waits until a line satisfying <paramref name="match"/> appears in the log (the guest writes it, we poll the file).</summary>
    public static async Task<string> WaitForLineAsync(string serialLog, Func<string, bool> match, TimeSpan timeout, Func<bool> alive, CancellationToken cancellationToken = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            foreach (var line in ReadLines(serialLog)) if (match(line)) return line;
            if (!alive()) throw new InvalidOperationException("the guest's QEMU exited before the line appeared");
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the guest did not print the expected line within {timeout.TotalSeconds:0}s");
            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }
    }

    private static IEnumerable<string> ReadLines(string path)
    {
        if (!File.Exists(path)) return [];
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(fs);
        var lines = new List<string>();
        while (reader.ReadLine() is { } l) lines.Add(l.TrimEnd('\r'));
        return lines;
    }
}
