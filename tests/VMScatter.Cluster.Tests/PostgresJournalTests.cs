using Akka.Actor;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The scheduler's journal on PostgreSQL 15, shared by scheduler-role nodes: the singleton recovers on another node
/// what it journaled on the first. Needs the server ./test.sh starts (or VMSCATTER_TEST_POSTGRES).
/// </summary>
public class PostgresJournalTests
{
    private static readonly string ConnectionString = Environment.GetEnvironmentVariable("VMSCATTER_TEST_POSTGRES")
        ?? "Host=127.0.0.1;Port=5432;Username=vmscatter;Password=vmscatter;Database=vmscatter_test";

    private static Akka.Configuration.Config Node(string name) => NodeConfig.Build(null, $"""
        akka.actor.provider = local
        akka.loglevel = WARNING
        vmscatter.persistence.provider-name = "PostgreSQL.15"
        vmscatter.persistence.connection-string = {NodeConfig.Quote(ConnectionString)}
        vmscatter.node.host-id = {name}
        """);

    [Fact]
    public async Task A_scheduler_on_another_node_recovers_what_the_first_journaled()
    {
        await using (var probe = new Npgsql.NpgsqlConnection(ConnectionString))
        {
            try { await probe.OpenAsync(); }
            catch (Exception e) { Assert.Fail($"PostgreSQL is not reachable ({e.Message}): run ./test.sh, which installs and starts it, or set VMSCATTER_TEST_POSTGRES"); }
        }
        // A stream of its own per run: the database outlives test runs.
        var settings = new SchedulerSettings($"scheduler-{Guid.NewGuid():N}", TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(5)) { ReconcileTimeout = TimeSpan.FromSeconds(2) };
        var id = MigrationId.New();
        var timeout = TimeSpan.FromSeconds(30);

        using (var first = ActorSystem.Create("node-a", Node("node-a")))
        {
            var scheduler = first.ActorOf(Props.Create(() => new MigrationSchedulerActor(settings)));
            var source = first.ActorOf(Props.Create(() => new Sink()));
            var target = first.ActorOf(Props.Create(() => new Sink()));
            scheduler.Tell(new RegisterSourceHost(H("src"), source, [new VmDescription(V("vm-a"), 8 << 20, 1, "synthetic", "")]));
            scheduler.Tell(new RegisterTargetHost(H("t1"), target, 64 << 20, "127.0.0.1", 1, "synthetic"));
            var accepted = await scheduler.Ask<MigrationAccepted>(new StartMigration(id, H("src"), [], [], TestConfig.Options()), timeout);
            Assert.Equal((id, 1, 1), (accepted.MigrationId, accepted.Vms, accepted.Targets));
            var status = await scheduler.Ask<MigrationStatus>(new GetMigrationStatus(id), timeout);
            Assert.Equal(MigrationPhase.Analysing, status.Phase);
            await first.Terminate();
        }

        // Another node, another actor system, the same journal: the migration in flight there is reconciled here; its
        // source never registers with this one, so after the bound it is aborted, and says why.
        using var second = ActorSystem.Create("node-b", Node("node-b"));
        var recovered = second.ActorOf(Props.Create(() => new MigrationSchedulerActor(settings)));
        var after = await recovered.Ask<MigrationStatus>(new GetMigrationStatus(id), timeout);
        Assert.Equal(MigrationPhase.Reconciling, after.Phase);
        // Polled as a console does (deadlines, not delays: the answer changes once the bound has passed).
        var deadline = DateTime.UtcNow + timeout;
        object answer;
        while ((answer = await recovered.Ask<object>(new FollowMigration(id), timeout)) is not MigrationFinished && DateTime.UtcNow < deadline) await Task.Delay(200);
        var finished = Assert.IsType<MigrationFinished>(answer);
        Assert.Contains("source host src did not re-register", finished.Report.Error);
        Assert.Equal(MigrationPhase.Aborted, (await recovered.Ask<MigrationStatus>(new GetMigrationStatus(id), timeout)).Phase);
        // A new migration with the same id is refused: the journal knows it.
        var rejected = await recovered.Ask<MigrationRejected>(new StartMigration(id, H("src"), [], [], TestConfig.Options()), timeout);
        Assert.Equal($"migration {id} already exists", rejected.Reason);
        await second.Terminate();
    }

    private sealed class Sink : ReceiveActor
    {
        public Sink() => ReceiveAny(_ => { });
    }
}
