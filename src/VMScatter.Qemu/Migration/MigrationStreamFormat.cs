namespace VMScatter.Qemu.Migration;

/// <summary>
/// QEMU 7.2's migration stream, as migration/savevm.c and migration/ram.c write it (checked against streams this
/// QEMU wrote): a header, sections, an end marker, then a JSON description of every device section.
/// </summary>
public static class MigrationStreamFormat
{
    /// <summary>The only QEMU release whose stream this parser reads (major.minor).</summary>
    public const string QemuRelease = "7.2";

    public const uint Magic = 0x5145564d; // "QEVM"
    public const uint StreamVersion = 3;

    public const byte EndOfStream = 0x00;
    public const byte SectionStart = 0x01;
    public const byte SectionPart = 0x02;
    public const byte SectionEnd = 0x03;
    public const byte SectionFull = 0x04;
    public const byte Subsection = 0x05;
    public const byte VmDescription = 0x06;
    public const byte Configuration = 0x07;
    public const byte Command = 0x08;
    public const byte SectionFooter = 0x7e;

    /// <summary>RAM record flags: the low bits of a record's big-endian offset word.</summary>
    [Flags]
    public enum RamFlags : ulong
    {
        Zero = 0x02,
        MemSize = 0x04,
        Page = 0x08,
        EndOfSection = 0x10,
        Continue = 0x20,
        Xbzrle = 0x40,
        Hook = 0x80,
        CompressPage = 0x100,
    }

    /// <summary>The flags a record may carry in the low 12 bits (a 4 KiB target page): everything else is an address.</summary>
    public const ulong FlagMask = 0xfff;

    public const int PageSize = 4096;

    /// <summary>True when <paramref name="version"/> (QMP's "major.minor.micro") is a release this parser reads.</summary>
    public static bool Reads(string version) => version.StartsWith(QemuRelease + ".", StringComparison.Ordinal);
}
