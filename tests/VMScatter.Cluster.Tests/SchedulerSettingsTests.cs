using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Scheduler;
using Xunit;

namespace VMScatter.Cluster.Tests;

public sealed class SchedulerSettingsTests
{
    [Fact]
    public void The_placement_budget_comes_from_the_configuration_and_defaults_to_150_ms()
    {
        Assert.Equal(TimeSpan.FromMilliseconds(150), SchedulerSettings.From(NodeConfig.Build(null, "")).PlacementBudget);
        Assert.Equal(TimeSpan.FromSeconds(2), SchedulerSettings.From(NodeConfig.Build(null, "vmscatter.scheduler.placement-budget = 2s")).PlacementBudget);
    }
}
