using System.Runtime.CompilerServices;
using Akka.Actor;
using Akka.Event;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// Akka log events as one line each on stderr: level, time, source, message and, for an error, the exception's
/// type and message. Never a stack trace: operators read these; developers can switch to Akka's default logger.
/// A node being torn down on purpose can be muted, since its peers' disassociations are then expected.
/// </summary>
public sealed class ConsoleLogger : ReceiveActor
{
    private static readonly ConditionalWeakTable<ActorSystem, object> Muted = new();

    public static void Mute(ActorSystem system) => Muted.AddOrUpdate(system, new object());

    public ConsoleLogger()
    {
        Receive<InitializeLogger>(_ => Sender.Tell(new LoggerInitialized()));
        Receive<LogEvent>(e =>
        {
            if (Muted.TryGetValue(Context.System, out _)) return;
            string level = e.LogLevel() switch
            {
                LogLevel.ErrorLevel => "ERROR",
                LogLevel.WarningLevel => "WARN",
                LogLevel.InfoLevel => "INFO",
                _ => "DEBUG",
            };
            string cause = e is Error { Cause: { } c } ? $" ({c.GetType().Name}: {c.Message.ReplaceLineEndings(" ")})" : "";
            System.Console.Error.WriteLine($"[{level}] {e.Timestamp:HH:mm:ss.fff} {e.LogSource}: {e.Message?.ToString()?.ReplaceLineEndings(" ")}{cause}");
        });
    }
}
