using System.Diagnostics;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Synthetic;

// One guest model in one file (~330 lines): its memory, write log and workload share one write lock, which is the
// correctness argument for the log (see the race test); splitting them would spread that argument over files.
/// <summary>
/// A deterministic model of a running guest: its memory layout comes from the fleet seed, and a workload thread
/// keeps rewriting pages of its writable working set at the configured dirty rate while it runs. Its memory is
/// real (rendered once into guest RAM off the managed heap, rewritten page by page as the workload writes), so
/// reading it costs what reading a guest's RAM costs; without <c>materialize</c> only the content keys are kept
/// and pages are rendered on each read (for planning at scale, where bytes are never read).
/// </summary>
public sealed class SyntheticVm : IMigratableVm, IDirectPageAccess, IWriteLoggedGuest, IDirtyTrackingAccount, IDisposable
{
    private readonly ulong[] _keys;
    private readonly ulong[] _dirty;
    /// <summary>Per page, the log generation of the last collection that took it (0: none since logging started).</summary>
    private readonly int[] _collectedIn;
    private int _generation;
    private readonly int[] _workingSet;
    private readonly SyntheticGuestModel _model;
    private readonly object _writeLock = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task? _workload;
    private ulong _workloadState;
    private long _writes;
    private volatile bool _logging;
    private volatile VmRunState _state = VmRunState.Running;
    private readonly NativeGuestMemory? _memory;

    public SyntheticVm(VmDescription description, SyntheticGuestModel model, int osImage, int application, long seed, bool runWorkload = true, bool materialize = true)
    {
        model.Validate();
        Description = description;
        _model = model;
        OsImage = osImage;
        Application = application;
        int pages = description.PageCount;
        _keys = new ulong[pages];
        _dirty = new ulong[(pages + 63) / 64];
        _collectedIn = new int[pages];
        // string.GetHashCode is randomised per process; the layout must not be, so a stable FNV hash of the id is used.
        ulong vmSeed = Mix64.Mix((ulong)seed ^ StableHash(description.Id.Value));
        Layout(pages, vmSeed);
        if (materialize)
        {
            _memory = new NativeGuestMemory(pages);
            var page = new byte[Page.Size];
            for (int p = 0; p < pages; p++)
                if (_keys[p] != 0)
                {
                    PageContent.Render(_keys[p], _model.LowEntropyFraction, page);
                    _memory.WritePage(p, page);
                }
        }
        _workloadState = vmSeed ^ 0xD1B54A32D192ED03UL;
        _workingSet = ChooseWorkingSet(pages, Math.Min(model.WritableWorkingSetPages, pages), vmSeed);
        if (runWorkload && model.DirtyPagesPerSecond > 0 && _workingSet.Length > 0)
            _workload = Task.Run(() => RunWorkloadAsync(_stop.Token));
    }

    public VmDescription Description { get; }
    public int OsImage { get; }
    public int Application { get; }
    public int PageCount => _keys.Length;
    public VmRunState State => _state;

    /// <summary>Total page writes the workload has made; device state reflects it, as CPU state reflects progress.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    public void ReadPage(int index, Span<byte> destination)
    {
        if ((uint)index >= (uint)_keys.Length) throw new ArgumentOutOfRangeException(nameof(index));
        if (_memory is not null) _memory.ReadPage(index, destination[..Page.Size]);
        else PageContent.Render(Volatile.Read(ref _keys[index]), _model.LowEntropyFraction, destination[..Page.Size]);
    }

    public bool TryGetPage(int index, out ReadOnlySpan<byte> page)
    {
        if (_memory is not null) return _memory.TryGetPage(index, out page);
        page = default; // rendered on each read: nothing in place
        return false;
    }

    public void StartDirtyLogging()
    {
        _logging = false;
        Array.Clear(_dirty);
        Array.Clear(_collectedIn);
        Volatile.Write(ref _generation, 0);
        _logging = true;
    }

    public int LogGeneration => Volatile.Read(ref _generation);

    public string DirtyTrackingUsed => $"write log: {LogGeneration} collections";

    public bool UnwrittenSince(int page, int generation)
    {
        // Whatever the caller read before this call must not be reordered after the checks below.
        Interlocked.MemoryBarrier();
        // Dirty bit first, then the page's collection: a collector records the collection before it clears the bit.
        return _logging && !IsDirty(page) && Volatile.Read(ref _collectedIn[page]) <= generation;
    }

    public bool IsDirty(int page)
    {
        if ((uint)page >= (uint)_keys.Length) throw new ArgumentOutOfRangeException(nameof(page));
        return (Volatile.Read(ref _dirty[page >> 6]) >> (page & 63) & 1) != 0;
    }

    public int[] CollectDirtyPages()
    {
        var result = new List<int>();
        // Under the write lock: a collection never falls between a write's first and last byte (as a hypervisor that
        // write-protects pages again on collection makes a store in flight fault, and log, once more). Otherwise a
        // collection could clear the bit a write in progress had set, and the page would look unwritten until the write
        // finished: a copy taken meanwhile would pass UnwrittenSince torn.
        lock (_writeLock)
        {
            int generation = Interlocked.Increment(ref _generation);
            for (int w = 0; w < _dirty.Length; w++)
            {
                ulong bits = _dirty[w];
                if (bits == 0) continue;
                // Record the collection of every page before its bit is cleared (UnwrittenSince reads them the other way).
                for (ulong b = bits; b != 0; b &= b - 1)
                    Volatile.Write(ref _collectedIn[w * 64 + System.Numerics.BitOperations.TrailingZeroCount(b)], generation);
                Volatile.Write(ref _dirty[w], 0);
                for (; bits != 0; bits &= bits - 1) result.Add(w * 64 + System.Numerics.BitOperations.TrailingZeroCount(bits));
            }
        }
        return result.ToArray();
    }

    /// <summary>Writes <paramref name="count"/> pages of the working set now (tests drive the workload with this).</summary>
    public void WritePages(int count)
    {
        lock (_writeLock)
        {
            if (_state != VmRunState.Running) throw new InvalidOperationException($"VM {Description.Id} is {_state}; a paused guest does not write");
            for (int i = 0; i < count && _workingSet.Length > 0; i++)
            {
                int page = _workingSet[(int)(PageContent.Next(ref _workloadState) % (ulong)_workingSet.Length)];
                WriteKey(page, PageContent.Key(PageContent.Kind.Written, StableHashLong(), Interlocked.Increment(ref _writes)));
            }
        }
    }

    /// <summary>Overwrites one page with the given content key (0 = zero page); used by tests to craft exact cases.</summary>
    public void WritePageContent(int page, ulong contentKey)
    {
        lock (_writeLock)
        {
            if (_state != VmRunState.Running) throw new InvalidOperationException($"VM {Description.Id} is {_state}");
            Interlocked.Increment(ref _writes);
            WriteKey(page, contentKey);
        }
    }

    public ulong ContentKeyOf(int page) => Volatile.Read(ref _keys[page]);

    public Task PauseAsync(CancellationToken cancellationToken = default)
    {
        // Taking the write lock waits for an in-flight workload batch, so memory is quiescent once this returns.
        lock (_writeLock)
        {
            if (_state == VmRunState.Stopped) throw new InvalidOperationException($"VM {Description.Id} is stopped");
            _state = VmRunState.Paused;
        }
        return Task.CompletedTask;
    }

    public Task ResumeAsync(CancellationToken cancellationToken = default)
    {
        lock (_writeLock)
        {
            if (_state == VmRunState.Stopped) throw new InvalidOperationException($"VM {Description.Id} is stopped");
            _state = VmRunState.Running;
        }
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        lock (_writeLock) _state = VmRunState.Stopped;
        _stop.Cancel();
        if (_workload is not null) await _workload.ConfigureAwait(false);
    }

    public Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default)
    {
        if (_state == VmRunState.Running) throw new InvalidOperationException("device state is captured from a paused guest");
        // Stands in for CPU and device registers: it identifies the guest and how far it has run.
        var state = new byte[512];
        var text = System.Text.Encoding.UTF8.GetBytes($"synthetic-vm {Description.Id} os={OsImage} app={Application} writes={Writes}");
        text.AsSpan(0, Math.Min(text.Length, state.Length)).CopyTo(state);
        return Task.FromResult(state);
    }

    /// <summary>Whether the guest's memory has been freed (its host let it go).</summary>
    public bool Disposed { get; private set; }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposing, 1) != 0) return;
        _stop.Cancel();
        try { _workload?.Wait(WorkloadStopTimeout); } catch (AggregateException) { }
        FreeMemory();
    }

    /// <summary>As <see cref="Dispose"/>, awaiting the workload's end instead of blocking the calling thread on it.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposing, 1) != 0) return;
        _stop.Cancel();
        if (_workload is not null)
        {
            try { await _workload.WaitAsync(WorkloadStopTimeout).ConfigureAwait(false); }
            catch (Exception) { /* as in Dispose: however the workload ended (or if it hangs), the memory is freed */ }
        }
        FreeMemory();
    }

    private static readonly TimeSpan WorkloadStopTimeout = TimeSpan.FromSeconds(5);
    private int _disposing;

    private void FreeMemory()
    {
        _stop.Dispose();
        lock (_writeLock)
        {
            _memory?.Dispose();
            Disposed = true;
        }
    }

    private void WriteKey(int page, ulong key)
    {
        // Called under the write lock, so no collection comes between the mark and the last byte. Logged before the
        // first byte changes: a reader that then finds the page clean read the old bytes whole.
        MarkDirty(page);
        if (_memory is not null)
        {
            Span<byte> bytes = stackalloc byte[Page.Size];
            PageContent.Render(key, _model.LowEntropyFraction, bytes);
            _memory.WritePage(page, bytes);
        }
        Volatile.Write(ref _keys[page], key);
    }

    private void MarkDirty(int page)
    {
        if (_logging) Interlocked.Or(ref _dirty[page >> 6], 1UL << (page & 63));
    }

    private async Task RunWorkloadAsync(CancellationToken cancellationToken)
    {
        var tick = TimeSpan.FromMilliseconds(10);
        using var timer = new PeriodicTimer(tick);
        var clock = Stopwatch.StartNew();
        double owed = 0;
        double last = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                double now = clock.Elapsed.TotalSeconds;
                owed += (now - last) * _model.DirtyPagesPerSecond;
                last = now;
                int due = (int)owed;
                if (due == 0) continue;
                owed -= due;
                lock (_writeLock)
                {
                    if (_state != VmRunState.Running) { owed = 0; continue; }
                }
                try { WritePages(due); } catch (InvalidOperationException) { owed = 0; }
            }
        }
        catch (OperationCanceledException) { }
    }

    private void Layout(int pages, ulong vmSeed)
    {
        int zero = (int)(pages * _model.ZeroFraction);
        int os = (int)(pages * _model.OsImageFraction);
        int app = (int)(pages * _model.ApplicationFraction);
        int dup = (int)(pages * _model.DuplicateFraction);
        // Content of slot s: OS page s, app page s, ... assigned to a seeded permutation of page indexes,
        // because real guest memory interleaves these classes.
        var order = Permutation(pages, vmSeed);
        int s = 0;
        long vmOwner = (long)vmSeed;
        for (int i = 0; i < zero; i++) _keys[order[s++]] = 0;
        for (int i = 0; i < os; i++) _keys[order[s++]] = PageContent.Key(PageContent.Kind.OsImage, OsImage, i);
        for (int i = 0; i < app; i++) _keys[order[s++]] = PageContent.Key(PageContent.Kind.Application, Application, i);
        for (int i = 0; i < dup; i++) _keys[order[s++]] = PageContent.Key(PageContent.Kind.Duplicate, vmOwner, i % _model.DuplicateContents);
        for (int i = 0; s < pages; i++) _keys[order[s++]] = PageContent.Key(PageContent.Kind.Unique, vmOwner, i);
    }

    private static int[] Permutation(int n, ulong seed)
    {
        var p = new int[n];
        for (int i = 0; i < n; i++) p[i] = i;
        ulong state = seed;
        for (int i = n - 1; i > 0; i--)
        {
            int j = (int)(PageContent.Next(ref state) % (ulong)(i + 1));
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    private static int[] ChooseWorkingSet(int pages, int size, ulong seed)
    {
        var p = Permutation(pages, seed ^ 0xA5A5A5A5A5A5A5A5UL);
        var ws = p.AsSpan(0, size).ToArray();
        Array.Sort(ws);
        return ws;
    }

    private long StableHashLong() => (long)StableHash(Description.Id.Value);

    private static ulong StableHash(string s)
    {
        ulong h = 1469598103934665603UL;
        foreach (char c in s) h = (h ^ c) * 1099511628211UL;
        return h;
    }
}
