using System.Text.Json;
using System.Text.Json.Serialization;

namespace VMScatter.Bench.Chaos;

public sealed record ChaosFailure(int Run, string Killed, string Invariant, string Detail, string? Logs);

/// <summary>One row per run, as `--json` writes it.</summary>
public sealed record ChaosRunRow(int Run, string Killed, string Role, string Moment, int? MigrateExit, int HandedOver, int Replaced, int OnSource,
    int EndedWithKilledSource, int EndedWithKilledTarget, int Lost, int RunTwice, double LongestPauseMs, bool Held);

/// <summary>What `vmscatter chaos` reports over all its runs (field names are the --json file's).</summary>
public sealed record ChaosSummary
{
    public required int Runs { get; init; }
    public required long Seed { get; init; }
    public required string Cluster { get; init; }
    public required IReadOnlyDictionary<string, int> KillsByRole { get; init; }
    public required int VmsHandedOver { get; init; }
    public required int VmsReplaced { get; init; }
    public required int VmsOnSource { get; init; }
    /// <summary>Must be 0.</summary>
    public required int VmsLost { get; init; }
    /// <summary>Must be 0.</summary>
    public required int VmsRunTwice { get; init; }
    /// <summary>Synthetic guests end with their node's process (README, Failures): counted here, never as moved nor lost.</summary>
    public required int VmsEndedWithKilledSource { get; init; }
    public required int VmsEndedWithKilledTarget { get; init; }
    public required double LongestPauseMs { get; init; }
    public required double PauseBoundMs { get; init; }
    public required bool AllInvariantsHeld { get; init; }
    public required IReadOnlyList<ChaosFailure> Failures { get; init; }
    public required IReadOnlyList<ChaosRunRow> PerRun { get; init; }

    public static ChaosSummary Of(ChaosOptions o, IReadOnlyList<ChaosRunResult> results) => new()
    {
        Runs = results.Count,
        Seed = o.Seed,
        Cluster = $"2 scheduler nodes (PostgreSQL journal), 1 source with {o.Vms} x {o.VmMemory} synthetic VMs, {o.Targets} targets x {o.TargetCapacity}, link {o.LinkRate}, decision-timeout {o.DecisionTimeout.TotalSeconds:0} s",
        KillsByRole = Enum.GetValues<ChaosRole>().ToDictionary(r => r.ToString().ToLowerInvariant(), r => results.Count(x => x.Killed.Role == r)),
        VmsHandedOver = results.Sum(r => r.Verdict.HandedOver),
        VmsReplaced = results.Sum(r => r.Verdict.Replaced),
        VmsOnSource = results.Sum(r => r.Verdict.OnSource),
        VmsLost = results.Sum(r => r.Verdict.Lost),
        VmsRunTwice = results.Sum(r => r.Verdict.RunTwice),
        VmsEndedWithKilledSource = results.Sum(r => r.Verdict.EndedWithSource),
        VmsEndedWithKilledTarget = results.Sum(r => r.Verdict.EndedWithTarget),
        LongestPauseMs = results.Count == 0 ? 0 : results.Max(r => r.Verdict.LongestPauseMs),
        PauseBoundMs = o.PauseBound.TotalMilliseconds,
        AllInvariantsHeld = results.All(r => r.Verdict.Held),
        Failures = results.SelectMany(r => r.Verdict.Violations.Select(v => new ChaosFailure(r.Run, r.Killed.HostId, v.Invariant, v.Detail, r.Logs))).ToArray(),
        PerRun = results.Select(r => new ChaosRunRow(r.Run, r.Killed.HostId, r.Killed.Role.ToString().ToLowerInvariant(), r.Moment, r.MigrateExit, r.Verdict.HandedOver,
            r.Verdict.Replaced, r.Verdict.OnSource, r.Verdict.EndedWithSource, r.Verdict.EndedWithTarget, r.Verdict.Lost, r.Verdict.RunTwice,
            Math.Round(r.Verdict.LongestPauseMs), r.Verdict.Held)).ToArray(),
    };

    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    });
}
