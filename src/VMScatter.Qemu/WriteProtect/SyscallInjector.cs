using System.Globalization;
using Microsoft.Win32.SafeHandles;

namespace VMScatter.Qemu.WriteProtect;

/// <summary>
/// Runs system calls in another process, as a debugger's "call" does: ptrace seizes one of its threads, stops it,
/// points it at a syscall instruction with the call's registers, single-steps it, reads the result, and restores
/// and releases it. Only that thread stops, for the few calls' time; the others (a guest's vCPUs) run on.
/// ptrace binds a tracee to the tracer's thread, so everything happens in <see cref="Run{T}"/>, on the calling
/// thread, without awaits. A tracer that dies releases its tracee (the kernel detaches it, and it runs on).
/// </summary>
internal sealed unsafe class SyscallInjector
{
    private readonly int _tid;
    private readonly Native.Regs _saved;
    private readonly ulong _syscallAt;
    private readonly SafeFileHandle _memory;
    /// <summary>A signal the thread stopped with instead of our step: handed back to it when it is released.</summary>
    private int _pendingSignal;

    private SyscallInjector(int tid, Native.Regs saved, ulong syscallAt, SafeFileHandle memory)
    {
        _tid = tid;
        _saved = saved;
        _syscallAt = syscallAt;
        _memory = memory;
    }

    /// <summary>Stops thread <paramref name="tid"/> of process <paramref name="pid"/>, runs <paramref name="body"/> with it, and always restores and releases it.</summary>
    public static T Run<T>(int pid, int tid, Func<SyscallInjector, T> body)
    {
        if (Native.Ptrace(Native.PtraceSeize, tid, 0, 0) < 0) throw Failure("ptrace seize", Native.Errno);
        SafeFileHandle? memory = null;
        SyscallInjector? injector = null;
        int pendingAtStop = 0;
        try
        {
            if (Native.Ptrace(Native.PtraceInterrupt, tid, 0, 0) < 0) throw Failure("ptrace interrupt", Native.Errno);
            // The interrupt's stop; a signal arriving first stops the thread for it, and is handed back at the release.
            WaitStop(tid);
            if (StopSignal(tid) is var (signal, code) && !(signal == Native.SigTrap && code == (Native.PtraceEventStop << 8 | Native.SigTrap))) pendingAtStop = signal;
            Native.Regs regs;
            if (Native.Ptrace(Native.PtraceGetRegs, tid, 0, (nint)(&regs)) < 0) throw Failure("ptrace getregs", Native.Errno);
            memory = File.OpenHandle($"/proc/{pid}/mem", FileMode.Open, FileAccess.ReadWrite);
            ulong at = FindSyscallInstruction(pid, memory, regs.Rip);
            injector = new SyscallInjector(tid, regs, at, memory) { _pendingSignal = pendingAtStop };
            return body(injector);
        }
        finally
        {
            if (injector is not null)
            {
                var saved = injector._saved;
                Native.Ptrace(Native.PtraceSetRegs, tid, 0, (nint)(&saved));
                pendingAtStop = injector._pendingSignal;
            }
            // Detaching needs the thread stopped: it is, unless it died (then there is nothing to release).
            Native.Ptrace(Native.PtraceDetach, tid, 0, pendingAtStop);
            memory?.Dispose();
        }
    }

    /// <summary>One system call in the stopped thread: the raw result (a negative errno on failure).</summary>
    public long Call(long number, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0)
    {
        var regs = _saved;
        regs.Rax = (ulong)number;
        (regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9) = ((ulong)a0, (ulong)a1, (ulong)a2, (ulong)a3, (ulong)a4, (ulong)a5);
        regs.Rip = _syscallAt;
        // Not in a system call: the kernel must not restart the one the thread was stopped in on these registers.
        regs.OrigRax = ulong.MaxValue;
        for (int attempt = 0; attempt < 4; attempt++)
        {
            if (Native.Ptrace(Native.PtraceSetRegs, _tid, 0, (nint)(&regs)) < 0) throw Failure("ptrace setregs", Native.Errno);
            if (Native.Ptrace(Native.PtraceSingleStep, _tid, 0, 0) < 0) throw Failure("ptrace singlestep", Native.Errno);
            WaitStop(_tid);
            Native.Regs after;
            if (Native.Ptrace(Native.PtraceGetRegs, _tid, 0, (nint)(&after)) < 0) throw Failure("ptrace getregs", Native.Errno);
            if (after.Rip == _syscallAt + 2) return (long)after.Rax;
            // A signal stopped the thread before the instruction ran: keep it for the release, and step again.
            if (after.Rip != _syscallAt) throw new WriteProtectUnavailableException($"the injected system call left the thread at 0x{after.Rip:x}, not after 0x{_syscallAt:x}");
            if (StopSignal(_tid).Signal is var signal and not Native.SigTrap) _pendingSignal = signal;
        }
        throw new WriteProtectUnavailableException("the injected system call was interrupted four times");
    }

    public void Write(ulong address, ReadOnlySpan<byte> bytes) => RandomAccess.Write(_memory, bytes, checked((long)address));

    public void Read(ulong address, Span<byte> bytes)
    {
        if (RandomAccess.Read(_memory, bytes, checked((long)address)) != bytes.Length) throw new WriteProtectUnavailableException($"could not read the process's memory at 0x{address:x}");
    }

    /// <summary>
    /// Until the thread is in a ptrace stop. Its wait notification alone is not enough: where QEMU is this process's
    /// child (a guest started by an operator's tool in this process, as the tests do), .NET's child reaper may take
    /// the notification first, so the thread's state ('t', tracing stop) is read too. Then any notification still
    /// queued is taken, so that it is not mistaken for the next stop's. Bounded by nothing: a stopped tracee must be
    /// released, and only a stopped one can be.
    /// </summary>
    private static void WaitStop(int tid)
    {
        for (int round = 0; ; round++)
        {
            int r = Native.WaitPid(tid, out int status, Native.WaitAll | Native.WaitNoHang);
            if (r == tid && !Native.Stopped(status)) throw new WriteProtectUnavailableException("the process exited while stopped for the injection");
            // The state is read only now and then (a file read costs more than the wait): a stop is usually seen by waitpid.
            if (r == tid || (round % 16 == 15 && TracingStop(tid)))
            {
                while (Native.WaitPid(tid, out _, Native.WaitAll | Native.WaitNoHang) == tid) { }
                return;
            }
            if (r < 0 && Native.Errno is not (Native.Eintr or Native.Echild)) throw Failure("waitpid", Native.Errno);
            if (round % 16 == 15 && !File.Exists($"/proc/{tid}/stat")) throw new WriteProtectUnavailableException("the process exited while stopped for the injection");
            // The tracee needs a core to reach its stop: give this one away, then sleep once the wait is long.
            if (round < 64) Thread.Yield();
            else Thread.Sleep(1);
        }
    }

    /// <summary>The thread's state in /proc is 't': stopped by its tracer.</summary>
    private static bool TracingStop(int tid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{tid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] == 't';
        }
        catch (IOException) { return false; }
    }

    /// <summary>The signal (and its si_code) the thread is stopped for: SIGTRAP for an interrupt or a step, else a signal to hand back.</summary>
    private static (int Signal, int Code) StopSignal(int tid)
    {
        var info = stackalloc int[32];
        return Native.Ptrace(Native.PtraceGetSigInfo, tid, 0, (nint)info) < 0 ? (Native.SigTrap, 0) : (info[0], info[2]);
    }

    /// <summary>
    /// A syscall instruction (0f 05) in the process: the one the thread stopped after, if it was in a system call;
    /// else the first in an executable mapping. Any address holding those two bytes runs a system call when jumped to.
    /// </summary>
    private static ulong FindSyscallInstruction(int pid, SafeFileHandle memory, ulong rip)
    {
        Span<byte> two = stackalloc byte[2];
        if (rip >= 2 && RandomAccess.Read(memory, two, (long)(rip - 2)) == 2 && two[0] == 0x0f && two[1] == 0x05) return rip - 2;
        var chunk = new byte[1 << 20];
        foreach (string line in File.ReadLines($"/proc/{pid}/maps"))
        {
            var fields = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 2 || fields[1].Length < 3 || fields[1][2] != 'x' || fields[1][0] != 'r') continue;
            var bounds = fields[0].Split('-');
            ulong start = ulong.Parse(bounds[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture), end = ulong.Parse(bounds[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            int n = (int)Math.Min((ulong)chunk.Length, end - start);
            int read;
            try { read = RandomAccess.Read(memory, chunk.AsSpan(0, n), (long)start); }
            catch (IOException) { continue; }
            for (int i = 0; i + 1 < read; i++)
                if (chunk[i] == 0x0f && chunk[i + 1] == 0x05) return start + (ulong)i;
        }
        throw new WriteProtectUnavailableException("no syscall instruction found in the process's code");
    }

    private static WriteProtectUnavailableException Failure(string call, int errno) => new($"{call}: {Native.Error(errno)}");
}

/// <summary>The kernel's write-protect log cannot be had for a guest; the message says why, in one line.</summary>
public sealed class WriteProtectUnavailableException(string message) : Exception(message);
