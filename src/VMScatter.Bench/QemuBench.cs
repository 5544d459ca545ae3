using System.Diagnostics;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Qemu;
using VMScatter.DataPlane;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Units;

namespace VMScatter.Bench;

/// <summary>One way of moving the real guests, and what it cost.</summary>
public sealed record QemuBenchRun(string Method, string Description, long BytesSent, double TotalSeconds, double DowntimeMsMax, double DowntimeMsMedian, bool Verified,
    double ReductionBytes, double ReductionTime, string? Error);

public sealed record QemuBenchResult(string QemuVersion, int Guests, long GuestMemoryBytes, int Targets, long LinkBitsPerSecond, string Workload, IReadOnlyList<QemuBenchRun> Runs);

/// <summary>
/// `vmscatter bench --backend qemu`: the same real guests (same image, booted afresh to the same point for each
/// method) moved by VMScatter to several targets, then by QEMU's own live migration one guest at a time over
/// tcp loopback, with its defaults and once more with multifd + zstd; every method under the same link rate.
/// Reductions are against QEMU's native migration with default settings.
/// </summary>
public static class QemuBench
{
    public const string Native = "qemu-native";

    public static async Task<QemuBenchResult> RunAsync(QemuConfig config, GuestImage image, int guests, long memoryBytes, int targets, long linkBitsPerSecond, int downtimeMs, CompressionMode compression,
        string journalDirectory, Action<string>? progress = null, CancellationToken cancellationToken = default)
    {
        var runs = new List<(string Method, string Description, long Bytes, double Seconds, double[] Downtimes, bool Verified, string? Error)>();

        progress?.Invoke($"vmscatter: booting {guests} guests");
        var fleet = await config.BootGuestsAsync(image, guests, memoryBytes, cancellationToken).ConfigureAwait(false);
        string version = fleet[0].Process.Qmp.Version;
        try
        {
            progress?.Invoke($"vmscatter: migrating {guests} guests to {targets} targets");
            await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = fleet, Targets = targets, TargetCapacityBytes = (guests + targets - 1) / targets * memoryBytes,
                JournalConnectionString = $"Data Source={Path.Combine(journalDirectory, $"qemu-bench-{Guid.NewGuid():N}.db")}",
                TargetBackendFor = host => new QemuTargetBackend(host, config.Settings),
            }, cancellationToken).ConfigureAwait(false);
            await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targets, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
            var clock = Stopwatch.StartNew();
            var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], new MigrationOptions(PlacementStrategy.TrafficAware, GroupTransport.RelayChain, compression, 8, downtimeMs, true, linkBitsPerSecond)),
                _ => { }, TimeSpan.FromSeconds(120), cancellationToken).ConfigureAwait(false);
            double seconds = clock.Elapsed.TotalSeconds;
            var report = outcome.Report ?? throw new InvalidOperationException($"migration rejected: {outcome.RejectedBecause}");
            runs.Add(("vmscatter", $"traffic-aware placement, dedup across guests, relay chain per target group, {compression.ToName()}; device state via QEMU (x-ignore-shared)",
                report.BytesSent, seconds, report.PerVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs).ToArray(), report.Verified, report.Error));
        }
        finally { foreach (var g in fleet) await g.DisposeAsync().ConfigureAwait(false); }

        foreach (var (method, description, multifd) in new[]
        {
            (Native, "QEMU's own pre-copy (defaults), one guest after another over tcp loopback", false),
            ("qemu-native-multifd-zstd", "the same with multifd (2 channels) + zstd compression", true),
        })
        {
            progress?.Invoke($"{method}: booting {guests} guests");
            fleet = await config.BootGuestsAsync(image, guests, memoryBytes, cancellationToken).ConfigureAwait(false);
            var results = new List<NativeMigrationResult>();
            string? error = null;
            try
            {
                foreach (var guest in fleet)
                {
                    progress?.Invoke($"{method}: migrating {guest.Description.Id}");
                    results.Add(await QemuNativeMigration.RunAsync(guest, config.Settings, linkBitsPerSecond, multifd, cancellationToken).ConfigureAwait(false));
                }
            }
            catch (QemuStepException e) { error = e.Message; }
            finally { foreach (var g in fleet) await g.DisposeAsync().ConfigureAwait(false); }
            runs.Add((method, description, results.Sum(r => r.BytesSent), results.Sum(r => r.Seconds), results.Select(r => r.DowntimeMs).ToArray(),
                error is null && results.Count == guests, error));
        }

        var baseline = runs.Single(r => r.Method == Native);
        return new QemuBenchResult(version, guests, memoryBytes, targets, linkBitsPerSecond, config.Workload, runs.Select(r =>
        {
            var d = r.Downtimes.Order().ToArray();
            return new QemuBenchRun(r.Method, r.Description, r.Bytes, r.Seconds, d.Length == 0 ? 0 : d[^1], d.Length == 0 ? 0 : d[d.Length / 2], r.Verified,
                1 - (double)r.Bytes / baseline.Bytes, 1 - r.Seconds / baseline.Seconds, r.Error);
        }).ToArray());
    }
}
