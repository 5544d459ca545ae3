using Akka.Actor;
using Akka.Configuration;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Serialization;
using Xunit;

namespace VMScatter.Cluster.Tests;

public sealed class SerializerWarmupSettingsTests
{
    [Fact]
    public void Nodes_warm_serializers_at_start_unless_configured_otherwise_and_a_bad_value_is_refused_by_name()
    {
        Assert.Equal(SerializerWarmupPolicy.AtStart, SerializerWarmupSettings.From(NodeConfig.Build(null, "")));
        Assert.Equal(SerializerWarmupPolicy.OnFirstUse, SerializerWarmupSettings.From(NodeConfig.Build(null, NodeProcess.TestNodeHocon)));
        var e = Assert.Throws<ConfigurationException>(() => SerializerWarmupSettings.From(NodeConfig.Build(null, "vmscatter.node.serializer-warmup = sometimes")));
        Assert.Equal("vmscatter.node.serializer-warmup must be one of at-start, on-first-use (got 'sometimes')", e.Message);
    }

    [Theory]
    [InlineData(SerializerWarmupPolicy.AtStart)]
    [InlineData(SerializerWarmupPolicy.OnFirstUse)]
    public async Task A_migration_beginning_on_a_node_not_warm_warms_it_only_where_the_node_warms_at_start(SerializerWarmupPolicy policy)
    {
        string hocon = policy == SerializerWarmupPolicy.AtStart ? "" : NodeProcess.TestNodeHocon;
        using var system = ActorSystem.Create("warmup", NodeConfig.Build(null, hocon + "\nakka.actor.provider = local"));
        Assert.False(SerializerWarmup.IsWarm(system));
        var warming = SerializerWarmup.EnsureWarm(system);
        if (policy == SerializerWarmupPolicy.OnFirstUse)
        {
            Assert.Null(warming);
            Assert.False(SerializerWarmup.IsWarm(system));
            return;
        }
        Assert.NotNull(warming);
        Assert.True(await warming > 50, "every protocol type round-tripped");
        Assert.True(SerializerWarmup.IsWarm(system));
        Assert.Null(SerializerWarmup.EnsureWarm(system)); // warm now: nothing more to do
    }
}
