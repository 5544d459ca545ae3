namespace VMScatter.Bench.Chaos;

/// <summary>A role whose node a chaos run kills.</summary>
public enum ChaosRole { Scheduler, Source, Target }

/// <summary>
/// What `vmscatter chaos` runs: a fresh multi-process cluster per run (2 scheduler-role nodes on one PostgreSQL journal,
/// a source with synthetic guests, targets), one migration, one node killed -9 at a random moment and restarted.
/// Small guests and a paced link, so a migration lasts a few seconds and a kill lands inside it.
/// </summary>
public sealed record ChaosOptions
{
    public required int Runs { get; init; }
    public required string PostgresConnectionString { get; init; }
    /// <summary>vmscatter.dll, started with `dotnet` for every node and `migrate`.</summary>
    public required string VmscatterDll { get; init; }
    /// <summary>Where each run's configuration and process logs go (a failed run's are kept).</summary>
    public required string WorkDirectory { get; init; }
    public long Seed { get; init; } = 1;
    public int Vms { get; init; } = 6;
    public string VmMemory { get; init; } = "32MiB";
    public int Targets { get; init; } = 4;
    public string TargetCapacity { get; init; } = "128MiB";
    public string LinkRate { get; init; } = "200Mbit";
    public int MaxRounds { get; init; } = 2;
    /// <summary>The source's decision bound (vmscatter.source.decision-timeout) in these clusters.</summary>
    public TimeSpan DecisionTimeout { get; init; } = TimeSpan.FromSeconds(15);
    public TimeSpan ReconcileTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Pause bound checked: the decision bound plus the time to pause, copy and digest the last wave, with the sampling's error.</summary>
    public TimeSpan PauseGrace { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>The kill lands this long at most after the migration was placed (uniformly drawn).</summary>
    public TimeSpan MaxKillDelay { get; init; } = TimeSpan.FromSeconds(4);
    /// <summary>The role killed in each run, in order (cycled); empty: drawn at random.</summary>
    public IReadOnlyList<ChaosRole> Kills { get; init; } = [];
    public Action<string> Log { get; init; } = _ => { };
    /// <summary>HOCON appended to every run's cluster configuration (the tests: faster membership ticks).</summary>
    public string ExtraHocon { get; init; } = "";

    public TimeSpan PauseBound => DecisionTimeout + PauseGrace;
}
