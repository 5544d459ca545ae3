using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
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
/// resumed it; resumed here otherwise.
/// </summary>
public sealed class SourceMigrationActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Guid _migrationId;
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
    private readonly Dictionary<int, string> _sourceDigests = new();
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
    private long _roundStartBytes;
    private bool _roundSent;
    private readonly HashSet<int> _applied = new();
    private Wave _wave = new(0, 0, []);
    private int _waveRounds;
    private bool _firstWaveRound;
    /// <summary>Targets still receiving: each gets every round's end until its wave's stop-and-copy round.</summary>
    private ulong _activeTargets;
    /// <summary>When the VMs' dirty logs were last collected all together (round 0, or set-aside): a wave's first dirty rate is measured from there.</summary>
    private double _collectedAllAt;
    private double _digestStarted;

    // Handover: VMs whose wave is through are the scheduler's to decide.
    private readonly HashSet<int> _transferred = new();
    private readonly HashSet<int> _settled = new();
    /// <summary>VMs stopped here while later waves still read contents from guest pages: the host frees them after.</summary>
    private readonly List<SourceVmReleased> _freeLater = new();

    public SourceMigrationActor(Guid migrationId, IReadOnlyList<IMigratableVm> vms, MigrationOptions options, SourceSettings settings, IActorRef scheduler)
    {
        _migrationId = migrationId;
        _vms = vms;
        _options = options;
        _settings = settings;
        _scheduler = scheduler;
        _policy = ConvergencePolicy.Of(options, settings);
        _account = new RoundAccounting(settings.AssumedRateBytesPerSecond);
        int shards = settings.DedupShards;
        _shardActors = Enumerable.Range(0, shards).Select(i => Context.ActorOf(Props.Create(() => new DedupShardActor(i, shards, options.Deduplicate, vms)), $"dedup-{i}")).ToArray();
        _vmActors = vms.Select((vm, i) => Context.ActorOf(Props.Create(() => new SourceVmActor(i, vm, _shardActors, settings.SketchSize)), $"vm-{i}")).ToArray();
        Analyzing();
    }

    public ITimerScheduler Timers { get; set; } = null!;

    /// <summary>A failure inside a child (a shard or VM actor) means the migration's bookkeeping is broken: fail it, keep the VMs.</summary>
    protected override SupervisorStrategy SupervisorStrategy() => new OneForOneStrategy(0, TimeSpan.Zero, e =>
    {
        Self.Tell(new ChildFailed(e.GetBaseException().Message));
        return Directive.Stop;
    });

    protected override void PreStart() => Broadcast(_vmActors, new CollectDirtyPages(0));

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
            _activeTargets = TargetMask.All(_targetCount);
            _waves = WavePlan.Of(targetOf, _options.Handover);
            var endpoints = m.Targets.OrderBy(t => t.Index).Select(t => new IPEndPoint(IPAddress.Parse(t.Host), t.Port)).ToArray();
            var dataPlane = _settings.DataPlane with { Transport = _options.GroupTransport, Compression = _options.Compression, LinkBitsPerSecond = _options.LinkBitsPerSecond };
            _sender = new DataPlaneSender(_migrationId, m.DataPlaneKey, endpoints, dataPlane);
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
            if (!_options.SetAsideDirty) { PlanRound(); return; }
            _setAside = new FrozenSet<int>[_vms.Count];
            _pending = _vms.Count;
            Broadcast(_vmActors, SetAsideDirtyPages.Instance);
            Become(SettingAside);
        });
        Receive<ProgressTick>(_ => { });
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
        CommonFailures();
    }

    private void PlanRound()
    {
        _roundClock.Restart();
        _planned.Clear();
        bool defer = _round == 0 && _options.Staggered;
        ImmutableArray<int>? release = _firstWaveRound && _options.Staggered ? [.. _wave.Vms] : null;
        Broadcast(_shardActors, new PlanShardRound(_round, _targetOfVm, _targetCount, _round == 0 ? _setAside : null, defer, release));
        Become(Planning);
    }

    private void Planning()
    {
        ShardsFinishingRoundZero();
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<ShardRoundPlanned>(m =>
        {
            _planned.Add(m);
            foreach (var (vm, pages) in m.Plan.DeferredPages) _deferredPages[vm] = _deferredPages.GetValueOrDefault(vm) + pages;
            if (_planned.Count < _shardActors.Length) return;
            _shardCounters = _planned.Aggregate(ShardCounters.Zero, (sum, p) => sum.Add(p.Counters));
            var devices = _stopAndCopy
                ? _paused.Values.OrderBy(p => p.VmIndex).Select(p => new DeviceStateTransfer(p.VmIndex, _targetOfVm[p.VmIndex], ImmutableCollectionsMarshal.AsArray(p.DeviceState)!)).ToArray()
                : [];
            var built = RoundTransferBuilder.Build(_round, _planned.Select(p => (p.Shard, p.Plan)), _targetCount, _stopAndCopy, devices, _activeTargets, _wave.Targets);
            _account.GroupsOrdered(built.GroupSwitches, built.GroupSwitchesLowerBound);
            if (_round == 0) _account.RoundPlanned(_pagesInRound);
            _applied.Clear();
            _roundSent = false;
            _roundStartBytes = _sender!.BytesSent;
            int round = _round;
            _sending = _sender.SendRoundAsync(built.Transfer, new LeasedShardReader(_planned.Select(p => (p.Shard, p.Lease)), _options.SetAsideDirty), CancellationToken.None);
            _sending.PipeTo(Self, success: () => new RoundSent(round), failure: e => new TransferStepFailed($"send round {round}", e.GetBaseException().Message));
            Become(Transferring);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void Transferring()
    {
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<RoundSent>(m =>
        {
            Broadcast(_shardActors, new ReturnShardLease(m.Round));
            _roundSent = true;
            MaybeRoundDone();
        });
        Receive<RoundApplied>(m => m.MigrationId == _migrationId, m =>
        {
            if (m.Error is not null) { Fail($"target {m.TargetIndex} could not apply round {m.Round}: {m.Error}"); return; }
            if (m.Round != _round) { Fail($"target {m.TargetIndex} acknowledged round {m.Round} during round {_round}"); return; }
            _applied.Add(m.TargetIndex);
            MaybeRoundDone();
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void MaybeRoundDone()
    {
        if (!_roundSent || _applied.Count < System.Numerics.BitOperations.PopCount(_activeTargets)) return;
        _account.RoundEnded(_roundClock.Elapsed.TotalSeconds, _sender!.BytesSent - _roundStartBytes);
        ReportProgress();
        if (_stopAndCopy)
        {
            // The wave's targets have their VMs whole; they get nothing more. Each VM began digesting its memory when
            // it paused: wait for whichever are not done, then the next wave.
            _activeTargets &= ~_wave.Targets;
            _transferred.UnionWith(_wave.Vms);
            Become(Digesting);
            MaybeWaveTransferred();
            return;
        }
        _round++;
        if (_round == 1) StartWave(_waves[0]);
        else
        {
            _waveRounds++;
            _firstWaveRound = false;
            CollectWaveDirtyPages();
        }
    }

    /// <summary>A wave begins with its VMs' dirty pages (and, staggered, the pages of theirs that round 0 deferred).</summary>
    private void StartWave(Wave wave)
    {
        _wave = wave;
        _waveRounds = 1; // round 0 was theirs too
        _firstWaveRound = true;
        _stopAndCopy = false;
        CollectWaveDirtyPages();
    }

    private void CollectWaveDirtyPages()
    {
        _pending = _wave.Vms.Count;
        _pagesInRound = 0;
        foreach (int vm in _wave.Vms) _vmActors[vm].Tell(new CollectDirtyPages(_round));
        Become(CollectingDirty);
    }

    private void CollectingDirty()
    {
        Receive<DirtyPagesCollected>(m =>
        {
            _pagesInRound += m.Pages;
            if (--_pending > 0) return;
            // The wave's first round also carries the pages of its VMs that round 0 deferred; its dirty pages were
            // dirtied since the collection before round 0's send, later ones since the last round.
            var decision = _policy.Decide(new ConvergenceInput(
                DirtyPages: _pagesInRound,
                DirtySeconds: _firstWaveRound ? _clock.Elapsed.TotalSeconds - _collectedAllAt : _account.LastRoundSeconds,
                DeferredPages: _firstWaveRound ? _wave.Vms.Sum(v => _deferredPages.GetValueOrDefault(v)) : 0,
                WirePerPage: _sender!.ContentRawBytes > 0 ? (double)_sender.ContentEncodedBytes / _sender.ContentRawBytes : 1,
                RateBytesPerSecond: _account.MeasuredRate,
                WaveRounds: _waveRounds,
                WaveLabel: _waves.Count > 1 ? $"wave {_wave.Index + 1} of {_waves.Count}: " : ""));
            _account.WaveDecided(decision, _waveRounds);
            _stopAndCopy = decision.StopAndCopy;
            if (decision.StopAndCopy && !decision.Fits)
            {
                if (_options.NonConvergence == NonConvergencePolicy.Abort) { Fail($"{_account.Convergence}; aborted by policy, every VM keeps running on the source"); return; }
                _log.Warning("Migration {0}: {1}; forcing stop-and-copy", _migrationId, _account.Convergence);
            }
            _pagesInRound = decision.PagesThisRound;
            _account.RoundPlanned(_pagesInRound);
            _hashed.Clear();
            _paused.Clear();
            foreach (int vm in _wave.Vms) _vmActors[vm].Tell(new HashRound(_round, _stopAndCopy, _wave.Vms.Count, decision.HoldBack));
            Become(HashingDirty);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void HashingDirty()
    {
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<VmPaused>(m =>
        {
            if (_paused.Count == 0) _digestStarted = _clock.Elapsed.TotalSeconds;
            _paused[m.VmIndex] = m;
            _pausedAt[m.VmIndex] = m.PausedAtUnixMs;
            MaybeHashed();
        });
        Receive<ShardRoundHashed>(m => { _hashed.Add(m); MaybeHashed(); });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void MaybeHashed()
    {
        if (_hashed.Count < _shardActors.Length || (_stopAndCopy && _paused.Count < _wave.Vms.Count)) return;
        PlanRound();
    }

    private void Digesting()
    {
        Receive<SourceDigestComputed>(m => { _sourceDigests[m.VmIndex] = m.Digest; MaybeWaveTransferred(); });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    /// <summary>With the wave's digests in: its VMs go to the scheduler for handover, and the next wave starts.</summary>
    private void MaybeWaveTransferred()
    {
        if (_wave.Vms.Any(v => !_sourceDigests.ContainsKey(v))) return;
        _account.WaveDigested(_clock.Elapsed.TotalSeconds - _digestStarted);
        if (_wave.Index + 1 < _waves.Count)
        {
            _scheduler.Tell(new VmsTransferred(_migrationId, Digests(_wave.Vms), PausedAt(_wave.Vms)));
            _round++;
            StartWave(_waves[_wave.Index + 1]);
            return;
        }
        Timers.Cancel("progress");
        var all = Enumerable.Range(0, _vms.Count).ToArray();
        var sent = new SenderCounters(_sender!.BytesSent, _sender.FramesSent, _sender.ContentRecordsSent, _sender.ContentRawBytes, _sender.ContentEncodedBytes, _sender.MapRecordsSent, _sender.ContentsWithdrawn);
        _scheduler.Tell(new TransferCompleted(_migrationId, Digests(all), PausedAt(all), _account.Stats(sent, _shardCounters, _waves.Count, _round + 1)));
        FreeReleasedVms();
        Become(HandingOver);
    }

    private void HandingOver()
    {
        Handovers();
        Receive<AbortMigration>(m => ResumeUnsettled(m.Reason));
        Receive<VmStepFailed>(m => _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, VmId(m.VmIndex), m.Step, m.Error));
        Receive<ChildFailed>(m => _log.Error("Migration {0}: {1}", _migrationId, m.Reason));
        Receive<RoundApplied>(_ => { });
        Receive<RoundSent>(m => Broadcast(_shardActors, new ReturnShardLease(m.Round)));
        Receive<ProgressTick>(_ => { });
    }

    /// <summary>
    /// The scheduler's decisions on VMs whose wave is through: stop a VM here once its target runs it, or let it run here
    /// again. They may come while later waves are still being sent.
    /// </summary>
    private void Handovers()
    {
        Receive<ReleaseSourceVm>(m => WithVm(m.VmId, vm => _vmActors[vm].Tell(new StopSourceVm("handed over"))));
        Receive<ResumeSourceVm>(m => WithVm(m.VmId, vm =>
        {
            _log.Warning("Migration {0}: VM {1} resumes on the source: {2}", _migrationId, m.VmId, m.Reason);
            _vmActors[vm].Tell(new ResumeVm(m.Reason));
        }));
        Receive<VmStopped>(m =>
        {
            var released = new SourceVmReleased(_migrationId, VmId(m.VmIndex));
            _scheduler.Tell(released);
            if (_transferred.Count == _vms.Count) Context.Parent.Tell(released);
            else _freeLater.Add(released);
            Settle(m.VmIndex);
        });
        Receive<VmResumedHere>(m =>
        {
            _scheduler.Tell(new SourceVmResumed(_migrationId, VmId(m.VmIndex)));
            Settle(m.VmIndex);
        });
        // Stopping or resuming one VM that failed does not fail the migration: that VM is settled as it is.
        Receive<VmStepFailed>(m => m.Step is "resume" or "stop", m =>
        {
            _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, VmId(m.VmIndex), m.Step, m.Error);
            Settle(m.VmIndex);
        });
    }

    private void Settle(int vmIndex)
    {
        _settled.Add(vmIndex);
        if (_settled.Count == _vms.Count) Context.Stop(Self);
    }

    /// <summary>No round reads guest pages any more: the host may free the VMs stopped here.</summary>
    private void FreeReleasedVms()
    {
        foreach (var released in _freeLater) Context.Parent.Tell(released);
        _freeLater.Clear();
    }

    private void CommonFailures()
    {
        Receive<VmStepFailed>(m => Fail($"VM {VmId(m.VmIndex)}: {m.Step} failed: {m.Error}"));
        Receive<TransferStepFailed>(m => Fail($"{m.Step} failed: {m.Error}"));
        Receive<ChildFailed>(m => Fail(m.Reason));
        Receive<AbortMigration>(m => Fail(m.Reason, tellScheduler: false));
    }

    /// <summary>
    /// Nothing is lost: every VM paused for this migration runs again here, and the scheduler is told why. A VM whose wave
    /// is through waits for the scheduler instead (its target may already be resuming it; the scheduler resumes it here
    /// when it has not).
    /// </summary>
    private void Fail(string reason, bool tellScheduler = true)
    {
        _log.Error("Migration {0} failed on the source: {1}", _migrationId, reason);
        Timers.CancelAll();
        if (tellScheduler) _scheduler.Tell(new TransferFailed(_migrationId, reason));
        ResumeUnsettled(reason);
        Become(HandingOver);
    }

    private void ResumeUnsettled(string reason)
    {
        // Sent to every unsettled VM, paused or not: a pause still in flight completes before the VM actor takes this.
        for (int v = 0; v < _vms.Count; v++)
            if (!_settled.Contains(v) && !_transferred.Contains(v)) _vmActors[v].Tell(new ResumeVm(reason));
    }

    private VmProfile Profile(int v, VmContentsProfiled p) =>
        new(VmId(v), _vms[v].Description.MemoryBytes, p.NonZeroPages, p.ZeroPages, p.DistinctContents, _settings.SketchSize, p.Sketch);

    private VmDigest[] Digests(IEnumerable<int> vms) => vms.Select(v => new VmDigest(VmId(v), _sourceDigests[v])).ToArray();

    private Dictionary<string, long> PausedAt(IEnumerable<int> vms) => vms.Where(_pausedAt.ContainsKey).ToDictionary(VmId, v => _pausedAt[v]);

    private void ReportProgress()
    {
        if (_sender is null) return;
        _scheduler.Tell(new TransferProgress(_migrationId, _round, _sender.BytesSent, _sender.ContentRecordsSent, _pagesInRound));
    }

    private string VmId(int vmIndex) => _vms[vmIndex].Description.Id;

    /// <summary>A decision for a VM this migration does not move is logged and dropped, never thrown on (a throw would restart nothing useful here).</summary>
    private void WithVm(string vmId, Action<int> action)
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
    private sealed record RoundSent(int Round);
    private sealed record TransferStepFailed(string Step, string Error);
    private sealed record ChildFailed(string Reason);
}
