using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// The scheduler's journaled state: one <see cref="MigrationRecord"/> per migration. <see cref="Apply"/> is the only way
/// it changes, the same on recovery and after each persist, so a replayed journal gives exactly the state it recorded.
/// </summary>
public sealed class MigrationJournal
{
    private readonly Dictionary<MigrationId, MigrationRecord> _records = new();

    public void Apply(IPersistedEvent e)
    {
        switch (e)
        {
            case MigrationStarted m:
                _records[m.MigrationId] = new MigrationRecord
                {
                    SourceHostId = string.IsNullOrEmpty(m.SourceHostId.Value) ? null : m.SourceHostId, VmIds = m.VmIds ?? [], TargetHostIds = m.TargetHostIds ?? [], StartedUtc = m.AtUtc,
                };
                break;
            case PlacementChosen m:
                var placed = Record(m.MigrationId);
                placed.Phase = MigrationPhase.Preparing;
                placed.Strategy = m.Strategy ?? "";
                foreach (var (vm, host) in m.TargetOfVm ?? new Dictionary<VmId, HostId>()) placed.TargetOfVm[vm] = host;
                break;
            case VmHandedOver m:
                var handed = Record(m.MigrationId);
                handed.HandedOver.Add(m.VmId);
                handed.HandedOverEvents[m.VmId] = m;
                // A handover a scheduler that took over confirmed on the target outranks an earlier "did not confirm".
                handed.Failed.Remove(m.VmId);
                handed.FailReasons.Remove(m.VmId);
                break;
            case VmHandoverFailed m:
                var failed = Record(m.MigrationId);
                failed.Failed.Add(m.VmId);
                failed.FailReasons[m.VmId] = m.Reason;
                break;
            case VmsReplaced m:
                var replaced = Record(m.MigrationId);
                foreach (var (vm, host) in m.TargetOfVm) replaced.Replaced[vm] = replaced.TargetOfVm[vm] = host;
                break;
            case MigrationCompleted m:
                var done = Record(m.MigrationId);
                done.Phase = MigrationPhase.Completed;
                done.Report = m.Report;
                break;
            case MigrationAborted m:
                var aborted = Record(m.MigrationId);
                aborted.Phase = MigrationPhase.Aborted;
                aborted.AbortReason = m.Reason;
                aborted.Report = m.Report;
                break;
            default: throw new ArgumentException($"not a scheduler event: {e.GetType().Name}", nameof(e));
        }
    }

    public bool Contains(MigrationId id) => _records.ContainsKey(id);

    public MigrationRecord? Find(MigrationId id) => _records.GetValueOrDefault(id);

    /// <summary>Every recorded migration (the console's list): rebuilt from the events on recovery like the rest.</summary>
    public IEnumerable<KeyValuePair<MigrationId, MigrationRecord>> All => _records;

    /// <summary>Migrations the journal started and never ended: on recovery, they were cut short.</summary>
    public IReadOnlyList<MigrationId> Unended => _records.Where(r => !r.Value.Ended).Select(r => r.Key).ToArray();

    /// <summary>How many migrations are started and not ended (the metrics' active migrations).</summary>
    public int UnendedCount => _records.Values.Count(r => !r.Ended);

    // An event for a migration whose start is not in the journal (an older journal's) still gets a record.
    private MigrationRecord Record(MigrationId id) => _records.TryGetValue(id, out var r) ? r : _records[id] = new MigrationRecord();
}
