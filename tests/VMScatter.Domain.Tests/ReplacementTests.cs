using VMScatter.Domain.Placement;
using Xunit;

namespace VMScatter.Domain.Tests;

public class ReplacementTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public void An_orphan_goes_where_the_vms_already_placed_share_its_pages_within_capacity()
    {
        // VMs 0 and 1 are orphans; 2 is placed on host a, 3 on host b. Orphan 0 shares everything with 3, orphan 1 with 2.
        var contents = new ExactContentModel([[1, 2, 3, 4], [10, 11, 12, 13], [10, 11, 12, 13, 14], [1, 2, 3, 4, 5]]);
        var plan = Replacement.Plan([new PlacementVm("o0", 64 * MiB), new PlacementVm("o1", 64 * MiB)],
            [new PlacementHost("a", 256 * MiB), new PlacementHost("b", 256 * MiB)], contents,
            new Dictionary<string, IReadOnlyList<int>> { ["a"] = [2], ["b"] = [3] });
        Assert.Equal(new Dictionary<string, string> { ["o0"] = "b", ["o1"] = "a" }, plan.HostOf);
        Assert.Empty(plan.Unplaced);
    }

    [Fact]
    public void A_vm_no_host_has_room_for_stays_unplaced_with_why_and_the_others_still_go()
    {
        var contents = new ExactContentModel([[1], [2], [3]]);
        var plan = Replacement.Plan([new PlacementVm("big", 200 * MiB), new PlacementVm("small", 64 * MiB), new PlacementVm("small2", 64 * MiB)],
            [new PlacementHost("a", 100 * MiB), new PlacementHost("b", 64 * MiB)], contents, new Dictionary<string, IReadOnlyList<int>>());
        Assert.Equal(["small", "small2"], plan.HostOf.Keys.Order());
        Assert.NotEqual(plan.HostOf["small"], plan.HostOf["small2"]); // 64 MiB each: one per host
        Assert.Equal(["big"], plan.Unplaced.Keys);
        Assert.Contains("room", plan.Unplaced["big"]);
    }

    [Fact]
    public void With_no_target_left_every_vm_stays()
    {
        var plan = Replacement.Plan([new PlacementVm("v", MiB)], [], new ExactContentModel([[1]]), new Dictionary<string, IReadOnlyList<int>>());
        Assert.Empty(plan.HostOf);
        Assert.Equal("no target left", plan.Unplaced["v"]);
    }
}
