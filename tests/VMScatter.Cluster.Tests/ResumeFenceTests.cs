using VMScatter.Cluster.Source;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>The source's resume fence: a paused VM is granted to its target or resumed here, never both.</summary>
public class ResumeFenceTests
{
    [Fact]
    public void A_grant_and_a_resume_here_exclude_each_other()
    {
        var fence = new ResumeFence();
        fence.Transferred(V("a"), H("t1"), 0);
        fence.Transferred(V("b"), H("t1"), 0);
        Assert.Null(fence.Grant(V("a"), H("t1")));
        Assert.Equal("VM a is granted to t1 already", fence.Grant(V("a"), H("t1"))); // one start per grant
        Assert.Equal("VM a is granted to t1, which may be running it", fence.ResumeHere(V("a")));
        Assert.Null(fence.ResumeHere(V("b")));
        Assert.Equal("VM b runs on the source again", fence.Grant(V("b"), H("t1")));
        Assert.True(fence.IsGranted(V("a")));
        Assert.False(fence.IsGranted(V("b")));
    }

    [Fact]
    public void A_voided_grant_frees_the_vm_for_the_source_or_another_target_and_only_its_holder_can_be_voided()
    {
        var fence = new ResumeFence();
        fence.Transferred(V("a"), H("t1"), 0);
        Assert.Null(fence.Grant(V("a"), H("t1")));
        Assert.False(fence.Void(V("a"), H("t2"))); // not the holder
        Assert.True(fence.IsGranted(V("a")));
        Assert.True(fence.Void(V("a"), H("t1")));
        Assert.False(fence.IsGranted(V("a")));
        Assert.False(fence.Void(V("a"), H("t1"))); // once
        Assert.Empty(fence.Overdue(100, TimeSpan.Zero)); // not waiting: the source decides (an orphan)
        fence.Transferred(V("a"), H("t2"), 5); // re-placed, and transferred again
        Assert.Null(fence.Grant(V("a"), H("t2")));
        Assert.Equal("t2", fence.HolderOf(V("a"))?.Value);
    }

    [Fact]
    public void Only_the_vms_target_gets_it_and_only_after_its_transfer()
    {
        var fence = new ResumeFence();
        Assert.Equal("VM a is not waiting for a handover here", fence.Grant(V("a"), H("t1")));
        fence.Transferred(V("a"), H("t1"), 0);
        Assert.Equal("host t2 is not VM a's target (t1)", fence.Grant(V("a"), H("t2")));
        Assert.Null(fence.Grant(V("a"), H("t1")));
        Assert.Equal("VM a is granted to t1", fence.Grant(V("a"), H("t2")));
        Assert.False(fence.Return(V("a"), H("t2"))); // only the holder hands it back
    }

    [Fact]
    public void A_vm_waiting_past_the_bound_is_overdue_unless_granted_and_a_returned_grant_is_overdue_at_once()
    {
        var fence = new ResumeFence();
        var bound = TimeSpan.FromSeconds(30);
        fence.Transferred(V("a"), H("t1"), 10);
        fence.Transferred(V("b"), H("t1"), 10);
        fence.Transferred(V("c"), H("t2"), 25);
        Assert.Empty(fence.Overdue(39.9, bound));
        Assert.Null(fence.Grant(V("b"), H("t1")));
        Assert.Equal([V("a")], fence.Overdue(40, bound));
        Assert.Equal([V("a"), V("c")], fence.Overdue(55, bound));
        Assert.True(fence.Return(V("b"), H("t1")));
        Assert.Contains(V("b"), fence.Overdue(11, bound));
        Assert.Null(fence.ResumeHere(V("b")));
        Assert.DoesNotContain(V("b"), fence.Overdue(100, bound));
    }
}
