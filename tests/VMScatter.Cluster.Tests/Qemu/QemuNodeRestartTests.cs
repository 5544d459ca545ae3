using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Qemu;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>Guests outlive their node: a `vmscatter node` killed, restarted and stopped, its QEMU guest running throughout.</summary>
[Collection("qemu")]
public sealed class QemuNodeRestartTests(QemuFixture fixture)
{
    private static readonly TimeSpan Boot = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan Step = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_killed_node_leaves_its_guest_running_and_re_adopts_it_when_it_restarts()
    {
        _ = fixture.Image; // built once for the collection; the node finds it in the same directory
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag);
        string work = Directory.CreateTempSubdirectory("vmscatter-restart-").FullName;
        string config = Path.Combine(work, "node.conf");
        await File.WriteAllTextAsync(config, $$"""
            vmscatter.qemu {
              guest-image = "{{QemuFixture.ImageDirectory}}"
              ram-directory = "{{settings.RamDirectory}}"
              runtime-directory = "{{settings.RuntimeDirectory}}"
              workload = "vmscatter.wws_kib=1024 vmscatter.dirty_pages=64"
            }
            """);
        string hostId = $"restart-{tag}";
        // Scheduler and source in one process: the whole cluster dies with it, so no other node decides anything.
        string[] args = ["--role", "scheduler,source", "--backend", "qemu", "--host-id", hostId, "--vms", "1", "--vm-memory", "128MiB",
            "--journal", Path.Combine(work, "journal.db"), "--config", config];
        var nodes = new List<NodeProcess>();
        try
        {
            var first = NodeProcess.Start("first", args);
            nodes.Add(first);
            await first.WaitForLineAsync(l => l.StartsWith($"node {hostId} up"), Boot);
            var entry = Assert.Single(GuestStateFile.Open(settings.RamDirectory, hostId).Entries);
            Assert.Equal(("guest-1", GuestPlace.Source, false), (entry.Id, entry.Place, entry.Foreign));
            var qemu = entry.Process!;
            Assert.True(qemu.IsAlive);

            // kill -9 of the node (and of its process tree): QEMU is not in it, and goes on counting.
            first.Kill();
            await first.WaitForExitAsync(Step);
            long atKill = SerialConsole.LastCounter(entry.SerialLog!);
            await SerialConsole.WaitForCounterAboveAsync(entry.SerialLog!, atKill + 2, Step, () => qemu.IsAlive);

            // The same node again: it finds its guest by its state file, re-adopts it and boots none.
            var second = NodeProcess.Start("second", args);
            nodes.Add(second);
            await second.WaitForLineAsync(l => l.StartsWith("re-adopted guest guest-1 (source") && l.Contains($"pid {qemu.Pid}, running"), Step);
            await second.WaitForLineAsync(l => l.StartsWith($"node {hostId} up"), Step);
            Assert.DoesNotContain("booting", second.Output);
            long atReadopt = SerialConsole.LastCounter(entry.SerialLog!);
            await SerialConsole.WaitForCounterAboveAsync(entry.SerialLog!, atReadopt + 2, Step, () => qemu.IsAlive);

            // A graceful stop (SIGTERM) detaches: the guest runs on, still listed for the next start.
            second.Terminate();
            await second.WaitForExitAsync(Step);
            Assert.True(second.ExitCode == 0, second.Output);
            await second.WaitForLineAsync(l => l.StartsWith("1 QEMU guest(s) keep running"), Step);
            long atStop = SerialConsole.LastCounter(entry.SerialLog!);
            await SerialConsole.WaitForCounterAboveAsync(entry.SerialLog!, atStop + 2, Step, () => qemu.IsAlive);
            Assert.Equal(entry, Assert.Single(GuestStateFile.Open(settings.RamDirectory, hostId).Entries));
        }
        finally
        {
            foreach (var n in nodes) await n.DisposeAsync();
            // The guests outlive the nodes by design: the test ends them.
            foreach (var pid in QemuFixture.Leftovers(settings).Processes.Select(GuestPid.Of).OfType<GuestPid>())
            {
                pid.Kill();
                await pid.WaitForExitAsync(TimeSpan.FromSeconds(10));
            }
            foreach (var d in new[] { settings.RuntimeDirectory, settings.RamDirectory, work }) Directory.Delete(d, recursive: true);
        }
    }

    [Fact]
    public async Task A_guest_that_landed_on_a_target_runs_on_when_the_target_stops_and_is_re_adopted_there()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        var guest = await QemuVm.StartAsync(new QemuGuestSpec("guest-1", fixture.Image, 128L << 20, WorkloadArguments: "vmscatter.wws_kib=1024 vmscatter.dirty_pages=64"), settings);
        var state = GuestStateFile.Open(settings.RamDirectory, "target-1");
        try
        {
            // The cluster's nodes detach their guests on stop, as `vmscatter node` does (a local cluster's default is to quit them).
            var backend = new QemuTargetBackend("target-1", settings, state);
            await using (var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = [guest], Targets = 1, TargetCapacityBytes = 128L << 20, JournalConnectionString = TestConfig.TempJournal(),
                TargetBackendFor = _ => backend, ExtraHocon = "vmscatter.node.guests-on-stop = detach",
            }))
            {
                await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 1, Step);
                var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                    new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()), _ => { }, TimeSpan.FromSeconds(120));
                Assert.True(outcome.Report!.Verified, outcome.Report.Error);
                // Released on the source: quit there and off the source's list; listed on the target's as landed.
                Assert.Equal(VmRunState.Stopped, guest.State);
            }
            var entry = Assert.Single(GuestStateFile.Open(settings.RamDirectory, "target-1").Entries);
            Assert.Equal(("guest-1", GuestPlace.Landed), (entry.Id, entry.Place));
            Assert.Empty(backend.Landed);
            await SerialConsole.WaitForCounterAboveAsync(entry.SerialLog!, SerialConsole.LastCounter(entry.SerialLog!) + 2, Step, () => entry.Process!.IsAlive);

            // The target's next start: re-adopted into its backend, which its host counts as running.
            var again = new QemuTargetBackend("target-1", settings, GuestStateFile.Open(settings.RamDirectory, "target-1"));
            var said = new List<string>();
            var sources = await GuestAdoption.ReadoptAsync(GuestStateFile.Open(settings.RamDirectory, "target-1"), settings, sourceRole: false, again, said.Add, CancellationToken.None);
            Assert.Empty(sources);
            Assert.StartsWith("re-adopted guest guest-1 (landed", Assert.Single(said));
            var landed = Assert.Single(((ITargetBackend)again).Running);
            Assert.Equal(V("guest-1"), landed.Description.Id);
            await SerialConsole.WaitForCounterAboveAsync(entry.SerialLog!, SerialConsole.LastCounter(entry.SerialLog!) + 2, Step, () => landed.State == VmRunState.Running);

            // Quit there (as when it is migrated away or discarded): its QEMU, files and entry go.
            await landed.DisposeAsync();
            Assert.Empty(GuestStateFile.Open(settings.RamDirectory, "target-1").Entries);
        }
        finally
        {
            await guest.DisposeAsync();
            foreach (var pid in QemuFixture.Leftovers(settings).Processes.Select(GuestPid.Of).OfType<GuestPid>())
            {
                pid.Kill();
                await pid.WaitForExitAsync(TimeSpan.FromSeconds(10));
            }
        }
        QemuFixture.AssertNothingLeft(settings);
    }
}
