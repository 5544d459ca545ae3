using Akka.Configuration;

namespace VMScatter.Cluster.Serialization;

/// <summary>When a node compiles Hyperion's serializers for the protocol (vmscatter.node.serializer-warmup).</summary>
public enum SerializerWarmupPolicy
{
    /// <summary>Every protocol type round-tripped at node start, so no handover message compiles one inside a guest's pause.</summary>
    AtStart,

    /// <summary>None at start: each type is compiled where it is first sent or received (a process that never measures pauses).</summary>
    OnFirstUse,
}

/// <summary>Reads <see cref="SerializerWarmupPolicy"/> from a node's configuration.</summary>
public static class SerializerWarmupSettings
{
    public const string Path = "vmscatter.node.serializer-warmup";

    /// <summary>The setting, spelled as every policy setting is (<see cref="Source.DataPlaneSettings.Choice{T}"/>); at-start where a configuration lacks it.</summary>
    public static SerializerWarmupPolicy From(Config config) =>
        config.HasPath(Path) ? Source.DataPlaneSettings.Choice<SerializerWarmupPolicy>(config, Path) : SerializerWarmupPolicy.AtStart;
}
