using Akka.Actor;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Bench.Chaos;

/// <summary>Asks the source and target host actors of a chaos cluster what they run (<see cref="GetHostInventory"/>), from the harness's console node.</summary>
public static class InventoryProbe
{
    public static async Task<(IReadOnlyList<HostView> Answered, IReadOnlyList<string> Silent)> AskAsync(ActorSystem system, IEnumerable<ChaosNode> nodes, TimeSpan timeout)
    {
        var hosts = nodes.Where(n => n.Role != ChaosRole.Scheduler && !n.Process.HasExited).ToArray();
        var answers = await Task.WhenAll(hosts.Select(async n =>
        {
            string path = $"{n.Address}/user/{(n.Role == ChaosRole.Source ? "source-host" : "target-host")}";
            try
            {
                var inv = await system.ActorSelection(path).Ask<HostInventory>(GetHostInventory.Instance, timeout).ConfigureAwait(false);
                return (n.HostId, View: new HostView(n.HostId, n.Role, inv.Running.Select(v => v.Value).ToArray(), inv.Paused.Select(v => v.Value).ToArray()));
            }
            catch (Exception e) when (e is AskTimeoutException or TaskCanceledException) { return (n.HostId, View: (HostView?)null); }
        })).ConfigureAwait(false);
        return (answers.Where(a => a.View is not null).Select(a => a.View!).ToArray(), answers.Where(a => a.View is null).Select(a => a.HostId).ToArray());
    }
}
