using System.Diagnostics;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Qemu;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>Guests started by someone else, taken over by their monitor socket and RAM file.</summary>
[Collection("qemu")]
public sealed class QemuAdoptionTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20;

    /// <summary>A QEMU started the way an operator would, outside VMScatter: a daemon with its own socket, RAM file and serial log.</summary>
    private static async Task<(GuestPid Process, QemuAdoption Adoption)> StartForeignGuest(string id, GuestImage image, string dir)
    {
        var machine = QemuMachine.ForImage(image, Memory, 1, "tcg", "qemu64", new QemuGuestSpec(id, image, Memory).KernelCommandLine);
        var adoption = new QemuAdoption(id, Path.Combine(dir, $"{id}.qmp"), Path.Combine(dir, $"{id}.ram"), Memory, machine, Path.Combine(dir, $"{id}.serial"));
        var psi = new ProcessStartInfo("qemu-system-x86_64") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in machine.Arguments.Concat([
                     "-object", $"memory-backend-file,id=ram0,size={Memory},mem-path={adoption.RamFile},share=on", "-machine", "memory-backend=ram0",
                     "-display", "none", "-chardev", $"file,id=s0,path={adoption.SerialLog}", "-serial", "chardev:s0",
                     "-qmp", $"unix:{adoption.QmpSocket},server=on,wait=off", "-daemonize", "-pidfile", Path.Combine(dir, $"{id}.pid")]))
            psi.ArgumentList.Add(a);
        using var launcher = Process.Start(psi)!;
        await launcher.WaitForExitAsync();
        Assert.Equal(0, launcher.ExitCode);
        return (GuestPid.Of(int.Parse(File.ReadAllText(Path.Combine(dir, $"{id}.pid")).Trim()))!, adoption);
    }

    [Fact]
    public async Task An_adopted_guest_is_migrated_and_one_merely_let_go_keeps_running()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        string foreign = Directory.CreateTempSubdirectory("vmscatter-foreign-").FullName;
        var (movingProcess, moving) = await StartForeignGuest("adopted-1", fixture.Image, foreign);
        var (stayingProcess, staying) = await StartForeignGuest("adopted-2", fixture.Image, foreign);
        try
        {
            foreach (var a in new[] { moving, staying })
                await SerialConsole.WaitForLineAsync(a.SerialLog!, l => l.StartsWith(SerialConsole.ReadyMarker, StringComparison.Ordinal), TimeSpan.FromSeconds(120), () => true);

            // Not a shared RAM file of that size: refused, naming the guest and the step, and the guest is left alone.
            var wrongSize = await Assert.ThrowsAsync<QemuStepException>(() => QemuVm.AdoptAsync(staying with { MemoryBytes = 2 * Memory }, settings));
            Assert.Equal(("adopted-2", "adopt"), (wrongSize.GuestId, wrongSize.Step));
            Assert.Contains("not a shared memory backend", wrongSize.Message);

            // Adopted, then let go without a migration: it is still running, and still counting.
            var letGo = await QemuVm.AdoptAsync(staying, settings);
            Assert.Equal(VmRunState.Running, letGo.State);
            await letGo.DisposeAsync();
            Assert.True(stayingProcess.IsAlive);
            await SerialConsole.WaitForCounterAboveAsync(staying.SerialLog!, SerialConsole.LastCounter(staying.SerialLog!) + 1, TimeSpan.FromSeconds(30), () => stayingProcess.IsAlive);

            var guest = await QemuVm.AdoptAsync(moving, settings);
            var backend = new QemuTargetBackend("target-1", settings);
            await using (var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = [guest], Targets = 1, TargetCapacityBytes = Memory, JournalConnectionString = TestConfig.TempJournal(),
                TargetBackendFor = _ => backend,
            }))
            {
                await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 1, TimeSpan.FromSeconds(30));
                var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                    new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()), _ => { }, TimeSpan.FromSeconds(120));
                Assert.True(outcome.Report!.Verified, outcome.Report.Error);
                // Its QEMU, known by the monitor socket's peer, has its writes logged by the kernel as this node's own do.
                Assert.StartsWith("write-protect: ", outcome.Report.PerVm.Single().DirtyTracking);
                var landed = backend.Landed[V("adopted-1")];
                long counter = await SerialConsole.WaitForCounterAboveAsync(landed.SerialLogPath, guest.CounterAtPause + 2, TimeSpan.FromSeconds(60), () => landed.State == VmRunState.Running);
                Assert.True(counter > guest.CounterAtPause && guest.CounterAtPause > 0, $"{counter} after {guest.CounterAtPause}");
                // The adopted source copy was quit after the handover (its files are its owner's and stay).
                Assert.True(await movingProcess.WaitForExitAsync(TimeSpan.FromSeconds(30)));
                Assert.True(File.Exists(moving.RamFile));
            }
        }
        finally
        {
            foreach (var p in new[] { movingProcess, stayingProcess }) { p.Kill(); await p.WaitForExitAsync(TimeSpan.FromSeconds(30)); }
            Directory.Delete(foreign, recursive: true);
        }
        QemuFixture.AssertNothingLeft(settings);
    }
}
