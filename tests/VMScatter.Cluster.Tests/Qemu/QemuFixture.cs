using Xunit;
using VMScatter.Qemu;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>
/// What the QEMU tests share: the guest image (built once from the host's Debian packages) and settings that put
/// every RAM file and runtime directory under a tag unique to this test run, so the tests can prove nothing of
/// theirs is left behind.
/// </summary>
public sealed class QemuFixture
{
    public static readonly string ImageDirectory = Path.Combine(AppContext.BaseDirectory, "guest-image");

    public QemuFixture()
    {
        Image = GuestImageBuilder.EnsureAsync(ImageDirectory).GetAwaiter().GetResult();
    }

    public GuestImage Image { get; }

    /// <summary>Settings whose files all carry <paramref name="tag"/> (RAM files in /dev/shm, runtime dirs in a tagged temp dir).</summary>
    public static QemuSettings SettingsFor(string tag)
    {
        string runtime = Path.Combine(Path.GetTempPath(), $"vmscatter-test-{tag}");
        string ram = Path.Combine("/dev/shm", $"vmscatter-test-{tag}");
        Directory.CreateDirectory(runtime);
        Directory.CreateDirectory(ram);
        return new QemuSettings { RuntimeDirectory = runtime, RamDirectory = ram, BootTimeout = TimeSpan.FromSeconds(120) };
    }

    /// <summary>What is left of a test's QEMU world: files under its directories, and QEMU processes naming them.</summary>
    public static (string[] Files, int[] Processes) Leftovers(QemuSettings settings)
    {
        var files = new[] { settings.RuntimeDirectory, settings.RamDirectory }
            .Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFileSystemEntries(d, "*", SearchOption.AllDirectories))
            .ToArray();
        var processes = Directory.EnumerateDirectories("/proc")
            .Select(d => (Dir: d, Ok: int.TryParse(Path.GetFileName(d), out int pid), Pid: pid))
            .Where(x => x.Ok)
            .Where(x =>
            {
                try { return File.ReadAllText(Path.Combine(x.Dir, "cmdline")).Replace('\0', ' ').Contains(settings.RamDirectory, StringComparison.Ordinal); }
                catch (IOException) { return false; }
                catch (UnauthorizedAccessException) { return false; }
            })
            .Select(x => x.Pid)
            .ToArray();
        return (files, processes);
    }

    /// <summary>Nothing of a test's QEMU world is left (no file, no QEMU naming its directories); then its directories go.</summary>
    public static void AssertNothingLeft(QemuSettings settings)
    {
        var (files, processes) = Leftovers(settings);
        Assert.Empty(files);
        Assert.Empty(processes);
        RemoveDirectories(settings);
    }

    /// <summary>Removes the (by then empty) tagged directories themselves.</summary>
    public static void RemoveDirectories(QemuSettings settings)
    {
        foreach (var d in new[] { settings.RuntimeDirectory, settings.RamDirectory })
            if (Directory.Exists(d) && !Directory.EnumerateFileSystemEntries(d).Any()) Directory.Delete(d);
    }
}

[CollectionDefinition("qemu")]
public sealed class QemuCollection : ICollectionFixture<QemuFixture>;
