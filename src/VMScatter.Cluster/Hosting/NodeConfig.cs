using System.Text;
using Akka.Cluster.Tools.Client;
using Akka.Cluster.Tools.PublishSubscribe;
using Akka.Cluster.Tools.Singleton;
using Akka.Configuration;
using Akka.Persistence.Sql;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Builds a node's configuration: hocon/vmscatter.conf and hocon/persistence.conf, then an optional per-node file,
/// then the command line's overrides. The texts are parsed as one document, so a later value wins and
/// substitutions (the journal's connection string, say) see the overridden value.
/// </summary>
public static class NodeConfig
{
    public static string HoconDirectory => Path.Combine(AppContext.BaseDirectory, "hocon");

    public static Config Build(string? nodeConfigFile, string overrides)
    {
        var text = new StringBuilder();
        foreach (var file in new[] { "vmscatter.conf", "persistence.conf" })
        {
            var path = Path.Combine(HoconDirectory, file);
            if (!File.Exists(path)) throw new FileNotFoundException($"missing configuration file {path}");
            text.AppendLine(File.ReadAllText(path));
        }
        if (nodeConfigFile is not null)
        {
            if (!File.Exists(nodeConfigFile)) throw new FileNotFoundException($"configuration file {nodeConfigFile} does not exist");
            text.AppendLine(File.ReadAllText(nodeConfigFile));
        }
        // VMSCATTER_LOGLEVEL=DEBUG: a node's Debug lines (a handover's per-step timings) in a bench or demo, whose nodes
        // take no config file. Before the overrides: a node that mutes its log (the console's) stays muted.
        if (Environment.GetEnvironmentVariable("VMSCATTER_LOGLEVEL") is { Length: > 0 } level) text.AppendLine($"akka.loglevel = {Quote(level)}");
        text.AppendLine(overrides);
        return ConfigurationFactory.ParseString(text.ToString())
            .WithFallback(ClusterSingleton.DefaultConfig())
            // The receptionist on nodes, the ClusterClient (and its message serializer) on the console.
            .WithFallback(ClusterClientReceptionist.DefaultConfig())
            .WithFallback(DistributedPubSub.DefaultConfig())
            .WithFallback(SqlPersistence.DefaultConfiguration);
    }

    /// <summary>A HOCON string literal.</summary>
    public static string Quote(string value) => "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
}
