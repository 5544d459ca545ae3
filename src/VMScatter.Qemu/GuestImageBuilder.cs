using System.Diagnostics;

namespace VMScatter.Qemu;

/// <summary>Builds the guest image with deploy/guest/build-guest-image.sh (shipped next to the binaries) when it is not there yet, or was built by another version of the script.</summary>
public static class GuestImageBuilder
{
    private static readonly SemaphoreSlim Building = new(1, 1);

    /// <summary>The script as copied into the output directory, or null.</summary>
    public static string? ShippedScript()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "guest", "build-guest-image.sh");
        return File.Exists(path) ? path : null;
    }

    public static async Task<GuestImage> EnsureAsync(string directory, CancellationToken cancellationToken = default)
    {
        await Building.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            string? script = ShippedScript();
            // Built by this very script (its hash in image.stamp), or by hand with no script shipped: used as it is.
            string stampFile = Path.Combine(directory, "image.stamp");
            string? stamp = script is null ? null : Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(script)));
            if (File.Exists(Path.Combine(directory, "vmlinuz")) && File.Exists(Path.Combine(directory, "initramfs.gz"))
                && (stamp is null || (File.Exists(stampFile) && File.ReadAllText(stampFile).Trim() == stamp)))
                return GuestImage.InDirectory(directory);
            if (script is null) throw new FileNotFoundException("guest/build-guest-image.sh is missing next to the binaries");
            var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            psi.ArgumentList.Add(script);
            psi.ArgumentList.Add(directory);
            using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot run /bin/sh");
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            _ = await process.StandardOutput.ReadToEndAsync(cancellationToken).ConfigureAwait(false);
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            if (process.ExitCode != 0) throw new InvalidOperationException($"building the guest image failed: {(await stderr.ConfigureAwait(false)).Trim()}");
            await File.WriteAllTextAsync(stampFile, stamp, cancellationToken).ConfigureAwait(false);
            return GuestImage.InDirectory(directory);
        }
        finally { Building.Release(); }
    }
}
