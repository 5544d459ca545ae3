using System.Net;
using Akka.Actor;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Target;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Target;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using Xunit;

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
        // No periodic announcement in the test's time: every RegisterTargetHost below was caused by what the test did.
        var host = Sys.ActorOf(Props.Create(() => new TargetHostActor("t1", 2 * VmBytes, listener, new DataPlaneOptions(), backend, scheduler.Ref,
            TimeSpan.FromHours(1), new PendingDisposals(), "")));
        Assert.Equal(2 * VmBytes, scheduler.ExpectMsg<RegisterTargetHost>().FreeBytes);

        var first = Guid.NewGuid();
        host.Tell(Prepare(first, listener, "vm-1", "vm-2"), scheduler.Ref);
        scheduler.ExpectMsg<ReceiverReady>(r => r.MigrationId == first);
        host.Tell(new DiscardReceived(first, ["vm-1", "vm-2"]), scheduler.Ref);
        // Both leftovers are being freed (the receiver has closed), and their disposal is held open.
        await backend.BothDisposing.Task.WaitAsync(TimeSpan.FromSeconds(15));

        // Until the memory is back, the host does not offer it: a migration needing all of it is refused.
        var second = Guid.NewGuid();
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

    private PrepareReceive Prepare(Guid migrationId, DataPlaneListener listener, params string[] vmIds) => new(
        migrationId, new byte[FrameCodec.KeySize], 0, [new TargetEndpoint(0, "t1", "127.0.0.1", listener.LocalEndPoint.Port)],
        vmIds.Select((id, i) => new VmAssignment(i, new VmDescription(id, VmBytes, 1, "synthetic", ""), 0)).ToArray(), TestActor, 0);

    /// <summary>Synthetic memory whose disposal waits for <see cref="Gate"/>, and counts what it freed.</summary>
    private sealed class GatedBackend : ITargetBackend
    {
        private int _disposing, _freed;

        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public TaskCompletionSource BothDisposing { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Freed => Volatile.Read(ref _freed);
        public string Name => "gated";

        public IWritableGuestMemory AllocateMemory(VmDescription vm) => new GatedMemory(this, new NativeGuestMemory(vm.PageCount));

        public Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken) =>
            throw new NotSupportedException("this test resumes nothing");

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
