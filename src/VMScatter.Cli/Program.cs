using System.CommandLine;
using VMScatter.Cli;
using VMScatter.Cli.Commands;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;

// Colours and cursor movement only for a terminal; logs and pipes get plain text.
if (Console.IsOutputRedirected)
{
    Spectre.Console.AnsiConsole.Profile.Capabilities.Ansi = false;
    Spectre.Console.AnsiConsole.Profile.Width = 160;
}

var root = new RootCommand("VMScatter: live-migrate many VMs from one source host to many target hosts at once");
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(NodeCommand.Create());
root.Subcommands.Add(MigrateCommand.Create());
root.Subcommands.Add(PlanCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ChaosCommand.Create());
root.Subcommands.Add(StatusCommand.Create());
root.Subcommands.Add(ListCommand.Create());
root.Subcommands.Add(ShowCommand.Create());
root.Subcommands.Add(CancelCommand.Create());

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see 'vmscatter --help')");
    return ExitCodes.BadInput;
}
// Ctrl-C / SIGTERM cancel the command's token; it then has 60 s to clean up (quit its QEMU guests, remove their RAM
// files: a bench of 8 guests takes seconds) before the process ends anyway, and a second signal ends it at once. Our
// own handlers, not System.CommandLine's: its handler, dispatched late on a loaded machine, cancelled a token source
// the finished command had disposed, and the process died with a stack trace after a clean exit.
using var terminate = new CancellationTokenSource();
int signals = 0;
void OnSignal(System.Runtime.InteropServices.PosixSignalContext context)
{
    context.Cancel = true;
    int exitCode = context.Signal == System.Runtime.InteropServices.PosixSignal.SIGINT ? 130 : 143;
    if (Interlocked.Increment(ref signals) > 1) Environment.Exit(exitCode);
    _ = Task.Delay(TimeSpan.FromSeconds(60)).ContinueWith(_ => Environment.Exit(exitCode), TaskScheduler.Default);
    try { terminate.Cancel(); }
    catch (ObjectDisposedException) { }
}
using var onInterrupt = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
using var onTerminate = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
try
{
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null }, terminate.Token);
}
catch (Exception e) when (e is UserError or ClusterJoinException or ConsoleTimeoutException or Akka.Configuration.ConfigurationException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return ExitCodes.BadInput;
}
catch (OperationCanceledException)
{
    Console.Error.WriteLine("interrupted");
    return 130;
}
catch (Exception e)
{
    // Not the user's input, but still one line (VMSCATTER_TRACE=1 adds the stack trace for a bug report).
    var cause = e.GetBaseException();
    Console.Error.WriteLine($"error: {cause.Message} ({cause.GetType().Name})");
    if (Environment.GetEnvironmentVariable("VMSCATTER_TRACE") == "1") Console.Error.WriteLine(e);
    return ExitCodes.Failed;
}
