using Akka.Actor;
using Akka.Event;
using Akka.Persistence;
using VMScatter.Cluster.Protocol;
using VMScatter.Domain;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// The journal's first write is slow (its SQL is built and its connection opened on first use), and a migration's first
/// event would wait for it with nothing moving. A scheduler node writes one event under its own persistence id at start
/// and deletes it, so the scheduler's first write is a warm one.
/// </summary>
public static class JournalWarmup
{
    /// <summary>Runs the warm-up; true once it wrote, false if the journal refused it (the scheduler will meet the same fault).</summary>
    public static Task<bool> Run(ActorSystem system, HostId hostId)
    {
        var done = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        system.ActorOf(Props.Create(() => new Writer(hostId, done)), "journal-warmup");
        return done.Task;
    }

    private sealed class Writer : ReceivePersistentActor
    {
        private readonly TaskCompletionSource<bool> _done;
        private readonly ILoggingAdapter _log = Context.GetLogger();

        public Writer(HostId hostId, TaskCompletionSource<bool> done)
        {
            _done = done;
            // Per node: two scheduler nodes starting at once never write the same sequence number.
            PersistenceId = $"vmscatter-journal-warmup-{hostId.Value}";
            Recover<JournalWarmedUp>(_ => { });
            Recover<RecoveryCompleted>(_ => Self.Tell(Write.Instance));
            Command<Write>(_ => Persist(new JournalWarmedUp(hostId, DateTime.UtcNow), _ => DeleteMessages(LastSequenceNr)));
            Command<DeleteMessagesSuccess>(_ => Finish());
            Command<DeleteMessagesFailure>(f =>
            {
                _log.Warning("Journal warm-up: its event was written but not deleted: {0}", f.Cause.Message);
                Finish();
            });
        }

        public override string PersistenceId { get; }

        private void Finish()
        {
            _done.TrySetResult(true);
            Context.Stop(Self);
        }

        protected override void OnPersistFailure(Exception cause, object @event, long sequenceNr)
        {
            _log.Warning("Journal warm-up: the journal refused a write: {0}", cause.Message);
            base.OnPersistFailure(cause, @event, sequenceNr);
        }

        protected override void OnRecoveryFailure(Exception reason, object? message = null)
        {
            _log.Warning("Journal warm-up: recovery failed: {0}", reason.Message);
            base.OnRecoveryFailure(reason, message);
        }

        /// <summary>Stopped without having written (a persist or recovery failure stops it): false.</summary>
        protected override void PostStop() => _done.TrySetResult(false);

        private sealed class Write
        {
            public static readonly Write Instance = new();
        }
    }
}
