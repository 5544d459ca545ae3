namespace VMScatter.Domain.Synthetic;

/// <summary>Builds a fleet of synthetic guests from a seed: same spec and seed, same memory, byte for byte.</summary>
public static class SyntheticFleet
{
    public static IReadOnlyList<SyntheticVm> Create(SyntheticFleetSpec spec, bool runWorkload = true)
    {
        spec.Validate();
        // Applications are dealt out by a seeded shuffle, so which VMs share an application is not a pattern
        // that round-robin or index order would find by accident.
        var apps = new int[spec.VmCount];
        for (int i = 0; i < apps.Length; i++) apps[i] = i % spec.Applications;
        ulong state = (ulong)spec.Seed ^ 0x5851F42D4C957F2DUL;
        for (int i = apps.Length - 1; i > 0; i--)
        {
            int j = (int)(PageContent.Next(ref state) % (ulong)(i + 1));
            (apps[i], apps[j]) = (apps[j], apps[i]);
        }
        var vms = new List<SyntheticVm>(spec.VmCount);
        for (int i = 0; i < spec.VmCount; i++)
        {
            var description = new VmDescription(new VmId($"vm-{i:D3}"), spec.Model.MemoryBytes, 1, "synthetic", "");
            vms.Add(new SyntheticVm(description, spec.Model, i % spec.OsImages, apps[i], spec.Seed, runWorkload));
        }
        return vms;
    }
}

/// <summary>
/// Target-side backend for synthetic guests: memory from the host's pool when it has one (else a fresh mapping);
/// "resuming" marks the guest running.
/// </summary>
public sealed class SyntheticTargetBackend(GuestMemoryPool? pool = null) : ITargetBackend
{
    public string Name => "synthetic";

    public IWritableGuestMemory AllocateMemory(VmDescription vm) => pool?.TryRent(vm.PageCount) ?? new NativeGuestMemory(vm.PageCount);

    public Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
    {
        if (deviceState.Length == 0) throw new InvalidOperationException($"VM {vm.Id}: no device state received");
        return Task.FromResult<ILandedVm>(new LandedSyntheticVm(vm, memory));
    }

    /// <summary>A resumed synthetic guest: it owns its memory from now on, and frees it when it stops.</summary>
    private sealed class LandedSyntheticVm(VmDescription description, IWritableGuestMemory memory) : ILandedVm
    {
        public VmDescription Description { get; } = description;
        public VmRunState State { get; private set; } = VmRunState.Running;

        public ValueTask DisposeAsync()
        {
            State = VmRunState.Stopped;
            return memory.DisposeAsync();
        }
    }
}
