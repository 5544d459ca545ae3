using System.Reflection;
using System.Runtime.CompilerServices;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Compiles the migration's code at node start. With quick JIT off (Directory.Build.props: hot loops), every method
/// is compiled fully optimised on its first call, and a node's first migration is where most of them run first: its
/// placement, round building, sends and handover, inside the guests' pauses too. Compiled here, on a background thread
/// while the cluster forms, they are ready by then (a local cluster waits for it). Generic code is left to its first call.
/// </summary>
public static class JitWarmup
{
    /// <summary>Only the handover's namespaces (VMSCATTER_JIT_WARMUP=handover): the test processes' choice, whose nodes start by the hundred.</summary>
    private static readonly string[] HandoverNamespaces =
        ["VMScatter.Cluster.Source", "VMScatter.Cluster.Scheduler", "VMScatter.Cluster.Target", "VMScatter.Qemu", "VMScatter.Qemu.Migration"];

    /// <summary>The environment variable that narrows the warm-up to <see cref="HandoverNamespaces"/>.</summary>
    public const string ScopeVariable = "VMSCATTER_JIT_WARMUP";

    private static readonly Lazy<Task<int>> Once = new(() => Task.Factory.StartNew(() =>
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int compiled = Run();
        try { RoundTripCodecs(); }
        catch (Exception) { /* a codec failing here fails again, named, where a migration uses it */ }
        Elapsed = clock.Elapsed;
        return compiled;
    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default));

    /// <summary>How long the process's warm-up took, once it completed.</summary>
    public static TimeSpan Elapsed { get; private set; }

    /// <summary>Once per process (a local cluster's nodes share one): the compiled code is the process's.</summary>
    public static Task<int> Start() => Once.Value;

    /// <summary>
    /// Compiles every non-generic method with a body (closures and async state machines included) of VMScatter's own
    /// assemblies, or of the handover's namespaces only; returns how many.
    /// </summary>
    public static int Run() => Run(handoverOnly: Environment.GetEnvironmentVariable(ScopeVariable) == "handover");

    /// <inheritdoc cref="Run()"/>
    public static int Run(bool handoverOnly)
    {
        int compiled = 0;
        var assemblies = new[] { typeof(JitWarmup).Assembly, typeof(Qemu.QemuVm).Assembly, typeof(Domain.VmId).Assembly, typeof(DataPlane.Source.DataPlaneSender).Assembly };
        foreach (var type in assemblies.SelectMany(a => a.GetTypes()).Where(t => !t.ContainsGenericParameters && (handoverOnly ? HandoverNamespaces.Contains(t.Namespace) : t.Namespace?.StartsWith("VMScatter.", StringComparison.Ordinal) == true)))
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

    /// <summary>
    /// Compresses and decompresses one page with each page codec. Their libraries (ZstdSharp, K4os LZ4) are not VMScatter's
    /// code, and a node's first migration compiled their hot paths inside round 0 (~0.24 s of CPU on a first 6-guest QEMU
    /// run). Only the compiled code outlives it (the codecs' state is per thread). Returns the codecs whose output was
    /// smaller than the page and came back to it.
    /// </summary>
    public static IReadOnlyList<CompressionMode> RoundTripCodecs()
    {
        // Text-like bytes with a varied stretch: matches and skewed literals, so both codecs run their full paths.
        var page = new byte[Page.Size];
        const string text = "every distinct page goes once to the group of targets that needs it; ";
        for (int i = 0; i < page.Length; i++) page[i] = (byte)(text[i % text.Length] + (i / 1024));
        for (int i = 3000; i < 3400; i++) page[i] = (byte)(i * 37 % 251);
        var encoded = new byte[PageCodec.MaxEncodedSize];
        var decoded = new byte[Page.Size];
        var worked = new List<CompressionMode>();
        foreach (var mode in new[] { CompressionMode.Lz4, CompressionMode.Zstd })
        {
            var (encoding, length) = PageCodec.Encode(page, encoded, mode);
            if (encoding != PageEncoding.Raw && PageCodec.TryDecode(encoding, encoded.AsSpan(0, length), decoded) && decoded.AsSpan().SequenceEqual(page)) worked.Add(mode);
        }
        return worked;
    }
}
