using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Pages;

namespace VMScatter.DataPlane.Source;

/// <summary>Distinct contents that every target in <see cref="TargetMask"/> needs and none holds yet.</summary>
public sealed record GroupTransfer(ulong TargetMask, IReadOnlyList<long> ContentIds);

public sealed record DeviceStateTransfer(int VmIndex, int TargetIndex, byte[] State);

/// <summary>
/// One dirty round's worth of sends, in the order the groups should go out. <see cref="Final"/>: a stop-and-copy round
/// (its contents are for paused guests). Every target in <see cref="ActiveTargets"/> gets the round's end (one with
/// nothing to receive applies it at once); for those in <see cref="FinalTargets"/> it is their last round.
/// </summary>
public sealed record RoundTransfer(
    int Round,
    bool Final,
    IReadOnlyList<GroupTransfer> Groups,
    IReadOnlyList<IReadOnlyList<PageMap>> MapsByTarget,
    IReadOnlyList<DeviceStateTransfer> DeviceStates,
    ulong ActiveTargets = ulong.MaxValue,
    ulong FinalTargets = ulong.MaxValue);

/// <summary>Where the sender gets a content's bytes.</summary>
public interface IContentReader
{
    /// <summary>
    /// Copies content <paramref name="contentId"/>, going to <paramref name="targetMask"/>, into <paramref name="page"/>
    /// and gives the hash of exactly those bytes. False: the source no longer has them, because every page of the
    /// round that needed them has been rewritten (the next round carries those pages); the content is withdrawn from
    /// the round and those hosts are no longer counted as holding it. Never false once the guests are paused.
    /// </summary>
    bool TryRead(long contentId, ulong targetMask, Span<byte> page, out ContentHash hash);

    /// <summary>
    /// Asked just before a content of a pre-copy round goes out to <paramref name="targetMask"/>: true takes it out of
    /// the round, because every page it was going for has been rewritten since it was hashed (they are in the dirty
    /// log, so the next round carries them), and the reader no longer counts those hosts as holding it.
    /// </summary>
    bool TryWithdraw(long contentId, ulong targetMask) => false;
}
