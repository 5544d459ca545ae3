using System.Globalization;

namespace VMScatter.Domain.Units;

/// <summary>Parses and prints sizes the way operators write them: 256MiB, 1GiB, 4096, 1.5GB.</summary>
public static class ByteSize
{
    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (!Quantity.TrySplit(text, out double number, out string unit)) return false;
        long multiplier = unit switch
        {
            "" or "b" => 1,
            "k" or "kib" => 1L << 10,
            "kb" => 1000,
            "m" or "mib" => 1L << 20,
            "mb" => 1000_000,
            "g" or "gib" => 1L << 30,
            "gb" => 1000_000_000,
            "t" or "tib" => 1L << 40,
            _ => -1,
        };
        if (multiplier < 0) return false;
        double value = number * multiplier;
        if (value > long.MaxValue || value < 0) return false;
        bytes = (long)value;
        return true;
    }

    public static string Format(double bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        int u = 0;
        while (Math.Abs(bytes) >= 1024 && u < units.Length - 1) { bytes /= 1024; u++; }
        return u == 0 ? $"{bytes:0} B" : string.Create(CultureInfo.InvariantCulture, $"{bytes:0.0} {units[u]}");
    }
}
