using System.Security.Cryptography;
using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using VMScatter.Cluster.Protocol;
using VMScatter.DataPlane.Wire;
using VMScatter.Domain.Scheduling;
using VMScatter.Domain.Units;
using VMScatter.Domain;
using VMScatter.Domain.Dedup;
using VMScatter.Domain.Pages;
using VMScatter.Domain.Placement;
using VMScatter.Domain.Reports;

namespace VMScatter.Cluster.Scheduler;

/// <summary>
/// The migration scheduler, a cluster singleton. Knows the source and target hosts (they announce themselves),
/// validates a migration request, places the VMs from the source's round-0 profiles, prepares the targets,
/// starts the transfer, and decides each VM's handover by comparing the source's and the target's digests:
/// a VM is recorded as handed over only when they match and the target has resumed it; otherwise it keeps
/// running on the source. Decisions are event-sourced (Akka.Persistence.Sql), so the record of what went where
/// survives a scheduler restart; a migration cut short by a restart is recorded as aborted.
/// </summary>
public sealed class MigrationSchedulerActor : ReceivePersistentActor, IWithTimers
{
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly SchedulerSettings _settings;
    private readonly Dictionary<string, RegisterSourceHost> _sources = new();
    private readonly Dictionary<string, RegisterTargetHost> _targets = new();
    private readonly Dictionary<Guid, MigrationRecord> _records = new();
    private readonly Dictionary<Guid, MigrationRun> _runs = new();
    // Per-migration data-plane keys; never journaled.
    private readonly Dictionary<Guid, byte[]> _keys = new();

    public MigrationSchedulerActor(SchedulerSettings settings)
    {
        _settings = settings;
        PersistenceId = settings.PersistenceId;

        Recover<MigrationStarted>(e => _records[e.MigrationId] = new MigrationRecord());
        Recover<PlacementChosen>(e => Record(e.MigrationId).Phase = "placed");
        Recover<VmHandedOver>(e => Record(e.MigrationId).HandedOver.Add(e.VmId));
        Recover<VmHandoverFailed>(e => Record(e.MigrationId).Failed.Add(e.VmId));
        Recover<MigrationCompleted>(e => { var r = Record(e.MigrationId); r.Phase = "completed"; r.Report = e.Report; });
        Recover<MigrationAborted>(e => Record(e.MigrationId).Phase = "aborted");
        Recover<RecoveryCompleted>(_ =>
        {
            // Runs are not persisted: whatever was in flight when the previous incarnation stopped is over.
            // Its source VMs were never released unless recorded as handed over, so they still run on the source.
            foreach (var (id, record) in _records.Where(r => !r.Value.Ended).ToArray())
                Persist(new MigrationAborted(id, "the scheduler restarted before the migration completed"), e => Record(e.MigrationId).Phase = "aborted");
        });

        Command<RegisterSourceHost>(m =>
        {
            if (!_sources.ContainsKey(m.HostId)) Context.Watch(m.Host);
            _sources[m.HostId] = m;
            Sender.Tell(new HostRegistered(m.HostId));
        });
        Command<RegisterTargetHost>(m =>
        {
            if (!_targets.ContainsKey(m.HostId)) Context.Watch(m.Host);
            _targets[m.HostId] = m;
            Sender.Tell(new HostRegistered(m.HostId));
        });
        Command<GetRegisteredHosts>(_ => Sender.Tell(new RegisteredHosts(_sources.Keys.Order().ToArray(), _targets.Keys.Order().ToArray())));
        Command<GetMigrationStatus>(m => Sender.Tell(Status(m.MigrationId)));
        Command<Terminated>(t => HostLost(t.ActorRef));

        Command<StartMigration>(m =>
        {
            Serialization.SerializerWarmup.EnsureWarm(Context.System);
            Start(m);
        });
        Command<VmsAnalyzed>(Place);
        Command<ReceiverReady>(m => WithRun(m.MigrationId, run =>
        {
            run.ReadyTargets.Add(m.HostId);
            if (run.Phase != "preparing" || run.ReadyTargets.Count < run.Targets.Count) return;
            run.Phase = "transferring";
            var assignments = Assignments(run);
            run.SourceMigration!.Tell(new BeginTransfer(run.Id, _keys[run.Id], run.Targets, assignments));
        }));
        Command<ReceiverRefused>(m => WithRun(m.MigrationId, run => FailRun(run, $"target {m.HostId} refused: {m.Reason}")));
        Command<TransferProgress>(m => WithRun(m.MigrationId, run =>
            run.Requester.Tell(new MigrationProgress(m.MigrationId, run.Phase, m.Round, m.BytesSent, m.ContentRecordsSent, m.PagesInRound))));
        Command<TransferFailed>(m => WithRun(m.MigrationId, run =>
        {
            // Refused before any migration actor existed on the source: no VM was ever paused there.
            if (run.SourceMigration is null) run.SourceWillNotConfirm = true;
            FailRun(run, m.Reason, tellSource: false);
        }));
        // A wave of a staggered handover is through: its VMs can be handed over while the others still transfer.
        Command<VmsTransferred>(m => WithRun(m.MigrationId, run =>
        {
            Transferred(run, m.SourceDigests, m.PausedAtUnixMs);
            DecideHandovers(run);
        }));
        Command<TransferCompleted>(m => WithRun(m.MigrationId, run =>
        {
            run.Transfer = m;
            run.Phase = "verifying";
            Transferred(run, m.SourceDigests, m.PausedAtUnixMs);
            Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "handover"), _settings.HandoverTimeout);
            // Targets send their digests by themselves once their last round is in; compare when both sides are here.
            DecideHandovers(run);
        }));
        Command<TargetDigests>(m => WithRun(m.MigrationId, run =>
        {
            run.TargetDigests[m.HostId] = m;
            foreach (var d in m.Digests) run.TargetDigestOf[d.VmId] = d.Digest;
            DecideHandovers(run);
        }));
        Command<VmResumedOnTarget>(m => WithRun(m.MigrationId, run =>
        {
            long pausedAt = run.PausedAt.GetValueOrDefault(m.VmId, m.ResumedAtUnixMs);
            var handed = new VmHandedOver(run.Id, m.VmId, m.HostId, run.TargetDigestOf[m.VmId], m.ResumedAtUnixMs - pausedAt);
            Persist(handed, e =>
            {
                // The target now runs it: count it against the target until its next announcement says so itself.
                if (_targets.TryGetValue(e.TargetHostId, out var t))
                    _targets[e.TargetHostId] = t with { FreeBytes = t.FreeBytes - run.Vms.First(v => v.Id == e.VmId).MemoryBytes };
                Record(e.MigrationId).HandedOver.Add(e.VmId);
                run.HandedOver[e.VmId] = e;
                run.Requester.Tell(e);
                run.SourceHost.Tell(new ReleaseSourceVm(run.Id, e.VmId));
            });
        }));
        Command<VmResumeFailed>(m => WithRun(m.MigrationId, run => FailVm(run, m.VmId, m.Reason)));
        Command<SourceVmReleased>(m => WithRun(m.MigrationId, run =>
        {
            run.Released.Add(m.VmId);
            MaybeComplete(run);
        }));
        Command<SourceVmResumed>(m => WithRun(m.MigrationId, run =>
        {
            run.ResumedOnSource.Add(m.VmId);
            MaybeComplete(run);
        }));
        Command<RunTimeout>(m => WithRun(m.MigrationId, run =>
        {
            if (run.Error is null) FailRun(run, $"timed out while {m.Phase}");
            else
            {
                // Failed already, and not everyone answered: report what is known rather than wait forever. A VM whose
                // target never confirmed its resume is NOT resumed on the source (two running copies would be worse);
                // the report says where to look.
                run.SourceWillNotConfirm = true;
                var unknown = run.ResumeRequested.Where(v => !run.Decided(v))
                    .Select(v => new VmHandoverFailed(run.Id, v, $"target {run.TargetOfVm[v]} did not confirm resuming it; left paused on the source, check the target before resuming either copy")).ToArray();
                foreach (var f in unknown) run.Failed[f.VmId] = f.Reason;
                PersistAll(unknown, e => { Record(e.MigrationId).Failed.Add(e.VmId); run.Requester.Tell(e); });
                DeferAsync(run.Id, _ => MaybeComplete(run));
            }
        }));
    }

    private static void Transferred(MigrationRun run, IReadOnlyList<VmDigest> digests, IReadOnlyDictionary<string, long> pausedAt)
    {
        foreach (var d in digests) run.SourceDigestOf[d.VmId] = d.Digest;
        foreach (var (vm, at) in pausedAt) run.PausedAt[vm] = at;
    }

    /// <summary>Each VM whose source digest and target's digests are both in: resume a match on its target, fail the rest.</summary>
    private void DecideHandovers(MigrationRun run)
    {
        if (run.Error is not null) return;
        foreach (var (vmId, digest) in run.SourceDigestOf)
        {
            string target = run.TargetOfVm[vmId];
            if (run.Decided(vmId) || run.ResumeRequested.Contains(vmId) || !run.TargetDigests.ContainsKey(target)) continue;
            run.Phase = "handing over";
            if (run.TargetDigestOf.TryGetValue(vmId, out var got) && got == digest)
            {
                run.ResumeRequested.Add(vmId);
                run.TargetRefs[target].Tell(new ResumeOnTarget(run.Id, vmId));
            }
            else
                FailVm(run, vmId, $"digest mismatch: source {Short(digest)}, target {Short(got ?? "none")}");
        }
        MaybeComplete(run);
    }

    public override string PersistenceId { get; }

    public ITimerScheduler Timers { get; set; } = null!;

    private void Start(StartMigration m)
    {
        string? reason = Validate(m, out var source, out var vms, out var targetIds);
        if (reason is not null)
        {
            Sender.Tell(new MigrationRejected(m.MigrationId, reason));
            return;
        }
        var requester = Sender;
        var started = new MigrationStarted(m.MigrationId, m.SourceHostId, targetIds, vms.Select(v => v.Id).ToArray(), DateTime.UtcNow);
        Persist(started, e =>
        {
            _records[e.MigrationId] = new MigrationRecord();
            var run = new MigrationRun
            {
                Id = e.MigrationId, Request = m, Requester = requester, SourceHostId = m.SourceHostId, SourceHost = source!.Host,
                Vms = vms, TargetHostIds = targetIds, StartedUtc = e.AtUtc,
            };
            _runs[run.Id] = run;
            _keys[run.Id] = RandomNumberGenerator.GetBytes(FrameCodec.KeySize);
            requester.Tell(new MigrationAccepted(run.Id, vms.Count, targetIds.Count));
            Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "analysing"), _settings.AnalysisTimeout);
            run.SourceHost.Tell(new AnalyzeVms(run.Id, vms.Select(v => v.Id).ToArray(), m.Options));
        });
    }

    private string? Validate(StartMigration m, out RegisterSourceHost? source, out IReadOnlyList<VmDescription> vms, out IReadOnlyList<string> targetIds)
    {
        vms = [];
        targetIds = [];
        if (_records.ContainsKey(m.MigrationId)) { source = null; return $"migration {m.MigrationId} already exists"; }
        if (!_sources.TryGetValue(m.SourceHostId, out source))
            return $"unknown source host '{m.SourceHostId}' (registered: {List(_sources.Keys)})";
        var all = source.Vms.ToDictionary(v => v.Id);
        var missing = m.VmIds.Where(id => !all.ContainsKey(id)).ToArray();
        if (missing.Length > 0) return $"source {m.SourceHostId} does not run {string.Join(", ", missing)}";
        vms = m.VmIds.Count == 0 ? source.Vms : m.VmIds.Distinct().Select(id => all[id]).ToArray();
        if (vms.Count == 0) return $"source {m.SourceHostId} runs no VMs";
        var busy = vms.Where(v => _runs.Values.Any(r => r.Vms.Any(x => x.Id == v.Id))).Select(v => v.Id).ToArray();
        if (busy.Length > 0) return $"already migrating: {string.Join(", ", busy)}";
        targetIds = m.TargetHostIds.Count == 0 ? _targets.Keys.Order().ToArray() : m.TargetHostIds.Distinct().ToArray();
        if (targetIds.Count == 0) return "no target hosts: at least one is required";
        var unknown = targetIds.Where(t => !_targets.ContainsKey(t)).ToArray();
        if (unknown.Length > 0) return $"unknown target host(s) {string.Join(", ", unknown)} (registered: {List(_targets.Keys)})";
        if (targetIds.Count > TargetMask.MaxTargets) return $"at most {TargetMask.MaxTargets} target hosts per migration";
        if (targetIds.Contains(m.SourceHostId)) return "the source host cannot also be a target";
        var free = targetIds.Select(t => _targets[t].FreeBytes - Reserved(t)).ToArray();
        long largest = free.Max();
        var tooBig = vms.FirstOrDefault(v => v.MemoryBytes > largest);
        if (tooBig is not null)
            return $"VM {tooBig.Id} needs {Domain.Units.ByteSize.Format(tooBig.MemoryBytes)} but the largest target has {Domain.Units.ByteSize.Format(Math.Max(0, largest))} free";
        long need = vms.Sum(v => v.MemoryBytes), have = free.Sum();
        if (need > have) return $"the VMs need {Domain.Units.ByteSize.Format(need)} but the targets have {Domain.Units.ByteSize.Format(Math.Max(0, have))} free in all";
        return null;
    }

    /// <summary>Memory placed on a target by migrations in flight that the target has not yet reserved itself.</summary>
    private long Reserved(string targetId) =>
        _runs.Values.Sum(r => r.ReadyTargets.Contains(targetId) ? 0 : r.Vms.Where(v => r.TargetOfVm.GetValueOrDefault(v.Id) == targetId).Sum(v => v.MemoryBytes));

    private void Place(VmsAnalyzed m)
    {
        WithRun(m.MigrationId, run =>
        {
            run.SourceMigration = Sender;
            run.Profiles = m.Profiles;
            run.DistinctPages = m.DistinctPages;
            var vcpus = run.Vms.ToDictionary(v => v.Id, v => v.VCpus);
            var vms = m.Profiles.Select(p => new PlacementVm(p.VmId, p.MemoryBytes, vcpus.GetValueOrDefault(p.VmId, 1))).ToArray();
            var contents = new SketchContentModel(m.Profiles.Select(p => BottomKSketch.FromValues(Math.Max(2, p.SketchSize), p.Sketch)).ToArray());
            var hosts = run.TargetHostIds.Select(t => _targets.TryGetValue(t, out var h)
                ? new PlacementHost(t, h.FreeBytes, Rack: string.IsNullOrEmpty(h.Rack) ? null : h.Rack)
                : new PlacementHost(t, 0)).ToArray();
            var topology = new NetworkTopology(RackLinkWeight: _settings.RackLinkWeight);
            PlacementResult placement;
            try
            {
                placement = Placer.Place(vms, hosts, contents, run.Request.Options.Placement, topology);
            }
            catch (PlacementException e) { FailRun(run, $"placement: {e.Message}"); return; }
            Persist(new PlacementChosen(run.Id, placement.Strategy, placement.HostOf), e =>
            {
                Record(e.MigrationId).Phase = "placed";
                run.Strategy = e.Strategy;
                foreach (var (vm, host) in e.TargetOfVm) run.TargetOfVm[vm] = host;
                int index = 0;
                foreach (var hostId in e.TargetOfVm.Values.Distinct().Order())
                {
                    var t = _targets[hostId];
                    run.Targets.Add(new TargetEndpoint(index++, hostId, t.DataPlaneHost, t.DataPlanePort));
                    run.TargetRefs[hostId] = t.Host;
                }
                run.Phase = "preparing";
                run.Requester.Tell(new MigrationPlaced(run.Id, e.Strategy, e.TargetOfVm, placement.Traffic, run.DistinctPages, run.Request.Options.GroupTransport));
                var assignments = Assignments(run);
                foreach (var t in run.Targets)
                    run.TargetRefs[t.HostId].Tell(new PrepareReceive(run.Id, _keys[run.Id], t.Index, run.Targets,
                        assignments.Where(a => a.TargetIndex == t.Index).ToArray(), run.SourceMigration, run.Request.Options.LinkBitsPerSecond));
            });
        });
    }

    private static IReadOnlyList<VmAssignment> Assignments(MigrationRun run)
    {
        var index = run.Targets.ToDictionary(t => t.HostId, t => t.Index);
        return run.Vms.Select((vm, i) => new VmAssignment(i, vm, index[run.TargetOfVm[vm.Id]])).ToArray();
    }

    private void FailVm(MigrationRun run, string vmId, string reason)
    {
        if (run.Decided(vmId)) return;
        run.ResumeRequested.Remove(vmId);
        run.Failed[vmId] = reason;
        Persist(new VmHandoverFailed(run.Id, vmId, reason), e =>
        {
            Record(e.MigrationId).Failed.Add(e.VmId);
            run.Requester.Tell(e);
            _log.Warning("Migration {0}: VM {1} stays on the source: {2}", run.Id, vmId, reason);
            run.SourceHost.Tell(new ResumeSourceVm(run.Id, vmId, reason));
            if (run.TargetOfVm.TryGetValue(vmId, out var target) && run.TargetRefs.TryGetValue(target, out var targetRef))
                targetRef.Tell(new DiscardReceived(run.Id, [vmId]));
            MaybeComplete(run);
        });
    }

    /// <summary>The whole migration fails: every VM not yet handed over stays (or resumes) on the source.</summary>
    private void FailRun(MigrationRun run, string reason, bool tellSource = true)
    {
        if (run.Error is not null) return;
        run.Error = reason;
        _log.Warning("Migration {0} failed: {1}", run.Id, reason);
        if (tellSource) run.SourceHost.Tell(new AbortMigration(run.Id, reason));
        Timers.StartSingleTimer(run.Id, new RunTimeout(run.Id, "resuming on the source"), _settings.HandoverTimeout);
        // A VM whose target was told to resume it is left to that target's answer: resuming it here too could leave two
        // copies running.
        var failed = run.Vms.Where(v => !run.Decided(v.Id) && !run.ResumeRequested.Contains(v.Id)).Select(v => new VmHandoverFailed(run.Id, v.Id, reason)).ToArray();
        foreach (var f in failed) run.Failed[f.VmId] = reason;
        // The source resumes by itself the VMs it still transfers; those whose wave is through wait for this word.
        foreach (var f in failed) run.SourceHost.Tell(new ResumeSourceVm(run.Id, f.VmId, reason));
        PersistAll(failed, e => { Record(e.MigrationId).Failed.Add(e.VmId); run.Requester.Tell(e); });
        foreach (var (host, target) in run.TargetRefs)
            target.Tell(new DiscardReceived(run.Id, run.Vms.Where(v => !run.HandedOver.ContainsKey(v.Id) && run.TargetOfVm.GetValueOrDefault(v.Id) == host).Select(v => v.Id).ToArray()));
        DeferAsync(run.Id, _ => MaybeComplete(run));
    }

    private void MaybeComplete(MigrationRun run)
    {
        if (!run.AllSettled || !_runs.ContainsKey(run.Id)) return;
        _runs.Remove(run.Id);
        _keys.Remove(run.Id);
        Timers.Cancel(run.Id);
        var report = BuildReport(run);
        Persist(new MigrationCompleted(run.Id, report), e =>
        {
            var record = Record(e.MigrationId);
            record.Phase = "completed";
            record.Report = e.Report;
            run.Requester.Tell(new MigrationFinished(e.MigrationId, e.Report));
        });
    }

    private MigrationReport BuildReport(MigrationRun run)
    {
        var stats = run.Transfer?.Stats;
        var perVm = run.Vms.Select(vm =>
        {
            var src = run.SourceDigestOf.GetValueOrDefault(vm.Id);
            run.TargetDigestOf.TryGetValue(vm.Id, out var dst);
            run.HandedOver.TryGetValue(vm.Id, out var handed);
            run.Failed.TryGetValue(vm.Id, out var error);
            return new VmReport(vm.Id, run.TargetOfVm.GetValueOrDefault(vm.Id, ""), src is not null && src == dst, handed is not null,
                handed?.DowntimeMs ?? 0, src, dst, error);
        }).ToArray();
        return new MigrationReport
        {
            MigrationId = run.Id.ToString(),
            Vms = run.Vms.Count,
            Targets = run.TargetHostIds.Count,
            GuestBytes = run.Vms.Sum(v => v.MemoryBytes),
            NaiveBytes = Page.BytesOf(run.Profiles.Sum(p => (long)p.NonZeroPages)),
            // Exact once the shards finished round 0; placement had the sketches' estimate.
            DistinctPages = stats is { Round0DistinctPages: > 0 } ? stats.Round0DistinctPages : run.DistinctPages,
            ZeroPages = run.Profiles.Sum(p => (long)p.ZeroPages),
            BytesSent = stats?.BytesSent ?? 0,
            BytesReceived = run.TargetDigests.Values.Sum(d => d.BytesReceived),
            Verified = perVm.Length > 0 && perVm.All(v => v.DigestMatched && v.HandedOver),
            TotalSeconds = (DateTime.UtcNow - run.StartedUtc).TotalSeconds,
            PlacementStrategy = run.Strategy,
            Placement = new SortedDictionary<string, string>(run.TargetOfVm),
            // Flat network: every data-plane frame crosses its sender's link and its receiver's link once.
            LinkBytes = 2 * run.TargetDigests.Values.Sum(d => d.BytesReceived),
            GroupSwitches = stats?.GroupSwitches ?? 0,
            GroupSwitchesLowerBound = stats?.GroupSwitchesLowerBound ?? 0,
            GroupTransport = run.Request.Options.GroupTransport.ToName(),
            Rounds = stats?.Rounds ?? 0,
            Waves = stats?.Waves ?? 0,
            DataPlaneRounds = stats?.DataPlaneRounds ?? 0,
            DirtyPagesPerRound = stats?.DirtyPagesPerRound ?? [],
            SetAsidePages = stats?.SetAsidePages ?? 0,
            ContentsWithdrawn = stats?.ContentsWithdrawn ?? 0,
            CompressionRatio = stats is { ContentRawBytes: > 0 } ? (double)stats.ContentEncodedBytes / stats.ContentRawBytes : 1,
            ByteCompares = stats?.ByteCompares ?? 0,
            HashCollisions = stats?.HashCollisions ?? 0,
            DowntimeMsMax = perVm.Length == 0 ? 0 : perVm.Max(v => v.DowntimeMs),
            DowntimeMsMedian = Median(perVm.Where(v => v.HandedOver).Select(v => v.DowntimeMs)),
            Converged = stats?.Converged ?? false,
            Convergence = stats?.Convergence ?? "",
            Deduplicate = run.Request.Options.Deduplicate,
            LinkBitsPerSecond = run.Request.Options.LinkBitsPerSecond,
            AnalysisSeconds = stats?.AnalysisSeconds ?? 0,
            RoundSeconds = stats?.RoundSeconds ?? [],
            SourceDigestSeconds = stats?.SourceDigestSeconds ?? 0,
            Error = run.Error,
            PerVm = perVm,
        };
    }

    private void HostLost(IActorRef host)
    {
        foreach (var (id, s) in _sources.Where(s => s.Value.Host.Equals(host)).ToArray())
        {
            _sources.Remove(id);
            foreach (var run in _runs.Values.Where(r => r.SourceHostId == id).ToArray())
            {
                run.SourceWillNotConfirm = true;
                FailRun(run, $"source host {id} left the cluster", tellSource: false);
                MaybeComplete(run);
            }
        }
        foreach (var (id, t) in _targets.Where(t => t.Value.Host.Equals(host)).ToArray())
        {
            _targets.Remove(id);
            foreach (var run in _runs.Values.Where(r => r.TargetHostIds.Contains(id)).ToArray())
            {
                if (run.Transfer is null) FailRun(run, $"target host {id} left the cluster");
                else
                    foreach (var vm in run.TargetOfVm.Where(kv => kv.Value == id).Select(kv => kv.Key)) FailVm(run, vm, $"target host {id} left the cluster before the handover");
            }
        }
    }

    private MigrationStatus Status(Guid id)
    {
        if (!_records.TryGetValue(id, out var record)) return new MigrationStatus(id, "unknown", [], [], null);
        string phase = _runs.TryGetValue(id, out var run) ? run.Phase : record.Phase;
        return new MigrationStatus(id, phase, record.HandedOver.ToArray(), record.Failed.ToArray(), record.Report);
    }

    private void WithRun(Guid id, Action<MigrationRun> action)
    {
        if (_runs.TryGetValue(id, out var run)) action(run);
        else _log.Debug("Message for migration {0}, which is not in flight", id);
    }

    private MigrationRecord Record(Guid id) => _records.TryGetValue(id, out var r) ? r : _records[id] = new MigrationRecord();

    private static string List(IEnumerable<string> names) => names.Any() ? string.Join(", ", names.Order()) : "none";

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? 0 : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string Short(string digest) => digest.Length > 12 ? digest[..12] : digest;

    private sealed record RunTimeout(Guid MigrationId, string Phase);
}
