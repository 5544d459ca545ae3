using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using VMScatter.Domain;
using VMScatter.Domain.Concurrency;
using VMScatter.Domain.Pages;
using VMScatter.Qemu.Migration;
using VMScatter.Qemu.WriteProtect;

namespace VMScatter.Qemu;

/// <summary>What a source host boots: one guest of the image, with its memory size and kernel command line.</summary>
public sealed record QemuGuestSpec(string Id, GuestImage Image, long MemoryBytes, int VCpus = 1, string Accelerator = "tcg", string Cpu = "qemu64", string WorkloadArguments = "")
{
    /// <summary>Its disks and NICs (on this host's shared storage and netdev kinds; its targets must allow them too).</summary>
    public QemuDevices Devices { get; init; } = QemuDevices.None;

    /// <summary>Serial console, no boot chatter, no kernel address randomisation (it makes identical kernels' pages differ).</summary>
    public string BaseCommandLine { get; init; } = "console=ttyS0 quiet panic=-1 nokaslr";

    public string KernelCommandLine => $"{BaseCommandLine} {WorkloadArguments}".Trim();
}

/// <summary>A running guest this node did not start: its monitor socket, RAM file and the machine arguments it was started with.</summary>
public sealed record QemuAdoption(string Id, string QmpSocket, string RamFile, long MemoryBytes, QemuMachine Machine, string? SerialLog = null);

/// <summary>
/// A running QEMU guest on the source host, behind the same abstraction as a synthetic one. Its RAM is a shared
/// file read in place. QEMU gives no dirty log to an outside reader but its own migration stream (read as one with
/// <see cref="DirtyTracking.QemuStream"/>, see <see cref="QemuStreamLog"/>), so by default pages are found dirty by re-hashing
/// (a 64-bit hash per page against the content the previous round saw); a page read for sending whose bytes
/// differ from that round's snapshot is reported again next round, so what the target holds can never silently
/// differ from the guest. The device state is captured through QEMU's own migration stream with x-ignore-shared
/// (RAM excluded), streamed over loopback TCP into this process.
/// </summary>
public sealed class QemuVm : IMigratableVm, IDirectPageAccess, IDetachableGuest, IStepTimed, IPausedPageHashes, ICollectedPageHashes, IHelperCpu, ISelfPausingGuest, IDirtyTrackingAccount
{
    private readonly QemuProcess _qemu;
    private readonly QemuRamFile _ram;
    private readonly QemuSettings _settings;
    /// <summary>Each page's 128-bit content hash as the last collection saw it (the digest's page hash).</summary>
    private readonly ContentHash[] _snapshot;
    private readonly ulong[] _reread;
    /// <summary>The last collection began after a completed QMP stop and the guest has not run since: <see cref="_snapshot"/> is the paused memory.</summary>
    private volatile bool _snapshotIsPaused;
    private int _resumes;
    /// <summary>A QMP stop completed and no resume began since (cleared before cont, unlike <see cref="State"/>).</summary>
    private volatile bool _stopped;
    /// <summary>x-ignore-shared is on in this QEMU (it stays on: only device-state captures migrate it).</summary>
    private bool _ignoreSharedSet;
    /// <summary>Setting it, begun with dirty logging: by the pause it is on, one QMP round trip (2-11 ms measured) fewer there.</summary>
    private Task? _ignoreShared;
    private volatile bool _logging;
    private volatile VmRunState _state = VmRunState.Running;
    /// <summary>The RAM backend's block name in QEMU's migration stream.</summary>
    private readonly string _block;
    /// <summary>With <see cref="DirtyTracking.QemuStream"/>: QEMU's migration of the guest into this process, from its wave's first collection on.</summary>
    private QemuStreamLog? _stream;
    /// <summary>The pause under way came from <see cref="_stream"/> ending (QEMU stopped the guest), not from a QMP stop.</summary>
    private volatile bool _pausedByStream;
    /// <summary>With <see cref="DirtyTracking.WriteProtect"/>: the kernel's log of QEMU's writes, from the first dirty logging on.</summary>
    private WriteProtectLog? _writeLog;
    /// <summary>Why the kernel's log could not be had (or failed): this guest is re-hashed from then on.</summary>
    private volatile string? _writeLogUnavailable;

    private readonly object _endLock = new();
    private Task? _ended;
    private GuestStateFile? _stateFile;

    private QemuVm(VmDescription description, QemuProcess qemu, QemuRamFile ram, QemuSettings settings, string block)
    {
        Description = description;
        _block = block;
        _qemu = qemu;
        _ram = ram;
        _settings = settings;
        _snapshot = new ContentHash[ram.PageCount];
        _reread = new ulong[(ram.PageCount + 63) / 64];
    }

    public VmDescription Description { get; }
    public VmRunState State => _state;
    public int PageCount => _ram.PageCount;
    public string SerialLogPath => _qemu.SerialLogPath;
    public string RamFilePath => _ram.Path;
    public string? RuntimeDirectory => _qemu.RuntimeDirectory;
    public int ProcessId => _qemu.ProcessId;

    /// <summary>The QEMU process this guest runs in (QEMU's own migration of it is the bench's baseline).</summary>
    public QemuProcess Process => _qemu;

    /// <summary>The steps of the last device-state capture, timed.</summary>
    public StepTimes? LastSteps { get; private set; }

    /// <summary>The guest's serial counter when it was last paused here: its target must count on from it.</summary>
    public long CounterAtPause { get; private set; }

    /// <summary>Boots a guest and returns once its init reports ready on the serial console.</summary>
    public static async Task<QemuVm> StartAsync(QemuGuestSpec spec, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        var machine = QemuMachine.ForImage(spec.Image, spec.MemoryBytes, spec.VCpus, spec.Accelerator, spec.Cpu, spec.KernelCommandLine, spec.Devices);
        string ramFile = Path.Combine(settings.RamDirectory, $"vmscatter-{spec.Id}-{Guid.NewGuid().ToString("N")[..8]}.ram");
        var qemu = await QemuProcess.StartOnNewRamFileAsync(spec.Id, machine, spec.MemoryBytes, ramFile, incoming: false, settings, cancellationToken).ConfigureAwait(false);
        try
        {
            await SerialConsole.WaitForLineAsync(qemu.SerialLogPath, l => l.StartsWith(SerialConsole.ReadyMarker, StringComparison.Ordinal), settings.BootTimeout, () => !qemu.HasExited, cancellationToken)
                .ConfigureAwait(false);
            var ram = QemuRamFile.OpenForReading(ramFile, spec.MemoryBytes);
            ram.DeleteOnDispose = true;
            var description = new VmDescription(new VmId(spec.Id), spec.MemoryBytes, spec.VCpus, "qemu", machine.Serialize());
            return new QemuVm(description, qemu, ram, settings, machine.MemoryBackendId);
        }
        catch (Exception e)
        {
            var failure = e is QemuStepException q ? q : qemu.Failure("boot", e.Message);
            await qemu.DisposeAsync().ConfigureAwait(false);
            File.Delete(ramFile);
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested) throw;
            throw failure;
        }
    }

    /// <summary>
    /// Takes over a guest someone else started, by its monitor socket and RAM file. Its RAM must be a shared
    /// memory-backend-file of the guest's size (checked over QMP); its machine arguments are the operator's word
    /// (a wrong one fails the target's load step, and the guest then keeps running here). The node never quits an
    /// adopted guest except after handing it over, and never deletes its files.
    /// </summary>
    public static async Task<QemuVm> AdoptAsync(QemuAdoption adoption, QemuSettings settings, CancellationToken cancellationToken = default)
    {
        var qemu = await QemuProcess.AdoptAsync(adoption.Id, adoption.QmpSocket, adoption.SerialLog, settings, cancellationToken).ConfigureAwait(false);
        try
        {
            const string step = "adopt";
            var status = await qemu.RunAsync(step, "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
            string run = status?["status"]?.GetValue<string>() ?? "unknown";
            if (run is not ("running" or "paused")) throw qemu.Failure(step, $"the guest is '{run}', not running or paused");
            var memdevs = await qemu.RunAsync(step, "query-memdev", cancellationToken: cancellationToken).ConfigureAwait(false) as JsonArray ?? [];
            var backend = memdevs.FirstOrDefault(m => m?["size"]?.GetValue<long>() == adoption.MemoryBytes && m?["share"]?.GetValue<bool>() == true)
                ?? throw qemu.Failure(step, $"its RAM is not a shared memory backend of {adoption.MemoryBytes} bytes (start it with -object memory-backend-file,...,share=on -machine memory-backend=...)");
            // Its target must name the RAM backend as this QEMU does: migration streams identify RAM blocks by it.
            var machine = adoption.Machine with { MemoryBackendId = backend["id"]?.GetValue<string>() ?? adoption.Machine.MemoryBackendId };
            await CheckAdoptedDevicesAsync(qemu, machine.Devices, settings, cancellationToken).ConfigureAwait(false);
            var cpus = await qemu.RunAsync(step, "query-cpus-fast", cancellationToken: cancellationToken).ConfigureAwait(false) as JsonArray;
            QemuRamFile ram;
            try { ram = QemuRamFile.OpenForReading(adoption.RamFile, adoption.MemoryBytes); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw qemu.Failure(step, e.Message); }
            var description = new VmDescription(new VmId(adoption.Id), adoption.MemoryBytes, Math.Max(1, cpus?.Count ?? 1), "qemu", machine.Serialize());
            return new QemuVm(description, qemu, ram, settings, machine.MemoryBackendId) { _state = run == "paused" ? VmRunState.Paused : VmRunState.Running };
        }
        catch
        {
            await qemu.DetachAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// An adopted guest's described disks and NICs are this host's (its storage, its netdev kinds) and are the ones
    /// its QEMU has: each disk (by device id) has the described file open, each NIC (by device id) the described MAC.
    /// </summary>
    private static async Task CheckAdoptedDevicesAsync(QemuProcess qemu, QemuDevices devices, QemuSettings settings, CancellationToken cancellationToken)
    {
        const string step = "adopt";
        if (devices.IsEmpty) return;
        try { _ = devices.HostArguments(settings.Devices); }
        catch (ArgumentException e) { throw qemu.Failure(step, e.Message); }
        var blocks = await qemu.RunAsync(step, "query-block", cancellationToken: cancellationToken).ConfigureAwait(false) as JsonArray ?? [];
        foreach (var disk in devices.Disks)
        {
            string path = settings.Devices.Resolve(disk);
            var block = blocks.FirstOrDefault(b => b?["qdev"]?.GetValue<string>() is { } q && (q == disk.Id || q.StartsWith($"/machine/peripheral/{disk.Id}/", StringComparison.Ordinal)))
                ?? throw qemu.Failure(step, $"disk {disk.Id}: the guest has no block device with that id");
            string? file = block["inserted"]?["file"]?.GetValue<string>();
            // QEMU names a node opened with options (a qcow2 with "backing": null) json:{...}: its file's filename is the path.
            if (file?.StartsWith("json:", StringComparison.Ordinal) == true)
                try { file = JsonNode.Parse(file["json:".Length..])?["file"]?["filename"]?.GetValue<string>(); }
                catch (System.Text.Json.JsonException) { }
            if (file != path) throw qemu.Failure(step, $"disk {disk.Id}: the guest's device has '{file}' open, not {path}");
        }
        foreach (var nic in devices.Nics)
        {
            JsonArray? filters;
            try { filters = await qemu.Qmp.ExecuteAsync("query-rx-filter", new JsonObject { ["name"] = nic.Id }, cancellationToken: cancellationToken).ConfigureAwait(false) as JsonArray; }
            catch (QmpException e) { throw qemu.Failure(step, $"NIC {nic.Id}: the guest has no NIC with that id ({e.Message})"); }
            string? mac = filters?.FirstOrDefault()?["main-mac"]?.GetValue<string>();
            if (!string.Equals(mac, nic.Mac, StringComparison.OrdinalIgnoreCase)) throw qemu.Failure(step, $"NIC {nic.Id}: the guest's MAC is '{mac}', not {nic.Mac}");
        }
    }

    /// <summary>
    /// Finds again a guest this node ran before it stopped or crashed, from its state file entry: the same QEMU
    /// process, its monitor answering, its RAM file there. One this node booted stays its own (quit and its files
    /// removed after its handover); one adopted from an operator stays foreign. Its entry stays in <paramref name="stateFile"/>.
    /// </summary>
    public static async Task<QemuVm> ReattachAsync(GuestStateEntry entry, QemuSettings settings, GuestStateFile stateFile, CancellationToken cancellationToken = default)
    {
        const string step = "re-adopt";
        QemuMachine machine;
        try { machine = QemuMachine.Parse(entry.Machine, entry.MemoryBytes); }
        catch (ArgumentException e) { throw new QemuStepException(entry.Id, step, $"its machine arguments: {e.Message}"); }
        QemuVm vm;
        if (entry.Foreign || entry.Process is null || entry.RuntimeDirectory is null)
            vm = await AdoptAsync(new QemuAdoption(entry.Id, entry.QmpSocket, entry.RamFile, entry.MemoryBytes, machine, entry.SerialLog), settings, cancellationToken).ConfigureAwait(false);
        else
        {
            var qemu = await QemuProcess.ReattachAsync(entry.Id, entry.Process, entry.RuntimeDirectory, entry.QmpSocket, entry.SerialLog ?? "", settings, cancellationToken).ConfigureAwait(false);
            try
            {
                var status = await qemu.RunAsync(step, "query-status", cancellationToken: cancellationToken).ConfigureAwait(false);
                string run = status?["status"]?.GetValue<string>() ?? "unknown";
                // postmigrate: paused by a migration of it this node ran (QEMU's stream, or a device-state capture).
                if (run == "postmigrate") run = "paused";
                if (run is not ("running" or "paused")) throw qemu.Failure(step, $"the guest is '{run}', not running or paused");
                QemuRamFile ram;
                try { ram = QemuRamFile.OpenForReading(entry.RamFile, entry.MemoryBytes); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw qemu.Failure(step, e.Message); }
                ram.DeleteOnDispose = true;
                var description = new VmDescription(new VmId(entry.Id), entry.MemoryBytes, entry.VCpus, "qemu", machine.Serialize());
                vm = new QemuVm(description, qemu, ram, settings, machine.MemoryBackendId) { _state = run == "paused" ? VmRunState.Paused : VmRunState.Running };
            }
            catch
            {
                await qemu.DetachAsync().ConfigureAwait(false);
                throw;
            }
        }
        vm._stateFile = stateFile;
        return vm;
    }

    /// <summary>Lists this guest in the node's state file (it is removed from it when the guest is quit here).</summary>
    public async Task RecordInAsync(GuestStateFile stateFile)
    {
        _stateFile = stateFile;
        await stateFile.PutAsync(StateEntry).ConfigureAwait(false);
    }

    /// <summary>This guest as its node's state file lists it.</summary>
    public GuestStateEntry StateEntry => new(Description.Id.Value, GuestPlace.Source, _qemu.QmpSocket, _ram.Path, Description.MemoryBytes, Description.VCpus,
        Description.MachineArguments, _qemu.Pid?.Pid ?? 0, _qemu.Pid?.StartTicks ?? 0, _qemu.RuntimeDirectory, _qemu.SerialLogPath, _qemu.Adopted);

    public bool TryGetPage(int index, out ReadOnlySpan<byte> page) => _ram.TryGetPage(index, out page);

    public void ReadPage(int index, Span<byte> destination)
    {
        var page = _ram.PageSpan(index);
        page.CopyTo(destination);
        // The copy is what may be sent: if it is not the content this round's snapshot saw, resend it next round.
        if (_logging && ContentHash.OfPage(destination[..Page.Size]) != ReadSnapshot(index))
            Interlocked.Or(ref _reread[index >> 6], 1UL << (index & 63));
    }

    public void StartDirtyLogging()
    {
        // QEMU's stream (a later collection's) needs x-ignore-shared off; the device-state capture sets it then.
        if (_ignoreShared is null && _settings.DirtyTracking != DirtyTracking.QemuStream)
        {
            _ignoreShared = SetIgnoreSharedAsync("dirty logging");
            // A failure here is met again by the pause, which sets it itself.
            _ignoreShared.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        }
        _snapshotIsPaused = false;
        // Protected before the pass below reads a page: a page written after it is protected is in the next collection.
        if (_settings.DirtyTracking == DirtyTracking.WriteProtect && _writeLogUnavailable is null)
            try
            {
                if (_writeLog is null && DirectIoDisk() is { } disk)
                    throw new WriteProtectUnavailableException($"disk {disk} is opened with O_DIRECT (cache.direct): a DMA into a page can land after the log protected it");
                WriteProtectLog log;
                // Under the ending's lock: a log made after the guest was let go would outlive it.
                lock (_endLock)
                {
                    if (_ended is not null) throw new ObjectDisposedException(nameof(QemuVm), "the guest was let go");
                    // An adopted guest's QEMU is the monitor's peer; a process that does not map this RAM file is refused.
                    log = _writeLog ??= WriteProtectLog.Start(_qemu.MonitorProcessId, _ram.MappedAt, _ram.PageCount);
                }
                // Disposed meanwhile (the guest let go): ObjectDisposedException, and re-hashing.
                log.TakeWritten(null);
            }
            catch (Exception e) when (e is WriteProtectUnavailableException or ObjectDisposedException or QemuStepException) { DropWriteLog(e.Message); }
        // Holes (pages the guest never wrote) are zero, and are not read: reading one would allocate it in tmpfs.
        Array.Fill(_snapshot, ContentHash.OfZeroPage);
        foreach (var (first, end) in _ram.DataRanges())
            for (int p = first; p < end; p++) _snapshot[p] = ContentHash.OfPage(_ram.PageSpan(p));
        Array.Clear(_reread);
        _rehashedThisRun = false;
        (_rehashes, _streamCollections, _writeLogCollections, _missedSinceStart) = (0, 0, 0, StreamMissedPages);
        _logging = true;
    }

    public int[] CollectDirtyPages()
    {
        if (_writeLog is { } log && CollectWritten(log) is { } written) return written;
        // QEMU's own log, unless the guest was paused by a QMP stop outside a stream (then nothing streams: re-hash).
        // Each run of pre-copy rounds re-hashes once first: QEMU stops the guest as soon as its bulk pass is through, so
        // what was written since round 0 must be sent before that, while the guest still runs.
        if (_settings.DirtyTracking == DirtyTracking.QemuStream && (!_stopped || _pausedByStream) && _rehashedThisRun)
        {
            if (!(_stopped && _stream is { Ended.IsCompletedSuccessfully: true } ended)) return CollectFromStream();
            // The pause: what QEMU sent last, and the paused memory re-hashed all the same. QEMU 7.2's log under TCG
            // missed written pages (a dozen, in 2 of 10 six-guest runs): trusted alone, the guest moved with them stale.
            var marked = new List<int>();
            ended.TakeMarked(marked);
            Interlocked.Increment(ref _streamCollections);
            var all = Rehash(out int missed);
            Interlocked.Add(ref _streamMissed, missed);
            return marked.Count == 0 ? all : all.Union(marked).Order().ToArray();
        }
        _rehashedThisRun = true;
        return Rehash(out _);
    }

    /// <summary>Such pages over this guest's life here.</summary>
    public long StreamMissedPages => Interlocked.Read(ref _streamMissed);

    private long _streamMissed;

    /// <summary>Since dirty logging started: whole-memory passes (the log's start is one), collections QEMU's stream gave, and what it missed before.</summary>
    private int _rehashes, _streamCollections;
    private long _missedSinceStart;

    public string DirtyTrackingUsed => _settings.DirtyTracking switch
    {
        DirtyTracking.Rehash => $"re-hash: {Volatile.Read(ref _rehashes) + 1} whole-memory passes",
        DirtyTracking.WriteProtect when _writeLogUnavailable is { } why => $"re-hash: {Volatile.Read(ref _rehashes) + 1} whole-memory passes (no write-protect log: {why})",
        DirtyTracking.WriteProtect => $"write-protect: {Volatile.Read(ref _writeLogCollections)} collections from the kernel's log of QEMU's writes, {Volatile.Read(ref _rehashes) + 1} whole-memory pass",
        _ => $"qemu-stream: {Volatile.Read(ref _streamCollections)} collections from QEMU's stream, {Volatile.Read(ref _rehashes) + 1} whole-memory passes (the log's start, each run's first collection, each pause, which also takes what the stream resent), {StreamMissedPages - Interlocked.Read(ref _missedSinceStart)} written pages the stream had not resent",
    };

    private int _writeLogCollections;

    /// <summary>
    /// The pages the kernel's log shows written since the last collection, and those a round's read found changed,
    /// each re-hashed: the dirty ones are those whose hash changed or that a read found changed. Every other page is
    /// unwritten since its hash was taken, so after a collection that began paused the snapshot is the paused memory.
    /// Null if the log failed: this guest is re-hashed from then on.
    /// </summary>
    private int[]? CollectWritten(WriteProtectLog log)
    {
        int resumes = Volatile.Read(ref _resumes);
        bool paused = _stopped;
        _snapshotIsPaused = false;
        var pages = new List<int>();
        try { log.TakeWritten(pages); }
        catch (Exception e) when (e is WriteProtectUnavailableException or ObjectDisposedException)
        {
            DropWriteLog(e.Message);
            return null;
        }
        int written = pages.Count;
        PageBits.TakeAll(_reread, pages);
        HashSet<int>? reread = pages.Count == written ? null : pages.Skip(written).ToHashSet();
        // Distinct: two mappings of one page list it twice, and two chunks must never hash one page at once.
        var listed = pages.Distinct().ToArray();
        Array.Sort(listed);
        var dirty = new bool[listed.Length];
        int caller = Environment.CurrentManagedThreadId;
        Parallel.For(0, (listed.Length + WrittenChunkPages - 1) / WrittenChunkPages, CollectParallel, c =>
        {
            bool helper = Environment.CurrentManagedThreadId != caller;
            double cpu = helper ? ThreadCpu.Seconds() : 0;
            for (int i = c * WrittenChunkPages, end = Math.Min(listed.Length, i + WrittenChunkPages); i < end; i++)
            {
                int p = listed[i];
                var h = ContentHash.OfPage(_ram.PageSpan(p));
                dirty[i] = h != _snapshot[p] || reread?.Contains(p) == true;
                _snapshot[p] = h;
            }
            if (helper) lock (_helperCpuLock) _helperCpu += ThreadCpu.Seconds() - cpu;
        });
        Interlocked.Increment(ref _writeLogCollections);
        LastCollectionPagesHashed = listed.Length;
        _snapshotIsPaused = paused && Volatile.Read(ref _resumes) == resumes;
        return listed.Where((_, i) => dirty[i]).ToArray();
    }

    /// <summary>The pages the last collection read and hashed: those the kernel's log listed, or every page holding data.</summary>
    public int LastCollectionPagesHashed { get; private set; }

    /// <summary>Pages a helper thread hashes at a time, of a collection's written pages.</summary>
    private const int WrittenChunkPages = 1024;

    /// <summary>The first block device QEMU has open with O_DIRECT (its DMA bypasses the page tables the log watches), or null.</summary>
    private string? DirectIoDisk()
    {
        var blocks = _qemu.RunAsync("dirty logging (query-block)", "query-block").GetAwaiter().GetResult() as JsonArray ?? [];
        return blocks.FirstOrDefault(b => b?["inserted"]?["cache"]?["direct"]?.GetValue<bool>() == true) is { } direct
            ? direct["qdev"]?.GetValue<string>() ?? direct["device"]?.GetValue<string>() ?? "?"
            : null;
    }

    private void DropWriteLog(string why)
    {
        _writeLogUnavailable = why;
        Interlocked.Exchange(ref _writeLog, null)?.Dispose();
    }

    /// <summary>Why this guest has no write-protect log (null if it has one, or was not to).</summary>
    public string? WriteLogUnavailable => _writeLogUnavailable;

    /// <summary>A whole-memory pass: the pages whose hash changed since the last, or that a read found changed; <paramref name="changed"/> counts the former.</summary>
    private int[] Rehash(out int changed)
    {
        Interlocked.Increment(ref _rehashes);
        int resumes = Volatile.Read(ref _resumes);
        bool paused = _stopped;
        _snapshotIsPaused = false;
        // A whole-memory pass, inside the pause at a stop-and-copy: spread over the bulk threads that are free (the
        // caller does every chunk itself when the others are busy, e.g. with the wave's other guests).
        int chunks = (_snapshot.Length + CollectChunkPages - 1) / CollectChunkPages;
        var dirtyOf = new int[chunks][];
        // Taken before any page is read: a hole written after this is read as data by the next pass, as a page written
        // after its read is. Paused, the memory no longer changes and the holes are exact.
        var data = new ulong[(_snapshot.Length + 63) / 64];
        foreach (var (first, end) in _ram.DataRanges()) PageBits.SetRange(data, first, end);
        LastCollectionPagesHashed = data.Sum(w => System.Numerics.BitOperations.PopCount(w));
        int differingPages = 0;
        int caller = Environment.CurrentManagedThreadId;
        Parallel.For(0, chunks, CollectParallel, c =>
        {
            bool helper = Environment.CurrentManagedThreadId != caller;
            double cpu = helper ? ThreadCpu.Seconds() : 0;
            var dirty = new List<int>();
            int differing = 0;
            for (int p = c * CollectChunkPages, end = Math.Min(_snapshot.Length, p + CollectChunkPages); p < end; p++)
            {
                var h = (data[p >> 6] & (1UL << (p & 63))) != 0 ? ContentHash.OfPage(_ram.PageSpan(p)) : ContentHash.OfZeroPage;
                bool reread = (Interlocked.And(ref _reread[p >> 6], ~(1UL << (p & 63))) & (1UL << (p & 63))) != 0;
                if (h != _snapshot[p]) differing++;
                if (h != _snapshot[p] || reread) dirty.Add(p);
                _snapshot[p] = h;
            }
            dirtyOf[c] = dirty.ToArray();
            Interlocked.Add(ref differingPages, differing);
            if (helper) lock (_helperCpuLock) _helperCpu += ThreadCpu.Seconds() - cpu;
        });
        // Paused throughout (no resume began meanwhile): every hash above is of memory that no longer changes.
        _snapshotIsPaused = paused && Volatile.Read(ref _resumes) == resumes;
        changed = differingPages;
        return dirtyOf.SelectMany(d => d).ToArray();
    }

    /// <summary>
    /// The pages QEMU's stream showed changed since the last collection, and those a round's read found changed. The
    /// first such collection starts QEMU's migration and waits for its bulk pass (every page once, each compared with
    /// the hash the last collection took) and briefly for QEMU to stop the guest; later ones take what QEMU resent since.
    /// </summary>
    private int[] CollectFromStream()
    {
        int resumes = Volatile.Read(ref _resumes);
        bool paused = _stopped;
        _snapshotIsPaused = false;
        if (_stream is null || (_stream.Ended.IsCompleted && !paused))
        {
            _stream?.Detach();
            Interlocked.Exchange(ref _streamEndedAt, 0);
            CaptureEndedAsync().GetAwaiter().GetResult();
            var stream = QemuStreamLog.StartAsync(_qemu, _block, (ulong)Description.MemoryBytes, _snapshot, _settings).GetAwaiter().GetResult();
            _ignoreSharedSet = false;
            _stream = stream;
            _streamOpen = true;
            stream.Ended.ContinueWith(t =>
            {
                if (!t.IsCompletedSuccessfully || _stream != stream || Volatile.Read(ref _resumes) != resumes) return;
                // QEMU's pre-copy converged: it stopped the guest and sent the rest. The guest is paused here now.
                Interlocked.CompareExchange(ref _streamEndedAt, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), 0);
                _pausedByStream = true;
                _stopped = true;
                _state = VmRunState.Paused;
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            if (!stream.BulkDone.Wait(_settings.StateTransferTimeout))
                throw _qemu.Failure("collect dirty pages", $"QEMU's bulk pass did not end within {_settings.StateTransferTimeout.TotalSeconds:0}s");
            // QEMU converges right after its bulk pass (its measured loopback rate makes any rest fit its limit): waited for
            // briefly, the guest is known stopped and this round is the stop-and-copy, not a pre-copy round inside the pause.
            try { stream.Ended.Wait(StreamSettle); }
            catch (AggregateException) { }
        }
        var s = _stream;
        if (s.Ended.IsFaulted) throw s.Ended.Exception!.GetBaseException();
        Interlocked.Increment(ref _streamCollections);
        var pages = new List<int>();
        s.TakeMarked(pages);
        int marked = pages.Count;
        PageBits.TakeAll(_reread, pages);
        lock (_helperCpuLock) _helperCpu += s.TakeHashSeconds();
        return pages.Count == marked ? pages.ToArray() : pages.Distinct().Order().ToArray();
    }

    public bool Streaming => _streamOpen;

    /// <summary>A stream was started and no resume ran since: whatever became of it (a reader that failed after QEMU completed included), a resume runs cont.</summary>
    private volatile bool _streamOpen;

    /// <summary>How long a collection waits, after QEMU's bulk pass, for QEMU to stop the guest.</summary>
    private static readonly TimeSpan StreamSettle = TimeSpan.FromMilliseconds(100);

    /// <summary>How this guest's written pages are found.</summary>
    public DirtyTracking Tracking => _settings.DirtyTracking;

    /// <summary>RAM records of the guest's block QEMU's current (or last) stream carried: its bulk pass, then each page resent.</summary>
    public long StreamRecords => _stream?.Records ?? 0;

    /// <summary>QEMU's STOP event's time; without it, when the stream was seen to end (later than the stop, never earlier than a request to pause).</summary>
    public long? StoppedItselfAtUnixMs => _pausedByStream ? _stream?.StoppedAtUnixMs ?? (Interlocked.Read(ref _streamEndedAt) is > 0 and var t ? t : null) : null;

    private long _streamEndedAt;

    /// <summary>Since the guest last ran on after a pause (or since logging began), a collection re-hashed its memory.</summary>
    private volatile bool _rehashedThisRun;

    /// <summary>64-page aligned (one word of the re-read bits), 16 MiB: enough chunks for every core, few enough to cost nothing.</summary>
    private const int CollectChunkPages = 4096;

    private static readonly ParallelOptions CollectParallel = new() { TaskScheduler = BulkWork.Scheduler };

    private readonly object _helperCpuLock = new();
    private double _helperCpu;

    public double TakeHelperCpuSeconds()
    {
        lock (_helperCpuLock)
        {
            double cpu = _helperCpu;
            _helperCpu = 0;
            return cpu;
        }
    }

    public ContentHash[]? PausedPageHashes => _snapshotIsPaused ? _snapshot : null;

    public bool TryGetCollectedHash(int page, out ContentHash hash)
    {
        hash = _logging ? ReadSnapshot(page) : default;
        return _logging;
    }

    /// <summary>
    /// A snapshot entry, which a collection may be rewriting: a torn read mixes halves of two 128-bit hashes, and only
    /// passes for the copy's hash if a 64-bit half of two different contents' hashes agree (~2^-64); even then the
    /// handover digests differ and the guest stays here.
    /// </summary>
    private ContentHash ReadSnapshot(int index) => _snapshot[index];

    public async Task PauseAsync(CancellationToken cancellationToken = default)
    {
        if (_settings.DirtyTracking == DirtyTracking.QemuStream && _stream is { } stream && _streamOpen)
        {
            // QEMU's pre-copy ends (it stops the guest, if it has not yet, and sends the pages written last).
            await stream.ConvergeAsync(_settings.StateTransferTimeout, cancellationToken).ConfigureAwait(false);
            _pausedByStream = true;
            _state = VmRunState.Paused;
            _stopped = true;
            CounterAtPause = SerialConsole.LastCounter(_qemu.SerialLogPath);
            return;
        }
        // The capture's capability is set while the guest still runs (from dirty logging on, else now): fewer QMP round trips inside the pause.
        if (_ignoreShared is not { IsCompletedSuccessfully: true }) await SetIgnoreSharedAsync("pause (stop)", cancellationToken).ConfigureAwait(false);
        await _qemu.RunAsync("pause (stop)", "stop", cancellationToken: cancellationToken).ConfigureAwait(false);
        _state = VmRunState.Paused;
        _stopped = true;
        CounterAtPause = SerialConsole.LastCounter(_qemu.SerialLogPath);
    }

    public async Task ResumeAsync(CancellationToken cancellationToken = default)
    {
        // Before cont, and whether or not it succeeds: a collection running now must not claim the paused memory.
        _stopped = false;
        _pausedByStream = false;
        _rehashedThisRun = false;
        Interlocked.Increment(ref _resumes);
        _snapshotIsPaused = false;
        await CaptureEndedAsync().ConfigureAwait(false);
        // A migration QEMU still runs would stop the guest when it converges: it ends here. Failing that, cont all the same.
        if (_stream is { } stream)
        {
            try { await stream.CancelAsync(_settings.StateTransferTimeout).ConfigureAwait(false); }
            catch (QemuStepException) { }
            // The stream's end may have marked the guest paused meanwhile: this resume is later.
            _stopped = false;
            _pausedByStream = false;
            _streamOpen = false;
        }
        await _qemu.RunAsync("resume on source (cont)", "cont", cancellationToken: cancellationToken).ConfigureAwait(false);
        _state = VmRunState.Running;
    }

    /// <summary>Quits the guest here (and removes its RAM file if this node started it); its target runs it now.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        _state = VmRunState.Stopped;
        await End(quit: true).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs QEMU's migration of the paused guest with x-ignore-shared into a loopback socket this process reads:
    /// the stream is the device state plus the small non-shared RAM blocks (ROMs), about 1 MB, and no file is left.
    /// </summary>
    public async Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default)
    {
        const string step = "capture device state";
        var steps = new StepTimes();
        LastSteps = steps;
        // QEMU's stream ended with the device state (QEMU migrates a guest a completed migration paused only once it ran again).
        if (_pausedByStream && _stream is { Ended.IsCompletedSuccessfully: true } stream)
        {
            var state = stream.DeviceState();
            steps.Mark("from QEMU's stream");
            return state;
        }
        await CaptureEndedAsync().ConfigureAwait(false);
        if (!_ignoreSharedSet) await _qemu.RunAsync(step, "migrate-set-capabilities", IgnoreShared(), cancellationToken: cancellationToken).ConfigureAwait(false);
        _ignoreSharedSet = true;
        steps.Mark("capabilities");
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start(1);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_settings.StateTransferTimeout);
        Task<byte[]>? streamed = null;
        bool migrating = false, endAwaited = false;
        try
        {
            int port = ((IPEndPoint)listener.LocalEndpoint).Port;
            // Read from the moment QEMU connects, beside the monitor's reply to migrate: neither waits for the other.
            streamed = ReadToEndAsync(listener, timeout.Token);
            migrating = true;
            await _qemu.RunAsync(step, "migrate", new JsonObject { ["uri"] = $"tcp:127.0.0.1:{port}" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            steps.Mark("migrate");
            var state = await streamed.ConfigureAwait(false);
            steps.Mark("stream");
            // QEMU closes the stream only after setting the migration's outcome, and writes the stream's end only
            // after every device's state: a stream that parses whole is the capture, with no query-migrate round
            // trip in the pause (that query runs behind, awaited before this QEMU's next command that needs it).
            try { DeviceStateCheck.Check(state, _block, Description.MemoryBytes); }
            catch (MigrationStreamException e)
            {
                endAwaited = true; // here: QEMU's own failure names it
                await WaitForMigrationAsync(_qemu, step, _settings.StateTransferTimeout, cancellationToken).ConfigureAwait(false);
                throw _qemu.Failure(step, $"the device state QEMU sent is not whole: {e.Message}");
            }
            steps.Mark("checked");
            return state;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw _qemu.Failure(step, $"no device state within {_settings.StateTransferTimeout.TotalSeconds:0}s");
        }
        catch (IOException e)
        {
            throw _qemu.Failure(step, $"migration stream broke: {e.Message}");
        }
        finally
        {
            if (streamed is not null)
            {
                if (!streamed.IsCompleted) timeout.Cancel(); // the migrate command failed: nobody connects
                try { await streamed.ConfigureAwait(false); }
                catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException) { }
            }
            listener.Stop();
            // Once QEMU was asked to migrate, its migration ends (completed, failed or cancelled) before the next
            // command that needs it, whether this capture succeeded or not.
            if (migrating && !endAwaited) EndCaptureLater(step);
        }
    }

    private void EndCaptureLater(string step)
    {
        var ending = WaitForMigrationAsync(_qemu, step, _settings.StateTransferTimeout, CancellationToken.None);
        // Observed even if nothing awaits it (the guest handed over, QEMU quit under its polling).
        _ = ending.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        _captureEnding = ending;
    }

    /// <summary>The last capture's migration, completing in QEMU after its stream ended; null before any.</summary>
    private Task? _captureEnding;

    /// <summary>
    /// Before a command that needs QEMU's migration finished (cont, another migrate): the last capture's has. How it
    /// ended (failed, or the monitor gone) is the caller's next command's to find: it changes nothing the caller does.
    /// </summary>
    private async Task CaptureEndedAsync()
    {
        if (Interlocked.Exchange(ref _captureEnding, null) is not { } ending) return;
        // Bounded: a capture that failed leaves a migration QEMU fails by itself once the socket is gone; one that
        // hangs must not hold a guest's resume (cont goes to QEMU then, and says what it says).
        try { await ending.WaitAsync(TimeSpan.FromSeconds(Math.Min(5, _settings.CommandTimeout.TotalSeconds))).ConfigureAwait(false); }
        catch (Exception e) when (e is QemuStepException or QmpException or ObjectDisposedException or OperationCanceledException or TimeoutException) { }
    }

    private static async Task<byte[]> ReadToEndAsync(TcpListener listener, CancellationToken cancellationToken)
    {
        using var client = await listener.AcceptTcpClientAsync(cancellationToken).ConfigureAwait(false);
        using var buffer = new MemoryStream();
        await client.GetStream().CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        return buffer.ToArray();
    }

    private async Task SetIgnoreSharedAsync(string step, CancellationToken cancellationToken = default)
    {
        await _qemu.RunAsync(step, "migrate-set-capabilities", IgnoreShared(), cancellationToken: cancellationToken).ConfigureAwait(false);
        _ignoreSharedSet = true;
    }

    public static JsonObject IgnoreShared() => new()
    {
        ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = true }),
    };

    /// <summary>Polls query-migrate until the migration (outgoing or incoming) completed; its failure names the step.</summary>
    public static async Task WaitForMigrationAsync(QemuProcess qemu, string step, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var info = await qemu.RunAsync(step, "query-migrate", cancellationToken: cancellationToken).ConfigureAwait(false);
            string status = info?["status"]?.GetValue<string>() ?? "none";
            if (status == "completed") return;
            if (status is "failed" or "cancelled")
                throw qemu.Failure(step, $"migration {status}{(info?["error-desc"] is { } d ? $": {d}" : "")}");
            if (DateTime.UtcNow > deadline) throw qemu.Failure(step, $"migration still '{status}' after {timeout.TotalSeconds:0}s");
            await Task.Delay(5, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// This guest is done with here: one this node started is quit; an adopted one is let go, still running. Every
    /// call awaits the one ending (a second caller does not return while the first is still quitting QEMU).
    /// A stopping node detaches instead (<see cref="DetachAsync"/>).
    /// </summary>
    public ValueTask DisposeAsync() => new(End(quit: !_qemu.Adopted));

    /// <summary>The node stops, the guest does not: the monitor connection closes, QEMU, its files and its state entry stay.</summary>
    public ValueTask DetachAsync() => new(End(quit: false));

    /// <summary>The first ending decides; later calls await it.</summary>
    private Task End(bool quit)
    {
        lock (_endLock) return _ended ??= EndAsync(quit);
    }

    private async Task EndAsync(bool quit)
    {
        // A node letting go of a guest leaves no migration of it running: QEMU would stop the guest when it converged.
        if (!quit && _stream is { } stream)
            try { await stream.CancelAsync(_settings.StateTransferTimeout).ConfigureAwait(false); }
            catch (QemuStepException) { }
        Interlocked.Exchange(ref _writeLog, null)?.Dispose();
        if (quit) await _qemu.DisposeAsync().ConfigureAwait(false);
        else
        {
            await _qemu.DetachAsync().ConfigureAwait(false);
            _ram.DeleteOnDispose = false;
        }
        _ram.Dispose();
        // Quit here (moved away, or ended with a node that keeps no guests): nothing to re-adopt any more.
        if (quit && _stateFile is not null) await _stateFile.RemoveAsync(StateEntry.Key).ConfigureAwait(false);
    }
}
