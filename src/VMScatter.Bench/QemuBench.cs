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
    double ReductionBytes, double ReductionTime, string? Error)
{
    /// <summary>Each real program's progress marker before the move and on its target (none for dd guests).</summary>
    public IReadOnlyList<ProgramProgress> Programs { get; init; } = [];

    /// <summary>VMScatter's own verdict: every guest paused within the downtime target (null for QEMU's methods, which report no such verdict).</summary>
    public bool? Converged { get; init; }

    /// <summary>Why not, when <see cref="Converged"/> is false: the report's convergence account.</summary>
    public string? Convergence { get; init; }

    /// <summary>VMScatter's: how each guest's dirty pages were found ("guest-1: re-hash: 4 whole-memory passes").</summary>
    public IReadOnlyList<string> DirtyTracking { get; init; } = [];

    /// <summary>VMScatter's, per data-plane round: CPU seconds the source spent reading guest memory (the report's).</summary>
    public IReadOnlyList<double> SourceCpuSecondsPerRound { get; init; } = [];

    /// <summary>VMScatter's, per data-plane round: the pages it carried (the report's).</summary>
    public IReadOnlyList<int> DirtyPagesPerRound { get; init; } = [];
}

/// <summary>A guest's program across its move: its last marker on the source before it began, the first above it on its target.</summary>
public sealed record ProgramProgress(string Guest, string Workload, long AtStart, long OnTarget);

/// <param name="Workload">The dd writer's kernel command line settings.</param>
/// <param name="Fleet">What the guests ran (kebab name of <see cref="FleetWorkload"/>).</param>
public sealed record QemuBenchResult(string QemuVersion, int Guests, long GuestMemoryBytes, int Targets, long LinkBitsPerSecond, string Workload, IReadOnlyList<QemuBenchRun> Runs, string Fleet = "dd");

/// <summary>
/// `vmscatter bench --backend qemu`: the same real guests (same image, booted afresh to the same point for each
/// method) moved by VMScatter to several targets, then by QEMU's own live migration one guest at a time over
/// tcp loopback, with its defaults and once more with multifd + zstd; every method under the same link rate.
/// Reductions are against QEMU's native migration with default settings. A method that fails (its boot, its
/// migration, a guest not counting on at its target) is that method's row with a one-line reason, and the next
/// method runs; its guests are quit and their RAM files removed however it ends. A fleet of real programs
/// (<see cref="FleetWorkload"/>) is verified by each guest's program too: its progress marker goes on at the target.
/// </summary>
public static class QemuBench
{
    public const string VmScatter = "vmscatter";
    /// <summary>VMScatter with QEMU's own dirty log, read from its migration stream (<see cref="DirtyTracking.QemuStream"/>).</summary>
    public const string VmScatterStream = "vmscatter-qemu-stream";
    /// <summary>VMScatter re-hashing guest memory each round (<see cref="DirtyTracking.Rehash"/>), beside the default's kernel write log.</summary>
    public const string VmScatterRehash = "vmscatter-rehash";
    public const string Native = "qemu-native";
    public const string NativeMultifdZstd = "qemu-native-multifd-zstd";
    public static readonly IReadOnlyList<string> Methods = [VmScatter, VmScatterRehash, VmScatterStream, Native, NativeMultifdZstd];

    /// <summary>What a bench runs unless told: QEMU's stream as dirty log is an experiment (slower here, see the README), run by name.</summary>
    public static readonly IReadOnlyList<string> DefaultMethods = [VmScatter, Native, NativeMultifdZstd];

    /// <param name="methods">The methods to run, in this order (default: <see cref="DefaultMethods"/>); reductions are NaN without <see cref="Native"/>.</param>
    /// <param name="workload">What the guests run (default: the dd writer).</param>
    public static async Task<QemuBenchResult> RunAsync(QemuConfig config, GuestImage image, int guests, long memoryBytes, int targets, long linkBitsPerSecond, int downtimeMs, CompressionMode compression,
        string journalDirectory, Action<string>? progress = null, CancellationToken cancellationToken = default, IReadOnlyList<string>? methods = null, FleetWorkload workload = FleetWorkload.Dd)
    {
        var runs = new List<Measured>();
        string? version = null;
        // Each method's guests, its targets' RAM files, and QEMU's own targets' memory.
        MemoryWarmup.Run(3L * guests * memoryBytes, progress);
        foreach (string method in methods ?? DefaultMethods)
        {
            var measured = new Measured(method, method switch
            {
                VmScatter => $"traffic-aware placement, dedup across guests, relay chain per target group, {compression.ToName()}; dirty pages from the kernel's log of QEMU's writes (re-hashed where it cannot be had); device state via QEMU (x-ignore-shared)",
                VmScatterRehash => "the same, dirty pages by re-hashing the memory each guest uses",
                VmScatterStream => $"the same, dirty pages from QEMU's own migration stream (its dirty bitmap; QEMU stops each guest when its pre-copy converges)",
                Native => "QEMU's own pre-copy (defaults), one guest after another over tcp loopback",
                NativeMultifdZstd => "the same with multifd (2 channels) + zstd compression",
                _ => throw new ArgumentException($"unknown method '{method}'", nameof(methods)),
            });
            runs.Add(measured);
            QemuVm[]? fleet = null;
            try
            {
                progress?.Invoke($"{method}: booting {guests} guests ({workload.ToName()})");
                var methodConfig = method switch
                {
                    VmScatterStream => config with { Settings = config.Settings with { DirtyTracking = DirtyTracking.QemuStream } },
                    VmScatterRehash => config with { Settings = config.Settings with { DirtyTracking = DirtyTracking.Rehash } },
                    _ => config,
                };
                fleet = await methodConfig.BootGuestsAsync(image, guests, memoryBytes, cancellationToken, workload).ConfigureAwait(false);
                version ??= fleet[0].Process.Qmp.Version;
                var programs = fleet.Select((_, i) => workload.ForGuest(i)).ToArray();
                if (method is VmScatter or VmScatterStream or VmScatterRehash) await RunVmScatterAsync(measured, fleet, programs, config, targets, memoryBytes, linkBitsPerSecond, downtimeMs, compression, journalDirectory, progress, cancellationToken).ConfigureAwait(false);
                else await RunNativeAsync(measured, fleet, programs, config, linkBitsPerSecond, method == NativeMultifdZstd, progress, cancellationToken).ConfigureAwait(false);
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
                baseline is null ? double.NaN : 1 - (double)r.Bytes / baseline.Bytes, baseline is null ? double.NaN : 1 - r.Seconds / baseline.Seconds, r.Error) { Programs = r.Programs.ToArray(), Converged = r.Converged, Convergence = r.Converged == false ? r.Convergence : null, DirtyTracking = r.DirtyTracking.ToArray(), SourceCpuSecondsPerRound = r.CpuPerRound, DirtyPagesPerRound = r.PagesPerRound };
        }).ToArray(), workload.ToName());
    }

    private static async Task RunVmScatterAsync(Measured measured, QemuVm[] fleet, GuestWorkload[] programs, QemuConfig config, int targets, long memoryBytes, long linkBitsPerSecond, int downtimeMs,
        CompressionMode compression, string journalDirectory, Action<string>? progress, CancellationToken cancellationToken)
    {
        progress?.Invoke($"{measured.Method}: migrating {fleet.Length} guests to {targets} targets");
        var backends = new List<QemuTargetBackend>();
        // Where each program stood before the move: at its target it must print a marker above this (its log there holds only what it printed after the handover).
        long[] markersAtStart = fleet.Select((g, i) => programs[i].ProgressPrefix() is { } p ? SerialConsole.LastValue(g.SerialLogPath, p) : 0).ToArray();
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = targets, TargetCapacityBytes = (fleet.Length + targets - 1) / targets * memoryBytes,
            JournalConnectionString = $"Data Source={Path.Combine(journalDirectory, $"qemu-bench-{Guid.NewGuid():N}.db")}",
            TargetBackendFor = host =>
            {
                var backend = new QemuTargetBackend(host, config.Settings);
                lock (backends) backends.Add(backend);
                return backend;
            },
        }, cancellationToken).ConfigureAwait(false);
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targets, TimeSpan.FromSeconds(60), cancellationToken).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], new MigrationOptions(PlacementStrategy.TrafficAware, GroupTransport.RelayChain, compression, 8, downtimeMs, true, linkBitsPerSecond)),
            _ => { }, TimeSpan.FromSeconds(120), cancellationToken).ConfigureAwait(false);
        measured.Seconds = clock.Elapsed.TotalSeconds;
        if (fleet.Any(g => g.Tracking == DirtyTracking.QemuStream))
            progress?.Invoke($"{measured.Method}: the pauses' re-hash found {fleet.Sum(g => g.StreamMissedPages)} written pages QEMU's stream had not resent ({string.Join(", ", fleet.Where(g => g.StreamMissedPages > 0).Select(g => $"{g.Description.Id} {g.StreamMissedPages}"))})");
        var report = outcome.Report ?? throw new InvalidOperationException($"migration rejected: {outcome.RejectedBecause}");
        measured.Bytes = report.BytesSent;
        measured.Downtimes.AddRange(report.PerVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs));
        measured.Converged = report.Converged;
        measured.Convergence = report.Convergence;
        measured.DirtyTracking.AddRange(report.PerVm.Select(v => $"{v.Id}: {v.DirtyTracking ?? "not reported"}"));
        progress?.Invoke($"{measured.Method}: dirty tracking: {string.Join("; ", measured.DirtyTracking)}");
        (measured.CpuPerRound, measured.PagesPerRound) = (report.SourceCpuSecondsPerRound, report.DirtyPagesPerRound);
        progress?.Invoke(FormattableString.Invariant($"{measured.Method}: per round, source CPU reading guest memory {string.Join(" / ", report.SourceCpuSecondsPerRound.Select(s => $"{s:0.000}"))} s; pages {string.Join(" / ", report.DirtyPagesPerRound)}"));
        measured.Verified = report.Verified;
        measured.Error = report.Error is { } error ? OneLine(error) : report.Verified ? null
            : OneLine("not verified: " + string.Join("; ", report.PerVm.Where(v => !(v.DigestMatched && v.HandedOver))
                .Select(v => $"{v.Id} {(v.DigestMatched ? "digests match" : "digests differ")}, {(v.HandedOver ? "handed over" : "not handed over")}{(v.Error is { } e ? $" ({e})" : "")}")));
        if (!measured.Verified) return;
        for (int i = 0; i < fleet.Length; i++)
        {
            if (programs[i].ProgressPrefix() is not { } marker) continue;
            var id = fleet[i].Description.Id;
            QemuLandedVm? landed;
            lock (backends) landed = backends.Select(b => b.Landed.GetValueOrDefault(id)).FirstOrDefault(l => l is not null);
            if (landed is null) throw new InvalidOperationException($"{id}: not found running on any target");
            long onTarget = await ProgramGoesOnAsync(id.Value, programs[i], landed.SerialLogPath, markersAtStart[i], () => landed.State == VmRunState.Running, cancellationToken).ConfigureAwait(false);
            measured.Programs.Add(new ProgramProgress(id.Value, programs[i].ToName(), markersAtStart[i], onTarget));
        }
    }

    /// <summary>How long a guest's program may take to print its next marker at its target (compile's come about one per second, slower while the fleet shares the cores).</summary>
    private static readonly TimeSpan ProgramTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The guest's program printed a marker above <paramref name="before"/> on its target's console; a one-line failure if not.</summary>
    internal static async Task<long> ProgramGoesOnAsync(string guestId, GuestWorkload program, string targetSerialLog, long before, Func<bool> alive, CancellationToken cancellationToken)
    {
        string marker = program.ProgressPrefix() ?? throw new ArgumentException("dd prints no marker of its own", nameof(program));
        try { return await SerialConsole.WaitForValueAboveAsync(targetSerialLog, marker, before, ProgramTimeout, alive, cancellationToken).ConfigureAwait(false); }
        catch (Exception e) when (e is TimeoutException or InvalidOperationException)
        {
            throw new InvalidOperationException($"{guestId}: its {program.ToName()} program printed no '{marker.Trim()}' above {before} at its target within {ProgramTimeout.TotalSeconds:0}s ({e.Message})");
        }
    }

    /// <summary>QEMU's own migration, one guest after another; a guest that fails ends the method (what it measured so far stays in the row).</summary>
    private static async Task RunNativeAsync(Measured measured, QemuVm[] fleet, GuestWorkload[] programs, QemuConfig config, long linkBitsPerSecond, bool multifd, Action<string>? progress, CancellationToken cancellationToken)
    {
        for (int i = 0; i < fleet.Length; i++)
        {
            var guest = fleet[i];
            progress?.Invoke($"{measured.Method}: migrating {guest.Description.Id}");
            var r = await QemuNativeMigration.RunAsync(guest, config.Settings, linkBitsPerSecond, multifd, cancellationToken, programs[i]).ConfigureAwait(false);
            measured.Bytes += r.BytesSent;
            measured.Seconds += r.Seconds;
            measured.Downtimes.Add(r.DowntimeMs);
            if (programs[i] != GuestWorkload.Dd) measured.Programs.Add(new ProgramProgress(r.GuestId, programs[i].ToName(), r.ProgramAtStart, r.ProgramOnTarget));
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
        public List<ProgramProgress> Programs { get; } = new();
        public List<string> DirtyTracking { get; } = new();
        public IReadOnlyList<double> CpuPerRound { get; set; } = [];
        public IReadOnlyList<int> PagesPerRound { get; set; } = [];
        public bool Verified { get; set; }
        public string? Error { get; set; }
        public bool? Converged { get; set; }
        public string? Convergence { get; set; }
    }
}
