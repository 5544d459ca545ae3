using System.Globalization;

namespace VMScatter.Domain.Units;

/// <summary>Parses and prints sizes the way operators write them: 256MiB, 1GiB, 4096, 1.5GB.</summary>
public static class ByteSize
{
    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text)) return false;
        var s = text.Trim();
        int split = 0;
        while (split < s.Length && (char.IsDigit(s[split]) || s[split] == '.')) split++;
        if (split == 0) return false;
        if (!double.TryParse(s[..split], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number)) return false;
        long multiplier = s[split..].Trim().ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "K" or "KIB" => 1L << 10,
            "KB" => 1000,
            "M" or "MIB" => 1L << 20,
            "MB" => 1000_000,
            "G" or "GIB" => 1L << 30,
            "GB" => 1000_000_000,
            "T" or "TIB" => 1L << 40,
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
