using VMScatter.Qemu.WriteProtect;
using VMScatter.Qemu;

// Usage: <qemu pid> <RAM file> <RAM bytes> <Stopped|RegistersSet|CallReturned> <syscall number, -1 for none> <occurrence, from 1>
// Starts the write log of the guest as a node does, and at the given point prints "holding" and waits to be killed.
// Prints "done" if the set-up ended without reaching it, "unavailable: <reason>" if the log could not be had.
if (args.Length != 6) { Console.Error.WriteLine("usage: pid ram-file ram-bytes point syscall occurrence"); return 2; }
int pid = int.Parse(args[0]);
var point = Enum.Parse<InjectionPoint>(args[3]);
long call = long.Parse(args[4]);
int occurrence = int.Parse(args[5]), seen = 0;
SyscallInjector.Checkpoint = (at, number) =>
{
    if (at != point || number != call || ++seen != occurrence) return;
    Console.Out.WriteLine("holding");
    Console.Out.Flush();
    Thread.Sleep(Timeout.Infinite);
};
using var ram = QemuRamFile.OpenForReading(args[1], long.Parse(args[2]));
try
{
    using var log = WriteProtectLog.Start(pid, ram.MappedAt, ram.PageCount);
    Console.Out.WriteLine("done");
}
catch (WriteProtectUnavailableException e)
{
    Console.Out.WriteLine($"unavailable: {e.Message}");
}
return 0;
