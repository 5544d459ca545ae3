using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane;
using VMScatter.DataPlane.Source;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Scheduling;

namespace VMScatter.Cluster.Source;

/// <summary>
/// One migration on the source host. States: analysing (round 0 hashed and deduplicated, profiles sent for
/// placement) → waiting for the plan → round 0 → waves. A wave is a set of target hosts whose VMs complete together:
/// rounds over those VMs (plan with the shards, push on the data plane, wait until every target still receiving
/// applied it; repeat with the dirty pages until the rest fits the downtime target or the round limit), then pause
/// them and send the rest with their device states, then their digests go to the scheduler, which hands them over
/// while the next wave goes on. With the staggered handover each target is a wave and round 0 carries only what
/// several targets need; otherwise one wave holds every target. Handing over: stop each VM here only when the
/// scheduler says its target verified and resumed it; resume it here otherwise.
/// </summary>
public sealed class SourceMigrationActor : ReceiveActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly Guid _migrationId;
    private readonly IReadOnlyList<IMigratableVm> _vms;
    private readonly MigrationOptions _options;
    private readonly SourceSettings _settings;
    private readonly IActorRef _scheduler;
    private readonly DedupShard[] _shards;
    private readonly IActorRef[] _shardActors;
    private readonly IActorRef[] _vmActors;
    private readonly Stopwatch _roundClock = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<double> _roundSeconds = new();
    private double _analysisSeconds, _digestStarted, _digestSeconds;
    private long _groupSwitches, _groupSwitchesLowerBound;
    private double _lastRoundSeconds;
    /// <summary>Whether every wave's rest fitted the downtime target (false once one was forced).</summary>
    private bool _converged = true;
    private string _convergence = "";
    private readonly List<int> _dirtyPerRound = new();
    private readonly Dictionary<int, VmPaused> _paused = new();
    private readonly Dictionary<int, long> _pausedAt = new();
    private readonly Dictionary<int, string> _sourceDigests = new();
    private readonly HashSet<int> _settled = new();
    private DataPlaneSender? _sender;
    /// <summary>The round being sent: it reads guest pages until it ends.</summary>
    private Task _sending = Task.CompletedTask;
    private ImmutableArray<int> _targetOfVm;
    private int _targetCount;
    private int _round;
    private bool _stopAndCopy;
    private int _pending;
    private int _pagesInRound;
    private double _measuredRate;
    private long _roundStartBytes;
    private readonly List<ShardRoundHashed> _hashed = new();
    private readonly Dictionary<int, VmContentsProfiled> _profiled = new();
    private long _round0Distinct;
    private readonly List<ShardRoundPlanned> _planned = new();
    private readonly HashSet<int> _applied = new();
    private bool _roundSent;
    private FrozenSet<int>[]? _setAside;
    private int _setAsidePages;
    // Waves: target hosts whose VMs complete together, in order; the current one's VMs and targets.
    private int[][] _waves = [];
    private int _wave;
    private int[] _waveVms = [];
    private ulong _waveTargets;
    private int _waveRounds;
    private bool _firstWaveRound;
    /// <summary>Rounds a VM went through (round 0, its wave's pre-copy rounds and stop-and-copy), the most of any wave.</summary>
    private int _vmRounds;
    /// <summary>Targets still receiving: each gets every round's end until its wave's stop-and-copy round.</summary>
    private ulong _activeTargets;
    /// <summary>VMs whose wave is through: paused here with digests, their handover is the scheduler's to decide.</summary>
    private readonly HashSet<int> _transferred = new();
    private readonly Dictionary<int, int> _deferredPages = new();
    /// <summary>VMs stopped here while later waves still read contents from guest pages (a stopped VM's pages still hold them): the host frees them after.</summary>
    private readonly List<SourceVmReleased> _freeLater = new();
    /// <summary>When the VMs' dirty logs were last collected all together (set-aside, or round 0): a wave's dirty rate is measured from there.</summary>
    private double _collectedAllAt;
    private bool _holdBack;

    public SourceMigrationActor(Guid migrationId, IReadOnlyList<IMigratableVm> vms, MigrationOptions options, SourceSettings settings, IActorRef scheduler)
    {
        _migrationId = migrationId;
        _vms = vms;
        _options = options;
        _settings = settings;
        _scheduler = scheduler;
        _measuredRate = settings.AssumedRateBytesPerSecond;
        _shards = Enumerable.Range(0, settings.DedupShards).Select(s => new DedupShard(s, settings.DedupShards, options.Deduplicate)).ToArray();
        _shardActors = _shards.Select((s, i) => Context.ActorOf(Props.Create(() => new DedupShardActor(i, s, vms)), $"dedup-{i}")).ToArray();
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

    protected override void PreStart()
    {
        _round = 0;
        Broadcast(_vmActors, new CollectDirtyPages(0));
    }

    protected override void PostStop()
    {
        _sender?.DisposeAsync().AsTask().Wait(TimeSpan.FromSeconds(5));
        // A round cut short ends at its next write to the closed connections; only then may guest memory go.
        try { _sending.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        FreeReleasedVms();
    }

    /// <summary>No round reads guest pages any more: the host may free the VMs stopped here.</summary>
    private void FreeReleasedVms()
    {
        foreach (var released in _freeLater) Context.Parent.Tell(released);
        _freeLater.Clear();
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
            _analysisSeconds = _clock.Elapsed.TotalSeconds;
            var profiles = MergeProfiles();
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
        if (_hashed.Count == _shards.Length) _round0Distinct = _hashed.Sum(h => h.DistinctContents);
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
            _activeTargets = _targetCount == 64 ? ulong.MaxValue : (1UL << _targetCount) - 1;
            var used = targetOf.Distinct().Order().ToArray();
            _waves = _options.Staggered ? used.Select(t => new[] { t }).ToArray() : [used];
            var endpoints = m.Targets.OrderBy(t => t.Index).Select(t => new IPEndPoint(IPAddress.Parse(t.Host), t.Port)).ToArray();
            var dataPlane = _settings.DataPlane with
            {
                Transport = DataPlaneSettings.ParseTransport(_options.GroupTransport),
                Compression = DataPlaneSettings.ParseCompression(_options.Compression),
                LinkBitsPerSecond = _options.LinkBitsPerSecond,
            };
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
            _setAsidePages = _setAside.Sum(s => s.Count);
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
        ImmutableArray<int>? release = _firstWaveRound && _options.Staggered ? [.. _waveVms] : null;
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
            if (_planned.Count < _shards.Length) return;
            var transfer = BuildTransfer();
            _applied.Clear();
            _roundSent = false;
            _roundStartBytes = _sender!.BytesSent;
            _sending = _sender.SendRoundAsync(transfer, new ShardContentReader(_shards, _options.SetAsideDirty), CancellationToken.None);
            _sending.PipeTo(Self, success: () => new RoundSent(transfer.Round), failure: e => new TransferStepFailed($"send round {transfer.Round}", e.GetBaseException().Message));
            Become(Transferring);
        });
        Receive<ProgressTick>(_ => ReportProgress());
        Handovers();
        CommonFailures();
    }

    private void Transferring()
    {
        Receive<SourceDigestComputed>(m => _sourceDigests[m.VmIndex] = m.Digest);
        Receive<RoundSent>(_ => { _roundSent = true; MaybeRoundDone(); });
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
        double seconds = Math.Max(_roundClock.Elapsed.TotalSeconds, 1e-3);
        _roundSeconds.Add(seconds);
        _lastRoundSeconds = seconds;
        long bytes = _sender!.BytesSent - _roundStartBytes;
        // The best rate any round reached: small rounds are mostly fixed costs and would understate the link. The
        // configured rate is only the assumption before anything was measured.
        if (bytes > 0) _measuredRate = _roundSeconds.Count == 1 ? bytes / seconds : Math.Max(_measuredRate, bytes / seconds);
        ReportProgress();
        if (_stopAndCopy)
        {
            // The wave's targets have their VMs whole; they get nothing more. Each VM began digesting its memory when
            // it paused: wait for whichever are not done, then the next wave.
            _activeTargets &= ~_waveTargets;
            foreach (int vm in _waveVms) _transferred.Add(vm);
            Become(Digesting);
            MaybeWaveTransferred();
            return;
        }
        _round++;
        if (_round == 1) StartWave(0);
        else
        {
            _waveRounds++;
            _firstWaveRound = false;
            CollectWaveDirtyPages();
        }
    }

    /// <summary>A wave begins with its VMs' dirty pages (and, staggered, the pages of theirs that round 0 deferred).</summary>
    private void StartWave(int wave)
    {
        _wave = wave;
        _waveTargets = _waves[wave].Aggregate(0UL, (mask, t) => mask | 1UL << t);
        _waveVms = Enumerable.Range(0, _vms.Count).Where(v => (_waveTargets >> _targetOfVm[v] & 1) != 0).ToArray();
        _waveRounds = 1; // round 0 was theirs too
        _firstWaveRound = true;
        _stopAndCopy = false;
        CollectWaveDirtyPages();
    }

    private void CollectWaveDirtyPages()
    {
        _pending = _waveVms.Length;
        _pagesInRound = 0;
        foreach (int vm in _waveVms) _vmActors[vm].Tell(new CollectDirtyPages(_round));
        Become(CollectingDirty);
    }

    private void CollectingDirty()
    {
        Receive<DirtyPagesCollected>(m =>
        {
            _pagesInRound += m.Pages;
            if (--_pending > 0) return;
            // The wave's first round also carries the pages of its VMs that round 0 deferred.
            int dirty = _pagesInRound;
            int deferred = _firstWaveRound ? _waveVms.Sum(v => _deferredPages.GetValueOrDefault(v)) : 0;
            _pagesInRound += deferred;
            // Stop and copy once the rest, as it will go on the wire (the compression seen so far), can be sent at the best
            // rate a round achieved within the downtime target less what the handover itself takes; or at the limit.
            double wirePerPage = _sender!.ContentRawBytes > 0 ? (double)_sender.ContentEncodedBytes / _sender.ContentRawBytes : 1;
            double restSeconds = Page.BytesOf(_pagesInRound) * wirePerPage / _measuredRate;
            // Dirtied since these VMs' previous collection: the last round, or (a wave's first) the one before round 0.
            double dirtyRate = dirty / Math.Max(1e-3, _firstWaveRound ? _clock.Elapsed.TotalSeconds - _collectedAllAt : _lastRoundSeconds);
            int maxRounds = Math.Max(1, _options.MaxRounds);
            double sendBudgetMs = Math.Max(_options.DowntimeTargetMs / 4.0, _options.DowntimeTargetMs - _settings.HandoverReserve.TotalMilliseconds);
            bool fits = restSeconds * 1000 <= sendBudgetMs;
            _stopAndCopy = fits || _waveRounds >= maxRounds - 1;
            string wave = _waves.Length > 1 ? $"wave {_wave + 1} of {_waves.Length}: " : "";
            string convergence = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{wave}{(fits ? "converged" : "NOT converged")} after {_waveRounds} pre-copy rounds: {_pagesInRound} dirty pages left (guests dirtying {dirtyRate:0} pages/s), " +
                $"≈ {restSeconds * 1000:0} ms to send at {_measuredRate / (1 << 20):0.0} MiB/s against {sendBudgetMs:0} ms of a {_options.DowntimeTargetMs} ms target " +
                $"({_options.DowntimeTargetMs - sendBudgetMs:0} ms kept for the handover)");
            if (_stopAndCopy)
            {
                // The report keeps the last wave's account, or that of a wave that did not converge.
                if (_converged || !fits) _convergence = convergence;
                _converged &= fits;
                _vmRounds = Math.Max(_vmRounds, _waveRounds + 1);
            }
            if (_stopAndCopy && !fits)
            {
                if (_options.NonConvergence == "abort") { Fail($"{_convergence}; aborted by policy, every VM keeps running on the source"); return; }
                _log.Warning("Migration {0}: {1}; forcing stop-and-copy", _migrationId, _convergence);
            }
            // A page the guest already rewrote during the migration is likely rewritten again (its working set): when the
            // stop-and-copy can take these pages, and what the guest will dirty while this round sends the deferred
            // ones, they wait for it instead of going now and again then.
            _holdBack = false;
            if (!_stopAndCopy && deferred > 0 && dirty > 0 && _options.SetAsideDirty)
            {
                double roundSeconds = Page.BytesOf(deferred) * wirePerPage / _measuredRate;
                double expectedPages = dirty + dirtyRate * roundSeconds;
                _holdBack = Page.BytesOf((long)expectedPages) * wirePerPage / _measuredRate * 1000 <= sendBudgetMs;
                if (_holdBack) _pagesInRound = deferred;
            }
            _dirtyPerRound.Add(_pagesInRound);
            _hashed.Clear();
            _paused.Clear();
            foreach (int vm in _waveVms) _vmActors[vm].Tell(new HashRound(_round, _stopAndCopy, _waveVms.Length, _holdBack));
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
        if (_hashed.Count < _shards.Length || (_stopAndCopy && _paused.Count < _waveVms.Length)) return;
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
        if (_waveVms.Any(v => !_sourceDigests.ContainsKey(v))) return;
        _digestSeconds = Math.Max(_digestSeconds, _clock.Elapsed.TotalSeconds - _digestStarted);
        if (_wave + 1 < _waves.Length)
        {
            _scheduler.Tell(new VmsTransferred(_migrationId, Digests(_waveVms), PausedAt(_waveVms)));
            _round++;
            StartWave(_wave + 1);
            return;
        }
        Timers.Cancel("progress");
        var all = Enumerable.Range(0, _vms.Count).ToArray();
        _scheduler.Tell(new TransferCompleted(_migrationId, Digests(all), PausedAt(all), Stats()));
        FreeReleasedVms();
        Become(HandingOver);
    }

    private VmDigest[] Digests(IEnumerable<int> vms) => vms.Select(v => new VmDigest(_vms[v].Description.Id, _sourceDigests[v])).ToArray();

    private Dictionary<string, long> PausedAt(IEnumerable<int> vms) => vms.Where(_pausedAt.ContainsKey).ToDictionary(v => _vms[v].Description.Id, v => _pausedAt[v]);

    private void HandingOver()
    {
        Handovers();
        Receive<AbortMigration>(m => ResumeUnsettled(m.Reason));
        Receive<VmStepFailed>(m => _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, _vms[m.VmIndex].Description.Id, m.Step, m.Error));
        Receive<ChildFailed>(m => _log.Error("Migration {0}: {1}", _migrationId, m.Reason));
        Receive<RoundApplied>(_ => { });
        Receive<ProgressTick>(_ => { });
    }

    /// <summary>
    /// The scheduler's decisions on VMs whose wave is through: stop a VM here once its target runs it, or let it run here
    /// again. They may come while later waves are still being sent.
    /// </summary>
    private void Handovers()
    {
        Receive<ReleaseSourceVm>(m => _vmActors[IndexOf(m.VmId)].Tell(new StopSourceVm("handed over")));
        Receive<ResumeSourceVm>(m =>
        {
            _log.Warning("Migration {0}: VM {1} resumes on the source: {2}", _migrationId, m.VmId, m.Reason);
            _vmActors[IndexOf(m.VmId)].Tell(new ResumeVm(m.Reason));
        });
        Receive<VmStopped>(m =>
        {
            var released = new SourceVmReleased(_migrationId, _vms[m.VmIndex].Description.Id);
            _scheduler.Tell(released);
            if (_transferred.Count == _vms.Count) Context.Parent.Tell(released);
            else _freeLater.Add(released);
            Settle(m.VmIndex);
        });
        Receive<VmResumedHere>(m =>
        {
            _scheduler.Tell(new SourceVmResumed(_migrationId, _vms[m.VmIndex].Description.Id));
            Settle(m.VmIndex);
        });
        // Stopping or resuming one VM that failed does not fail the migration: that VM is settled as it is.
        Receive<VmStepFailed>(m => m.Step is "resume" or "stop", m =>
        {
            _log.Error("Migration {0}: VM {1}: {2} failed: {3}", _migrationId, _vms[m.VmIndex].Description.Id, m.Step, m.Error);
            Settle(m.VmIndex);
        });
    }

    private void Settle(int vmIndex)
    {
        _settled.Add(vmIndex);
        if (_settled.Count == _vms.Count) Context.Stop(Self);
    }

    private void CommonFailures()
    {
        Receive<VmStepFailed>(m => Fail($"VM {_vms[m.VmIndex].Description.Id}: {m.Step} failed: {m.Error}"));
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

    private RoundTransfer BuildTransfer()
    {
        // Two passes over the groups: first the contents several pages need, then those one page alone needs (the
        // guest's writable working set is among them; what it rewrites before its turn is withdrawn, not sent).
        var groups = new Dictionary<ulong, List<long>>();
        var soleGroups = new Dictionary<ulong, List<long>>();
        var maps = Enumerable.Range(0, _targetCount).Select(_ => new List<PageMap>()).ToArray();
        foreach (var planned in _planned.OrderBy(p => p.Shard))
        {
            foreach (var (mask, ids) in planned.Plan.ContentsByGroup)
                foreach (long id in ids)
                {
                    var pass = planned.Plan.SoleContents.Contains(id) ? soleGroups : groups;
                    if (!pass.TryGetValue(mask, out var list)) pass[mask] = list = new();
                    list.Add(id);
                }
            for (int t = 0; t < _targetCount; t++)
                foreach (var (vm, page, id) in planned.Plan.MapsByTarget[t]) maps[t].Add(new PageMap(vm, page, id));
        }
        // Each pass in the order that makes target hosts join and leave least (a round starts and ends with none joined).
        var order = GroupScheduler.Order(groups.Keys);
        var soleOrder = GroupScheduler.Order(soleGroups.Keys, start: order.Count > 0 ? order[^1] : 0);
        _groupSwitches += GroupScheduler.Switches([.. order, .. soleOrder]);
        _groupSwitchesLowerBound += GroupScheduler.LowerBound(groups.Keys.Union(soleGroups.Keys).ToArray());
        var ordered = order.Select(mask => new GroupTransfer(mask, groups[mask]))
            .Concat(soleOrder.Select(mask => new GroupTransfer(mask, soleGroups[mask]))).ToArray();
        var devices = _stopAndCopy
            ? _paused.Values.OrderBy(p => p.VmIndex).Select(p => new DeviceStateTransfer(p.VmIndex, _targetOfVm[p.VmIndex], ImmutableCollectionsMarshal.AsArray(p.DeviceState)!)).ToArray()
            : [];
        if (_round == 0) _dirtyPerRound.Add(_pagesInRound);
        return new RoundTransfer(_round, _stopAndCopy, ordered, maps, devices, _activeTargets, _stopAndCopy ? _waveTargets : 0);
    }

    private IReadOnlyList<VmProfile> MergeProfiles() =>
        Enumerable.Range(0, _vms.Count).Select(v =>
        {
            var p = _profiled[v];
            return new VmProfile(_vms[v].Description.Id, _vms[v].Description.MemoryBytes, p.NonZeroPages, p.ZeroPages, p.DistinctContents, _settings.SketchSize, p.Sketch);
        }).ToArray();

    private TransferStats Stats() => new(
        _vmRounds,
        _sender!.BytesSent,
        _sender.FramesSent,
        _sender.ContentRecordsSent,
        _sender.ContentRawBytes,
        _sender.ContentEncodedBytes,
        _sender.MapRecordsSent,
        _shards.Sum(s => s.DistinctContents),
        _shards.Sum(s => s.Index.ByteCompares),
        _shards.Sum(s => s.Index.Collisions),
        _shards.Sum(s => s.RacedPages),
        _dirtyPerRound.ToArray(),
        _analysisSeconds,
        _roundSeconds.ToArray(),
        _digestSeconds,
        _groupSwitches,
        _groupSwitchesLowerBound,
        _converged,
        _convergence,
        _setAsidePages,
        _sender.ContentsWithdrawn,
        _round0Distinct,
        _waves.Length,
        _round + 1);

    private void ReportProgress()
    {
        if (_sender is null) return;
        _scheduler.Tell(new TransferProgress(_migrationId, _round, _sender.BytesSent, _sender.ContentRecordsSent, _pagesInRound));
    }

    private int IndexOf(string vmId)
    {
        for (int i = 0; i < _vms.Count; i++) if (_vms[i].Description.Id == vmId) return i;
        throw new ArgumentException($"VM {vmId} is not part of migration {_migrationId}");
    }

    private void Broadcast(IEnumerable<IActorRef> actors, object message)
    {
        foreach (var a in actors) a.Tell(message);
    }

    private sealed record Connected { public static readonly Connected Instance = new(); }
    private sealed record ProgressTick { public static readonly ProgressTick Instance = new(); }
    private sealed record RoundSent(int Round);
    private sealed record TransferStepFailed(string Step, string Error);
    private sealed record ChildFailed(string Reason);

    /// <summary>Data plane reads contents from the shard that owns them (shards are idle while a round is sent).</summary>
    private sealed class ShardContentReader(DedupShard[] shards, bool skipRewritten) : IContentReader
    {
        public bool TryRead(long contentId, ulong targetMask, Span<byte> page, out ContentHash hash) =>
            shards[contentId % shards.Length].TryRead(contentId, targetMask, page, out hash);

        // Only a log that records every write can say a page was rewritten without collecting it (QEMU's here cannot).
        public bool TryWithdraw(long contentId, ulong targetMask)
        {
            var shard = shards[contentId % shards.Length];
            return skipRewritten && shard.TryWithdraw(contentId, targetMask, shard.Rewritten);
        }
    }
}
