using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;

namespace VMScatter.Cluster.Source;

/// <summary>
/// Which targets a round overdue is blamed on. In a relay chain a group's content reaches a host through the hosts
/// before it (lower indexes), so a host waiting on a dead relay looks as overdue as the relay: the first time, only
/// targets with no unapplied host upstream in any of their groups are blamed (the relay's loss resends the round to
/// the rest); if the round is overdue again, every target that has not applied it is.
/// </summary>
public static class OverdueBlame
{
    public static ulong Suspects(IReadOnlyList<GroupTransfer> groups, ulong unapplied, GroupTransport transport, bool again)
    {
        if (again || transport != GroupTransport.RelayChain) return unapplied;
        ulong waitingOnRelay = 0;
        foreach (var g in groups)
        {
            ulong pending = g.TargetMask & unapplied;
            if (pending == 0) continue;
            // Every unapplied host of the group after its first unapplied one gets the content through it.
            waitingOnRelay |= pending & (pending - 1);
        }
        return unapplied & ~waitingOnRelay;
    }
}
