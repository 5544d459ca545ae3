using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>The admin console's questions (status, list) and the operator's cancel; they reach here through ClusterClient.</summary>
public sealed partial class MigrationSchedulerActor
{
    /// <summary>The error a cancelled migration's report and its VMs that stayed on the source carry.</summary>
    public const string CancelReason = "cancelled by the operator";

    private void ConsoleCommands()
    {
        Command<GetSchedulerStatus>(_ => Sender.Tell(new SchedulerStatus(((ExtendedActorSystem)Context.System).Provider.DefaultAddress.ToString(),
            ConsoleQueries.Hosts(_sources, _targets), _runs.Values.OrderBy(r => r.StartedUtc).Select(ConsoleQueries.InFlight).ToArray())));
        Command<ListMigrations>(_ => Sender.Tell(new MigrationList(ConsoleQueries.List(_journal, PhaseOf))));
        Command<CancelMigration>(m => Sender.Tell(Cancel(m.MigrationId)));
    }

    /// <summary>The run's working phase while in flight, the journal's otherwise.</summary>
    private MigrationPhase PhaseOf(MigrationId id, MigrationPhase journaled) =>
        _runs.TryGetValue(id, out var run) ? run.Phase : _reconciling.ContainsKey(id) ? MigrationPhase.Reconciling : journaled;

    /// <summary>
    /// Fails the run as any failure does (<see cref="FailRun"/>): undecided VMs resume on the source, a VM whose start was
    /// granted is left to its target's answer; the report ends with <see cref="CancelReason"/>.
    /// </summary>
    private CancelAnswer Cancel(MigrationId id)
    {
        if (_runs.TryGetValue(id, out var run))
        {
            if (run.Error is not null) return new CancelAnswer(id, false, $"migration {id} is already ending: {run.Error}");
            _log.Warning("Migration {0}: cancel requested by {1}", id, Sender.Path.Address);
            int handed = run.HandedOver.Count;
            int granted = run.ResumeRequested.Count(v => !run.Decided(v));
            FailRun(run, CancelReason);
            return new CancelAnswer(id, true, $"migration {id} cancelled: {run.Vms.Count - handed - granted} VM(s) stay on source {run.SourceHostId}, "
                + $"{handed} handed over already, {granted} already granted to their target (they end there or on the source as the target answers)");
        }
        if (_reconciling.ContainsKey(id)) return new CancelAnswer(id, false, $"migration {id} is being reconciled by a new scheduler; it ends by itself");
        if (_journal.Find(id) is { } record) return new CancelAnswer(id, false, $"migration {id} has already ended ({record.Phase.ToString().ToLowerInvariant()})");
        return new CancelAnswer(id, false, $"no migration {id} is known to the scheduler");
    }
}
