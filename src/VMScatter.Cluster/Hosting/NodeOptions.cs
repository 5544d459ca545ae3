using VMScatter.Domain;

namespace VMScatter.Cluster.Hosting;

/// <summary>How to start one cluster node. Anything not set here comes from HOCON.</summary>
public sealed record NodeOptions
{
    public const string SystemName = "vmscatter";

    public required IReadOnlyList<string> Roles { get; init; }
    public int Port { get; init; }
    public string Hostname { get; init; } = "127.0.0.1";
    public IReadOnlyList<string> Seeds { get; init; } = [];
    public string? HostId { get; init; }
    public string? ConfigFile { get; init; }

    /// <summary>Extra HOCON appended after everything else (tests, the demo).</summary>
    public string ExtraHocon { get; init; } = "";

    /// <summary>VMs running on this node if it has the source role.</summary>
    public IReadOnlyList<IMigratableVm> SourceVms { get; init; } = [];

    /// <summary>How this node hosts arriving VMs if it has the target role.</summary>
    public ITargetBackend? TargetBackend { get; init; }

    /// <summary>Overrides vmscatter.target.capacity.</summary>
    public long? TargetCapacityBytes { get; init; }

    /// <summary>Overrides the journal connection string (vmscatter.persistence.connection-string).</summary>
    public string? JournalConnectionString { get; init; }

    /// <summary>
    /// Seeds as Akka addresses; "host:port" is short for akka.tcp://vmscatter@host:port, or akka.ssl.tcp://vmscatter@host:port
    /// with <paramref name="tls"/> (vmscatter.security.certificate set).
    /// </summary>
    public static string SeedAddress(string seed, bool tls = false)
    {
        if (seed.StartsWith("akka.tcp://", StringComparison.Ordinal) || seed.StartsWith("akka.ssl.tcp://", StringComparison.Ordinal)) return seed;
        int colon = seed.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(seed[(colon + 1)..], out int port) || port is <= 0 or > 65535)
            throw new ArgumentException($"seed '{seed}' is not host:port or an akka.tcp:// (akka.ssl.tcp://) address");
        return $"akka.{(tls ? "ssl." : "")}tcp://{SystemName}@{seed[..colon]}:{port}";
    }
}
