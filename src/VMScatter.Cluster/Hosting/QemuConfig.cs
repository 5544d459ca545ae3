using Akka.Configuration;
using VMScatter.Qemu;

namespace VMScatter.Cluster.Hosting;

/// <summary>The vmscatter.qemu section: how this host runs QEMU and which guests it boots.</summary>
public sealed record QemuConfig(QemuSettings Settings, string Accelerator, string Cpu, string GuestImageDirectory, string KernelCommandLine, string Workload)
{
    /// <summary>Where each node keeps its list of the QEMU guests it runs (<see cref="GuestStateFile"/>).</summary>
    public string StateDirectory { get; init; } = Settings.RamDirectory;

    public static QemuConfig From(Config config)
    {
        var q = config.GetConfig("vmscatter.qemu") ?? throw new ConfigurationException("vmscatter.qemu missing");
        string runtime = q.GetString("runtime-directory");
        var settings = new QemuSettings
        {
            Binary = q.GetString("binary"),
            RamDirectory = q.GetString("ram-directory"),
            RuntimeDirectory = string.IsNullOrEmpty(runtime) ? Path.GetTempPath() : runtime,
            BootTimeout = q.GetTimeSpan("boot-timeout"),
            CommandTimeout = q.GetTimeSpan("command-timeout"),
            StateTransferTimeout = q.GetTimeSpan("state-transfer-timeout"),
            Devices = HostDevices(q),
            DirtyTracking = Tracking(q.GetString("dirty-tracking")),
            StreamDowntimeLimitMs = (int)Math.Max(1, q.GetTimeSpan("stream-downtime-limit").TotalMilliseconds),
        };
        string state = q.GetString("state-directory");
        return new QemuConfig(settings, q.GetString("accelerator"), q.GetString("cpu"), Path.GetFullPath(q.GetString("guest-image")), q.GetString("kernel-command-line"), q.GetString("workload"))
        {
            StateDirectory = string.IsNullOrEmpty(state) ? settings.RamDirectory : state,
        };
    }

    private static DirtyTracking Tracking(string name)
    {
        try { return DirtyTrackings.Parse(name); }
        catch (ArgumentException e) { throw new ConfigurationException($"vmscatter.qemu: {e.Message}"); }
    }

    /// <summary>shared-storage { NAME = /abs/dir } and netdev-kinds = [user]: what disks and NICs guests may have here.</summary>
    private static QemuHostDevices HostDevices(Config q)
    {
        var storage = new Dictionary<string, string>(StringComparer.Ordinal);
        if (q.HasPath("shared-storage") && q.GetConfig("shared-storage") is { } section && !section.IsEmpty)
            foreach (var entry in section.AsEnumerable())
                storage[entry.Key] = entry.Value.GetString();
        string[] kinds = q.HasPath("netdev-kinds") ? q.GetStringList("netdev-kinds").ToArray() : QemuHostDevices.Default.NetdevKinds.ToArray();
        try { return new QemuHostDevices(storage, kinds); }
        catch (ArgumentException e) { throw new ConfigurationException($"vmscatter.qemu: {e.Message}"); }
    }

    /// <summary>Guests are handed out once their counter reached this: booted and settled, the same point every time.</summary>
    public const long SettledCounter = 10;

    /// <summary>The spec of guest <paramref name="id"/> on this host's image and workload (the dd writer's settings, then the program to run).</summary>
    public QemuGuestSpec Guest(string id, GuestImage image, long memoryBytes, GuestWorkload workload = GuestWorkload.Dd) =>
        new(id, image.For(workload), memoryBytes, 1, Accelerator, Cpu, $"{Workload} {workload.KernelArgument()}".Trim()) { BaseCommandLine = KernelCommandLine };

    /// <summary>
    /// Boots guest-1..guest-N in waves of as many guests as this host has cores, and waits until every one has
    /// counted to <see cref="SettledCounter"/> and its program (<paramref name="workload"/>, guest i running its i-th
    /// share) has printed its first progress marker. A TCG boot is CPU-bound: all at once, N guests share the cores N ways
    /// and each boot takes about N/cores times as long against the same per-guest boot timeout; in waves each boot
    /// gets about a core, so the timeout need not grow with N. Nothing is left running if one fails.
    /// </summary>
    public async Task<QemuVm[]> BootGuestsAsync(GuestImage image, int guests, long memoryBytes, CancellationToken cancellationToken, FleetWorkload workload = FleetWorkload.Dd)
    {
        int wave = Math.Max(1, Environment.ProcessorCount);
        var fleet = new List<QemuVm>();
        try
        {
            for (int first = 1; first <= guests; first += wave)
            {
                var boots = Enumerable.Range(first, Math.Min(wave, guests - first + 1)).Select(i => QemuVm.StartAsync(Guest($"guest-{i}", image, memoryBytes, workload.ForGuest(i - 1)), Settings, cancellationToken)).ToArray();
                try { await Task.WhenAll(boots).ConfigureAwait(false); }
                finally { fleet.AddRange(boots.Where(b => b.IsCompletedSuccessfully).Select(b => b.Result)); }
            }
            for (int i = 0; i < fleet.Count; i++)
            {
                var g = fleet[i];
                await SerialConsole.WaitForCounterAboveAsync(g.SerialLogPath, SettledCounter - 1, Settings.BootTimeout, () => !g.Process.HasExited, cancellationToken).ConfigureAwait(false);
                // Its program has made progress: a migration's check that the marker goes on then compares against a real start.
                // A program that cannot run says why at once (e.g. the image did not fit in guest RAM): that line, not a timeout.
                if (workload.ForGuest(i).ProgressPrefix() is { } marker)
                {
                    string line = await SerialConsole.WaitForLineAsync(g.SerialLogPath, l => SerialConsole.ValueOf(l, marker) > 0 || l.StartsWith(SerialConsole.ErrorPrefix, StringComparison.Ordinal),
                        Settings.BootTimeout, () => !g.Process.HasExited, cancellationToken).ConfigureAwait(false);
                    if (line.StartsWith(SerialConsole.ErrorPrefix, StringComparison.Ordinal)) throw new InvalidOperationException($"{g.Description.Id}: {line}");
                }
            }
            return fleet.ToArray();
        }
        catch
        {
            foreach (var booted in fleet) await booted.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}
