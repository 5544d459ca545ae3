using System.Threading.Channels;
using Akka.Actor;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Console;

/// <summary>
/// Submits one migration to the scheduler singleton and passes everything the scheduler says about it into a
/// channel the console reads. Stops itself when the migration finished or was rejected.
/// </summary>
public sealed class MigrationFollowerActor : ReceiveActor
{
    public MigrationFollowerActor(IActorRef schedulerProxy, StartMigration request, ChannelWriter<IVmScatterProtocol> events)
    {
        Receive<Submit>(_ => schedulerProxy.Tell(request));
        Receive<MigrationRejected>(m => { events.TryWrite(m); events.TryComplete(); Context.Stop(Self); });
        Receive<MigrationFinished>(m => { events.TryWrite(m); events.TryComplete(); Context.Stop(Self); });
        Receive<IVmScatterProtocol>(m => events.TryWrite(m));
    }

    protected override void PreStart() => Self.Tell(Submit.Instance);

    private sealed record Submit { public static readonly Submit Instance = new(); }
}
