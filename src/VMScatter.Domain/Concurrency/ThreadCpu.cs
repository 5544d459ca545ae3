using System.Runtime.InteropServices;

namespace VMScatter.Domain.Concurrency;

/// <summary>
/// CPU time the calling thread has used (Linux CLOCK_THREAD_CPUTIME_ID): what a step cost in CPU, apart from the time
/// it waited for a core on a busy host. 0 where the clock is not available.
/// </summary>
public static partial class ThreadCpu
{
    private const int ClockThreadCpuTimeId = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec time);

    private static readonly bool Available = OperatingSystem.IsLinux();

    /// <summary>Seconds of CPU the calling thread has used since it started.</summary>
    public static double Seconds()
    {
        if (!Available || ClockGetTime(ClockThreadCpuTimeId, out var t) != 0) return 0;
        return t.Seconds + t.Nanoseconds / 1e9;
    }
}

/// <summary>
/// Work that spreads over other threads when they are free: the CPU those helpers used, which the calling thread's
/// own clock (<see cref="ThreadCpu"/>) does not see.
/// </summary>
public interface IHelperCpu
{
    /// <summary>Helper CPU seconds since the last call.</summary>
    double TakeHelperCpuSeconds();
}
