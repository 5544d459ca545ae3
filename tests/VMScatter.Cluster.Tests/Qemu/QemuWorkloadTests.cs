using VMScatter.Bench;
using VMScatter.Cluster.Hosting;
using VMScatter.Domain.Compression;
using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>
/// Guests that run real programs (issue 16, item 4): `bench --backend qemu --workload mixed --vms 3 --methods vmscatter
/// qemu-native`. Guest 1 runs busybox's daemons (idle), guest 2 gcc under make (compile), guest 3 sqlite3 (database), each
/// booted under TCG from the workloads image; each method moves them all, and every program's own progress marker goes
/// on at its target from where it stood on the source. One test: each method boots its own three guests.
/// </summary>
[Collection("qemu")]
public sealed class QemuWorkloadTests(QemuFixture fixture)
{
    // The workloads image unpacks ~55 MB into guest RAM; 128 MiB guests cannot hold it, 256 MiB is the bench's default.
    private const long Memory = 256L << 20;

    [Fact]
    public async Task A_mixed_fleet_moves_by_vmscatter_and_by_qemu_and_each_program_goes_on_at_its_target()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        var config = new QemuConfig(settings, "tcg", "qemu64", QemuFixture.ImageDirectory, "console=ttyS0 quiet panic=-1 nokaslr", "vmscatter.wws_kib=1024 vmscatter.dirty_pages=64");
        var journals = Directory.CreateTempSubdirectory("vmscatter-qemu-workloads-").FullName;
        var progress = new List<string>();
        QemuBenchResult result;
        try
        {
            result = await QemuBench.RunAsync(config, fixture.Image, 3, Memory, 2, 0, 300, CompressionMode.Zstd, journals,
                line => { lock (progress) progress.Add($"{DateTime.UtcNow:HH:mm:ss.f} {line}"); }, methods: [QemuBench.VmScatter, QemuBench.Native], workload: FleetWorkload.Mixed);
        }
        finally { if (Directory.Exists(journals)) Directory.Delete(journals, recursive: true); }

        string why = string.Join("\n", result.Runs.Select(r => $"{r.Method}: verified={r.Verified} error={r.Error} programs={string.Join(", ", r.Programs)}").Concat(progress));
        Assert.Equal("mixed", result.Fleet);
        Assert.Equal([QemuBench.VmScatter, QemuBench.Native], result.Runs.Select(r => r.Method));
        foreach (var run in result.Runs)
        {
            Assert.True(run.Verified && run.Error is null, why);
            // Guest i runs idle, compile, database by i mod 3; each had made progress before the move (boot waits for its first
            // marker) and printed a higher one at its target: the program itself went on, not only the counter.
            Assert.Equal([("guest-1", "idle"), ("guest-2", "compile"), ("guest-3", "database")], run.Programs.Select(p => (p.Guest, p.Workload)).OrderBy(p => p.Guest));
            Assert.All(run.Programs, p => Assert.True(p.AtStart > 0 && p.OnTarget > p.AtStart, why));
        }
        // VMScatter's verdict on its pauses is in its row and never says "within the target" over it (300 ms here);
        // QEMU's methods give none.
        var ours = result.Runs[0];
        Assert.NotNull(ours.Converged);
        Assert.True(ours.Converged == false ? !string.IsNullOrEmpty(ours.Convergence) : ours.DowntimeMsMax <= 300, $"converged={ours.Converged}, max {ours.DowntimeMsMax} ms: {ours.Convergence}\n{why}");
        Assert.Null(result.Runs[1].Converged);

        QemuFixture.AssertNothingLeft(settings);
    }
}
