using Akka.Configuration;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Net;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Units;

namespace VMScatter.Cluster.Source;

/// <summary>vmscatter.source and vmscatter.data-plane, read once per node. (max-rounds and downtime-target are per-migration defaults: see MigrationOptions.)</summary>
public sealed record SourceSettings(
    int DedupShards,
    int SketchSize,
    long AssumedRateBytesPerSecond,
    TimeSpan ProgressInterval,
    TimeSpan RegistrationInterval,
    DataPlaneOptions DataPlane,
    TimeSpan HandoverReserve,
    TimeSpan DecisionTimeout)
{
    public static SourceSettings From(Config config) => new(
        config.GetInt("vmscatter.source.dedup-shards"),
        config.GetInt("vmscatter.source.sketch-size"),
        config.GetByteSize("vmscatter.source.assumed-rate") ?? throw new ConfigurationException("vmscatter.source.assumed-rate missing"),
        config.GetTimeSpan("vmscatter.source.progress-interval"),
        config.GetTimeSpan("vmscatter.source.registration-interval"),
        DataPlaneSettings.From(config),
        config.GetTimeSpan("vmscatter.source.handover-reserve"),
        config.GetTimeSpan("vmscatter.source.decision-timeout"));
}

public static class DataPlaneSettings
{
    public static DataPlaneOptions From(Config config) => new()
    {
        MaxPayloadBytes = (int)(config.GetByteSize("vmscatter.data-plane.max-payload") ?? throw new ConfigurationException("vmscatter.data-plane.max-payload missing")),
        Compression = Choice<CompressionMode>(config, "vmscatter.data-plane.compression"),
        Transport = Choice<GroupTransport>(config, "vmscatter.data-plane.group-transport"),
        ConnectTimeout = config.GetTimeSpan("vmscatter.data-plane.connect-timeout"),
        WriteTimeout = config.GetTimeSpan("vmscatter.data-plane.write-timeout"),
        ReadTimeout = config.GetTimeSpan("vmscatter.data-plane.read-timeout"),
        RoundTimeout = config.GetTimeSpan("vmscatter.data-plane.round-timeout"),
        MaxConnections = config.GetInt("vmscatter.data-plane.max-connections"),
        HandshakeTimeout = config.GetTimeSpan("vmscatter.data-plane.handshake-timeout"),
        LinkQueueBytes = config.GetByteSize("vmscatter.data-plane.link-queue") ?? throw new ConfigurationException("vmscatter.data-plane.link-queue missing"),
        Place = Place(config.GetString("vmscatter.data-plane.network-namespace")),
    };

    private static NetworkPlace Place(string? name)
    {
        try { return NetworkPlace.Named(name); }
        catch (ArgumentException e) { throw new ConfigurationException($"vmscatter.data-plane.network-namespace: {e.Message}"); }
    }

    /// <summary>A policy setting, spelled as <see cref="EnumNames{T}"/> derives it.</summary>
    public static T Choice<T>(Config config, string path) where T : struct, Enum
    {
        try { return EnumNames<T>.Parse(config.GetString(path), path); }
        catch (FormatException e) { throw new ConfigurationException(e.Message); }
    }
}
