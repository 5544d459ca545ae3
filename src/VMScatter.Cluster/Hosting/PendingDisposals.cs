using System.Collections.Concurrent;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Disposals a node's actors start and do not wait for (their thread must not block: quitting a QEMU guest takes up
/// to seconds). The node awaits whatever is still running after its actor system terminated, so the process does not
/// exit under them: a QEMU not yet quit would outlive it, and a pooled range not yet returned would keep the pool.
/// </summary>
public sealed class PendingDisposals
{
    private readonly ConcurrentDictionary<Task, bool> _running = new();

    /// <summary>Tracks <paramref name="disposal"/> until it ends; a failure goes to <paramref name="failed"/> (to be logged).</summary>
    public void Track(Task disposal, Action<Exception> failed)
    {
        var observed = Observe(disposal, failed);
        _running[observed] = true;
        _ = observed.ContinueWith(t => _running.TryRemove(t, out _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>Completes when every tracked disposal has ended, or after <paramref name="timeout"/> (one that hangs must not keep the node from stopping).</summary>
    public async Task WhenAllEndedAsync(TimeSpan timeout)
    {
        try { await Task.WhenAll(_running.Keys).WaitAsync(timeout).ConfigureAwait(false); }
        catch (TimeoutException) { /* given up on: its failure, if it comes, is still reported */ }
    }

    private static async Task Observe(Task disposal, Action<Exception> failed)
    {
        try { await disposal.ConfigureAwait(false); }
        catch (Exception e) { failed(e); }
    }
}
