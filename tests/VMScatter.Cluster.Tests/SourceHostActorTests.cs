using Akka.Actor;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Source;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

public class SourceHostActorTests : Akka.TestKit.Xunit2.TestKit
{
    public SourceHostActorTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    [Fact]
    public async Task A_crashed_migration_leaves_a_granted_vm_paused_and_resumes_the_others()
    {
        var model = new SyntheticGuestModel { MemoryBytes = 1 << 20, DirtyPagesPerSecond = 0 };
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, model, 7), runWorkload: false);
        var scheduler = CreateTestProbe();
        var settings = SourceSettings.From(Sys.Settings.Config);
        var host = Sys.ActorOf(Props.Create(() => new SourceHostActor(H("src"), fleet, settings, scheduler.Ref, new PendingDisposals())), "host");
        scheduler.ExpectMsg<RegisterSourceHost>();
        var id = MigrationId.New();
        host.Tell(new AnalyzeVms(id, [fleet[0].Description.Id, fleet[1].Description.Id], TestConfig.Options()), scheduler.Ref);
        // The host takes Identify in mailbox order: once it answers, the migration actor exists.
        host.Tell(new Identify(1), TestActor);
        ExpectMsg<ActorIdentity>();
        var migration = await Sys.ActorSelection(host.Path / $"migration-{id.Value:N}").ResolveOne(TimeSpan.FromSeconds(10));

        // Both paused for their stop-and-copy; the second granted to its target, which may be running it by now.
        foreach (var vm in fleet) await vm.PauseAsync();
        host.Tell(new SourceVmGranted(id, fleet[1].Description.Id, Granted: true), migration);
        Watch(migration);
        migration.Tell(Kill.Instance);
        ExpectTerminated(migration);

        AwaitCondition(() => fleet[0].State == VmRunState.Running, TimeSpan.FromSeconds(10));
        Assert.Equal(VmRunState.Paused, fleet[1].State); // never two running copies
        foreach (var vm in fleet) await vm.DisposeAsync();
    }
}
