using System.Collections.Frozen;
using System.Collections.Immutable;
using System.Runtime.InteropServices;
using Akka.Actor;
using Akka.Event;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;
using VMScatter.Domain.Concurrency;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;

namespace VMScatter.Cluster.Source;

/// <summary>
/// One running VM on the source during a migration. Collects its dirty log, hashes the round's pages off the
/// actor thread and routes (page, hash) pairs to the dedup shard that owns each hash; pauses it for the
/// stop-and-copy round; and stops or resumes it when the scheduler has decided.
/// </summary>
public sealed class SourceVmActor : ReceiveActor, IWithStash
{
    private readonly int _vmIndex;
    private readonly IMigratableVm _vm;
    private readonly IReadOnlyList<IActorRef> _shards;
    private readonly int _sketchSize;
    private readonly SourceCpuMeter _cpu;
    private int[] _roundPages = [];
    /// <summary>The write-log generation after the collection that gave <see cref="_roundPages"/>.</summary>
    private int _roundGeneration;
    /// <summary>Pages collected but left for a later round (round 0's set-aside, a wave's held-back working set); the next collection adds them back.</summary>
    private int[] _setAside = [];
    private int _pauses;
    private readonly ILoggingAdapter _log = Context.GetLogger();

    public IStash Stash { get; set; } = null!;

    public SourceVmActor(int vmIndex, IMigratableVm vm, IReadOnlyList<IActorRef> shards, int sketchSize, SourceCpuMeter? cpu = null)
    {
        _cpu = cpu ?? new SourceCpuMeter();
        _vmIndex = vmIndex;
        _vm = vm;
        _shards = shards;
        _sketchSize = sketchSize;
        Ready();
    }

    private void Ready()
    {
        // Collecting can be a pass over all guest memory (a backend that finds dirty pages by re-hashing, as QEMU's
        // does), so it runs off the actor thread; nothing else is handled until the round's pages are known.
        Receive<CollectDirtyPages>(m =>
        {
            int round = m.Round;
            var setAside = _setAside; // read here, not from the bulk thread
            bool all = m.AllPages;
            var cpu = _cpu;
            var helpers = _vm as IHelperCpu;
            BulkWork.Run(() => cpu.Measure(round, () =>
            {
                if (round > 0 && all)
                {
                    // Re-placed: its new target has none of it. The log goes on from here; every page is read now.
                    _vm.CollectDirtyPages();
                    return (Enumerable.Range(0, _vm.PageCount).ToArray(), LogGeneration);
                }
                if (round > 0)
                {
                    var dirty = _vm.CollectDirtyPages();
                    return (setAside.Length == 0 ? dirty : dirty.Union(setAside).Order().ToArray(), LogGeneration);
                }
                // Log writes from now on, then read everything: a page written after it is read shows up next round.
                _vm.StartDirtyLogging();
                return (Enumerable.Range(0, _vm.PageCount).ToArray(), LogGeneration);
            }, helpers)).PipeTo(Self, Sender, success: collected => new RoundPagesCollected(round, collected.Item1, SetAside: false, collected.LogGeneration) { Stopped = StoppedItself },
                failure: e => new VmStepFailed(_vmIndex, "collect dirty pages", e.GetBaseException().Message));
            Become(Collecting);
        });

        Receive<SetAsideDirtyPages>(_ =>
        {
            var cpu = _cpu;
            BulkWork.Run(() => cpu.Measure(0, _vm.CollectDirtyPages, _vm as IHelperCpu)).PipeTo(Self, Sender, success: pages => new RoundPagesCollected(0, pages, SetAside: true),
                failure: e => new VmStepFailed(_vmIndex, "collect dirty pages", e.GetBaseException().Message));
            Become(Collecting);
        });

        Receive<HashRound>(m =>
        {
            var replyTo = Sender;
            if (m.HoldBack)
            {
                // The collected pages wait for the next round (the next collection adds them back); the shards still
                // learn which they are, so that nothing older is sent for them meanwhile.
                _setAside = _roundPages;
                HashAsync(m.Round, [], _roundGeneration, m.Participants, roundPages: _roundPages).PipeTo(Self, replyTo);
                return;
            }
            if (!m.StopAndCopy)
            {
                HashAsync(m.Round, _roundPages, _roundGeneration, m.Participants).PipeTo(Self, replyTo);
                return;
            }
            // Nothing else (a resume, above all) is handled until the pause has completed.
            PauseAndHashAsync(m.Round, m.Participants, ++_pauses).PipeTo(Self, replyTo, failure: e => new VmStepFailed(_vmIndex, "pause", e.GetBaseException().Message));
            Become(Pausing);
        });

        Receive<RoutedHashes>(m =>
        {
            for (int s = 0; s < _shards.Count; s++) _shards[s].Tell(m.PerShard[s]);
            if (m.Profile is not null) Sender.Tell(m.Profile);
        });

        Receive<StopSourceVm>(_ => Step("stop", async () => { await _vm.StopAsync().ConfigureAwait(false); return new VmStopped(_vmIndex); }).PipeTo(ReplyTo));

        // A VM that is running already (an orphan of a lost target whose wave had not paused it) stays as it is, unless
        // its hypervisor migrates it (that migration would stop it: it ends).
        Receive<ResumeVm>(m => Step("resume", async () =>
        {
            if (_vm.NeedsResume()) await _vm.ResumeAsync().ConfigureAwait(false);
            return new VmResumedHere(_vmIndex, m.Settles);
        }).PipeTo(ReplyTo));

        Receive<Status.Failure>(f => Sender.Tell(new VmStepFailed(_vmIndex, "hash", f.Cause.GetBaseException().Message)));
    }

    private void Collecting()
    {
        Receive<RoundPagesCollected>(m =>
        {
            if (m.SetAside)
            {
                _setAside = m.Pages;
                Sender.Tell(new DirtyPagesSetAside(_vmIndex, m.Pages.ToFrozenSet()));
            }
            else
            {
                _roundPages = m.Pages;
                _roundGeneration = m.LogGeneration;
                _setAside = [];
                Sender.Tell(new DirtyPagesCollected(_vmIndex, m.Round, m.Pages.Length, m.Stopped));
            }
            BackToReady();
        });
        WaitingForStep();
    }

    /// <summary>While a step runs off the actor thread: its failure goes to whoever asked; everything else waits.</summary>
    private void WaitingForStep()
    {
        Receive<VmStepFailed>(m =>
        {
            Sender.Tell(m);
            BackToReady();
        });
        ReceiveAny(_ => Stash.Stash());
    }

    private void BackToReady()
    {
        Become(Ready);
        Stash.UnstashAll();
    }

    private void Pausing()
    {
        Receive<RoutedHashes>(m =>
        {
            for (int s = 0; s < _shards.Count; s++) _shards[s].Tell(m.PerShard[s]);
            Sender.Tell(m.Paused!);
            _log.Debug("VM {0} paused for round {1}: {2}", _vm.Description.Id, m.PerShard[0].Round, m.Steps);
            // The paused memory no longer changes: digest all of it now, while the last round is still being sent.
            var state = m.Paused!.DeviceState;
            // One bulk thread per VM's digest: the VMs of a migration digest side by side.
            int pause = m.Paused.Pause;
            var cpu = _cpu;
            int round = m.PerShard[0].Round;
            Step("source digest", () => BulkWork.Run(() => cpu.Measure(round, () => (object)new SourceDigestComputed(_vmIndex, Digest(state), pause, _vm.DirtyTracking()))))
                .PipeTo(ReplyTo);
            BackToReady();
        });
        WaitingForStep();
    }

    private async Task<RoutedHashes> PauseAndHashAsync(int round, int participants, int pause)
    {
        var steps = new StepTimes();
        // Taken before asking: the guest stops somewhere inside the call (QEMU's `stop`, the synthetic guest's write
        // lock), so the pause the guest sees began no earlier than this, and a downtime measured from here is never short.
        long pausedAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        await _vm.PauseAsync().ConfigureAwait(false);
        // Its hypervisor stopped it earlier by itself (QEMU's pre-copy converged): the pause the guest sees began then.
        if ((_vm as ISelfPausingGuest)?.StoppedItselfAtUnixMs is { } stoppedAt) pausedAt = Math.Min(pausedAt, stoppedAt);
        steps.Mark("stop");
        // The device state streams out of QEMU while this process re-reads the memory: neither needs the other.
        var capture = _vm.CaptureDeviceStateAsync();
        // Pages written between the last collection and the pause are still in the log: take them too. A whole-memory
        // pass for a re-hashed guest: on a bulk thread, not the pool the control plane runs on.
        var roundPages = _roundPages;
        int[] pages;
        try { pages = await BulkWork.Run(() => _cpu.Measure(round, () => roundPages.Concat(_vm.CollectDirtyPages()).Distinct().Order().ToArray(), _vm as IHelperCpu)).ConfigureAwait(false); }
        catch
        {
            await capture.ContinueWith(_ => { }, TaskScheduler.Default).ConfigureAwait(false); // no capture left running behind a failure
            throw;
        }
        int generation = LogGeneration;
        steps.Mark($"final collection ({pages.Length} pages)");
        var deviceState = await capture.ConfigureAwait(false);
        steps.Mark($"device state ({deviceState.Length} bytes)", (_vm as IStepTimed)?.LastSteps);
        var routed = await HashAsync(round, pages, generation, participants).ConfigureAwait(false);
        steps.Mark("hash");
        return routed with { Paused = new VmPaused(_vmIndex, pausedAt, ImmutableArray.Create(deviceState), pause, pages.Length), Steps = steps };
    }

    /// <summary>The guest's write-log generation now (0 for a guest without a write log).</summary>
    private int LogGeneration => (_vm as IWriteLoggedGuest)?.LogGeneration ?? 0;

    /// <param name="roundPages">The VM's pages of this round, hashed or held back (default: <paramref name="pages"/>).</param>
    private Task<RoutedHashes> HashAsync(int round, int[] pages, int generation, int participants, int[]? roundPages = null)
    {
        int shardCount = _shards.Count;
        var cpu = _cpu;
        return BulkWork.Run(() => cpu.Measure(round, () =>
        {
            var idx = new ImmutableArray<int>.Builder[shardCount];
            var hashes = new ImmutableArray<ContentHash>.Builder[shardCount];
            for (int s = 0; s < shardCount; s++) { idx[s] = ImmutableArray.CreateBuilder<int>(); hashes[s] = ImmutableArray.CreateBuilder<ContentHash>(); }
            var buffer = new byte[Page.Size];
            // Round 0 also profiles the VM for placement: distinct hashes and their bottom-k sketch.
            var distinct = round == 0 ? new HashSet<ContentHash>() : null;
            var sketch = round == 0 ? new BottomKSketch(_sketchSize) : null;
            int zero = 0;
            // A write-logged guest is hashed in place (a torn read fails the shard's check, and the page is in the log).
            // Others are read through ReadPage: a snapshot-comparing log (QEMU's here) must see every read it checks,
            // or a page seen changed here but unchanged by the shard would be dropped from this round and never resent.
            var direct = _vm is IWriteLoggedGuest ? _vm as IDirectPageAccess : null;
            // A re-hashing log has just hashed these pages: routed by those hashes, round 0 reads none of the memory here.
            var collected = _vm as ICollectedPageHashes;
            foreach (int p in pages)
            {
                if (collected is null || !collected.TryGetCollectedHash(p, out var h))
                {
                    ReadOnlySpan<byte> bytes;
                    if (direct is null || !direct.TryGetPage(p, out bytes)) { _vm.ReadPage(p, buffer); bytes = buffer; }
                    h = ContentHash.OfPage(bytes);
                }
                // Round 0 skips zero pages (target memory starts zeroed); later rounds must map a page that became zero.
                if (round == 0 && h == ContentHash.OfZeroPage) { idx[0].Add(p); hashes[0].Add(ContentHash.OfZeroPage); zero++; continue; }
                if (distinct is not null && distinct.Add(h)) sketch!.Add(h);
                int s = ContentIndex.ShardOf(h, shardCount);
                idx[s].Add(p);
                hashes[s].Add(h);
            }
            var perShard = new PageHashBatch[shardCount];
            var carried = ImmutableCollectionsMarshal.AsImmutableArray(roundPages ?? pages);
            for (int s = 0; s < shardCount; s++) perShard[s] = new PageHashBatch(round, _vmIndex, idx[s].ToImmutable(), hashes[s].ToImmutable(), generation, participants, carried);
            var profile = distinct is null ? null
                : new VmContentsProfiled(_vmIndex, pages.Length, pages.Length - zero, zero, distinct.Count, sketch!.Values.ToArray());
            return new RoutedHashes(perShard, null, profile);
        }));
    }

    /// <summary>
    /// The handover digest of the paused guest: from the page hashes its final collection took after the pause where
    /// it keeps them (a second pass over its memory saved inside the pause), else from its memory.
    /// </summary>
    private string Digest(ImmutableArray<byte> deviceState) =>
        (_vm as IPausedPageHashes)?.PausedPageHashes is { } hashes
            ? MemoryDigest.FromPageHashes(hashes, deviceState.AsSpan())
            : MemoryDigest.Compute(_vm, deviceState.AsSpan(), OneThread);

    private static readonly ParallelOptions OneThread = new() { MaxDegreeOfParallelism = 1 };

    /// <summary>Who asked, fixed now: the reply goes there even though the step completes later.</summary>
    private IActorRef ReplyTo => Sender;

    /// <summary>Runs a VM step and turns its failure into a message naming the VM and the step.</summary>
    private async Task<object> Step(string step, Func<Task<object>> action)
    {
        try { return await action().ConfigureAwait(false); }
        catch (Exception e) { return new VmStepFailed(_vmIndex, step, e.GetBaseException().Message); }
    }

    private sealed record RoundPagesCollected(int Round, int[] Pages, bool SetAside, int LogGeneration = 0)
    {
        /// <summary>The guest stopped by itself (its hypervisor's pre-copy converged) by the end of the collection.</summary>
        public bool Stopped { get; init; }
    }

    private bool StoppedItself => _vm is ISelfPausingGuest { StoppedItselfAtUnixMs: not null };
    private sealed record RoutedHashes(PageHashBatch[] PerShard, VmPaused? Paused, VmContentsProfiled? Profile = null)
    {
        public StepTimes? Steps { get; init; }
    }
}
