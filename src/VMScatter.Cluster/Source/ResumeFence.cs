using VMScatter.Domain;

namespace VMScatter.Cluster.Source;

/// <summary>
/// The source's fence on its paused VMs: a VM whose transfer is through runs again in exactly one place. A target
/// may start it only with a grant from here, and this side resumes it only while it is not granted, so a grant and
/// a local resume exclude each other, whatever the scheduler (or its absence) says. A grant returns only when its
/// target reports that it did not start the VM. Pure state; the source migration actor asks it and acts.
/// </summary>
public sealed class ResumeFence
{
    private readonly Dictionary<VmId, (HostId Target, double PausedAt)> _waiting = new();
    private readonly Dictionary<VmId, HostId> _granted = new();
    private readonly HashSet<VmId> _resumedHere = new();

    /// <summary>The VM is paused here and its transfer is through; its target is <paramref name="target"/>.</summary>
    public void Transferred(VmId vm, HostId target, double nowSeconds)
    {
        if (_granted.ContainsKey(vm) || _resumedHere.Contains(vm)) return;
        _waiting.TryAdd(vm, (target, nowSeconds));
    }

    /// <summary>May <paramref name="host"/> start <paramref name="vm"/>? Null: yes, and from now on it is that host's; otherwise why not (a repeat too: one start per grant).</summary>
    public string? Grant(VmId vm, HostId host)
    {
        if (_granted.TryGetValue(vm, out var holder)) return holder == host ? $"VM {vm} is granted to {host} already" : $"VM {vm} is granted to {holder}";
        if (_resumedHere.Contains(vm)) return $"VM {vm} runs on the source again";
        if (!_waiting.TryGetValue(vm, out var w)) return $"VM {vm} is not waiting for a handover here";
        if (w.Target != host) return $"host {host} is not VM {vm}'s target ({w.Target})";
        _waiting.Remove(vm);
        _granted[vm] = host;
        return null;
    }

    /// <summary>The granted host did not start the VM: it may run here again.</summary>
    public bool Return(VmId vm, HostId host)
    {
        if (!_granted.TryGetValue(vm, out var holder) || holder != host) return false;
        _granted.Remove(vm);
        _waiting[vm] = (host, double.NegativeInfinity);
        return true;
    }

    /// <summary>May the VM run here again? Null: yes (it is marked so); otherwise why not (it is granted to a target).</summary>
    public string? ResumeHere(VmId vm)
    {
        if (_granted.TryGetValue(vm, out var holder)) return $"VM {vm} is granted to {holder}, which may be running it";
        _waiting.Remove(vm);
        _resumedHere.Add(vm);
        return null;
    }

    /// <summary>The VMs waiting longer than <paramref name="bound"/> for a decision: nobody holds them, so they may run here again.</summary>
    public IReadOnlyList<VmId> Overdue(double nowSeconds, TimeSpan bound) =>
        _waiting.Where(w => nowSeconds - w.Value.PausedAt >= bound.TotalSeconds).Select(w => w.Key).Order().ToArray();

    public bool IsGranted(VmId vm) => _granted.ContainsKey(vm);

    public bool IsResumedHere(VmId vm) => _resumedHere.Contains(vm);

    /// <summary>
    /// The VM's target was lost before the VM was granted to it: it runs here again, and a later transfer (to another
    /// target) may hand it over. False if it is granted: its target may be running it.
    /// </summary>
    public bool Withdraw(VmId vm)
    {
        if (_granted.ContainsKey(vm)) return false;
        _waiting.Remove(vm);
        return true;
    }

    /// <summary>
    /// The scheduler's word that <paramref name="host"/>, granted the VM, is gone without starting it for good (its
    /// guests ended with it): the VM is nobody's, and may run here again or be granted to another target.
    /// </summary>
    public bool Void(VmId vm, HostId host)
    {
        if (!_granted.TryGetValue(vm, out var holder) || holder != host) return false;
        _granted.Remove(vm);
        return true;
    }

    /// <summary>The host the VM is granted to, if any.</summary>
    public HostId? HolderOf(VmId vm) => _granted.TryGetValue(vm, out var holder) ? holder : null;
}
