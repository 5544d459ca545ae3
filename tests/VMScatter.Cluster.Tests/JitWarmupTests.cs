using VMScatter.Cluster.Hosting;
using Xunit;

namespace VMScatter.Cluster.Tests;

public class JitWarmupTests
{
    [Fact]
    public void The_warm_up_compiles_the_handover_code_and_skips_what_it_cannot()
    {
        // Source, scheduler, target and QEMU backend: well over a thousand methods with their closures and state machines.
        int handover = JitWarmup.Run(handoverOnly: true);
        Assert.True(handover > 1000, $"{handover}");
        // The whole migration's code (placement, dedup, pages, data plane, the rest of the cluster) is far more.
        int all = JitWarmup.Run(handoverOnly: false);
        Assert.True(all > 2 * handover, $"{all} against {handover}");
        // Once per process, however many nodes it runs.
        Assert.Same(JitWarmup.Start(), JitWarmup.Start());
    }

    [Fact]
    public void The_warm_up_finds_the_generic_instantiations_the_code_calls_and_theirs_in_turn()
    {
        var root = typeof(JitWarmupTests).GetMethod(nameof(CallsGenericCode), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;
        var names = JitWarmup.GenericCallees([root], depth: 2).Select(m => $"{m.DeclaringType!.Name}<{string.Join(",", m.DeclaringType.GetGenericArguments().Select(a => a.Name))}>.{m.Name}").ToHashSet();
        // Called here: List<long>'s constructor and Add, and Enumerable.ToArray<long>; Add calls AddWithResize.
        Assert.Contains("List`1<Int64>..ctor", names);
        Assert.Contains("List`1<Int64>.Add", names);
        Assert.Contains("List`1<Int64>.AddWithResize", names);
        Assert.Contains(names, n => n.StartsWith("Enumerable<>.ToArray", StringComparison.Ordinal));
        // Only closed instantiations: nothing with an open type parameter left.
        Assert.DoesNotContain(JitWarmup.GenericCallees([root], depth: 2), m => m.ContainsGenericParameters || m.DeclaringType!.ContainsGenericParameters);
        // One call deep, AddWithResize is not reached.
        Assert.DoesNotContain(JitWarmup.GenericCallees([root], depth: 1), m => m.Name == "AddWithResize");
        // The whole warm-up compiles thousands of them; the handover scope (test processes) none.
        int all = JitWarmup.Run(handoverOnly: false, out int generic);
        Assert.True(generic > 1000 && all > generic, $"{generic} generic of {all}");
        JitWarmup.Run(handoverOnly: true, out int handoverGeneric);
        Assert.Equal(0, handoverGeneric);
    }

    [Fact]
    public void The_warm_up_finds_the_box_an_async_methods_state_machine_runs_in()
    {
        var stateMachine = typeof(JitWarmupTests).GetNestedTypes(System.Reflection.BindingFlags.NonPublic).Single(t => t.Name.Contains(nameof(AwaitsOnce), StringComparison.Ordinal));
        var box = JitWarmup.AsyncBoxMethods(stateMachine).Select(m => m.DeclaringType!).Distinct().Single();
        Assert.Equal("AsyncStateMachineBox`1", box.Name);
        Assert.Equal([typeof(int), stateMachine], box.GetGenericArguments());
        Assert.Contains(JitWarmup.AsyncBoxMethods(stateMachine), m => m.Name == "MoveNext");
        // Not a state machine: nothing.
        Assert.Empty(JitWarmup.AsyncBoxMethods(typeof(JitWarmupTests)));
    }

    private static async Task<int> AwaitsOnce(Task<int> task) => await task.ConfigureAwait(false) + 1;

    private static long[] CallsGenericCode(long value)
    {
        var list = new List<long>();
        list.Add(value);
        return Enumerable.ToArray(list);
    }

    [Fact]
    public void The_warm_up_runs_each_page_codec_through_a_real_compression_and_back()
    {
        // Compressed (not sent raw) and decoded to the same page: both libraries' encode and decode paths ran.
        Assert.Equal([Domain.Compression.CompressionMode.Lz4, Domain.Compression.CompressionMode.Zstd], JitWarmup.RoundTripCodecs());
    }
}
