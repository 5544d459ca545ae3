using K4os.Compression.LZ4;
using VMScatter.Domain.Pages;

namespace VMScatter.Domain.Compression;

/// <summary>How a page's bytes travel. Raw is always allowed: a page that does not shrink is sent as it is.</summary>
public enum PageEncoding : byte { Raw = 0, Lz4 = 1, Zstd = 2 }

/// <summary>
/// How a sender compresses pages. <see cref="Adaptive"/> is a sender's policy, not an encoding: zstd while its frames
/// queue for the link (CPU to spare), LZ4 while the link waits for frames (see <see cref="AdaptiveCompression"/>).
/// </summary>
public enum CompressionMode { None, Lz4, Zstd, Adaptive }

/// <summary>
/// The adaptive policy: zstd's fewer bytes are worth its CPU only while the link, not the encoder, is what the round
/// waits for (measurements: README, QEMU section). Decided per batch from the frames built and not yet sent.
/// </summary>
public static class AdaptiveCompression
{
    /// <summary>Frames waiting for the link from which the encoder counts as ahead of it.</summary>
    public const int AheadOfLink = 2;

    public static CompressionMode Choose(int framesWaiting) => framesWaiting >= AheadOfLink ? CompressionMode.Zstd : CompressionMode.Lz4;
}

/// <summary>Per-page compression with a raw fallback; decoding checks that exactly one page comes out.</summary>
public static class PageCodec
{
    /// <summary>Worst-case encoded size for one page (raw, since anything larger falls back to raw).</summary>
    public const int MaxEncodedSize = Page.Size;

    [ThreadStatic] private static ZstdSharp.Compressor? _zstdCompressor;
    [ThreadStatic] private static ZstdSharp.Decompressor? _zstdDecompressor;

    /// <summary>Encodes <paramref name="page"/> into <paramref name="destination"/> (≥ <see cref="MaxEncodedSize"/> bytes).</summary>
    public static (PageEncoding Encoding, int Length) Encode(ReadOnlySpan<byte> page, Span<byte> destination, CompressionMode mode)
    {
        if (page.Length != Page.Size) throw new ArgumentException("one page expected", nameof(page));
        if (mode == CompressionMode.Adaptive) throw new ArgumentException("adaptive is chosen per batch by the sender", nameof(mode));
        int length = 0;
        PageEncoding encoding = PageEncoding.Raw;
        switch (mode)
        {
            case CompressionMode.Lz4:
                Span<byte> lz = stackalloc byte[LZ4Codec.MaximumOutputSize(Page.Size)];
                length = LZ4Codec.Encode(page, lz, LZ4Level.L00_FAST);
                if (length > 0 && length < Page.Size) { lz[..length].CopyTo(destination); encoding = PageEncoding.Lz4; }
                break;
            case CompressionMode.Zstd:
                _zstdCompressor ??= new ZstdSharp.Compressor(1);
                Span<byte> zs = stackalloc byte[ZstdSharp.Compressor.GetCompressBound(Page.Size)];
                length = _zstdCompressor.Wrap(page, zs);
                if (length > 0 && length < Page.Size) { zs[..length].CopyTo(destination); encoding = PageEncoding.Zstd; }
                break;
        }
        if (encoding == PageEncoding.Raw)
        {
            page.CopyTo(destination);
            length = Page.Size;
        }
        return (encoding, length);
    }

    /// <summary>Decodes into exactly one page; false for anything malformed (wrong size, bad stream, unknown encoding).</summary>
    public static bool TryDecode(PageEncoding encoding, ReadOnlySpan<byte> encoded, Span<byte> page)
    {
        if (page.Length != Page.Size || encoded.Length == 0 || encoded.Length > MaxEncodedSize) return false;
        try
        {
            switch (encoding)
            {
                case PageEncoding.Raw:
                    if (encoded.Length != Page.Size) return false;
                    encoded.CopyTo(page);
                    return true;
                case PageEncoding.Lz4:
                    return LZ4Codec.Decode(encoded, page) == Page.Size;
                case PageEncoding.Zstd:
                    _zstdDecompressor ??= new ZstdSharp.Decompressor();
                    return _zstdDecompressor.TryUnwrap(encoded, page, out int written) && written == Page.Size;
                default:
                    return false;
            }
        }
        catch (Exception e) when (e is ZstdSharp.ZstdException or ArgumentException or InvalidOperationException or IndexOutOfRangeException)
        {
            return false;
        }
    }
}
