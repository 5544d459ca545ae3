using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Spectre.Console;
using VMScatter.Domain.Bench;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter bench algorithms`: placement and group scheduling against the exact optimum and the baselines.</summary>
public static class BenchCommand
{
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static Command Create()
    {
        var bench = new Command("bench", "Measure VMScatter side by side with baselines in one run");
        var instances = new Option<int>("--instances") { Description = "Small instances solved exactly (≤ 8 VMs, ≤ 3 hosts)", DefaultValueFactory = _ => 120 };
        var seed = new Option<int>("--seed") { Description = "Seed of the instances", DefaultValueFactory = _ => 1 };
        var vms = new Option<int>("--large-vms") { Description = "VMs of the large instance", DefaultValueFactory = _ => 1000 };
        var hosts = new Option<int>("--large-hosts") { Description = "Hosts of the large instance (≤ 64)", DefaultValueFactory = _ => 64 };
        var json = new Option<string?>("--json") { Description = "Write the results to this file (JSON)" };
        var algorithms = new Command("algorithms", "Placement vs exhaustive optimum and baselines; group order vs lower bound and page-index order");
        foreach (var o in new Option[] { instances, seed, vms, hosts, json }) algorithms.Options.Add(o);
        algorithms.SetAction(parse =>
        {
            if (parse.GetValue(instances) < 1) throw new UserError("--instances must be at least 1");
            if (parse.GetValue(hosts) is < 2 or > 64) throw new UserError("--large-hosts must be within 2..64");
            if (parse.GetValue(vms) < parse.GetValue(hosts)) throw new UserError("--large-vms must be at least --large-hosts");
            var report = AlgorithmBench.Run(parse.GetValue(instances), parse.GetValue(seed), parse.GetValue(vms), parse.GetValue(hosts), line => Console.Error.WriteLine(line));
            Render(report);
            if (parse.GetValue(json) is { } path)
            {
                File.WriteAllText(path, JsonSerializer.Serialize(report, Json));
                Console.WriteLine($"results written to {path}");
            }
            return ExitCodes.Success;
        });
        bench.Subcommands.Add(algorithms);
        return bench;
    }

    private static void Render(AlgorithmBenchReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        var small = new Table().Border(TableBorder.Rounded).Title($"{r.SmallInstances} small instances vs exhaustive optimum (traffic / optimum)")
            .AddColumn("strategy").AddColumn(new TableColumn("mean").RightAligned()).AddColumn(new TableColumn("max").RightAligned())
            .AddColumn(new TableColumn("mean, host links").RightAligned()).AddColumn(new TableColumn("max, host links").RightAligned()).AddColumn(new TableColumn("could not pack").RightAligned());
        foreach (var s in r.Small)
            small.AddRow(s.Strategy, s.MeanRatio.ToString("0.0000", inv), s.MaxRatio.ToString("0.0000", inv), s.MeanHostLinkRatio.ToString("0.0000", inv), s.MaxHostLinkRatio.ToString("0.0000", inv), s.Failed.ToString(inv));
        AnsiConsole.Write(small);
        var large = new Table().Border(TableBorder.Rounded).Title($"{r.LargeVms} VMs on {r.LargeHosts} hosts (exact traffic, page-links)")
            .AddColumn("strategy").AddColumn(new TableColumn("flat network").RightAligned()).AddColumn(new TableColumn("plan s").RightAligned())
            .AddColumn(new TableColumn("8 racks").RightAligned()).AddColumn(new TableColumn("plan s").RightAligned());
        foreach (var (f, k) in r.LargeFlat.Zip(r.LargeRacks))
            large.AddRow(f.Strategy, f.Traffic.ToString("N0", inv), f.PlanSeconds.ToString("0.000", inv), k.Traffic.ToString("N0", inv), k.PlanSeconds.ToString("0.000", inv));
        AnsiConsole.Write(large);
        Console.WriteLine(string.Create(inv, $"traffic reduction of traffic-aware: vs first-fit-decreasing {r.TrafficReductionVsFirstFitDecreasing:P1} (racks {r.RacksTrafficReductionVsFirstFitDecreasing:P1}), vs the paper's greedy {r.TrafficReductionVsPaperGreedy:P1} (racks {r.RacksTrafficReductionVsPaperGreedy:P1})"));
        var g = r.Groups;
        Console.WriteLine(string.Create(inv, $"group order on the large placement: {g.Groups} groups, {g.Switches} joins+leaves, lower bound {g.LowerBound} (ratio {g.RatioToLowerBound:0.000}); page-index order {g.PageIndexOrderSwitches:N0} ({g.ReductionVsPageIndexOrder:P2} fewer)"));
    }
}
