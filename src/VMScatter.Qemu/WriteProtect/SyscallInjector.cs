using Microsoft.Win32.SafeHandles;

namespace VMScatter.Qemu.WriteProtect;

/// <summary>
/// Runs system calls in another process, as a debugger's "call" does: ptrace seizes one of its threads and stops it
/// while it waits in poll/ppoll (QEMU's main loop), points it back at the very syscall instruction it waits on with a
/// call's registers, runs it to the call's exit (PTRACE_SYSCALL), reads the result, and at the end restores and
/// releases it (its poll restarts, as after a signal). Only that thread stops, for the few calls' time; the others
/// (a guest's vCPUs) run on. Made so that this process dying at any point costs QEMU nothing worse than one spurious
/// poll result: no trap flag is ever set (a tracer's death clears syscall tracing, not single-stepping), and the
/// thread only ever runs the instruction it stopped after, so with a call's registers left in place it returns from
/// its poll with that call's result, which QEMU's main loop takes as "nothing ready". A thread found elsewhere (in
/// another system call, or running) is released at once and tried again shortly; ptrace binds a tracee to the
/// tracer's thread, so everything happens in <see cref="Run{T}"/>, on the calling thread, without awaits.
/// </summary>
internal sealed unsafe class SyscallInjector
{
    private readonly int _tid;
    private readonly Native.Regs _saved;

    private SyscallInjector(int tid, Native.Regs saved)
    {
        _tid = tid;
        _saved = saved;
    }

    /// <summary>
    /// Null but in the tests that kill a tracer (a process of their own) while it holds QEMU's thread: called at each
    /// point where the thread waits in this process's hands, with the call's number (-1 before any call).
    /// </summary>
    internal static Action<InjectionPoint, long>? Checkpoint;

    /// <summary>poll, ppoll: where QEMU's main loop waits.</summary>
    private static readonly ulong[] Waits = [7, 271];

    /// <summary>-EINTR, -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK: the call was under way when the thread stopped.</summary>
    private static readonly long[] Interrupted = [-4, -512, -513, -514, -516];

    /// <summary>
    /// Stops thread <paramref name="tid"/> of process <paramref name="pid"/> in its poll (trying up to
    /// <paramref name="attempts"/> times), runs <paramref name="body"/> with it, and always restores and releases it.
    /// </summary>
    public static T Run<T>(int pid, int tid, Func<SyscallInjector, T> body, int attempts = 50)
    {
        using var memory = File.OpenHandle($"/proc/{pid}/mem", FileMode.Open, FileAccess.Read);
        for (int attempt = 1; ; attempt++)
        {
            // TRACESYSGOOD: a syscall stop is told from a SIGTRAP sent to QEMU (and get_syscall_info knows entry from exit).
            if (Native.Ptrace(Native.PtraceSeize, tid, 0, Native.PtraceOTraceSysGood) < 0) throw Failure("ptrace seize", Native.Errno);
            Native.Regs regs = default;
            bool restore = false, released = false;
            try
            {
                if (Native.Ptrace(Native.PtraceInterrupt, tid, 0, 0) < 0) throw Failure("ptrace interrupt", Native.Errno);
                WaitStop(tid);
                // The interrupt's own stop (a signal-delivery stop is let go with its signal, and tried again).
                var (signal, code) = StopSignal(tid);
                bool interruptStop = signal == Native.SigTrap && code == (Native.PtraceEventStop << 8 | Native.SigTrap);
                if (Native.Ptrace(Native.PtraceGetRegs, tid, 0, (nint)(&regs)) < 0) throw Failure("ptrace getregs", Native.Errno);
                if (interruptStop && Waits.Contains(regs.OrigRax) && Interrupted.Contains((long)regs.Rax) && IsSyscallInstruction(memory, regs.Rip - 2))
                {
                    restore = true;
                    Checkpoint?.Invoke(InjectionPoint.Stopped, -1);
                    return body(new SyscallInjector(tid, regs));
                }
                released = true;
                Release(tid, null, interruptStop ? 0 : signal);
            }
            finally
            {
                // Whatever failed: the thread is never left traced (nor with a call's registers).
                if (restore) Release(tid, Restarted(regs), 0);
                else if (!released) Release(tid, null, 0);
            }
            if (attempt >= attempts) throw new WriteProtectUnavailableException($"QEMU's main thread was not found waiting in poll in {attempts} tries");
            Thread.Sleep(2);
        }
    }

    /// <summary>
    /// Restores the thread's registers (if given) and detaches it, delivering <paramref name="signal"/>. A detach that
    /// fails on a live thread (it was not in a stop: an error came between a resume and its stop) stops it again
    /// first, so that it is never left traced.
    /// </summary>
    private static void Release(int tid, Native.Regs? regs, int signal)
    {
        for (int attempt = 0; attempt < 3; attempt++)
        {
            if (regs is { } r) Native.Ptrace(Native.PtraceSetRegs, tid, 0, (nint)(&r));
            if (Native.Ptrace(Native.PtraceDetach, tid, 0, signal) == 0 || Gone(GuestPid.Stat(tid))) return;
            if (Native.Ptrace(Native.PtraceInterrupt, tid, 0, 0) < 0) return; // not traced by this thread any more
            try { WaitStop(tid); }
            catch (WriteProtectUnavailableException) { return; } // it exited
        }
    }

    /// <summary>One system call in the stopped thread: the raw result (a negative errno on failure).</summary>
    public long Call(long number, long a0 = 0, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0)
    {
        var regs = _saved;
        regs.Rax = (ulong)number;
        (regs.Rdi, regs.Rsi, regs.Rdx, regs.R10, regs.R8, regs.R9) = ((ulong)a0, (ulong)a1, (ulong)a2, (ulong)a3, (ulong)a4, (ulong)a5);
        // Back onto the poll's own syscall instruction; not in a system call, so the kernel restarts nothing on these registers.
        regs.Rip = _saved.Rip - 2;
        regs.OrigRax = ulong.MaxValue;
        if (Native.Ptrace(Native.PtraceSetRegs, _tid, 0, (nint)(&regs)) < 0) throw Failure("ptrace setregs", Native.Errno);
        Checkpoint?.Invoke(InjectionPoint.RegistersSet, number);
        int signal = 0;
        for (int stops = 0; stops < 16; stops++)
        {
            if (Native.Ptrace(Native.PtraceSyscall, _tid, 0, signal) < 0) throw Failure("ptrace syscall", Native.Errno);
            signal = 0;
            WaitStop(_tid);
            var info = new Native.SyscallInfo();
            if (Native.Ptrace(Native.PtraceGetSyscallInfo, _tid, sizeof(Native.SyscallInfo), (nint)(&info)) < 0) throw Failure("ptrace get_syscall_info", Native.Errno);
            if (info.Op == Native.SyscallInfoExit)
            {
                Checkpoint?.Invoke(InjectionPoint.CallReturned, number);
                return info.RvalOrNr;
            }
            // The call's entry: on to its exit. A signal's stop: delivered now (a handler returns to these registers).
            if (info.Op == Native.SyscallInfoNone && StopSignal(_tid) is var (s, code) && s != 0 && !(s == Native.SigTrap && code >> 8 != 0)) signal = s;
        }
        throw new WriteProtectUnavailableException("the injected system call did not return");
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
            var stat = r != tid && round % 16 == 15 ? GuestPid.Stat(tid) : null;
            if (r == tid || stat?.State == 't')
            {
                while (Native.WaitPid(tid, out _, Native.WaitAll | Native.WaitNoHang) == tid) { }
                return;
            }
            if (r < 0 && Native.Errno is not (Native.Eintr or Native.Echild)) throw Failure("waitpid", Native.Errno);
            if (round % 16 == 15 && Gone(stat)) throw new WriteProtectUnavailableException("the process exited while stopped for the injection");
            // The tracee needs a core to reach its stop: give this one away, then sleep once the wait is long.
            if (round < 64) Thread.Yield();
            else Thread.Sleep(1);
        }
    }

    /// <summary>A thread whose /proc stat is gone or says it died (zombie, dead); 't' is one stopped by its tracer.</summary>
    private static bool Gone((char State, int Parent, long StartTicks)? stat) => stat is not { State: not ('Z' or 'X') };

    /// <summary>The signal (and its si_code) the thread is stopped for: SIGTRAP with an event for an interrupt, else a signal to hand back; (0, 0) for a group stop.</summary>
    private static (int Signal, int Code) StopSignal(int tid)
    {
        var info = stackalloc int[32];
        return Native.Ptrace(Native.PtraceGetSigInfo, tid, 0, (nint)info) < 0 ? (0, 0) : (info[0], info[2]);
    }

    /// <summary>
    /// The registers the thread stopped with, its interrupted poll made to restart as the kernel does after a signal
    /// without a handler (once the injected calls ran, the thread stops at a call's exit, where the kernel would not).
    /// </summary>
    private static Native.Regs Restarted(Native.Regs r)
    {
        long result = (long)r.Rax;
        if ((long)r.OrigRax < 0 || result is not (-512 or -513 or -514 or -516)) return r;
        r.Rax = result == -516 ? 219 /* restart_syscall */ : r.OrigRax;
        r.Rip -= 2;
        r.OrigRax = ulong.MaxValue;
        return r;
    }

    private static bool IsSyscallInstruction(SafeFileHandle memory, ulong at)
    {
        Span<byte> two = stackalloc byte[2];
        try { return at < long.MaxValue && RandomAccess.Read(memory, two, (long)at) == 2 && two[0] == 0x0f && two[1] == 0x05; }
        catch (IOException) { return false; }
    }

    private static WriteProtectUnavailableException Failure(string call, int errno) => new($"{call}: {Native.Error(errno)}");
}

/// <summary>Where a tracer may stop holding QEMU's thread: stopped in its poll, a call's registers set, a call returned (its registers still in place).</summary>
internal enum InjectionPoint { Stopped, RegistersSet, CallReturned }

/// <summary>The kernel's write-protect log cannot be had for a guest; the message says why, in one line.</summary>
public sealed class WriteProtectUnavailableException(string message) : Exception(message);
