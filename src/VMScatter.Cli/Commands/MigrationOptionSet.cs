using System.CommandLine;
using Akka.Configuration;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.Domain;
using VMScatter.Domain.Compression;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Units;

namespace VMScatter.Cli.Commands;

/// <summary>Options shared by `demo` and `migrate`: how the migration runs. Unset ones come from HOCON.</summary>
public sealed class MigrationOptionSet
{
    public Option<string?> Placement { get; } = new("--placement") { Description = string.Join(" | ", EnumNames<PlacementStrategy>.Names) };
    public Option<string?> Transport { get; } = new("--transport") { Description = "How a page reaches a target group without multicast: relay-chain | fan-out" };
    public Option<string?> Compression { get; } = new("--compression") { Description = "none | lz4 | zstd | adaptive (zstd while frames wait for the link, else lz4)" };
    public Option<int?> MaxRounds { get; } = new("--max-rounds") { Description = "Pre-copy rounds before stop-and-copy is forced" };
    public Option<int?> DowntimeMs { get; } = new("--downtime-ms") { Description = "Stop and copy once the dirty rest fits in this many milliseconds" };
    public Option<string?> Json { get; } = new("--json") { Description = "Write the migration report to this file (JSON); '-': to standard output, alone (everything else goes to standard error)" };
    public Option<string> LinkRate { get; } = new("--link-rate") { Description = "Each host's egress link, e.g. 1Gbit (default: unlimited)", DefaultValueFactory = _ => "unlimited" };
    public Option<bool> NoDedup { get; } = new("--no-dedup") { Description = "Send every non-zero page of every VM (the one-to-one pre-copy baseline)" };
    public Option<string> OnNoConvergence { get; } = new("--on-no-convergence") { Description = "force (stop and copy anyway) | abort (VMs stay on the source)", DefaultValueFactory = _ => "force" };
    public Option<string?> Handover { get; } = new("--handover") { Description = "staggered (one target host's VMs after another, each shortly after its own pages) | together (all VMs pause at once)" };
    public Option<string?> Plot { get; } = new("--plot") { Description = "Draw the migration's timeline (bytes per wave over time, rounds, each VM's pause) to FILE.png or FILE.svg" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Placement, Transport, Compression, MaxRounds, DowntimeMs, Json, LinkRate, NoDedup, OnNoConvergence, Handover, Plot }) command.Options.Add(o);
    }

    public MigrationOptions Resolve(ParseResult parse, Config defaults)
    {
        var placement = Choose<PlacementStrategy>(parse.GetValue(Placement) ?? defaults.GetString("vmscatter.scheduler.placement"), "--placement");
        var transport = Choose<GroupTransport>(parse.GetValue(Transport) ?? defaults.GetString("vmscatter.data-plane.group-transport"), "--transport");
        var compression = Choose<CompressionMode>(parse.GetValue(Compression) ?? defaults.GetString("vmscatter.data-plane.compression"), "--compression");
        int maxRounds = parse.GetValue(MaxRounds) ?? defaults.GetInt("vmscatter.source.max-rounds");
        int downtime = parse.GetValue(DowntimeMs) ?? (int)defaults.GetTimeSpan("vmscatter.source.downtime-target").TotalMilliseconds;
        if (maxRounds < 1) throw new UserError("--max-rounds must be at least 1");
        if (downtime < 1) throw new UserError("--downtime-ms must be at least 1");
        if (!Domain.Units.LinkRate.TryParse(parse.GetValue(LinkRate), out long bits)) throw new UserError($"--link-rate: '{parse.GetValue(LinkRate)}' is not a rate (e.g. 1Gbit, 100Mbit, unlimited)");
        var policy = Choose<NonConvergencePolicy>(parse.GetValue(OnNoConvergence), "--on-no-convergence");
        // --no-dedup is the QEMU-style baseline: like QEMU, it also sends round 0's already rewritten pages, and its
        // VMs go together unless --handover says otherwise.
        bool dedup = !parse.GetValue(NoDedup);
        var handover = Choose<HandoverMode>(parse.GetValue(Handover) ?? (dedup ? defaults.GetString("vmscatter.source.handover") : HandoverMode.Together.ToName()), "--handover");
        return new MigrationOptions(placement, transport, compression, maxRounds, downtime, dedup, bits, policy, SetAsideDirty: dedup, Handover: handover);
    }

    /// <summary>The --plot file, its extension checked (.png or .svg) before anything starts; null without --plot.</summary>
    public string? PlotPath(ParseResult parse)
    {
        if (parse.GetValue(Plot) is not { } path) return null;
        View.PlotFile.Check(path);
        return path;
    }

    /// <summary><c>--json -</c>: the report's JSON is all that standard output carries.</summary>
    public static bool IsStandardOutput(string? jsonPath) => jsonPath == "-";

    /// <summary>Where progress and the table go: standard error when standard output is the report's JSON.</summary>
    public View.HumanOutput Output(ParseResult parse) => View.HumanOutput.Create(toStandardError: IsStandardOutput(parse.GetValue(Json)));

    /// <summary>A VM or host id given on the command line, or a one-line error saying what an id may be.</summary>
    public static T Id<T>(string value, string option) where T : struct, IId<T>
    {
        try { return T.Create(value); }
        catch (FormatException e) { throw new UserError($"{option}: {e.Message}"); }
    }

    /// <summary>A policy option: one of its derived names, or a one-line error naming them.</summary>
    public static T Choose<T>(string? value, string option) where T : struct, Enum
    {
        try { return EnumNames<T>.Parse(value, option); }
        catch (FormatException e) { throw new UserError(e.Message); }
    }
}
