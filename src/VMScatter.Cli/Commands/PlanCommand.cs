using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using VMScatter.Bench;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain.Synthetic;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter plan`: a dry run on the demo's fleet: placement, traffic and group switches, ours vs the baselines.</summary>
public static class PlanCommand
{
    public static Command Create()
    {
        var vms = new Option<int>("--vms") { DefaultValueFactory = _ => 8, Description = "VMs on the source" };
        var vmMemory = new Option<string>("--vm-memory") { DefaultValueFactory = _ => "256MiB", Description = "Memory of each VM" };
        var targets = new Option<int>("--targets") { DefaultValueFactory = _ => 4, Description = $"Target hosts (≤ {TargetMask.MaxTargets})" };
        var capacity = new Option<string?>("--target-capacity") { Description = "Memory each target accepts (default: just enough to spread the VMs evenly)" };
        var racks = new Option<int>("--racks") { DefaultValueFactory = _ => 0, Description = "Spread the targets over this many racks (0: one switch)" };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 42, Description = "Seed of the synthetic guests" };
        var applications = new Option<int>("--applications") { DefaultValueFactory = _ => 4, Description = "Distinct applications among the VMs" };
        var osImages = new Option<int>("--os-images") { DefaultValueFactory = _ => 1, Description = "Distinct OS images among the VMs" };
        var command = new Command("plan", "Dry run: where the VMs would go and what each placement would cost, ours vs the baselines");
        foreach (var o in new Option[] { vms, vmMemory, targets, capacity, racks, seed, applications, osImages }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            int n = parse.GetValue(vms), m = parse.GetValue(targets), rackCount = parse.GetValue(racks);
            if (n < 1) throw new UserError("--vms must be at least 1");
            if (m is < 1 or > TargetMask.MaxTargets) throw new UserError($"--targets must be within 1..{TargetMask.MaxTargets}");
            if (rackCount < 0 || rackCount > m) throw new UserError("--racks must be within 0..--targets");
            long memory = DemoCommand.Size(parse.GetValue(vmMemory)!, "--vm-memory");
            long cap = parse.GetValue(capacity) is { } c ? DemoCommand.Size(c, "--target-capacity") : (n + m - 1) / m * memory;
            var spec = new SyntheticFleetSpec(n, new SyntheticGuestModel { MemoryBytes = memory, DirtyPagesPerSecond = 0 }, parse.GetValue(seed), parse.GetValue(osImages), parse.GetValue(applications));
            try { spec.Validate(); } catch (ArgumentException e) { throw new UserError(e.Message); }
            var fleet = SyntheticFleet.Create(spec, runWorkload: false);
            var contents = fleet.Select(AlgorithmBench.Contents).ToArray();
            var placementVms = fleet.Select(v => new PlacementVm(v.Description.Id.Value, v.Description.MemoryBytes, v.Description.VCpus)).ToArray();
            var hosts = Enumerable.Range(1, m).Select(i => new PlacementHost($"target-{i}", cap, Rack: rackCount == 0 ? null : $"rack-{(i - 1) % rackCount + 1}")).ToArray();
            var topology = NetworkTopology.Flat;
            var sketches = AlgorithmBench.Sketches(contents);
            long naive = contents.Sum(c => (long)c.Length);
            var inv = CultureInfo.InvariantCulture;
            var table = new Table().Border(TableBorder.Rounded).Title($"{n} VMs x {ByteSize.Format(memory)} -> {m} targets x {ByteSize.Format(cap)}{(rackCount > 0 ? $" in {rackCount} racks" : "")}")
                .AddColumn("placement").AddColumn(new TableColumn("pages over links").RightAligned()).AddColumn(new TableColumn("≈ bytes").RightAligned())
                .AddColumn(new TableColumn("vs naive").RightAligned()).AddColumn(new TableColumn("groups").RightAligned()).AddColumn(new TableColumn("joins+leaves").RightAligned())
                .AddColumn(new TableColumn("page order").RightAligned()).AddColumn(new TableColumn("plan ms").RightAligned());
            PlacementResult? ours = null;
            foreach (var strategy in Enum.GetValues<PlacementStrategy>())
            {
                PlacementResult r;
                try { r = Placer.Place(placementVms, hosts, sketches, strategy, topology, seed: 1); }
                catch (PlacementException e) { table.AddRow(strategy.ToName(), Markup.Escape(e.Message), "", "", "", "", "", ""); continue; }
                ours ??= r;
                double traffic = AlgorithmBench.ExactTraffic(placementVms, hosts, contents, r.HostOf, topology);
                var groups = AlgorithmBench.Schedule(placementVms, hosts, contents, r.HostOf);
                // Naive: every non-zero page of every VM over the source link and the host link.
                table.AddRow(r.Strategy, traffic.ToString("N0", inv), ByteSize.Format(traffic * Page.Size), (traffic / (2.0 * naive)).ToString("P1", inv),
                    groups.Groups.ToString(inv), $"{groups.Switches} (≥ {groups.LowerBound})", groups.PageIndexOrderSwitches.ToString("N0", inv), (r.PlanSeconds * 1000).ToString("0.0", inv));
            }
            AnsiConsole.Write(table);
            if (ours is not null)
                Console.WriteLine("traffic-aware placement: " + string.Join(", ", ours.HostOf.OrderBy(x => x.Key, StringComparer.Ordinal).Select(x => $"{x.Key}→{x.Value}")));
            Console.WriteLine("pages over links: each distinct page counted once per link of the multicast tree (source uplink + host links); bytes before compression.");
            return ExitCodes.Success;
        });
        return command;
    }
}
