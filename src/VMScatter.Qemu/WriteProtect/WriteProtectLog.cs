using System.Globalization;
using System.Runtime.InteropServices;

namespace VMScatter.Qemu.WriteProtect;

/// <summary>
/// The pages a running QEMU wrote in its guest's RAM, from the kernel (Linux 6.7 and later): userfaultfd
/// write-protection in asynchronous mode on QEMU's mapping of the RAM file, read and re-armed by the pagemap scan.
/// A write to a protected page takes a fault the kernel resolves itself (no handler, QEMU never waits on this node),
/// marking the page written; <see cref="TakeWritten"/> lists the written pages and protects them again, in one call.
/// The log is exact for every write through QEMU's mapping (its vCPUs' and its devices'), which is every write
/// to guest RAM here; a scan costs a walk of the page tables (~0.5 ms per 256 MiB measured), not a read of memory.
/// <para>
/// The userfaultfd must be made in QEMU's own address space: it is made there by ptrace (<see cref="SyscallInjector"/>),
/// taken into this process (pidfd_getfd) and closed in QEMU's. So QEMU holds nothing of it: the protection lives
/// while this object's descriptor is open, and ends with it, however this process ends (the kernel unregisters it).
/// </para>
/// </summary>
public sealed unsafe class WriteProtectLog : IDisposable
{
    private readonly object _lock = new();
    private readonly int _pageCount;
    private readonly Range[] _ranges;
    private int _pagemap;
    private int _uffd;
    private Native.PageRegion* _vec;
    private const int VecLength = 4096;

    /// <summary>A mapping of the RAM file in QEMU: addresses [Start, End) hold pages from <see cref="FirstPage"/> on.</summary>
    internal readonly record struct Range(ulong Start, ulong End, long FirstPage);

    private WriteProtectLog(int pageCount, Range[] ranges, int pagemap, int uffd)
    {
        _pageCount = pageCount;
        _ranges = ranges;
        _pagemap = pagemap;
        _uffd = uffd;
        _vec = (Native.PageRegion*)NativeMemory.Alloc(VecLength, (nuint)sizeof(Native.PageRegion));
    }

    /// <summary>
    /// Protects every page of the RAM file QEMU process <paramref name="pid"/> maps (the file mapped here at
    /// <paramref name="ramMappedHere"/>); the first <see cref="TakeWritten"/> lists every page. Throws
    /// <see cref="WriteProtectUnavailableException"/> with the reason where it cannot be had.
    /// </summary>
    public static WriteProtectLog Start(int pid, nint ramMappedHere, int pageCount)
    {
        try { return StartChecked(pid, ramMappedHere, pageCount); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException)
        {
            throw new WriteProtectUnavailableException(e.Message);
        }
    }

    private static WriteProtectLog StartChecked(int pid, nint ramMappedHere, int pageCount)
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            throw new WriteProtectUnavailableException("needs Linux on x86-64");
        if (pid <= 0) throw new WriteProtectUnavailableException("the guest's QEMU process is not known");
        if (KernelSupport.Value is { } missing) throw new WriteProtectUnavailableException(missing);
        // .NET's child reaper takes a child's ptrace stop for its exit (and the real exit is then never seen): a QEMU
        // this process started itself, not daemonized, is not traced. Guests a node starts are daemons, not its children.
        if (GuestPid.Stat(pid)?.Parent == Environment.ProcessId) throw new WriteProtectUnavailableException("the guest's QEMU is this process's own child, not a daemon");
        // A seccomp filter may kill a process for a system call it does not allow: nothing is run in such a QEMU.
        if (SeccompMode(pid) is not 0) throw new WriteProtectUnavailableException("the guest's QEMU runs under a seccomp filter (-sandbox)");
        // The monitor socket's peer of an adopted guest could be another program: only a QEMU is ever stopped.
        if (!Path.GetFileName(new FileInfo($"/proc/{pid}/exe").LinkTarget ?? "").StartsWith("qemu-system", StringComparison.Ordinal))
            throw new WriteProtectUnavailableException($"process {pid} is not a QEMU");
        var identity = MappingIdentity(File.ReadLines("/proc/self/maps"), (ulong)ramMappedHere)
            ?? throw new WriteProtectUnavailableException("the RAM file's mapping here was not found");
        // Over a huge page the scan misses a write in a range whose page table went (a PMD hole: fixed upstream in 2026).
        if (HugePagesPossible(identity) is { } huge) throw new WriteProtectUnavailableException(huge);
        var ranges = MappingsOf(File.ReadLines($"/proc/{pid}/maps"), identity, pageCount);
        if (ranges.Length == 0) throw new WriteProtectUnavailableException("the guest's QEMU does not map its RAM file");
        int pagemap = Native.Open($"/proc/{pid}/pagemap", 0);
        if (pagemap < 0) throw new WriteProtectUnavailableException($"open /proc/{pid}/pagemap: {Native.Error(Native.Errno)}");
        int uffd = -1;
        try
        {
            uffd = RegisterInQemu(pid, ranges);
            var log = new WriteProtectLog(pageCount, ranges, pagemap, uffd);
            pagemap = uffd = -1;
            return log;
        }
        finally
        {
            if (pagemap >= 0) Native.Close(pagemap);
            if (uffd >= 0) Native.Close(uffd);
        }
    }

    /// <summary>Adds the pages written since the last call (every page, the first time) to <paramref name="pages"/> (unless null), ascending per mapping, and protects them again.</summary>
    public void TakeWritten(List<int>? pages)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_vec == null, this);
            foreach (var range in _ranges)
            {
                for (ulong start = range.Start; start < range.End;)
                {
                    var arg = new Native.PmScanArg
                    {
                        Size = (ulong)sizeof(Native.PmScanArg),
                        Flags = Native.PmScanWpMatching | Native.PmScanCheckWpAsync,
                        Start = start,
                        End = range.End,
                        Vec = (ulong)_vec,
                        VecLen = VecLength,
                        CategoryMask = Native.PageIsWritten,
                        ReturnMask = Native.PageIsWritten,
                    };
                    int found = Native.Ioctl(_pagemap, Native.PagemapScan, &arg);
                    if (found < 0) throw new WriteProtectUnavailableException($"pagemap scan: {Native.Error(Native.Errno)}");
                    for (int i = 0; i < found && pages is not null; i++)
                        for (ulong a = _vec[i].Start; a < _vec[i].End; a += 4096)
                        {
                            long page = range.FirstPage + (long)((a - range.Start) / 4096);
                            if (page < _pageCount) pages!.Add((int)page);
                        }
                    if (arg.WalkEnd <= start) throw new WriteProtectUnavailableException("pagemap scan made no progress");
                    start = arg.WalkEnd;
                }
            }
        }
    }

    /// <summary>Ends the protection: the kernel unregisters QEMU's mapping as the last descriptor closes.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_vec == null) return;
            NativeMemory.Free(_vec);
            _vec = null;
            Native.Close(_uffd);
            Native.Close(_pagemap);
            _uffd = _pagemap = -1;
        }
    }

    /// <summary>
    /// A userfaultfd made in QEMU's main thread (its context is QEMU's memory), taken here and closed there; then,
    /// with QEMU's thread released, set up for asynchronous write-protection and each mapping registered from here
    /// (the ioctls act on the context's memory, not the caller's). So QEMU only ever runs two calls, and never holds
    /// a registered descriptor: a node dying at any point leaves it at most one unregistered descriptor.
    /// </summary>
    private static int RegisterInQemu(int pid, Range[] ranges)
    {
        int pidfd = (int)Native.Syscall(Native.SysPidfdOpen, pid, 0, 0);
        if (pidfd < 0) throw new WriteProtectUnavailableException($"pidfd_open: {Native.Error(Native.Errno)}");
        int local;
        try
        {
            local = SyscallInjector.Run(pid, pid, inj =>
            {
                long remote = inj.Call(Native.SysUserfaultfd, Native.OCloexec | Native.ONonblock);
                if (remote < 0) throw new WriteProtectUnavailableException($"userfaultfd in QEMU: {Native.Error((int)-remote)}");
                int taken = (int)Native.Syscall(Native.SysPidfdGetfd, pidfd, remote, 0);
                int error = Native.Errno;
                try { inj.Call(Native.SysClose, remote); }
                catch
                {
                    if (taken >= 0) Native.Close(taken);
                    throw;
                }
                if (taken < 0) throw new WriteProtectUnavailableException($"pidfd_getfd: {Native.Error(error)}");
                return taken;
            });
        }
        finally { Native.Close(pidfd); }
        try
        {
            var api = new Native.UffdioApiArg { Api = Native.UffdApi, Features = Native.UffdFeatures };
            if (Native.Ioctl(local, Native.UffdioApi, &api) < 0) throw new WriteProtectUnavailableException($"userfaultfd API: {Native.Error(Native.Errno)}");
            foreach (var range in ranges)
            {
                var reg = new Native.UffdioRegisterArg { Start = range.Start, Len = range.End - range.Start, Mode = Native.UffdioRegisterModeWp };
                if (Native.Ioctl(local, Native.UffdioRegister, &reg) < 0) throw new WriteProtectUnavailableException($"userfaultfd register: {Native.Error(Native.Errno)}");
            }
            return local;
        }
        catch
        {
            Native.Close(local); // the last descriptor: any registration made ends with it
            throw;
        }
    }

    /// <summary>Null where this kernel has asynchronous write-protection of shared memory and the pagemap scan; else what it lacks. Tried on this process's own memory.</summary>
    private static readonly Lazy<string?> KernelSupport = new(ProbeKernel);

    private static string? ProbeKernel()
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || RuntimeInformation.ProcessArchitecture != Architecture.X64) return "needs Linux on x86-64";
        int uffd = (int)Native.Syscall(Native.SysUserfaultfd, Native.OCloexec | Native.ONonblock, 0, 0);
        if (uffd < 0) return $"userfaultfd: {Native.Error(Native.Errno)}";
        try
        {
            var api = new Native.UffdioApiArg { Api = Native.UffdApi, Features = Native.UffdFeatures };
            if (Native.Ioctl(uffd, Native.UffdioApi, &api) < 0) return "the kernel has no asynchronous userfaultfd write-protection of shared memory (Linux 6.7 and later)";
        }
        finally { Native.Close(uffd); }
        int pagemap = Native.Open("/proc/self/pagemap", 0);
        if (pagemap < 0) return $"open /proc/self/pagemap: {Native.Error(Native.Errno)}";
        try
        {
            var vec = stackalloc Native.PageRegion[1];
            ulong page = (ulong)vec & ~4095UL;
            var arg = new Native.PmScanArg { Size = (ulong)sizeof(Native.PmScanArg), Start = page, End = page + 4096, Vec = (ulong)vec, VecLen = 1, CategoryMask = Native.PageIsWritten, ReturnMask = Native.PageIsWritten };
            if (Native.Ioctl(pagemap, Native.PagemapScan, &arg) < 0) return "the kernel has no pagemap scan (Linux 6.7 and later)";
        }
        finally { Native.Close(pagemap); }
        return null;
    }

    /// <summary>The Seccomp field of /proc/PID/status (0: none), or null if it cannot be read.</summary>
    internal static int? SeccompMode(int pid)
    {
        try
        {
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("Seccomp:", StringComparison.Ordinal))
                    return int.TryParse(line["Seccomp:".Length..].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int mode) ? mode : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Why huge pages may back the RAM file (tmpfs mounted with huge=, or shmem_enabled forced), or null.</summary>
    internal static string? HugePagesPossible(string identity)
    {
        try
        {
            if (File.ReadAllText("/sys/kernel/mm/transparent_hugepage/shmem_enabled").Contains("[force]", StringComparison.Ordinal))
                return "shared memory huge pages are forced (transparent_hugepage/shmem_enabled)";
        }
        catch (IOException) { }
        // mountinfo: "id parent major:minor root mountpoint options - fstype source super-options"
        string device = identity.Split(' ')[0];
        foreach (string line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            if (f.Length < 3 || !SameDevice(f[2], device)) continue;
            int dash = Array.IndexOf(f, "-");
            string options = dash >= 0 && dash + 3 < f.Length ? f[dash + 3] : "";
            foreach (string option in options.Split(','))
                if (option.StartsWith("huge=", StringComparison.Ordinal) && option != "huge=never" && option != "huge=deny")
                    return $"the RAM file's tmpfs is mounted with {option}";
        }
        return null;
    }

    /// <summary>"00:1a" (maps, hex) and "0:26" (mountinfo, decimal) name the same device.</summary>
    private static bool SameDevice(string mountinfo, string maps)
    {
        var a = mountinfo.Split(':');
        var b = maps.Split(':');
        return a.Length == 2 && b.Length == 2
            && int.TryParse(a[0], NumberStyles.None, CultureInfo.InvariantCulture, out int a0) && int.TryParse(a[1], NumberStyles.None, CultureInfo.InvariantCulture, out int a1)
            && int.TryParse(b[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int b0) && int.TryParse(b[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int b1)
            && a0 == b0 && a1 == b1;
    }

    /// <summary>The device and inode ("08:01 1234") of the mapping holding <paramref name="address"/>, from a maps listing.</summary>
    internal static string? MappingIdentity(IEnumerable<string> maps, ulong address)
    {
        foreach (string line in maps)
            if (ParseMaps(line) is { } m && m.Start <= address && address < m.End) return m.Inode == "0" ? null : $"{m.Device} {m.Inode}";
        return null;
    }

    /// <summary>Each mapping of the file <paramref name="identity"/> names in a maps listing, with the page its start holds.</summary>
    internal static Range[] MappingsOf(IEnumerable<string> maps, string identity, int pageCount)
    {
        var ranges = new List<Range>();
        foreach (string line in maps)
            if (ParseMaps(line) is { } m && $"{m.Device} {m.Inode}" == identity && m.Offset % 4096 == 0 && (long)(m.Offset / 4096) < pageCount)
                ranges.Add(new Range(m.Start, m.End, (long)(m.Offset / 4096)));
        return ranges.ToArray();
    }

    private static (ulong Start, ulong End, ulong Offset, string Device, string Inode)? ParseMaps(string line)
    {
        // "start-end perms offset dev inode [path]"
        var f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        if (f.Length < 5) return null;
        int dash = f[0].IndexOf('-');
        if (dash < 0
            || !ulong.TryParse(f[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong start)
            || !ulong.TryParse(f[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong end)
            || !ulong.TryParse(f[2], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong offset)
            || end <= start) return null;
        return (start, end, offset, f[3], f[4]);
    }
}
