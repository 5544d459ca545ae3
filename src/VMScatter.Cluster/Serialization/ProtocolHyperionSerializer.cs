using Akka.Actor;
using Akka.Configuration;
using Akka.Serialization;

namespace VMScatter.Cluster.Serialization;

/// <summary>
/// Hyperion limited to <see cref="ProtocolTypeFilter"/>; hocon/vmscatter.conf binds the control-plane messages to it.
/// A serializer of its own because a filter given through HyperionSerializerSetup is not applied (Akka 1.5.73; checked).
/// </summary>
public sealed class ProtocolHyperionSerializer(ExtendedActorSystem system)
    : HyperionSerializer(system, FromConfig(system.Settings.Config).WithDisallowUnsafeType(true).WithTypeFilter(ProtocolTypeFilter.Instance))
{
    private const string Path = "akka.actor.serialization-settings.hyperion";

    /// <summary>Under a name that has serialization-settings of its own (Akka passes them; "json" has Newtonsoft's): Hyperion's are used.</summary>
    public ProtocolHyperionSerializer(ExtendedActorSystem system, Config ignored) : this(system) => _ = ignored;

    /// <summary>Hyperion's settings from HOCON if there are any, else its defaults (as Akka's own HyperionSerializer does).</summary>
    private static HyperionSerializerSettings FromConfig(Config config) =>
        config.HasPath(Path) ? HyperionSerializerSettings.Create(config.GetConfig(Path)) : HyperionSerializerSettings.Default;
}
