using VMScatter.Domain.Reports;

namespace VMScatter.Bench.Chaos;

/// <summary>What a host said it runs, once the run settled.</summary>
public sealed record HostView(string HostId, ChaosRole Role, IReadOnlyList<string> Running, IReadOnlyList<string> Paused);

public sealed record KilledNode(string HostId, ChaosRole Role);

/// <summary>The journal's final word on the migration (GetMigrationStatus through the scheduler proxy).</summary>
/// <param name="HandedOverTo">VM → the target the journal says it was handed over to.</param>
public sealed record JournalView(string Phase, IReadOnlyDictionary<string, string> HandedOverTo);

/// <summary>Everything one run observed, for <see cref="InvariantChecker"/>.</summary>
/// <param name="Vms">The migration's VMs (all of the source's at the start).</param>
/// <param name="SilentHosts">Hosts that should be up and did not answer the inventory query.</param>
/// <param name="Report">migrate's --json report (null: it wrote none).</param>
/// <param name="SampledPause">The VM seen paused longest during the run, and for how long.</param>
/// <param name="UnexpectedExits">Nodes other than the one killed that exited during the run.</param>
/// <param name="Problems">What the harness itself saw go wrong (a process that did not start, migrate that never ended).</param>
public sealed record RunObservation(
    IReadOnlyList<string> Vms,
    string SourceHostId,
    KilledNode Killed,
    IReadOnlyList<HostView> Hosts,
    IReadOnlyList<string> SilentHosts,
    JournalView? Journal,
    MigrationReport? Report,
    (string Vm, double Ms)? SampledPause,
    double PauseBoundMs,
    IReadOnlyList<string> UnexpectedExits,
    IReadOnlyList<string> Problems);

public sealed record Violation(string Invariant, string Detail);

/// <summary>One run's counts and the invariants it broke (none: it held them all).</summary>
/// <param name="EndedWithSource">VMs that ended with the killed synthetic source (never moved, never lost).</param>
/// <param name="EndedWithTarget">VMs handed over to a target that was then killed: synthetic guests end with their node.</param>
public sealed record RunVerdict(
    int HandedOver,
    int Replaced,
    int OnSource,
    int EndedWithSource,
    int EndedWithTarget,
    int Lost,
    int RunTwice,
    double LongestPauseMs,
    IReadOnlyList<Violation> Violations)
{
    public bool Held => Violations.Count == 0;
}
