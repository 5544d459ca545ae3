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
try
{
    // Ctrl-C / SIGTERM cancel the command's token; it then has this long to clean up (quit its QEMU guests, remove
    // their RAM files: a bench of 8 guests takes seconds) before the process ends anyway (the default is 2 s).
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = TimeSpan.FromSeconds(60) });
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
