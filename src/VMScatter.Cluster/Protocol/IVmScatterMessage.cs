namespace VMScatter.Cluster.Protocol;

/// <summary>
/// Marker for every control-plane message and persisted event; hocon/vmscatter.conf binds it to Hyperion.
/// Messages are immutable records. Bulk page data never implements this: it travels on the data plane.
/// </summary>
public interface IVmScatterMessage;

/// <summary>An event the scheduler journals; bound to <see cref="Serialization.JsonEventSerializer"/> so old journals replay.</summary>
public interface IPersistedEvent : IVmScatterMessage;
