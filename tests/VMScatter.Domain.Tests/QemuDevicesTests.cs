using System.Text;
using System.Text.Json;
using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>
/// Disks and NICs from the wire: described, checked, and turned into QEMU options only from the host's own
/// configuration. A peer must never make a target open a file outside its configured storage.
/// </summary>
public sealed class QemuDevicesTests : IDisposable
{
    private const long Memory = 128L << 20;
    private static readonly string Kernel = typeof(QemuDevicesTests).Assembly.Location;

    private readonly string _root;      // the configured storage "images"
    private readonly string _outside;   // a directory next to it, never configured
    private readonly QemuHostDevices _host;

    public QemuDevicesTests()
    {
        string top = Directory.CreateTempSubdirectory("vmscatter-devices-").FullName;
        _root = Path.Combine(top, "images");
        _outside = Path.Combine(top, "outside");
        Directory.CreateDirectory(Path.Combine(_root, "sub"));
        Directory.CreateDirectory(_outside);
        File.WriteAllBytes(Path.Combine(_root, "disk.raw"), new byte[4096]);
        File.WriteAllBytes(Path.Combine(_root, "sub", "d-1_x.img"), new byte[4096]);
        File.WriteAllText(Path.Combine(_outside, "secret"), "secret");
        File.CreateSymbolicLink(Path.Combine(_root, "link.raw"), Path.Combine(_outside, "secret"));
        Directory.CreateSymbolicLink(Path.Combine(_root, "linkdir"), _outside);
        File.WriteAllBytes(Path.Combine(_root, "plain.qcow2"), Qcow2Header(backingOffset: 0, incompatible: 0));
        File.WriteAllBytes(Path.Combine(_root, "backed.qcow2"), Qcow2Header(backingOffset: 112, incompatible: 0));
        File.WriteAllBytes(Path.Combine(_root, "datafile.qcow2"), Qcow2Header(backingOffset: 0, incompatible: 4));
        _host = new QemuHostDevices(new Dictionary<string, string> { ["images"] = _root }, ["user"]);
    }

    public void Dispose() => Directory.Delete(Path.GetDirectoryName(_root)!, recursive: true);

    private static byte[] Qcow2Header(ulong backingOffset, ulong incompatible)
    {
        var h = new byte[512];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(h, 0x514649FB);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(4), 3);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), backingOffset);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(72), incompatible);
        return h;
    }

    private static QemuDevices Disk(string file, string storage = "images", string format = "raw", string id = "disk0") =>
        new([new QemuDisk(id, storage, file, format)], []);

    private static QemuDevices Nic(string mac = "52:54:00:12:34:56", string kind = "user", string id = "net0") =>
        new([], [new QemuNic(id, mac, kind)]);

    private string Refused(QemuDevices devices) => Assert.Throws<ArgumentException>(() => devices.HostArguments(_host)).Message;

    /// <summary>The machine JSON a peer would send, carrying <paramref name="devices"/>.</summary>
    private static string Wire(QemuDevices devices) =>
        QemuMachine.ForImage(new GuestImage(Kernel, Kernel), Memory, 1, "tcg", "qemu64", "console=ttyS0", devices).Serialize();

    [Fact]
    public void A_described_disk_and_nic_travel_and_become_this_hosts_options()
    {
        var devices = new QemuDevices([new QemuDisk("disk0", "images", "sub/d-1_x.img"), new QemuDisk("disk1", "images", "plain.qcow2", "qcow2")],
            [new QemuNic("net0", "52:54:00:AB:cd:01")]);
        var parsed = QemuMachine.Parse(Wire(devices), Memory);
        Assert.Equal(devices.Disks, parsed.Devices.Disks);
        Assert.Equal(devices.Nics, parsed.Devices.Nics);
        Assert.DoesNotContain(parsed.Arguments, a => a.Contains("blockdev", StringComparison.Ordinal));

        var args = parsed.Devices.HostArguments(_host);
        Assert.Equal(
        [
            "-blockdev", $$"""{"driver":"file","node-name":"blk-disk0-f","filename":"{{_root}}/sub/d-1_x.img"}""",
            "-blockdev", """{"driver":"raw","node-name":"blk-disk0","file":"blk-disk0-f"}""",
            "-device", "virtio-blk-pci,drive=blk-disk0,id=disk0",
            "-blockdev", $$"""{"driver":"file","node-name":"blk-disk1-f","filename":"{{_root}}/plain.qcow2"}""",
            "-blockdev", """{"driver":"qcow2","node-name":"blk-disk1","file":"blk-disk1-f","backing":null}""",
            "-device", "virtio-blk-pci,drive=blk-disk1,id=disk1",
            "-netdev", "user,id=net-net0",
            "-device", "virtio-net-pci,netdev=net-net0,mac=52:54:00:AB:cd:01,id=net0",
        ], args);

        // The same machine on another host maps the storage name to its own directory.
        string elsewhere = Path.Combine(Path.GetDirectoryName(_root)!, "mirror");
        Directory.CreateDirectory(Path.Combine(elsewhere, "sub"));
        File.WriteAllBytes(Path.Combine(elsewhere, "sub", "d-1_x.img"), new byte[512]);
        var other = new QemuHostDevices(new Dictionary<string, string> { ["images"] = elsewhere }, ["user"]);
        Assert.Contains($"\"filename\":\"{elsewhere}/sub/d-1_x.img\"", Disk("sub/d-1_x.img").HostArguments(other)[1]);

        // No devices: nothing added, and the wire form is as before (old peers read it).
        Assert.Empty(QemuDevices.None.HostArguments(_host));
        Assert.DoesNotContain("Devices", Wire(QemuDevices.None));
    }

    [Fact]
    public void Disks_outside_the_configured_storage_are_refused_with_the_reason()
    {
        Assert.Contains("storage 'elsewhere' is not configured", Refused(Disk("disk.raw", storage: "elsewhere")));
        Assert.Contains("leaves its storage", Refused(Disk("../outside/secret")));
        Assert.Contains("leaves its storage", Refused(Disk("sub/../../outside/secret")));
        Assert.Contains("leaves its storage", Refused(Disk("./disk.raw")));
        Assert.Contains("is absolute", Refused(Disk(Path.Combine(_outside, "secret"))));
        Assert.Contains("not allowed", Refused(Disk("disk.raw,file.locking=off")));
        Assert.Contains("not allowed", Refused(Disk("sub//disk.raw")));
        Assert.Contains("not allowed", Refused(Disk("disk raw")));
        Assert.Contains("not allowed", Refused(Disk("sub\\..\\disk.raw")));
        Assert.Contains("empty", Refused(Disk("")));
        Assert.Contains("symlink", Refused(Disk("link.raw")));
        Assert.Contains("symlink", Refused(Disk("linkdir/secret")));
        Assert.Contains("not a file", Refused(Disk("missing.raw")));
        Assert.Contains("not a file", Refused(Disk("sub")));
        Assert.Contains("format 'vmdk'", Refused(Disk("disk.raw", format: "vmdk")));
        Assert.Contains("not a qcow2 image", Refused(Disk("disk.raw", format: "qcow2")));
        Assert.Contains("backing file", Refused(Disk("backed.qcow2", format: "qcow2")));
        Assert.Contains("external data file", Refused(Disk("datafile.qcow2", format: "qcow2")));
        Assert.Contains("storage name", Refused(Disk("disk.raw", storage: "../images")));
    }

    [Fact]
    public void Nics_ids_and_counts_that_are_not_allowed_are_refused()
    {
        Assert.Contains("netdev kind 'tap' is not allowed on this host", Refused(Nic(kind: "tap")));
        Assert.Contains("netdev kind 'bridge' is not allowed", Refused(Nic(kind: "bridge")));
        Assert.Contains("netdev kind", Refused(Nic(kind: "user,hostfwd=tcp::22-:22")));
        Assert.Contains("allowed: none", Assert.Throws<ArgumentException>(() => Nic().HostArguments(new QemuHostDevices(new Dictionary<string, string>(), []))).Message);
        Assert.Contains("not a MAC address", Refused(Nic(mac: "52:54:00:12:34")));
        Assert.Contains("not a MAC address", Refused(Nic(mac: "52:54:00:12:34:56,romfile=/etc/passwd")));
        Assert.Contains("not a MAC address", Refused(Nic(mac: "5g:54:00:12:34:56")));
        Assert.Contains("multicast", Refused(Nic(mac: "01:00:5e:00:00:01")));
        Assert.Contains("all zero", Refused(Nic(mac: "00:00:00:00:00:00")));
        Assert.Contains("id '0net'", Refused(Nic(id: "0net")));
        Assert.Contains("id 'n,x=y'", Refused(Nic(id: "n,x=y")));
        Assert.Contains("id", Refused(Nic(id: new string('a', 21))));
        Assert.Contains("used twice", Refused(new QemuDevices([new QemuDisk("d0", "images", "disk.raw")], [new QemuNic("d0", "52:54:00:12:34:56")])));
        Assert.Contains("at most", Refused(new QemuDevices(Enumerable.Range(0, 9).Select(i => new QemuDisk($"d{i}", "images", "disk.raw")).ToArray(), [])));
        Assert.Contains("at most", Refused(new QemuDevices([], Enumerable.Range(0, 9).Select(i => new QemuNic($"n{i}", $"52:54:00:00:00:0{i}")).ToArray())));
    }

    [Fact]
    public void Forged_descriptions_are_refused_already_when_parsed_or_when_resolved()
    {
        // Syntax faults are caught by Parse itself (a target's first check).
        foreach (var (json, reason) in new[]
        {
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":{"Disks":[{"Id":"d0","Storage":"images","File":"../x","Format":"raw"}]}}""", "leaves its storage"),
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":{"Disks":[null]}}""", "empty"),
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":{"Disks":[{"Id":"d0"}]}}""", "storage name"),
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":{"Nics":[{"Id":"n0","Mac":"52:54:00:12:34:56","Netdev":"tap,script=/tmp/x"}]}}""", "netdev kind"),
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":{"Nics":[{"Id":"n0","Mac":null}]}}""", "MAC"),
            ("""{"Arguments":["-m","128M"],"MemoryBackend":"mem0","Devices":[1,2]}""", "JSON"),
            ("""{"Arguments":["-m","128M",null],"MemoryBackend":"mem0"}""", "null"),
            ("""{"Arguments":["-drive","file=/etc/shadow"],"MemoryBackend":"mem0"}""", "not allowed"),
            ("""{"Arguments":["-device","virtio-blk-pci"],"MemoryBackend":"mem0"}""", "not allowed"),
            ("""{"Arguments":["-netdev","user,id=n"],"MemoryBackend":"mem0"}""", "not allowed"),
            ("""{"Arguments":["-blockdev","driver=file,filename=/etc/shadow"],"MemoryBackend":"mem0"}""", "not allowed"),
        })
            Assert.Contains(reason, Assert.Throws<ArgumentException>(() => QemuMachine.Parse(json, Memory)).Message);

        // What needs the host is caught when resolved against it (before the target starts anything).
        var unknownStorage = QemuMachine.Parse(Wire(Disk("disk.raw", storage: "nfs")), Memory);
        Assert.Contains("not configured on this host", Refused(unknownStorage.Devices));
        var tap = QemuMachine.Parse(Wire(Nic(kind: "tap")), Memory);
        Assert.Contains("not allowed on this host", Refused(tap.Devices));
    }

    [Fact]
    public void A_machine_given_with_its_memory_backend_is_accepted_as_people_start_qemu()
    {
        var plain = QemuMachine.Parse(JsonSerializer.Serialize(new[] { "-machine", "pc,memory-backend=ram0", "-m", "128M" }), Memory);
        Assert.Equal("ram0", plain.MemoryBackendId);
        Assert.Equal(["-machine", "pc", "-m", "128M"], plain.Arguments); // each host adds its own memory-backend option
        var q35 = QemuMachine.Parse(JsonSerializer.Serialize(new { Arguments = new[] { "-machine", "q35-7.2,memory-backend=mem0" }, MemoryBackend = "mem0" }), Memory);
        Assert.Equal(["-machine", "q35-7.2"], q35.Arguments);

        Assert.Contains("not 'mem0'", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(JsonSerializer.Serialize(new { Arguments = new[] { "-machine", "pc,memory-backend=other" }, MemoryBackend = "mem0" }), Memory)).Message);
        foreach (string bad in new[] { "pc,memory-backend=a,b=c", "pc,memory-backend=", "pc,accel=kvm", "pc,memory-backend=1x", "pc,memory-backend=m,memory-backend=n" })
            Assert.Contains("not allowed", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(JsonSerializer.Serialize(new[] { "-machine", bad }), Memory)).Message);
    }

    [Fact]
    public void Host_configuration_is_checked_too()
    {
        Assert.Contains("not supported", Assert.Throws<ArgumentException>(() => new QemuHostDevices(new Dictionary<string, string>(), ["tap"])).Message);
        Assert.Contains("absolute", Assert.Throws<ArgumentException>(() => new QemuHostDevices(new Dictionary<string, string> { ["a"] = "relative/dir" }, [])).Message);
        Assert.Contains("comma", Assert.Throws<ArgumentException>(() => new QemuHostDevices(new Dictionary<string, string> { ["a"] = "/srv/a,b" }, [])).Message);
        Assert.Contains("name", Assert.Throws<ArgumentException>(() => new QemuHostDevices(new Dictionary<string, string> { ["a/b"] = "/srv" }, [])).Message);
    }

    private static readonly char[] PathAlphabet = ['a', 'b', '.', '/', ',', '\\', '=', ' ', '-', '_', '\0', '~', '%', 'é'];

    /// <summary>Paths built from risky pieces: either refused with a reason, or a regular file inside the storage directory reached through no symlink.</summary>
    [Property(MaxTest = 300)]
    public Property Any_relative_path_is_refused_or_stays_inside_its_storage(PositiveInt seed)
    {
        var random = new Random(seed.Get);
        string[] pieces = ["..", ".", "/", "sub", "disk.raw", "link.raw", "linkdir", "secret", "d-1_x.img", "", _root, ","];
        var file = new StringBuilder();
        for (int i = random.Next(1, 6); i > 0; i--)
            file.Append(random.Next(3) == 0 ? PathAlphabet[random.Next(PathAlphabet.Length)].ToString() : pieces[random.Next(pieces.Length)]);
        string path = file.ToString();
        try
        {
            var args = Disk(path).HostArguments(_host);
            string resolved = System.Text.Json.Nodes.JsonNode.Parse(args[1])!["filename"]!.GetValue<string>();
            bool inside = resolved.StartsWith(_root + "/", StringComparison.Ordinal) && !resolved.Contains("..", StringComparison.Ordinal) && !resolved.Contains(',')
                && File.Exists(resolved) && new FileInfo(resolved).LinkTarget is null && !resolved[_root.Length..].Contains("link", StringComparison.Ordinal);
            return inside.Label($"'{path}' resolved to '{resolved}'");
        }
        catch (ArgumentException e)
        {
            return (e.Message.Length > 0 && !e.Message.Contains('\n')).Label($"'{path}': {e.Message}");
        }
    }

    /// <summary>Random and mutated machine JSON: Parse accepts it or throws an ArgumentException, never anything else.</summary>
    [Property(MaxTest = 500)]
    public Property The_machine_parser_only_ever_refuses_with_an_argument_exception(PositiveInt seed, bool mutate)
    {
        var random = new Random(seed.Get);
        string valid = Wire(new QemuDevices([new QemuDisk("disk0", "images", "disk.raw")], [new QemuNic("net0", "52:54:00:12:34:56")]));
        string json;
        if (mutate)
        {
            var chars = valid.ToCharArray();
            for (int i = random.Next(1, 6); i > 0; i--) chars[random.Next(chars.Length)] = "{}[]\",:0aZ/.n \\"[random.Next(15)];
            json = new string(chars);
            if (random.Next(4) == 0) json = json[..random.Next(json.Length)]; // truncated
        }
        else json = new string(Enumerable.Range(0, random.Next(0, 40)).Select(_ => (char)random.Next(32, 127)).ToArray());
        try
        {
            var machine = QemuMachine.Parse(json, Memory);
            // Accepted: its devices are well-formed, and resolving them on this host either works or refuses cleanly.
            try { machine.Devices.HostArguments(_host); } catch (ArgumentException) { }
            return true.ToProperty();
        }
        catch (ArgumentException) { return true.ToProperty(); }
        catch (Exception e) { return false.Label($"{e.GetType().Name}: {e.Message} for {json}"); }
    }

    /// <summary>Every MAC form: accepted exactly when it is six hex octets, unicast and not all zero.</summary>
    [Property(MaxTest = 300)]
    public Property Macs_are_accepted_exactly_when_unicast_and_not_zero(byte[] bytes)
    {
        var six = bytes.Concat(new byte[6]).Take(6).ToArray();
        string mac = string.Join(':', six.Select(b => b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));
        bool expected = (six[0] & 1) == 0 && six.Any(b => b != 0);
        bool accepted;
        try { Nic(mac).Check(); accepted = true; } catch (ArgumentException) { accepted = false; }
        return (accepted == expected).Label(mac);
    }
}
