using System.Runtime.CompilerServices;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// The suite is CPU-bound, and the build's full JIT (quick JIT off, for the migration's hot loops) makes every process it
/// starts compile each method fully optimized. Tests assert behaviour, not speed: the processes they start inherit quick
/// JIT, without dynamic PGO and with call counting at once (hot loops still tier up early); the test host has it from the
/// project file. Production keeps the build's tiering.
/// </summary>
internal static class TestProcessJit
{
    [ModuleInitializer]
    internal static void ForChildProcesses()
    {
        Environment.SetEnvironmentVariable("DOTNET_TC_QuickJit", "1");
        Environment.SetEnvironmentVariable("DOTNET_TieredPGO", "0");
        Environment.SetEnvironmentVariable("DOTNET_TC_CallCountingDelayMs", "0");
        // Nodes start by the hundred here: each warms only the handover's code, not the whole migration's.
        Environment.SetEnvironmentVariable(Hosting.JitWarmup.ScopeVariable, "handover");
    }
}
