using System.Collections;
using System.Reflection;
using System.Runtime.CompilerServices;
using Akka.Actor;
using Akka.Event;

namespace VMScatter.Cluster.Serialization;

/// <summary>
/// Hyperion builds a serializer for a type the first time it meets it (an expression tree compiled to code: tens of
/// milliseconds of JIT per type, measured). The handover messages are first sent while the VMs are paused, so that
/// cost would land in their downtime; round-tripping every protocol type once at node start pays it up front.
/// Akka replaces a system's Serialization (and with it Hyperion's caches) whenever an extension injects its default
/// config (cluster singleton, persistence), so the node loads those first (<see cref="Hosting.VmScatterNode"/>) and
/// the warm-up remembers which instance it warmed: measured before that, every node's instance had been replaced by
/// the time a migration began, and re-compiling the serializers cost ~3.5 s of CPU during the migration.
/// </summary>
public static class SerializerWarmup
{
    private static readonly ConditionalWeakTable<ActorSystem, Akka.Serialization.Serialization> Warmed = new();

    /// <summary>Whether the system still serializes with the instance the warm-up compiled serializers for.</summary>
    public static bool IsWarm(ActorSystem system) => Warmed.TryGetValue(system, out var warmed) && ReferenceEquals(warmed, system.Serialization);

    /// <summary>
    /// When a migration begins: warms again, off the actor thread, only if the system's Serialization was replaced
    /// since (an extension loaded late) and the node warms at start (<see cref="SerializerWarmupPolicy.AtStart"/>);
    /// says so, since it costs CPU the migration needs. Returns that warm-up, or null when none was needed.
    /// </summary>
    public static Task<int>? EnsureWarm(ActorSystem system)
    {
        if (IsWarm(system) || SerializerWarmupSettings.From(system.Settings.Config) == SerializerWarmupPolicy.OnFirstUse) return null;
        system.Log.Warning("Serializers were not warm (the system's Serialization was replaced after start-up); warming them now");
        return Task.Run(() => Run(system));
    }

    public static int Run(ActorSystem system, Action<Type, Exception>? skipped = null)
    {
        var serialization = system.Serialization;
        int warmed = Run(system, AllProtocolTypes(), skipped);
        Warmed.AddOrUpdate(system, serialization);
        return warmed;
    }

    private static IEnumerable<Type> AllProtocolTypes() => typeof(Protocol.IVmScatterProtocol).Assembly.GetTypes()
        .Where(t => typeof(Protocol.IVmScatterProtocol).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false, IsGenericTypeDefinition: false });

    private static int Run(ActorSystem system, IEnumerable<Type> types, Action<Type, Exception>? skipped = null)
    {
        int warmed = 0;
        foreach (var type in types)
        {
            try
            {
                var sample = Sample(type, depth: 0)!;
                var serializer = system.Serialization.FindSerializerFor(sample);
                var bytes = serializer.ToBinary(sample);
                var manifest = Akka.Serialization.Serialization.ManifestFor(serializer, sample);
                system.Serialization.Deserialize(bytes, serializer.Identifier, manifest);
                warmed++;
            }
            catch (Exception e)
            {
                // A type whose sample cannot round-trip is merely not warmed.
                skipped?.Invoke(type, e);
            }
        }
        return warmed;
    }

    /// <summary>An instance with every field filled (collections with one element), so nested types are met too.</summary>
    private static object? Sample(Type type, int depth)
    {
        if (depth > 4) return null;
        if (type == typeof(string)) return "x";
        if (type == typeof(IActorRef)) return ActorRefs.Nobody;
        // Typed ids check their text: a default one would not survive the journal's JSON.
        if (type == typeof(Domain.VmId)) return new Domain.VmId("warm-up");
        if (type == typeof(Domain.HostId)) return new Domain.HostId("warm-up");
        if (type == typeof(Domain.MigrationId)) return Domain.MigrationId.New();
        if (type.IsPrimitive || type.IsEnum || type == typeof(Guid) || type == typeof(DateTime) || type == typeof(decimal)) return Activator.CreateInstance(type);
        if (type.IsArray) return OneElementArray(type.GetElementType()!, depth);
        if (type.IsGenericType)
        {
            var def = type.GetGenericTypeDefinition();
            var args = type.GetGenericArguments();
            if (def == typeof(IReadOnlyList<>) || def == typeof(IEnumerable<>) || def == typeof(IReadOnlyCollection<>)) return OneElementArray(args[0], depth);
            if (def == typeof(IReadOnlyDictionary<,>) || def == typeof(Dictionary<,>))
            {
                var dict = (IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(args))!;
                if (Sample(args[0], depth + 1) is { } key) dict[key] = Sample(args[1], depth + 1);
                return dict;
            }
            if (type.IsValueType) return Activator.CreateInstance(type);
        }
        if (type.IsValueType) return Activator.CreateInstance(type);
        if (type.IsAbstract || type.IsInterface) return null;
        var instance = RuntimeHelpers.GetUninitializedObject(type);
        for (var t = type; t is not null && t != typeof(object); t = t.BaseType)
            foreach (var field in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                field.SetValue(instance, Sample(field.FieldType, depth + 1));
        return instance;
    }

    private static Array OneElementArray(Type element, int depth)
    {
        var array = Array.CreateInstance(element, 1);
        array.SetValue(Sample(element, depth + 1), 0);
        return array;
    }
}
