using System.Text.Json;

namespace VMScatter.Qemu.Migration;

/// <summary>
/// How many bytes a device section holds, from the description QEMU writes after the stream's end (the JSON
/// scripts/analyze-migration.py reads): each field's size as written (an array of equal elements once, with its
/// length), then the subsections written, each with its marker, name and version. Field contents stay opaque.
/// </summary>
internal sealed record DeviceStateLayout(string Name, uint InstanceId, uint Version, long FieldBytes, IReadOnlyList<SubsectionLayout> Subsections)
{
    private const int MaxDepth = 16;
    private const long MaxArrayLength = 1 << 20;

    /// <summary>The description's devices in stream order; throws <see cref="MigrationStreamException"/> at <paramref name="offset"/> when it is not one.</summary>
    public static IReadOnlyList<DeviceStateLayout> ParseAll(ReadOnlySpan<byte> json, long offset, int maxDevices)
    {
        try
        {
            using var doc = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 64 });
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new MigrationStreamException("the device description is not a JSON object", offset);
            if (!root.TryGetProperty("page_size", out var pageSize) || !pageSize.TryGetInt32(out int p) || p != MigrationStreamFormat.PageSize)
                throw new MigrationStreamException($"the device description's page size is not {MigrationStreamFormat.PageSize}", offset);
            if (!root.TryGetProperty("devices", out var devices) || devices.ValueKind != JsonValueKind.Array)
                throw new MigrationStreamException("the device description lists no devices", offset);
            if (devices.GetArrayLength() > maxDevices) throw new MigrationStreamException($"the device description lists {devices.GetArrayLength()} devices, more than {maxDevices}", offset);
            var list = new List<DeviceStateLayout>();
            foreach (var d in devices.EnumerateArray())
            {
                string name = Text(d, "name", offset);
                uint instance = Unsigned(d, "instance_id", offset);
                uint version = d.TryGetProperty("version", out _) ? Unsigned(d, "version", offset) : 0;
                list.Add(new DeviceStateLayout(name, instance, version, Fields(d, offset, name), ReadSubsections(d, offset, name, 0)));
            }
            return list;
        }
        catch (JsonException e) { throw new MigrationStreamException($"the device description is not JSON: {e.Message.Split('.')[0]}", offset); }
        catch (InvalidOperationException e) { throw new MigrationStreamException($"the device description has a value of the wrong kind: {e.Message.Split('.')[0]}", offset); }
    }

    private static long Fields(JsonElement e, long offset, string where)
    {
        if (!e.TryGetProperty("fields", out var fields)) return 0;
        if (fields.ValueKind != JsonValueKind.Array) throw new MigrationStreamException($"{where}: its fields are not a list", offset);
        long total = 0;
        foreach (var f in fields.EnumerateArray())
        {
            if (!f.TryGetProperty("size", out var s) || !s.TryGetInt64(out long size) || size is < 0 or > int.MaxValue)
                throw new MigrationStreamException($"{where}: a field without a size of 0 to {int.MaxValue} bytes", offset);
            long count = 1;
            if (f.TryGetProperty("array_len", out var a) && (!a.TryGetInt64(out count) || count is < 1 or > MaxArrayLength))
                throw new MigrationStreamException($"{where}: an array length outside 1 to {MaxArrayLength}", offset);
            total += size * count;
            if (total > int.MaxValue) throw new MigrationStreamException($"{where}: more than {int.MaxValue} bytes of fields", offset);
        }
        return total;
    }

    private static IReadOnlyList<SubsectionLayout> ReadSubsections(JsonElement e, long offset, string where, int depth)
    {
        if (!e.TryGetProperty("subsections", out var subs)) return [];
        if (subs.ValueKind != JsonValueKind.Array) throw new MigrationStreamException($"{where}: its subsections are not a list", offset);
        if (depth >= MaxDepth) throw new MigrationStreamException($"{where}: subsections nested deeper than {MaxDepth}", offset);
        var list = new List<SubsectionLayout>();
        foreach (var s in subs.EnumerateArray())
        {
            string name = Text(s, "vmsd_name", offset);
            list.Add(new SubsectionLayout(name, Unsigned(s, "version", offset), Fields(s, offset, name), ReadSubsections(s, offset, name, depth + 1)));
        }
        return list;
    }

    private static string Text(JsonElement e, string property, long offset) =>
        e.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 and < 256 } s
            ? s : throw new MigrationStreamException($"a device description entry without a {property}", offset);

    private static uint Unsigned(JsonElement e, string property, long offset) =>
        e.TryGetProperty(property, out var v) && v.TryGetUInt32(out uint u) ? u : throw new MigrationStreamException($"a device description entry without a {property} of 0 to {uint.MaxValue}", offset);
}

/// <summary>A subsection as the description lists it: written as marker, name, version, fields, its own subsections.</summary>
internal sealed record SubsectionLayout(string Name, uint Version, long FieldBytes, IReadOnlyList<SubsectionLayout> Subsections);
