using System.Diagnostics;
using System.Threading.Channels;
using Akka.Actor;
using VMScatter.Cluster.Protocol;
using VMScatter.Cluster.Scheduler;
using VMScatter.Domain;

namespace VMScatter.Cluster.Console;

/// <summary>
/// Submits one migration to the scheduler singleton and passes everything the scheduler says about it into a
/// channel the console reads. Stops itself when the migration finished or was rejected.
/// The singleton may move (or restart) meanwhile, and the new one does not know this console: once accepted, when
/// nothing was heard for <see cref="QuietAfter"/> the follower asks the scheduler (through the proxy) how the migration
/// stands (<see cref="FollowMigration"/>), and ends with the journal's report when it has ended. After
/// <see cref="GiveUpAfter"/> without any answer it gives up with an error.
/// Everything it sends goes to <c>via</c> wrapped by <c>envelope</c>: the scheduler proxy itself (a console that is a
/// member, as `demo` and `bench`), or a <see cref="Akka.Cluster.Tools.Client.ClusterClient"/> and its <c>Send</c> (the
/// `migrate` command, never a member). Through a cluster client the scheduler's events come back through a receptionist's
/// response tunnel; the <see cref="FollowMigration"/> poll also re-points the run's events to the tunnel it came through
/// (a new receptionist, a new scheduler), so progress resumes after either moved.
/// </summary>
public sealed class MigrationFollowerActor : ReceiveActor, IWithTimers
{
    public static readonly TimeSpan QuietAfter = TimeSpan.FromSeconds(3);
    public static readonly TimeSpan GiveUpAfter = TimeSpan.FromMinutes(5);

    private readonly Stopwatch _sinceHeard = Stopwatch.StartNew();
    private bool _accepted;
    private MigrationPhase? _lastPhase;
    private readonly HashSet<HostId> _lostSeen = new();

    public MigrationFollowerActor(IActorRef via, Func<object, object> envelope, StartMigration request, ChannelWriter<IVmScatterProtocol> events)
    {
        Receive<Submit>(_ => via.Tell(envelope(request)));
        Receive<MigrationRejected>(m => { events.TryWrite(m); events.TryComplete(); Context.Stop(Self); });
        Receive<MigrationFinished>(m =>
        {
            // Targets lost while this console's events were cut off (its receptionist's node was the one lost, say):
            // said now, from the report ("host: reason"), before the report itself.
            foreach (var lost in m.Report.LostTargets)
            {
                int colon = lost.IndexOf(": ", StringComparison.Ordinal);
                if (colon <= 0 || !Ids.IsValid(lost[..colon]) || _lostSeen.Contains(new HostId(lost[..colon]))) continue;
                var host = new HostId(lost[..colon]);
                events.TryWrite(new MigrationTargetLost(m.MigrationId, host, lost[(colon + 2)..]));
            }
            events.TryWrite(m);
            events.TryComplete();
            Context.Stop(Self);
        });
        Receive<Poll>(_ =>
        {
            if (!_accepted || _sinceHeard.Elapsed < QuietAfter) return;
            if (_sinceHeard.Elapsed >= GiveUpAfter)
            {
                events.TryComplete(new ConsoleTimeoutException($"no word from the scheduler about migration {request.MigrationId} for {GiveUpAfter.TotalSeconds:0} s"));
                Context.Stop(Self);
                return;
            }
            via.Tell(envelope(new FollowMigration(request.MigrationId)));
        });
        // A poll's answer: passed on only when the phase changed (a console line per change, not per poll).
        Receive<MigrationStatus>(m =>
        {
            _sinceHeard.Restart();
            if (m.Phase == _lastPhase) return;
            _lastPhase = m.Phase;
            events.TryWrite(m);
        });
        Receive<IVmScatterProtocol>(m =>
        {
            _sinceHeard.Restart();
            if (m is MigrationAccepted) _accepted = true;
            if (m is MigrationTargetLost lost) _lostSeen.Add(lost.HostId);
            events.TryWrite(m);
        });
    }

    public ITimerScheduler Timers { get; set; } = null!;

    protected override void PreStart()
    {
        Self.Tell(Submit.Instance);
        Timers.StartPeriodicTimer("poll", Poll.Instance, TimeSpan.FromSeconds(1));
    }

    private sealed record Submit { public static readonly Submit Instance = new(); }
    private sealed record Poll { public static readonly Poll Instance = new(); }
}
