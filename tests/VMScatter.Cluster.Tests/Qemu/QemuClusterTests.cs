using System.Collections.Concurrent;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using VMScatter.Qemu;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>Real QEMU guests (TCG) migrated one-to-many over the cluster: they keep running, on their targets.</summary>
[Collection("qemu")]
public sealed class QemuClusterTests(QemuFixture fixture)
{
    private const long Memory = 128L << 20;

    [Fact]
    public async Task Three_running_guests_move_to_two_targets_and_keep_counting_there()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag);
        // Guest 1's written pages come from re-hashing, guest 2's from the kernel's log of QEMU's writes (the default),
        // guest 3's from QEMU's own migration stream (QEMU stops it when its pre-copy converges). All three kinds go in
        // one migration, and each verifies.
        var guests = await Task.WhenAll(Enumerable.Range(1, 3).Select(i =>
            QemuVm.StartAsync(new QemuGuestSpec($"guest-{i}", fixture.Image, Memory, WorkloadArguments: "vmscatter.wws_kib=1024 vmscatter.dirty_pages=64"),
                i switch { 1 => settings with { DirtyTracking = DirtyTracking.Rehash }, 3 => settings with { DirtyTracking = DirtyTracking.QemuStream }, _ => settings })));
        var backends = new ConcurrentDictionary<string, QemuTargetBackend>();
        var landedCounters = new Dictionary<VmId, (long AtPause, long OnTarget, string Host)>();
        MigrationReport report;
        try
        {
            await using (var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = guests, Targets = 2, TargetCapacityBytes = 2 * Memory, JournalConnectionString = TestConfig.TempJournal(),
                TargetBackendFor = host => backends.GetOrAdd(host, h => new QemuTargetBackend(h, settings)),
            }))
            {
                await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 2, TimeSpan.FromSeconds(30));
                var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                    new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()), _ => { }, TimeSpan.FromSeconds(120));
                report = outcome.Report!;
                Assert.True(report.Verified, report.Error);

                foreach (var guest in guests)
                {
                    var onTarget = backends.Values.Select(b => b.Landed.GetValueOrDefault(guest.Description.Id)).Single(l => l is not null)!;
                    // Past the last value the source printed before it paused: the guest continued where it stopped.
                    await SerialConsole.WaitForCounterAboveAsync(onTarget.SerialLogPath, guest.CounterAtPause + 2, TimeSpan.FromSeconds(60), () => onTarget.State == VmRunState.Running);
                    Assert.DoesNotContain(SerialConsole.ReadyMarker, File.ReadAllText(onTarget.SerialLogPath)); // not rebooted
                    landedCounters[guest.Description.Id] = (guest.CounterAtPause, SerialConsole.LastCounter(onTarget.SerialLogPath), report.PerVm.Single(v => v.Id == guest.Description.Id.Value).Target);
                }
            }
        }
        finally
        {
            foreach (var g in guests) await g.DisposeAsync();
        }

        Assert.Equal(3, report.Vms);
        Assert.All(report.PerVm, v => Assert.True(v.HandedOver && v.DigestMatched && v.SourceDigest == v.TargetDigest, v.Id));
        Assert.Equal(2, report.PerVm.Select(v => v.Target).Distinct().Count());
        Assert.All(landedCounters.Values, c => Assert.True(c.AtPause > 0 && c.OnTarget > c.AtPause, $"{c}"));
        Assert.All(guests, g => Assert.Equal(VmRunState.Stopped, g.State));
        // QEMU's stream carried guest 3's every page (its bulk pass), and the others streamed nothing.
        Assert.True(guests[2].StreamRecords >= guests[2].PageCount, $"{guests[2].StreamRecords} records");
        Assert.Equal([0L, 0L], guests.Take(2).Select(g => g.StreamRecords));
        // The report names each guest's tracking: the re-hashed one passed over its memory at least at the log's start,
        // a pre-copy collection and the pause; the write-protected one once (the log's start), its collections from the
        // kernel's log; the streamed one took at least one collection from QEMU's stream.
        var tracking = report.PerVm.OrderBy(v => v.Id, StringComparer.Ordinal).Select(v => v.DirtyTracking ?? "").ToArray();
        var rehashed = System.Text.RegularExpressions.Regex.Match(tracking[0], @"^re-hash: (\d+) whole-memory passes$");
        Assert.True(rehashed.Success && int.Parse(rehashed.Groups[1].Value) >= 3, tracking[0]);
        var logged = System.Text.RegularExpressions.Regex.Match(tracking[1], @"^write-protect: (\d+) collections from the kernel's log of QEMU's writes, 1 whole-memory pass$");
        Assert.True(logged.Success && int.Parse(logged.Groups[1].Value) >= 2, tracking[1]);
        var streamed = System.Text.RegularExpressions.Regex.Match(tracking[2], @"^qemu-stream: (\d+) collections from QEMU's stream, (\d+) whole-memory passes");
        Assert.True(streamed.Success && int.Parse(streamed.Groups[1].Value) >= 1 && int.Parse(streamed.Groups[2].Value) >= 2, tracking[2]);
        // The same OS image in every guest: far less than each guest's own non-zero pages went over the wire.
        Assert.True(report.BytesSent < 0.6 * report.NaiveBytes, $"sent {report.BytesSent} of naive {report.NaiveBytes}");
        // The source's CPU reading guest memory, per round: every round read some (each collects by re-hashing or from
        // QEMU's stream). Round 0 is not more than every later round: a pass skips the RAM file's holes, and the streamed
        // guest's later collection hashes QEMU's bulk pass, every page.
        var cpu = report.SourceCpuSecondsPerRound;
        Assert.Equal(report.DataPlaneRounds, cpu.Count);
        Assert.True(cpu.All(c => c > 0), string.Join(", ", cpu));

        QemuFixture.AssertNothingLeft(settings);
    }
}
