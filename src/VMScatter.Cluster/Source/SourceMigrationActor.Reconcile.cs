using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;

namespace VMScatter.Cluster.Source;

/// <summary>
/// When the scheduler that runs this migration is gone (its node left: Terminated) or a scheduler that took over asks
/// (<see cref="ReconcileMigration"/>), nobody will decide this migration's handovers any more: it is given up. Every
/// VM not granted to a target runs here again at once; a granted one stays paused (its target may run it) until the
/// new scheduler releases it, or its target hands the grant back (then it resumes here at the next fence tick).
/// </summary>
public sealed partial class SourceMigrationActor
{
    private bool _abandoned;

    /// <summary>In every behaviour (a scheduler can be lost at any step).</summary>
    private void SchedulerFailover()
    {
        Receive<ReconcileMigration>(m => m.MigrationId == _migrationId, _ =>
        {
            Abandon("a scheduler that took over ended the migration");
            Sender.Tell(new SourceMigrationState(_migrationId, MigrationActorFound: true, Enumerable.Range(0, _vms.Count).Select(StateOf).ToArray()));
        });
        Receive<Terminated>(t => t.ActorRef.Equals(_scheduler), _ => Abandon("the scheduler is gone (its node left the cluster)"));
        // A stop-and-copy pause that lands after the migration was given up still counts in how long the VM was paused.
        Receive<VmPaused>(_ => _abandoned, m => _pausedAt.TryAdd(m.VmIndex, m.PausedAtUnixMs));
    }

    private readonly Dictionary<int, long> _settledAt = new();

    private void NoteSettled(int vm) => _settledAt.TryAdd(vm, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    /// <summary>After a failover an operator needs to know where each VM runs and how long it was paused: one line.</summary>
    private void ReportSettledAfterFailover()
    {
        if (!_abandoned) return;
        var where = Enumerable.Range(0, _vms.Count).Select(v =>
        {
            string place = _fence.IsGranted(VmId(v)) ? "released" : "here";
            string paused = _pausedAt.TryGetValue(v, out var at) && _settledAt.TryGetValue(v, out var end) ? $" (paused {Math.Max(0, end - at)} ms)" : "";
            return $"{VmId(v)}={place}{paused}";
        });
        _log.Warning("Migration {0} settled after its scheduler was lost: {1}", _migrationId, string.Join(", ", where));
    }

    private void Abandon(string reason)
    {
        if (_abandoned || _settled.Count == _vms.Count) return;
        _abandoned = true;
        // Nothing more is re-placed either: orphans of a lost target run here (resumed below) and settle.
        _failed = true;
        _orphaned.Clear();
        _replacements.Clear();
        if (_sending.IsCompleted) ReturnLease();
        _log.Warning("Migration {0} given up on the source: {1}; VMs not granted to a target run here again", _migrationId, reason);
        Timers.CancelAll();
        for (int v = 0; v < _vms.Count; v++)
        {
            if (_settled.Contains(v)) continue;
            if (!_transferred.Contains(v)) { _vmActors[v].Tell(new ResumeVm(reason)); continue; }
            // Through the fence: it refuses (and the VM stays paused) if the VM was granted.
            _fence.Transferred(VmId(v), _targetHosts[_targetOfVm[v]], _clock.Elapsed.TotalSeconds);
            ResumeHere(v, reason);
        }
        // A grant its target gives back (it never started the VM) is resumed here by the next fence tick.
        ArmFence();
        Become(HandingOver);
    }

    private SourceVmState StateOf(int v)
    {
        var id = VmId(v);
        var holder = _fence.HolderOf(id);
        var digest = _sourceDigests.GetValueOrDefault(v)?.Digest;
        // A VM is stopped here only once granted; one never granted was resumed here (or its resume is on its way).
        var condition = holder is null ? SourceVmCondition.OnSource : _settled.Contains(v) ? SourceVmCondition.Released : SourceVmCondition.Granted;
        return new SourceVmState(id, condition, holder, digest);
    }
}
