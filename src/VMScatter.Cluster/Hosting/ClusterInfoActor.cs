using Akka.Actor;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// /user/cluster-info on every node, registered with the ClusterClient receptionist: answers the console's membership
/// question from this node's own view of the cluster (the console, not a member, has none).
/// </summary>
public sealed class ClusterInfoActor : ReceiveActor
{
    public const string Name = "cluster-info";

    public ClusterInfoActor()
    {
        var cluster = Akka.Cluster.Cluster.Get(Context.System);
        Receive<GetClusterMembers>(_ =>
        {
            var state = cluster.State;
            var unreachable = state.Unreachable.Select(m => m.UniqueAddress).ToHashSet();
            var members = state.Members.OrderBy(m => m.Address.ToString(), StringComparer.Ordinal)
                .Select(m => new ClusterMemberInfo(m.Address.ToString(), m.Roles.Order(StringComparer.Ordinal).ToArray(), m.Status.ToString(), !unreachable.Contains(m.UniqueAddress)))
                .ToArray();
            Sender.Tell(new ClusterMembers(cluster.SelfAddress.ToString(), members));
        });
    }
}
