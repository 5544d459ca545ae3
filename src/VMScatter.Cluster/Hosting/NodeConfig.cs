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
