using Akka.Configuration;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Compression;
using VMScatter.DataPlane;

namespace VMScatter.Cluster.Tests;

internal static class TestConfig
{
    /// <summary>Every journal of this test run lives here; the folder goes when the test process ends.</summary>
    private static readonly Lazy<string> JournalDirectory = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("vmscatter-test-journals-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { /* a file still open: the OS temp cleaner takes it */ }
        };
        return dir;
    });

    public static string TempJournal() => $"Data Source={Path.Combine(JournalDirectory.Value, $"{Guid.NewGuid():N}.db")}";

    /// <summary>The project's own HOCON, on a local (non-cluster) provider, with its own SQLite journal.</summary>
    public static Config Local(string journal) => NodeConfig.Build(null, $"""
        akka.actor.provider = local
        akka.loglevel = WARNING
        # Deadlines, not delays: the journal's first write (table creation, JIT) can take seconds on a busy 2-core machine.
        akka.test.single-expect-default = 15s
        vmscatter.persistence.connection-string = {NodeConfig.Quote(journal)}
        """);

    public static MigrationOptions Options(GroupTransport transport = GroupTransport.RelayChain) =>
        new(PlacementStrategy.TrafficAware, transport, CompressionMode.Lz4, MaxRounds: 8, DowntimeTargetMs: 300);
}
