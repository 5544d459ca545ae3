using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cli.Commands;

/// <summary>
/// `vmscatter migrate`: submit a migration to a running cluster and follow it to the handover, through a cluster client
/// (<see cref="AdminClient"/>) as the other console commands: the console never joins the cluster, so killing it downs
/// nothing and stops no migration (follow one again with `status --follow ID`).
/// </summary>
public static class MigrateCommand
{
    public static Command Create()
    {
        var seeds = new Option<string[]>("--seeds") { Description = "Nodes of the running cluster, host:port (any node answers)", Required = true, AllowMultipleArgumentsPerToken = true };
        var source = new Option<string?>("--source") { Description = "Source host id (default: the only registered source)" };
        var targets = new Option<string[]>("--targets") { Description = "Target host ids (default: every registered target)", AllowMultipleArgumentsPerToken = true };
        var vmIds = new Option<string[]>("--vm") { Description = "VM ids to migrate (default: all on the source)", AllowMultipleArgumentsPerToken = true };
        var joinTimeout = new Option<int?>("--join-timeout") { Description = "Seconds to wait for each answer of the cluster, the first one included (default: --wait-seconds)" };
        var hostname = new Option<string>("--hostname") { Description = "Address the cluster reaches this console by (it never joins the cluster)", DefaultValueFactory = _ => "127.0.0.1" };
        var wait = new Option<int>("--wait-seconds") { Description = "How long to wait for the scheduler and hosts", DefaultValueFactory = _ => 30 };
        var detach = new Option<bool>("--detach") { Description = "Print the migration id once it is accepted and exit; follow it with `status --follow ID`" };
        var config = new Option<string?>("--config") { Description = "Extra HOCON file layered over hocon/*.conf (e.g. vmscatter.security.* for a cluster on TLS)" };
        var shared = new MigrationOptionSet();
        var command = new Command("migrate", "Submit a migration to a running VMScatter cluster and follow it to the handover");
        foreach (var o in new Option[] { seeds, source, targets, vmIds, joinTimeout, hostname, wait, detach, config }) command.Options.Add(o);
        shared.AddTo(command);

        command.SetAction(async (parse, cancellationToken) =>
        {
            var plot = shared.PlotPath(parse);
            var seedList = parse.GetValue(seeds)!;
            foreach (var s in seedList)
                try { NodeOptions.SeedAddress(s); } catch (ArgumentException e) { throw new UserError($"--seeds: {e.Message}"); }
            var configFile = parse.GetValue(config);
            if (configFile is not null && !File.Exists(configFile)) throw new UserError($"--config: {configFile} does not exist");
            var options = shared.Resolve(parse, NodeConfig.Build(null, ""));
            // Ids are checked before anything connects: a bad one is the user's error, not the cluster's.
            HostId? namedSource = parse.GetValue(source) is { } named ? MigrationOptionSet.Id<HostId>(named, "--source") : null;
            var targetIds = (parse.GetValue(targets) ?? []).Select(t => MigrationOptionSet.Id<HostId>(t, "--targets")).ToArray();
            var vms = (parse.GetValue(vmIds) ?? []).Select(v => MigrationOptionSet.Id<VmId>(v, "--vm")).ToArray();
            var timeout = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(wait)));
            if (parse.GetValue(joinTimeout) is < 1) throw new UserError("--join-timeout must be at least 1 second");
            var answerTimeout = parse.GetValue(joinTimeout) is { } j ? TimeSpan.FromSeconds(j) : timeout;
            // Before anything prints: with --json -, standard output carries the report alone.
            var output = parse.GetValue(detach) ? null : shared.Output(parse);
            await using var client = AdminClient.Start(seedList, parse.GetValue(hostname)!, answerTimeout, configFile);
            var hosts = await DetachedMigration.WaitForHostsAsync(client, timeout, cancellationToken);
            var sourceId = namedSource ?? (hosts.Sources.Count == 1 ? hosts.Sources[0]
                : throw new UserError($"several sources are registered ({string.Join(", ", hosts.Sources)}); name one with --source"));
            var request = new StartMigration(MigrationId.New(), sourceId, targetIds, vms, options);
            if (output is null)
            {
                // --detach: the id is all this prints (for scripts and `status --follow`).
                if (await DetachedMigration.SubmitAsync(client, request, cancellationToken) is { } rejected) throw new UserError($"migration rejected: {rejected}");
                Console.WriteLine(request.MigrationId);
                return ExitCodes.Success;
            }
            var timeline = new MigrationTimeline();
            var outcome = await MigrationView.FollowAsync(output, onEvent =>
                MigrationClient.RunAsync(client, request, timeline.Recording(onEvent), timeout, cancellationToken));
            return DemoCommand.Finish(outcome, parse.GetValue(shared.Json), output, plot, timeline);
        });
        return command;
    }
}
