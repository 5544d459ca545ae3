using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Target;

/// <summary>What runs here now (see <see cref="GetHostInventory"/>): landed guests, and granted ones still starting.</summary>
public sealed partial class TargetHostActor
{
    private void AnswerInventory() => Sender.Tell(new HostInventory(_hostId,
        _running.Values.Where(v => v.State == VmRunState.Running).Select(v => v.Description.Id).Order().ToArray(),
        _incoming.Values.SelectMany(i => i.Resuming).Distinct().Order().ToArray()));
}
