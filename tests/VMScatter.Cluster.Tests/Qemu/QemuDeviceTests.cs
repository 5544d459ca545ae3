using System.Globalization;
using System.Text;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>
/// Guests with a virtio-blk disk on shared storage and a virtio-net NIC (user networking) move, and their devices
/// work at the target; forged device descriptions are refused by the target and the guest stays on its source.
/// Both "hosts" are on this machine: the storage is one temp directory both configure under the same name.
/// </summary>
[Collection("qemu")]
public sealed class QemuDeviceTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20; // 64 MiB guests print nothing here: the kernel does not come up
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private static (QemuSettings Settings, string Storage) SettingsWithStorage(string tag)
    {
        string storage = Directory.CreateTempSubdirectory("vmscatter-storage-").FullName;
        var settings = QemuFixture.SettingsFor(tag) with { Devices = new QemuHostDevices(new Dictionary<string, string> { ["shared"] = storage }, ["user"]) };
        return (settings, storage);
    }

    /// <summary>The disk counter the guest wrote last: sector 0 holds "vmscatter-disk N" (0 if none yet).</summary>
    private static long DiskCounter(string file)
    {
        var sector = new byte[512];
        using (var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            stream.ReadExactly(sector);
            if (System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(sector) == 0x514649FB)
            {
                // qcow2: guest offset 0 lives in the cluster L1[0] -> L2[0] points to (nothing yet: not allocated).
                const ulong OffsetMask = 0x00fffffffffffe00;
                ulong l1 = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(sector.AsSpan(40));
                ulong Entry(ulong at)
                {
                    var e = new byte[8];
                    stream.Position = (long)at;
                    stream.ReadExactly(e);
                    return System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(e) & OffsetMask;
                }
                ulong l2 = Entry(l1);
                ulong data = l2 == 0 ? 0 : Entry(l2);
                if (data == 0) return 0;
                stream.Position = (long)data;
                stream.ReadExactly(sector);
            }
        }
        string text = Encoding.ASCII.GetString(sector).TrimEnd('\0').Trim();
        return text.StartsWith("vmscatter-disk ", StringComparison.Ordinal) && long.TryParse(text["vmscatter-disk ".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? n : 0;
    }

    private static async Task<long> WaitForDiskCounterAbove(string file, long value)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (true)
        {
            long n = DiskCounter(file);
            if (n > value) return n;
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"the disk counter in {file} stayed at {n}, not above {value}");
            await Task.Delay(100);
        }
    }

    /// <summary>Migrates <paramref name="guests"/> to one target and runs <paramref name="check"/> while the cluster still runs (it quits its guests when it ends).</summary>
    private static async Task MigrateAsync(IReadOnlyList<IMigratableVm> guests, Func<string, ITargetBackend> backendFor, Func<MigrationReport, Task> check)
    {
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = guests, Targets = 1, TargetCapacityBytes = guests.Count * Memory, JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = backendFor,
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 1, TimeSpan.FromSeconds(30));
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()), _ => { }, TimeSpan.FromSeconds(120));
        await check(outcome.Report!);
    }

    private static void AssertNothingLeft(QemuSettings settings, string storage)
    {
        QemuFixture.AssertNothingLeft(settings);
        Directory.Delete(storage, recursive: true);
    }

    [Fact]
    public void Each_host_reads_its_shared_storage_and_netdev_kinds_from_its_configuration()
    {
        var defaults = QemuConfig.From(NodeConfig.Build(null, "")).Settings.Devices;
        Assert.Empty(defaults.SharedStorage);
        Assert.Equal(["user"], defaults.NetdevKinds);

        var configured = QemuConfig.From(NodeConfig.Build(null, """
            vmscatter.qemu.shared-storage { images = "/srv/images/", nfs = "/mnt/nfs" }
            vmscatter.qemu.netdev-kinds = []
            """)).Settings.Devices;
        Assert.Equal("/srv/images", configured.SharedStorage["images"]);
        Assert.Equal("/mnt/nfs", configured.SharedStorage["nfs"]);
        Assert.Empty(configured.NetdevKinds);

        var tap = Assert.Throws<Akka.Configuration.ConfigurationException>(() => QemuConfig.From(NodeConfig.Build(null, "vmscatter.qemu.netdev-kinds = [user, tap]")));
        Assert.Contains("netdev kind 'tap' is not supported", tap.Message);
        var relative = Assert.Throws<Akka.Configuration.ConfigurationException>(() => QemuConfig.From(NodeConfig.Build(null, "vmscatter.qemu.shared-storage { images = \"images\" }")));
        Assert.Contains("must be an absolute path", relative.Message);
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public async Task A_guest_with_a_disk_on_shared_storage_moves_and_its_disk_writes_go_on_at_the_target(string format)
    {
        var (settings, storage) = SettingsWithStorage(Guid.NewGuid().ToString("N")[..8]);
        string image = Path.Combine(storage, $"disk-guest.{format}");
        if (format == "raw") File.WriteAllBytes(image, new byte[1 << 20]);
        else
        {
            using var create = System.Diagnostics.Process.Start("qemu-img", ["create", "-q", "-f", "qcow2", image, "1M"])!; // test.sh installs qemu-utils
            await create.WaitForExitAsync();
            Assert.Equal(0, create.ExitCode);
        }
        var devices = new QemuDevices([new QemuDisk("disk0", "shared", Path.GetFileName(image), format)], []);
        var guest = await QemuVm.StartAsync(new QemuGuestSpec("disk-guest", fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=1024 vmscatter.dirty_pages=16 vmscatter.disk=1") { Devices = devices }, settings);
        var backend = new QemuTargetBackend("target-1", settings);
        try
        {
            long before = await WaitForDiskCounterAbove(image, 2); // the guest writes its disk on the source
            await MigrateAsync([guest], _ => backend, async report =>
            {
                Assert.True(report.Verified, report.Error);
                Assert.Equal(VmRunState.Stopped, guest.State);

                var landed = backend.Landed[new VmId("disk-guest")];
                long atHandover = guest.CounterAtPause; // the disk holds this tick's value or the one before
                Assert.True(atHandover >= before, $"{atHandover} < {before}");
                long serial = await SerialConsole.WaitForCounterAboveAsync(landed.SerialLogPath, atHandover + 2, Deadline, () => landed.State == VmRunState.Running);
                long disk = await WaitForDiskCounterAbove(image, atHandover + 2);
                Assert.DoesNotContain(SerialConsole.ReadyMarker, File.ReadAllText(landed.SerialLogPath)); // not rebooted
                Assert.DoesNotContain("vmscatter-error", File.ReadAllText(landed.SerialLogPath));
                Assert.True(disk > atHandover && serial > atHandover, $"disk {disk}, serial {serial}, at handover {atHandover}");
            });
        }
        finally { await guest.DisposeAsync(); }
        Assert.True(File.Exists(image)); // the shared image is its owner's: nobody removes it
        AssertNothingLeft(settings, storage);
    }

    [Fact]
    public async Task A_guest_with_a_user_networking_nic_moves_and_its_network_counter_goes_on_at_the_target()
    {
        var (settings, storage) = SettingsWithStorage(Guid.NewGuid().ToString("N")[..8]);
        var devices = new QemuDevices([], [new QemuNic("net0", "52:54:00:12:34:56")]);
        var guest = await QemuVm.StartAsync(new QemuGuestSpec("net-guest", fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=1024 vmscatter.dirty_pages=16 vmscatter.net=1") { Devices = devices }, settings);
        var backend = new QemuTargetBackend("target-1", settings);
        try
        {
            // The NIC works on the source: pings of the slirp gateway are answered.
            long before = await SerialConsole.WaitForValueAboveAsync(guest.SerialLogPath, SerialConsole.NetPrefix, 2, Deadline, () => !guest.Process.HasExited);
            await MigrateAsync([guest], _ => backend, async report =>
            {
                Assert.True(report.Verified, report.Error);
                var landed = backend.Landed[new VmId("net-guest")];
                await SerialConsole.WaitForCounterAboveAsync(landed.SerialLogPath, guest.CounterAtPause + 2, Deadline, () => landed.State == VmRunState.Running);
                // At the target the same counter goes on (it lives in guest RAM), three more answers at least.
                long first = await SerialConsole.WaitForValueAboveAsync(landed.SerialLogPath, SerialConsole.NetPrefix, before, Deadline, () => landed.State == VmRunState.Running);
                long later = await SerialConsole.WaitForValueAboveAsync(landed.SerialLogPath, SerialConsole.NetPrefix, first + 2, Deadline, () => landed.State == VmRunState.Running);
                var onTarget = SerialConsole.Values(landed.SerialLogPath, SerialConsole.NetPrefix);
                Assert.True(onTarget.Zip(onTarget.Skip(1)).All(p => p.Item2 == p.Item1 + 1), string.Join(",", onTarget));
                Assert.True(onTarget[0] > before && later >= first + 3, $"source {before}, target {string.Join(",", onTarget)}");
                Assert.DoesNotContain(SerialConsole.ReadyMarker, File.ReadAllText(landed.SerialLogPath));
            });
        }
        finally { await guest.DisposeAsync(); }
        AssertNothingLeft(settings, storage);
    }

    [Fact]
    public async Task A_guest_started_by_hand_with_machine_memory_backend_a_disk_and_a_nic_is_adopted_and_moves()
    {
        var (settings, storage) = SettingsWithStorage(Guid.NewGuid().ToString("N")[..8]);
        string foreign = Directory.CreateTempSubdirectory("vmscatter-foreign-").FullName;
        string image = Path.Combine(storage, "adopted.raw");
        File.WriteAllBytes(image, new byte[1 << 20]);
        File.WriteAllBytes(Path.Combine(storage, "other.raw"), new byte[1 << 20]);
        string kernelCommandLine = new QemuGuestSpec("x", fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=1024 vmscatter.dirty_pages=16 vmscatter.disk=1 vmscatter.net=1").KernelCommandLine;
        string[] machineArguments =
        [
            "-machine", "pc,memory-backend=mem0", "-accel", "tcg", "-cpu", "qemu64", "-m", "128M", "-smp", "1", "-nodefaults", "-no-user-config",
            "-kernel", fixture.Image.Kernel, "-initrd", fixture.Image.Initramfs, "-append", kernelCommandLine,
        ];
        var devices = new QemuDevices([new QemuDisk("disk0", "shared", "adopted.raw")], [new QemuNic("net0", "52:54:00:aa:bb:01")]);
        // As an operator starts it: shared RAM through -machine ...,memory-backend=, the disk and NIC in the order the description lists them.
        var psi = new System.Diagnostics.ProcessStartInfo("qemu-system-x86_64") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in machineArguments.Concat([
                     "-object", $"memory-backend-file,id=mem0,size={Memory},mem-path={foreign}/ram,share=on",
                     "-blockdev", $"driver=file,node-name=f0,filename={image}", "-blockdev", "driver=raw,node-name=d0,file=f0", "-device", "virtio-blk-pci,drive=d0,id=disk0",
                     "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:01,id=net0",
                     "-display", "none", "-chardev", $"file,id=s0,path={foreign}/serial", "-serial", "chardev:s0", "-qmp", $"unix:{foreign}/qmp,server=on,wait=off"]))
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        // The operator's machine file: the options it was started with (host-side ones left out) and its devices.
        string machineFile = System.Text.Json.JsonSerializer.Serialize(new { Arguments = machineArguments, MemoryBackend = "mem0", Devices = devices });
        var machine = QemuMachine.Parse(machineFile, Memory);
        var adoption = new QemuAdoption("adopted-dev", $"{foreign}/qmp", $"{foreign}/ram", Memory, machine, $"{foreign}/serial");
        var backend = new QemuTargetBackend("target-1", settings);
        try
        {
            await SerialConsole.WaitForValueAboveAsync(adoption.SerialLog!, SerialConsole.NetPrefix, 1, TimeSpan.FromSeconds(120), () => !process.HasExited);

            // Described with a disk it does not have open: refused, naming the option, and left alone.
            var wrong = await Assert.ThrowsAsync<QemuStepException>(() => QemuVm.AdoptAsync(adoption with
            {
                Machine = machine with { Devices = devices with { Disks = [new QemuDisk("disk0", "shared", "other.raw")] } },
            }, settings));
            Assert.Equal(("adopted-dev", "adopt"), (wrong.GuestId, wrong.Step));
            Assert.Contains($"disk disk0: the guest's device has '{image}' open", wrong.Message);
            var wrongMac = await Assert.ThrowsAsync<QemuStepException>(() => QemuVm.AdoptAsync(adoption with
            {
                Machine = machine with { Devices = devices with { Nics = [new QemuNic("net0", "52:54:00:aa:bb:02")] } },
            }, settings));
            Assert.Contains("NIC net0: the guest's MAC is '52:54:00:aa:bb:01'", wrongMac.Message);
            Assert.False(process.HasExited);

            var guest = await QemuVm.AdoptAsync(adoption, settings);
            long netBefore = SerialConsole.LastValue(adoption.SerialLog!, SerialConsole.NetPrefix);
            await MigrateAsync([guest], _ => backend, async report =>
            {
                Assert.True(report.Verified, report.Error);
                var landed = backend.Landed[new VmId("adopted-dev")];
                long atHandover = guest.CounterAtPause;
                long disk = await WaitForDiskCounterAbove(image, atHandover + 2);
                long net = await SerialConsole.WaitForValueAboveAsync(landed.SerialLogPath, SerialConsole.NetPrefix, netBefore + 2, Deadline, () => landed.State == VmRunState.Running);
                Assert.True(atHandover > 0 && disk > atHandover && net > netBefore, $"disk {disk} after {atHandover}, net {net} after {netBefore}");
                await process.WaitForExitAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token); // the adopted source copy was quit
            });
        }
        finally
        {
            if (!process.HasExited) process.Kill();
            await process.WaitForExitAsync();
            Directory.Delete(foreign, recursive: true);
        }
        AssertNothingLeft(settings, storage);
    }

    /// <summary>A real guest sent with a forged description (what a hostile or misconfigured peer could send).</summary>
    private sealed class ForgedVm(QemuVm inner, VmDescription forged) : IMigratableVm, IDetachableGuest
    {
        public QemuVm Inner => inner;
        public VmDescription Description => forged;
        public VmRunState State => inner.State;
        public int PageCount => inner.PageCount;
        public void ReadPage(int index, Span<byte> destination) => inner.ReadPage(index, destination);
        public void StartDirtyLogging() => inner.StartDirtyLogging();
        public int[] CollectDirtyPages() => inner.CollectDirtyPages();
        public Task PauseAsync(CancellationToken cancellationToken = default) => inner.PauseAsync(cancellationToken);
        public Task ResumeAsync(CancellationToken cancellationToken = default) => inner.ResumeAsync(cancellationToken);
        public Task StopAsync(CancellationToken cancellationToken = default) => inner.StopAsync(cancellationToken);
        public Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default) => inner.CaptureDeviceStateAsync(cancellationToken);
        public ValueTask DetachAsync() => inner.DetachAsync();
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    [Fact]
    public async Task Forged_device_descriptions_are_refused_by_the_target_and_the_guests_stay_running_on_the_source()
    {
        var (settings, storage) = SettingsWithStorage(Guid.NewGuid().ToString("N")[..8]);
        string secret = Path.Combine(Path.GetDirectoryName(storage)!, $"vmscatter-secret-{Guid.NewGuid():N}");
        File.WriteAllText(secret, "not for guests");
        File.WriteAllBytes(Path.Combine(storage, "ok.raw"), new byte[1 << 20]);
        var forgeries = new (string Id, QemuDevices Devices, string Reason)[]
        {
            ("forged-storage", new([new QemuDisk("disk0", "other", "ok.raw")], []), "storage 'other' is not configured on this host"),
            ("forged-escape", new([new QemuDisk("disk0", "shared", $"../{Path.GetFileName(secret)}")], []), "leaves its storage directory"),
            ("forged-netdev", new([], [new QemuNic("net0", "52:54:00:12:34:56", "tap")]), "netdev kind 'tap' is not allowed on this host"),
        };
        // Each guest is described to the target with a forged device list. The first really has a disk (ok.raw on
        // "shared"): refused, it must get its disk back on the source (QEMU let go of it when its state was captured).
        var guests = await Task.WhenAll(forgeries.Select(f => QemuVm.StartAsync(f.Id == "forged-storage"
            ? new QemuGuestSpec(f.Id, fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=256 vmscatter.dirty_pages=8 vmscatter.disk=1") { Devices = new([new QemuDisk("disk0", "shared", "ok.raw")], []) }
            : new QemuGuestSpec(f.Id, fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=256 vmscatter.dirty_pages=8"), settings)));
        var forged = guests.Zip(forgeries, (g, f) =>
        {
            var machine = QemuMachine.Parse(g.Description.MachineArguments, Memory) with { Devices = f.Devices };
            return new ForgedVm(g, g.Description with { MachineArguments = machine.Serialize() });
        }).ToArray();
        var backend = new QemuTargetBackend("target-1", settings);
        try
        {
            await MigrateAsync(forged, _ => backend, async report =>
            {
                Assert.False(report.Verified);
                foreach (var (f, g) in forgeries.Zip(guests))
                {
                    var vm = report.PerVm.Single(v => v.Id == f.Id);
                    Assert.False(vm.HandedOver);
                    Assert.Contains($"guest {f.Id}: check machine arguments failed", vm.Error);
                    Assert.Contains(f.Reason, vm.Error);
                    // Still running on the source, and counting on past its pause.
                    Assert.Equal(VmRunState.Running, g.State);
                    await SerialConsole.WaitForCounterAboveAsync(g.SerialLogPath, g.CounterAtPause + 2, Deadline, () => !g.Process.HasExited);
                }
                Assert.Empty(backend.Landed);
                Assert.Equal("not for guests", File.ReadAllText(secret));
                long disk = await WaitForDiskCounterAbove(Path.Combine(storage, "ok.raw"), guests[0].CounterAtPause + 2);
                Assert.True(disk > guests[0].CounterAtPause, $"{disk}");
            });
        }
        finally
        {
            foreach (var g in guests) await g.DisposeAsync();
            File.Delete(secret);
        }
        AssertNothingLeft(settings, storage);
    }
}
