using System.CommandLine;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Domain;

namespace VMScatter.Cli.Commands;

/// <summary>
/// The options every admin command (status, list, show, cancel) shares: where the cluster is (the same --seeds as
/// `migrate`), the console's own address, a bounded wait, and --json for machine output on stdout only.
/// </summary>
public sealed class AdminOptionSet
{
    public Option<string[]> Seeds { get; } = new("--seeds") { Description = "Nodes of the running cluster, host:port (any node answers)", Required = true, AllowMultipleArgumentsPerToken = true };
    public Option<string> Hostname { get; } = new("--hostname") { Description = "Address the cluster reaches this console by (it never joins the cluster)", DefaultValueFactory = _ => "127.0.0.1" };
    public Option<int> Timeout { get; } = new("--timeout") { Description = "Seconds to wait for the cluster's answer", DefaultValueFactory = _ => 10 };
    public Option<bool> Json { get; } = new("--json") { Description = "Print JSON only (for scripts)" };
    public Option<string?> Config { get; } = new("--config") { Description = "Extra HOCON file layered over hocon/*.conf (e.g. vmscatter.security.* for a cluster on TLS)" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Seeds, Hostname, Timeout, Json, Config }) command.Options.Add(o);
    }

    /// <summary>Checks the options (a one-line error on bad input) and starts the console's cluster client.</summary>
    public AdminClient Connect(ParseResult parse)
    {
        var seeds = parse.GetValue(Seeds)!;
        foreach (var s in seeds)
            try { NodeOptions.SeedAddress(s); } catch (ArgumentException e) { throw new UserError($"--seeds: {e.Message}"); }
        int seconds = parse.GetValue(Timeout);
        if (seconds < 1) throw new UserError("--timeout must be at least 1 second");
        if (parse.GetValue(Config) is { } file && !File.Exists(file)) throw new UserError($"--config: {file} does not exist");
        return AdminClient.Start(seeds, parse.GetValue(Hostname)!, TimeSpan.FromSeconds(seconds), parse.GetValue(Config));
    }

    /// <summary>A migration id argument: a GUID, as `migrate` and `list` print it.</summary>
    public static MigrationId MigrationIdOf(string value)
    {
        try { return MigrationId.Create(value); }
        catch (FormatException e) { throw new UserError(e.Message); }
    }
}
