using System.CommandLine;
using VMScatter.Cli.View;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter migrate`: join a running cluster as a console node, submit a migration, follow it.</summary>
public static class MigrateCommand
{
    public static Command Create()
    {
        var seeds = new Option<string[]>("--seeds") { Description = "Seed nodes of the running cluster, host:port", Required = true, AllowMultipleArgumentsPerToken = true };
        var source = new Option<string?>("--source") { Description = "Source host id (default: the only registered source)" };
        var targets = new Option<string[]>("--targets") { Description = "Target host ids (default: every registered target)", AllowMultipleArgumentsPerToken = true };
        var vmIds = new Option<string[]>("--vm") { Description = "VM ids to migrate (default: all on the source)", AllowMultipleArgumentsPerToken = true };
        var joinTimeout = new Option<int?>("--join-timeout") { Description = "Seconds to wait for the seeds (default: vmscatter.node.join-timeout)" };
        var hostname = new Option<string>("--hostname") { Description = "Address the cluster reaches this console by (its node joins the cluster while it follows the migration)", DefaultValueFactory = _ => "127.0.0.1" };
        var wait = new Option<int>("--wait-seconds") { Description = "How long to wait for the scheduler and hosts", DefaultValueFactory = _ => 30 };
        var detach = new Option<bool>("--detach") { Description = "Submit through a cluster client (never joining), print the migration id and exit; follow it with `status --follow ID`" };
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
                try { NodeOptions.SeedAddress(s); } catch (ArgumentException e) { throw new UserError(e.Message); }
            var configFile = parse.GetValue(config);
            if (configFile is not null && !File.Exists(configFile)) throw new UserError($"--config: {configFile} does not exist");
            var options = shared.Resolve(parse, NodeConfig.Build(null, ""));
            // Ids are checked before anything connects: a bad one is the user's error, not the cluster's.
            HostId? namedSource = parse.GetValue(source) is { } named ? MigrationOptionSet.Id<HostId>(named, "--source") : null;
            var targetIds = (parse.GetValue(targets) ?? []).Select(t => MigrationOptionSet.Id<HostId>(t, "--targets")).ToArray();
            var vms = (parse.GetValue(vmIds) ?? []).Select(v => MigrationOptionSet.Id<VmId>(v, "--vm")).ToArray();
            var timeout = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(wait)));
            if (parse.GetValue(detach))
                return await Detach(seedList, parse.GetValue(hostname)!, namedSource, targetIds, vms, options, timeout, configFile, cancellationToken);
            // Before the node starts: with --json -, its log must already go to standard error.
            var output = shared.Output(parse);
            // The console's own node is a throwaway client: its remoting warnings would only repeat the error below.
            await using var node = await VmScatterNode.StartAsync(new NodeOptions { Roles = ["console"], Seeds = seedList, HostId = "console", Hostname = parse.GetValue(hostname)!, ConfigFile = configFile, ExtraHocon = NodeCommand.JoinTimeout(parse.GetValue(joinTimeout)) + "\nakka.loglevel = ERROR" }, cancellationToken);
            var hosts = await MigrationClient.WaitForHostsAsync(node.SchedulerProxy, 1, 1, timeout, cancellationToken);
            var sourceId = namedSource ?? (hosts.Sources.Count == 1 ? hosts.Sources[0]
                : throw new UserError($"several sources are registered ({string.Join(", ", hosts.Sources)}); name one with --source"));
            var request = new StartMigration(MigrationId.New(), sourceId, targetIds, vms, options);
            var timeline = new MigrationTimeline();
            var outcome = await MigrationView.FollowAsync(output, onEvent =>
                MigrationClient.RunAsync(node.System, node.SchedulerProxy, request, timeline.Recording(onEvent), timeout, cancellationToken));
            return DemoCommand.Finish(outcome, parse.GetValue(shared.Json), output, plot, timeline);
        });
        return command;
    }

    /// <summary>`--detach`: the request goes through a cluster client; the id is all this prints (for scripts and `status --follow`).</summary>
    private static async Task<int> Detach(string[] seeds, string hostname, HostId? namedSource, HostId[] targets, VmId[] vms, MigrationOptions options, TimeSpan timeout, string? configFile, CancellationToken cancellationToken)
    {
        await using var client = AdminClient.Start(seeds, hostname, timeout, configFile);
        var hosts = await DetachedMigration.WaitForHostsAsync(client, timeout, cancellationToken);
        var sourceId = namedSource ?? (hosts.Sources.Count == 1 ? hosts.Sources[0]
            : throw new UserError($"several sources are registered ({string.Join(", ", hosts.Sources)}); name one with --source"));
        var request = new StartMigration(MigrationId.New(), sourceId, targets, vms, options);
        if (await DetachedMigration.SubmitAsync(client, request, cancellationToken) is { } rejected) throw new UserError($"migration rejected: {rejected}");
        Console.WriteLine(request.MigrationId);
        return ExitCodes.Success;
    }
}
