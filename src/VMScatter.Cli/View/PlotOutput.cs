using ScottPlot;
using SkiaSharp;

namespace VMScatter.Cli.View;

/// <summary>Writes a figure of several plots to a PNG or SVG file, headless (SkiaSharp, no display).</summary>
internal static class PlotOutput
{
    private static readonly Lock FontGate = new();
    private static bool _fontChosen;

    /// <summary>A sans-serif font this machine has (DejaVu Sans on Debian), else ScottPlot's own choice.</summary>
    public static void UseSansFont()
    {
        lock (FontGate)
        {
            if (_fontChosen) return;
            _fontChosen = true;
            foreach (var name in new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Open Sans" })
                if (Fonts.GetTypeface(name, false, false) is { } face && face.FamilyName == name) { Fonts.Default = name; return; }
        }
    }

    public static void Save(Multiplot figure, string path, int width, int height)
    {
        switch (PlotFile.Check(path))
        {
            case PlotFormat.Png:
                figure.SavePng(path, width, height);
                break;
            case PlotFormat.Svg:
                using (var file = new SKFileWStream(path))
                using (var canvas = SKSvgCanvas.Create(new SKRect(0, 0, width, height), file))
                {
                    canvas.Clear(SKColors.White);
                    figure.Render(canvas, new PixelRect(0, width, height, 0));
                }
                break;
        }
    }

    /// <summary>"one-to-one-sequential" → "one-to-one\nsequential": long method names on two lines under their bar.</summary>
    public static string Wrap(string name, int width = 12)
    {
        int cut = name.LastIndexOf('-');
        return name.Length > width && cut > 0 ? name[..cut] + "\n" + name[(cut + 1)..] : name;
    }
}
