namespace VMScatter.Cli;

/// <summary>A mistake in what the user asked for: reported as one line on stderr with exit code 2, never a stack trace.</summary>
public sealed class UserError(string message) : Exception(message);

public static class ExitCodes
{
    public const int Success = 0;
    /// <summary>The migration ran but not every VM was verified and handed over.</summary>
    public const int MigrationFailed = 1;
    public const int BadInput = 2;
    /// <summary>The node was removed from the cluster (downed, or its actor system stopped) without being asked to stop: a service manager should restart it.</summary>
    public const int NodeLost = 3;
    /// <summary>Something failed that is not the user's input (a guest that did not answer, a step that timed out): one line, the cause named.</summary>
    public const int Failed = 4;
}
