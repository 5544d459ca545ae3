namespace VMScatter.Cluster.Protocol;

/// <summary>Everything VMScatter's actors say to each other: a control-plane message or a journaled event.</summary>
public interface IVmScatterProtocol;

/// <summary>
/// A control-plane message; hocon/vmscatter.conf binds it to Hyperion. Messages are immutable records. Bulk page
/// data never implements this: it travels on the data plane.
/// </summary>
public interface IVmScatterMessage : IVmScatterProtocol;

/// <summary>
/// An event the scheduler journals (and also tells the console); bound to <see cref="Serialization.JsonEventSerializer"/>
/// so an old journal replays after the records change. Disjoint from <see cref="IVmScatterMessage"/>, so exactly one
/// binding matches whatever order the configuration's bindings end up in.
/// </summary>
public interface IPersistedEvent : IVmScatterProtocol;
