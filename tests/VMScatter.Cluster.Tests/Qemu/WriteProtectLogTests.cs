using Xunit;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Qemu;
using VMScatter.Qemu.WriteProtect;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>The kernel's log of a QEMU guest's writes (userfaultfd write-protection read by the pagemap scan).</summary>
[Collection("qemu")]
public sealed class WriteProtectLogTests(QemuFixture fixture)
{
    [Fact]
    public async Task The_log_misses_no_write_of_a_running_guest_rehashes_only_what_was_written_and_leaves_nothing_in_qemu()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag) with { DirtyTracking = DirtyTracking.WriteProtect };
        // 1,024 pages a second rewritten within 8 MiB, and the counter loop's own writes.
        var vm = await QemuVm.StartAsync(new QemuGuestSpec("wp", fixture.Image, 256L << 20, WorkloadArguments: "vmscatter.wws_kib=8192 vmscatter.dirty_pages=1024"), settings);
        try
        {
            int qemu = vm.ProcessId;
            vm.StartDirtyLogging();
            Assert.Null(vm.WriteLogUnavailable);
            // QEMU holds no userfaultfd (it lives in this process) and its RAM mapping is write-protect registered.
            Assert.DoesNotContain(OpenFiles(qemu), f => f.Contains("userfaultfd", StringComparison.Ordinal));
            Assert.Contains("uw", RamVmFlags(qemu, vm.RamFilePath));

            var collected = new List<int>();
            for (int round = 0; round < 4; round++)
            {
                long counter = SerialConsole.LastCounter(vm.SerialLogPath);
                await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, counter + 1, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running);
                var dirty = vm.CollectDirtyPages();
                Assert.NotEmpty(dirty);
                collected.Add(vm.LastCollectionPagesHashed);
            }
            // A round hashes what the guest wrote (its 2,048-page working set at most, and the kernel's and init's pages), not 65,536 pages.
            Assert.All(collected, n => Assert.InRange(n, 1, 8192));

            await vm.PauseAsync();
            var final = vm.CollectDirtyPages();
            // Every page's hash, kept only from the pages the log listed, is the paused memory's, read whole here.
            var kept = vm.PausedPageHashes;
            Assert.NotNull(kept);
            int differing = Enumerable.Range(0, vm.PageCount).Count(p => kept[p] != ContentHash.OfPage(Page(vm, p)));
            Assert.Equal(0, differing);
            Assert.StartsWith("write-protect: 5 collections", vm.DirtyTrackingUsed);

            // Let go (a node stopping): the registration ends with this process's descriptor, and the guest runs on.
            await vm.ResumeAsync();
            await vm.DetachAsync();
            Assert.DoesNotContain("uw", RamVmFlags(qemu, vm.RamFilePath));
            long after = SerialConsole.LastCounter(vm.SerialLogPath);
            Assert.True(await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, after + 2, TimeSpan.FromSeconds(60), () => File.Exists($"/proc/{qemu}/status")) > after + 2);
            // It is no longer this node's: ended here as an operator would end it.
            var process = GuestPid.Of(qemu)!;
            process.Kill();
            Assert.True(await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            await vm.DisposeAsync();
            foreach (string f in Directory.EnumerateFiles(settings.RamDirectory)) File.Delete(f);
            foreach (string d in Directory.EnumerateDirectories(settings.RuntimeDirectory)) Directory.Delete(d, true);
        }
        QemuFixture.RemoveDirectories(settings);
    }

    [Fact]
    public async Task Calls_injected_into_qemus_main_loop_give_their_results_and_leave_it_running_as_before()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag);
        var vm = await QemuVm.StartAsync(new QemuGuestSpec("inj", fixture.Image, 128L << 20), settings);
        try
        {
            int qemu = vm.ProcessId;
            for (int i = 0; i < 40; i++)
            {
                // getpid and a close of no descriptor: each call's own result, in QEMU's process.
                var (pid, badClose) = SyscallInjector.Run(qemu, qemu, inj => (inj.Call(39), inj.Call(3, -1)));
                Assert.Equal((qemu, -9L), (pid, badClose)); // -EBADF
                Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{qemu}/status"));
            }
            // Its main loop (the monitor) and its vCPU (the counter) go on: the interrupted polls restarted.
            await vm.PauseAsync();
            Assert.Equal(VmRunState.Paused, vm.State);
            await vm.ResumeAsync();
            long counter = SerialConsole.LastCounter(vm.SerialLogPath);
            Assert.True(await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, counter + 2, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running) > counter + 2);
        }
        finally { await vm.DisposeAsync(); }
        QemuFixture.AssertNothingLeft(settings);
    }

    [Fact]
    public void The_ram_file_is_found_in_a_maps_listing_by_device_and_inode_not_by_path()
    {
        string[] self =
        [
            "7f0000000000-7f0010000000 r--s 00000000 00:1a 4242                       /dev/shm/vm.ram",
            "7f0010000000-7f0010001000 rw-p 00000000 00:00 0 ",
        ];
        Assert.Equal("00:1a 4242", WriteProtectLog.MappingIdentity(self, 0x7f0000001000));
        Assert.Null(WriteProtectLog.MappingIdentity(self, 0x7f0010000000)); // anonymous
        Assert.Null(WriteProtectLog.MappingIdentity(self, 0x6f0000000000));
        string[] qemu =
        [
            "7f1000000000-7f1008000000 rw-s 00000000 00:1a 4242                       /dev/shm/vm.ram (deleted)",
            "7f1008000000-7f1010000000 rw-s 08000000 00:1a 4242                       /dev/shm/vm.ram (deleted)",
            "7f2000000000-7f2010000000 rw-s 00000000 00:1a 4243                       /dev/shm/vm.ram",
            "garbage line",
            "7f3000000000-7f3000001000 rw-s 10000000 00:1a 4242                       /dev/shm/vm.ram",
        ];
        var ranges = WriteProtectLog.MappingsOf(qemu, "00:1a 4242", 65536);
        // The file at the path now (inode 4243) is not the one mapped here; a mapping past the guest's pages is left out.
        Assert.Equal([new(0x7f1000000000, 0x7f1008000000, 0), new(0x7f1008000000, 0x7f1010000000, 0x8000)], ranges);
    }

    [Fact]
    public async Task Nothing_is_run_in_a_process_that_is_not_the_guests_qemu_nor_in_a_child_of_this_one()
    {
        string ramPath = Path.Combine("/dev/shm", $"vmscatter-test-wp-{Guid.NewGuid():N}.ram");
        using var ram = QemuRamFile.Create(ramPath, 1 << 20);
        // A child of this process (as a QEMU a tool in this process started without -daemonize): .NET's reaper would take its stops for its exit.
        using var child = System.Diagnostics.Process.Start("sleep", "60")!;
        try
        {
            var e = Assert.Throws<WriteProtectUnavailableException>(() => WriteProtectLog.Start(child.Id, ram.MappedAt, ram.PageCount));
            Assert.Contains("own child", e.Message);
        }
        finally { child.Kill(); }
        // Not a child, but not a QEMU (the monitor socket's peer could be another program): refused before it is stopped.
        using var launcher = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("setsid", ["-f", "sh", "-c", "echo $$; exec sleep 60"]) { RedirectStandardOutput = true })!;
        int other = int.Parse((await launcher.StandardOutput.ReadLineAsync())!);
        await launcher.WaitForExitAsync();
        try
        {
            var e = Assert.Throws<WriteProtectUnavailableException>(() => WriteProtectLog.Start(other, ram.MappedAt, ram.PageCount));
            Assert.Contains("is not a QEMU", e.Message);
        }
        finally { GuestPid.Of(other)?.Kill(); }
    }

    [Fact]
    public async Task A_ram_file_on_a_tmpfs_with_huge_pages_is_refused_and_one_on_dev_shm_is_not()
    {
        string mount = Directory.CreateTempSubdirectory("vmscatter-huge-").FullName;
        await Run("mount", "-t", "tmpfs", "-o", "huge=always,size=16m", "tmpfs", mount);
        try
        {
            using (var huge = QemuRamFile.Create(Path.Combine(mount, "vm.ram"), 4 << 20))
            {
                string identity = WriteProtectLog.MappingIdentity(File.ReadLines("/proc/self/maps"), (ulong)huge.MappedAt)!;
                Assert.Contains("huge=always", WriteProtectLog.HugePagesPossible(identity));
            }
            using var plain = QemuRamFile.Create(Path.Combine("/dev/shm", $"vmscatter-test-wp-{Guid.NewGuid():N}.ram"), 4 << 20);
            Assert.Null(WriteProtectLog.HugePagesPossible(WriteProtectLog.MappingIdentity(File.ReadLines("/proc/self/maps"), (ulong)plain.MappedAt)!));
        }
        finally
        {
            await Run("umount", mount);
            Directory.Delete(mount);
        }
    }

    private static async Task Run(string file, params string[] args)
    {
        using var p = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        string error = await p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.True(p.ExitCode == 0, $"{file}: {error}");
    }

    /// <summary>
    /// A QEMU started with <c>-sandbox on</c> runs under a seccomp filter that may kill it for a call it does not
    /// allow: nothing is run in it. The same QEMU without the sandbox passes that check (and is refused only further
    /// on, for not mapping the RAM file: <c>-machine none</c> has no RAM).
    /// </summary>
    [Fact]
    public async Task Nothing_is_run_in_a_qemu_started_with_its_seccomp_sandbox()
    {
        using var ram = QemuRamFile.Create(Path.Combine("/dev/shm", $"vmscatter-test-wp-{Guid.NewGuid():N}.ram"), 1 << 20);
        Assert.Equal(0, WriteProtectLog.SeccompMode(Environment.ProcessId));
        Assert.Null(WriteProtectLog.SeccompMode(int.MaxValue));
        foreach (bool sandbox in new[] { true, false })
        {
            string pidFile = Path.Combine(Path.GetTempPath(), $"vmscatter-test-sandbox-{Guid.NewGuid():N}.pid");
            string[] args = ["-machine", "none", "-nodefaults", "-display", "none", "-daemonize", "-pidfile", pidFile, .. sandbox ? new[] { "-sandbox", "on" } : []];
            await Run("qemu-system-x86_64", args);
            int qemu = int.Parse(File.ReadAllText(pidFile).Trim());
            try
            {
                Assert.Equal(sandbox ? 2 : 0, WriteProtectLog.SeccompMode(qemu));
                var e = Assert.Throws<WriteProtectUnavailableException>(() => WriteProtectLog.Start(qemu, ram.MappedAt, ram.PageCount));
                Assert.Contains(sandbox ? "seccomp" : "does not map its RAM file", e.Message);
                Assert.Contains("TracerPid:\t0", File.ReadAllText($"/proc/{qemu}/status"));
            }
            finally
            {
                GuestPid.Of(qemu)?.Kill();
                File.Delete(pidFile);
            }
        }
    }

    private static byte[] Page(QemuVm vm, int index)
    {
        var page = new byte[VMScatter.Domain.Pages.Page.Size];
        vm.ReadPage(index, page);
        return page;
    }

    internal static string[] OpenFiles(int pid) =>
        Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Select(f => { try { return new FileInfo(f).LinkTarget ?? ""; } catch (IOException) { return ""; } }).ToArray();

    /// <summary>The VmFlags of QEMU's mapping of the RAM file, from /proc/PID/smaps.</summary>
    internal static string[] RamVmFlags(int pid, string ramFile)
    {
        bool inRam = false;
        foreach (string line in File.ReadLines($"/proc/{pid}/smaps"))
        {
            if (System.Text.RegularExpressions.Regex.IsMatch(line, "^[0-9a-f]+-[0-9a-f]+ "))
                inRam = line.Contains(ramFile, StringComparison.Ordinal);
            else if (inRam && line.StartsWith("VmFlags:", StringComparison.Ordinal))
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        throw new InvalidOperationException($"QEMU {pid} does not map {ramFile}");
    }
}
