using System.Runtime.InteropServices;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain;

/// <summary>
/// Guest memory outside the managed heap, as a hypervisor's guest RAM is: an anonymous mapping (reads as zero
/// until written) advised to use transparent huge pages, or a range of a target host's <see cref="GuestMemoryPool"/>.
/// Off the GC heap, hundreds of MiB per guest do not lengthen collections (which delayed cluster heartbeats by
/// seconds, measured); with 2 MiB pages, filling 2 GiB takes 1,024 page faults instead of 524,288.
/// </summary>
public sealed unsafe class NativeGuestMemory : IWritableGuestMemory, IDirectPageAccess, IDisposable
{
    private byte* _base;
    private readonly nuint _length;
    private readonly bool _mapped;
    private readonly GuestMemoryPool? _pool;

    public NativeGuestMemory(int pageCount)
    {
        if (pageCount <= 0) throw new ArgumentOutOfRangeException(nameof(pageCount));
        PageCount = pageCount;
        _length = (nuint)pageCount * Page.Size;
        if (OperatingSystem.IsLinux())
        {
            _base = LinuxMemory.MapAnonymous(_length, "guest memory");
            _mapped = true;
        }
        else _base = (byte*)NativeMemory.AllocZeroed(_length);
    }

    /// <summary>A range of a pool, given back (zeroed) when disposed.</summary>
    internal NativeGuestMemory(GuestMemoryPool pool, byte* start, int pageCount)
    {
        _pool = pool;
        _base = start;
        PageCount = pageCount;
        _length = (nuint)pageCount * Page.Size;
    }

    public int PageCount { get; }

    /// <summary>Whether the memory came from a target host's pre-populated pool.</summary>
    public bool Pooled => _pool is not null;

    public void ReadPage(int index, Span<byte> destination) => Slice(index).CopyTo(destination);

    public bool TryGetPage(int index, out ReadOnlySpan<byte> page) { page = Slice(index); return true; }

    public void WritePage(int index, ReadOnlySpan<byte> source)
    {
        if (source.Length != Page.Size) throw new ArgumentException("a page write must be exactly one page", nameof(source));
        source.CopyTo(Slice(index));
    }

    public void Dispose()
    {
        var p = _base;
        _base = null;
        if (p == null) return;
        if (_pool is not null) _pool.Return(p, _length);
        else if (_mapped) LinuxMemory.Unmap(p, _length);
        else NativeMemory.Free(p);
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private Span<byte> Slice(int index) => Page.In(_base, PageCount, index, this);
}

/// <summary>The few Linux memory calls guest memory needs.</summary>
internal static unsafe class LinuxMemory
{
    private const int ProtRead = 1, ProtWrite = 2, MapPrivate = 2, MapAnon = 0x20;
    public const int MadvHugePage = 14, MadvPopulateWrite = 23;

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static extern int Madvise(void* addr, nuint length, int advice);

    [DllImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static extern int Munmap(void* addr, nuint length);

    /// <summary>A private anonymous mapping (zero until written), advised to use transparent huge pages.</summary>
    public static byte* MapAnonymous(nuint length, string what)
    {
        void* p = Mmap(null, length, ProtRead | ProtWrite, MapPrivate | MapAnon, -1, 0);
        if (p == (void*)-1) throw new OutOfMemoryException($"cannot map {length} bytes of {what} (errno {Marshal.GetLastPInvokeError()})");
        _ = Madvise(p, length, MadvHugePage); // advisory: without THP it still works, with 4 KiB pages
        return (byte*)p;
    }

    /// <summary>0, or the errno of a refused advice.</summary>
    public static int Advise(byte* start, nuint length, int advice) => Madvise(start, length, advice) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public static void Unmap(byte* start, nuint length) => _ = Munmap(start, length);
}
