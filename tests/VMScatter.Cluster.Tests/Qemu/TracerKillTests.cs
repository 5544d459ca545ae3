using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;
using VMScatter.Domain;
using VMScatter.Qemu;
using VMScatter.Qemu.WriteProtect;

namespace VMScatter.Cluster.Tests.Qemu;

/// <summary>
/// A node killed -9 while it holds QEMU's main thread for the write log's set-up (<see cref="SyscallInjector"/>):
/// the guest runs on, QEMU is not left traced or stopped, its monitor answers, and the log is had again or refused
/// with a reason. The tracer is a process of its own (VMScatter.InjectionProbe) running the node's set-up code, held
/// at one point of it and killed there.
/// </summary>
[Collection("qemu")]
public sealed class TracerKillTests(QemuFixture fixture, ITestOutputHelper output)
{
    /// <summary>Where the tracer dies: every point at which it holds QEMU's thread.</summary>
    private static readonly (InjectionPoint Point, long Call, string What, int LeftInQemu)[] KillPoints =
    [
        (InjectionPoint.Stopped, -1, "stopped in its poll, registers untouched", 0),
        (InjectionPoint.RegistersSet, Native.SysUserfaultfd, "a userfaultfd's registers set, not run: QEMU runs it and keeps the descriptor", 1),
        (InjectionPoint.CallReturned, Native.SysUserfaultfd, "a userfaultfd made in QEMU, its registers in place: QEMU keeps the descriptor", 1),
        (InjectionPoint.RegistersSet, Native.SysClose, "the close of QEMU's copy set, not run: QEMU runs it", 0),
        (InjectionPoint.CallReturned, Native.SysClose, "QEMU's copy closed, the close's registers in place", 0),
    ];

    [Fact]
    public async Task A_tracer_killed_at_any_point_of_the_set_up_leaves_qemu_running_untraced_with_nothing_registered_and_the_log_to_be_had()
    {
        string tag = Guid.NewGuid().ToString("N")[..8];
        var settings = QemuFixture.SettingsFor(tag) with { DirtyTracking = DirtyTracking.WriteProtect };
        var vm = await QemuVm.StartAsync(new QemuGuestSpec("kill", fixture.Image, 128L << 20), settings);
        try
        {
            int qemu = vm.ProcessId;
            int left = 0;
            foreach (var (point, call, what, leftInQemu) in KillPoints)
            {
                using var tracer = Process.Start(new ProcessStartInfo("dotnet",
                    [Path.Combine(AppContext.BaseDirectory, "VMScatter.InjectionProbe.dll"), $"{qemu}", vm.RamFilePath, $"{128L << 20}", $"{point}", $"{call}", "1"])
                    { RedirectStandardOutput = true })!;
                try
                {
                    string? said = await tracer.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
                    Assert.True(said == "holding", $"{what}: the tracer said '{said}' instead of holding there");
                    // The thread is in the tracer's hands: traced, and stopped.
                    Assert.Equal(tracer.Id, TracerOf(qemu));
                    Assert.Equal('t', GuestPid.Stat(qemu)!.Value.State);
                }
                finally
                {
                    tracer.Kill();
                    await tracer.WaitForExitAsync();
                }
                // The kernel let the thread go as the tracer died: untraced, not stopped, QEMU alive.
                Assert.Equal(0, TracerOf(qemu));
                Assert.NotEqual('t', GuestPid.Stat(qemu)!.Value.State);
                // Its main loop serves the monitor (stop and cont), and the guest's vCPU counts on.
                await vm.PauseAsync();
                await vm.ResumeAsync();
                Assert.Equal(VmRunState.Running, vm.State);
                long counter = SerialConsole.LastCounter(vm.SerialLogPath);
                Assert.True(await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, counter + 1, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running) > counter + 1, what);
                // At most an unregistered descriptor left in QEMU; its RAM never left registered.
                left += leftInQemu;
                Assert.Equal(left, UserfaultFds(qemu));
                Assert.DoesNotContain("uw", RamVmFlags(qemu, vm.RamFilePath));
                output.WriteLine($"killed at: {what}; QEMU {qemu} untraced, its monitor answering, the guest counting past {counter}, {left} descriptors left in it");
            }
            // Nothing of the kills stands in the way: the node's log is had, and lists what the guest writes.
            vm.StartDirtyLogging();
            Assert.Null(vm.WriteLogUnavailable);
            Assert.Contains("uw", RamVmFlags(qemu, vm.RamFilePath));
            long before = SerialConsole.LastCounter(vm.SerialLogPath);
            await SerialConsole.WaitForCounterAboveAsync(vm.SerialLogPath, before + 1, TimeSpan.FromSeconds(60), () => vm.State == VmRunState.Running);
            Assert.NotEmpty(vm.CollectDirtyPages());
            Assert.StartsWith("write-protect: 1 collections", vm.DirtyTrackingUsed);
        }
        finally { await vm.DisposeAsync(); }
        QemuFixture.AssertNothingLeft(settings);
    }

    private static int UserfaultFds(int pid) => WriteProtectLogTests.OpenFiles(pid).Count(f => f.Contains("userfaultfd", StringComparison.Ordinal));

    private static string[] RamVmFlags(int pid, string ramFile) => WriteProtectLogTests.RamVmFlags(pid, ramFile);

    private static int TracerOf(int pid) =>
        int.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("TracerPid:", StringComparison.Ordinal))["TracerPid:".Length..].Trim());
}
