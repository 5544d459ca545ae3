namespace VMScatter.Bench;

/// <summary>Memory this machine can still give (MemAvailable), so a size that cannot fit is refused before anything is allocated.</summary>
public static class HostMemory
{
    public static long AvailableBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], out long kib))
                    return kib * 1024;
        }
        catch (IOException) { /* not Linux: the runtime's view below */ }
        return GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    }
}
