using System.Runtime.InteropServices;

namespace VMScatter.DataPlane.Net;

/// <summary>
/// The network namespace a host's data-plane sockets live in. A socket belongs to the namespace of the thread that
/// created it, for its whole life, whichever thread later uses it: so each socket is created on a short-lived thread
/// that first enters the namespace (setns), and is then used from anywhere. Lets one process run hosts that sit on
/// real links (veths on a bridge, shaped by tc, counted by the kernel) without a process per host.
/// </summary>
public sealed class NetworkPlace
{
    /// <summary>This process's own namespace: sockets are created where they are asked for.</summary>
    public static readonly NetworkPlace Here = new(null);

    private const int CloneNewNet = 0x40000000;

    private NetworkPlace(string? name) => Name = name;

    /// <summary>The namespace's name under /var/run/netns (ip netns), or null for this process's own.</summary>
    public string? Name { get; }

    /// <summary>A namespace made by <c>ip netns add NAME</c>; an empty name is this process's own.</summary>
    public static NetworkPlace Named(string? name)
    {
        if (string.IsNullOrEmpty(name)) return Here;
        if (name.Contains('/') || name is "." or "..") throw new ArgumentException($"network namespace '{name}' is not a name");
        if (!File.Exists(PathOf(name))) throw new ArgumentException($"network namespace '{name}' does not exist ({PathOf(name)})");
        return new NetworkPlace(name);
    }

    private static string PathOf(string name) => $"/var/run/netns/{name}";

    /// <summary>
    /// Runs <paramref name="make"/> (which creates sockets) inside this namespace and returns what it made. It must not
    /// start tasks or threads: a thread made from inside (the thread pool adds workers from the thread that queues work)
    /// stays in the namespace for life, and every socket or `ip` command it later makes lands there too.
    /// </summary>
    public T Create<T>(Func<T> make)
    {
        if (Name is null) return make();
        T? made = default;
        Exception? failed = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(PathOf(Name));
                // This thread only: it ends right after, and no other thread changes namespace.
                if (SetNs((int)ns.DangerousGetHandle(), CloneNewNet) != 0)
                    throw new InvalidOperationException($"cannot enter network namespace '{Name}' (errno {Marshal.GetLastPInvokeError()}; needs root)");
                made = make();
            }
            catch (Exception e) { failed = e; }
        }) { IsBackground = true, Name = $"netns {Name}" };
        thread.Start();
        thread.Join();
        if (failed is not null) throw failed;
        return made!;
    }

    public override string ToString() => Name ?? "(this process's namespace)";

    [DllImport("libc", EntryPoint = "setns", SetLastError = true)]
    private static extern int SetNs(int fd, int nstype);
}
