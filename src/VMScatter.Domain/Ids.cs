using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace VMScatter.Domain;

/// <summary>
/// A VM's name, unique on its source host. It names files on targets (RAM files), so it is restricted to letters,
/// digits, '.', '_' and '-', starting with a letter or digit, at most <see cref="Ids.MaxLength"/> characters.
/// </summary>
[JsonConverter(typeof(IdJsonConverter<VmId>))]
public readonly record struct VmId : IComparable<VmId>, IId<VmId>
{
    public VmId(string value) => Value = Ids.Checked(value, "VM id");

    private VmId(string value, bool _) => Value = value;

    public string Value { get; }

    public static VmId Create(string value) => new(value);

    public static VmId Recorded(string value) => new(value, false);

    public int CompareTo(VmId other) => string.CompareOrdinal(Value, other.Value);

    public override string ToString() => Value ?? "";
}

/// <summary>A host's name in the cluster (a source or a target), same character rules as <see cref="VmId"/>.</summary>
[JsonConverter(typeof(IdJsonConverter<HostId>))]
public readonly record struct HostId : IComparable<HostId>, IId<HostId>
{
    public HostId(string value) => Value = Ids.Checked(value, "host id");

    private HostId(string value, bool _) => Value = value;

    public string Value { get; }

    public static HostId Create(string value) => new(value);

    public static HostId Recorded(string value) => new(value, false);

    public int CompareTo(HostId other) => string.CompareOrdinal(Value, other.Value);

    public override string ToString() => Value ?? "";
}

/// <summary>One migration, chosen by whoever starts it.</summary>
[JsonConverter(typeof(IdJsonConverter<MigrationId>))]
public readonly record struct MigrationId : IComparable<MigrationId>, IId<MigrationId>
{
    public MigrationId(Guid value) => Value = value;

    public Guid Value { get; }

    public static MigrationId New() => new(Guid.NewGuid());

    public static MigrationId Create(string value) =>
        Guid.TryParse(value, out var g) ? new(g) : throw new FormatException($"migration id '{value}' is not a GUID");

    public static MigrationId Recorded(string value) => Create(value);

    public static bool TryParse(string? value, out MigrationId id)
    {
        id = Guid.TryParse(value, out var g) ? new(g) : default;
        return id.Value != Guid.Empty;
    }

    public int CompareTo(MigrationId other) => Value.CompareTo(other.Value);

    public override string ToString() => Value.ToString();
}

/// <summary>An id that is written as its text (JSON journals, reports, the console).</summary>
public interface IId<TSelf> where TSelf : struct
{
    /// <summary>An id given now (a command line, a request): checked.</summary>
    static abstract TSelf Create(string value);

    /// <summary>
    /// An id read back from this system's own journal: taken as written, so a journal from before ids were checked
    /// still replays. It names no file there; requests that use an id check it where they arrive.
    /// </summary>
    static abstract TSelf Recorded(string value);
}

public static partial class Ids
{
    public const int MaxLength = 64;

    /// <summary>Whether <paramref name="value"/> may be a VM or host id.</summary>
    public static bool IsValid(string? value) => value is not null && Pattern().IsMatch(value);

    internal static string Checked(string value, string what) =>
        IsValid(value) ? value
            : throw new FormatException($"{what} '{value}' is not valid: 1-{MaxLength} letters, digits, '.', '_' or '-', starting with a letter or digit");

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex Pattern();
}

/// <summary>Writes an id as a plain JSON string (and as a property name, for dictionaries keyed by it), as journals written before ids were typed have it.</summary>
public sealed class IdJsonConverter<T> : JsonConverter<T> where T : struct, IId<T>
{
    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => T.Recorded(reader.GetString() ?? "");

    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString() ?? "");

    public override T ReadAsPropertyName(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => T.Recorded(reader.GetString() ?? "");

    public override void WriteAsPropertyName(Utf8JsonWriter writer, T value, JsonSerializerOptions options) => writer.WritePropertyName(value.ToString() ?? "");
}
