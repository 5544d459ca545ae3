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
            case MigrationStarted m: _records[m.MigrationId] = new MigrationRecord(); break;
            case PlacementChosen m: Record(m.MigrationId).Phase = MigrationPhase.Preparing; break;
            case VmHandedOver m: Record(m.MigrationId).HandedOver.Add(m.VmId); break;
            case VmHandoverFailed m: Record(m.MigrationId).Failed.Add(m.VmId); break;
            case VmsReplaced m:
                foreach (var (vm, host) in m.TargetOfVm) Record(m.MigrationId).Replaced[vm] = host;
                break;
            case MigrationCompleted m:
                var done = Record(m.MigrationId);
                done.Phase = MigrationPhase.Completed;
                done.Report = m.Report;
                break;
            case MigrationAborted m: Record(m.MigrationId).Phase = MigrationPhase.Aborted; break;
            default: throw new ArgumentException($"not a scheduler event: {e.GetType().Name}", nameof(e));
        }
    }

    public bool Contains(MigrationId id) => _records.ContainsKey(id);

    public MigrationRecord? Find(MigrationId id) => _records.GetValueOrDefault(id);

    /// <summary>Migrations the journal started and never ended: on recovery, they were cut short.</summary>
    public IReadOnlyList<MigrationId> Unended => _records.Where(r => !r.Value.Ended).Select(r => r.Key).ToArray();

    // An event for a migration whose start is not in the journal (an older journal's) still gets a record.
    private MigrationRecord Record(MigrationId id) => _records.TryGetValue(id, out var r) ? r : _records[id] = new MigrationRecord();
}
