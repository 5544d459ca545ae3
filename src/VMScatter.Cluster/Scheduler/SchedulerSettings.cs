using Akka.Configuration;

namespace VMScatter.Cluster.Scheduler;

/// <summary>vmscatter.scheduler, read once.</summary>
public sealed record SchedulerSettings(string PersistenceId, TimeSpan AnalysisTimeout, TimeSpan HandoverTimeout, double RackLinkWeight = 1)
{
    public static SchedulerSettings From(Config config) => new(
        config.GetString("vmscatter.scheduler.persistence-id"),
        config.GetTimeSpan("vmscatter.scheduler.analysis-timeout"),
        config.GetTimeSpan("vmscatter.scheduler.handover-timeout"),
        config.GetDouble("vmscatter.scheduler.rack-link-weight"));
}
