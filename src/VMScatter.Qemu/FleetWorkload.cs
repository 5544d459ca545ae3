namespace VMScatter.Qemu;

/// <summary>What a fleet of guests runs: every guest the same workload, or a mix.</summary>
public enum FleetWorkload
{
    Dd,
    Idle,
    Compile,
    Database,
    /// <summary>Guest i (0-based) runs idle, compile, database for i mod 3 = 0, 1, 2.</summary>
    Mixed,
}

public static class FleetWorkloads
{
    private static readonly GuestWorkload[] MixedCycle = [GuestWorkload.Idle, GuestWorkload.Compile, GuestWorkload.Database];

    /// <summary>The workload of the fleet's guest <paramref name="index"/> (0-based).</summary>
    public static GuestWorkload ForGuest(this FleetWorkload fleet, int index) => fleet switch
    {
        FleetWorkload.Dd => GuestWorkload.Dd,
        FleetWorkload.Idle => GuestWorkload.Idle,
        FleetWorkload.Compile => GuestWorkload.Compile,
        FleetWorkload.Database => GuestWorkload.Database,
        FleetWorkload.Mixed => MixedCycle[index % MixedCycle.Length],
        _ => throw new ArgumentOutOfRangeException(nameof(fleet), fleet, null),
    };
}
