using Akka.Configuration;
using VMScatter.Domain;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// What a stopping node does with the guests it still runs (vmscatter.node.guests-on-stop). detach (the default): a
/// guest that runs outside this process (a QEMU: <see cref="IDetachableGuest"/>) is let go, still running, and the
/// node re-adopts it when it comes back. quit: it ends with the node, as a one-process demo's guests do. A guest that
/// lives in this process (synthetic) ends with it either way. Nothing waits on an actor's thread: the node awaits the
/// detaches and disposals after its actor system terminated.
/// </summary>
public sealed class GuestRelease(bool detach, PendingDisposals disposals)
{
    public bool Detaches => detach;

    public static GuestRelease From(Config config, PendingDisposals disposals) => config.GetString("vmscatter.node.guests-on-stop") switch
    {
        "detach" => new GuestRelease(true, disposals),
        "quit" => new GuestRelease(false, disposals),
        var other => throw new ConfigurationException($"vmscatter.node.guests-on-stop must be detach or quit (got '{other}')"),
    };

    /// <summary>The node stops: lets go of <paramref name="guest"/> (or ends it) without blocking; a failure goes to <paramref name="failed"/>.</summary>
    public void NodeStopping(IAsyncDisposable guest, Action<Exception> failed) =>
        disposals.Track(detach && guest is IDetachableGuest d ? d.DetachAsync().AsTask() : guest.DisposeAsync().AsTask(), failed);
}
