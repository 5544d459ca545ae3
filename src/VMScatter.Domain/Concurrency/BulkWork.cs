using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace VMScatter.Domain.Concurrency;

/// <summary>
/// Where CPU-heavy bulk work runs (hashing a guest's memory, digests): a few dedicated threads, one per core, at a
/// lower scheduling priority. On the shared thread pool the same work flooded every core with runnable threads, and
/// the control plane's messages (Akka mailboxes and remoting run on that pool) waited 100-270 ms per hop behind it,
/// measured inside the downtime window. Bulk work is throughput work; control messages are latency work.
/// </summary>
public sealed class BulkWork : TaskScheduler
{
    /// <summary>Nice value of bulk threads (Linux): below normal, so a woken control-plane thread runs first.</summary>
    private const int BulkNice = 10;

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

    /// <summary>Options for Parallel loops over bulk work: these threads, no more than there are.</summary>
    public static ParallelOptions Parallel => new() { TaskScheduler = Scheduler, MaxDegreeOfParallelism = Scheduler._threads };

    private void Work()
    {
        if (OperatingSystem.IsLinux())
            try { _ = SetPriority(0, GetTid(), BulkNice); } catch (EntryPointNotFoundException) { } catch (DllNotFoundException) { }
        foreach (var task in _queue.GetConsumingEnumerable()) TryExecuteTask(task);
    }

    protected override void QueueTask(Task task) => _queue.Add(task);

    /// <summary>Inline only on a bulk thread: a pool thread waiting on bulk work must not do it at normal priority.</summary>
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) =>
        Thread.CurrentThread.Name?.StartsWith("vmscatter-bulk-", StringComparison.Ordinal) == true && TryExecuteTask(task);

    protected override IEnumerable<Task> GetScheduledTasks() => _queue.ToArray();

    [DllImport("libc", EntryPoint = "setpriority", SetLastError = true)]
    private static extern int SetPriority(int which, int who, int priority);

    [DllImport("libc", EntryPoint = "gettid")]
    private static extern int GetTid();
}
