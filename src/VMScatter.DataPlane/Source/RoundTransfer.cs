using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Pages;

namespace VMScatter.DataPlane.Source;

/// <summary>Distinct contents that every target in <see cref="TargetMask"/> needs and none holds yet.</summary>
public sealed record GroupTransfer(ulong TargetMask, IReadOnlyList<long> ContentIds);

public sealed record DeviceStateTransfer(int VmIndex, int TargetIndex, byte[] State);

/// <summary>One dirty round's worth of sends, in the order the groups should go out.</summary>
public sealed record RoundTransfer(
    int Round,
    bool Final,
    IReadOnlyList<GroupTransfer> Groups,
    IReadOnlyList<IReadOnlyList<PageMap>> MapsByTarget,
    IReadOnlyList<DeviceStateTransfer> DeviceStates);

/// <summary>Where the sender gets a content's bytes.</summary>
public interface IContentReader
{
    /// <summary>Copies content <paramref name="contentId"/> into <paramref name="page"/> and returns the hash of exactly those bytes.</summary>
    ContentHash Read(long contentId, Span<byte> page);
}
