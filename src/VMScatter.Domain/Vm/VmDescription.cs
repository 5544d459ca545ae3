namespace VMScatter.Domain;

/// <summary>
/// What travels with a VM: enough for a target to host it. <paramref name="MachineArguments"/> is backend
/// specific (for QEMU, the machine options the target must start with); empty for synthetic guests.
/// </summary>
public sealed record VmDescription(VmId Id, long MemoryBytes, int VCpus, string Backend, string MachineArguments)
{
    public int PageCount => Pages.Page.CountFor(MemoryBytes);
}

public enum VmRunState { Running, Paused, Stopped }
