using Microsoft.Win32.SafeHandles;
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
    /// <summary>The file mapped, held open: its holes are asked of it, never of whatever its path names later.</summary>
    private readonly SafeFileHandle _handle;
    private readonly MemoryMappedViewAccessor _view;
    private readonly bool _writable;
    private byte* _base;

    private QemuRamFile(string path, SafeFileHandle handle, MemoryMappedFile file, MemoryMappedViewAccessor view, long bytes, bool writable, bool deleteOnDispose)
    {
        _handle = handle;
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

    /// <summary>Where the file is mapped in this process (its identity, device and inode, is read from this mapping).</summary>
    public nint MappedAt => (nint)_base;

    /// <summary>Whether disposing removes the file (a target's file until a landed guest takes it over).</summary>
    public bool DeleteOnDispose { get; set; }

    /// <summary>Maps an existing RAM file (a running guest's) for reading.</summary>
    public static QemuRamFile OpenForReading(string path, long bytes)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"RAM file {path} does not exist");
        if (info.Length < bytes) throw new InvalidDataException($"RAM file {path} holds {info.Length} bytes, the guest has {bytes}");
        return Map(path, bytes, writable: false);
    }

    /// <summary>Creates a zero-filled (sparse) RAM file for an arriving guest and maps it for writing.</summary>
    public static QemuRamFile Create(string path, long bytes)
    {
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite)) fs.SetLength(bytes);
        return Map(path, bytes, writable: true);
    }

    /// <summary>Maps the file from a handle the object keeps; a created (writable) one is removed on dispose.</summary>
    private static QemuRamFile Map(string path, long bytes, bool writable)
    {
        var access = writable ? MemoryMappedFileAccess.ReadWrite : MemoryMappedFileAccess.Read;
        var handle = File.OpenHandle(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        MemoryMappedFile? file = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(handle, null, 0, access, HandleInheritability.None, leaveOpen: true);
            return new QemuRamFile(path, handle, file, file.CreateViewAccessor(0, bytes, access), bytes, writable, deleteOnDispose: writable);
        }
        catch
        {
            file?.Dispose();
            handle.Dispose();
            throw;
        }
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
        _handle.Dispose();
        if (DeleteOnDispose) File.Delete(Path);
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private Span<byte> Slice(int index) => Page.In(_base, PageCount, index, this);

    /// <summary>
    /// The pages the file holds data for, ascending [First, End) ranges; the rest are holes (pages the guest never
    /// wrote), which read as zero. Read through the mapping, a hole is a page tmpfs allocates and zeroes, and a fault:
    /// a whole-memory pass that skips them costs what the guest uses, not its RAM size. On a file system without
    /// SEEK_DATA, every page.
    /// </summary>
    public IReadOnlyList<(int First, int End)> DataRanges()
    {
        var ranges = new List<(int, int)>();
        lock (_seekLock)
        {
            bool added = false;
            _handle.DangerousAddRef(ref added);
            try { Scan((int)_handle.DangerousGetHandle(), (long)PageCount * Page.Size, ranges); }
            finally
            {
                if (added) _handle.DangerousRelease();
            }
        }
        return ranges;
    }

    private void Scan(int fd, long size, List<(int, int)> ranges)
    {
        for (long at = 0; at < size;)
        {
            long data = Lseek(fd, at, SeekData);
            if (data < 0)
            {
                // ENXIO: no data past here. Anything else (no SEEK_DATA): every page from here is read.
                if (System.Runtime.InteropServices.Marshal.GetLastPInvokeError() != Enxio) ranges.Add(((int)(at / Page.Size), PageCount));
                return;
            }
            if (data >= size) return;
            long hole = Lseek(fd, data, SeekHole);
            long end = hole < 0 || hole > size ? size : hole;
            // A hole punched between the two calls can make the range empty.
            if (end > data) ranges.Add(((int)(data / Page.Size), (int)((end + Page.Size - 1) / Page.Size)));
            at = Math.Max(end, data + 1);
        }
    }

    private readonly object _seekLock = new();
    private const int SeekData = 3, SeekHole = 4, Enxio = 6;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static extern long Lseek(int fd, long offset, int whence);
}
