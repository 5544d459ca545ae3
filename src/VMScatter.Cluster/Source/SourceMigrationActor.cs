using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Diagnostics;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Source;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Source;

/// <summary>
/// One migration on the source host; it orchestrates, the decisions are elsewhere: <see cref="WavePlan"/> (which
/// targets complete together), <see cref="ConvergencePolicy"/> (when a wave stops and copies),
/// <see cref="RoundTransferBuilder"/> (what a round sends, in which group order) and <see cref="RoundAccounting"/>.
/// States: analysing (round 0 hashed and deduplicated, profiles sent for placement) → awaiting the plan → connecting →
/// setting aside → then per round: planning (shards plan and lend themselves) → transferring (sent, and applied by every
/// target still receiving) → collecting dirty pages → hashing (pausing first for a stop-and-copy) → ... → digesting;
/// after the last wave, handing over. Each VM is stopped here only when the scheduler says its target verified and
/// resumed it; resumed here otherwise. One actor in four files by concern (as Garnet splits its session): this one
/// holds its state and the analysis up to the first round; .Rounds.cs a round's steps; .Handover.cs handover and failure;
/// .Reconcile.cs giving the migration up when its scheduler is lost or replaced.
/// </summary>
public sealed partial class SourceMigrationActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly MigrationId _migrationId;
    private readonly IReadOnlyList<IMigratableVm> _vms;
    private readonly MigrationOptions _options;
    private readonly SourceSettings _settings;
    private readonly IActorRef _scheduler;
    private readonly IActorRef[] _shardActors;
    private readonly IActorRef[] _vmActors;
    private readonly ConvergencePolicy _policy;
    private readonly RoundAccounting _account;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly Stopwatch _roundClock = new();

    // What the VMs and shards reported.
    private readonly Dictionary<int, VmContentsProfiled> _profiled = new();
    private readonly Dictionary<int, VmPaused> _paused = new();
    private readonly Dictionary<int, long> _pausedAt = new();
    private readonly Dictionary<int, VmDigest> _sourceDigests = new();
    private readonly Dictionary<int, int> _deferredPages = new();
    private readonly List<ShardRoundHashed> _hashed = new();
    private readonly List<ShardRoundPlanned> _planned = new();
    private ShardCounters _shardCounters = ShardCounters.Zero;

    // Fixed once the plan is in.
    private DataPlaneSender? _sender;
    private ImmutableArray<int> _targetOfVm;
    private int _targetCount;
    private IReadOnlyList<Wave> _waves = [];
    private FrozenSet<int>[]? _setAside;

    // The round under way and its wave.
    private Task _sending = Task.CompletedTask; // reads guest pages until it ends
    private int _round;
    private bool _stopAndCopy;
    private int _pending;
    private int _pagesInRound;
    /// <summary>Guests of the wave that reported, in this round's collection, that their hypervisor stopped them already.</summary>
    private int _stoppedInRound;
    private long _roundStartBytes;
    // Content records the built round sends, and which round that was (a progress report of a later round has none yet).
    private long _roundRecords;
    private int _roundRecordsOf = -1;
    private bool _roundSent;
    private readonly HashSet<int> _applied = new();
    private Wave _wave = new(0, 0, []);
    private int _waveRounds;
    /// <summary>What a stop-and-copy that fitted was decided on, until its pause's rest is checked against it.</summary>
    private ConvergenceInput? _decided;
    private bool _firstWaveRound;
    /// <summary>Targets still receiving: each gets every round's end until its wave's stop-and-copy round.</summary>
    private ulong _activeTargets;
    /// <summary>When the VMs' dirty logs were last collected all together (round 0, or set-aside): a wave's first dirty rate is measured from there.</summary>
    private double _collectedAllAt;
    private double _digestStarted;

    // Handover: VMs whose wave is through are the scheduler's to decide, and start elsewhere only with the fence's grant.
    private readonly HashSet<int> _transferred = new();
    private readonly ResumeFence _fence = new();
    private HostId[] _targetHosts = [];
    private readonly HashSet<int> _settled = new();
    /// <summary>CPU the VM actors spend reading guest memory, per round (in the report).</summary>
    private readonly SourceCpuMeter _cpu;
    /// <summary>VMs their target reported running (a hint: only the scheduler's word stops the copy here).</summary>
    private readonly HashSet<int> _landed = new();
    /// <summary>While the next wave is held: the previous wave's VMs not yet running anywhere, and the wave to start from.</summary>
    private HashSet<int>? _heldFor;
    private int _heldFrom;
    /// <summary>How long a wave waits at most for the previous wave's VMs to run again (a lost or slow scheduler must not stall the migration).</summary>
    private static readonly TimeSpan WaveHoldBound = TimeSpan.FromSeconds(1);
    /// <summary>VMs stopped here while later waves still read contents from guest pages: the host frees them after.</summary>
    private readonly List<SourceVmReleased> _freeLater = new();

    public SourceMigrationActor(MigrationId migrationId, IReadOnlyList<IMigratableVm> vms, MigrationOptions options, SourceSettings settings, IActorRef scheduler)
    {
        _migrationId = migrationId;
        _vms = vms;
        _options = options;
        _settings = settings;
        _scheduler = scheduler;
        _policy = ConvergencePolicy.Of(options, settings);
        _cpu = new SourceCpuMeter();
        _account = new RoundAccounting(settings.AssumedRateBytesPerSecond, Hosting.VmScatterMetrics.For(Context.System));
        int shards = settings.DedupShards;
        _shardActors = Enumerable.Range(0, shards).Select(i => Context.ActorOf(Props.Create(() => new DedupShardActor(i, shards, options.Deduplicate, vms)), $"dedup-{i}")).ToArray();
        _vmActors = vms.Select((vm, i) => Context.ActorOf(Props.Create(() => new SourceVmActor(i, vm, _shardActors, settings.SketchSize, _cpu)), $"vm-{i}")).ToArray();
        Analyzing();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    /// <summary>A failure inside a child (a shard or VM actor) means the migration's bookkeeping is broken: fail it, keep the VMs.</summary>
    protected override SupervisorStrategy SupervisorStrategy() => new OneForOneStrategy(0, TimeSpan.Zero, e =>
    {
        Self.Tell(new ChildFailed(e.GetBaseException().Message));
        return Directive.Stop;
    });

    protected override void PreStart()
    {
        // A scheduler lost mid-migration decides nothing more here: see .Reconcile.cs.
        if (!_scheduler.IsNobody() && _scheduler is not MinimalActorRef) Context.Watch(_scheduler);
        Broadcast(_vmActors, new CollectDirtyPages(0));
    }

    /// <summary>
    /// Closing the connections cuts a round short at its next write; only once it has ended may guest memory be freed
    /// (the host unmaps a released VM's memory, and its own stop unmaps them all right after this). So this one wait
    /// stays on the stopping actor's thread, bounded; no message is handled here any more.
    /// </summary>
    protected override void PostStop()
    {
        _sender?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
        try { _sending.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { /* the round's failure was reported already */ }
        FreeReleasedVms();
    }

    private void Analyzing()
    {
        _pending = _vms.Count;
        Receive<DirtyPagesCollected>(_ =>
        {
            if (--_pending > 0) return;
            _collectedAllAt = _clock.Elapsed.TotalSeconds;
            _hashed.Clear();
            Broadcast(_vmActors, new HashRound(0, StopAndCopy: false, _vms.Count));
        });
        // Placement needs only the VMs' profiles; the shards go on byte-comparing and indexing meanwhile (round 0 is
        // planned after they are done: the plan requests queue behind the VMs' batches).
        Receive<VmContentsProfiled>(m =>
        {
            _profiled[m.VmIndex] = m;
            if (_profiled.Count < _vms.Count) return;
            _pagesInRound = _profiled.Values.Sum(p => p.Pages);
            _account.AnalysisSeconds = _clock.Elapsed.TotalSeconds;
            _log.Debug("Migration {0}: analysed in {1:F3} s (dirty logs started in {2:F3} s)", _migrationId, _account.AnalysisSeconds, _collectedAllAt);
            var profiles = Enumerable.Range(0, _vms.Count).Select(v => Profile(v, _profiled[v])).ToArray();
            var union = profiles.Aggregate(new BottomKSketch(_settings.SketchSize), (u, p) => u.Union(BottomKSketch.FromValues(_settings.SketchSize, p.Sketch)));
            _scheduler.Tell(new VmsAnalyzed(_migrationId, profiles, (long)Math.Round(union.EstimateCount())));
            Become(AwaitingPlan);
        });
        ShardsFinishingRoundZero();
        CommonFailures();
    }

    /// <summary>Until round 0 is planned, shards report finishing its analysis: the exact distinct count, for the report.</summary>
    private void ShardsFinishingRoundZero() => Receive<ShardRoundHashed>(m => m.Round == 0, m =>
    {
        _hashed.Add(m);
        if (_hashed.Count == _shardActors.Length) _account.Round0DistinctPages = _hashed.Sum(h => h.DistinctContents);
    });

    private void AwaitingPlan()
    {
        ShardsFinishingRoundZero();
        Receive<BeginTransfer>(m =>
        {
            var targetOf = new int[_vms.Count];
            foreach (var a in m.Assignments) targetOf[a.VmIndex] = a.TargetIndex;
            _targetOfVm = [.. targetOf];
            _targetCount = m.Targets.Count;
            _targetHosts = m.Targets.OrderBy(t => t.Index).Select(t => t.HostId).ToArray();
            _activeTargets = TargetMask.All(_targetCount);
            _waves = WavePlan.Of(targetOf, _options.Handover);
            var endpoints = m.Targets.OrderBy(t => t.Index).Select(t => t.ToIPEndPoint()).ToArray();
            var dataPlane = _settings.DataPlane with { Transport = _options.GroupTransport, Compression = _options.Compression, LinkBitsPerSecond = _options.LinkBitsPerSecond };
            _sender = new DataPlaneSender(_migrationId.Value, m.DataPlaneSecret, endpoints, dataPlane);
            _sender.ConnectAsync(CancellationToken.None).PipeTo(Self, success: () => Connected.Instance, failure: e => new TransferStepFailed("connect", e.GetBaseException().Message));
            Timers.StartPeriodicTimer("progress", ProgressTick.Instance, _settings.ProgressInterval);
            Become(Connecting);
        });
        CommonFailures();
    }

    private void Connecting()
    {
        ShardsFinishingRoundZero();
        Receive<Connected>(_ =>
        {
            if (_sender!.TransportFallback is { } fallback) _log.Warning("Migration {0}: {1}", _migrationId, fallback);
            ReportUnreachable();
            // Only guests with a write log set aside: for a log that re-hashes all of memory (QEMU's here), it is a pass
            // over every page before round 0 can start, to leave out the few pages rewritten since analysis, which
            // round 1 carries either way (round 0 then sends their analysed copies).
            var logged = Enumerable.Range(0, _vms.Count).Where(v => _vms[v] is IWriteLoggedGuest).ToArray();
            if (!_options.SetAsideDirty || logged.Length == 0) { PlanRound(); return; }
            _setAside = Enumerable.Repeat(FrozenSet<int>.Empty, _vms.Count).ToArray();
            _pending = logged.Length;
            foreach (int v in logged) _vmActors[v].Tell(SetAsideDirtyPages.Instance);
            Become(SettingAside);
        });
        Receive<ProgressTick>(_ => { });
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    /// <summary>Round 0 leaves out what the guests rewrote while it was analysed and placed; round 1 carries it.</summary>
    private void SettingAside()
    {
        ShardsFinishingRoundZero();
        Receive<DirtyPagesSetAside>(m =>
        {
            _setAside![m.VmIndex] = m.Pages;
            if (--_pending > 0) return;
            _collectedAllAt = _clock.Elapsed.TotalSeconds;
            _account.SetAsidePages = _setAside.Sum(s => s.Count);
            PlanRound();
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Losses();
        LossNoticesIgnored();
        CommonFailures();
    }

    private VmProfile Profile(int v, VmContentsProfiled p) =>
        new(VmId(v), _vms[v].Description.MemoryBytes, p.NonZeroPages, p.ZeroPages, p.DistinctContents, _settings.SketchSize, p.Sketch);

    private VmDigest[] Digests(IEnumerable<int> vms) => vms.Select(v => _sourceDigests[v]).ToArray();

    private Dictionary<VmId, long> PausedAt(IEnumerable<int> vms) => vms.Where(_pausedAt.ContainsKey).ToDictionary(VmId, v => _pausedAt[v]);

    private void ReportProgress()
    {
        if (_sender is null) return;
        bool roundZero = _round == 0 || _wave.Targets == 0;
        var waveTargets = roundZero ? [] : DataPlaneSender.Targets(_wave.Targets).Where(t => t < _targetHosts.Length).Select(t => _targetHosts[t]).ToArray();
        _scheduler.Tell(new TransferProgress(_migrationId, _round, _sender.BytesSent, _sender.ContentRecordsSent, _pagesInRound, roundZero ? -1 : _wave.Index, waveTargets,
            StopAndCopy: _stopAndCopy && !roundZero, ContentRecordsInRound: _roundRecordsOf == _round ? _roundRecords : 0));
    }

    private VmId VmId(int vmIndex) => _vms[vmIndex].Description.Id;

    /// <summary>A decision for a VM this migration does not move is logged and dropped, never thrown on (a throw would restart nothing useful here).</summary>
    private void WithVm(VmId vmId, Action<int> action)
    {
        for (int i = 0; i < _vms.Count; i++)
            if (VmId(i) == vmId) { action(i); return; }
        _log.Warning("Migration {0}: ignoring a decision for VM {1}, which it does not move", _migrationId, vmId);
    }

    private static void Broadcast(IEnumerable<IActorRef> actors, object message)
    {
        foreach (var a in actors) a.Tell(message);
    }

    private sealed record Connected { public static readonly Connected Instance = new(); }
    private sealed record ProgressTick { public static readonly ProgressTick Instance = new(); }
    private sealed record FenceTick { public static readonly FenceTick Instance = new(); }
    private sealed record WaveHoldOver { public static readonly WaveHoldOver Instance = new(); }
    private sealed record LingerOver { public static readonly LingerOver Instance = new(); }

    /// <summary>How long a settled migration still refuses handover requests (rather than leave them to dead letters).</summary>
    private static readonly TimeSpan GrantLinger = TimeSpan.FromSeconds(15);
    private sealed record RoundSent(int Round);
    private sealed record RoundBuilt(BuiltRound Round);
    private sealed record TransferStepFailed(string Step, string Error);
    private sealed record ChildFailed(string Reason);
}
