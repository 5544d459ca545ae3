using Akka.Configuration;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Compression;
using VMScatter.DataPlane;
using VMScatter.Domain;

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
        # Deadlines, not delays: the journal's first write (table creation, JIT) can take seconds on a busy 2-core machine,
        # and more at the suite's start, when both test classes running side by side start cold (15 s once was not enough).
        akka.test.single-expect-default = 30s
        vmscatter.persistence.connection-string = {NodeConfig.Quote(journal)}
        """);

    public static MigrationOptions Options(GroupTransport transport = GroupTransport.RelayChain) =>
        new(PlacementStrategy.TrafficAware, transport, CompressionMode.Lz4, MaxRounds: 8, DowntimeTargetMs: 300);

    /// <summary>Why a report is not verified, for an assertion's message: its error, lost targets, re-placements and each VM that did not verify.</summary>
    public static string Why(Domain.Reports.MigrationReport r) =>
        $"error: {r.Error ?? "none"}; lost: [{string.Join("; ", r.LostTargets)}]; replaced: [{string.Join("; ", r.Replaced.Select(x => $"{x.Vm} {x.LostTarget}->{(x.NewTarget.Length > 0 ? x.NewTarget : "source")}"))}]; "
        + $"not verified: [{string.Join("; ", r.PerVm.Where(v => !(v.DigestMatched && v.HandedOver)).Select(v => $"{v.Id}@{v.Target} digest {v.DigestMatched} handed {v.HandedOver} {v.Error}"))}]";

    /// <summary>A report with every field set, for tests that journal or serialize one.</summary>
    public static Domain.Reports.MigrationReport SampleReport(string migrationId = "m", long bytesSent = 100) => new()
    {
        MigrationId = migrationId, Vms = 1, Targets = 1, GuestBytes = 4096, NaiveBytes = 4096, DistinctPages = 1, ZeroPages = 0, BytesSent = bytesSent, BytesReceived = bytesSent,
        Verified = true, TotalSeconds = 1.5, PlacementStrategy = "traffic-aware", Placement = new Dictionary<string, string> { ["vm-0"] = "t1" }, LinkBytes = 2 * bytesSent,
        GroupSwitches = 2, GroupSwitchesLowerBound = 2, GroupTransport = "relay-chain", Rounds = 2, DirtyPagesPerRound = [1, 0], CompressionRatio = 0.5,
        ByteCompares = 0, HashCollisions = 0, DowntimeMsMax = 10, DowntimeMsMedian = 10, Converged = true, Convergence = "converged", Deduplicate = true,
        LinkBitsPerSecond = 0, AnalysisSeconds = 0.1, RoundSeconds = [0.1, 0.1], SourceDigestSeconds = 0.01, Error = null,
        PerVm = [new Domain.Reports.VmReport("vm-0", "t1", true, true, 10, "a", "a", null)],
    };
}

/// <summary>Typed ids from test literals: <c>V("vm-a")</c>, <c>H("t1")</c>.</summary>
public static class TestIds
{
    public static VmId V(string id) => new(id);

    public static HostId H(string id) => new(id);
}
