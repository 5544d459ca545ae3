using VMScatter.Cluster.Source;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>Who an overdue round is blamed on: a host behind a relay is not, the first time, nor behind a dead one the second.</summary>
public class OverdueBlameTests
{
    private static GroupTransfer Group(params int[] targets) => new(targets.Aggregate(0UL, (m, t) => m | 1UL << t), [1]);

    [Fact]
    public void In_a_relay_chain_the_blame_widens_from_group_heads_to_hosts_behind_unapplied_ones_to_all()
    {
        // Groups {0,1,2} and {1,3}; 0 applied the round, 1, 2 and 3 did not: 1 gets {0,1,2} through 0, 2 through 0 and 1, 3 through 1.
        var groups = new[] { Group(0, 1, 2), Group(1, 3) };
        Assert.Equal(0UL, OverdueBlame.Suspects(groups, unapplied: 0b1110, GroupTransport.RelayChain, OverdueStrike.First));
        // Second: 0 applied, so 1 is first in line; 2 and 3 wait on it.
        Assert.Equal(0b0010UL, OverdueBlame.Suspects(groups, unapplied: 0b1110, GroupTransport.RelayChain, OverdueStrike.Second));
        Assert.Equal(0b1110UL, OverdueBlame.Suspects(groups, unapplied: 0b1110, GroupTransport.RelayChain, OverdueStrike.Last));
    }

    [Fact]
    public void A_host_behind_a_relay_that_applied_the_round_is_not_blamed_at_first()
    {
        // The flaky case of a fresh-clone CI: relay 1 applied the round, then died before passing all of {1,2} on to 2.
        var groups = new[] { Group(1, 2) };
        Assert.Equal(0UL, OverdueBlame.Suspects(groups, unapplied: 0b100, GroupTransport.RelayChain, OverdueStrike.First));
        Assert.Equal(0b100UL, OverdueBlame.Suspects(groups, unapplied: 0b100, GroupTransport.RelayChain, OverdueStrike.Second));
    }

    [Fact]
    public void A_host_first_in_one_group_but_behind_another_host_in_another_is_not_blamed_at_first()
    {
        // 2 heads {2,4} but gets {1,2} through 1; 4 waits on 2.
        var groups = new[] { Group(1, 2), Group(2, 4) };
        Assert.Equal(0b00010UL, OverdueBlame.Suspects(groups, unapplied: 0b10110, GroupTransport.RelayChain, OverdueStrike.First));
        Assert.Equal(0b00010UL, OverdueBlame.Suspects(groups, unapplied: 0b10110, GroupTransport.RelayChain, OverdueStrike.Second));
        // 1 applied: 2 heads the unapplied hosts of both its groups, 4 still waits on it.
        Assert.Equal(0UL, OverdueBlame.Suspects(groups, unapplied: 0b10100, GroupTransport.RelayChain, OverdueStrike.First));
        Assert.Equal(0b00100UL, OverdueBlame.Suspects(groups, unapplied: 0b10100, GroupTransport.RelayChain, OverdueStrike.Second));
    }

    [Fact]
    public void With_fan_out_every_host_gets_its_content_from_the_source_and_every_unapplied_one_is_blamed()
    {
        var groups = new[] { Group(0, 1, 2) };
        Assert.Equal(0b110UL, OverdueBlame.Suspects(groups, unapplied: 0b110, GroupTransport.FanOut, OverdueStrike.First));
    }

    [Fact]
    public void A_host_with_nothing_relayed_to_it_this_round_is_blamed_at_first()
    {
        // 3 receives only maps and the round's end, straight from the source; 0 heads {0,1}, 1 waits on it.
        var groups = new[] { Group(0, 1) };
        Assert.Equal(0b1001UL, OverdueBlame.Suspects(groups, unapplied: 0b1011, GroupTransport.RelayChain, OverdueStrike.First));
    }
}
