using Akka.Actor;
using Akka.Persistence;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>A scheduler node's journal warm-up writes one event under its own id and deletes it, start after start.</summary>
public class JournalWarmupTests() : Akka.TestKit.Xunit2.TestKit(TestConfig.Local(TestConfig.TempJournal()))
{
    [Fact]
    public async Task The_warm_up_event_is_written_then_deleted_and_a_restarted_node_warms_again()
    {
        var host = new HostId("scheduler-1");
        Assert.True(await JournalWarmup.Run(Sys, host));
        var first = await Recovered($"vmscatter-journal-warmup-{host.Value}");
        // Written (the sequence number went to 1) and deleted (nothing replays).
        Assert.Equal((0, 1L), first);

        // The name is free again once the first has stopped: a restart writes the next sequence number, no conflict.
        await AwaitAssertAsync(async () => Assert.True(await JournalWarmup.Run(Sys, host)));
        Assert.Equal((0, 2L), await Recovered($"vmscatter-journal-warmup-{host.Value}"));
    }

    private async Task<(int Events, long LastSequenceNr)> Recovered(string persistenceId)
    {
        var probe = CreateTestProbe();
        Sys.ActorOf(Props.Create(() => new Replayer(persistenceId, probe.Ref)));
        return await probe.ExpectMsgAsync<(int, long)>();
    }

    private sealed class Replayer : ReceivePersistentActor
    {
        private int _events;

        public Replayer(string persistenceId, IActorRef report)
        {
            PersistenceId = persistenceId;
            Recover<JournalWarmedUp>(_ => _events++);
            Recover<RecoveryCompleted>(_ =>
            {
                report.Tell((_events, LastSequenceNr));
                Context.Stop(Self);
            });
        }

        public override string PersistenceId { get; }
    }
}
