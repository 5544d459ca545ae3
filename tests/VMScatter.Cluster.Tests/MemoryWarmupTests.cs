using VMScatter.Bench;
using Xunit;

namespace VMScatter.Cluster.Tests;

public class MemoryWarmupTests
{
    [Theory]
    [InlineData(3L << 30, 24L << 30, 3L << 30)] // what the run takes
    [InlineData(3L << 30, 4L << 30, 2L << 30)]  // at most half of what is available
    [InlineData(1L << 30, 0, 0)]
    public void Plan_takes_what_the_run_needs_within_half_the_available_memory(long run, long available, long expected) =>
        Assert.Equal(expected, MemoryWarmup.Plan(run, available));

    [Fact]
    public void Touch_writes_every_page_of_the_memory_across_chunks()
    {
        // 64 MiB chunks: two whole ones and a part page (rounded up to one more page).
        long bytes = (128L << 20) + 4096 + 100;
        Assert.Equal((128L << 20) / 4096 + 2, MemoryWarmup.Touch(bytes));
        Assert.Equal(0, MemoryWarmup.Touch(0));
    }
}
