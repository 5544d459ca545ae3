using Akka.Actor;
using Akka.Serialization;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Serialization;
using VMScatter.Domain;
using VMScatter.Domain.Reports;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

public class SerializationTests : Akka.TestKit.Xunit2.TestKit
{
    public SerializationTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    private static MigrationReport Report() => new()
    {
        MigrationId = "m", Vms = 1, Targets = 1, GuestBytes = 4096, NaiveBytes = 4096, DistinctPages = 1, ZeroPages = 0, BytesSent = 100, BytesReceived = 100,
        Verified = true, TotalSeconds = 1.5, PlacementStrategy = "traffic-aware", Placement = new Dictionary<string, string> { ["vm-0"] = "t1" }, LinkBytes = 200,
        GroupSwitches = 2, GroupSwitchesLowerBound = 2, GroupTransport = "relay-chain", Rounds = 2, DirtyPagesPerRound = [1, 0], CompressionRatio = 0.5,
        ByteCompares = 0, HashCollisions = 0, DowntimeMsMax = 10, DowntimeMsMedian = 10, Converged = true, Convergence = "converged", Deduplicate = true,
        LinkBitsPerSecond = 0, AnalysisSeconds = 0.1, RoundSeconds = [0.1, 0.1], SourceDigestSeconds = 0.01, Error = null,
        PerVm = [new VmReport("vm-0", "t1", true, true, 10, "a", "a", null)],
    };

    [Fact]
    public void Journaled_events_go_to_the_json_serializer_and_wire_messages_to_hyperion()
    {
        var serialization = Sys.Serialization;
        var completed = new MigrationCompleted(MigrationId.New(), Report());
        Assert.IsType<JsonEventSerializer>(serialization.FindSerializerFor(completed));
        Assert.IsType<ProtocolHyperionSerializer>(serialization.FindSerializerFor(new GetMigrationStatus(MigrationId.New())));

        var serializer = (SerializerWithStringManifest)serialization.FindSerializerFor(completed);
        var back = (MigrationCompleted)serializer.FromBinary(serializer.ToBinary(completed), serializer.Manifest(completed));
        Assert.Equal(completed.MigrationId, back.MigrationId);
        Assert.Equal(completed.Report.ToJson(), back.Report.ToJson());
    }

    [Fact]
    public void The_consoles_questions_round_trip_inside_the_envelope_the_cluster_client_sends()
    {
        // ClusterClient hands a receptionist a pub-sub Send; its payload (the question) goes by the payload's own binding.
        var question = new CancelMigration(MigrationId.New());
        var envelope = new Akka.Cluster.Tools.PublishSubscribe.Send(Console.AdminClient.SchedulerPath, question, localAffinity: true);
        var outer = Assert.IsAssignableFrom<SerializerWithStringManifest>(Sys.Serialization.FindSerializerFor(envelope));
        Assert.IsType<ProtocolHyperionSerializer>(Sys.Serialization.FindSerializerFor(question));
        var back = Assert.IsType<Akka.Cluster.Tools.PublishSubscribe.Send>(outer.FromBinary(outer.ToBinary(envelope), outer.Manifest(envelope)));
        Assert.Equal((Console.AdminClient.SchedulerPath, (object)question), (back.Path, back.Message));
        var answer = new CancelAnswer(question.MigrationId, false, "no migration");
        var hyperion = Sys.Serialization.FindSerializerFor(answer);
        Assert.Equal(answer, hyperion.FromBinary(hyperion.ToBinary(answer), typeof(CancelAnswer)));
    }

    [Fact]
    public void Hyperion_creates_protocol_types_from_a_peers_bytes_and_refuses_any_other_type_they_name()
    {
        // Bytes as a peer's own Hyperion writes them (Akka's options): the type of every object is in the payload.
        var peer = new Hyperion.Serializer(Hyperion.SerializerOptions.Default.WithVersionTolerance(true).WithPreserveObjectReferences(true));
        byte[] Write(object o)
        {
            using var stream = new MemoryStream();
            peer.Serialize(o, stream);
            return stream.ToArray();
        }
        // Hyperion's object header: a manifest byte, the type name's length (Int32, little-endian) and its UTF-8 bytes.
        byte[] Naming(string typeName)
        {
            byte[] template = Write(new Version(1, 2));
            byte[] original = System.Text.Encoding.UTF8.GetBytes("System.Version, System.Private.CoreLib,%core%");
            Assert.Equal(original.Length, BitConverter.ToInt32(template, 1));
            Assert.True(template.AsSpan(5, original.Length).SequenceEqual(original));
            byte[] name = System.Text.Encoding.UTF8.GetBytes(typeName);
            return [template[0], .. BitConverter.GetBytes(name.Length), .. name, .. template.AsSpan(5 + original.Length)];
        }
        var hyperion = Sys.Serialization.FindSerializerForType(typeof(GetMigrationStatus));
        var status = new GetMigrationStatus(MigrationId.New());
        Assert.Equal(status, hyperion.FromBinary(Write(status), typeof(object)));
        Assert.Equal([V("a"), V("b")], (List<VmId>)hyperion.FromBinary(Write(new List<VmId> { V("a"), V("b") }), typeof(object)));
        // Another type, at the top, as a generic argument or in an object-typed slot, is not created: refused by the
        // protocol's type filter (UserEvilDeserializationException) or by Hyperion's own list of unsafe types.
        void Refused<T>(byte[] payload, string typeName) where T : Hyperion.Internal.EvilDeserializationException
        {
            var e = Assert.ThrowsAny<Exception>(() => hyperion.FromBinary(payload, typeof(object)));
            var chain = new List<Exception>();
            for (var x = e; x is not null; x = x.InnerException) chain.Add(x);
            var refusal = chain.OfType<T>().FirstOrDefault();
            Assert.True(refusal is not null, $"not refused with {typeof(T).Name}: {e}");
            Assert.Contains($"[type: {typeName}", refusal.Message);
        }
        Refused<Hyperion.Internal.UserEvilDeserializationException>(Write(new Version(1, 2)), "System.Version, ");
        Refused<Hyperion.Internal.UserEvilDeserializationException>(Write(new List<Version> { new(1, 2) }), "System.Collections.Generic.List`1[[System.Version, ");
        Refused<Hyperion.Internal.UserEvilDeserializationException>(Write(new List<object> { V("a"), new Uri("http://x/") }), "System.Uri, ");
        // A peer's Hyperion will not even write these: the payload is a System.Version one with the type name replaced.
        Refused<Hyperion.Internal.EvilDeserializationException>(Naming("System.Diagnostics.Process, System.Diagnostics.Process"), "System.Diagnostics.Process, ");
        Refused<Hyperion.Internal.EvilDeserializationException>(Naming("System.IO.FileInfo, System.Private.CoreLib,%core%"), "System.IO.FileInfo");
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed("System.Diagnostics.Process, System.Diagnostics.Process"));
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed("Akka.Actor.Props, Akka"));
        Assert.True(ProtocolTypeFilter.Instance.IsAllowed("Akka.Actor.ActorRefBase+Surrogate, Akka"));
        Assert.True(ProtocolTypeFilter.Instance.IsAllowed("System.String, System.Private.CoreLib,%core%"));
        Assert.True(ProtocolTypeFilter.Instance.IsAllowed(typeof(VmId[]).AssemblyQualifiedName!));
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed(typeof(Version[]).AssemblyQualifiedName!));
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed("System.Collections.Generic.List`1[[System.Version, System.Private.CoreLib,%core%]], System.Private.CoreLib,%core%"));
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed("VMScatter.X[[unclosed"));
        Assert.True(ProtocolTypeFilter.Instance.IsAllowed(typeof(Dictionary<VmId, HostId>).AssemblyQualifiedName!));
        Assert.False(ProtocolTypeFilter.Instance.IsAllowed(typeof(Dictionary<VmId, Version>).AssemblyQualifiedName!));
    }

    [Fact]
    public void Akkas_json_serializer_is_not_there_for_a_peer_to_name_and_unbound_types_go_through_the_filter()
    {
        // Newtonsoft with type names (Akka's default "json", id 1) would create whatever a payload names: a payload
        // naming serializer 1 finds the filtered Hyperion instead, and an object of no protocol type is refused.
        Assert.IsType<ProtocolHyperionSerializer>(Sys.Serialization.FindSerializerForType(typeof(Version)));
        var json = """{"$type":"System.IO.FileInfo, System.Private.CoreLib","OriginalPath":"/etc/passwd"}"""u8.ToArray();
        var none = Assert.ThrowsAny<Exception>(() => Sys.Serialization.Deserialize(json, 1, typeof(object)));
        Assert.Contains("Cannot find serializer with id [1]", none.Message);
        // What a non-protocol object would be sent as: refused at the other end.
        var unbound = Sys.Serialization.FindSerializerForType(typeof(Version));
        Assert.ThrowsAny<Exception>(() => unbound.FromBinary(unbound.ToBinary(new Version(1, 2)), typeof(object)));
    }

    [Fact]
    public void An_event_written_before_a_field_existed_still_replays()
    {
        var serializer = (SerializerWithStringManifest)Sys.Serialization.FindSerializerFor(new MigrationAborted(MigrationId.New(), ""));
        // As an older build wrote it: no "Convergence" and no "LinkBytes"; and with a field that no longer exists.
        var json = """{"MigrationId":"0b7c1d5e-0000-4000-8000-000000000001","Report":{"MigrationId":"m","Vms":2,"Verified":true,"RetiredField":7}}""";
        var old = (MigrationCompleted)serializer.FromBinary(System.Text.Encoding.UTF8.GetBytes(json), nameof(MigrationCompleted));
        Assert.Equal((2, true, 0L, (string?)null), (old.Report.Vms, old.Report.Verified, old.Report.LinkBytes, old.Report.Convergence));
        Assert.Throws<SerializationException>(() => serializer.FromBinary([], "NoSuchEvent"));
    }

    [Fact]
    public void Typed_ids_are_plain_strings_in_the_journal_as_before_they_were_typed()
    {
        var serializer = (SerializerWithStringManifest)Sys.Serialization.FindSerializerFor(new MigrationAborted(MigrationId.New(), ""));
        var json = """{"MigrationId":"0b7c1d5e-0000-4000-8000-000000000002","Strategy":"traffic-aware","TargetOfVm":{"vm-a":"t1","vm-b":"t2"}}""";
        var placed = (PlacementChosen)serializer.FromBinary(System.Text.Encoding.UTF8.GetBytes(json), nameof(PlacementChosen));
        Assert.Equal(H("t2"), placed.TargetOfVm[V("vm-b")]);
        Assert.Equal(json, System.Text.Encoding.UTF8.GetString(serializer.ToBinary(placed)));
        // An id today's rules refuse (an older build took any --host-id) still replays as written: a journal the
        // scheduler cannot read would stop it on every start. Ids from the journal name no file.
        var legacy = """{"MigrationId":"0b7c1d5e-0000-4000-8000-000000000002","VmId":"my vm/1","TargetHostId":"host_1","Digest":"d","DowntimeMs":1}""";
        var handed = (VmHandedOver)serializer.FromBinary(System.Text.Encoding.UTF8.GetBytes(legacy), nameof(VmHandedOver));
        Assert.Equal(("my vm/1", "host_1"), (handed.VmId.Value, handed.TargetHostId.Value));
        Assert.Throws<FormatException>(() => new VmId("my vm/1")); // while a request naming it is refused
    }

    [Fact]
    public void The_start_up_warm_up_round_trips_every_protocol_type()
    {
        // A type the warm-up skips has its serializer compiled when first sent: in a handover, inside the downtime.
        var skipped = new List<string>();
        int warmed = SerializerWarmup.Run(Sys, (type, e) => skipped.Add($"{type.Name}: {e.GetBaseException().Message}"));
        Assert.True(skipped.Count == 0, string.Join("\n", skipped));
        Assert.True(warmed > 40, $"{warmed} types warmed");
    }

    [Fact]
    public void Wire_messages_with_actor_refs_round_trip_through_hyperion()
    {
        var message = new RegisterTargetHost(H("t1"), TestActor, 123, "127.0.0.1", 4000, "synthetic");
        var serializer = Sys.Serialization.FindSerializerFor(message);
        var back = (RegisterTargetHost)Sys.Serialization.Deserialize(serializer.ToBinary(message), serializer.Identifier, message.GetType());
        Assert.Equal(message, back);
    }
}
