using System.Net;
using System.Reflection;
using Akka.Actor;
using Akka.TestKit;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Target;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;

namespace VMScatter.Cluster.Tests;

public class TargetHostActorTests : Akka.TestKit.Xunit2.TestKit
{
    private const long VmBytes = 1 << 20;

    public TargetHostActorTests() : base(TestConfig.Local(TestConfig.TempJournal())) { }

    [Fact]
    public async Task Discarded_memory_is_freed_after_its_receiver_closed_and_counts_as_used_until_then()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        var scheduler = CreateTestProbe();
        var host = StartHost(listener, backend, scheduler);

        var first = MigrationId.New();
        host.Tell(Prepare(first, listener, "vm-1", "vm-2"), scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == first);
        host.Tell(new DiscardReceived(first, [V("vm-1"), V("vm-2")]), scheduler.Ref);
        // Both leftovers are being freed (the receiver has closed), and their disposal is held open.
        await backend.BothDisposing.Task.WaitAsync(TimeSpan.FromSeconds(15));

        // Until the memory is back, the host does not offer it: a migration needing all of it is refused.
        var second = MigrationId.New();
        host.Tell(Prepare(second, listener, "vm-3", "vm-4"), scheduler.Ref);
        var refused = scheduler.ExpectMsg<ReceiverRefused>(r => r.MigrationId == second);
        Assert.Equal($"needs {2 * VmBytes} bytes, 0 free", refused.Reason);

        backend.Gate.SetResult();
        // Once freed, the host announces its whole capacity again and takes the migration.
        Assert.Equal(2 * VmBytes, scheduler.ExpectMsg<RegisterTargetHost>().FreeBytes);
        Assert.Equal(2, backend.Freed);
        host.Tell(Prepare(second, listener, "vm-3", "vm-4"), scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == second);
    }

    [Fact]
    public async Task A_request_the_host_cannot_serve_is_refused_with_its_reason_and_frees_what_it_took()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        backend.Gate.SetResult();
        var scheduler = CreateTestProbe();
        var host = StartHost(listener, backend, scheduler);
        // A peer address that is no address: the memory for both VMs was already taken when it fails.
        var bad = MigrationId.New();
        host.Tell(Prepare(bad, listener, "vm-1", "vm-2") with { Targets = [new TargetEndpoint(0, H("t1"), "not-an-address", 1)] }, scheduler.Ref);
        var refused = scheduler.ExpectMsg<ReceiverRefused>(r => r.MigrationId == bad);
        Assert.StartsWith("cannot prepare: ", refused.Reason);
        AwaitCondition(() => backend.Freed == 2, TimeSpan.FromSeconds(10));
        // The same actor (not a restarted one) still serves a good request with its whole capacity.
        var good = MigrationId.New();
        host.Tell(Prepare(good, listener, "vm-1", "vm-2"), scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == good);
    }

    [Fact]
    public async Task Forged_ids_and_sizes_from_the_wire_are_refused_before_any_memory_is_taken()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        var scheduler = CreateTestProbe();
        var host = StartHost(listener, backend, scheduler);
        // As a deserializer delivers it: the field set directly, the constructor's check never run.
        object boxed = default(VmId);
        typeof(VmId).GetField("<Value>k__BackingField", BindingFlags.Instance | BindingFlags.NonPublic)!.SetValue(boxed, "../../etc/x");
        var forged = (VmId)boxed;
        var good = Prepare(MigrationId.New(), listener, "vm-1");
        PrepareReceive With(VmDescription vm) => good with { Vms = [good.Vms[0] with { Vm = vm }] };
        var cases = new (PrepareReceive Request, string Reason)[]
        {
            (With(good.Vms[0].Vm with { Id = forged }), "VM id '../../etc/x' is not valid"),
            (With(good.Vms[0].Vm with { MemoryBytes = -VmBytes }), "memory size -1048576 is not a positive multiple"),
            (With(good.Vms[0].Vm with { MemoryBytes = 4 * VmBytes }), "within this host's 2097152"),
            (good with { Keys = good.Keys with { Own = new byte[3] } }, "data-plane key of the wrong size"),
            (good with { Keys = DataPlaneKeys.ForReceiver(new byte[FrameCodec.KeySize], good.MigrationId.Value, 0, 2) }, "data-plane link keys for 2 hosts, not the migration's 1"),
            (good with { SelfIndex = 5 }, "target index 5 of 1"),
            (good with { Vms = [good.Vms[0], good.Vms[0]] }, "a VM is listed twice"),
        };
        foreach (var (request, reason) in cases)
        {
            var id = MigrationId.New();
            host.Tell(request with { MigrationId = id }, scheduler.Ref);
            Assert.Contains(reason, scheduler.ExpectMsg<ReceiverRefused>(r => r.MigrationId == id).Reason);
        }
        Assert.Equal(0, backend.Allocated);
        host.Tell(good, scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == good.MigrationId);
        Assert.Equal(1, backend.Allocated);
    }

    [Fact]
    public async Task When_the_source_migration_is_gone_what_was_received_for_vms_not_started_is_freed()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        backend.Gate.SetResult();
        var (host, scheduler, source, _) = Receiving(listener, backend, "vm-1", "vm-2");
        // No grant can come any more: the host gives the memory back and says so.
        Sys.Stop(source.Ref);
        Assert.Equal(2 * VmBytes, scheduler.ExpectMsg<RegisterTargetHost>().FreeBytes);
        Assert.Equal(2, backend.Freed);
    }

    [Fact]
    public async Task A_discard_that_crosses_a_start_in_flight_leaves_the_starting_vm_its_memory()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        backend.Gate.SetResult();
        var (host, scheduler, source, id) = Receiving(listener, backend, "vm-1");
        // The source granted vm-1 and relayed the start; meanwhile the scheduler, failing the run, says discard.
        host.Tell(new ResumeOnTarget(id, V("vm-1"), source.Ref), scheduler.Ref);
        await backend.Resuming.Task.WaitAsync(TimeSpan.FromSeconds(15));
        host.Tell(new DiscardReceived(id, [V("vm-1")]), scheduler.Ref);
        host.Tell(new ResumeOnTarget(id, V("vm-1"), source.Ref), scheduler.Ref); // a second start is ignored
        backend.ResumeGate.SetResult();
        Assert.Equal(V("vm-1"), scheduler.ExpectMsg<VmResumedOnTarget>().VmId);
        // The started VM keeps its memory; the source hears it runs here, and no grant came back to it.
        scheduler.ExpectMsg<RegisterTargetHost>(r => r.FreeBytes == VmBytes);
        Assert.Equal(0, backend.Freed);
        Assert.Equal(V("vm-1"), source.ExpectMsg<VmResumedOnTarget>().VmId);
        source.ExpectNoMsg(TimeSpan.FromMilliseconds(200));
    }

    /// <summary>
    /// A start of a VM that runs here already, once its receiver has closed, is ignored: handing its grant back would
    /// let the source run it too.
    /// </summary>
    [Fact]
    public async Task A_second_start_of_a_vm_running_here_after_its_receiver_closed_keeps_the_grant()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        backend.Gate.SetResult();
        backend.ResumeGate.SetResult();
        var (host, scheduler, source, id) = Receiving(listener, backend, "vm-1");
        host.Tell(new ResumeOnTarget(id, V("vm-1"), source.Ref), scheduler.Ref);
        Assert.Equal(V("vm-1"), scheduler.ExpectMsg<VmResumedOnTarget>().VmId);
        Assert.Equal(V("vm-1"), source.ExpectMsg<VmResumedOnTarget>().VmId);
        // Its only VM runs here: the receiver closed in the same step. A start again is not "not received here".
        host.Tell(new ResumeOnTarget(id, V("vm-1"), source.Ref), scheduler.Ref);
        // Nor once another receiver of the migration took a VM re-placed here (it does not hold vm-1).
        var replaced = Prepare(id, listener, "vm-1", "vm-2");
        host.Tell(new ExtendReceive(id, replaced.Keys, 0, replaced.Targets, [replaced.Vms[1]], source.Ref, 0), scheduler.Ref);
        Assert.Null(scheduler.FishForMessage<ReceiverExtended>(_ => true, TimeSpan.FromSeconds(10)).Refusal);
        host.Tell(new ResumeOnTarget(id, V("vm-1"), source.Ref), scheduler.Ref);
        // Asked after it (one mailbox): the answer comes once the second start was handled, and says it runs here.
        host.Tell(new QueryLanded(id, [V("vm-1")], source.Ref), scheduler.Ref);
        var landed = scheduler.FishForMessage<LandedState>(_ => true, TimeSpan.FromSeconds(10));
        Assert.Equal([V("vm-1")], landed.Running);
        // No grant came back to the source, from any of them (it was told before the answer, if at all).
        source.ExpectNoMsg(TimeSpan.FromMilliseconds(100));
        Assert.Equal(0, backend.Freed);
    }

    /// <summary>
    /// VMs re-placed here after this host's part of the migration was over get a new receiver while the first is still
    /// closing. The first receiver's end is not the new one's: the source hears of no failure (a CI run once lost a
    /// healthy target so), and the memory both are freeing counts as used until each has freed it.
    /// </summary>
    [Fact]
    public async Task A_receiver_closing_while_vms_are_re_placed_here_neither_fails_the_new_one_nor_frees_its_memory_early()
    {
        await using var listener = new DataPlaneListener(new IPEndPoint(IPAddress.Loopback, 0), new DataPlaneOptions());
        var backend = new GatedBackend();
        var (host, scheduler, source, id) = Receiving(listener, backend, "vm-1");
        var replaced = Prepare(id, listener, "vm-1", "vm-2");
        // This host's part is over (its only VM discarded): its receiver closes, the memory's release held by the gate.
        host.Tell(new DiscardReceived(id, [V("vm-1")]), scheduler.Ref);
        // Right behind it, a VM re-placed here from a lost target: a new receiver for the same migration.
        host.Tell(new ExtendReceive(id, replaced.Keys, 0, replaced.Targets, [replaced.Vms[1]], source.Ref, 0), scheduler.Ref);
        var extended = scheduler.ExpectMsg<ReceiverExtended>(r => r.MigrationId == id);
        Assert.Null(extended.Refusal);
        Assert.Equal([V("vm-2")], extended.VmIds);

        // Its part over too: two receivers of one migration closing, a VM's memory each, neither freed yet.
        host.Tell(new DiscardReceived(id, [V("vm-2")]), scheduler.Ref);
        await backend.BothDisposing.Task.WaitAsync(TimeSpan.FromSeconds(15));
        var other = MigrationId.New();
        host.Tell(Prepare(other, listener, "vm-3"), scheduler.Ref);
        Assert.Equal($"needs {VmBytes} bytes, 0 free", scheduler.ExpectMsg<ReceiverRefused>(r => r.MigrationId == other).Reason);

        backend.Gate.SetResult();
        scheduler.FishForMessage<RegisterTargetHost>(r => r.FreeBytes == 2 * VmBytes, TimeSpan.FromSeconds(15));
        Assert.Equal(2, backend.Freed);
        // Neither closing receiver's end reached the source as a round this host failed.
        source.ExpectNoMsg(TimeSpan.FromMilliseconds(300));
    }

    /// <summary>A started host, ready to receive these VMs for a new migration whose source migration is a probe.</summary>
    private (IActorRef Host, TestProbe Scheduler, TestProbe Source, MigrationId Id) Receiving(DataPlaneListener listener, GatedBackend backend, params string[] vms)
    {
        var scheduler = CreateTestProbe();
        var source = CreateTestProbe();
        var host = StartHost(listener, backend, scheduler);
        var id = MigrationId.New();
        host.Tell(Prepare(id, listener, vms) with { SourceMigration = source.Ref }, scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == id);
        return (host, scheduler, source, id);
    }

    /// <summary>A target host of 2 VMs' capacity, announced to <paramref name="scheduler"/> (its first announcement checked and taken).</summary>
    private IActorRef StartHost(DataPlaneListener listener, GatedBackend backend, TestProbe scheduler)
    {
        // No periodic announcement in a test's time: every later RegisterTargetHost is caused by what the test did.
        var host = Sys.ActorOf(Props.Create(() => new TargetHostActor(H("t1"), 2 * VmBytes, listener, new DataPlaneOptions(), backend, scheduler.Ref,
            TimeSpan.FromHours(1), new PendingDisposals(), "")));
        Assert.Equal(2 * VmBytes, scheduler.ExpectMsg<RegisterTargetHost>().FreeBytes);
        return host;
    }

    private PrepareReceive Prepare(MigrationId migrationId, DataPlaneListener listener, params string[] vmIds) => new(
        migrationId, DataPlaneKeys.ForReceiver(new byte[FrameCodec.KeySize], migrationId.Value, 0, 1), 0, [new TargetEndpoint(0, H("t1"), "127.0.0.1", listener.LocalEndPoint.Port)],
        vmIds.Select((id, i) => new VmAssignment(i, new VmDescription(V(id), VmBytes, 1, "synthetic", ""), 0)).ToArray(), TestActor, 0);

    /// <summary>Synthetic memory whose disposal waits for <see cref="Gate"/>, and counts what it freed.</summary>
    private sealed class GatedBackend : ITargetBackend
    {
        private int _disposing, _freed, _allocated;

        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource BothDisposing { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Freed => Volatile.Read(ref _freed);
        public string Name => "gated";

        public int Allocated => Volatile.Read(ref _allocated);

        public IWritableGuestMemory AllocateMemory(VmDescription vm)
        {
            Interlocked.Increment(ref _allocated);
            return new GatedMemory(this, new NativeGuestMemory(vm.PageCount));
        }

        /// <summary>Starting a VM waits for this; the started VM owns its memory until it is disposed.</summary>
        public TaskCompletionSource ResumeGate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource Resuming { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
        {
            Resuming.TrySetResult();
            await ResumeGate.Task;
            return new Landed(vm, memory);
        }

        private sealed class Landed(VmDescription description, IWritableGuestMemory memory) : ILandedVm
        {
            public VmDescription Description => description;
            public VmRunState State { get; private set; } = VmRunState.Running;

            public async ValueTask DisposeAsync()
            {
                State = VmRunState.Stopped;
                await memory.DisposeAsync();
            }
        }

        private sealed class GatedMemory(GatedBackend owner, NativeGuestMemory inner) : IWritableGuestMemory
        {
            public int PageCount => inner.PageCount;
            public void ReadPage(int index, Span<byte> destination) => inner.ReadPage(index, destination);
            public void WritePage(int index, ReadOnlySpan<byte> source) => inner.WritePage(index, source);

            public async ValueTask DisposeAsync()
            {
                if (Interlocked.Increment(ref owner._disposing) == 2) owner.BothDisposing.SetResult();
                await owner.Gate.Task.ConfigureAwait(false);
                inner.Dispose();
                Interlocked.Increment(ref owner._freed);
            }
        }
    }
}
