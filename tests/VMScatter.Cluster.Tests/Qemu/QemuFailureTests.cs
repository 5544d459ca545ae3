using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Qemu;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>QEMU missing, refusing a command or crashing: a clear error naming the guest and the step; the source guest keeps running.</summary>
[Collection("qemu")]
public sealed class QemuFailureTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20;

    private static Task<long> WaitForCounterAbove(string serialLog, long value, Func<bool> alive) =>
        SerialConsole.WaitForCounterAboveAsync(serialLog, value, TimeSpan.FromSeconds(60), alive);

    [Fact]
    public async Task Missing_refusing_or_crashed_qemu_fails_with_the_guest_and_step_named()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);

        var missing = await Assert.ThrowsAsync<QemuStepException>(() =>
            QemuVm.StartAsync(new QemuGuestSpec("g-missing", fixture.Image, Memory), settings with { Binary = "/nonexistent/qemu-system-x86_64" }));
        Assert.Equal(("g-missing", "start QEMU"), (missing.GuestId, missing.Step));
        Assert.Contains("apt-get install qemu-system-x86", missing.Message);

        var vm = await QemuVm.StartAsync(new QemuGuestSpec("g-live", fixture.Image, Memory), settings);
        try
        {
            var backend = new QemuTargetBackend("t1", settings);
            await vm.PauseAsync();
            var state = await vm.CaptureDeviceStateAsync();
            // A target QEMU that refuses the state it is given (here: cut short) fails the load step, not silently.
            var memory = backend.AllocateMemory(vm.Description);
            var refused = await Assert.ThrowsAsync<QemuStepException>(() => backend.ResumeAsync(vm.Description, memory, state[..(state.Length / 2)], CancellationToken.None));
            await memory.DisposeAsync();
            Assert.Equal(("g-live", "load device state"), (refused.GuestId, refused.Step));
            Assert.Empty(backend.Landed);

            // The source copy resumes and goes on counting; the hashes its paused collection took prove nothing any more.
            vm.CollectDirtyPages();
            Assert.NotNull(vm.PausedPageHashes);
            await vm.ResumeAsync();
            Assert.Null(vm.PausedPageHashes);
            Assert.Equal(VmRunState.Running, vm.State);
            await WaitForCounterAbove(vm.SerialLogPath, vm.CounterAtPause + 2, () => true);

            // A crashed QEMU: the next step says which guest and which step, and that QEMU is gone.
            // QEMU runs daemonized, not as our child: killed by its pid, gone once /proc says so.
            vm.Process.Pid!.Kill();
            Assert.True(await vm.Process.Pid.WaitForExitAsync(TimeSpan.FromSeconds(10)));
            var crashed = await Assert.ThrowsAsync<QemuStepException>(() => vm.PauseAsync());
            Assert.Equal(("g-live", "pause (stop)"), (crashed.GuestId, crashed.Step));
            Assert.Contains("QEMU exited", crashed.Message);
        }
        finally { await vm.DisposeAsync(); }

        QemuFixture.AssertNothingLeft(settings);
    }

    [Fact]
    public async Task Targets_that_cannot_start_qemu_leave_every_guest_running_on_the_source()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        var guests = await Task.WhenAll(Enumerable.Range(1, 2).Select(i => QemuVm.StartAsync(new QemuGuestSpec($"stay-{i}", fixture.Image, Memory), settings)));
        try
        {
            var brokenTargets = settings with { Binary = "/nonexistent/qemu-system-x86_64" };
            await using (var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = guests, Targets = 2, TargetCapacityBytes = 2 * Memory, JournalConnectionString = TestConfig.TempJournal(),
                TargetBackendFor = host => new QemuTargetBackend(host, brokenTargets),
            }))
            {
                await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 2, TimeSpan.FromSeconds(30));
                var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                    new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()), _ => { }, TimeSpan.FromSeconds(120));
                var report = outcome.Report!;
                Assert.False(report.Verified);
                Assert.All(report.PerVm, v =>
                {
                    Assert.False(v.HandedOver);
                    Assert.True(v.DigestMatched, v.Id); // the bytes arrived intact; starting QEMU is what failed
                    Assert.Contains($"guest {v.Id}: start QEMU failed", v.Error);
                });
                // Confirmed resumed before the report, and really running: the counter goes on past the pause.
                foreach (var g in guests)
                {
                    Assert.Equal(VmRunState.Running, g.State);
                    await WaitForCounterAbove(g.SerialLogPath, g.CounterAtPause + 2, () => true);
                }
            }
        }
        finally
        {
            foreach (var g in guests) await g.DisposeAsync();
        }
        QemuFixture.AssertNothingLeft(settings);
    }
}
