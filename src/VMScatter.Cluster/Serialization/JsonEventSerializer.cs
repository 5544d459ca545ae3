using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Akka.Actor;
using Akka.Serialization;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Serialization;

/// <summary>
/// Serializes the scheduler's persisted events as JSON with the event's type name as manifest. The journal
/// outlives any one build, so its format must tolerate change: fields added later are absent from old events
/// (they get defaults) and fields removed are ignored. Hyperion, which serializes the runtime shape, cannot
/// replay events written by an earlier shape of a record; it stays the serializer of wire messages.
/// </summary>
public sealed class JsonEventSerializer : SerializerWithStringManifest
{
    private static readonly Dictionary<string, Type> Types = typeof(IPersistedEvent).Assembly.GetTypes()
        .Where(t => typeof(IPersistedEvent).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
        .ToDictionary(t => t.Name);

    private static readonly JsonSerializerOptions Options = new()
    {
        TypeInfoResolver = new DefaultJsonTypeInfoResolver
        {
            // `required` members are required of new code, not of events an older build wrote.
            Modifiers = { info => { foreach (var p in info.Properties) p.IsRequired = false; } },
        },
    };

    public JsonEventSerializer(ExtendedActorSystem system) : base(system) { }

    public override int Identifier => 4711;

    public override byte[] ToBinary(object obj) => JsonSerializer.SerializeToUtf8Bytes(obj, obj.GetType(), Options);

    public override object FromBinary(byte[] bytes, string manifest) =>
        Types.TryGetValue(manifest, out var type)
            ? JsonSerializer.Deserialize(bytes, type, Options) ?? throw new SerializationException($"empty {manifest} event")
            : throw new SerializationException($"unknown event type '{manifest}' in the journal");

    public override string Manifest(object o) => o.GetType().Name;
}

public sealed class SerializationException(string message) : Exception(message);
