using System.Globalization;

namespace VMScatter.Domain.Units;

/// <summary>Link rates as operators write them: 1Gbit, 100Mbit, 10Gbps, 0 or unlimited (no limit).</summary>
public static class LinkRate
{
    public static bool TryParse(string? text, out long bitsPerSecond)
    {
        bitsPerSecond = 0;
        if (text?.Trim().ToLowerInvariant() is "0" or "unlimited" or "none") return true;
        if (!Quantity.TrySplit(text, out double value, out string unit)) return false;
        double multiplier = unit switch
        {
            "bit" or "bps" or "b/s" => 1,
            "kbit" or "kbps" => 1e3,
            "mbit" or "mbps" => 1e6,
            "gbit" or "gbps" => 1e9,
            _ => -1,
        };
        if (multiplier < 0 || value <= 0) return false;
        bitsPerSecond = (long)(value * multiplier);
        return bitsPerSecond > 0;
    }

    public static string Format(long bitsPerSecond) => bitsPerSecond switch
    {
        0 => "unlimited",
        >= 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{bitsPerSecond / 1e9:0.##} Gbit/s"),
        >= 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{bitsPerSecond / 1e6:0.##} Mbit/s"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bitsPerSecond} bit/s"),
    };
}
