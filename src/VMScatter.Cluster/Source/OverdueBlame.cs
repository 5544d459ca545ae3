using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;

namespace VMScatter.Cluster.Source;

/// <summary>
/// Which targets a round overdue is blamed on. In a relay chain a group's content reaches a host through the hosts
/// before it (lower indexes), so a host waiting on a dead relay looks as overdue as the relay, and a relay may die after
/// applying the round but before passing it all on. The blame widens with each overdue of the same round, giving the
/// failure detector (which removes a dead relay, and the loss resends the round) a round timeout at each step:
/// <see cref="OverdueStrike.First"/> blames only hosts with no host before them in any of their groups;
/// <see cref="OverdueStrike.Second"/> also hosts behind applied hosts only; <see cref="OverdueStrike.Last"/> every
/// target that has not applied the round.
/// </summary>
public static class OverdueBlame
{
    public static ulong Suspects(IReadOnlyList<GroupTransfer> groups, ulong unapplied, GroupTransport transport, OverdueStrike strike)
    {
        if (strike == OverdueStrike.Last || transport != GroupTransport.RelayChain) return unapplied;
        ulong spared = 0;
        foreach (var g in groups)
        {
            // First: every host of the group after its first one. Second: after its first unapplied one.
            ulong upstreamOf = strike == OverdueStrike.First ? g.TargetMask : g.TargetMask & unapplied;
            if (upstreamOf == 0) continue;
            ulong head = upstreamOf & (~upstreamOf + 1);
            spared |= g.TargetMask & ~(head | (head - 1));
        }
        return unapplied & ~spared;
    }
}

/// <summary>How many times in a row one round was found overdue; see <see cref="OverdueBlame"/>.</summary>
public enum OverdueStrike { First, Second, Last }
