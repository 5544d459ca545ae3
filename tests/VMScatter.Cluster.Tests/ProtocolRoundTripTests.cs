using System.Collections;
using System.Collections.Immutable;
using System.Reflection;
using Akka.Actor;
using Akka.Serialization;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Serialization;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Pages;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// Every protocol type of the cluster, found by reflection, is filled with distinct non-default values, serialized with
/// the serializer the actor system binds it to, and read back: the copy must equal the original member by member
/// (actor refs by path). A message that gains a field its serializer drops fails here, by name.
/// </summary>
public class ProtocolRoundTripTests : Akka.TestKit.Xunit2.TestKit
{
    public ProtocolRoundTripTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    private static IEnumerable<Type> ProtocolTypes() => typeof(IVmScatterMessage).Assembly.GetTypes()
        .Where(t => t is { IsAbstract: false, IsInterface: false, IsGenericTypeDefinition: false }
            && (typeof(IVmScatterMessage).IsAssignableFrom(t) || typeof(IPersistedEvent).IsAssignableFrom(t)))
        .OrderBy(t => t.FullName, StringComparer.Ordinal);

    public static TheoryData<string> ProtocolTypeNames()
    {
        var names = new TheoryData<string>();
        foreach (var t in ProtocolTypes()) names.Add(t.FullName!);
        return names;
    }

    [Fact]
    public void Discovery_finds_the_protocol()
    {
        var types = ProtocolTypes().ToArray();
        Assert.True(types.Length > 30, $"only {types.Length} protocol types found");
        Assert.Contains(typeof(PrepareReceive), types);
        Assert.Contains(typeof(MigrationCompleted), types);
    }

    [Theory]
    [MemberData(nameof(ProtocolTypeNames))]
    public void Round_trips_through_its_bound_serializer(string typeName)
    {
        var type = typeof(IVmScatterMessage).Assembly.GetType(typeName, throwOnError: true)!;
        var sample = new SampleBuilder(() => CreateTestProbe().Ref).Build(type);

        var serializer = Sys.Serialization.FindSerializerFor(sample);
        // Journaled events must go to the tolerant JSON format, wire messages to Hyperion; never a fallback.
        if (sample is IPersistedEvent) Assert.IsType<JsonEventSerializer>(serializer);
        else Assert.IsType<ProtocolHyperionSerializer>(serializer);

        var bytes = serializer.ToBinary(sample);
        var back = serializer is SerializerWithStringManifest named
            ? named.FromBinary(bytes, named.Manifest(sample))
            : serializer.FromBinary(bytes, type);

        Assert.IsType(type, back);
        AssertDeepEqual(sample, back, type.Name);
    }

    /// <summary>
    /// A list member given as a collection expression (`[vmId]`) is of a type the compiler makes (a read-only wrapper in
    /// the global namespace of the assembly that built it): the scheduler sent its one-VM discards so, and the target
    /// dropped them as a forbidden type.
    /// </summary>
    [Fact]
    public void List_members_given_as_collection_expressions_round_trip()
    {
        var id = MigrationId.New();
        foreach (IReadOnlyList<VmId> vms in new IReadOnlyList<VmId>[] { [V("vm-1")], [V("vm-1"), V("vm-2")], [] })
        {
            var sample = new DiscardReceived(id, vms);
            var serializer = Sys.Serialization.FindSerializerFor(sample);
            var back = Assert.IsType<DiscardReceived>(serializer.FromBinary(serializer.ToBinary(sample), typeof(DiscardReceived)));
            Assert.Equal(id, back.MigrationId);
            Assert.Equal(vms, back.VmIds);
        }
    }

    [Fact]
    public void Messages_that_carry_data_plane_keys_never_print_them()
    {
        var id = MigrationId.New();
        var secret = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
        var keys = DataPlaneKeys.ForReceiver(secret, id.Value, 1, 2);
        var probe = CreateTestProbe().Ref;
        TargetEndpoint[] targets = [new(0, H("t0"), "127.0.0.1", 1), new(1, H("t1"), "127.0.0.1", 2)];
        var printed = string.Join("\n", new object[]
        {
            new PrepareReceive(id, keys, 1, targets, [], probe, 0), new ExtendReceive(id, keys, 1, targets, [], probe, 0), new BeginTransfer(id, secret, targets, []),
        }.Select(m => m.ToString()));
        foreach (var key in new[] { secret, keys.Own, keys.Link(0).ToArray() })
        {
            Assert.DoesNotContain(Convert.ToHexString(key), printed, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain(Convert.ToBase64String(key), printed);
            Assert.DoesNotContain(string.Join(", ", key), printed);
        }
        Assert.Contains("Keys = ReceiverKeys { 2 links, redacted }", printed);
    }

    [Fact]
    public void The_comparison_sees_a_difference_deep_inside()
    {
        var builder = new SampleBuilder(() => CreateTestProbe().Ref);
        var sample = (TransferCompleted)builder.Build(typeof(TransferCompleted));
        var changed = sample with { Stats = sample.Stats with { DirtyPagesPerRound = [.. sample.Stats.DirtyPagesPerRound.Take(1), 99] } };
        var e = Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => AssertDeepEqual(sample, changed, nameof(TransferCompleted)));
        Assert.Contains("TransferCompleted.Stats.DirtyPagesPerRound[1]", e.Message);

        var other = (RegisterTargetHost)new SampleBuilder(() => CreateTestProbe().Ref).Build(typeof(RegisterTargetHost));
        var sameButRef = other with { Host = CreateTestProbe().Ref };
        e = Assert.ThrowsAny<Xunit.Sdk.XunitException>(() => AssertDeepEqual(other, sameButRef, nameof(RegisterTargetHost)));
        Assert.Contains("RegisterTargetHost.Host", e.Message);
    }

    /// <summary>Member by member: leaves by Equals, actor refs by path, sequences element-wise, dictionaries by key.</summary>
    private static void AssertDeepEqual(object? expected, object? actual, string path)
    {
        if (expected is null || actual is null)
        {
            Assert.True(expected is null && actual is null, $"{path}: {expected ?? "null"} came back as {actual ?? "null"}");
            return;
        }
        if (expected is IActorRef expectedRef)
        {
            Assert.True(actual is IActorRef a && a.Path.Equals(expectedRef.Path), $"{path}: actor {expectedRef.Path} came back as {actual}");
            return;
        }
        var type = expected.GetType();
        if (IsLeaf(type))
        {
            Assert.True(expected.Equals(actual), $"{path}: {expected} came back as {actual}");
            return;
        }
        if (expected is IDictionary expectedMap)
        {
            var actualMap = Assert.IsAssignableFrom<IDictionary>(actual);
            Assert.True(expectedMap.Count == actualMap.Count, $"{path}: {expectedMap.Count} entries came back as {actualMap.Count}");
            foreach (DictionaryEntry entry in expectedMap)
            {
                Assert.True(actualMap.Contains(entry.Key), $"{path}: key {entry.Key} is missing");
                AssertDeepEqual(entry.Value, actualMap[entry.Key], $"{path}[{entry.Key}]");
            }
            return;
        }
        if (expected is IEnumerable expectedItems)
        {
            var e = expectedItems.Cast<object?>().ToList();
            var a = Assert.IsAssignableFrom<IEnumerable>(actual).Cast<object?>().ToList();
            Assert.True(e.Count == a.Count, $"{path}: {e.Count} elements came back as {a.Count}");
            for (int i = 0; i < e.Count; i++) AssertDeepEqual(e[i], a[i], $"{path}[{i}]");
            return;
        }
        Assert.True(type == actual.GetType(), $"{path}: a {type.Name} came back as a {actual.GetType().Name}");
        foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.GetIndexParameters().Length == 0))
            AssertDeepEqual(p.GetValue(expected), p.GetValue(actual), $"{path}.{p.Name}");
    }

    private static bool IsLeaf(Type t) =>
        t.IsPrimitive || t.IsEnum || t == typeof(string) || t == typeof(decimal) || t == typeof(Guid)
        || t == typeof(DateTime) || t == typeof(DateTimeOffset) || t == typeof(TimeSpan);

    /// <summary>
    /// Builds an instance of a protocol type with every member set, each leaf to a value no other leaf has and none a
    /// default: records through their widest public constructor, then any settable property the constructor left.
    /// </summary>
    private sealed class SampleBuilder(Func<IActorRef> actor)
    {
        private int _next;

        public object Build(Type type) => Build(type, depth: 0) ?? throw new InvalidOperationException($"no sample for {type}");

        private object? Build(Type type, int depth)
        {
            if (depth > 8) throw new NotSupportedException($"{type} nests too deep for a sample");
            int n = ++_next;
            if (Nullable.GetUnderlyingType(type) is { } underlying) return Build(underlying, depth + 1);
            if (type == typeof(IActorRef)) return actor();
            if (type == typeof(string)) return $"s{n}";
            if (type == typeof(bool)) return true;
            if (type == typeof(int)) return n;
            if (type == typeof(long)) return Page.Size * (3_000_000L + n);   // beyond int (a narrowed field would show); whole pages, as memory sizes must be
            if (type == typeof(ulong)) return ulong.MaxValue - (ulong)n;     // top bit set: a signed field would show
            if (type == typeof(uint)) return uint.MaxValue - (uint)n;
            if (type == typeof(short)) return (short)n;
            if (type == typeof(byte)) return (byte)n;
            if (type == typeof(double)) return n + 0.25;
            if (type == typeof(float)) return n + 0.5f;
            if (type == typeof(decimal)) return n + 0.125m;
            if (type == typeof(Guid)) return new Guid(n, 0x1234, 0x5678, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, (byte)n);
            if (type == typeof(DateTime)) return new DateTime(2024, 5, 6, 7, 8, 9, DateTimeKind.Utc).AddTicks(n * 10_000_019L);
            if (type == typeof(DateTimeOffset)) return new DateTimeOffset(2024, 5, 6, 7, 8, 9, TimeSpan.Zero).AddTicks(n * 10_000_019L);
            if (type == typeof(TimeSpan)) return TimeSpan.FromTicks(n * 10_000_019L);
            if (type.IsEnum)
            {
                var values = Enum.GetValues(type).Cast<object>().ToArray();
                var nonDefault = values.Where(v => Convert.ToInt64(v, System.Globalization.CultureInfo.InvariantCulture) != 0).ToArray();
                return nonDefault.Length > 0 ? nonDefault[n % nonDefault.Length] : values[0];
            }
            if (type == typeof(byte[])) return new byte[] { (byte)n, (byte)(n + 1), 0xFF, 0x80 };
            if (type.IsArray) return Elements(type.GetElementType()!, depth);
            if (type.IsGenericType)
            {
                var def = type.GetGenericTypeDefinition();
                var args = type.GetGenericArguments();
                if (def == typeof(ImmutableArray<>))
                    return typeof(ImmutableArray).GetMethods()
                        .Single(m => m.Name == nameof(ImmutableArray.ToImmutableArray) && m.GetParameters() is [{ ParameterType: { IsGenericType: true } p }] && p.GetGenericTypeDefinition() == typeof(IEnumerable<>))
                        .MakeGenericMethod(args[0]).Invoke(null, [Elements(args[0], depth)]);
                if (def == typeof(IReadOnlyList<>) || def == typeof(IEnumerable<>) || def == typeof(IReadOnlyCollection<>) || def == typeof(IList<>) || def == typeof(ICollection<>))
                    return Elements(args[0], depth);
                if (def == typeof(List<>))
                    return Activator.CreateInstance(type, Elements(args[0], depth));
                if (def == typeof(IReadOnlyDictionary<,>) || def == typeof(IDictionary<,>) || def == typeof(Dictionary<,>))
                {
                    var map = (IDictionary)Activator.CreateInstance(typeof(Dictionary<,>).MakeGenericType(args))!;
                    for (int i = 0; i < 2; i++) map[Build(args[0], depth + 1)!] = Build(args[1], depth + 1);
                    return map;
                }
            }
            if (type.IsInterface || type.IsAbstract)
                throw new NotSupportedException($"no sample for {type}: teach {nameof(SampleBuilder)} a concrete type for it");
            // A message without members that comes as a singleton (GetRegisteredHosts.Instance) is sent as that instance.
            if (type.GetField("Instance", BindingFlags.Public | BindingFlags.Static) is { } single && single.FieldType == type
                && type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Length == 0)
                return single.GetValue(null);
            return Construct(type, depth);
        }

        private object Construct(Type type, int depth)
        {
            var ctor = type.GetConstructors(BindingFlags.Public | BindingFlags.Instance)
                .Where(c => !(c.GetParameters() is [var only] && only.ParameterType == type))   // not a record's copy constructor
                .OrderByDescending(c => c.GetParameters().Length)
                .FirstOrDefault();
            object instance;
            var filled = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            if (ctor is null)
            {
                if (!type.IsValueType) throw new NotSupportedException($"{type} has no public constructor");
                instance = Activator.CreateInstance(type)!;
            }
            else
            {
                var parameters = ctor.GetParameters();
                instance = ctor.Invoke(parameters.Select(p => Build(p.ParameterType, depth + 1)).ToArray());
                foreach (var p in parameters) filled.Add(p.Name!);
            }
            foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
                if (p.SetMethod is { IsPublic: true } && p.GetIndexParameters().Length == 0 && !filled.Contains(p.Name))
                    p.SetValue(instance, Build(p.PropertyType, depth + 1));
            return instance;
        }

        private Array Elements(Type element, int depth)
        {
            var array = Array.CreateInstance(element, 2);
            for (int i = 0; i < array.Length; i++) array.SetValue(Build(element, depth + 1), i);
            return array;
        }
    }
}
