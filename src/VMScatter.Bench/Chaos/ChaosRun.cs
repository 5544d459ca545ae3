using System.Diagnostics;
using Akka.Actor;
using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;
using VMScatter.Domain.Reports;

namespace VMScatter.Bench.Chaos;

/// <summary>One chaos run's outcome. <paramref name="Logs"/>: the run's directory, kept when an invariant failed.</summary>
public sealed record ChaosRunResult(int Run, KilledNode Killed, string Moment, int? MigrateExit, RunVerdict Verdict, string? Logs);

/// <summary>
/// One run: a fresh cluster, a `migrate` process, a node of <c>role</c> killed -9 at a random moment after placement
/// and restarted; then, once migrate ended and the hosts settled, what every live host runs against the journal
/// (<see cref="InvariantChecker"/>). Every process it starts is killed before it returns.
/// </summary>
public static class ChaosRun
{
    private static readonly TimeSpan MigrateTimeout = TimeSpan.FromSeconds(240);
    private static readonly TimeSpan SampleEvery = TimeSpan.FromMilliseconds(250);

    public static async Task<ChaosRunResult> ExecuteAsync(ChaosOptions o, int run, ChaosRole role, Random rng, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        string dir = Path.Combine(o.WorkDirectory, $"run-{run:D2}");
        Directory.CreateDirectory(dir);
        string config = Path.Combine(dir, "cluster.conf");
        await File.WriteAllTextAsync(config, Config(o), ct).ConfigureAwait(false);
        string reportPath = Path.Combine(dir, "report.json");

        var problems = new List<string>();
        var tracker = new PauseTracker();
        using var stopSampling = new CancellationTokenSource();
        Task sampling = Task.CompletedTask;
        ChaosCluster? cluster = null;
        VmScatterNode? console = null;
        VmScatterProcess? migrate = null;
        var killed = new KilledNode("", role);
        string moment = "not killed";
        int? exit = null;
        IReadOnlyList<string> vms = [];
        MigrationReport? report = null;
        JournalView? journal = null;
        (IReadOnlyList<HostView> Answered, IReadOnlyList<string> Silent) hosts = ([], []);
        IReadOnlyList<string> exits = [];
        try
        {
            cluster = await ChaosCluster.StartAsync(o, dir, config, clock).ConfigureAwait(false);
            // The harness's own console node: it asks the hosts and the scheduler; same failure detection as the cluster.
            console = await VmScatterNode.StartAsync(new NodeOptions
            {
                Roles = ["console"], Seeds = cluster.Seeds, HostId = "chaos", ConfigFile = config, ExtraHocon = "akka.loglevel = OFF", // its job is to ask; a host that does not answer is counted, not logged
            }, ct).ConfigureAwait(false);
            await MigrationClient.WaitForHostsAsync(console.SchedulerProxy, 1, o.Targets, TimeSpan.FromSeconds(60), ct).ConfigureAwait(false);
            var (start, _) = await InventoryProbe.AskAsync(console.System, cluster.Nodes, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            vms = start.FirstOrDefault(h => h.Role == ChaosRole.Source)?.Running ?? [];
            if (vms.Count != o.Vms) throw new InvalidOperationException($"the source runs {vms.Count} VMs before the migration, not {o.Vms}");
            var system = console.System;
            sampling = Task.Run(() => SampleAsync(system, cluster, tracker, clock, stopSampling.Token), CancellationToken.None);

            migrate = VmScatterProcess.Start(o.VmscatterDll, "migrate", Path.Combine(dir, "migrate.log"), clock,
                ["migrate", "--seeds", .. cluster.Seeds, "--link-rate", o.LinkRate, "--max-rounds", o.MaxRounds.ToString(), "--json", reportPath, "--wait-seconds", "60"]);
            // "placed (traffic-aware): vm-000→target-2, ...": the kill comes after it, so a target killed is one that receives VMs.
            string placed = await migrate.WaitForLineAsync(l => l.StartsWith("placed ("), TimeSpan.FromSeconds(120)).ConfigureAwait(false)
                ?? throw new InvalidOperationException($"migrate placed nothing: {string.Join(" | ", migrate.Lines.TakeLast(3))}");
            var placedOn = placed[(placed.IndexOf("): ", StringComparison.Ordinal) + 3)..].Split(", ").Select(p => p.Split('→')[1]).Distinct().Order().ToArray();
            string victim = role switch
            {
                ChaosRole.Scheduler => $"scheduler-{rng.Next(1, 3)}",
                ChaosRole.Source => "source-1",
                _ => placedOn[rng.Next(placedOn.Length)],
            };
            var delay = TimeSpan.FromMilliseconds(rng.NextDouble() * o.MaxKillDelay.TotalMilliseconds);
            // The random moment is the experiment, not a wait for something.
            await Task.Delay(delay, ct).ConfigureAwait(false);
            moment = Moment(delay, migrate);
            var killedProcess = cluster[victim].Process;
            cluster.Kill(victim);
            killed = new KilledNode(victim, role);
            o.Log($"  killed {victim} {moment}");
            var restart = cluster.RestartAsync(victim);

            exit = await migrate.WaitForExitAsync(MigrateTimeout).ConfigureAwait(false);
            if (exit is null) problems.Add($"migrate did not end within {MigrateTimeout.TotalSeconds:0} s");
            else if (exit is not (0 or 1)) problems.Add($"migrate exited {exit}: {string.Join(" | ", migrate.Lines.TakeLast(2))}");
            if (File.Exists(reportPath)) report = MigrationReport.FromJson(await File.ReadAllTextAsync(reportPath, ct).ConfigureAwait(false));
            else problems.Add("migrate wrote no report");

            try { await restart.ConfigureAwait(false); }
            catch (InvalidOperationException e) { problems.Add($"{victim} did not come back: {e.Message}"); }
            if (report is not null && MigrationId.TryParse(report.MigrationId, out var id))
                journal = await JournalAsync(console.SchedulerProxy, id, TimeSpan.FromSeconds(60)).ConfigureAwait(false);

            hosts = await SettleAsync(system, cluster, o.DecisionTimeout + o.ReconcileTimeout + TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            // A restarted source or target registers again (a second incarnation is refused its id while the first is not gone).
            var expected = cluster.Nodes.Where(n => n.Role != ChaosRole.Scheduler).Select(n => n.HostId).ToArray();
            var missing = await UnregisteredAsync(console.SchedulerProxy, expected, TimeSpan.FromSeconds(20)).ConfigureAwait(false);
            if (missing.Count > 0) problems.Add($"not registered with the scheduler after the run: {string.Join(", ", missing)}");
            await stopSampling.CancelAsync().ConfigureAwait(false);
            await sampling.ConfigureAwait(false);
            exits = cluster.Exited(killedProcess);
        }
        catch (Exception e) when (e is InvalidOperationException or ConsoleTimeoutException or ClusterJoinException or IOException or System.Text.Json.JsonException)
        {
            problems.Add(e.Message);
        }
        finally
        {
            await stopSampling.CancelAsync().ConfigureAwait(false);
            await sampling.ConfigureAwait(false);
            // The console leaves while the cluster is still there to see it go; then every process goes.
            if (console is not null) await console.DisposeAsync().ConfigureAwait(false);
            if (migrate is not null) await migrate.DisposeAsync().ConfigureAwait(false);
            if (cluster is not null) await cluster.DisposeAsync().ConfigureAwait(false);
        }

        var verdict = InvariantChecker.Check(new RunObservation(vms, "source-1", killed, hosts.Answered, hosts.Silent, journal, report,
            tracker.Longest, o.PauseBound.TotalMilliseconds, exits, problems));
        if (verdict.Held) Directory.Delete(dir, recursive: true);
        return new ChaosRunResult(run, killed, moment, exit, verdict, verdict.Held ? null : dir);
    }

    private static string Config(ChaosOptions o) => $"""
        akka.cluster.failure-detector.acceptable-heartbeat-pause = 3s
        akka.cluster.split-brain-resolver.stable-after = 3s
        vmscatter.persistence.provider-name = "PostgreSQL.15"
        vmscatter.persistence.connection-string = {NodeConfig.Quote(o.PostgresConnectionString)}
        vmscatter.scheduler.persistence-id = "chaos-{Guid.NewGuid():N}"
        vmscatter.scheduler.reconcile-timeout = {o.ReconcileTimeout.TotalSeconds:0}s
        vmscatter.source.decision-timeout = {o.DecisionTimeout.TotalSeconds:0}s
        {o.ExtraHocon}
        """;

    /// <summary>When the kill landed: after placement, how many VMs were handed over by then, the last round migrate printed.</summary>
    private static string Moment(TimeSpan delay, VmScatterProcess migrate)
    {
        if (migrate.HasExited) return $"+{delay.TotalSeconds:0.0} s, after migrate ended";
        var lines = migrate.Lines;
        int handed = lines.Count(l => l.StartsWith("handed over "));
        string round = lines.LastOrDefault(l => l.StartsWith("round ")) is { } r ? r[..r.IndexOf(':')] : "before round 0";
        return $"+{delay.TotalSeconds:0.0} s, {round}, {handed} handed over";
    }

    private static async Task SampleAsync(ActorSystem system, ChaosCluster cluster, PauseTracker tracker, Stopwatch clock, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            double at = clock.Elapsed.TotalMilliseconds;
            var (answered, _) = await InventoryProbe.AskAsync(system, cluster.Nodes, TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            tracker.Observe(at, answered.SelectMany(h => h.Running.Concat(h.Paused)), answered.SelectMany(h => h.Paused).ToHashSet());
            try { await Task.Delay(SampleEvery, stop).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>Inventories once every live host answers and none holds a VM paused, or as they are when <paramref name="bound"/> is up.</summary>
    private static async Task<(IReadOnlyList<HostView>, IReadOnlyList<string>)> SettleAsync(ActorSystem system, ChaosCluster cluster, TimeSpan bound)
    {
        var until = Stopwatch.StartNew();
        while (true)
        {
            var (answered, silent) = await InventoryProbe.AskAsync(system, cluster.Nodes, TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            if ((silent.Count == 0 && answered.All(h => h.Paused.Count == 0)) || until.Elapsed > bound) return (answered, silent);
            await Task.Delay(TimeSpan.FromMilliseconds(500)).ConfigureAwait(false);
        }
    }

    /// <summary>The journal's final word: polled through the scheduler proxy until the migration ended there (or the time is up).</summary>
    private static async Task<JournalView?> JournalAsync(IActorRef proxy, MigrationId id, TimeSpan bound)
    {
        var until = Stopwatch.StartNew();
        MigrationStatus? last = null;
        while (until.Elapsed < bound)
        {
            try { last = await proxy.Ask<MigrationStatus>(new GetMigrationStatus(id), TimeSpan.FromSeconds(3)).ConfigureAwait(false); }
            catch (AskTimeoutException) { }
            if (last is { Phase: MigrationPhase.Completed or MigrationPhase.Aborted }) break;
            await Task.Delay(TimeSpan.FromMilliseconds(500)).ConfigureAwait(false);
        }
        if (last is null) return null;
        var targetOf = last.Report?.PerVm.ToDictionary(v => v.Id, v => v.Target) ?? new Dictionary<string, string>();
        return new JournalView(last.Phase.ToString(), last.HandedOver.ToDictionary(v => v.Value, v => targetOf.GetValueOrDefault(v.Value, "?")));
    }

    /// <summary>
    /// Hosts not registered with the scheduler within <paramref name="bound"/>. A restarted host is refused its id until the
    /// scheduler saw its previous incarnation go, then registers at its next announcement (every 2 s): polled, not read once.
    /// </summary>
    private static async Task<IReadOnlyList<string>> UnregisteredAsync(IActorRef proxy, IReadOnlyList<string> expected, TimeSpan bound)
    {
        var until = Stopwatch.StartNew();
        IReadOnlyList<string> missing = expected;
        while (true)
        {
            try
            {
                var hosts = await proxy.Ask<RegisteredHosts>(GetRegisteredHosts.Instance, TimeSpan.FromSeconds(3)).ConfigureAwait(false);
                missing = expected.Except(hosts.Sources.Concat(hosts.Targets).Select(h => h.Value)).ToArray();
            }
            catch (AskTimeoutException) { }
            if (missing.Count == 0 || until.Elapsed > bound) return missing;
            await Task.Delay(TimeSpan.FromMilliseconds(500)).ConfigureAwait(false);
        }
    }
}
