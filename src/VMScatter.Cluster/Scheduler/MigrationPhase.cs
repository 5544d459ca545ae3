namespace VMScatter.Cluster.Scheduler;

/// <summary>Where a migration stands, as the scheduler's status and progress report it.</summary>
public enum MigrationPhase
{
    /// <summary>No such migration in the journal.</summary>
    Unknown,
    /// <summary>Journaled as started; the source hashes round 0 and profiles the VMs.</summary>
    Analysing,
    /// <summary>Profiles are in; the placer runs off the scheduler's thread.</summary>
    Placing,
    /// <summary>Placement journaled; the targets prepare memory and their receivers.</summary>
    Preparing,
    /// <summary>Pre-copy rounds on the data plane.</summary>
    Transferring,
    /// <summary>At least one VM's digests are compared and its handover decided, while other waves may still transfer.</summary>
    HandingOver,
    /// <summary>Every round is applied; the last handovers are being decided and confirmed.</summary>
    Verifying,
    /// <summary>Journaled as completed: every VM runs in exactly one place (the report says where).</summary>
    Completed,
    /// <summary>
    /// Journaled as aborted: cut short by a scheduler that moved or restarted; its report (reconciled with the source and
    /// targets) says which VMs were handed over and which stayed on the source.
    /// </summary>
    Aborted,
    /// <summary>A scheduler that took over asks the source and targets where each VM of the cut-short migration runs.</summary>
    Reconciling,
}
