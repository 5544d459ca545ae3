using System.Runtime.InteropServices;

namespace VMScatter.Qemu.WriteProtect;

/// <summary>The Linux calls the write-protect log needs (x86-64): ptrace, waitpid, pidfds, userfaultfd and the pagemap scan.</summary>
internal static unsafe partial class Native
{
    public const long PtraceGetSigInfo = 0x4202, PtraceGetRegs = 12, PtraceSetRegs = 13, PtraceSyscall = 24, PtraceDetach = 17, PtraceSeize = 0x4206, PtraceInterrupt = 0x4207, PtraceGetSyscallInfo = 0x420e;
    public const int PtraceOTraceSysGood = 1;
    public const byte SyscallInfoNone = 0, SyscallInfoEntry = 1, SyscallInfoExit = 2;
    public const int WaitAll = 0x40000000, WaitNoHang = 1;
    public const int Eintr = 4, Echild = 10;
    public const int SigTrap = 5;
    public const int PtraceEventStop = 128;

    public const long SysClose = 3, SysUserfaultfd = 323, SysPidfdOpen = 434, SysPidfdGetfd = 438;

    public const long UffdApi = 0xAA;
    public const ulong UffdFeatureWpHugetlbfsShmem = 1 << 12, UffdFeatureWpUnpopulated = 1 << 13, UffdFeatureWpAsync = 1 << 15;
    public const ulong UffdFeatures = UffdFeatureWpHugetlbfsShmem | UffdFeatureWpUnpopulated | UffdFeatureWpAsync;
    public const ulong UffdioApi = 0xC018AA3F, UffdioRegister = 0xC020AA00;
    public const ulong UffdioRegisterModeWp = 1 << 1;
    public const int OCloexec = 0x80000, ONonblock = 0x800;

    /// <summary>_IOWR('f', 16, struct pm_scan_arg): Linux 6.7 and later.</summary>
    public const ulong PagemapScan = 0xC0606610;
    public const ulong PageIsWritten = 1 << 1;
    public const ulong PmScanWpMatching = 1 << 0, PmScanCheckWpAsync = 1 << 1;

    /// <summary>struct user_regs_struct, x86-64.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Regs
    {
        public ulong R15, R14, R13, R12, Rbp, Rbx, R11, R10, R9, R8, Rax, Rcx, Rdx, Rsi, Rdi, OrigRax, Rip, Cs, Eflags, Rsp, Ss, FsBase, GsBase, Ds, Es, Fs, Gs;
    }

    /// <summary>struct ptrace_syscall_info, up to the exit's rval (which shares its place with the entry's nr).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 88)]
    public struct SyscallInfo
    {
        [FieldOffset(0)] public byte Op;
        [FieldOffset(24)] public long RvalOrNr;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct UffdioApiArg { public ulong Api, Features, Ioctls; }

    [StructLayout(LayoutKind.Sequential)]
    public struct UffdioRegisterArg { public ulong Start, Len, Mode, Ioctls; }

    [StructLayout(LayoutKind.Sequential)]
    public struct PageRegion { public ulong Start, End, Categories; }

    [StructLayout(LayoutKind.Sequential)]
    public struct PmScanArg
    {
        public ulong Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages, CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask;
    }

    [LibraryImport("libc", EntryPoint = "ptrace", SetLastError = true)]
    public static partial long Ptrace(long request, int pid, nint addr, nint data);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, out int status, int options);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    public static partial long Syscall(long number, long a1, long a2, long a3);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, ulong request, void* arg);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static string Error(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    public static bool Stopped(int status) => (status & 0xff) == 0x7f;
}
