using Akka.Configuration;

namespace VMScatter.Cluster.Scheduler;

/// <summary>vmscatter.scheduler, read once.</summary>
public sealed record SchedulerSettings(string PersistenceId, TimeSpan AnalysisTimeout, TimeSpan HandoverTimeout, double RackLinkWeight = 1)
{
    /// <summary>
    /// How long a scheduler that took over waits for a cut-short migration's source to re-register and answer (and for
    /// its granted VMs' targets) before it records what it knows; vmscatter.scheduler.reconcile-timeout.
    /// </summary>
    public TimeSpan ReconcileTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>How long the traffic-aware placer may search before the first byte can move; vmscatter.scheduler.placement-budget.</summary>
    public TimeSpan PlacementBudget { get; init; } = TimeSpan.FromMilliseconds(150);

    public static SchedulerSettings From(Config config) => new(
        config.GetString("vmscatter.scheduler.persistence-id"),
        config.GetTimeSpan("vmscatter.scheduler.analysis-timeout"),
        config.GetTimeSpan("vmscatter.scheduler.handover-timeout"),
        config.GetDouble("vmscatter.scheduler.rack-link-weight"))
    {
        ReconcileTimeout = config.GetTimeSpan("vmscatter.scheduler.reconcile-timeout", TimeSpan.FromSeconds(20)),
        PlacementBudget = config.GetTimeSpan("vmscatter.scheduler.placement-budget", TimeSpan.FromMilliseconds(150)),
    };
}
