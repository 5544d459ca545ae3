using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Says on the node's log when another member becomes unreachable, reachable again, or is removed (downed or left):
/// what an operator, or a test that kills a node, needs to see of the split-brain resolver's decisions.
/// </summary>
public sealed class MembershipWatcher : ReceiveActor
{
    public MembershipWatcher()
    {
        var log = Context.GetLogger();
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        Receive<ClusterEvent.UnreachableMember>(m => log.Warning("member {0} ({1}) is unreachable", m.Member.Address, Roles(m.Member)));
        Receive<ClusterEvent.ReachableMember>(m => log.Warning("member {0} ({1}) is reachable again", m.Member.Address, Roles(m.Member)));
        Receive<ClusterEvent.MemberRemoved>(m => log.Warning("member {0} ({1}) removed, was {2}", m.Member.Address, Roles(m.Member), m.PreviousStatus));
        Receive<ClusterEvent.IClusterDomainEvent>(_ => { });
        cluster.Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents,
            typeof(ClusterEvent.UnreachableMember), typeof(ClusterEvent.ReachableMember), typeof(ClusterEvent.MemberRemoved));
    }

    protected override void PostStop() => Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);

    private static string Roles(Member member) => string.Join(",", member.Roles.Order());
}
