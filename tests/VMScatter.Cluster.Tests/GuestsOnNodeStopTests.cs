using VMScatter.Cluster.Hosting;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The rule for guests when their node stops: a guest that runs outside the node (QEMU, detachable) is let go running;
/// a synthetic guest lives in the node's process and ends with it.
/// </summary>
public class GuestsOnNodeStopTests
{
    [Fact]
    public async Task A_stopping_node_ends_its_synthetic_guests_and_lets_go_of_detachable_ones()
    {
        var model = new SyntheticGuestModel { MemoryBytes = 1 << 20, DirtyPagesPerSecond = 0 };
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, model, 7), runWorkload: false);
        var outside = new OutsideGuest(fleet[1]);
        var node = await VmScatterNode.StartAsync(new NodeOptions
        {
            Roles = ["scheduler", "source"], HostId = "stopping", JournalConnectionString = TestConfig.TempJournal(), SourceVms = [fleet[0], outside],
        });
        await node.DisposeAsync();

        Assert.True(((SyntheticVm)fleet[0]).Disposed);
        Assert.Equal((1, 0), (outside.Detached, outside.Disposed));
        await fleet[1].DisposeAsync();
    }

    [Fact]
    public async Task A_synthetic_node_keeps_no_state_file()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-synthetic-").FullName;
        string config = Path.Combine(work, "node.conf");
        await File.WriteAllTextAsync(config, $$"""vmscatter.qemu { ram-directory = "{{work}}", state-directory = "{{work}}" }""");
        var node = NodeProcess.Start("synthetic", "--role", "scheduler,source", "--host-id", "synthetic-1", "--vms", "2", "--vm-memory", "4MiB",
            "--journal", Path.Combine(work, "journal.db"), "--config", config);
        try
        {
            await node.WaitForLineAsync(l => l.StartsWith("node synthetic-1 up"), TimeSpan.FromSeconds(60));
            node.Terminate();
            await node.WaitForExitAsync(TimeSpan.FromSeconds(30));
            Assert.True(node.ExitCode == 0, node.Output);
            Assert.Empty(Directory.EnumerateFiles(work, "vmscatter-node-*"));
        }
        finally
        {
            await node.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>A guest running outside the node (as a QEMU does): counts how it was let go.</summary>
    private sealed class OutsideGuest(IMigratableVm inner) : IMigratableVm, IDetachableGuest
    {
        public int Detached;
        public int Disposed;
        public VmDescription Description => inner.Description;
        public VmRunState State => inner.State;
        public int PageCount => inner.PageCount;
        public void ReadPage(int index, Span<byte> destination) => inner.ReadPage(index, destination);
        public void StartDirtyLogging() => inner.StartDirtyLogging();
        public int[] CollectDirtyPages() => inner.CollectDirtyPages();
        public Task PauseAsync(CancellationToken cancellationToken = default) => inner.PauseAsync(cancellationToken);
        public Task ResumeAsync(CancellationToken cancellationToken = default) => inner.ResumeAsync(cancellationToken);
        public Task StopAsync(CancellationToken cancellationToken = default) => inner.StopAsync(cancellationToken);
        public Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default) => inner.CaptureDeviceStateAsync(cancellationToken);
        public ValueTask DetachAsync() { Interlocked.Increment(ref Detached); return ValueTask.CompletedTask; }
        public ValueTask DisposeAsync() { Interlocked.Increment(ref Disposed); return ValueTask.CompletedTask; }
    }
}
