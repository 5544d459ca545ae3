using System.IO.MemoryMappedFiles;
using VMScatter.Domain;
using VMScatter.Domain.Pages;

namespace VMScatter.Qemu;

/// <summary>
/// A guest's RAM as a shared file on tmpfs (QEMU's memory-backend-file with share=on), mapped into this process:
/// the source reads the running guest's pages from it, a target writes arriving pages into it before QEMU starts.
/// </summary>
public sealed unsafe class QemuRamFile : IWritableGuestMemory, IDirectPageAccess, IDisposable
{
    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly bool _writable;
    private byte* _base;

    private QemuRamFile(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, long bytes, bool writable, bool deleteOnDispose)
    {
        Path = path;
        _file = file;
        _view = view;
        _writable = writable;
        DeleteOnDispose = deleteOnDispose;
        PageCount = Page.CountFor(bytes);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
    }

    public string Path { get; }
    public int PageCount { get; }

    /// <summary>Whether disposing removes the file (a target's file until a landed guest takes it over).</summary>
    public bool DeleteOnDispose { get; set; }

    /// <summary>Maps an existing RAM file (a running guest's) for reading.</summary>
    public static QemuRamFile OpenForReading(string path, long bytes)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"RAM file {path} does not exist");
        if (info.Length < bytes) throw new InvalidDataException($"RAM file {path} holds {info.Length} bytes, the guest has {bytes}");
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        return new QemuRamFile(path, file, file.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.Read), bytes, writable: false, deleteOnDispose: false);
    }

    /// <summary>Creates a zero-filled (sparse) RAM file for an arriving guest and maps it for writing.</summary>
    public static QemuRamFile Create(string path, long bytes)
    {
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite)) fs.SetLength(bytes);
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
        return new QemuRamFile(path, file, file.CreateViewAccessor(0, bytes, MemoryMappedFileAccess.ReadWrite), bytes, writable: true, deleteOnDispose: true);
    }

    public ReadOnlySpan<byte> PageSpan(int index) => Slice(index);

    public bool TryGetPage(int index, out ReadOnlySpan<byte> page) { page = Slice(index); return true; }

    public void ReadPage(int index, Span<byte> destination) => Slice(index).CopyTo(destination);

    public void WritePage(int index, ReadOnlySpan<byte> source)
    {
        if (!_writable) throw new InvalidOperationException($"RAM file {Path} is mapped read-only");
        if (source.Length != Page.Size) throw new ArgumentException("a page write must be exactly one page", nameof(source));
        source.CopyTo(Slice(index));
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
        if (DeleteOnDispose) File.Delete(Path);
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private Span<byte> Slice(int index) => Page.In(_base, PageCount, index, this);
}
