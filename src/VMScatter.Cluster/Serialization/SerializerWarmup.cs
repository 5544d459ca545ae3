using System.Collections;
using System.Reflection;
using System.Runtime.CompilerServices;
using Akka.Actor;

namespace VMScatter.Cluster.Serialization;

/// <summary>
/// Hyperion builds a serializer for a type the first time it meets it (tens to hundreds of milliseconds, measured).
/// The handover messages are first sent while the VMs are paused, so that cost would land in their downtime;
/// round-tripping every protocol type once pays it up front. At node start this compiles the serializer code;
/// the instance the system uses later is a different one (measured), so each node runs it again, in the
/// background, when a migration begins (<see cref="RunInBackground"/>).
/// </summary>
public static class SerializerWarmup
{
    /// <summary>The messages sent between a VM's pause and its resume: the ones whose first use would be downtime.</summary>
    private static readonly Type[] HandoverPath =
    [
        typeof(Protocol.TransferCompleted), typeof(Protocol.TargetDigests), typeof(Protocol.ResumeOnTarget),
        typeof(Protocol.VmResumedOnTarget), typeof(Protocol.VmResumeFailed), typeof(Protocol.ReleaseSourceVm), typeof(Protocol.ResumeSourceVm),
    ];

    /// <summary>
    /// Warms the handover path's messages again, off the actor thread, when a migration begins. Measured: by then the
    /// system's Serialization is no longer the instance warmed at start-up, and the first TransferCompleted cost
    /// 50-70 ms to serialize and 40 ms to deserialize inside the downtime window. Only those few types: warming
    /// every protocol type again on every node cost round 0 of a small migration 0.4-0.8 s of CPU (measured).
    /// </summary>
    public static void RunInBackground(ActorSystem system) => _ = Task.Run(() => Run(system, HandoverPath));

    public static int Run(ActorSystem system, Action<Type, Exception>? skipped = null) => Run(system, AllProtocolTypes(), skipped);

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
