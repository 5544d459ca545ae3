using Xunit;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using VMScatter.Qemu;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>The qemu backend alone (no cluster): a live guest copied page by page, paused, its state moved, continued elsewhere.</summary>
[Collection("qemu")]
public sealed class QemuBackendTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20;

    [Fact]
    public async Task A_guest_copied_by_dirty_rounds_continues_on_the_target_with_the_same_memory()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag);
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
            await vm.PauseAsync();
            Assert.Equal(VmRunState.Paused, vm.State);
            long counterAtPause = SerialConsole.LastCounter(vm.SerialLogPath);
            Copy(vm.CollectDirtyPages());
            var state = await vm.CaptureDeviceStateAsync();
            // x-ignore-shared: the stream is device state and ROMs, not the 128 MiB of RAM.
            Assert.InRange(state.Length, 1, 4 << 20);

            string sourceDigest = MemoryDigest.Compute(vm, state);
            Assert.Equal(sourceDigest, MemoryDigest.Compute(target, state));
            // The collection after the pause hashed every page as the digest does: the source's digest needs no second pass.
            Assert.Equal(sourceDigest, MemoryDigest.FromPageHashes(vm.PausedPageHashes, state));

            landed = await backend.ResumeAsync(vm.Description, target, state, CancellationToken.None);
            var onTarget = (QemuLandedVm)landed;
            Assert.Equal(VmRunState.Running, landed.State);
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
}
