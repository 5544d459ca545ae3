using System.Globalization;

namespace VMScatter.Domain.Units;

/// <summary>Splits "1.5GiB" or "100 Mbit" into its number and its (lower-cased, trimmed) unit.</summary>
internal static class Quantity
{
    public static bool TrySplit(string? text, out double number, out string unit)
    {
        number = 0;
        unit = "";
        if (string.IsNullOrWhiteSpace(text)) return false;
        var s = text.Trim();
        int split = 0;
        while (split < s.Length && (char.IsDigit(s[split]) || s[split] == '.')) split++;
        if (split == 0 || !double.TryParse(s[..split], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out number)) return false;
        unit = s[split..].Trim().ToLowerInvariant();
        return true;
    }
}
