namespace VMScatter.Domain;

/// <summary>
/// A running guest on the source host, as the migration sees it. Backends (synthetic, QEMU) implement it.
/// The contract that makes live migration correct: every write made after <see cref="CollectDirtyPages"/>
/// returns is reported by a later call, so a page read after collecting is resent if it changes again.
/// Disposed when its host is done with it (released after its handover, or the node stops): asynchronously, since
/// ending a guest may mean stopping a process, which is awaited, never waited for on an actor's thread.
/// </summary>
public interface IMigratableVm : IGuestMemory, IAsyncDisposable
{
    VmDescription Description { get; }

    VmRunState State { get; }

    /// <summary>Begins tracking writes; pages written from now on show up in <see cref="CollectDirtyPages"/>.</summary>
    void StartDirtyLogging();

    /// <summary>Returns the indexes of pages written since the previous call (ascending) and clears the log.</summary>
    int[] CollectDirtyPages();

    /// <summary>Stops the guest's vCPUs; memory no longer changes until <see cref="ResumeAsync"/>.</summary>
    Task PauseAsync(CancellationToken cancellationToken = default);

    /// <summary>Lets the paused guest run again on this host (the migration of it failed or was aborted).</summary>
    Task ResumeAsync(CancellationToken cancellationToken = default);

    /// <summary>Ends the guest on this host; called only after its target has verified and resumed it.</summary>
    Task StopAsync(CancellationToken cancellationToken = default);

    /// <summary>The guest's device state (CPU registers, devices), captured while paused; opaque to VMScatter.</summary>
    Task<byte[]> CaptureDeviceStateAsync(CancellationToken cancellationToken = default);
}

/// <summary>
/// A guest whose dirty log records every write (as write-protection or a hypervisor's dirty bitmap does), so a round
/// may read its pages in place: a page rewritten while it is read is in the next round's log. A log that compares
/// snapshots (QEMU's here) is not one: it must see the copy that is sent, or a page changed and changed back is missed.
/// Such a log can also be looked at without collecting it (as a hypervisor's dirty bitmap), which lets a round skip a
/// page rewritten before its turn: it is in the next round anyway (Xen's pre-copy does the same).
/// A write is logged before its first byte lands (as a write-protection fault is taken before the write completes),
/// and a collection never falls inside a write, so a reader that copies a page and then finds it unwritten since a
/// collection has copied exactly the bytes the page held then: the source reads contents from the guest instead of
/// keeping copies.
/// </summary>
public interface IWriteLoggedGuest
{
    /// <summary>Whether <paramref name="page"/> was written since the log was last collected; does not collect it.</summary>
    bool IsDirty(int page);

    /// <summary>How many times the log has been collected since logging started (0 before the first collection).</summary>
    int LogGeneration { get; }

    /// <summary>
    /// Whether <paramref name="page"/> has not been written since collection <paramref name="generation"/> returned:
    /// no later collection took it and it is not dirty now. Bytes read from the page before this answers true are the
    /// bytes it held at that collection. False while the guest is not logging (nothing can be proven then).
    /// </summary>
    bool UnwrittenSince(int page, int generation);
}

/// <summary>
/// A guest whose dirty collection hashes every page with the handover digest's page hash (QEMU's re-hashing log). After
/// a collection that began once the guest was paused, those hashes are its paused memory's: the handover digest is
/// built from them, and the pause needs one pass over guest memory, not two.
/// </summary>
public interface IPausedPageHashes
{
    /// <summary>Every page's content hash as of the pause, or null if no collection ran since the guest was paused.</summary>
    Pages.ContentHash[]? PausedPageHashes { get; }
}

/// <summary>
/// A guest whose dirty collection, and the log's start, hash every page they read with the dedup's content hash (QEMU's
/// re-hashing log). A round's pages were hashed by the collection that reported them, so the round routes them by those
/// hashes instead of reading the memory again. Routing only: the shard hashes the copy it reads, and a page changed since
/// is left out of the round as raced; that read marks it re-read, so the next collection reports it.
/// </summary>
public interface ICollectedPageHashes
{
    /// <summary>The hash the last collection (or the log's start) took of <paramref name="page"/>; false while not logging.</summary>
    bool TryGetCollectedHash(int page, out Pages.ContentHash hash);
}

/// <summary>How a guest's dirty pages were found in this migration, for the report (one line, e.g. "re-hash: 4 passes").</summary>
public interface IDirtyTrackingAccount
{
    /// <summary>Since dirty logging last started.</summary>
    string DirtyTrackingUsed { get; }
}

/// <summary>
/// A guest whose hypervisor migrates it while its pages are collected and may stop it by itself (QEMU's pre-copy,
/// read as its dirty log, converging). The pause the guest sees began when it stopped, which may be before it was asked
/// to pause; and a migration that gives up must end the hypervisor's too, or it would still stop the guest.
/// </summary>
public interface ISelfPausingGuest
{
    /// <summary>Its hypervisor migrated it and no resume ran since (it may run, be stopped, or be about to stop): a resume must reach it.</summary>
    bool Streaming { get; }

    /// <summary>When the hypervisor stopped it by itself for the pause now under way, if it did.</summary>
    long? StoppedItselfAtUnixMs { get; }
}

public static class MigratableVms
{
    /// <summary>A migration that lets the guest go on here must resume it: paused, or migrated by its hypervisor (which would stop it later).</summary>
    public static bool NeedsResume(this IMigratableVm vm) => vm.State == VmRunState.Paused || vm is ISelfPausingGuest { Streaming: true };

    /// <summary>The report's line on how the guest's dirty pages were found (null: the backend does not say).</summary>
    public static string? DirtyTracking(this IMigratableVm vm) => (vm as IDirtyTrackingAccount)?.DirtyTrackingUsed;
}
