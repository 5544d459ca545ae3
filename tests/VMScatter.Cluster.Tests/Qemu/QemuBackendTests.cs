using Xunit;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Qemu;
using VMScatter.Qemu.Migration;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>The qemu backend alone (no cluster): a live guest copied page by page, paused, its state moved, continued elsewhere.</summary>
[Collection("qemu")]
public sealed class QemuBackendTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20;

    [Theory]
    [InlineData(DirtyTracking.Rehash)]
    [InlineData(DirtyTracking.QemuStream)]
    [InlineData(DirtyTracking.WriteProtect)]
    public async Task A_guest_copied_by_dirty_rounds_continues_on_the_target_with_the_same_memory(DirtyTracking tracking)
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag) with { DirtyTracking = tracking };
        var vm = await QemuVm.StartAsync(new QemuGuestSpec("g1", fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=2048 vmscatter.dirty_pages=128"), settings);
        var backend = new QemuTargetBackend("t1", settings);
        var target = backend.AllocateMemory(vm.Description);
        ILandedVm? landed = null;
        try
        {
            var page = new byte[Page.Size];
            void Copy(IEnumerable<int> pages) { foreach (int p in pages) { vm.ReadPage(p, page); target.WritePage(p, page); } }

            vm.StartDirtyLogging();
            Copy(Enumerable.Range(0, vm.PageCount));
            // Let the guest run a little after the copy (on a busy host a TCG guest may not have been scheduled during it).
            await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, SerialConsole.LastCounter(vm.SerialLogPath) + 2, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running);
            var dirty = vm.CollectDirtyPages();
            // Collected from a running guest: its hashes are no proof of the memory at any pause.
            Assert.Null(vm.PausedPageHashes);
            // The workload rewrites 128 pages a second and the counter loop writes too: a live guest dirties pages.
            Assert.NotEmpty(dirty);
            Copy(dirty);
            if (tracking == DirtyTracking.QemuStream)
            {
                // That first collection of a run re-hashed; the next starts QEMU's migration and reads its bulk pass.
                Assert.Equal(0, vm.StreamRecords);
                Copy(vm.CollectDirtyPages());
                Assert.True(vm.StreamRecords >= vm.PageCount, $"{vm.StreamRecords} records");
            }
            await vm.PauseAsync();
            Assert.Equal(VmRunState.Paused, vm.State);
            long counterAtPause = SerialConsole.LastCounter(vm.SerialLogPath);
            var final = vm.CollectDirtyPages();
            Copy(final);
            if (tracking == DirtyTracking.QemuStream)
            {
                // QEMU's bulk pass carried every page once; after it, only what the guest wrote came again (not a second pass).
                Assert.InRange(vm.StreamRecords, vm.PageCount, vm.PageCount + vm.PageCount / 4);
                Assert.InRange(final.Length, 0, vm.PageCount / 8);
            }
            if (tracking == DirtyTracking.WriteProtect)
                Assert.StartsWith("write-protect: 2 collections", vm.DirtyTrackingUsed);
            var state = await vm.CaptureDeviceStateAsync();
            // x-ignore-shared: the stream is device state and ROMs, not the 128 MiB of RAM.
            Assert.InRange(state.Length, 1, 4 << 20);

            string sourceDigest = MemoryDigest.Compute(vm, state);
            Assert.Equal(sourceDigest, MemoryDigest.Compute(target, state));
            // The collection after the pause hashed every page as the digest does: the source's digest needs no second pass.
            Assert.Equal(sourceDigest, MemoryDigest.FromPageHashes(vm.PausedPageHashes, state));

            // Re-hashed: the target learns the device state before the grant (as a target host does on the round's end) and
            // its QEMU loads it then, staying paused; the start only sends cont. Streamed: the start loads it itself.
            if (tracking == DirtyTracking.Rehash) backend.Arrived(vm.Description, target, state);
            landed = await backend.ResumeAsync(vm.Description, target, state, CancellationToken.None);
            var onTarget = (QemuLandedVm)landed;
            Assert.Equal(VmRunState.Running, landed.State);
            string steps = onTarget.LastSteps?.ToString() ?? "";
            Assert.True(tracking == DirtyTracking.Rehash ? steps.Contains("loaded before the grant") && !steps.Contains("stream ") : steps.Contains("not prepared") && steps.Contains("loaded "), steps);
            // QEMU's RESUME event, ahead of cont's reply, said it runs: no query-status round trip after it.
            Assert.True(steps.Contains("RESUME seen") && !steps.Contains("query-status"), steps);
            // The guest's own counter goes on past what it printed on the source: it continued, it did not reboot.
            long counter = await SerialConsole.WaitForCounterAboveAsync(onTarget.SerialLogPath, counterAtPause + 2, TimeSpan.FromSeconds(60), () => landed.State == VmRunState.Running);
            Assert.DoesNotContain(SerialConsole.ReadyMarker, File.ReadAllText(onTarget.SerialLogPath));
            Assert.True(counter > counterAtPause + 2 && SerialConsole.LastCounter(onTarget.SerialLogPath) >= counter, $"{counter} after {counterAtPause}");
            Assert.Single(backend.Landed);

            await vm.StopAsync();
            Assert.Equal(VmRunState.Stopped, vm.State);
        }
        finally
        {
            await vm.DisposeAsync();
            if (landed is not null) await landed.DisposeAsync();
            else await target.DisposeAsync();
        }
        var (files, processes) = QemuFixture.Leftovers(settings);
        Assert.Empty(files);
        Assert.Empty(processes);
        Assert.Empty(backend.Landed);
        QemuFixture.RemoveDirectories(settings);
    }

    [Fact]
    public async Task Qemus_own_stream_carries_each_ram_page_once_as_the_ram_file_holds_it_and_a_cut_device_state_is_refused_before_qemu_loads_it()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag);
        var vm = await QemuVm.StartAsync(new QemuGuestSpec("g2", fixture.Image, Memory), settings);
        var backend = new QemuTargetBackend("t2", settings);
        IWritableGuestMemory? target = null;
        try
        {
            await vm.PauseAsync();
            long counterAtPause = SerialConsole.LastCounter(vm.SerialLogPath);

            // QEMU's own migration of the paused guest, RAM included, into a socket of ours: every page of its RAM
            // block once (a page or a fill record), with the bytes its RAM file holds.
            // The pause turned on x-ignore-shared for the device-state capture: off again, so QEMU sends the RAM too.
            await vm.Process.RunAsync("test migration", "migrate-set-capabilities", new JsonObject
            {
                ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = false }),
            });
            var stream = await MigrateIntoMemoryAsync(vm.Process);
            var records = new int[vm.PageCount];
            int differing = 0;
            var expected = new byte[4096];
            var summary = MigrationStream.Parse(stream, r =>
            {
                if (r.Block != "mem0") return;
                int page = (int)(r.Offset / 4096);
                records[page]++;
                vm.ReadPage(page, expected);
                bool same = r.IsFill ? expected.AsSpan().IndexOfAnyExcept(r.Fill) < 0 : r.Bytes.SequenceEqual(expected);
                if (!same) differing++;
            });
            Assert.Equal("pc-i440fx-7.2", summary.MachineType);
            Assert.False(summary.IgnoresSharedRam);
            Assert.Equal((ulong)Memory, summary.Block("mem0")!.UsedLength);
            Assert.All(records, n => Assert.Equal(1, n));
            Assert.Equal(0, differing);
            Assert.True(summary.PageRecords > 1000 && summary.FillRecords > 1000, $"{summary.PageRecords} pages, {summary.FillRecords} fills");
            // Read as it arrives (never held whole), the same stream gives the same records with the same bytes.
            var live = new int[vm.PageCount];
            int liveDiffering = 0;
            var reader = new RamRecordReader(new MemoryStream(stream), "mem0", (ulong)Memory, (page, bytes, fill, isFill) =>
            {
                live[page]++;
                vm.ReadPage(page, expected);
                if (!(isFill ? expected.AsSpan().IndexOfAnyExcept(fill) < 0 : bytes.SequenceEqual(expected))) liveDiffering++;
            });
            await reader.RunAsync(CancellationToken.None);
            Assert.Equal(records, live);
            Assert.Equal(0, liveDiffering);
            Assert.Equal(stream.Length, reader.Bytes);

            // QEMU migrates a guest paused by a completed migration only once it ran again.
            await vm.ResumeAsync();
            counterAtPause = await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, counterAtPause + 1, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running);
            await vm.PauseAsync();

            // The device state as a source captures it passes the target's check; cut short, it is refused before the
            // target's QEMU reads a byte, that QEMU is gone, and the guest goes on at the source.
            var state = await vm.CaptureDeviceStateAsync();
            Assert.Equal(0, DeviceStateCheck.Check(state, "mem0", Memory).RecordsOf("mem0"));
            target = backend.AllocateMemory(vm.Description);
            var refused = await Assert.ThrowsAsync<QemuStepException>(() => backend.ResumeAsync(vm.Description, target, state[..^40], CancellationToken.None));
            Assert.Contains("device state refused: no device description", refused.Message);
            Assert.Empty(backend.Landed);

            // Loaded before any grant (the final round is in), the device state is the only one the start takes: another
            // fails the start. One loaded and never granted goes with its arrival. Neither leaves a QEMU (checked below).
            var loaded = backend.AllocateMemory(vm.Description);
            backend.Arrived(vm.Description, loaded, state);
            var other = await Assert.ThrowsAsync<QemuStepException>(() => backend.ResumeAsync(vm.Description, loaded, state[..^40], CancellationToken.None));
            Assert.Contains("QEMU loaded another device state before the grant", other.Message);
            await loaded.DisposeAsync();
            var neverGranted = backend.AllocateMemory(vm.Description);
            backend.Arrived(vm.Description, neverGranted, state);
            await neverGranted.DisposeAsync();
            Assert.Empty(backend.Landed);
            await vm.ResumeAsync();
            long counter = await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, counterAtPause + 2, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running);
            Assert.True(counter > counterAtPause + 2);
        }
        finally
        {
            if (target is not null) await target.DisposeAsync();
            await vm.DisposeAsync();
        }
        QemuFixture.AssertNothingLeft(settings);
    }

    /// <summary>QEMU's migration into a loopback socket this test reads to its end (a paused guest: it stays paused).</summary>
    private static async Task<byte[]> MigrateIntoMemoryAsync(QemuProcess qemu)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(1);
        try
        {
            var accepted = listener.AcceptTcpClientAsync();
            await qemu.RunAsync("test migration", "migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}" });
            using var client = await accepted;
            using var buffer = new MemoryStream();
            await client.GetStream().CopyToAsync(buffer);
            await QemuVm.WaitForMigrationAsync(qemu, "test migration", TimeSpan.FromSeconds(60), CancellationToken.None);
            return buffer.ToArray();
        }
        finally { listener.Stop(); }
    }
}
