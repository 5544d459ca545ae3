using System.Runtime.CompilerServices;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The build turns quick JIT off (Directory.Build.props) for the migration's hot loops, so every process compiles each
/// method it runs fully optimized: a scheduler node took 5.2-6.0 s of CPU to start (measured), 2.9-3.2 s with quick JIT
/// and without dynamic PGO. The suite is CPU-bound on 2 cores, so that CPU is its length. With call counting from the
/// start, hot loops still reach optimized code early (`demo` no slower, measured side by side). Tests assert behaviour,
/// not speed: every process they start (nodes, console commands, scripts) inherits this tiering, and the test host has
/// it from the project file; production keeps the build's.
/// </summary>
internal static class TestProcessJit
{
    [ModuleInitializer]
    internal static void ForChildProcesses()
    {
        Environment.SetEnvironmentVariable("DOTNET_TC_QuickJit", "1");
        Environment.SetEnvironmentVariable("DOTNET_TieredPGO", "0");
        Environment.SetEnvironmentVariable("DOTNET_TC_CallCountingDelayMs", "0");
    }
}
