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

/// <summary>One way of moving the real guests, and what it cost. A method that failed has <see cref="Verified"/> false and a one-line <see cref="Error"/>.</summary>
public sealed record QemuBenchRun(string Method, string Description, long BytesSent, double TotalSeconds, double DowntimeMsMax, double DowntimeMsMedian, bool Verified,
    double ReductionBytes, double ReductionTime, string? Error);

public sealed record QemuBenchResult(string QemuVersion, int Guests, long GuestMemoryBytes, int Targets, long LinkBitsPerSecond, string Workload, IReadOnlyList<QemuBenchRun> Runs);

/// <summary>
/// `vmscatter bench --backend qemu`: the same real guests (same image, booted afresh to the same point for each
/// method) moved by VMScatter to several targets, then by QEMU's own live migration one guest at a time over
/// tcp loopback, with its defaults and once more with multifd + zstd; every method under the same link rate.
/// Reductions are against QEMU's native migration with default settings. A method that fails (its boot, its
/// migration, a guest not counting on at its target) is that method's row with a one-line reason, and the next
/// method runs; its guests are quit and their RAM files removed however it ends.
/// </summary>
public static class QemuBench
{
    public const string VmScatter = "vmscatter";
    public const string Native = "qemu-native";
    public const string NativeMultifdZstd = "qemu-native-multifd-zstd";
    public static readonly IReadOnlyList<string> Methods = [VmScatter, Native, NativeMultifdZstd];

    /// <param name="methods">The methods to run, in this order (default: all of <see cref="Methods"/>); reductions are NaN without <see cref="Native"/>.</param>
    public static async Task<QemuBenchResult> RunAsync(QemuConfig config, GuestImage image, int guests, long memoryBytes, int targets, long linkBitsPerSecond, int downtimeMs, CompressionMode compression,
        string journalDirectory, Action<string>? progress = null, CancellationToken cancellationToken = default, IReadOnlyList<string>? methods = null)
    {
        var runs = new List<Measured>();
        string? version = null;
        foreach (string method in methods ?? Methods)
        {
            var measured = new Measured(method, method switch
            {
                VmScatter => $"traffic-aware placement, dedup across guests, relay chain per target group, {compression.ToName()}; device state via QEMU (x-ignore-shared)",
                Native => "QEMU's own pre-copy (defaults), one guest after another over tcp loopback",
                NativeMultifdZstd => "the same with multifd (2 channels) + zstd compression",
                _ => throw new ArgumentException($"unknown method '{method}'", nameof(methods)),
            });
            runs.Add(measured);
            QemuVm[]? fleet = null;
            try
            {
                progress?.Invoke($"{method}: booting {guests} guests");
                fleet = await config.BootGuestsAsync(image, guests, memoryBytes, cancellationToken).ConfigureAwait(false);
                version ??= fleet[0].Process.Qmp.Version;
                if (method == VmScatter) await RunVmScatterAsync(measured, fleet, config, targets, memoryBytes, linkBitsPerSecond, downtimeMs, compression, journalDirectory, progress, cancellationToken).ConfigureAwait(false);
                else await RunNativeAsync(measured, fleet, config, linkBitsPerSecond, method == NativeMultifdZstd, progress, cancellationToken).ConfigureAwait(false);
            }
            // Ctrl-C ends the bench (after the finally below), whatever the step it broke made of it; any other failure is this method's row.
            catch (Exception e) when (cancellationToken.IsCancellationRequested && e is not OperationCanceledException)
            {
                throw new OperationCanceledException($"{method}: interrupted", e, cancellationToken);
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                measured.Verified = false;
                measured.Error = OneLine(e);
                progress?.Invoke($"{method}: failed: {measured.Error}");
            }
            finally
            {
                if (fleet is not null) foreach (var g in fleet) await g.DisposeAsync().ConfigureAwait(false);
            }
        }

        var baseline = runs.SingleOrDefault(r => r.Method == Native && r.Error is null);
        return new QemuBenchResult(version ?? "unknown", guests, memoryBytes, targets, linkBitsPerSecond, config.Workload, runs.Select(r =>
        {
            var d = r.Downtimes.Order().ToArray();
            return new QemuBenchRun(r.Method, r.Description, r.Bytes, r.Seconds, d.Length == 0 ? 0 : d[^1], d.Length == 0 ? 0 : d[d.Length / 2], r.Verified,
                baseline is null ? double.NaN : 1 - (double)r.Bytes / baseline.Bytes, baseline is null ? double.NaN : 1 - r.Seconds / baseline.Seconds, r.Error);
        }).ToArray());
    }

    private static async Task RunVmScatterAsync(Measured measured, QemuVm[] fleet, QemuConfig config, int targets, long memoryBytes, long linkBitsPerSecond, int downtimeMs, CompressionMode compression,
        string journalDirectory, Action<string>? progress, CancellationToken cancellationToken)
    {
        progress?.Invoke($"{VmScatter}: migrating {fleet.Length} guests to {targets} targets");
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = targets, TargetCapacityBytes = (fleet.Length + targets - 1) / targets * memoryBytes,
            JournalConnectionString = $"Data Source={Path.Combine(journalDirectory, $"qemu-bench-{Guid.NewGuid():N}.db")}",
            TargetBackendFor = host => new QemuTargetBackend(host, config.Settings),
        }, cancellationToken).ConfigureAwait(false);
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targets, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], new MigrationOptions(PlacementStrategy.TrafficAware, GroupTransport.RelayChain, compression, 8, downtimeMs, true, linkBitsPerSecond)),
            _ => { }, TimeSpan.FromSeconds(120), cancellationToken).ConfigureAwait(false);
        measured.Seconds = clock.Elapsed.TotalSeconds;
        var report = outcome.Report ?? throw new InvalidOperationException($"migration rejected: {outcome.RejectedBecause}");
        measured.Bytes = report.BytesSent;
        measured.Downtimes.AddRange(report.PerVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs));
        measured.Verified = report.Verified;
        measured.Error = report.Error is { } error ? OneLine(error) : report.Verified ? null : "not verified";
    }

    /// <summary>QEMU's own migration, one guest after another; a guest that fails ends the method (what it measured so far stays in the row).</summary>
    private static async Task RunNativeAsync(Measured measured, QemuVm[] fleet, QemuConfig config, long linkBitsPerSecond, bool multifd, Action<string>? progress, CancellationToken cancellationToken)
    {
        foreach (var guest in fleet)
        {
            progress?.Invoke($"{measured.Method}: migrating {guest.Description.Id}");
            var r = await QemuNativeMigration.RunAsync(guest, config.Settings, linkBitsPerSecond, multifd, cancellationToken).ConfigureAwait(false);
            measured.Bytes += r.BytesSent;
            measured.Seconds += r.Seconds;
            measured.Downtimes.Add(r.DowntimeMs);
        }
        measured.Verified = true;
    }

    /// <summary>An exception as one console line: its innermost cause's message, line breaks folded (a stack trace never is one).</summary>
    public static string OneLine(Exception e)
    {
        var cause = e is AggregateException a ? a.GetBaseException() : e;
        string text = cause is QemuStepException or TimeoutException or InvalidOperationException ? cause.Message : $"{cause.Message} ({cause.GetType().Name})";
        return OneLine(text);
    }

    private static string OneLine(string text) => string.Join(' ', text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    private sealed class Measured(string method, string description)
    {
        public string Method { get; } = method;
        public string Description { get; } = description;
        public long Bytes { get; set; }
        public double Seconds { get; set; }
        public List<double> Downtimes { get; } = new();
        public bool Verified { get; set; }
        public string? Error { get; set; }
    }
}
