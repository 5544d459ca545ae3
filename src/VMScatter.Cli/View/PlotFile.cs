namespace VMScatter.Cli.View;

public enum PlotFormat { Png, Svg }

/// <summary>
/// The file a <c>--plot</c> option names: its extension picks the format. Checked before any work starts, and free of
/// ScottPlot, so that a run without <c>--plot</c> never loads it.
/// </summary>
public static class PlotFile
{
    /// <summary>The format of <paramref name="path"/>, or a one-line error: only .png and .svg are drawn, into a folder that exists.</summary>
    public static PlotFormat Check(string path, string option = "--plot")
    {
        var format = Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".png" => PlotFormat.Png,
            ".svg" => PlotFormat.Svg,
            _ => throw new UserError($"{option}: '{path}' must end in .png or .svg (the extension picks the format)"),
        };
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null && !Directory.Exists(folder)) throw new UserError($"{option}: the folder of '{path}' does not exist");
        return format;
    }
}
