namespace VMScatter.Domain;

/// <summary>
/// A guest that runs outside the node's process (a QEMU), so it can outlive the node: a stopping node lets go of it,
/// still running, instead of ending it, and re-adopts it when it comes back. A guest without it (a synthetic one,
/// which lives in the node's memory) ends with its node.
/// </summary>
public interface IDetachableGuest
{
    /// <summary>Lets go of the guest without stopping it; this object is done with afterwards.</summary>
    ValueTask DetachAsync();
}
