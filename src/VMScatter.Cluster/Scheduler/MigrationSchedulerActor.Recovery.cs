using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// Taking over: each migration the journal left unended (the singleton moved or restarted) is reconciled with its
/// hosts. Once its source re-registers (hosts announce themselves to whichever node runs the singleton), the source
/// gives the migration up (every paused VM no target was granted runs there again) and says where each VM stands;
/// targets of granted VMs say whether they run them. <see cref="ReconcileDecisions"/> turns that into the journal's
/// ending: confirmed VMs handed over (and released on the source), the others on the source, a granted VM whose target
/// is silent left paused ("check the target"). Bounded by <see cref="SchedulerSettings.ReconcileTimeout"/>.
/// </summary>
public sealed partial class MigrationSchedulerActor
{
    private static readonly TimeSpan ReconcileTickInterval = TimeSpan.FromMilliseconds(500);
    private readonly Dictionary<MigrationId, Reconciliation> _reconciling = new();

    private void ReconcileCommands()
    {
        Command<ReconcileTick>(m => WithReconciliation(m.MigrationId, Tick));
        Command<SourceMigrationState>(m => WithReconciliation(m.MigrationId, r =>
        {
            var source = r.Record.SourceHostId is { } s && _sources.TryGetValue(s, out var reg) ? reg.Host : null;
            if (source is null || !source.Path.Address.Equals(Sender.Path.Address)) { _log.Warning("Migration {0}: refused a source state from {1}: not its source", r.Id, Sender); return; }
            r.Source = m;
            r.GrantedBy = Sender;
            if (!TryFinish(r, final: false)) AskTargets(r);
        }));
        Command<LandedState>(m => WithReconciliation(m.MigrationId, r =>
        {
            if (r.Source is null || !_targets.TryGetValue(m.HostId, out var reg) || !reg.Host.Path.Address.Equals(Sender.Path.Address))
            {
                _log.Warning("Migration {0}: refused a landed state from {1} as {2}", r.Id, Sender, m.HostId);
                return;
            }
            // Only answers about VMs granted to that host count.
            var grantedHere = r.Source.Vms.Where(v => v.Condition == SourceVmCondition.Granted && v.GrantedTo == m.HostId).Select(v => v.VmId).ToHashSet();
            foreach (var vm in m.Running.Where(grantedHere.Contains)) r.Answers[vm] = TargetAnswer.Running;
            foreach (var vm in m.Starting.Where(grantedHere.Contains)) r.Answers[vm] = TargetAnswer.Starting;
            foreach (var vm in m.NotHere.Where(grantedHere.Contains)) r.Answers[vm] = TargetAnswer.NotHere;
            TryFinish(r, final: false);
        }));
        Command<FollowMigration>(m =>
        {
            // The follower asks when it has heard nothing for a while: a console behind a cluster client whose receptionist
            // (and so the response tunnel the run's events went to) moved gets them again through the tunnel it asks by.
            if (_runs.TryGetValue(m.MigrationId, out var run) && !run.Requester.Equals(Sender))
            {
                _log.Info("Migration {0}: its events now go to {1} (was {2})", m.MigrationId, Sender.Path, run.Requester.Path);
                run.Requester = Sender;
            }
            if (_journal.Find(m.MigrationId) is { Ended: true } record)
                Sender.Tell(new MigrationFinished(m.MigrationId, record.Report ?? ReconcileDecisions.JournalReport(m.MigrationId, record, DateTime.UtcNow)));
            else Sender.Tell(Status(m.MigrationId));
        });
    }

    /// <summary>On recovery: every unended migration is reconciled (one from a journal too old to say its source is only recorded as aborted).</summary>
    private void BeginReconciliation()
    {
        foreach (var id in _journal.Unended)
        {
            var record = _journal.Find(id)!;
            if (record.SourceHostId is null || record.VmIds.Count == 0)
            {
                Record(new MigrationAborted(id, "the scheduler restarted before the migration completed", ReconcileDecisions.JournalReport(id, record, DateTime.UtcNow)), _ => { });
                continue;
            }
            _log.Warning("Migration {0} was in flight when the scheduler moved or restarted: reconciling it with source {1}", id, record.SourceHostId);
            _reconciling[id] = new Reconciliation(id, record);
            Timers.StartPeriodicTimer(ReconcileTimer(id), new ReconcileTick(id), ReconcileTickInterval);
        }
    }

    /// <summary>Asks again whoever has not answered (the source once it registered, targets of granted VMs), until the bound.</summary>
    private void Tick(Reconciliation r)
    {
        if (r.Clock.Elapsed >= _settings.ReconcileTimeout) { TryFinish(r, final: true); return; }
        if (r.Source is null)
        {
            if (_sources.TryGetValue(r.Record.SourceHostId!.Value, out var source)) source.Host.Tell(new ReconcileMigration(r.Id, r.Record.VmIds));
            return;
        }
        AskTargets(r);
    }

    private void AskTargets(Reconciliation r)
    {
        foreach (var (target, vms) in ReconcileDecisions.ToAsk(r.Source!, r.Answers))
            if (_targets.TryGetValue(target, out var t)) t.Host.Tell(new QueryLanded(r.Id, vms, r.GrantedBy!));
    }

    private bool TryFinish(Reconciliation r, bool final)
    {
        string? silence = r.Source is null
            ? $"source host {r.Record.SourceHostId} did not re-register and answer within {_settings.ReconcileTimeout.TotalSeconds:0.#} s of the scheduler taking over"
            : null;
        if (ReconcileDecisions.Decide(r.Record, r.Source, r.Answers, final, silence ?? "") is not { } verdicts) return false;
        _reconciling.Remove(r.Id);
        Timers.Cancel(ReconcileTimer(r.Id));
        // Release only VMs their target confirmed (the source stops only granted ones); resume only returned grants.
        if (_sources.TryGetValue(r.Record.SourceHostId!.Value, out var source))
            foreach (var v in verdicts)
            {
                if (v.Release) source.Host.Tell(new ReleaseSourceVm(r.Id, v.VmId));
                if (v.Resume) source.Host.Tell(new ResumeSourceVm(r.Id, v.VmId, v.Reason));
            }
        var events = ReconcileDecisions.Events(r.Id, r.Record, verdicts, DateTime.UtcNow, silence);
        RecordAll(events, e =>
        {
            if (e is MigrationCompleted or MigrationAborted)
                _log.Warning("Migration {0} reconciled: {1}", r.Id, string.Join(", ", verdicts.Select(v => $"{v.VmId} {v.Outcome}{(v.Target is { } t ? $" ({t})" : "")}")));
        });
        return true;
    }

    private void WithReconciliation(MigrationId id, Action<Reconciliation> action)
    {
        if (_reconciling.TryGetValue(id, out var r)) action(r);
        else _log.Debug("Reconciliation message for migration {0}, which is not being reconciled", id);
    }

    private static string ReconcileTimer(MigrationId id) => $"reconcile-{id}";

    private sealed class Reconciliation(MigrationId id, MigrationRecord record)
    {
        public MigrationId Id { get; } = id;
        public MigrationRecord Record { get; } = record;
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        public SourceMigrationState? Source { get; set; }
        /// <summary>Who answered for the source (its migration actor): the target hands a grant it did not use back there.</summary>
        public IActorRef? GrantedBy { get; set; }
        public Dictionary<VmId, TargetAnswer> Answers { get; } = new();
    }

    private sealed record ReconcileTick(MigrationId MigrationId);
}
