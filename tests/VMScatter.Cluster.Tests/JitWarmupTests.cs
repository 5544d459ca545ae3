using VMScatter.Cluster.Hosting;
using Xunit;

namespace VMScatter.Cluster.Tests;

public class JitWarmupTests
{
    [Fact]
    public void The_warm_up_compiles_the_handover_code_and_skips_what_it_cannot()
    {
        // Source, scheduler, target and QEMU backend: well over a thousand methods with their closures and state machines.
        Assert.True(JitWarmup.Run() > 1000);
        // Once per process, however many nodes it runs.
        Assert.Same(JitWarmup.Start(), JitWarmup.Start());
    }
}
