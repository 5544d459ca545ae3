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
    public void The_warm_up_runs_each_page_codec_through_a_real_compression_and_back()
    {
        // Compressed (not sent raw) and decoded to the same page: both libraries' encode and decode paths ran.
        Assert.Equal([Domain.Compression.CompressionMode.Lz4, Domain.Compression.CompressionMode.Zstd], JitWarmup.RoundTripCodecs());
    }
}
