using System.Text.Json;
using System.Text.RegularExpressions;
using VMScatter.Domain;
using VMScatter.Domain.Units;

namespace VMScatter.Qemu;

/// <summary>
/// The machine a guest runs on: the QEMU options source and target must agree on (machine type, accelerator,
/// CPU model, memory size, vCPUs, boot image) and the id of its RAM backend (QEMU names the RAM block after it, and
/// an incoming migration names the blocks it expects). It travels as <see cref="VmDescription.MachineArguments"/>
/// (JSON). Host-specific options (RAM file, monitor, serial, incoming) are added by each host, never taken from
/// the wire: a target runs QEMU with what a peer sent, so only this allow-list of options is accepted. Disks and
/// NICs travel as a description (<see cref="Devices"/>), which each host turns into options from its own
/// configuration (<see cref="QemuDevices.HostArguments"/>).
/// </summary>
public sealed partial record QemuMachine(IReadOnlyList<string> Arguments)
{
    public string MemoryBackendId { get; init; } = "mem0";

    /// <summary>The guest's disks and NICs, described (never as host options).</summary>
    public QemuDevices Devices { get; init; } = QemuDevices.None;

    private static readonly Dictionary<string, Regex?> ValueOptions = new(StringComparer.Ordinal)
    {
        ["-machine"] = MachineType(),
        ["-accel"] = Accelerator(),
        ["-cpu"] = CpuModel(),
        ["-m"] = MemorySize(),
        ["-smp"] = Count(),
        ["-kernel"] = null, // an existing absolute path, checked below
        ["-initrd"] = null,
        ["-append"] = KernelCommandLine(),
    };

    private static readonly HashSet<string> Flags = new(StringComparer.Ordinal) { "-nodefaults", "-no-user-config", "-S" };

    /// <summary>The machine for a guest booted from a kernel and initramfs, as VMScatter's guest image is.</summary>
    public static QemuMachine ForImage(GuestImage image, long memoryBytes, int vcpus, string accelerator, string cpu, string kernelCommandLine, QemuDevices? devices = null) => new([
        "-machine", "pc", "-accel", accelerator, "-cpu", cpu,
        "-m", $"{memoryBytes / (1 << 20)}M", "-smp", vcpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "-nodefaults", "-no-user-config",
        "-kernel", image.Kernel, "-initrd", image.Initramfs, "-append", kernelCommandLine,
    ]) { Devices = devices ?? QemuDevices.None };

    /// <summary>The wire form; without devices it is exactly what peers without device support read.</summary>
    public string Serialize() => JsonSerializer.Serialize(new Wire(Arguments.ToArray(), MemoryBackendId, Devices.IsEmpty ? null : new WireDevices(Devices.Disks.ToArray(), Devices.Nics.ToArray())), WireOptions);

    private static readonly JsonSerializerOptions WireOptions = new() { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };

    private sealed record Wire(string[] Arguments, string MemoryBackend, WireDevices? Devices = null);

    private sealed record WireDevices(QemuDisk[]? Disks, QemuNic[]? Nics);

    /// <summary>The same machine with its vCPUs held at start (-S): a target continues it only once the state is loaded.</summary>
    public QemuMachine WithPausedStart() => this with { Arguments = Arguments.Append("-S").ToArray() };

    /// <summary>Parses and validates machine arguments received with a VM; throws <see cref="ArgumentException"/> naming the bad option.</summary>
    public static QemuMachine Parse(string machineArguments, long memoryBytes)
    {
        string[]? args;
        string backend = "mem0";
        bool backendGiven = false;
        var devices = QemuDevices.None;
        try
        {
            if (machineArguments.TrimStart().StartsWith('['))
                args = JsonSerializer.Deserialize<string[]>(machineArguments); // a plain argument list: the default backend id
            else
            {
                var wire = JsonSerializer.Deserialize<Wire>(machineArguments);
                args = wire?.Arguments;
                backend = wire?.MemoryBackend ?? "";
                backendGiven = true;
                if (wire?.Devices is { } d) devices = new QemuDevices(d.Disks ?? [], d.Nics ?? []);
            }
        }
        catch (JsonException e) { throw new ArgumentException($"machine arguments are not a JSON argument list: {e.Message}"); }
        catch (NotSupportedException e) { throw new ArgumentException($"machine arguments are not a JSON argument list: {e.Message}"); }
        if (args is null || args.Length == 0) throw new ArgumentException("no machine arguments");
        if (args.Any(a => a is null)) throw new ArgumentException("machine arguments hold a null");
        args = args.ToArray();
        devices.Check();
        for (int i = 0; i < args.Length; i++)
        {
            string option = args[i];
            if (Flags.Contains(option)) continue;
            if (!ValueOptions.TryGetValue(option, out var pattern)) throw new ArgumentException($"machine option '{option}' is not allowed");
            if (i + 1 >= args.Length) throw new ArgumentException($"machine option '{option}' has no value");
            string value = args[++i];
            // -machine TYPE,memory-backend=ID (how one gives QEMU shared RAM): the id is the RAM backend's, and each
            // host adds its own memory-backend option, so the type alone stays in the arguments.
            if (option == "-machine" && MachineWithBackend().Match(value) is { Success: true } m)
            {
                string id = m.Groups["id"].Value;
                if (backendGiven && id != backend) throw new ArgumentException($"machine option -machine '{value}' names memory backend '{id}', not '{backend}'");
                backend = id;
                value = args[i] = m.Groups["type"].Value;
            }
            if (pattern is not null && !pattern.IsMatch(value)) throw new ArgumentException($"machine option {option} '{value}' is not allowed");
            if (pattern is null && (!Path.IsPathFullyQualified(value) || value.Contains(',') || !File.Exists(value)))
                throw new ArgumentException($"machine option {option}: '{value}' is not an existing absolute path on this host");
            if (option == "-m" && ParseMegabytes(value) * (1L << 20) != memoryBytes)
                throw new ArgumentException($"machine option -m {value} does not match the VM's {memoryBytes} bytes of memory");
        }
        if (!BackendId().IsMatch(backend)) throw new ArgumentException($"memory backend id '{backend}' is not allowed");
        return new QemuMachine(args) { MemoryBackendId = backend, Devices = devices };
    }

    private static long ParseMegabytes(string value) => value.EndsWith('G')
        ? long.Parse(value[..^1], System.Globalization.CultureInfo.InvariantCulture) * 1024
        : long.Parse(value.TrimEnd('M'), System.Globalization.CultureInfo.InvariantCulture);

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_-]{0,31}$")] private static partial Regex BackendId();
    [GeneratedRegex("^(pc|q35)(-[a-z0-9.-]+)?$")] private static partial Regex MachineType();
    [GeneratedRegex("^(?<type>(pc|q35)(-[a-z0-9.-]+)?),memory-backend=(?<id>[A-Za-z][A-Za-z0-9_-]{0,31})$")] private static partial Regex MachineWithBackend();
    [GeneratedRegex("^(tcg|kvm)$")] private static partial Regex Accelerator();
    [GeneratedRegex("^[A-Za-z0-9_-]{1,40}$")] private static partial Regex CpuModel();
    [GeneratedRegex("^[0-9]{1,7}[MG]?$")] private static partial Regex MemorySize();
    [GeneratedRegex("^[0-9]{1,3}$")] private static partial Regex Count();
    [GeneratedRegex("^[\\x20-\\x7e]{0,1024}$")] private static partial Regex KernelCommandLine();
}

/// <summary>A bootable guest image: a kernel and an initramfs (deploy/guest/build-guest-image.sh makes one).</summary>
public sealed record GuestImage(string Kernel, string Initramfs)
{
    public static GuestImage InDirectory(string directory)
    {
        var image = new GuestImage(Path.GetFullPath(Path.Combine(directory, "vmlinuz")), Path.GetFullPath(Path.Combine(directory, "initramfs.gz")));
        if (!File.Exists(image.Kernel) || !File.Exists(image.Initramfs))
            throw new FileNotFoundException($"no guest image in {directory} (expected vmlinuz and initramfs.gz; build it with deploy/guest/build-guest-image.sh {directory})");
        return image;
    }

    /// <summary>The initramfs with the real programs, beside the small one (build-guest-image.sh writes both).</summary>
    public const string WorkloadsInitramfsName = "initramfs-workloads.gz";

    /// <summary>The image a guest of <paramref name="workload"/> boots: dd the small one, the real programs the big one.</summary>
    public GuestImage For(GuestWorkload workload)
    {
        if (workload == GuestWorkload.Dd) return this;
        string initramfs = Path.Combine(Path.GetDirectoryName(Initramfs)!, WorkloadsInitramfsName);
        if (!File.Exists(initramfs))
            throw new FileNotFoundException($"no {WorkloadsInitramfsName} beside {Initramfs} for the {workload.ToName()} workload (rebuild the image with deploy/guest/build-guest-image.sh)");
        return this with { Initramfs = initramfs };
    }
}

/// <summary>Where and how a host runs QEMU.</summary>
public sealed record QemuSettings
{
    public string Binary { get; init; } = "qemu-system-x86_64";

    /// <summary>Guest RAM files live here; tmpfs, so the host reads and writes guest memory without disk I/O.</summary>
    public string RamDirectory { get; init; } = "/dev/shm";

    /// <summary>Per-guest monitor sockets and serial logs; each guest gets its own subdirectory, removed when it ends.</summary>
    public string RuntimeDirectory { get; init; } = Path.GetTempPath();

    public TimeSpan BootTimeout { get; init; } = TimeSpan.FromSeconds(90);
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a stop-copy state save or load may take before the step fails.</summary>
    public TimeSpan StateTransferTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>The disks and NICs this host lets guests have (shared storage directories, netdev kinds).</summary>
    public QemuHostDevices Devices { get; init; } = QemuHostDevices.Default;

    /// <summary>How a guest's written pages are found: from the kernel's log of QEMU's writes (re-hashing where it cannot be had), by re-hashing its memory, or from QEMU's own migration stream.</summary>
    public DirtyTracking DirtyTracking { get; init; } = DirtyTracking.WriteProtect;

    /// <summary>With <see cref="DirtyTracking.QemuStream"/>: QEMU's downtime limit while it streams (it stops the guest once the rest would take less).</summary>
    public int StreamDowntimeLimitMs { get; init; } = 1;
}

/// <summary>How a QEMU guest's written pages are found.</summary>
public enum DirtyTracking
{
    /// <summary>Every collection hashes all of guest memory against the last (a round costs the RAM size).</summary>
    Rehash,

    /// <summary>QEMU's own dirty bitmap, read from its migration stream (a round costs what was written; QEMU decides when the guest stops).</summary>
    QemuStream,

    /// <summary>
    /// The kernel's log of QEMU's writes (userfaultfd write-protection, read by the pagemap scan; Linux 6.7 and later): a
    /// round re-hashes only the pages written. Where it cannot be had (older kernel, a seccomp-filtered or unknown QEMU
    /// process), the guest is re-hashed and the report says why.
    /// </summary>
    WriteProtect,
}

public static class DirtyTrackings
{
    public static string ToName(this DirtyTracking t) => t switch { DirtyTracking.Rehash => "rehash", DirtyTracking.QemuStream => "qemu-stream", DirtyTracking.WriteProtect => "write-protect", _ => t.ToString() };

    public static DirtyTracking Parse(string name) => name switch
    {
        "rehash" => DirtyTracking.Rehash,
        "qemu-stream" => DirtyTracking.QemuStream,
        "write-protect" => DirtyTracking.WriteProtect,
        _ => throw new ArgumentException($"dirty tracking '{name}' is not one of rehash, qemu-stream, write-protect"),
    };
}
