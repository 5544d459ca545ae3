using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace VMScatter.Qemu;

/// <summary>A virtio-blk disk as it travels: a file, named relative to a shared storage every host names alike.</summary>
/// <param name="Id">The device's id (also names its block nodes).</param>
/// <param name="Storage">The name of a shared storage directory (each host maps names to its own directories).</param>
/// <param name="File">The image's path relative to that directory: plain segments, no "..", no symlinks.</param>
/// <param name="Format">raw or qcow2 (a qcow2 image must name no backing or external data file).</param>
public sealed record QemuDisk(string Id, string Storage, string File, string Format = "raw");

/// <summary>A virtio-net NIC as it travels: its MAC and the kind of host network it is plugged into.</summary>
public sealed record QemuNic(string Id, string Mac, string Netdev = "user");

/// <summary>
/// The devices a guest has beyond its machine: disks and NICs, described, never as host options. Each host turns
/// the description into QEMU options from its own configuration (<see cref="QemuHostDevices"/>); whatever comes from
/// the wire is checked twice: its syntax when parsed (<see cref="Check"/>), its host side when resolved
/// (<see cref="HostArguments"/>). Both throw <see cref="ArgumentException"/> with a one-line reason.
/// </summary>
public sealed partial record QemuDevices(IReadOnlyList<QemuDisk> Disks, IReadOnlyList<QemuNic> Nics)
{
    public const int MaxDisks = 8;
    public const int MaxNics = 8;

    public static readonly QemuDevices None = new([], []);

    public bool IsEmpty => Disks.Count == 0 && Nics.Count == 0;

    /// <summary>Checks what needs no host: ids, names, relative paths, formats, MACs, counts; throws naming the first fault.</summary>
    public void Check()
    {
        if (Disks is null || Nics is null) throw new ArgumentException("devices: disk and NIC lists must be present");
        if (Disks.Count > MaxDisks) throw new ArgumentException($"devices: {Disks.Count} disks, at most {MaxDisks}");
        if (Nics.Count > MaxNics) throw new ArgumentException($"devices: {Nics.Count} NICs, at most {MaxNics}");
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in Disks)
        {
            if (disk is null) throw new ArgumentException("devices: a disk entry is empty");
            CheckId(disk.Id, "disk", ids);
            if (disk.Storage is null || !StorageName().IsMatch(disk.Storage)) throw new ArgumentException($"disk {disk.Id}: storage name '{disk.Storage}' is not allowed");
            CheckRelativeFile(disk);
            if (disk.Format is not ("raw" or "qcow2")) throw new ArgumentException($"disk {disk.Id}: format '{disk.Format}' is not allowed (raw or qcow2)");
        }
        foreach (var nic in Nics)
        {
            if (nic is null) throw new ArgumentException("devices: a NIC entry is empty");
            CheckId(nic.Id, "NIC", ids);
            if (nic.Mac is null || !Mac().IsMatch(nic.Mac)) throw new ArgumentException($"NIC {nic.Id}: MAC '{nic.Mac}' is not a MAC address (xx:xx:xx:xx:xx:xx)");
            byte first = byte.Parse(nic.Mac.AsSpan(0, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if ((first & 1) != 0) throw new ArgumentException($"NIC {nic.Id}: MAC {nic.Mac} is a multicast address");
            if (nic.Mac.Replace(":", "", StringComparison.Ordinal).All(c => c == '0')) throw new ArgumentException($"NIC {nic.Id}: MAC {nic.Mac} is all zero");
            if (nic.Netdev is null || !NetdevName().IsMatch(nic.Netdev)) throw new ArgumentException($"NIC {nic.Id}: netdev kind '{nic.Netdev}' is not allowed");
        }
    }

    private static void CheckId(string? id, string what, HashSet<string> seen)
    {
        if (id is null || !DeviceId().IsMatch(id)) throw new ArgumentException($"{what} id '{id}' is not allowed (a letter, then up to 19 letters, digits, '-' or '_')");
        if (!seen.Add(id)) throw new ArgumentException($"{what} id '{id}' is used twice");
    }

    private static void CheckRelativeFile(QemuDisk disk)
    {
        string? file = disk.File;
        if (string.IsNullOrEmpty(file) || file.Length > 255) throw new ArgumentException($"disk {disk.Id}: file name '{file}' is empty or too long");
        if (file.StartsWith('/')) throw new ArgumentException($"disk {disk.Id}: file '{file}' is absolute; give it relative to its storage");
        foreach (string segment in file.Split('/'))
        {
            if (segment is "." or "..") throw new ArgumentException($"disk {disk.Id}: file '{file}' leaves its storage directory ('{segment}')");
            if (!FileSegment().IsMatch(segment)) throw new ArgumentException($"disk {disk.Id}: file '{file}' has a path segment '{segment}' that is not allowed (letters, digits, '.', '-', '_')");
        }
    }

    /// <summary>
    /// The QEMU options for these devices on this host: each disk's file resolved inside the storage directory
    /// <paramref name="host"/> names (existing regular file, no symlink on the way, qcow2 naming no other file),
    /// each NIC on a netdev kind <paramref name="host"/> allows. Throws <see cref="ArgumentException"/> otherwise.
    /// </summary>
    public IReadOnlyList<string> HostArguments(QemuHostDevices host)
    {
        Check();
        var args = new List<string>();
        foreach (var disk in Disks)
        {
            string path = host.Resolve(disk);
            string file = $"blk-{disk.Id}-f", node = $"blk-{disk.Id}";
            // JSON (no option-syntax quoting); an explicit format (never probed); a qcow2 image opens no backing
            // file, whatever its header says ("backing": null, checked on QEMU 7.2 with an image that names one).
            args.AddRange(["-blockdev", Json(new JsonObject { ["driver"] = "file", ["node-name"] = file, ["filename"] = path })]);
            var format = new JsonObject { ["driver"] = disk.Format, ["node-name"] = node, ["file"] = file };
            if (disk.Format == "qcow2") format["backing"] = null;
            args.AddRange(["-blockdev", Json(format)]);
            args.AddRange(["-device", $"virtio-blk-pci,drive={node},id={disk.Id}"]);
        }
        foreach (var nic in Nics)
        {
            if (!host.NetdevKinds.Contains(nic.Netdev, StringComparer.Ordinal))
                throw new ArgumentException($"NIC {nic.Id}: netdev kind '{nic.Netdev}' is not allowed on this host (allowed: {(host.NetdevKinds.Count == 0 ? "none" : string.Join(", ", host.NetdevKinds))})");
            args.AddRange(["-netdev", $"{nic.Netdev},id=net-{nic.Id}"]);
            args.AddRange(["-device", $"virtio-net-pci,netdev=net-{nic.Id},mac={nic.Mac},id={nic.Id}"]);
        }
        return args;
    }

    private static string Json(JsonObject o) => o.ToJsonString();

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_-]{0,19}$")] private static partial Regex DeviceId();
    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_-]{0,31}$")] internal static partial Regex StorageName();
    [GeneratedRegex("^[A-Za-z0-9._-]{1,64}$")] private static partial Regex FileSegment();
    [GeneratedRegex("^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")] private static partial Regex Mac();
    [GeneratedRegex("^[a-z]{1,16}$")] private static partial Regex NetdevName();
}

/// <summary>
/// What devices this host lets its QEMU guests have: shared storage directories by name
/// (<c>vmscatter.qemu.shared-storage</c>) and netdev kinds (<c>vmscatter.qemu.netdev-kinds</c>; only <c>user</c>
/// is supported). Nothing from the wire can add to them.
/// </summary>
public sealed record QemuHostDevices
{
    public static readonly string[] SupportedNetdevKinds = ["user"];

    /// <summary>No shared storage, user networking only.</summary>
    public static readonly QemuHostDevices Default = new(new Dictionary<string, string>(), ["user"]);

    public QemuHostDevices(IReadOnlyDictionary<string, string> sharedStorage, IReadOnlyList<string> netdevKinds)
    {
        foreach (var (name, dir) in sharedStorage)
        {
            if (!QemuDevices.StorageName().IsMatch(name)) throw new ArgumentException($"shared storage name '{name}' is not allowed (a letter, then letters, digits, '-', '_')");
            if (!Path.IsPathFullyQualified(dir) || dir.Contains(',')) throw new ArgumentException($"shared storage {name}: '{dir}' must be an absolute path without a comma");
        }
        foreach (var kind in netdevKinds)
            if (!SupportedNetdevKinds.Contains(kind))
                throw new ArgumentException($"netdev kind '{kind}' is not supported (supported: {string.Join(", ", SupportedNetdevKinds)}; tap needs a bridge this host does not set up)");
        SharedStorage = sharedStorage.ToDictionary(kv => kv.Key, kv => Path.TrimEndingDirectorySeparator(Path.GetFullPath(kv.Value)), StringComparer.Ordinal);
        NetdevKinds = netdevKinds.Distinct(StringComparer.Ordinal).ToArray();
    }

    public IReadOnlyDictionary<string, string> SharedStorage { get; }
    public IReadOnlyList<string> NetdevKinds { get; }

    /// <summary>
    /// The absolute path of <paramref name="disk"/>'s image on this host: inside its storage directory, reached
    /// through no symlink, an existing regular file; a qcow2 image's header names no backing or external data file.
    /// </summary>
    public string Resolve(QemuDisk disk)
    {
        if (!SharedStorage.TryGetValue(disk.Storage, out var root))
            throw new ArgumentException($"disk {disk.Id}: storage '{disk.Storage}' is not configured on this host");
        if (!Directory.Exists(root)) throw new ArgumentException($"disk {disk.Id}: storage '{disk.Storage}' ({root}) does not exist on this host");
        string path = root;
        foreach (string segment in disk.File.Split('/'))
        {
            path = Path.Combine(path, segment);
            FileSystemInfo info = new FileInfo(path);
            if (!info.Exists && Directory.Exists(path)) info = new DirectoryInfo(path);
            if (info.LinkTarget is not null) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' goes through a symlink in storage '{disk.Storage}'");
        }
        // Belt and braces: the joined path is still under the root.
        if (!Path.GetFullPath(path).StartsWith(root + "/", StringComparison.Ordinal)) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' leaves storage '{disk.Storage}'");
        if (!File.Exists(path)) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' is not a file in storage '{disk.Storage}'");
        if (!IsRegular(path))
            throw new ArgumentException($"disk {disk.Id}: '{disk.File}' is not a regular file");
        if (disk.Format == "qcow2") CheckQcow2(disk, path);
        return path;
    }

    /// <summary>lstat's file type, through statx (its layout is the same on every Linux architecture): a regular file and not a link, FIFO or device.</summary>
    private static bool IsRegular(string path)
    {
        const int AtSymlinkNoFollow = 0x100, StatxType = 1;
        var buffer = new byte[256];
        if (Statx(-100 /* AT_FDCWD */, path, AtSymlinkNoFollow, StatxType, buffer) != 0) return false;
        ushort mode = BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(28)); // stx_mode
        return (mode & 0xF000) == 0x8000; // S_IFREG
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    private static extern int Statx(int dirfd, [System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);

    /// <summary>A qcow2 header (big-endian): magic, version, backing file offset at 8, incompatible features at 72 (v3; bit 2: external data file).</summary>
    private static void CheckQcow2(QemuDisk disk, string path)
    {
        Span<byte> header = stackalloc byte[104];
        int read;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete)) read = stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false);
        if (read < 72 || BinaryPrimitives.ReadUInt32BigEndian(header) != 0x514649FB) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' is not a qcow2 image");
        uint version = BinaryPrimitives.ReadUInt32BigEndian(header[4..]);
        if (version is not (2 or 3)) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' is qcow2 version {version}, not 2 or 3");
        if (BinaryPrimitives.ReadUInt64BigEndian(header[8..]) != 0) throw new ArgumentException($"disk {disk.Id}: '{disk.File}' names a backing file (not allowed: it could be any host file)");
        if (version == 3 && (read < 80 || (BinaryPrimitives.ReadUInt64BigEndian(header[72..]) & 4) != 0))
            throw new ArgumentException($"disk {disk.Id}: '{disk.File}' names an external data file (not allowed: it could be any host file)");
    }
}
