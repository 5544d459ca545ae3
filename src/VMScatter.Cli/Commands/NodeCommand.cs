using System.CommandLine;
using Akka.Actor;
using VMScatter.Cluster.Hosting;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using VMScatter.Domain.Units;
using VMScatter.Qemu;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter node`: run one cluster node (scheduler, source and/or target) until interrupted.</summary>
public static class NodeCommand
{
    private static readonly string[] KnownRoles = ["scheduler", "source", "target"];

    public static Command Create()
    {
        var roles = new Option<string[]>("--role") { Description = "scheduler | source | target (repeat for several)", Required = true, AllowMultipleArgumentsPerToken = true };
        var port = new Option<int>("--port") { Description = "Akka.Remote port (0: any free port)", DefaultValueFactory = _ => 0 };
        var hostname = new Option<string>("--hostname") { Description = "Address this node listens on and the others reach it by (cluster and data plane)", DefaultValueFactory = _ => "127.0.0.1" };
        var dataPlaneAddress = new Option<string?>("--data-plane-address") { Description = "Target role: address of the data-plane listener, if not --hostname (e.g. a separate storage network)" };
        var seeds = new Option<string[]>("--seeds") { Description = "Seed nodes, host:port (a scheduler node with none seeds itself)", AllowMultipleArgumentsPerToken = true };
        var hostId = new Option<string?>("--host-id") { Description = "Name of this host in the cluster" };
        var config = new Option<string?>("--config") { Description = "Extra HOCON file layered over hocon/*.conf" };
        var capacity = new Option<string?>("--capacity") { Description = "Target role: guest memory this host accepts" };
        var rack = new Option<string?>("--rack") { Description = "Target role: the rack (switch) this host hangs off" };
        var backend = new Option<string>("--backend") { Description = "synthetic | qemu: how this node runs guests (source) and hosts arriving ones (target)", DefaultValueFactory = _ => "synthetic" };
        var adopt = new Option<string[]>("--adopt")
        {
            Description = "Source role, qemu backend: take over a running guest instead of booting one: id=ID,qmp=SOCKET,ram=FILE,memory=SIZE,machine=ARGS.json[,serial=LOG] (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var vms = new Option<int>("--vms") { Description = "Source role: VMs to run (synthetic, or QEMU guests booted from the guest image; 0: none)", DefaultValueFactory = _ => 8 };
        var vmMemory = new Option<string>("--vm-memory") { Description = "Source role: memory of each VM", DefaultValueFactory = _ => "256MiB" };
        var seed = new Option<long>("--seed") { Description = "Source role: seed of the synthetic guests", DefaultValueFactory = _ => 42 };
        var journal = new Option<string?>("--journal") { Description = "Scheduler role: SQLite journal file" };
        var joinTimeout = new Option<int?>("--join-timeout") { Description = "Seconds to wait for the seeds (default: vmscatter.node.join-timeout)" };
        var command = new Command("node", "Run one VMScatter cluster node until Ctrl+C");
        foreach (var o in new Option[] { backend, adopt, roles, port, hostname, dataPlaneAddress, seeds, hostId, config, capacity, rack, vms, vmMemory, seed, journal, joinTimeout }) command.Options.Add(o);

        command.SetAction(async (parse, cancellationToken) =>
        {
            var roleList = parse.GetValue(roles)!.SelectMany(r => r.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct().ToArray();
            var unknown = roleList.Where(r => !KnownRoles.Contains(r)).ToArray();
            if (unknown.Length > 0) throw new UserError($"unknown role(s) {string.Join(", ", unknown)}; roles are {string.Join(", ", KnownRoles)}");
            var seedList = parse.GetValue(seeds) ?? [];
            foreach (var s in seedList)
                try { NodeOptions.SeedAddress(s); } catch (ArgumentException e) { throw new UserError(e.Message); }
            if (parse.GetValue(config) is { } file && !File.Exists(file)) throw new UserError($"--config: {file} does not exist");
            // A target's data plane listens on and announces --hostname unless given its own address.
            if (roleList.Contains("target") && parse.GetValue(dataPlaneAddress) is null) Address(parse.GetValue(hostname)!, "--hostname (the target's data plane listens there; or give --data-plane-address)");
            if (parse.GetValue(hostId) is { } named) MigrationOptionSet.Id<HostId>(named, "--host-id");
            bool qemu = QemuSetup.Backend(parse.GetValue(backend)) == GuestBackend.Qemu;
            long memory = DemoCommand.Size(parse.GetValue(vmMemory)!, "--vm-memory");
            IReadOnlyList<IMigratableVm> sourceVms = [];
            ITargetBackend? targetBackend = null;
            // Guests this start booted end if the node does not come up; guests it found running (re-adopted, adopted) are let go.
            var booted = new HashSet<IMigratableVm>();
            GuestStateFile? state = null;
            if (qemu)
            {
                var (qemuConfig, image) = await QemuSetup.PrepareAsync(parse.GetValue(config), cancellationToken);
                var adoptions = (parse.GetValue(adopt) ?? []).Select(ParseAdoption).ToArray();
                if (adoptions.Length > 0 && !roleList.Contains("source")) throw new UserError("--adopt needs the source role");
                string? stableId = StableHostId(parse.GetValue(hostId), parse.GetValue(config), roleList, parse.GetValue(port));
                if (stableId is null) Console.WriteLine("note: no --host-id or --port: if this node restarts it cannot re-adopt its QEMU guests (they keep running)");
                else
                {
                    try { state = GuestStateFile.Open(qemuConfig.StateDirectory, stableId); }
                    catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { throw new UserError(e.Message); }
                }
                var backend = new QemuTargetBackend(stableId ?? $"target-{Environment.ProcessId}", qemuConfig.Settings, roleList.Contains("target") ? state : null);
                targetBackend = backend;
                var found = new List<IMigratableVm>();
                if (state is not null)
                    found.AddRange(await GuestAdoption.ReadoptAsync(state, qemuConfig.Settings, roleList.Contains("source"), roleList.Contains("target") ? backend : null, Console.WriteLine, cancellationToken));
                foreach (var a in adoptions)
                {
                    if (found.Any(v => v.Description.Id.Value == a.Id)) { Console.WriteLine($"guest {a.Id}: re-adopted from the state file already"); continue; }
                    QemuVm vm;
                    try { vm = await QemuVm.AdoptAsync(a, qemuConfig.Settings, cancellationToken); }
                    catch (QemuStepException e)
                    {
                        await LetGoAsync(found, backend);
                        throw new UserError(e.Message);
                    }
                    if (state is not null) await vm.RecordInAsync(state);
                    found.Add(vm);
                    Console.WriteLine($"adopted guest {a.Id} ({ByteSize.Format(a.MemoryBytes)}, RAM {a.RamFile})");
                }
                sourceVms = found;
                // A node that found guests of its own runs those; it boots --vms new ones only when it has none.
                if (adoptions.Length == 0 && found.Count == 0 && roleList.Contains("source"))
                {
                    Console.WriteLine($"booting {parse.GetValue(vms)} QEMU guests x {ByteSize.Format(memory)}");
                    var fleet = await qemuConfig.BootGuestsAsync(image, parse.GetValue(vms), memory, cancellationToken);
                    if (state is not null) foreach (var g in fleet) await g.RecordInAsync(state);
                    booted.UnionWith(fleet);
                    sourceVms = fleet;
                }
            }
            // --vms 0: a source that runs nothing yet (a synthetic source restarted after a crash: its guests ended with it).
            else if (roleList.Contains("source") && parse.GetValue(vms) != 0)
                sourceVms = SyntheticFleet.Create(new SyntheticFleetSpec(parse.GetValue(vms), new SyntheticGuestModel { MemoryBytes = memory }, parse.GetValue(seed)));
            VmScatterNode node;
            try
            {
                node = await VmScatterNode.StartAsync(new NodeOptions
                {
                    Roles = roleList, Port = parse.GetValue(port), Hostname = parse.GetValue(hostname)!, Seeds = seedList, HostId = parse.GetValue(hostId),
                    ConfigFile = parse.GetValue(config), SourceVms = sourceVms, TargetBackend = targetBackend,
                    TargetCapacityBytes = parse.GetValue(capacity) is { } c ? DemoCommand.Size(c, "--capacity") : null,
                    JournalConnectionString = parse.GetValue(journal) is { } j ? $"Data Source={Path.GetFullPath(j)}" : null,
                    ExtraHocon = JoinTimeout(parse.GetValue(joinTimeout)) + (parse.GetValue(rack) is { } r ? $"\nvmscatter.target.rack = {NodeConfig.Quote(r)}" : "")
                        + (parse.GetValue(dataPlaneAddress) is { } dp ? $"\nvmscatter.target.data-plane-hostname = {NodeConfig.Quote(Address(dp, "--data-plane-address"))}" : ""),
                }, cancellationToken);
            }
            catch
            {
                // Guests booted for a node that never came up must not outlive it; guests it found running go on.
                foreach (var vm in sourceVms.Where(booted.Contains)) await vm.DisposeAsync();
                await LetGoAsync(sourceVms.Where(v => !booted.Contains(v)), targetBackend as QemuTargetBackend);
                throw;
            }
            // SIGTERM (a service manager) and SIGINT (Ctrl+C) both mean: leave the cluster gracefully, then exit. Registered before
            // "up" is printed: a SIGTERM right after it otherwise took .NET's default path (Akka's exit hook), read as a downing.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            using var onTerm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            using var onInt = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, c => { c.Cancel = true; stop.Cancel(); });
            Console.WriteLine($"node {node.HostId} up at {node.Address} with roles {string.Join(", ", roleList)}" +
                (node.Listener is null ? "" : $"; data plane on {node.Listener.LocalEndPoint}") + (node.MetricsEndpoint is null ? "" : $"; metrics on {node.MetricsEndpoint}"));
            await Task.WhenAny(Task.Delay(Timeout.Infinite, stop.Token), node.System.WhenTerminated);
            if (!stop.IsCancellationRequested)
            {
                // Not asked to stop: the cluster downed this node (or its system died). Exit non-zero so that
                // deploy/vmscatter-node@.service restarts it and it joins again as a new incarnation.
                var reason = CoordinatedShutdown.Get(node.System).ShutdownReason;
                Console.Error.WriteLine($"error: node {node.HostId} was removed from the cluster ({reason?.GetType().Name ?? "actor system stopped"}); exiting for a restart");
                await node.DisposeAsync();
                return ExitCodes.NodeLost;
            }
            Console.WriteLine($"node {node.HostId} leaving the cluster");
            await node.DisposeAsync();
            if (state is { Entries.Count: > 0 }) Console.WriteLine($"{state.Entries.Count} QEMU guest(s) keep running, listed in {state.Path} for this node's next start");
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>
    /// The name this node's state file goes by: its host id as the node will have it (--host-id, vmscatter.node.host-id,
    /// or role-port), or null when that changes with every start (no id, port 0).
    /// </summary>
    private static string? StableHostId(string? hostId, string? configFile, string[] roles, int port)
    {
        if (!string.IsNullOrEmpty(hostId)) return hostId;
        if (NodeConfig.Build(configFile, "").GetString("vmscatter.node.host-id") is { Length: > 0 } configured) return configured;
        return port != 0 ? $"{roles.FirstOrDefault() ?? "node"}-{port}" : null;
    }

    /// <summary>Lets go of guests this start found running (still running, still listed).</summary>
    private static async Task LetGoAsync(IEnumerable<IMigratableVm> found, QemuTargetBackend? backend)
    {
        foreach (var vm in found) await (vm is IDetachableGuest d ? d.DetachAsync() : vm.DisposeAsync());
        if (backend is not null) foreach (var landed in backend.Landed.Values) await landed.DetachAsync();
    }

    /// <summary>id=ID,qmp=SOCKET,ram=FILE,memory=SIZE,machine=ARGS.json[,serial=LOG]</summary>
    private static QemuAdoption ParseAdoption(string text)
    {
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) throw new UserError($"--adopt: '{part}' is not key=value");
            fields[part[..eq]] = part[(eq + 1)..];
        }
        string Need(string key) => fields.TryGetValue(key, out var v) && v.Length > 0 ? v : throw new UserError($"--adopt {text}: {key}= is missing");
        long memory = DemoCommand.Size(Need("memory"), "--adopt memory");
        string machineFile = Need("machine");
        if (!File.Exists(machineFile)) throw new UserError($"--adopt: machine file {machineFile} does not exist");
        QemuMachine machine;
        try { machine = QemuMachine.Parse(File.ReadAllText(machineFile), memory); }
        catch (ArgumentException e) { throw new UserError($"--adopt: {machineFile}: {e.Message}"); }
        var unknown = fields.Keys.Except(["id", "qmp", "ram", "memory", "machine", "serial"]).ToArray();
        if (unknown.Length > 0) throw new UserError($"--adopt: unknown key(s) {string.Join(", ", unknown)}");
        MigrationOptionSet.Id<VmId>(Need("id"), "--adopt id");
        return new QemuAdoption(Need("id"), Need("qmp"), Need("ram"), memory, machine, fields.GetValueOrDefault("serial"));
    }

    /// <summary>An IP address other hosts can reach (not a wildcard), as a flag's value.</summary>
    private static string Address(string text, string option) =>
        System.Net.IPAddress.TryParse(text, out var a) && !a.Equals(System.Net.IPAddress.Any) && !a.Equals(System.Net.IPAddress.IPv6Any)
            ? text : throw new UserError($"{option}: '{text}' is not an IP address other hosts can reach");

    public static string JoinTimeout(int? seconds) => seconds switch
    {
        null => "",
        < 1 => throw new UserError("--join-timeout must be at least 1 second"),
        _ => $"vmscatter.node.join-timeout = {seconds}s",
    };
}
