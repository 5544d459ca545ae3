using System.Collections.Concurrent;

namespace VMScatter.Domain.Concurrency;

/// <summary>
/// Where CPU-heavy bulk work runs (hashing a guest's memory, digests): dedicated threads, one per core. On the shared
/// thread pool the same work filled it with long CPU-bound items, and the control plane's messages (Akka mailboxes
/// and remoting run on that pool) waited behind them, inside the downtime window. Also measured: running these
/// threads at a lower priority (nice 10) gave no further gain and lost CPU to QEMU guests on the same host.
/// </summary>
public sealed class BulkWork : TaskScheduler
{
    public static readonly BulkWork Scheduler = new(Math.Max(1, Environment.ProcessorCount));

    private readonly BlockingCollection<Task> _queue = new();
    private readonly int _threads;

    private BulkWork(int threads)
    {
        _threads = threads;
        for (int i = 0; i < threads; i++)
            new Thread(Work) { IsBackground = true, Name = $"vmscatter-bulk-{i}" }.Start();
    }

    public override int MaximumConcurrencyLevel => _threads;

    /// <summary>Runs <paramref name="work"/> on a bulk thread.</summary>
    public static Task<T> Run<T>(Func<T> work) => Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, Scheduler);

    private void Work()
    {
        foreach (var task in _queue.GetConsumingEnumerable()) TryExecuteTask(task);
    }

    protected override void QueueTask(Task task) => _queue.Add(task);

    /// <summary>Inline only on a bulk thread: a pool thread waiting on bulk work must not do it itself.</summary>
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) =>
        Thread.CurrentThread.Name?.StartsWith("vmscatter-bulk-", StringComparison.Ordinal) == true && TryExecuteTask(task);

    protected override IEnumerable<Task> GetScheduledTasks() => _queue.ToArray();
}
