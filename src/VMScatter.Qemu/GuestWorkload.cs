using VMScatter.Domain.Units;

namespace VMScatter.Qemu;

/// <summary>What a guest of VMScatter's image runs beside its serial counter (kernel command line vmscatter.workload=).</summary>
public enum GuestWorkload
{
    /// <summary>The dd memory-writer (vmscatter.wws_kib, vmscatter.dirty_pages) on the small busybox image: the default.</summary>
    Dd,
    /// <summary>busybox syslogd, klogd, crond and httpd; a wget of httpd's page every 2 s.</summary>
    Idle,
    /// <summary>make -j2 with gcc over zlib's example sources, make clean and again.</summary>
    Compile,
    /// <summary>sqlite3 in tmpfs: a transaction of 20 inserts and 20 updates every 0.2 s.</summary>
    Database,
}

public static class GuestWorkloads
{
    /// <summary>What the guest adds to its kernel command line; nothing for dd, so dd guests boot exactly as before.</summary>
    public static string KernelArgument(this GuestWorkload workload) => workload == GuestWorkload.Dd ? "" : $"vmscatter.workload={workload.ToName()}";

    /// <summary>
    /// The serial line prefix of the program's own progress ("PREFIX N", N only grows), or null for dd (its writer prints
    /// nothing; the counter is its only sign of life). A marker going on at a target shows the program itself survived.
    /// </summary>
    public static string? ProgressPrefix(this GuestWorkload workload) => workload switch
    {
        GuestWorkload.Dd => null,
        GuestWorkload.Idle => "vmscatter-idle ",
        GuestWorkload.Compile => "vmscatter-compile ",
        GuestWorkload.Database => "vmscatter-db ",
        _ => throw new ArgumentOutOfRangeException(nameof(workload), workload, null),
    };
}
