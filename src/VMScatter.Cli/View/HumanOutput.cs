using System.Text;
using Spectre.Console;

namespace VMScatter.Cli.View;

/// <summary>
/// Where the human-readable output goes, whether it is a terminal that can redraw live progress, and where the
/// report's JSON goes with <c>--json -</c>.
/// </summary>
public sealed class HumanOutput
{
    private HumanOutput(TextWriter writer, IAnsiConsole console, bool live, TextWriter standardOutput) =>
        (Writer, Console, Live, StandardOutput) = (writer, console, live, standardOutput);

    public TextWriter Writer { get; }
    public IAnsiConsole Console { get; }
    /// <summary>A terminal: live bars. Otherwise (redirected, CI) plain lines with no escape codes.</summary>
    public bool Live { get; }
    /// <summary>The process's real standard output, whatever <see cref="System.Console.Out"/> was pointed at since.</summary>
    public TextWriter StandardOutput { get; }

    public void WriteLine(string line) => Writer.WriteLine(line);

    /// <summary>
    /// Standard output, or standard error when standard output carries the report's JSON (<c>--json -</c>). Then
    /// everything else that writes to <see cref="System.Console.Out"/> (the in-process cluster's log) goes to standard
    /// error too, so that the JSON is all standard output carries.
    /// </summary>
    public static HumanOutput Create(bool toStandardError)
    {
        var standardOutput = System.Console.Out;
        if (toStandardError) System.Console.SetOut(System.Console.Error);
        var writer = toStandardError ? System.Console.Error : standardOutput;
        bool redirected = toStandardError ? System.Console.IsErrorRedirected : System.Console.IsOutputRedirected;
        bool terminal = !redirected && Environment.GetEnvironmentVariable("TERM") is not (null or "" or "dumb");
        // Off a terminal Spectre must not guess: a log or a pipe gets no colours and no cursor movement.
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        return new HumanOutput(writer, console, terminal && console.Profile.Capabilities.Interactive && console.Profile.Capabilities.Ansi, standardOutput);
    }

    /// <summary>
    /// Until disposed, lines written to <see cref="System.Console.Out"/> go through Spectre, which prints them above a
    /// live view instead of across it.
    /// </summary>
    public IDisposable LinesAboveLiveView()
    {
        var previous = System.Console.Out;
        System.Console.SetOut(new SpectreLines(Console));
        return new Restore(previous);
    }

    private sealed class Restore(TextWriter previous) : IDisposable
    {
        public void Dispose() => System.Console.SetOut(previous);
    }

    /// <summary>Collects characters into lines and hands each whole line to Spectre as plain text.</summary>
    private sealed class SpectreLines(IAnsiConsole console) : TextWriter
    {
        private readonly StringBuilder _line = new();

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            if (value == '\n')
            {
                console.Write(new Text(_line.ToString().TrimEnd('\r') + "\n"));
                _line.Clear();
            }
            else _line.Append(value);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing && _line.Length > 0) Write('\n');
            base.Dispose(disposing);
        }
    }
}
