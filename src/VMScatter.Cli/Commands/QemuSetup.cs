using System.ComponentModel;
using System.Diagnostics;
using VMScatter.Cluster.Hosting;
using VMScatter.Qemu;

namespace VMScatter.Cli.Commands;

/// <summary>What `--backend qemu` needs before anything starts: QEMU installed, the guest image built. Problems are user errors.</summary>
public static class QemuSetup
{
    public static async Task<(QemuConfig Config, GuestImage Image)> PrepareAsync(string? configFile, CancellationToken cancellationToken)
    {
        var config = QemuConfig.From(NodeConfig.Build(configFile, ""));
        try
        {
            using var probe = Process.Start(new ProcessStartInfo(config.Settings.Binary, "--version") { RedirectStandardOutput = true, RedirectStandardError = true })!;
            await probe.WaitForExitAsync(cancellationToken);
            if (probe.ExitCode != 0) throw new UserError($"'{config.Settings.Binary} --version' failed (exit {probe.ExitCode})");
        }
        catch (Win32Exception)
        {
            throw new UserError($"QEMU not found ('{config.Settings.Binary}'); install it with: apt-get install qemu-system-x86 busybox-static linux-image-amd64");
        }
        if (!Directory.Exists(config.Settings.RamDirectory)) throw new UserError($"vmscatter.qemu.ram-directory {config.Settings.RamDirectory} does not exist");
        try
        {
            Console.Error.WriteLine($"guest image: {config.GuestImageDirectory}");
            return (config, await GuestImageBuilder.EnsureAsync(config.GuestImageDirectory, cancellationToken));
        }
        catch (Exception e) when (e is InvalidOperationException or FileNotFoundException)
        {
            throw new UserError(e.Message);
        }
    }

    public static GuestBackend Backend(string? value) =>
        value is null ? GuestBackend.Synthetic : MigrationOptionSet.Choose<GuestBackend>(value, "--backend");
}

/// <summary>How a node runs guests: modelled in-process, or real QEMU guests under TCG.</summary>
public enum GuestBackend { Synthetic, Qemu }
