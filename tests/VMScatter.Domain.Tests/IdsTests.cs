using VMScatter.Domain;
using Xunit;

namespace VMScatter.Domain.Tests;

public class IdsTests
{
    [Theory]
    [InlineData("vm-0")]
    [InlineData("qemu.guest_1")]
    [InlineData("A")]
    [InlineData("0123456789012345678901234567890123456789012345678901234567890123")] // 64
    public void Names_of_letters_digits_dots_underscores_and_dashes_are_ids(string name)
    {
        Assert.Equal(name, new VmId(name).Value);
        Assert.Equal(name, new HostId(name).ToString());
        Assert.True(Ids.IsValid(name));
    }

    [Theory]
    [InlineData("")]
    [InlineData("../etc")]
    [InlineData("vm/1")]
    [InlineData(".hidden")]
    [InlineData("-flag")]
    [InlineData("vm 1")]
    [InlineData("vm\n1")]
    [InlineData("01234567890123456789012345678901234567890123456789012345678901234")] // 65
    public void Anything_else_is_refused_with_the_rule(string name)
    {
        var e = Assert.Throws<FormatException>(() => new VmId(name));
        Assert.Contains("1-64 letters, digits", e.Message);
        Assert.Throws<FormatException>(() => new HostId(name));
        Assert.False(Ids.IsValid(name));
    }

    [Fact]
    public void Ids_compare_by_value_and_order_ordinally()
    {
        Assert.Equal(new VmId("vm-1"), new VmId("vm-1"));
        Assert.NotEqual(new VmId("vm-1"), new VmId("VM-1"));
        Assert.Equal(["B", "a", "b"], new[] { new HostId("b"), new HostId("a"), new HostId("B") }.Order().Select(h => h.Value));
        var id = MigrationId.New();
        Assert.Equal(id, MigrationId.Create(id.ToString()));
        Assert.False(MigrationId.TryParse("not-a-guid", out _));
        Assert.Throws<FormatException>(() => MigrationId.Create("nope"));
    }
}
