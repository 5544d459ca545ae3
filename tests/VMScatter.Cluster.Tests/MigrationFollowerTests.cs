using System.Threading.Channels;
using Akka.Actor;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>What a console following a migration passes on, when some of the scheduler's events never reached it.</summary>
public class MigrationFollowerTests : Akka.TestKit.Xunit2.TestKit
{
    [Fact]
    public async Task A_target_lost_while_the_consoles_events_were_cut_off_is_said_from_the_report_once_before_it()
    {
        var via = CreateTestProbe();
        var events = Channel.CreateUnbounded<IVmScatterProtocol>();
        var request = new StartMigration(MigrationId.New(), H("src"), [], [], TestConfig.Options());
        var follower = Sys.ActorOf(Props.Create(() => new MigrationFollowerActor(via.Ref, m => m, request, events.Writer)));
        Assert.Equal(request, via.ExpectMsg<StartMigration>());

        follower.Tell(new MigrationAccepted(request.MigrationId, 2, 3));
        // target-1's loss reached the console; target-2's did not (the node its receptionist ran on was the one lost).
        follower.Tell(new MigrationTargetLost(request.MigrationId, H("target-1"), "left the cluster"));
        var report = TestConfig.SampleReport(request.MigrationId.ToString()) with { LostTargets = ["target-1: left the cluster", "target-2: did not apply round 3"] };
        follower.Tell(new MigrationFinished(request.MigrationId, report));

        var seen = new List<IVmScatterProtocol>();
        await foreach (var e in events.Reader.ReadAllAsync()) seen.Add(e);
        Assert.Equal(4, seen.Count);
        Assert.IsType<MigrationAccepted>(seen[0]);
        Assert.Equal(H("target-1"), Assert.IsType<MigrationTargetLost>(seen[1]).HostId);
        var missed = Assert.IsType<MigrationTargetLost>(seen[2]);
        Assert.Equal((H("target-2"), "did not apply round 3"), (missed.HostId, missed.Reason));
        Assert.Same(report, Assert.IsType<MigrationFinished>(seen[3]).Report);
    }
}
