namespace VMScatter.Qemu.Migration;

/// <summary>A migration stream refused: what is wrong and at which byte (one line, for a log or a failed step).</summary>
public sealed class MigrationStreamException(string reason, long offset) : FormatException($"{reason} (at byte {offset})")
{
    public string Reason { get; } = reason;
    public long Offset { get; } = offset;
}
