using VMScatter.Bench;
using VMScatter.Cluster.Hosting;
using VMScatter.Domain.Compression;
using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>
/// `bench --backend qemu` at fleet size (issue 16): six small guests moved one after another by QEMU's multifd + zstd
/// (the method that lost a guest at 4 guests), a bench whose every method fails at boot, and one interrupted mid-method.
/// Each method's row is verified or says in one line why not, and no QEMU process or RAM file is left.
/// </summary>
[Collection("qemu")]
public sealed class QemuBenchTests(QemuFixture fixture)
{
    // At 64 MiB no guest printed its ready line within 120 s (twice, at load average 11-20); 128 MiB is what the other QEMU tests boot.
    private const long Memory = 128L << 20;

    private static QemuConfig ConfigFor(QemuSettings settings) =>
        new(settings, "tcg", "qemu64", QemuFixture.ImageDirectory, "console=ttyS0 quiet panic=-1 nokaslr", "vmscatter.wws_kib=1024 vmscatter.dirty_pages=64");

    /// <summary>Removes the bench's journal directory (a run that failed may have left it half gone).</summary>
    private static void RemoveJournals(string directory)
    {
        if (Directory.Exists(directory)) Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task Six_guests_move_one_after_another_by_multifd_and_leave_nothing_behind()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        var journals = Directory.CreateTempSubdirectory("vmscatter-qemu-bench-").FullName;
        var progress = new List<string>();
        QemuBenchResult result;
        try
        {
            // One method keeps it within CI's budget (each method boots its own six guests under TCG); the VMScatter
            // path is QemuClusterTests', and every method's failure row is the test below.
            result = await QemuBench.RunAsync(ConfigFor(settings), fixture.Image, 6, Memory, 2, 0, 300, CompressionMode.Zstd, journals,
                line => { lock (progress) progress.Add($"{DateTime.UtcNow:HH:mm:ss.f} {line}"); }, methods: [QemuBench.NativeMultifdZstd]);
        }
        finally { RemoveJournals(journals); }

        string why = string.Join("\n", result.Runs.Select(r => $"{r.Method}: verified={r.Verified} error={r.Error}").Concat(progress));
        var run = Assert.Single(result.Runs);
        Assert.Equal(QemuBench.NativeMultifdZstd, run.Method);
        // The fleet path works at this size: all six guests moved and counted on at their targets (a failure would be the row's one-line reason).
        Assert.True(run.Verified && run.Error is null && run.BytesSent > 0, why);
        Assert.True(run.DowntimeMsMax > 0 && run.TotalSeconds > 0, why);
        Assert.Equal(6, result.Guests);

        QemuFixture.AssertNothingLeft(settings);
    }

    [Fact]
    public async Task A_method_that_fails_is_a_row_with_a_one_line_reason_and_the_next_method_runs()
    {
        // Guests that cannot reach their ready line in 1 s: every method fails at its boot, each on its own row.
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]) with { BootTimeout = TimeSpan.FromSeconds(1) };
        var journals = Directory.CreateTempSubdirectory("vmscatter-qemu-bench-").FullName;
        QemuBenchResult result;
        try { result = await QemuBench.RunAsync(ConfigFor(settings), fixture.Image, 2, Memory, 2, 0, 300, CompressionMode.Zstd, journals); }
        finally { RemoveJournals(journals); }

        Assert.Equal(QemuBench.DefaultMethods, result.Runs.Select(r => r.Method));
        Assert.All(result.Runs, r =>
        {
            Assert.False(r.Verified);
            Assert.Contains("boot failed", r.Error);
            Assert.DoesNotContain('\n', r.Error!);
            Assert.DoesNotContain("   at ", r.Error!);
        });
        Assert.True(result.Runs.All(r => double.IsNaN(r.ReductionBytes)), "no baseline: no reduction");
        QemuFixture.AssertNothingLeft(settings);
    }

    /// <summary>
    /// Ctrl-C while a guest's QEMU is starting: QEMU made its RAM file before the start, cancelled, killed it. The
    /// file goes too (a CI run of the bench's cancel test below, on a slow machine, found one left by the native
    /// baseline's target start). A token cancelled from the start makes that timing certain.
    /// </summary>
    [Fact]
    public async Task A_guest_start_cancelled_while_qemu_starts_leaves_no_qemu_and_no_ram_file()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            QemuVm.StartAsync(new QemuGuestSpec("cancelled", fixture.Image, 64L << 20), settings, new CancellationToken(canceled: true)));
        QemuFixture.AssertNothingLeft(settings);
    }

    [Fact]
    public async Task A_bench_cancelled_mid_migration_quits_its_guests_and_removes_their_RAM_files()
    {
        var settings = QemuFixture.SettingsFor(Guid.NewGuid().ToString("N")[..8]);
        var journals = Directory.CreateTempSubdirectory("vmscatter-qemu-bench-").FullName;
        using var interrupt = new CancellationTokenSource();
        // What Ctrl-C does to `vmscatter bench`: its token is cancelled while the first guest is migrating, the second waiting
        // (a 128 MiB guest sends some 25 MiB: about 10 s at 20 Mbit/s).
        void Progress(string line) { if (line == $"{QemuBench.Native}: migrating guest-1") interrupt.CancelAfter(TimeSpan.FromSeconds(1)); }
        try
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
                QemuBench.RunAsync(ConfigFor(settings), fixture.Image, 2, Memory, 2, 20_000_000, 300, CompressionMode.Zstd, journals, Progress, interrupt.Token, [QemuBench.Native]));
        }
        finally { RemoveJournals(journals); }

        QemuFixture.AssertNothingLeft(settings);
    }
}
