using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Pages;
using Xunit;

namespace VMScatter.Domain.Tests;

public partial class DataPlaneTests
{
    [Theory]
    [InlineData(0, CompressionMode.Lz4)]
    [InlineData(1, CompressionMode.Lz4)]
    [InlineData(2, CompressionMode.Zstd)]
    [InlineData(4, CompressionMode.Zstd)]
    public void Adaptive_compression_spends_cpu_on_zstd_only_while_frames_wait_for_the_link(int framesWaiting, CompressionMode expected) =>
        Assert.Equal(expected, AdaptiveCompression.Choose(framesWaiting));

    [Fact]
    public void A_page_is_never_encoded_as_adaptive_which_is_a_senders_choice_not_an_encoding() =>
        Assert.Throws<ArgumentException>(() => PageCodec.Encode(new byte[Page.Size], new byte[PageCodec.MaxEncodedSize], CompressionMode.Adaptive));

    [Fact]
    public async Task Adaptive_compression_starts_on_lz4_turns_to_zstd_once_frames_queue_for_a_slow_link_and_every_page_arrives_intact()
    {
        const int pages = 800;
        var contents = new Contents();
        for (int i = 1; i <= pages; i++)
        {
            // Compressible and distinct: a random first quarter, zeros after it.
            var p = new byte[Page.Size];
            new Random(i).NextBytes(p.AsSpan(0, Page.Size / 4));
            contents.Pages[i] = p;
        }
        // 16 Mbit/s with a 16 KiB NIC queue and 16 KiB frames: the encoder is far ahead of this link after a few frames.
        await using var h = new Harness(targets: 1, vmTarget: [0], pagesPerVm: pages, GroupTransport.RelayChain,
            adjust: o => o with { Compression = CompressionMode.Adaptive, LinkBitsPerSecond = 16_000_000, LinkQueueBytes = 16 * 1024, MaxPayloadBytes = 16 * 1024 });
        await h.Sender.ConnectAsync(CancellationToken.None);
        var ids = Enumerable.Range(1, pages).Select(i => (long)i).ToArray();
        var maps = new[] { ids.Select(c => new PageMap(0, (int)c - 1, c)).ToList() };
        var outcomes = await h.RoundAsync(new RoundTransfer(0, false, [new GroupTransfer(1, ids)], maps, []), contents);
        Assert.All(outcomes, o => Assert.Null(o.Error));

        long lz4 = h.Sender.PagesEncoded(PageEncoding.Lz4), zstd = h.Sender.PagesEncoded(PageEncoding.Zstd);
        Assert.Equal(pages, lz4 + zstd);
        Assert.True(lz4 > 0, "the first batch finds nothing queued for the link");
        Assert.True(zstd > pages / 2, $"zstd for {zstd} of {pages} pages: frames queue for a 16 Mbit/s link from the first few on");
        var read = new byte[Page.Size];
        for (int i = 1; i <= pages; i++)
        {
            h.Receivers[0].Vms.Single().Memory.ReadPage(i - 1, read);
            Assert.True(read.AsSpan().SequenceEqual(contents.Pages[i]), $"page {i - 1}");
        }
    }
}
