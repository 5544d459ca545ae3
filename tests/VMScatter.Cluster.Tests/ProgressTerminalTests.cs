using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// `demo`'s progress as people see it: live bars in a real terminal (tmux), plain lines in a log, the report's JSON
/// alone with `--json -`. Each runs a small demo as a separate process.
/// </summary>
public partial class ProgressTerminalTests
{
    private static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "vmscatter.dll");

    // Small and paced: a few seconds of transfer, long enough to see bars move and a log line within a round.
    private static readonly string[] SmallDemo = ["demo", "--vms", "4", "--vm-memory", "32MiB", "--targets", "2", "--link-rate", "100Mbit", "--dirty-rate", "200"];

    private static async Task<(int Exit, string Out, string Err)> Run(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetTempPath() };
        psi.ArgumentList.Add(Cli);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    [GeneratedRegex(@"^round (\d+), [^:]*: ([\d.]+ [KMG]?i?B) sent")]
    private static partial Regex RoundEnd();

    [GeneratedRegex(@"^round (\d+), (?:wave \d+|every target group): ([\d.]+ [KMG]?i?B) so far, ")]
    private static partial Regex RoundSoFar();

    private static double Bytes(string size)
    {
        var parts = size.Split(' ');
        double value = double.Parse(parts[0], CultureInfo.InvariantCulture);
        return value * parts[1] switch { "B" => 1, "KiB" => 1 << 10, "MiB" => 1 << 20, "GiB" => 1 << 30, var u => throw new FormatException(u) };
    }

    [Fact]
    public async Task Redirected_output_is_plain_lines_with_each_round_once_and_growing_figures_within_a_round()
    {
        var (exit, stdout, stderr) = await Run(SmallDemo);
        Assert.True(exit == 0, $"exit {exit}\n{stdout}\n{stderr}");
        Assert.DoesNotContain('\u001b', stdout + stderr); // no colours, no cursor movement
        var lines = stdout.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();

        var ends = lines.Select(l => RoundEnd().Match(l)).Where(m => m.Success).Select(m => (Round: int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Bytes: Bytes(m.Groups[2].Value))).ToArray();
        // Round 0, then per wave (2 targets, staggered) at least one pre-copy round and a stop-and-copy: each round once, in order.
        Assert.True(ends.Length >= 5, stdout);
        Assert.Equal(ends.Select(e => e.Round).Order(), ends.Select(e => e.Round));
        Assert.Equal(ends.Length, ends.Select(e => e.Round).Distinct().Count());
        Assert.Contains(lines, l => l.Contains(", stop-and-copy: ", StringComparison.Ordinal));

        // Within a round, the figures so far only grow, and stay within what the round sent in the end.
        var soFar = lines.Select(l => RoundSoFar().Match(l)).Where(m => m.Success).Select(m => (Round: int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Bytes: Bytes(m.Groups[2].Value))).ToArray();
        Assert.NotEmpty(soFar);
        foreach (var round in soFar.GroupBy(s => s.Round))
        {
            var values = round.Select(s => s.Bytes).ToArray();
            Assert.Equal(values.Order(), values);
            Assert.True(values[^1] <= ends.Single(e => e.Round == round.Key).Bytes * 1.001, stdout); // formatting rounds to 0.1
        }
        Assert.Contains(lines, l => l.StartsWith("verified", StringComparison.Ordinal) && l.Contains("yes: every VM byte-identical", StringComparison.Ordinal));
    }

    [Fact]
    public async Task With_json_dash_standard_output_is_the_report_json_alone()
    {
        var (exit, stdout, stderr) = await Run("demo", "--vms", "2", "--vm-memory", "16MiB", "--targets", "2", "--json", "-");
        Assert.True(exit == 0, $"exit {exit}\n{stdout}\n{stderr}");
        using var json = JsonDocument.Parse(stdout); // throws on anything before or after the report
        Assert.True(json.RootElement.GetProperty("verified").GetBoolean());
        Assert.Equal(2, json.RootElement.GetProperty("vms").GetInt32());
        // The people's part went to standard error, plain (it is not a terminal here either).
        Assert.Contains("round 0, every target group: ", stderr);
        Assert.Contains("verified", stderr);
        Assert.DoesNotContain('\u001b', stderr);
        Assert.False(File.Exists(Path.Combine(Path.GetTempPath(), "-")), "--json - wrote a file named '-'");
    }

    [TmuxFact]
    public async Task In_a_terminal_each_wave_has_a_live_bar_with_round_bytes_rate_and_eta_then_the_report()
    {
        string session = $"vmscatter-progress-{Guid.NewGuid():N}"[..28];
        string command = $"dotnet {Cli} {string.Join(' ', SmallDemo)}; echo VMSCATTER-EXIT=$?; sleep 600";
        Tmux("new-session", "-d", "-s", session, "-x", "180", "-y", "60", "-c", Path.GetTempPath(), command);
        try
        {
            // A bar: the wave, the round, this round's bytes, a rate. Seen while it moves, then left on screen at the end.
            var bar = new Regex(@"wave 1/2 · target-\d .*round \d+.* [\d.]+ [KMG]?i?B.* [\d.]+ [KMG]?i?B/s");
            bool sawLive = false;
            string screen = "";
            var deadline = Stopwatch.StartNew();
            while (!screen.Contains("VMSCATTER-EXIT=", StringComparison.Ordinal))
            {
                Assert.True(deadline.Elapsed < TimeSpan.FromMinutes(3), $"the demo did not end in 3 min; the screen:\n{screen}");
                screen = Tmux("capture-pane", "-p", "-S", "-", "-t", session);
                sawLive |= screen.Split('\n').Any(l => bar.IsMatch(l) && (l.Contains("pre-copy", StringComparison.Ordinal) || l.Contains("stop-and-copy", StringComparison.Ordinal)) && l.Contains("ETA ", StringComparison.Ordinal));
                await Task.Delay(50);
            }
            Assert.Contains("VMSCATTER-EXIT=0", screen);
            Assert.True(sawLive, $"no live bar (pre-copy or stop-and-copy, with an ETA) was ever on screen; the last screen:\n{screen}");
            var lines = screen.Split('\n');
            Assert.Contains(lines, l => bar.IsMatch(l) && l.Contains("handed over 2/2", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.Contains("wave 2/2 · target-", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.Contains("round 0 · every target group", StringComparison.Ordinal));
            // The report under the bars.
            Assert.Contains(lines, l => l.Contains("digest matched", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("verified", StringComparison.Ordinal) && l.Contains("yes: every VM byte-identical", StringComparison.Ordinal));
        }
        finally { Tmux("kill-session", "-t", session); }
    }

    private static string Tmux(params string[] args)
    {
        var psi = new ProcessStartInfo("tmux") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return output;
    }
}

/// <summary>A test that needs tmux: installed if missing and this runs as root (as test.sh does), else skipped, saying why.</summary>
public sealed class TmuxFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Missing = new(() =>
    {
        if (Works("tmux", "-V")) return null;
        if (Environment.UserName == "root" && Works("apt-get", "install", "-y", "-qq", "tmux") && Works("tmux", "-V")) return null;
        return "tmux is not installed and could not be installed here (apt-get install tmux, or run ./test.sh as root)";
    });

    public TmuxFactAttribute()
    {
        if (Missing.Value is { } why) Skip = why;
    }

    private static bool Works(string file, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
