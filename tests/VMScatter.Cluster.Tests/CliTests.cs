using System.Diagnostics;
using VMScatter.Domain.Reports;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>The admin console as a user runs it: a separate process, its exit code, what it prints.</summary>
public class CliTests
{
    /// <summary>`migrate --detach` (the id is all it prints), then `status --follow ID --json` in another console process: the report, of 2 VMs, verified.</summary>
    private static async Task<(string Id, MigrationReport Report)> DetachAndFollowAsync(string seed, int waitSeconds, params string[] selection)
    {
        var detached = await Run(["migrate", "--seeds", seed, .. selection, "--detach", "--wait-seconds", waitSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        Assert.True(detached.Exit == 0, detached.Out + detached.Err);
        string id = detached.Out.Trim();
        Assert.True(Guid.TryParse(id, out _), detached.Out);
        var followed = await Run("status", "--seeds", seed, "--follow", id, "--json");
        Assert.True(followed.Exit == 0, followed.Out + followed.Err);
        var report = MigrationReport.FromJson(followed.Out);
        Assert.Equal((id, 2, true), (report.MigrationId, report.Vms, report.Verified));
        return (id, report);
    }

    private static async Task<(int Exit, string Out, string Err)> Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "vmscatter.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    private static void AssertOneLineError((int Exit, string Out, string Err) r, string expected)
    {
        Assert.Equal(2, r.Exit);
        var lines = r.Err.Trim().Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", r.Err + r.Out); // no stack trace
    }

    [Fact]
    public async Task An_unknown_option_is_a_one_line_error_with_exit_code_2() =>
        AssertOneLineError(await Run("demo", "--frobnicate"), "--frobnicate");

    [Fact]
    public async Task An_unknown_backend_or_codec_is_refused_before_anything_starts()
    {
        AssertOneLineError(await Run("demo", "--backend", "vmware"), "--backend must be one of synthetic, qemu (got 'vmware')");
        AssertOneLineError(await Run("bench", "--backend", "qemu", "--compression", "brotli"), "--compression must be one of none, lz4, zstd, adaptive (got 'brotli')");
        AssertOneLineError(await Run("bench", "--transport", "fan-out"), "--transport fan-out: the scenario bench adds only a multicast row");
        AssertOneLineError(await Run("demo", "--transport", "carrier-pigeon"), "--transport must be one of fan-out, relay-chain, multicast (got 'carrier-pigeon')");
    }

    [Fact]
    public async Task An_unknown_workload_is_refused_before_any_guest_boots()
    {
        AssertOneLineError(await Run("bench", "--backend", "qemu", "--workload", "bitcoin"), "--workload must be one of dd, idle, compile, database, mixed or all (got 'bitcoin')");
        AssertOneLineError(await Run("bench", "--workload", "idle"), "--workload is for --backend qemu");
    }

    [Fact]
    public async Task An_id_that_could_name_a_file_elsewhere_is_refused()
    {
        AssertOneLineError(await Run("node", "--role", "target", "--host-id", "../t1"), "--host-id: host id '../t1' is not valid");
        AssertOneLineError(await Run("migrate", "--seeds", "127.0.0.1:1", "--vm", "a/b", "--join-timeout", "1"), "--vm: VM id 'a/b' is not valid");
    }

    [Fact]
    public async Task A_data_plane_address_that_is_not_this_hosts_is_a_one_line_error_once_the_node_has_joined()
    {
        string work = Directory.CreateTempSubdirectory("vmscatter-cli-dp-").FullName;
        int port = NodeProcess.FreePort();
        var scheduler = NodeProcess.Start("scheduler", "--role", "scheduler", "--port", port.ToString(), "--host-id", "scheduler-1", "--journal", Path.Combine(work, "journal.db"));
        try
        {
            await scheduler.WaitForLineAsync(l => l.StartsWith("node scheduler-1 up"), TimeSpan.FromSeconds(60));
            var r = await Run("node", "--role", "target", "--host-id", "target-1", "--seeds", $"127.0.0.1:{port}", "--capacity", "64MiB", "--data-plane-address", "10.255.255.1");
            Assert.Equal(2, r.Exit);
            Assert.StartsWith("error: the data plane cannot listen on 10.255.255.1:", r.Err.Trim().Split('\n')[^1]);
            Assert.DoesNotContain("   at ", r.Err + r.Out);
        }
        finally
        {
            await scheduler.DisposeAsync();
            Directory.Delete(work, recursive: true);
        }
    }

    [Fact]
    public async Task Guests_larger_than_this_machine_are_refused_before_anything_is_allocated() =>
        AssertOneLineError(await Run("demo", "--vms", "2", "--vm-memory", "1TiB"), "2 VMs x 1.0 TiB and 4 targets x 1.0 TiB need 6.0 TiB, but this machine has");

    [Fact]
    public async Task A_plot_file_that_is_not_png_or_svg_is_refused_before_anything_starts()
    {
        AssertOneLineError(await Run("demo", "--plot", "x.txt"), "--plot: 'x.txt' must end in .png or .svg");
        AssertOneLineError(await Run("bench", "--plot", "chart.jpg"), "--plot: 'chart.jpg' must end in .png or .svg");
        AssertOneLineError(await Run("migrate", "--seeds", "127.0.0.1:1", "--join-timeout", "1", "--plot", "t.pdf"), "--plot: 't.pdf' must end in .png or .svg");
    }

    [Fact]
    public async Task Zero_targets_is_refused() =>
        AssertOneLineError(await Run("demo", "--targets", "0"), "--targets must be at least 1");

    [Fact]
    public async Task A_bad_size_is_refused() =>
        AssertOneLineError(await Run("demo", "--vm-memory", "lots"), "--vm-memory: 'lots' is not a size");

    [Fact]
    public async Task A_vm_larger_than_any_target_is_refused_by_the_scheduler() =>
        AssertOneLineError(await Run("demo", "--vms", "2", "--vm-memory", "16MiB", "--targets", "2", "--target-capacity", "8MiB"),
            "vm-000 needs 16.0 MiB but the largest target has 8.0 MiB free");

    [Fact]
    public async Task A_seed_that_does_not_answer_is_reported_within_the_join_timeout()
    {
        var clock = Stopwatch.StartNew();
        var r = await Run("migrate", "--seeds", "127.0.0.1:9", "--join-timeout", "3", "--json", "-");
        AssertOneLineError(r, "the migration scheduler did not answer within 3s (seeds: 127.0.0.1:9)");
        Assert.Equal("", r.Out);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30));
        AssertOneLineError(await Run("migrate", "--seeds", "nowhere"), "--seeds: seed 'nowhere' is not host:port");
    }

    /// <summary>
    /// scheduler-1, source-1 and target-1, each a `vmscatter node` process, as the console tests that need a running cluster
    /// start it; disposing stops every node and removes its work directory.
    /// </summary>
    private sealed class ThreeNodeCluster : IAsyncDisposable
    {
        private readonly List<NodeProcess> _nodes = new();
        private readonly string _work;

        private ThreeNodeCluster(string work) => _work = work;

        /// <summary>The scheduler's address, the cluster's seed.</summary>
        public string Seed { get; private set; } = "";
        /// <summary>target-1's own address: a seed that is no scheduler.</summary>
        public string TargetSeed { get; private set; } = "";
        public IReadOnlyList<NodeProcess> Nodes => _nodes;
        public string Work => _work;

        public static async Task<ThreeNodeCluster> StartAsync(int vms, long vmMemoryBytes, long capacityBytes, string rack)
        {
            var cluster = new ThreeNodeCluster(Directory.CreateTempSubdirectory("vmscatter-console-").FullName);
            try
            {
                int port = NodeProcess.FreePort();
                cluster.Seed = $"127.0.0.1:{port}";
                var scheduler = NodeProcess.Start("scheduler", "--role", "scheduler", "--port", port.ToString(), "--host-id", "scheduler-1", "--journal", Path.Combine(cluster._work, "journal.db"));
                cluster._nodes.Add(scheduler);
                await scheduler.WaitForLineAsync(l => l.StartsWith("node scheduler-1 up"), TimeSpan.FromSeconds(60));
                cluster._nodes.Add(NodeProcess.Start("source-1", "--role", "source", "--seeds", cluster.Seed, "--host-id", "source-1", "--vms", vms.ToString(), "--vm-memory", $"{vmMemoryBytes >> 20}MiB"));
                int targetPort = NodeProcess.FreePort();
                cluster.TargetSeed = $"127.0.0.1:{targetPort}";
                cluster._nodes.Add(NodeProcess.Start("target-1", "--role", "target", "--seeds", cluster.Seed, "--host-id", "target-1", "--port", targetPort.ToString(), "--capacity", $"{capacityBytes >> 20}MiB", "--rack", rack));
                foreach (var n in cluster._nodes.Skip(1)) await n.WaitForLineAsync(l => l.StartsWith($"node {n.Name} up"), TimeSpan.FromSeconds(60));
                return cluster;
            }
            catch
            {
                await cluster.DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var n in _nodes) await n.DisposeAsync();
            try { Directory.Delete(_work, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// The console never joins the cluster, against one cluster (its start-up is most of the time) in two parts.
    /// 1. status, list and show answer it: a detached `migrate` of vm-000 and vm-001 followed by another console process,
    ///    then status (asked of a non-scheduler node), list, show, cancel.
    /// 2. `migrate` follows its migration (vm-002 and vm-003, on a paced link) through a cluster client: while it runs the
    ///    cluster's members are the three nodes alone, and a `kill -9` of it downs nothing and stops nothing (the migration
    ///    ends verified, as `status --follow` and `show` report it).
    /// </summary>
    [Fact]
    public async Task Status_list_show_and_migrate_are_no_members_and_killing_migrate_stops_neither_the_cluster_nor_the_migration()
    {
        const long vmMemory = 16L << 20, capacity = 128L << 20;
        await using var cluster = await ThreeNodeCluster.StartAsync(vms: 4, vmMemory, capacity, rack: "rack-a");
        string seed = cluster.Seed;

        // Part 1: status, list and show answer a console that never joins the cluster.
        // Submitted detached (the id is all it prints), followed to its report by another console process.
        var (id, report) = await DetachAndFollowAsync(seed, 30, "--vm", "vm-000", "vm-001");
        Assert.Equal(["vm-000", "vm-001"], report.PerVm.Select(v => v.Id).Order(StringComparer.Ordinal));

        // The console asks a non-scheduler node's receptionist: any member answers for the cluster.
        var status = await Run("status", "--seeds", cluster.TargetSeed, "--json");
        Assert.True(status.Exit == 0, status.Out + status.Err);
        using (var doc = System.Text.Json.JsonDocument.Parse(status.Out))
        {
            var members = doc.RootElement.GetProperty("members").GetProperty("members").EnumerateArray()
                .Where(m => !m.GetProperty("roles").EnumerateArray().Any(r => r.GetString() == "console")).ToArray();
            Assert.Equal(["scheduler", "source", "target"], members.SelectMany(m => m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()!)).Order(StringComparer.Ordinal));
            Assert.All(members, m => Assert.True(m.GetProperty("reachable").GetBoolean() && m.GetProperty("status").GetString() == "Up"));
            var hosts = doc.RootElement.GetProperty("scheduler").GetProperty("hosts").EnumerateArray().ToArray();
            Assert.Equal(["source-1", "target-1"], hosts.Select(h => h.GetProperty("hostId").GetString()));
            Assert.Equal((capacity, "rack-a"), (hosts[1].GetProperty("capacityBytes").GetInt64(), hosts[1].GetProperty("rack").GetString()));
            // Both selected VMs moved: 2 of the 4 left on the source, their memory taken on the target.
            Assert.Equal(4 - 2, hosts[0].GetProperty("vms").GetInt32());
            Assert.Equal(capacity - 2 * vmMemory, hosts[1].GetProperty("freeBytes").GetInt64());
            Assert.Empty(doc.RootElement.GetProperty("scheduler").GetProperty("migrations").EnumerateArray());
        }

        var list = await Run("list", "--seeds", seed, "--json");
        Assert.True(list.Exit == 0, list.Out + list.Err);
        using (var doc = System.Text.Json.JsonDocument.Parse(list.Out))
        {
            var listed = Assert.Single(doc.RootElement.EnumerateArray().ToArray());
            Assert.Equal(report.MigrationId, listed.GetProperty("migrationId").GetString());
            Assert.Equal(("Completed", 2, true), (listed.GetProperty("phase").GetString(), listed.GetProperty("vms").GetInt32(), listed.GetProperty("verified").GetBoolean()));
            Assert.Equal(report.BytesSent, listed.GetProperty("bytesSent").GetInt64());
            Assert.Equal(["target-1"], listed.GetProperty("targets").EnumerateArray().Select(t => t.GetString()));
        }

        var show = await Run("show", report.MigrationId, "--seeds", seed, "--json");
        Assert.True(show.Exit == 0, show.Out + show.Err);
        var shown = MigrationReport.FromJson(show.Out);
        Assert.Equal((report.MigrationId, report.BytesSent, report.Verified), (shown.MigrationId, shown.BytesSent, shown.Verified));
        // The scheduler kept what it saw over time: `show --plot` draws the timeline from the report alone.
        Assert.NotEmpty(shown.Timeline.Samples);
        Assert.Equal(shown.PerVm.Select(v => v.Id).Order(), shown.Timeline.Handovers.Select(h => h.Vm).Order());
        string png = Path.Combine(cluster.Work, "shown.png");
        var drawn = await Run("show", report.MigrationId, "--seeds", seed, "--plot", png);
        Assert.True(drawn.Exit == 0, drawn.Out + drawn.Err);
        Assert.Contains($"timeline drawn to {png}", drawn.Out);
        Assert.DoesNotContain("did not see it run", drawn.Out);
        PlotTests.AssertPng(png, Cli.View.TimelinePlot.Width, Cli.View.TimelinePlot.Height);

        AssertOneLineError(await Run("cancel", report.MigrationId, "--seeds", seed), $"migration {report.MigrationId} has already ended (completed)");
        AssertOneLineError(await Run("show", "not-an-id", "--seeds", seed), "migration id 'not-an-id' is not a GUID");

        // Part 2: `migrate` is no member, and killing it stops neither the cluster nor the migration.
        // A paced link: the transfer lasts long enough to look at the cluster while it runs.
        var migrate = NodeProcess.StartCommand("migrate", "migrate", "--seeds", seed, "--vm", "vm-002", "vm-003", "--link-rate", "16Mbit", "--max-rounds", "2", "--wait-seconds", "60");
        await using (migrate)
        {
            // The scheduler's events reach the console that is no member: its placement, then a round's progress.
            await migrate.WaitForLineAsync(l => l.StartsWith("placed ("), TimeSpan.FromSeconds(90));
            await migrate.WaitForLineAsync(l => l.StartsWith("round "), TimeSpan.FromSeconds(60));

            var during = await Run("status", "--seeds", seed, "--json");
            Assert.True(during.Exit == 0, during.Out + during.Err);
            string killedId;
            using (var doc = System.Text.Json.JsonDocument.Parse(during.Out))
            {
                var members = doc.RootElement.GetProperty("members").GetProperty("members").EnumerateArray().ToArray();
                Assert.Equal(["scheduler", "source", "target"], members.SelectMany(m => m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()!)).Order(StringComparer.Ordinal));
                Assert.All(members, m => Assert.StartsWith("akka.tcp://vmscatter@", m.GetProperty("address").GetString()));
                var running = Assert.Single(doc.RootElement.GetProperty("scheduler").GetProperty("migrations").EnumerateArray().ToArray());
                killedId = running.GetProperty("migrationId").GetString()!;
            }
            Assert.NotEqual(id, killedId);

            migrate.Kill();
            Assert.Equal(137, await migrate.WaitForExitAsync(TimeSpan.FromSeconds(10)));

            var followedKilled = await Run("status", "--seeds", seed, "--follow", killedId, "--json");
            Assert.True(followedKilled.Exit == 0, followedKilled.Out + followedKilled.Err);
            var killedReport = MigrationReport.FromJson(followedKilled.Out);
            Assert.Equal((killedId, 2, true), (killedReport.MigrationId, killedReport.Vms, killedReport.Verified));
            Assert.Equal(["vm-002", "vm-003"], killedReport.PerVm.Select(v => v.Id).Order(StringComparer.Ordinal));
            var showKilled = await Run("show", killedId, "--seeds", seed, "--json");
            Assert.True(showKilled.Exit == 0, showKilled.Out + showKilled.Err);
            Assert.Equal((killedId, true), (MigrationReport.FromJson(showKilled.Out).MigrationId, MigrationReport.FromJson(showKilled.Out).Verified));

            // Nothing went down with the console: the same three members, Up and reachable, and every node still runs.
            var after = await Run("status", "--seeds", seed, "--json");
            Assert.True(after.Exit == 0, after.Out + after.Err);
            using (var doc = System.Text.Json.JsonDocument.Parse(after.Out))
            {
                var members = doc.RootElement.GetProperty("members").GetProperty("members").EnumerateArray().ToArray();
                Assert.Equal(3, members.Length);
                Assert.All(members, m => Assert.True(m.GetProperty("reachable").GetBoolean() && m.GetProperty("status").GetString() == "Up", m.ToString()));
                // All 4 VMs have now moved: none left on the source, the memory of all 4 taken on the target.
                var hosts = doc.RootElement.GetProperty("scheduler").GetProperty("hosts").EnumerateArray().ToArray();
                Assert.Equal(["source-1", "target-1"], hosts.Select(h => h.GetProperty("hostId").GetString()));
                Assert.Equal(0, hosts[0].GetProperty("vms").GetInt32());
                Assert.Equal(capacity - 4 * vmMemory, hosts[1].GetProperty("freeBytes").GetInt64());
            }
            Assert.All(cluster.Nodes, n => Assert.False(n.HasExited, $"{n.Name} exited:\n{n.Output}"));
        }
    }

    [Fact]
    public async Task Bench_algorithms_reports_ratios_to_the_optimum_and_the_baselines()
    {
        var json = Path.Combine(Path.GetTempPath(), $"vmscatter-algo-{Guid.NewGuid():N}.json");
        var r = await Run("bench", "algorithms", "--instances", "12", "--large-vms", "120", "--large-hosts", "8", "--json", json);
        Assert.True(r.Exit == 0, r.Out + r.Err);
        string written = await File.ReadAllTextAsync(json);
        File.Delete(json);
        using var doc = System.Text.Json.JsonDocument.Parse(written);
        var small = doc.RootElement.GetProperty("small").EnumerateArray().ToDictionary(e => e.GetProperty("strategy").GetString()!);
        var ours = small["traffic-aware"];
        Assert.Equal(12, ours.GetProperty("instances").GetInt32());
        Assert.InRange(ours.GetProperty("meanRatio").GetDouble(), 1.0, 1.05);
        Assert.True(ours.GetProperty("meanRatio").GetDouble() <= small["first-fit-decreasing"].GetProperty("meanRatio").GetDouble());
        var groups = doc.RootElement.GetProperty("groups");
        Assert.True(groups.GetProperty("switches").GetInt64() >= groups.GetProperty("lowerBound").GetInt64());
        Assert.True(groups.GetProperty("switches").GetInt64() < groups.GetProperty("pageIndexOrderSwitches").GetInt64());
    }

    [Fact]
    public async Task Plan_shows_every_strategy_and_the_placement_without_migrating()
    {
        var r = await Run("plan", "--vms", "6", "--vm-memory", "4MiB", "--targets", "3");
        Assert.True(r.Exit == 0, r.Out + r.Err);
        foreach (var strategy in new[] { "traffic-aware", "paper-greedy", "first-fit-decreasing", "round-robin", "random" }) Assert.Contains(strategy, r.Out);
        Assert.Contains("traffic-aware placement: vm-000→target-", r.Out);
    }

    [Fact]
    public async Task Demo_migrates_and_writes_a_verified_report()
    {
        var json = Path.Combine(Path.GetTempPath(), $"vmscatter-report-{Guid.NewGuid():N}.json");
        var journal = Path.Combine(Path.GetTempPath(), $"vmscatter-cli-{Guid.NewGuid():N}.db");
        var r = await Run("demo", "--vms", "4", "--vm-memory", "8MiB", "--targets", "2", "--json", json, "--journal", journal);
        Assert.True(r.Exit == 0, r.Out + r.Err);
        var text = await File.ReadAllTextAsync(json);
        foreach (var f in new[] { json, journal, journal + "-wal", journal + "-shm" }) File.Delete(f);
        var report = MigrationReport.FromJson(text);
        Assert.True(report.Verified);
        Assert.Equal((4, 2, 4 * (8L << 20)), (report.Vms, report.Targets, report.GuestBytes));
        Assert.All(report.PerVm, v => Assert.True(v.DigestMatched));
        Assert.Contains("handed over vm-003", r.Out);
        // The stable field names of the report.
        foreach (var field in new[] { "\"vms\"", "\"targets\"", "\"guestBytes\"", "\"naiveBytes\"", "\"distinctPages\"", "\"zeroPages\"", "\"bytesSent\"", "\"bytesReceived\"", "\"verified\"", "\"totalSeconds\"", "\"id\"", "\"target\"", "\"digestMatched\"" })
            Assert.Contains(field, text);
    }

    /// <summary>
    /// deploy/local-cluster.sh --serve starts the cluster (scheduler, source-1, two targets) and keeps it; the console's
    /// commands run against it as documented; a SIGTERM to the script stops every node it started.
    /// </summary>
    [Fact]
    public async Task The_console_works_against_the_cluster_local_cluster_sh_starts_and_the_script_stops_it()
    {
        string script = RepoFile("deploy/local-cluster.sh");
        var work = Directory.CreateTempSubdirectory("vmscatter-local-cluster-").FullName;
        int port = NodeProcess.FreePort();
        string seed = $"127.0.0.1:{port}";
        var cluster = NodeProcess.StartProgram("local-cluster.sh", "bash", new Dictionary<string, string>
        {
            ["VMSCATTER_DLL"] = Path.Combine(AppContext.BaseDirectory, "vmscatter.dll"),
            ["VMSCATTER_PORT"] = port.ToString(),
            ["VMSCATTER_WORK"] = work,
        }, script, "--serve", "2", "2", "8MiB");
        try
        {
            await cluster.WaitForLineAsync(l => l.StartsWith($"cluster up: seeds {seed} "), TimeSpan.FromMinutes(3));

            var status = await Run("status", "--seeds", seed, "--json");
            Assert.True(status.Exit == 0, status.Out + status.Err);
            using (var doc = System.Text.Json.JsonDocument.Parse(status.Out))
            {
                var members = doc.RootElement.GetProperty("members").GetProperty("members").EnumerateArray().ToArray();
                Assert.Equal(["scheduler", "source", "target", "target"], members.SelectMany(m => m.GetProperty("roles").EnumerateArray().Select(r => r.GetString()!)).Order(StringComparer.Ordinal));
                Assert.All(members, m => Assert.True(m.GetProperty("reachable").GetBoolean() && m.GetProperty("status").GetString() == "Up", m.ToString()));
                Assert.Contains(members, m => m.GetProperty("address").GetString() == $"akka.tcp://vmscatter@{seed}");
                var hosts = doc.RootElement.GetProperty("scheduler").GetProperty("hosts").EnumerateArray().ToArray();
                Assert.Equal(["source-1", "target-1", "target-2"], hosts.Select(h => h.GetProperty("hostId").GetString()));
                Assert.Equal(2, hosts[0].GetProperty("vms").GetInt32());
            }

            var (id, report) = await DetachAndFollowAsync(seed, 60);
            Assert.All(report.PerVm, v => Assert.True(v.HandedOver && v.DigestMatched, v.Id));

            var show = await Run("show", id, "--seeds", seed, "--json");
            Assert.True(show.Exit == 0, show.Out + show.Err);
            var shown = MigrationReport.FromJson(show.Out);
            Assert.Equal((id, report.BytesSent, true), (shown.MigrationId, shown.BytesSent, shown.Verified));

            var list = await Run("list", "--seeds", seed, "--json");
            Assert.True(list.Exit == 0, list.Out + list.Err);
            using (var doc = System.Text.Json.JsonDocument.Parse(list.Out))
            {
                var listed = Assert.Single(doc.RootElement.EnumerateArray().ToArray());
                Assert.Equal((id, "Completed", true), (listed.GetProperty("migrationId").GetString(), listed.GetProperty("phase").GetString(), listed.GetProperty("verified").GetBoolean()));
            }

            // SIGTERM: the script stops its nodes (they leave), waits for them and exits 143; nothing listens on the seed after.
            cluster.Terminate();
            Assert.Equal(143, await cluster.WaitForExitAsync(TimeSpan.FromSeconds(90)));
            using var probe = new System.Net.Sockets.TcpClient();
            var refused = await Assert.ThrowsAsync<System.Net.Sockets.SocketException>(() => probe.ConnectAsync("127.0.0.1", port));
            Assert.Equal(System.Net.Sockets.SocketError.ConnectionRefused, refused.SocketErrorCode);
        }
        finally
        {
            await cluster.DisposeAsync();
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>A file of this repository, found upwards from the test's output directory.</summary>
    private static string RepoFile(string relative)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, relative))) return Path.Combine(dir.FullName, relative);
        throw new FileNotFoundException($"{relative} not found above {AppContext.BaseDirectory}");
    }

    [Fact]
    public async Task Status_against_an_unreachable_cluster_is_a_one_line_error_within_the_timeout()
    {
        var clock = Stopwatch.StartNew();
        var unreachable = await Run("status", "--seeds", "127.0.0.1:1", "--timeout", "2", "--json");
        AssertOneLineError(unreachable, "did not answer within 2s (seeds: 127.0.0.1:1)");
        Assert.Equal("", unreachable.Out);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        AssertOneLineError(await Run("list", "--seeds", "nowhere"), "--seeds: seed 'nowhere' is not host:port");
    }
}
