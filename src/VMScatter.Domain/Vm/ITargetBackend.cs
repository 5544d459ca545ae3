namespace VMScatter.Domain;

/// <summary>
/// Guest memory a target host fills while a VM arrives. Disposed asynchronously: freeing it may mean stopping a
/// process (a QEMU waiting for the guest), which is awaited, never waited for on the thread that frees it.
/// </summary>
public interface IWritableGuestMemory : IGuestMemory, IAsyncDisposable
{
    void WritePage(int index, ReadOnlySpan<byte> source);
}

/// <summary>A VM that has been resumed on its target host.</summary>
public interface ILandedVm : IAsyncDisposable
{
    VmDescription Description { get; }
    VmRunState State { get; }

    /// <summary>
    /// When the guest began executing here (wall clock, Unix ms), for a backend that has more to do after that (QEMU:
    /// `cont` returned, then its status is checked and recorded); null: when the resume returned.
    /// </summary>
    long? RunningSinceUnixMs => null;
}

/// <summary>How a target host materialises arriving VMs (synthetic memory, or a QEMU process with a RAM file).</summary>
public interface ITargetBackend
{
    string Name { get; }

    /// <summary>
    /// Whether a guest started here lives on when the host's process dies (a QEMU process does; a synthetic guest in
    /// the node's memory does not). A start granted to a host whose guests end with it, and not confirmed before the
    /// host was gone, left no running copy: the scheduler may void that grant.
    /// </summary>
    bool GuestsOutliveHost => false;

    IWritableGuestMemory AllocateMemory(VmDescription vm);

    /// <summary>Guests this backend already runs when its host starts (re-adopted after a restart): the host counts them as running.</summary>
    IEnumerable<ILandedVm> Running => [];

    /// <summary>
    /// The VM's final round is in here (its device state whole) and no start is granted yet: work its start would
    /// otherwise do inside the guest's pause may begin (checks, loading the device state into a paused hypervisor), off
    /// the caller's thread. Never runs the guest; <see cref="ResumeAsync"/> uses what it did only for the same device
    /// state, and fails the start if it cannot. Default: nothing.
    /// </summary>
    void Arrived(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState) { }

    /// <summary>Starts the VM on this host from its received memory and device state.</summary>
    Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken);
}
