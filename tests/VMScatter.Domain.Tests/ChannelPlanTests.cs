using VMScatter.DataPlane.Multicast;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>Which groups get a multicast channel of their own, and which channel carries a group's batch.</summary>
public class ChannelPlanTests
{
    [Fact]
    public void A_batch_goes_on_the_channel_of_exactly_its_members_else_the_smallest_holding_them_all_else_by_tcp()
    {
        ulong[] open = [0b1111, 0b0011, 0b0111];
        Assert.Equal(1, ChannelPlan.Choose(open, 0b0011));
        Assert.Equal(2, ChannelPlan.Choose(open, 0b0110)); // 0111 wastes one member, 1111 two
        Assert.Equal(0, ChannelPlan.Choose(open, 0b1001));
        Assert.Equal(-1, ChannelPlan.Choose(open, 0b10001)); // host 4 is on no channel
        Assert.Equal(-1, ChannelPlan.Choose([], 0b11));
    }

    [Fact]
    public void The_groups_that_would_waste_most_on_a_shared_channel_are_opened_in_the_rounds_order_within_the_pool()
    {
        ulong[] open = [0b1111];
        // (members, contents): 0011 wastes 2 × 100 on channel 0, 0110 2 × 10, 0111 1 × 500 (twice: 1,000), 1111 none.
        (ulong, long)[] groups = [(0b0110, 10), (0b0111, 500), (0b1111, 900), (0b0011, 100), (0b0111, 500), (0b0001, 1000)];
        Assert.Equal([0b0110UL, 0b0111, 0b0011], ChannelPlan.ToOpen(open, capacity: 4, groups));
        // Room for two: the two that save most, still in the round's order.
        Assert.Equal([0b0111UL, 0b0011], ChannelPlan.ToOpen(open, capacity: 3, groups));
        Assert.Empty(ChannelPlan.ToOpen(open, capacity: 1, groups));
        // Open already: not again; a lone member or an empty group never gets one.
        Assert.Equal([0b0110UL], ChannelPlan.ToOpen([0b1111, 0b0111, 0b0011], capacity: 8, groups));
        Assert.Empty(ChannelPlan.ToOpen(open, capacity: 8, [(0b0100, 50), (0b0011, 0)]));
    }

    [Fact]
    public void Channel_c_of_a_migration_is_its_own_group_and_settings_that_leave_the_multicast_range_are_refused()
    {
        var settings = new MulticastSettings { Channels = 4 };
        var id = Guid.NewGuid();
        Assert.Equal(["239.255.90.1", "239.255.90.2", "239.255.90.3", "239.255.90.4"], Enumerable.Range(0, 4).Select(c => settings.GroupFor(id, c).Address.ToString()));
        Assert.Single(Enumerable.Range(0, 4).Select(c => settings.GroupFor(id, c).Port).Distinct());
        Assert.Throws<ArgumentOutOfRangeException>(() => settings.GroupFor(id, 4));
        Assert.Null(settings.Problem());
        Assert.Contains("channels 0", new MulticastSettings { Channels = 0 }.Problem());
        Assert.Contains("leaves the multicast range", new MulticastSettings { Group = System.Net.IPAddress.Parse("239.255.255.250"), Channels = 16 }.Problem());
    }
}
