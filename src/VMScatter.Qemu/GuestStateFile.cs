using System.Text.Json;
using System.Text.Json.Serialization;

namespace VMScatter.Qemu;

/// <summary>Where a guest in a node's state file stands on that node.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<GuestPlace>))]
public enum GuestPlace
{
    /// <summary>Runs here and may be migrated away (booted or adopted by a source node).</summary>
    Source,
    /// <summary>A target's QEMU waiting for an arriving guest: it never ran, so after a restart it is discarded.</summary>
    Arriving,
    /// <summary>Migrated here and running (a target's guest).</summary>
    Landed,
}

/// <summary>
/// One QEMU guest a node runs: enough to find it again after the node restarts (monitor socket, RAM file, process)
/// and to describe it as the node did (memory, vCPUs, machine arguments). <see cref="Foreign"/> guests were adopted
/// from an operator: their files are never deleted here.
/// </summary>
public sealed record GuestStateEntry(
    string Id,
    GuestPlace Place,
    string QmpSocket,
    string RamFile,
    long MemoryBytes,
    int VCpus,
    string Machine,
    int Pid,
    long PidStartTicks,
    string? RuntimeDirectory,
    string? SerialLog,
    bool Foreign)
{
    /// <summary>Source entries and target entries are apart: one node may hold both roles.</summary>
    [JsonIgnore] public string Key => KeyOf(Id, Place);

    public static string KeyOf(string id, GuestPlace place) => $"{(place == GuestPlace.Source ? "source" : "target")}/{id}";

    /// <summary>The QEMU process it names, if it is known (null for a foreign guest).</summary>
    [JsonIgnore] public GuestPid? Process => Pid > 0 ? new GuestPid(Pid, PidStartTicks) : null;
}

/// <summary>
/// A node's list of the QEMU guests it runs, one JSON file per node in the QEMU state directory, so that a node that
/// stopped or crashed re-adopts its guests when it comes back. Every change rewrites the whole (small) file through a
/// temporary file and a rename, so a crash leaves the old list or the new one, never half of one. Changes come from
/// the QEMU adapter's async steps (boot, landing, handover, quit), one at a time; none runs on an actor's thread.
/// The file is removed when the list is empty.
/// </summary>
public sealed class GuestStateFile
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };
    private readonly SemaphoreSlim _write = new(1, 1);
    private readonly Dictionary<string, GuestStateEntry> _entries;

    private GuestStateFile(string path, Dictionary<string, GuestStateEntry> entries)
    {
        Path = path;
        _entries = entries;
    }

    public string Path { get; }

    /// <summary>What the file listed when it was opened, plus the changes since.</summary>
    public IReadOnlyList<GuestStateEntry> Entries
    {
        get { lock (_entries) return _entries.Values.OrderBy(e => e.Key, StringComparer.Ordinal).ToArray(); }
    }

    /// <summary>Opens node <paramref name="nodeId"/>'s file in <paramref name="directory"/> (an empty list if there is none); throws <see cref="InvalidDataException"/> if it cannot be read.</summary>
    public static GuestStateFile Open(string directory, string nodeId)
    {
        string name = new(nodeId.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' ? c : '_').ToArray());
        string path = System.IO.Path.GetFullPath(System.IO.Path.Combine(directory, $"vmscatter-node-{name}.json"));
        var entries = new Dictionary<string, GuestStateEntry>(StringComparer.Ordinal);
        if (File.Exists(path))
        {
            GuestStateEntry[]? listed;
            try { listed = JsonSerializer.Deserialize<GuestStateEntry[]>(File.ReadAllText(path), Json); }
            catch (JsonException e) { throw new InvalidDataException($"state file {path} cannot be read ({e.Message}); move it away to start without re-adopting its guests"); }
            foreach (var e in listed ?? []) entries[e.Key] = e;
        }
        return new GuestStateFile(path, entries);
    }

    /// <summary>Adds or replaces a guest's entry and writes the file.</summary>
    public Task PutAsync(GuestStateEntry entry) => ChangeAsync(e => e[entry.Key] = entry);

    /// <summary>Removes the entry with <paramref name="key"/> (if any) and writes the file.</summary>
    public Task RemoveAsync(string key) => ChangeAsync(e => e.Remove(key));

    private async Task ChangeAsync(Action<Dictionary<string, GuestStateEntry>> change)
    {
        await _write.WaitAsync().ConfigureAwait(false);
        try
        {
            GuestStateEntry[] now;
            lock (_entries)
            {
                change(_entries);
                now = _entries.Values.OrderBy(e => e.Key, StringComparer.Ordinal).ToArray();
            }
            if (now.Length == 0)
            {
                File.Delete(Path);
                return;
            }
            string temp = $"{Path}.{Guid.NewGuid().ToString("N")[..8]}.tmp";
            try
            {
                await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 4096, FileOptions.Asynchronous))
                {
                    await JsonSerializer.SerializeAsync(file, now, Json).ConfigureAwait(false);
                    file.Flush(flushToDisk: true);
                }
                File.Move(temp, Path, overwrite: true);
            }
            catch
            {
                File.Delete(temp);
                throw;
            }
        }
        finally { _write.Release(); }
    }
}
