using System.Text.Json;
using System.Text.Json.Serialization;

namespace VMScatter.Cli.View;

/// <summary>The admin commands' --json output: camelCase like the report, enums by name, one document on stdout.</summary>
public static class AdminJson
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    public static void Print<T>(T value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, Options));
}
