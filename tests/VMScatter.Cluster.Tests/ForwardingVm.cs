using VMScatter.Domain;
using VMScatter.Domain.Synthetic;

namespace VMScatter.Cluster.Tests;

/// <summary>A synthetic guest seen through a wrapper that changes one step of its migration (writes at a chosen moment).</summary>
internal abstract class ForwardingVm(SyntheticVm vm) : IMigratableVm, IDirectPageAccess, IWriteLoggedGuest
{
    protected SyntheticVm Inner => vm;
    public VmDescription Description => vm.Description;
    public VmRunState State => vm.State;
    public int PageCount => vm.PageCount;
    public void ReadPage(int index, Span<byte> destination) => vm.ReadPage(index, destination);
    public bool TryGetPage(int index, out ReadOnlySpan<byte> page) => vm.TryGetPage(index, out page);
    public bool IsDirty(int page) => vm.IsDirty(page);
    public int LogGeneration => vm.LogGeneration;
    public bool UnwrittenSince(int page, int generation) => vm.UnwrittenSince(page, generation);
    public void StartDirtyLogging() => vm.StartDirtyLogging();
    public virtual int[] CollectDirtyPages() => vm.CollectDirtyPages();
    public Task ResumeAsync(CancellationToken cancellationToken = default) => vm.ResumeAsync(cancellationToken);
    public Task StopAsync(CancellationToken cancellationToken = default) => vm.StopAsync(cancellationToken);
    public virtual Task PauseAsync(CancellationToken cancellationToken = default) => vm.PauseAsync(cancellationToken);
    public Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default) => vm.CaptureDeviceStateAsync(cancellationToken);
    public ValueTask DisposeAsync() => vm.DisposeAsync();

    /// <summary>Fresh contents (nothing to deduplicate against) in pages 0..count-1: every page goes on the wire.</summary>
    protected void WriteFresh(int count, int seed)
    {
        for (int p = 0; p < count; p++) vm.WritePageContent(p, PageContent.Key(PageContent.Kind.Unique, seed, p));
    }
}
