using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FashionViL.Synth;

/// <summary>
/// How one photo of a product is taken: the garment is scaled, rotated, shifted and possibly mirrored about the image
/// centre; the background is a light tint with per-pixel noise from <see cref="NoiseSeed"/>.
/// </summary>
/// <param name="Scale">Garment size relative to the frame (1 = the garment's unit square fills the image).</param>
/// <param name="RotationDegrees">Clockwise rotation.</param>
/// <param name="OffsetU">Horizontal shift as a fraction of the image width.</param>
/// <param name="OffsetV">Vertical shift as a fraction of the image height.</param>
/// <param name="Flip">Mirror left–right.</param>
public readonly record struct ViewParams(
    double Scale, double RotationDegrees, double OffsetU, double OffsetV, bool Flip,
    byte BackgroundR, byte BackgroundG, byte BackgroundB, ulong NoiseSeed)
{
    /// <summary>The straight, centred, unjittered view on a plain light-grey background.</summary>
    public static ViewParams Canonical => new(0.95, 0, 0, 0, false, 238, 238, 238, 0);

    /// <summary>
    /// View number <paramref name="index"/> of a product: 0 a near-frontal shot, 1 a jittered one, 2 a mirrored one,
    /// 3 a close-up (scale 1.15–1.25, the garment's edges leave the frame); later indices repeat the cycle.
    /// </summary>
    public static ViewParams Sample(SynthRandom rng, int index)
    {
        int kind = index % 4;
        double scale = kind switch { 0 => rng.Uniform(0.92, 1.0), 3 => rng.Uniform(1.15, 1.25), _ => rng.Uniform(0.88, 1.02) };
        double maxRot = kind == 0 ? 3 : 6, maxOff = kind == 0 ? 0.02 : 0.035;
        double rot = rng.Uniform(-maxRot, maxRot);
        double du = rng.Uniform(-maxOff, maxOff), dv = rng.Uniform(-maxOff, maxOff);
        int bg = rng.Between(228, 246);
        byte Tint() => (byte)Math.Clamp(bg + rng.Between(-4, 4), 0, 255);
        return new ViewParams(scale, rot, du, dv, kind == 2, Tint(), Tint(), Tint(), rng.NextULong());
    }
}

/// <summary>
/// Draws a <see cref="Garment"/> into an RGB image by testing every pixel against the category's shapes
/// (<see cref="GarmentShapes"/>): the topmost shape under the pixel decides its region; body pixels take the main colour
/// or the pattern colour, trim pixels the trim colour, detail pixels a shade of the main colour; region borders get a
/// dark outline; a soft top-down light and ±3 noise make pixels differ. No anti-aliasing.
/// </summary>
public static class GarmentRenderer
{
    private const double StripePeriod = 0.07, CheckPeriod = 0.08, DotPeriod = 0.07, DotRadius = 0.022;

    /// <summary>Renders a <paramref name="size"/>×<paramref name="size"/> picture of <paramref name="garment"/>.</summary>
    public static Image<Rgb24> Render(Garment garment, ViewParams view, int size)
    {
        var rgb = RenderPixels(garment, view, size, out _);
        return Image.LoadPixelData<Rgb24>(rgb, size, size);
    }

    /// <summary>The region of every pixel (row-major), as <see cref="Render"/> sees it.</summary>
    public static ShapeRegion[] Regions(Garment garment, ViewParams view, int size)
    {
        RenderPixels(garment, view, size, out var regions);
        return regions;
    }

    /// <summary>Whether the canonical-frame point (u, v) lies in the garment's body pattern's second colour.</summary>
    internal static bool InPattern(GarmentPattern pattern, double u, double v)
    {
        switch (pattern)
        {
            case GarmentPattern.Striped:
                return ((long)Math.Floor(v / StripePeriod) & 1) == 1;
            case GarmentPattern.Checked:
                return (((long)Math.Floor(u / CheckPeriod) + (long)Math.Floor(v / CheckPeriod)) & 1) == 1;
            case GarmentPattern.Dotted:
                double fu = u / DotPeriod - Math.Floor(u / DotPeriod) - 0.5, fv = v / DotPeriod - Math.Floor(v / DotPeriod) - 0.5;
                return (fu * fu + fv * fv) * DotPeriod * DotPeriod <= DotRadius * DotRadius;
            default:
                return false;
        }
    }

    private static byte[] RenderPixels(Garment g, ViewParams view, int size, out ShapeRegion[] regions)
    {
        if (size < 8 || size > 4096) throw new ArgumentOutOfRangeException(nameof(size), size, "image size must be in [8, 4096] pixels");
        g.Validate();
        var shapes = GarmentShapes.For(g);
        int n = size * size;
        regions = new ShapeRegion[n];
        var cu = new float[n];
        var cv = new float[n];

        // Pixel centre p (fractions of the image) → garment frame: undo the shift, the rotation, the scale, the flip.
        double theta = view.RotationDegrees * Math.PI / 180, cos = Math.Cos(theta), sin = Math.Sin(theta);
        for (int y = 0; y < size; y++)
        {
            double py = (y + 0.5) / size - 0.5 - view.OffsetV;
            for (int x = 0; x < size; x++)
            {
                double px = (x + 0.5) / size - 0.5 - view.OffsetU;
                double qu = (cos * px + sin * py) / view.Scale, qv = (-sin * px + cos * py) / view.Scale;
                if (view.Flip) qu = -qu;
                double u = qu + 0.5, v = qv + 0.5;
                int i = y * size + x;
                cu[i] = (float)u;
                cv[i] = (float)v;
                var region = ShapeRegion.Background;
                for (int k = shapes.Count - 1; k >= 0; k--)
                {
                    var s = shapes[k];
                    if (s.InBounds(u, v) && s.Contains(u, v)) { region = s.Region; break; }
                }
                regions[i] = region == ShapeRegion.Cutout ? ShapeRegion.Background : region;
            }
        }

        var main = Palette.Colours[g.Colour];
        var second = Palette.Colours[g.PatternColour];
        var trim = g.TrimColour is int t ? Palette.Colours[t] : (NamedColour?)null;
        bool darkMain = 0.299 * main.R + 0.587 * main.G + 0.114 * main.B < 90;
        var rgb = new byte[n * 3];
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++)
            {
                int i = y * size + x;
                ulong h = SynthRandom.Mix(view.NoiseSeed ^ (ulong)i * 0x9E3779B97F4A7C15UL);
                var region = regions[i];
                double r, gr, b;
                if (region == ShapeRegion.Background)
                {
                    (r, gr, b) = (view.BackgroundR, view.BackgroundG, view.BackgroundB);
                    AddNoise(ref r, ref gr, ref b, h, 4);
                }
                else
                {
                    NamedColour c = region switch
                    {
                        ShapeRegion.Trim when trim is NamedColour tc => tc,
                        ShapeRegion.Detail => main,
                        _ => g.Pattern != GarmentPattern.Plain && InPattern(g.Pattern, cu[i], cv[i]) ? second : main,
                    };
                    (r, gr, b) = (c.R, c.G, c.B);
                    if (region == ShapeRegion.Detail)
                    {
                        // Buttons, zip and laces: a darker shade, or a lighter one on near-black garments.
                        if (darkMain) { r = r * 0.5 + 120; gr = gr * 0.5 + 120; b = b * 0.5 + 120; }
                        else { r *= 0.45; gr *= 0.45; b *= 0.45; }
                    }
                    double light = 1.0 + 0.06 * (0.5 - Math.Clamp(cv[i], 0f, 1f));
                    if (IsBorder(regions, size, x, y)) light *= 0.6;
                    r *= light; gr *= light; b *= light;
                    AddNoise(ref r, ref gr, ref b, h, 3);
                }
                rgb[3 * i] = ToByte(r);
                rgb[3 * i + 1] = ToByte(gr);
                rgb[3 * i + 2] = ToByte(b);
            }
        }
        return rgb;
    }

    private static bool IsBorder(ShapeRegion[] regions, int size, int x, int y)
    {
        var r = regions[y * size + x];
        return x > 0 && regions[y * size + x - 1] != r
            || x < size - 1 && regions[y * size + x + 1] != r
            || y > 0 && regions[(y - 1) * size + x] != r
            || y < size - 1 && regions[(y + 1) * size + x] != r;
    }

    private static void AddNoise(ref double r, ref double g, ref double b, ulong h, int amplitude)
    {
        int span = 2 * amplitude + 1;
        r += (int)(h % (ulong)span) - amplitude;
        g += (int)((h >> 16) % (ulong)span) - amplitude;
        b += (int)((h >> 32) % (ulong)span) - amplitude;
    }

    private static byte ToByte(double v) => (byte)Math.Clamp((int)Math.Round(v), 0, 255);
}
