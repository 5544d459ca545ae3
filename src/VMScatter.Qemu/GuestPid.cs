using System.Globalization;

namespace VMScatter.Qemu;

/// <summary>
/// A QEMU process known by its pid and its start time (field 22 of /proc/PID/stat), so that a pid the kernel gave
/// to another process since is never taken for the guest (nor killed). QEMU runs daemonized, not as this node's
/// child: nothing here can wait for it, so liveness is read from /proc (a zombie, not yet reaped by init, is dead).
/// </summary>
public sealed record GuestPid(int Pid, long StartTicks)
{
    /// <summary>The process now running as <paramref name="pid"/>, or null if there is none (or it is a zombie).</summary>
    public static GuestPid? Of(int pid)
    {
        if (pid <= 0 || Stat(pid) is not { } fields || fields.State is 'Z' or 'X') return null;
        return new GuestPid(pid, fields.StartTicks);
    }

    /// <summary>The same process still runs (not exited, and its pid not reused).</summary>
    public bool IsAlive => Stat(Pid) is { } now && now.State is not ('Z' or 'X') && now.StartTicks == StartTicks;

    /// <summary>SIGKILL, only if the pid is still this process.</summary>
    public void Kill()
    {
        if (!IsAlive) return;
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(Pid);
            process.Kill();
        }
        catch (ArgumentException) { /* gone meanwhile */ }
        catch (InvalidOperationException) { /* gone meanwhile */ }
    }

    /// <summary>Polls until the process is gone; false if it still runs after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (IsAlive)
        {
            if (DateTime.UtcNow > deadline) return false;
            await Task.Delay(20).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>Fields 3 (state), 4 (parent) and 22 (start time) of /proc/PID/stat (a thread's too), or null if it cannot be read.</summary>
    internal static (char State, int Parent, long StartTicks)? Stat(int pid)
    {
        string text;
        try { text = File.ReadAllText($"/proc/{pid}/stat"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so the fields start after the last ')'.
        int close = text.LastIndexOf(')');
        if (close < 0) return null;
        var fields = text[(close + 2)..].Split(' ');
        // fields[0] is field 3 (state), fields[1] field 4 (parent); start time is field 22.
        if (fields.Length < 20 || fields[0].Length != 1 || !int.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out int parent)
            || !long.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out long start)) return null;
        return (fields[0][0], parent, start);
    }
}
