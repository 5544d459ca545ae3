using System.Text;

namespace VMScatter.Domain.Units;

/// <summary>
/// How a policy enum is spelled on the command line, in HOCON and in reports: the member name in kebab case
/// (<c>TrafficAware</c> is <c>traffic-aware</c>, <c>Lz4</c> is <c>lz4</c>). One spelling, derived, never a second table.
/// </summary>
public static class EnumNames<T> where T : struct, Enum
{
    private static readonly (T Value, string Name)[] All = Enum.GetValues<T>().Select(v => (v, Kebab(v.ToString()))).ToArray();

    public static IReadOnlyList<string> Names { get; } = All.Select(a => a.Name).ToArray();

    public static string Name(T value)
    {
        foreach (var (v, name) in All)
            if (EqualityComparer<T>.Default.Equals(v, value)) return name;
        throw new ArgumentOutOfRangeException(nameof(value), value, $"not a {typeof(T).Name}");
    }

    public static bool TryParse(string? name, out T value)
    {
        foreach (var (v, n) in All)
            if (n == name) { value = v; return true; }
        value = default;
        return false;
    }

    /// <summary>Parses <paramref name="name"/>, or throws a <see cref="FormatException"/> naming the setting and the choices.</summary>
    public static T Parse(string? name, string setting) =>
        TryParse(name, out var value) ? value : throw new FormatException($"{setting} must be one of {string.Join(", ", Names)} (got '{name}')");

    private static string Kebab(string member)
    {
        var s = new StringBuilder(member.Length + 4);
        for (int i = 0; i < member.Length; i++)
        {
            if (char.IsUpper(member[i]) && i > 0) s.Append('-');
            s.Append(char.ToLowerInvariant(member[i]));
        }
        return s.ToString();
    }
}

public static class EnumNameExtensions
{
    /// <summary>The policy's spelling on the command line and in reports (see <see cref="EnumNames{T}"/>).</summary>
    public static string ToName<T>(this T value) where T : struct, Enum => EnumNames<T>.Name(value);
}
