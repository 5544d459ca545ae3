namespace VMScatter.Qemu.Migration;

/// <summary>
/// What a target demands of a device state a peer sent, before QEMU loads it (QEMU trusts its migration stream):
/// every byte accounted for in QEMU 7.2's format (<see cref="MigrationStream"/>), captured with x-ignore-shared,
/// naming the guest's RAM block at the guest's size, and carrying no record of that block: guest RAM reaches a
/// target only through the data plane, whose pages the handover digest verifies.
/// </summary>
public static class DeviceStateCheck
{
    public static MigrationStreamSummary Check(ReadOnlySpan<byte> state, string memoryBackendId, long memoryBytes)
    {
        var summary = MigrationStream.Parse(state);
        if (!summary.IgnoresSharedRam) throw new MigrationStreamException("it was not captured with x-ignore-shared", state.Length);
        if (summary.Block(memoryBackendId) is not { } ram || ram.UsedLength != (ulong)memoryBytes)
            throw new MigrationStreamException($"it has no RAM block '{memoryBackendId}' of {memoryBytes} bytes", state.Length);
        long records = summary.RecordsOf(memoryBackendId);
        if (records > 0)
            throw new MigrationStreamException($"it carries {records} pages of the guest's RAM, which only the data plane may deliver", state.Length);
        return summary;
    }
}
