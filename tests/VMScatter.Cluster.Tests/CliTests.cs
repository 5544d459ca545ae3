using System.Diagnostics;
using VMScatter.Domain.Reports;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>The admin console as a user runs it: a separate process, its exit code, what it prints.</summary>
public class CliTests
{
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
        AssertOneLineError(await Run("bench", "--backend", "qemu", "--compression", "brotli"), "--compression must be one of none, lz4, zstd (got 'brotli')");
    }

    [Fact]
    public async Task An_id_that_could_name_a_file_elsewhere_is_refused()
    {
        AssertOneLineError(await Run("node", "--role", "target", "--host-id", "../t1"), "--host-id: host id '../t1' is not valid");
        AssertOneLineError(await Run("migrate", "--seeds", "127.0.0.1:1", "--vm", "a/b", "--join-timeout", "1"), "--vm: VM id 'a/b' is not valid");
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
        var r = await Run("migrate", "--seeds", "127.0.0.1:9", "--join-timeout", "3");
        AssertOneLineError(r, "could not join the cluster via akka.tcp://vmscatter@127.0.0.1:9 within 3s");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30));
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
}
