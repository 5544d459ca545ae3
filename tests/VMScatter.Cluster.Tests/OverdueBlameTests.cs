using VMScatter.Cluster.Source;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>Who an overdue round is blamed on: a host behind a dead relay is not, the first time.</summary>
public class OverdueBlameTests
{
    private static GroupTransfer Group(params int[] targets) => new(targets.Aggregate(0UL, (m, t) => m | 1UL << t), [1]);

    [Fact]
    public void In_a_relay_chain_only_the_first_unapplied_host_of_each_group_is_blamed_at_first()
    {
        // Groups {0,1,2} and {1,3}; 0 applied the round, 1, 2 and 3 did not: 2 waits on 1 in the first group, 3 on 1 in the second.
        var groups = new[] { Group(0, 1, 2), Group(1, 3) };
        Assert.Equal(0b0010UL, OverdueBlame.Suspects(groups, unapplied: 0b1110, GroupTransport.RelayChain, again: false));
        // Overdue again (the relay's loss did not resend it): all of them.
        Assert.Equal(0b1110UL, OverdueBlame.Suspects(groups, unapplied: 0b1110, GroupTransport.RelayChain, again: true));
    }

    [Fact]
    public void A_host_first_in_one_group_but_behind_an_unapplied_relay_in_another_is_not_blamed_at_first()
    {
        // 2 heads {2,4} but gets {1,2} through 1; 4 waits on 2.
        var groups = new[] { Group(1, 2), Group(2, 4) };
        Assert.Equal(0b00010UL, OverdueBlame.Suspects(groups, unapplied: 0b10110, GroupTransport.RelayChain, again: false));
        // 1 applied: 2 heads both its groups, 4 still waits on it.
        Assert.Equal(0b00100UL, OverdueBlame.Suspects(groups, unapplied: 0b10100, GroupTransport.RelayChain, again: false));
    }

    [Fact]
    public void With_fan_out_every_host_gets_its_content_from_the_source_and_every_unapplied_one_is_blamed()
    {
        var groups = new[] { Group(0, 1, 2) };
        Assert.Equal(0b110UL, OverdueBlame.Suspects(groups, unapplied: 0b110, GroupTransport.FanOut, again: false));
    }

    [Fact]
    public void A_host_with_nothing_relayed_to_it_this_round_is_blamed_at_first()
    {
        // 3 receives only maps and the round's end, straight from the source.
        var groups = new[] { Group(0, 1) };
        Assert.Equal(0b1001UL, OverdueBlame.Suspects(groups, unapplied: 0b1011, GroupTransport.RelayChain, again: false));
    }
}
