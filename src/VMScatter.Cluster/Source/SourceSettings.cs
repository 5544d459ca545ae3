using Akka.Configuration;
using System.Net;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Multicast;
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
    TimeSpan DecisionTimeout,
    TimeSpan PauseSendFloor)
{
    public static SourceSettings From(Config config) => new(
        config.GetInt("vmscatter.source.dedup-shards"),
        config.GetInt("vmscatter.source.sketch-size"),
        config.GetByteSize("vmscatter.source.assumed-rate") ?? throw new ConfigurationException("vmscatter.source.assumed-rate missing"),
        config.GetTimeSpan("vmscatter.source.progress-interval"),
        config.GetTimeSpan("vmscatter.source.registration-interval"),
        DataPlaneSettings.From(config),
        config.GetTimeSpan("vmscatter.source.handover-reserve"),
        config.GetTimeSpan("vmscatter.source.decision-timeout"),
        config.GetTimeSpan("vmscatter.source.pause-send-floor"));
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
        Multicast = Multicast(config),
    };

    /// <summary>vmscatter.data-plane.multicast, checked.</summary>
    public static MulticastSettings Multicast(Config config)
    {
        const string at = "vmscatter.data-plane.multicast";
        string iface = config.GetString($"{at}.interface");
        if (!IPAddress.TryParse(config.GetString($"{at}.group"), out var group)) throw new ConfigurationException($"{at}.group: not an IP address");
        IPAddress? local = null;
        if (iface.Length > 0 && !IPAddress.TryParse(iface, out local)) throw new ConfigurationException($"{at}.interface: not an IP address");
        var settings = new MulticastSettings
        {
            Group = group,
            PortBase = config.GetInt($"{at}.port-base"),
            Ports = config.GetInt($"{at}.ports"),
            Channels = config.GetInt($"{at}.channels"),
            Interface = local,
            MaxMessageBytes = (int)(config.GetByteSize($"{at}.max-message") ?? throw new ConfigurationException($"{at}.max-message missing")),
            ReceiverTimeout = config.GetTimeSpan($"{at}.receiver-timeout"),
            DropFraction = config.GetDouble($"{at}.drop-fraction"),
        };
        return settings.Problem() is { } bad ? throw new ConfigurationException($"{at}: {bad}") : settings;
    }

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
