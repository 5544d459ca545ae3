using System.Reflection;
using System.Runtime.CompilerServices;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Compiles the handover's code at node start. With quick JIT off (Directory.Build.props: hot loops), every method
/// is compiled fully optimised on its first call, and a first wave's handover is where most of these run first:
/// its hops took 20-35 ms each where the last wave's took 1-17 ms, inside the guests' pause. Compiled here, on a
/// background thread while the cluster forms, they are ready by then. Generic code is left to its first call.
/// </summary>
public static class JitWarmup
{
    /// <summary>Namespaces whose code runs between a stop-and-copy's pause and the guests' resume.</summary>
    private static readonly string[] Namespaces =
        ["VMScatter.Cluster.Source", "VMScatter.Cluster.Scheduler", "VMScatter.Cluster.Target", "VMScatter.Qemu", "VMScatter.Qemu.Migration"];

    private static readonly Lazy<Task<int>> Once = new(() => Task.Factory.StartNew(Run, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default));

    /// <summary>Once per process (a local cluster's nodes share one): the compiled code is the process's.</summary>
    public static Task<int> Start() => Once.Value;

    /// <summary>Compiles every non-generic method with a body of those namespaces' types (closures and async state machines included); returns how many.</summary>
    public static int Run()
    {
        int compiled = 0;
        var assemblies = new[] { typeof(JitWarmup).Assembly, typeof(Qemu.QemuVm).Assembly };
        foreach (var type in assemblies.SelectMany(a => a.GetTypes()).Where(t => Namespaces.Contains(t.Namespace) && !t.ContainsGenericParameters))
            foreach (var method in type.GetMethods(BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
                .Cast<MethodBase>().Concat(type.GetConstructors(BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)))
            {
                if (method.IsAbstract || method.ContainsGenericParameters || method.GetMethodBody() is null) continue;
                try
                {
                    RuntimeHelpers.PrepareMethod(method.MethodHandle);
                    compiled++;
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or BadImageFormatException or TypeLoadException) { }
            }
        return compiled;
    }
}
