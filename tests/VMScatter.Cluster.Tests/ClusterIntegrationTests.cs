using VMScatter.Cluster.Console;
using VMScatter.Cluster.Hosting;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Serialization;
using VMScatter.Domain;
using VMScatter.Domain.Synthetic;
using Xunit;
using static VMScatter.Cluster.Tests.TestIds;
using VMScatter.DataPlane;

namespace VMScatter.Cluster.Tests;

/// <summary>
/// Whole clusters on loopback: a scheduler node, a source node and target nodes, each its own actor system
/// talking over Akka.Remote, with data-plane sockets of their own.
/// </summary>
public class ClusterIntegrationTests
{
    private static readonly SyntheticGuestModel Model = new() { MemoryBytes = 8L << 20, DirtyPagesPerSecond = 1500, WritableWorkingSetPages = 256 };

    private static async Task<(MigrationOutcome Outcome, List<IVmScatterProtocol> Events)> Migrate(LocalCluster cluster, MigrationOptions options, int targets)
    {
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, targets, TimeSpan.FromSeconds(30));
        var events = new List<IVmScatterProtocol>();
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options), events.Add, TimeSpan.FromSeconds(30));
        return (outcome, events);
    }

    [Theory]
    [InlineData(GroupTransport.RelayChain)]
    [InlineData(GroupTransport.FanOut)]
    public async Task Running_vms_move_from_one_source_to_three_targets_byte_identical(GroupTransport transport)
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(6, Model, 11, OsImages: 1, Applications: 3));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
        });
        // Each target opens only frames sealed with its own key (and, in a relay chain, content batches re-sealed for it on
        // its link from the host before it): every VM's digest still matches.
        var (outcome, events) = await Migrate(cluster, TestConfig.Options(transport), 3);

        Assert.Null(outcome.RejectedBecause);
        var report = outcome.Report!;
        Assert.True(report.Verified, report.Error);
        Assert.Equal((6, 3), (report.Vms, report.Targets));
        Assert.All(report.PerVm, vm => Assert.True(vm.DigestMatched && vm.HandedOver && vm.SourceDigest == vm.TargetDigest));
        Assert.Equal(3, report.PerVm.Select(v => v.Target).Distinct().Count());
        Assert.True(report.Rounds >= 2, "the guests were writing: at least one dirty round");
        // A synthetic guest logs every write; the report says so, with its collections (a pre-copy round's and the pause's at least).
        Assert.All(report.PerVm, vm => Assert.Matches(@"^write log: ([2-9]|\d\d+) collections$", vm.DirtyTracking ?? ""));
        // Fan-out sends a content once per target that needs it, not once per group.
        Assert.True(report.BytesSent < (transport == GroupTransport.RelayChain ? 0.5 : 1.0) * report.NaiveBytes, $"sent {report.BytesSent} of naive {report.NaiveBytes} in {report.Rounds} rounds ({string.Join("/", report.DirtyPagesPerRound)} pages; {report.Convergence})");
        Assert.True(report.BytesReceived >= report.BytesSent);
        Assert.Equal(6, events.OfType<VmHandedOver>().Count());
        // Each source VM was stopped only after its handover, and no longer runs there.
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
        // Every node still serializes with the instance warmed at start (no extension replaced it since): Hyperion
        // compiled the protocol's serializers once, before the migration, not during it.
        Assert.All(cluster.Targets.Append(cluster.Source).Append(cluster.Scheduler), node => Assert.True(SerializerWarmup.IsWarm(node.System), node.HostId.Value));
    }

    [Fact]
    public async Task A_migration_that_cannot_converge_says_so_and_forces_stop_and_copy_or_aborts_per_policy()
    {
        // Guests rewrite their whole 8 MiB ten times a second on a 100 Mbit/s link: the rest never fits 1 ms.
        var hot = Model with { DirtyPagesPerSecond = 20_000, WritableWorkingSetPages = 2048 };
        foreach (var policy in new[] { NonConvergencePolicy.Force, NonConvergencePolicy.Abort })
        {
            var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(2, hot, 21));
            await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = fleet, Targets = 2, TargetCapacityBytes = hot.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            });
            var options = TestConfig.Options() with { MaxRounds = 3, DowntimeTargetMs = 1, LinkBitsPerSecond = 100_000_000, NonConvergence = policy };
            var (outcome, events) = await Migrate(cluster, options, 2);
            var report = outcome.Report!;
            if (policy == NonConvergencePolicy.Force)
            {
                Assert.True(report.Verified, report.Error);
                Assert.False(report.Converged);
                Assert.Equal(3, report.Rounds);
                Assert.Matches(@"NOT converged after 2 pre-copy rounds: \d+ dirty pages left \(guests dirtying \d+ pages/s\)", report.Convergence);
            }
            else
            {
                Assert.False(report.Verified);
                Assert.Contains("NOT converged", report.Error);
                Assert.Contains("aborted by policy", report.Error);
                Assert.All(report.PerVm, v => Assert.False(v.HandedOver));
                Assert.Equal(2, events.OfType<VmHandoverFailed>().Count());
                Assert.All(fleet, vm => Assert.Equal(VmRunState.Running, vm.State)); // confirmed resumed before the report
            }
        }
    }

    [Fact]
    public async Task A_target_that_dies_mid_transfer_has_its_vms_re_placed_on_the_target_left_and_every_vm_is_handed_over()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model with { MemoryBytes = 32L << 20 }, 31));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 160L << 20, JournalConnectionString = TestConfig.TempJournal(),
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 2, TimeSpan.FromSeconds(30));
        var crashed = new TaskCompletionSource<HostId>();
        IReadOnlyDictionary<VmId, HostId> placement = new Dictionary<VmId, HostId>();
        var events = new List<IVmScatterProtocol>();
        // 50 Mbit/s: round 0 takes seconds, so the crash lands in the middle of it.
        var options = TestConfig.Options() with { LinkBitsPerSecond = 50_000_000 };
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], options),
            e =>
            {
                events.Add(e);
                if (e is MigrationPlaced p) placement = p.TargetOfVm;
                if (e is not MigrationProgress { BytesSent: > 0 } || crashed.Task.IsCompleted) return;
                // The target of the most VMs goes, so that re-placement has work to do.
                var victim = placement.Values.GroupBy(h => h).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;
                crashed.SetResult(victim);
                _ = cluster.Targets.Single(t => t.HostId == victim).CrashAsync();
            },
            TimeSpan.FromSeconds(30));
        var lost = await crashed.Task;
        var survivor = cluster.Targets.Single(t => t.HostId != lost).HostId;
        var report = outcome.Report!;
        Assert.True(report.Verified, $"{report.Error}; {string.Join("; ", report.PerVm.Select(v => $"{v.Id}→{v.Target}: {v.Error}"))}");
        Assert.All(report.PerVm, v => Assert.Equal((true, true, survivor.Value), (v.HandedOver, v.DigestMatched, v.Target)));
        // The lost target's VMs are the re-placed ones, each onto the survivor; the journal and the console heard it.
        var moved = placement.Where(p => p.Value == lost).Select(p => p.Key.Value).Order().ToArray();
        Assert.NotEmpty(moved);
        Assert.Equal(moved, report.Replaced.Select(r => r.Vm).Order());
        Assert.All(report.Replaced, r => Assert.Equal((lost.Value, survivor.Value), (r.LostTarget, r.NewTarget)));
        Assert.Contains(report.LostTargets, l => l.StartsWith(lost.Value));
        Assert.Contains(events, e => e is VmsReplaced);
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State)); // each runs on the survivor, its source copy stopped
        Assert.Equal(fleet.Count, events.OfType<VmHandedOver>().Select(h => h.VmId).Distinct().Count());
    }

    [Fact]
    public async Task A_target_gone_after_its_vm_was_granted_but_before_it_confirmed_the_start_has_that_vm_re_placed_not_left_paused()
    {
        // The first host asked to start a VM never finishes starting it and then crashes (its synthetic guests end with
        // it): the grant is void, and that VM, like the host's others, is re-placed and handed over elsewhere.
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model with { MemoryBytes = 16L << 20 }, 7));
        var stuck = new StuckFirstHost();
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = (2 * 16L << 20) + (4L << 20), JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = host => stuck.For(host),
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
        IReadOnlyDictionary<VmId, HostId> placement = new Dictionary<VmId, HostId>();
        var events = new List<IVmScatterProtocol>();
        var run = MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()),
            e => { events.Add(e); if (e is MigrationPlaced p) placement = p.TargetOfVm; }, TimeSpan.FromSeconds(30));
        var (victim, granted) = await stuck.Stuck.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await cluster.Targets.Single(t => t.HostId.Value == victim).CrashAsync();
        var report = (await run).Report!;

        Assert.True(report.Verified, $"{report.Error}; {string.Join("; ", report.PerVm.Select(v => $"{v.Id}→{v.Target}: {v.Error}"))}");
        Assert.All(report.PerVm, v => Assert.NotEqual(victim, v.Target));
        Assert.Contains(report.Replaced, r => r.Vm == granted.Value && r.LostTarget == victim && r.NewTarget != victim);
        Assert.Equal(placement.Where(p => p.Value.Value == victim).Select(p => p.Key.Value).Order(), report.Replaced.Select(r => r.Vm).Order());
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State)); // each runs on its (new) target, once
        Assert.Equal(fleet.Count, events.OfType<VmHandedOver>().Select(h => h.VmId).Distinct().Count());
        Assert.DoesNotContain(events.OfType<VmHandedOver>(), h => h.TargetHostId.Value == victim);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_target_whose_guests_outlive_it_lost_between_grant_and_confirmation_is_asked_when_it_comes_back(bool backRunningIt)
    {
        // As with QEMU: the host's guests outlive its node, so while it is gone the granted VM stays paused on the
        // source (it may run there). The node restarts under the same host id; what it runs then decides: the VM was
        // handed over to it, or it is re-placed elsewhere.
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model with { MemoryBytes = 16L << 20 }, 7));
        var stuck = new StuckFirstHost { GuestsOutliveHost = true };
        long capacity = (2 * 16L << 20) + (4L << 20);
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = capacity, JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = host => stuck.For(host),
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
        IReadOnlyDictionary<VmId, HostId> placement = new Dictionary<VmId, HostId>();
        var events = new List<IVmScatterProtocol>();
        var run = MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options()),
            e => { lock (events) events.Add(e); if (e is MigrationPlaced p) placement = p.TargetOfVm; }, TimeSpan.FromSeconds(30));
        var (victim, granted) = await stuck.Stuck.Task.WaitAsync(TimeSpan.FromSeconds(60));
        var lost = cluster.Targets.Single(t => t.HostId.Value == victim);
        await lost.CrashAsync();
        var grantedVm = fleet.Single(v => v.Description.Id == granted);
        Assert.Equal(VmRunState.Paused, grantedVm.State); // granted: not resumed here while its target may run it

        await using var back = await VmScatterNode.StartAsync(new NodeOptions
        {
            Roles = ["target"], HostId = victim, Seeds = [$"{cluster.Scheduler.Address.Host}:{cluster.Scheduler.Address.Port}"], TargetCapacityBytes = capacity,
            // It becomes a member only once its old incarnation is downed and removed (no convergence before): longer than
            // the default 10 s join timeout on a busy CI machine.
            TargetBackend = new AdoptingBackend(backRunningIt ? [grantedVm.Description] : []), ExtraHocon = "vmscatter.node.guests-on-stop = quit\nvmscatter.node.join-timeout = 60s",
        });
        var report = (await run).Report!;

        var outcome = report.PerVm.Single(v => v.Id == granted.Value);
        Assert.True(outcome.HandedOver, $"{granted}: {outcome.Error}");
        Assert.Equal(backRunningIt ? victim : outcome.Target, outcome.Target);
        if (!backRunningIt) Assert.NotEqual(victim, outcome.Target);
        Assert.Equal(backRunningIt, !report.Replaced.Any(r => r.Vm == granted.Value));
        Assert.True(report.Verified, $"{report.Error}; {string.Join("; ", report.PerVm.Select(v => $"{v.Id}→{v.Target}: {v.Error}"))}");
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State)); // each runs in one place: its target
        lock (events) Assert.Equal(fleet.Count, events.OfType<VmHandedOver>().Select(h => h.VmId).Distinct().Count());
    }

    /// <summary>A restarted target's backend that re-adopted these guests (as a QEMU node does from its state file).</summary>
    private sealed class AdoptingBackend(IReadOnlyList<VmDescription> adopted) : ITargetBackend
    {
        private readonly SyntheticTargetBackend _inner = new();
        public string Name => "adopting";
        public bool GuestsOutliveHost => true;
        public IEnumerable<ILandedVm> Running => adopted.Select(d => new Adopted(d));
        public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);
        public Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken) =>
            _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);

        private sealed class Adopted(VmDescription description) : ILandedVm
        {
            public VmDescription Description => description;
            public VmRunState State => VmRunState.Running;
            public ValueTask DisposeAsync() => default;
        }
    }

    /// <summary>Synthetic targets, except that the first host asked to start a VM never completes any start.</summary>
    private sealed class StuckFirstHost
    {
        private string? _victim;
        public bool GuestsOutliveHost { get; init; }
        public TaskCompletionSource<(string Host, VmId Vm)> Stuck { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ITargetBackend For(string host) => new Backend(this, host);

        private sealed class Backend(StuckFirstHost owner, string host) : ITargetBackend
        {
            private readonly SyntheticTargetBackend _inner = new();
            public string Name => "stuck-first";
            public bool GuestsOutliveHost => owner.GuestsOutliveHost;
            public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);

            public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
            {
                if (Interlocked.CompareExchange(ref owner._victim, host, null) is null) owner.Stuck.TrySetResult((host, vm.Id));
                if (owner._victim == host) await Task.Delay(Timeout.Infinite, cancellationToken);
                return await _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);
            }
        }
    }

    [Fact]
    public async Task A_staggered_handover_hands_a_target_its_vms_while_later_waves_still_run_here_and_together_pauses_all_first()
    {
        foreach (var handover in new[] { HandoverMode.Staggered, HandoverMode.Together })
        {
            var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(6, Model, 13, OsImages: 1, Applications: 3));
            await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
            {
                SourceVms = fleet, Targets = 3, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            });
            await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
            int? runningAtFirstHandover = null;
            var handedOverTo = new List<HostId>();
            int freedWhileWavesWent = 0;
            var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
                new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options() with { Handover = handover, LinkBitsPerSecond = 100_000_000 }),
                e =>
                {
                    if (e is not VmHandedOver h) return;
                    runningAtFirstHandover ??= fleet.Count(v => v.State == VmRunState.Running);
                    if (!handedOverTo.Contains(h.TargetHostId)) handedOverTo.Add(h.TargetHostId);
                    // While the second target's VMs are handed over, the last wave still reads contents from guest pages,
                    // stopped VMs' included: none of them has been freed yet.
                    if (handedOverTo.Count == 2) freedWhileWavesWent += fleet.Count(v => v.Disposed);
                },
                TimeSpan.FromSeconds(30));

            var report = outcome.Report!;
            Assert.True(report.Verified, report.Error);
            Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
            Assert.Equal(report.DataPlaneRounds, report.DirtyPagesPerRound.Count);
            Assert.Equal(report.DataPlaneRounds, report.RoundSeconds.Count);
            if (handover == HandoverMode.Staggered)
            {
                Assert.Equal(3, report.Waves);
                Assert.True(report.DataPlaneRounds > report.Rounds, $"{report.DataPlaneRounds} rounds in all, {report.Rounds} per VM");
                // When the first target ran its VMs, the last wave's two VMs had not even been paused here (at 100 Mbit/s
                // the second wave alone takes a few hundred milliseconds).
                Assert.InRange(runningAtFirstHandover!.Value, 2, 4);
                Assert.Equal(0, freedWhileWavesWent);
            }
            else
            {
                Assert.Equal(1, report.Waves);
                Assert.Equal(report.Rounds, report.DataPlaneRounds);
                Assert.Equal(0, runningAtFirstHandover);                     // every VM paused before any handover
            }
        }
    }

    [Fact]
    public async Task A_target_lost_in_a_later_wave_with_no_room_left_elsewhere_leaves_its_vms_running_here_and_the_report_says_so()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(6, Model, 14, OsImages: 1, Applications: 3));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            // Room for two VMs each: the targets left are full with their own.
            SourceVms = fleet, Targets = 3, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
        });
        await MigrationClient.WaitForHostsAsync(cluster.Scheduler.SchedulerProxy, 1, 3, TimeSpan.FromSeconds(30));
        IReadOnlyDictionary<VmId, HostId> placement = new Dictionary<VmId, HostId>();
        HostId? lost = null;
        var outcome = await MigrationClient.RunAsync(cluster.Scheduler.System, cluster.Scheduler.SchedulerProxy,
            new StartMigration(MigrationId.New(), cluster.Source.HostId, [], [], TestConfig.Options() with { LinkBitsPerSecond = 50_000_000 }),
            e =>
            {
                if (e is MigrationPlaced placed) placement = placed.TargetOfVm;
                // At the first handover, crash the last wave's target (waves go in target order): seconds before its turn.
                if (e is not VmHandedOver || lost is not null) return;
                lost = placement.Values.Distinct().Order().Last();
                _ = cluster.Targets.Single(t => t.HostId == lost).CrashAsync();
            },
            TimeSpan.FromSeconds(30));

        Assert.NotNull(lost);
        var report = outcome.Report!;
        Assert.False(report.Verified);
        Assert.Contains(report.PerVm, v => v.HandedOver);
        var stayed = placement.Where(p => p.Value == lost).Select(p => p.Key.Value).Order().ToArray();
        Assert.Equal(stayed, report.Replaced.Select(r => r.Vm).Order());
        Assert.All(report.Replaced, r => Assert.Equal("", r.NewTarget));
        foreach (var vm in report.PerVm)
        {
            var state = fleet.Single(v => v.Description.Id == V(vm.Id)).State;
            // Nothing lost, nothing twice: each VM runs on its target (its source copy stopped) or here.
            Assert.Equal(vm.HandedOver ? VmRunState.Stopped : VmRunState.Running, state);
            Assert.Equal(!stayed.Contains(vm.Id), vm.HandedOver);
            if (!vm.HandedOver) Assert.Contains("room", vm.Error);
        }
    }

    /// <summary>A target that cannot start a VM: that VM resumes on its source; the others are handed over.</summary>
    [Fact]
    public async Task Vms_paused_past_the_decision_bound_run_on_the_source_and_their_handovers_are_refused()
    {
        // A zero bound: the source resumes each VM as soon as its transfer is through, before the scheduler's "start it
        // on its target" (digests match) reaches it; the source refuses that handover. Each VM runs once, here.
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model, 31));
        var backends = new Dictionary<string, RecordingBackend>();
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 4 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            ExtraHocon = "vmscatter.source.decision-timeout = 0s",
            TargetBackendFor = host => backends[host] = new RecordingBackend(),
        });
        var (outcome, events) = await Migrate(cluster, TestConfig.Options(), 2);
        var report = outcome.Report!;
        int landed = backends.Values.Sum(b => b.Landed.Count);
        foreach (var vm in report.PerVm)
        {
            var source = fleet.Single(v => v.Description.Id == V(vm.Id));
            bool onTarget = backends.Values.Any(b => b.Landed.ContainsKey(V(vm.Id)));
            // Exactly one running copy: on its target with the source stopped, or here with no target copy.
            Assert.Equal(vm.HandedOver, onTarget);
            Assert.Equal(vm.HandedOver ? VmRunState.Stopped : VmRunState.Running, source.State);
            if (!vm.HandedOver) Assert.Contains($"the source refused the handover: VM {vm.Id} runs on the source again", vm.Error);
        }
        Assert.Equal(0, landed);
        Assert.Equal(4, report.PerVm.Count(v => v.DigestMatched && !v.HandedOver));
    }

    /// <summary>
    /// The next wave waits for the previous wave's VMs to run again (so its whole-memory work does not share the cores
    /// with their handover), but only so long: here the first wave's host cannot start its VMs until a VM of the second
    /// wave runs elsewhere, which only the hold's bound lets happen. Every VM is still handed over, each once.
    /// </summary>
    [Fact]
    public async Task A_next_wave_held_for_a_handover_that_does_not_come_starts_after_the_bound()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(4, Model, 17));
        var gate = new FirstHostGate();
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = host => new GatedBackend(gate, host),
        });
        var (outcome, events) = await Migrate(cluster, TestConfig.Options(), 2);
        var report = outcome.Report!;
        Assert.True(report.Verified, TestConfig.Why(report));
        Assert.Equal(2, report.PerVm.Select(v => v.Target).Distinct().Count());
        Assert.All(fleet, vm => Assert.Equal(VmRunState.Stopped, vm.State));
        // The first wave's host started its VMs only after the other host ran one of the second wave's (in the order the
        // backends ran them: the scheduler may hear of the two hosts' starts in either order).
        Assert.NotNull(gate.First);
        var started = gate.Started.ToArray();
        Assert.Equal(4, started.Length);
        Assert.True(started[0].Host != gate.First, $"gated {gate.First}; started {string.Join(", ", started.Select(s => $"{s.Vm}@{s.Host}"))}");
        Assert.Equal(4, events.OfType<VmHandedOver>().Count());
    }

    /// <summary>The first host to start a VM waits until another host started one.</summary>
    private sealed class FirstHostGate
    {
        private string? _first;
        private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string? First => Volatile.Read(ref _first);
        public bool Holds(string host) => (Interlocked.CompareExchange(ref _first, host, null) ?? host) == host;
        public Task Opened => _opened.Task;
        public void Open() => _opened.TrySetResult();
        /// <summary>The VMs the hosts ran, in the order their backends ran them.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<(string Host, string Vm)> Started { get; } = new();
    }

    private sealed class GatedBackend(FirstHostGate gate, string host) : ITargetBackend
    {
        private readonly SyntheticTargetBackend _inner = new();
        public string Name => "gated";
        public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);

        public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
        {
            if (gate.Holds(host)) await gate.Opened.WaitAsync(TimeSpan.FromSeconds(20), cancellationToken);
            var landed = await _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);
            gate.Started.Enqueue((host, vm.Id.Value));
            if (!gate.Holds(host)) gate.Open();
            return landed;
        }
    }

    /// <summary>The synthetic backend, counting the VMs it started.</summary>
    private sealed class RecordingBackend : ITargetBackend
    {
        private readonly SyntheticTargetBackend _inner = new();
        public System.Collections.Concurrent.ConcurrentDictionary<VmId, bool> Landed { get; } = new();
        public string Name => "recording";
        public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);

        public async Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken)
        {
            var landed = await _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);
            Assert.True(Landed.TryAdd(vm.Id, true), $"VM {vm.Id} started twice on one host");
            return landed;
        }
    }

    private sealed class RefusingBackend(VmId refuse) : ITargetBackend
    {
        private readonly SyntheticTargetBackend _inner = new();
        public string Name => "refusing";
        public IWritableGuestMemory AllocateMemory(VmDescription vm) => _inner.AllocateMemory(vm);
        public Task<ILandedVm> ResumeAsync(VmDescription vm, IWritableGuestMemory memory, byte[] deviceState, CancellationToken cancellationToken) =>
            vm.Id == refuse ? throw new InvalidOperationException("simulated hypervisor failure") : _inner.ResumeAsync(vm, memory, deviceState, cancellationToken);
    }

    [Fact]
    public async Task A_vm_its_target_cannot_resume_keeps_running_on_the_source()
    {
        var fleet = SyntheticFleet.Create(new SyntheticFleetSpec(3, Model with { DirtyPagesPerSecond = 0 }, 12));
        await using var cluster = await LocalCluster.StartAsync(new LocalClusterOptions
        {
            SourceVms = fleet, Targets = 2, TargetCapacityBytes = 2 * Model.MemoryBytes, JournalConnectionString = TestConfig.TempJournal(),
            TargetBackendFor = _ => new RefusingBackend(V("vm-001")),
            // As the suite's node processes run: serializers compiled where first used, neither at start nor when the migration begins.
            ExtraHocon = NodeProcess.TestNodeHocon,
        });
        var (outcome, events) = await Migrate(cluster, TestConfig.Options(GroupTransport.FanOut), 2);

        var report = outcome.Report!;
        Assert.False(report.Verified);
        var refused = report.PerVm.Single(v => v.Id == "vm-001");
        Assert.True(refused.DigestMatched);
        Assert.False(refused.HandedOver);
        Assert.Contains("simulated hypervisor failure", refused.Error);
        Assert.Contains(events.OfType<VmHandoverFailed>(), e => e.VmId == V("vm-001"));
        Assert.All(report.PerVm.Where(v => v.Id != "vm-001"), v => Assert.True(v.HandedOver));
        Assert.Equal(VmRunState.Running, fleet.Single(v => v.Description.Id == V("vm-001")).State);
        Assert.All(fleet.Where(v => v.Description.Id != V("vm-001")), v => Assert.Equal(VmRunState.Stopped, v.State));
        Assert.All(cluster.Targets.Append(cluster.Source).Append(cluster.Scheduler), node => Assert.False(SerializerWarmup.IsWarm(node.System), node.HostId.Value));
    }
}
