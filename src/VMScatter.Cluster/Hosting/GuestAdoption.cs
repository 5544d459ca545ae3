using VMScatter.Domain.Units;
using VMScatter.Qemu;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// A QEMU node's start: every guest its state file lists is re-adopted if its QEMU still runs, as `--adopt` adopts a
/// foreign guest (the monitor answers, the RAM file is there); a target's copy that was still arriving (it never ran)
/// is discarded; an entry whose QEMU is gone is dropped, with its files if they were the node's. One line each.
/// </summary>
public static class GuestAdoption
{
    /// <summary>Returns the source guests re-adopted; landed guests go into <paramref name="target"/> (null: the node is no target).</summary>
    public static async Task<IReadOnlyList<QemuVm>> ReadoptAsync(GuestStateFile state, QemuSettings settings, bool sourceRole, QemuTargetBackend? target, Action<string> say, CancellationToken cancellationToken)
    {
        var sources = new List<QemuVm>();
        foreach (var entry in state.Entries)
        {
            string what = $"guest {entry.Id} ({entry.Place.ToString().ToLowerInvariant()}, {ByteSize.Format(entry.MemoryBytes)}, RAM {entry.RamFile})";
            if (IsGone(entry))
            {
                await DropAsync(state, entry).ConfigureAwait(false);
                say($"dropped {what}: its QEMU{(entry.Pid > 0 ? $" (pid {entry.Pid})" : "")} is gone");
                continue;
            }
            try
            {
                switch (entry.Place)
                {
                    case GuestPlace.Arriving:
                        // Its transfer died with the node: the copy never ran, and no migration will finish it.
                        entry.Process?.Kill();
                        if (entry.Process is { } pid) await pid.WaitForExitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
                        await DropAsync(state, entry).ConfigureAwait(false);
                        say($"discarded {what}: it was still arriving when the node stopped (never ran)");
                        break;
                    case GuestPlace.Source when sourceRole:
                        var vm = await QemuVm.ReattachAsync(entry, settings, state, cancellationToken).ConfigureAwait(false);
                        sources.Add(vm);
                        say($"re-adopted {what}: pid {entry.Pid}, {vm.State.ToString().ToLowerInvariant()}" +
                            (vm.State == Domain.VmRunState.Paused ? " (paused mid-migration: its target may run it; it stays paused here)" : ""));
                        break;
                    case GuestPlace.Landed when target is not null:
                        await target.ReattachAsync(entry, cancellationToken).ConfigureAwait(false);
                        say($"re-adopted {what}: pid {entry.Pid}, running");
                        break;
                    default:
                        say($"left {what} running and listed: this node no longer has the {(entry.Place == GuestPlace.Source ? "source" : "target")} role");
                        break;
                }
            }
            catch (QemuStepException e) when (IsGone(entry))
            {
                await DropAsync(state, entry).ConfigureAwait(false);
                say($"dropped {what}: its QEMU is gone ({e.Message})");
            }
            catch (QemuStepException e)
            {
                say($"did not re-adopt {what}: {e.Message}; it is left running and listed");
            }
        }
        return sources;
    }

    /// <summary>Its QEMU no longer runs: the process is gone, or (a foreign guest, whose pid is unknown) nothing answers on its socket.</summary>
    private static bool IsGone(GuestStateEntry entry) => entry.Process is { } pid ? !pid.IsAlive : !MonitorListening(entry.QmpSocket);

    private static bool MonitorListening(string socket)
    {
        using var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        try { s.Connect(new System.Net.Sockets.UnixDomainSocketEndPoint(socket)); return true; }
        catch (System.Net.Sockets.SocketException) { return false; }
    }

    /// <summary>Removes the entry, and the files if they were the node's (a foreign guest's are its owner's).</summary>
    private static async Task DropAsync(GuestStateFile state, GuestStateEntry entry)
    {
        if (!entry.Foreign)
        {
            File.Delete(entry.RamFile);
            if (entry.RuntimeDirectory is { } dir) try { Directory.Delete(dir, recursive: true); } catch (DirectoryNotFoundException) { }
        }
        await state.RemoveAsync(entry.Key).ConfigureAwait(false);
    }
}
