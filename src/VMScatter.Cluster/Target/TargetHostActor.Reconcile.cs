using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Target;

/// <summary>A scheduler that took over asks which VMs granted here run here (see <see cref="QueryLanded"/>).</summary>
public sealed partial class TargetHostActor
{
    private void AnswerLanded(QueryLanded m)
    {
        _incoming.TryGetValue(m.MigrationId, out var inc);
        var (running, starting, notHere) = (new List<VmId>(), new List<VmId>(), new List<VmId>());
        foreach (var id in m.VmIds.Distinct())
        {
            if (_running.ContainsKey(id) || inc?.Resumed.Contains(id) == true) running.Add(id);
            else if (inc?.Resuming.Contains(id) == true) starting.Add(id);
            else
            {
                // Never started here from now on (a grant still on its way finds it discarded and goes back), so the
                // grant returns now and the source may run the VM again.
                inc?.Discarded.Add(id);
                m.GrantedBy.Tell(new ReturnResumeGrant(m.MigrationId, id, _hostId));
                notHere.Add(id);
            }
        }
        if (notHere.Count > 0) _log.Warning("Migration {0}: VM(s) {1} not started here; their grants go back to the source", m.MigrationId, string.Join(", ", notHere));
        if (inc is not null) ReleaseIfSettled(m.MigrationId);
        Sender.Tell(new LandedState(m.MigrationId, _hostId, running, starting, notHere));
    }
}
