using Akka.Configuration;
using VMScatter.DataPlane;
using VMScatter.Domain.Compression;

namespace VMScatter.Cluster.Source;

/// <summary>vmscatter.source and vmscatter.data-plane, read once per node.</summary>
public sealed record SourceSettings(
    int DedupShards,
    int SketchSize,
    int MaxRounds,
    TimeSpan DowntimeTarget,
    long AssumedRateBytesPerSecond,
    TimeSpan ProgressInterval,
    TimeSpan RegistrationInterval,
    DataPlaneOptions DataPlane,
    TimeSpan HandoverReserve)
{
    public static SourceSettings From(Config config) => new(
        config.GetInt("vmscatter.source.dedup-shards"),
        config.GetInt("vmscatter.source.sketch-size"),
        config.GetInt("vmscatter.source.max-rounds"),
        config.GetTimeSpan("vmscatter.source.downtime-target"),
        config.GetByteSize("vmscatter.source.assumed-rate") ?? throw new ConfigurationException("vmscatter.source.assumed-rate missing"),
        config.GetTimeSpan("vmscatter.source.progress-interval"),
        config.GetTimeSpan("vmscatter.source.registration-interval"),
        DataPlaneSettings.From(config),
        config.GetTimeSpan("vmscatter.source.handover-reserve"));
}

public static class DataPlaneSettings
{
    public static DataPlaneOptions From(Config config) => new()
    {
        MaxPayloadBytes = (int)(config.GetByteSize("vmscatter.data-plane.max-payload") ?? throw new ConfigurationException("vmscatter.data-plane.max-payload missing")),
        Compression = ParseCompression(config.GetString("vmscatter.data-plane.compression")),
        Transport = ParseTransport(config.GetString("vmscatter.data-plane.group-transport")),
        ConnectTimeout = config.GetTimeSpan("vmscatter.data-plane.connect-timeout"),
        LinkQueueBytes = config.GetByteSize("vmscatter.data-plane.link-queue") ?? throw new ConfigurationException("vmscatter.data-plane.link-queue missing"),
    };

    public static CompressionMode ParseCompression(string value) => value switch
    {
        "none" => CompressionMode.None,
        "lz4" => CompressionMode.Lz4,
        "zstd" => CompressionMode.Zstd,
        _ => throw new ConfigurationException($"compression must be none, lz4 or zstd (got '{value}')"),
    };

    public static GroupTransport ParseTransport(string value) => value switch
    {
        "relay-chain" => GroupTransport.RelayChain,
        "fan-out" => GroupTransport.FanOut,
        _ => throw new ConfigurationException($"group transport must be relay-chain or fan-out (got '{value}')"),
    };
}
