using System.Reflection;
using System.Reflection.Emit;
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
        int compiled = 0;
        // A warm-up that fails leaves code to its first call, as without it: it never fails the node.
        try { compiled = Run(); }
        catch (Exception) { /* what was compiled stays compiled */ }
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
    public static int Run(bool handoverOnly) => Run(handoverOnly, out _);

    /// <inheritdoc cref="Run()"/>
    /// <param name="generic">How many of them are instantiations of generic code over closed types (see <see cref="GenericCallees"/>).</param>
    public static int Run(bool handoverOnly, out int generic)
    {
        int compiled = 0;
        var assemblies = new[] { typeof(JitWarmup).Assembly, typeof(Qemu.QemuVm).Assembly, typeof(Domain.VmId).Assembly, typeof(DataPlane.Source.DataPlaneSender).Assembly };
        var own = new List<MethodBase>();
        foreach (var type in assemblies.SelectMany(a => a.GetTypes()).Where(t => !t.ContainsGenericParameters && (handoverOnly ? HandoverNamespaces.Contains(t.Namespace) : t.Namespace?.StartsWith("VMScatter.", StringComparison.Ordinal) == true)))
            foreach (var method in type.GetMethods(BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
                .Cast<MethodBase>().Concat(type.GetConstructors(BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)))
            {
                if (method.ContainsGenericParameters || !HasIl(method)) continue;
                if (Prepare(method)) { compiled++; own.Add(method); }
            }
        generic = 0;
        // Not for the handover scope (test processes, by the hundred): 0.6 s more a process, for pauses no test measures.
        if (handoverOnly) return compiled;
        foreach (var method in GenericCallees(own, depth: 2).Concat(own.Select(m => m.DeclaringType!).Distinct().SelectMany(AsyncBoxMethods)))
            if (Prepare(method)) generic++;
        return compiled + generic;
    }

    /// <summary>
    /// An async method's state machine runs, once it awaits, inside a box generic over it (the runtime's
    /// <c>AsyncTaskMethodBuilder&lt;T&gt;.AsyncStateMachineBox&lt;TStateMachine&gt;</c>), reached only through an
    /// interface: no IL names it. Its methods, for <paramref name="stateMachine"/>, or none if it is not one.
    /// </summary>
    public static IEnumerable<MethodBase> AsyncBoxMethods(Type stateMachine)
    {
        if (!typeof(IAsyncStateMachine).IsAssignableFrom(stateMachine) || stateMachine.ContainsGenericParameters) return [];
        var builder = stateMachine.GetField("<>t__builder", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)?.FieldType;
        // Task<T> and ValueTask<T> methods box with their T; Task, ValueTask and async void ones with the runtime's VoidTaskResult.
        var result = builder is { IsGenericType: true } ? builder.GetGenericArguments()[0] : typeof(Task).Assembly.GetType("System.Threading.Tasks.VoidTaskResult");
        var box = typeof(AsyncTaskMethodBuilder<>).GetNestedType("AsyncStateMachineBox`1", BindingFlags.NonPublic);
        if (builder is null || result is null || box is null) return [];
        Type closed;
        try { closed = box.MakeGenericType(result, stateMachine); }
        catch (ArgumentException) { return []; }
        return closed.GetMethods(BindingFlags.DeclaredOnly | BindingFlags.Instance | BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic)
            .Where(m => !m.IsAbstract && !m.ContainsGenericParameters).Cast<MethodBase>()
            .Concat(closed.GetConstructors(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic));
    }

    /// <summary>
    /// A body of IL to compile, told by the method's flags (its body is read once, by <see cref="Callees"/>): not abstract,
    /// not P/Invoke, not implemented by the runtime (delegates' Invoke, intrinsics).
    /// </summary>
    private static bool HasIl(MethodBase method) =>
        !method.IsAbstract && (method.Attributes & MethodAttributes.PinvokeImpl) == 0
        && (method.MethodImplementationFlags & (MethodImplAttributes.CodeTypeMask | MethodImplAttributes.InternalCall)) == MethodImplAttributes.IL;

    private static bool Prepare(MethodBase method)
    {
        try
        {
            var type = method.DeclaringType;
            if (type is { IsGenericType: true } || method.IsGenericMethod)
            {
                var instantiation = (type?.IsGenericType == true ? type.GetGenericArguments() : [])
                    .Concat(method.IsGenericMethod ? method.GetGenericArguments() : []).Select(t => t.TypeHandle).ToArray();
                RuntimeHelpers.PrepareMethod(method.MethodHandle, instantiation);
            }
            else RuntimeHelpers.PrepareMethod(method.MethodHandle);
            return true;
        }
        // Compiling runs no code, but loading the types it names can fail (a static constructor, an assembly not
        // shipped): that method is left to its first call, if it ever has one.
        catch (Exception) { return false; }
    }

    /// <summary>
    /// The instantiations of generic code (a <c>List&lt;long&gt;</c>'s methods, LINQ's over <c>VmId</c>) that
    /// <paramref name="roots"/> call, and those call in turn, <paramref name="depth"/> calls deep. Non-generic framework
    /// code comes precompiled (ReadyToRun); these are compiled on first call, and a first 6-guest QEMU run compiled
    /// them inside the first wave's pause (85 of 226 samples of its source's CPU in libclrjit under perf).
    /// </summary>
    public static IReadOnlyCollection<MethodBase> GenericCallees(IEnumerable<MethodBase> roots, int depth)
    {
        var found = new HashSet<MethodBase>();
        var frontier = roots.ToList();
        for (int level = 0; level < depth && frontier.Count > 0; level++)
        {
            var next = new List<MethodBase>();
            foreach (var caller in frontier)
                foreach (var callee in Callees(caller))
                    if ((callee.IsGenericMethod || callee.DeclaringType is { IsGenericType: true })
                        && !callee.ContainsGenericParameters && callee.DeclaringType?.ContainsGenericParameters != true && HasIl(callee) && found.Add(callee))
                        next.Add(callee);
            frontier = next;
        }
        return found;
    }

    /// <summary>The methods <paramref name="method"/>'s IL names as call, callvirt, newobj or ldftn operands.</summary>
    private static IEnumerable<MethodBase> Callees(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception) { il = null; }
        if (il is null) yield break;
        var typeArgs = method.DeclaringType is { IsGenericType: true } t ? t.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            OpCode op;
            if (il[i] == 0xFE && i + 1 < il.Length) { op = TwoByte[il[i + 1]]; i += 2; }
            else { op = OneByte[il[i]]; i += 1; }
            int size = OperandSize(op, il, i);
            if (size < 0) yield break; // a byte that is no opcode, or a switch longer than the body: the walk stops
            if (op.OperandType == OperandType.InlineMethod && i + 4 <= il.Length)
            {
                MethodBase? callee;
                try { callee = method.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs); }
                catch (Exception) { callee = null; }
                if (callee is not null) yield return callee;
            }
            i += size;
        }
    }

    /// <summary>The operand's size in bytes; -1 for a byte that is no opcode or a switch that does not fit the body.</summary>
    private static int OperandSize(OpCode op, byte[] il, int at)
    {
        if (op == Unknown) return -1;
        switch (op.OperandType)
        {
            case OperandType.InlineNone: return 0;
            case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar: return 1;
            case OperandType.InlineVar: return 2;
            case OperandType.InlineI8 or OperandType.InlineR: return 8;
            case OperandType.InlineSwitch:
                if (at + 4 > il.Length) return -1;
                uint targets = BitConverter.ToUInt32(il, at);
                return targets <= (uint)(il.Length - at - 4) / 4 ? 4 + 4 * (int)targets : -1;
            default: return 4;
        }
    }

    /// <summary>Marks table slots no opcode has (an opcode of its own kind: the prefix `no.` is not in OpCodes either).</summary>
    private static readonly OpCode Unknown = OpCodes.Prefix1;

    private static readonly OpCode[] OneByte = new OpCode[256], TwoByte = new OpCode[256];

    static JitWarmup()
    {
        Array.Fill(OneByte, Unknown);
        Array.Fill(TwoByte, Unknown);
        foreach (var field in typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static))
        {
            var op = (OpCode)field.GetValue(null)!;
            ushort value = (ushort)op.Value;
            if (op.Size == 1) OneByte[value] = op;
            else if ((value >> 8) == 0xFE) TwoByte[value & 0xFF] = op;
        }
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
