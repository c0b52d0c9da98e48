namespace FashionViL.Synth;

/// <summary>What a pixel of a drawn garment belongs to.</summary>
public enum ShapeRegion : byte
{
    /// <summary>Not the garment.</summary>
    Background = 0,
    /// <summary>Main fabric: the main colour with the pattern.</summary>
    Body = 1,
    /// <summary>Cuffs, collars, bands, belt, strap, flap, sole: the trim colour (the body when there is no trim).</summary>
    Trim = 2,
    /// <summary>Buttons, zip, laces, clasp: a darker (or, on dark garments, lighter) shade of the main colour.</summary>
    Detail = 3,
    /// <summary>Holes (neck openings): painted as background.</summary>
    Cutout = 4,
}

/// <summary>
/// One filled shape in garment coordinates: u to the right, v downwards, the garment centred on (0.5, 0.5) of a unit
/// square. Shapes are painted in list order, later ones on top.
/// </summary>
internal abstract class Shape(ShapeRegion region)
{
    public ShapeRegion Region { get; } = region;
    public double MinU, MinV, MaxU, MaxV;

    public bool InBounds(double u, double v) => u >= MinU && u <= MaxU && v >= MinV && v <= MaxV;
    public abstract bool Contains(double u, double v);
}

/// <summary>A polygon filled with the even-odd rule.</summary>
internal sealed class PolygonShape : Shape
{
    private readonly double[] _u, _v;

    public PolygonShape(ShapeRegion region, params (double U, double V)[] points) : base(region)
    {
        if (points.Length < 3) throw new ArgumentException($"polygon needs at least 3 points, got {points.Length}", nameof(points));
        _u = points.Select(p => p.U).ToArray();
        _v = points.Select(p => p.V).ToArray();
        MinU = _u.Min(); MaxU = _u.Max(); MinV = _v.Min(); MaxV = _v.Max();
    }

    public override bool Contains(double u, double v)
    {
        bool inside = false;
        for (int i = 0, j = _u.Length - 1; i < _u.Length; j = i++)
        {
            if ((_v[i] > v) != (_v[j] > v) && u < (_u[j] - _u[i]) * (v - _v[i]) / (_v[j] - _v[i]) + _u[i])
                inside = !inside;
        }
        return inside;
    }

    /// <summary>The mirror image about u = 0.5 (left sleeve → right sleeve).</summary>
    public static PolygonShape Mirrored(ShapeRegion region, params (double U, double V)[] points) =>
        new(region, points.Select(p => (1 - p.U, p.V)).ToArray());
}

/// <summary>A filled ellipse, optionally clipped to a band of v, or a ring of given thickness.</summary>
internal sealed class EllipseShape : Shape
{
    private readonly double _cu, _cv, _ru, _rv, _thickness, _vLo, _vHi;

    public EllipseShape(ShapeRegion region, double cu, double cv, double ru, double rv,
        double thickness = 0, double vLo = double.NegativeInfinity, double vHi = double.PositiveInfinity) : base(region)
    {
        (_cu, _cv, _ru, _rv, _thickness, _vLo, _vHi) = (cu, cv, ru, rv, thickness, vLo, vHi);
        MinU = cu - ru; MaxU = cu + ru; MinV = Math.Max(cv - rv, vLo); MaxV = Math.Min(cv + rv, vHi);
    }

    public override bool Contains(double u, double v)
    {
        if (v < _vLo || v > _vHi) return false;
        double du = (u - _cu) / _ru, dv = (v - _cv) / _rv;
        if (du * du + dv * dv > 1) return false;
        if (_thickness <= 0) return true;
        double iu = (u - _cu) / (_ru - _thickness), iv = (v - _cv) / (_rv - _thickness);
        return iu * iu + iv * iv > 1;
    }
}

/// <summary>A thick line segment (zip, laces).</summary>
internal sealed class SegmentShape : Shape
{
    private readonly double _u0, _v0, _u1, _v1, _halfWidth;

    public SegmentShape(ShapeRegion region, double u0, double v0, double u1, double v1, double halfWidth) : base(region)
    {
        (_u0, _v0, _u1, _v1, _halfWidth) = (u0, v0, u1, v1, halfWidth);
        MinU = Math.Min(u0, u1) - halfWidth; MaxU = Math.Max(u0, u1) + halfWidth;
        MinV = Math.Min(v0, v1) - halfWidth; MaxV = Math.Max(v0, v1) + halfWidth;
    }

    public override bool Contains(double u, double v)
    {
        double du = _u1 - _u0, dv = _v1 - _v0;
        double t = Math.Clamp(((u - _u0) * du + (v - _v0) * dv) / (du * du + dv * dv), 0, 1);
        double eu = u - (_u0 + t * du), ev = v - (_v0 + t * dv);
        return eu * eu + ev * ev <= _halfWidth * _halfWidth;
    }
}

/// <summary>
/// The outline of each category as a list of shapes. Every silhouette keeps the square [0.4, 0.6]² around the centre
/// in its body (apart from small details), so the centre of an image shows the main colour.
/// </summary>
internal static class GarmentShapes
{
    private const ShapeRegion B = ShapeRegion.Body, T = ShapeRegion.Trim, D = ShapeRegion.Detail, C = ShapeRegion.Cutout;

    public static List<Shape> For(Garment g) => g.Category switch
    {
        GarmentCategory.Dress => Dress(g),
        GarmentCategory.Shirt => Shirt(g),
        GarmentCategory.Top => Top(g),
        GarmentCategory.Jacket => Jacket(g),
        GarmentCategory.Trousers => Trousers(),
        GarmentCategory.Shorts => Shorts(),
        GarmentCategory.Skirt => Skirt(g),
        GarmentCategory.Bag => g.Style == 0 ? ShoulderBag() : Clutch(),
        GarmentCategory.Shoes => g.Style == 0 ? Sneaker() : Boot(),
        GarmentCategory.Hat => g.Style == 0 ? Cap() : SunHat(),
        _ => throw new ArgumentOutOfRangeException(nameof(g), g.Category, "unknown category"),
    };

    // Torso from the shoulders (v = top) through the armpits (v = 0.31, half width 0.19) to the hem.
    private static PolygonShape Torso(bool sleeveless, double top, double hemV, double hemHalf) => sleeveless
        ? new PolygonShape(B, (0.38, top), (0.62, top), (0.66, 0.22), (0.69, 0.31), (0.5 + hemHalf, hemV), (0.5 - hemHalf, hemV), (0.31, 0.31), (0.34, 0.22))
        : new PolygonShape(B, (0.33, top), (0.67, top), (0.69, 0.31), (0.5 + hemHalf, hemV), (0.5 - hemHalf, hemV), (0.31, 0.31));

    private static double TorsoHalfWidth(double v, double hemV, double hemHalf) => 0.19 + (hemHalf - 0.19) * (v - 0.31) / (hemV - 0.31);

    private static void AddSleeves(List<Shape> s, SleeveLength sleeves, bool cuffs)
    {
        (double, double)[] sleeve, cuff;
        switch (sleeves)
        {
            case SleeveLength.Short:
                sleeve = [(0.33, 0.14), (0.22, 0.19), (0.14, 0.33), (0.23, 0.38), (0.31, 0.31)];
                cuff = [(0.14, 0.33), (0.23, 0.38), (0.251, 0.352), (0.161, 0.302)];
                break;
            case SleeveLength.Long:
                sleeve = [(0.33, 0.14), (0.23, 0.18), (0.11, 0.70), (0.20, 0.72), (0.27, 0.38), (0.31, 0.31)];
                cuff = [(0.11, 0.70), (0.20, 0.72), (0.211, 0.682), (0.121, 0.662)];
                break;
            default:
                return;
        }
        s.Add(new PolygonShape(B, sleeve));
        s.Add(PolygonShape.Mirrored(B, sleeve));
        if (!cuffs) return;
        s.Add(new PolygonShape(T, cuff));
        s.Add(PolygonShape.Mirrored(T, cuff));
    }

    private static void AddNeck(List<Shape> s, Neckline neck, double top, bool band)
    {
        if (neck == Neckline.Round)
        {
            if (band) s.Add(new EllipseShape(T, 0.5, top, 0.095, 0.075, vLo: top));
            s.Add(new EllipseShape(C, 0.5, top, 0.072, 0.056));
        }
        else
        {
            if (band) s.Add(new PolygonShape(T, (0.40, top), (0.60, top), (0.5, 0.33)));
            s.Add(new PolygonShape(C, (0.42, top - 0.01), (0.58, top - 0.01), (0.5, 0.30)));
        }
    }

    private static List<Shape> Dress(Garment g)
    {
        bool sleeveless = g.Sleeves == SleeveLength.None;
        double top = sleeveless ? 0.12 : 0.14;
        var s = new List<Shape>();
        var (hemV, hemHalf) = g.Length == GarmentLength.Long ? (0.95, 0.30) : (0.80, 0.27);
        s.Add(new PolygonShape(B, (0.34, 0.34), (0.66, 0.34), (0.5 + hemHalf, hemV), (0.5 - hemHalf, hemV)));
        s.Add(Torso(sleeveless, top, 0.37, 0.165));
        s.Add(new PolygonShape(T, (0.335, 0.33), (0.665, 0.33), (0.665, 0.37), (0.335, 0.37)));
        AddSleeves(s, g.Sleeves!.Value, cuffs: false);
        AddNeck(s, g.Neck!.Value, top, band: false);
        return s;
    }

    private static List<Shape> Shirt(Garment g)
    {
        // Shirt tails: the hem curves down to the centre.
        var s = new List<Shape>
        {
            new PolygonShape(B, (0.33, 0.14), (0.67, 0.14), (0.69, 0.31), (0.72, 0.80), (0.63, 0.86), (0.5, 0.90), (0.37, 0.86), (0.28, 0.80), (0.31, 0.31)),
        };
        AddSleeves(s, g.Sleeves!.Value, cuffs: true);
        s.Add(new EllipseShape(C, 0.5, 0.14, 0.06, 0.045));
        (double, double)[] collar = [(0.40, 0.13), (0.5, 0.21), (0.455, 0.25), (0.38, 0.17)];
        s.Add(new PolygonShape(T, collar));
        s.Add(PolygonShape.Mirrored(T, collar));
        for (double v = 0.30; v < 0.82; v += 0.12) s.Add(new EllipseShape(D, 0.5, v, 0.012, 0.012));
        return s;
    }

    private static List<Shape> Top(Garment g)
    {
        bool sleeveless = g.Sleeves == SleeveLength.None;
        double top = sleeveless ? 0.12 : 0.14, hemV = 0.80, hemHalf = 0.16;
        var s = new List<Shape> { Torso(sleeveless, top, hemV, hemHalf) };
        AddSleeves(s, g.Sleeves!.Value, cuffs: false);
        double w = TorsoHalfWidth(hemV - 0.04, hemV, hemHalf);
        s.Add(new PolygonShape(T, (0.5 - w, hemV - 0.04), (0.5 + w, hemV - 0.04), (0.5 + hemHalf, hemV), (0.5 - hemHalf, hemV)));
        AddNeck(s, g.Neck!.Value, top, band: true);
        return s;
    }

    private static List<Shape> Jacket(Garment g)
    {
        bool coat = g.Length == GarmentLength.Long;
        var (hemV, hemHalf) = coat ? (0.93, 0.26) : (0.72, 0.23);
        var s = new List<Shape> { Torso(false, 0.14, hemV, hemHalf) };
        AddSleeves(s, SleeveLength.Long, cuffs: true);
        s.Add(new PolygonShape(C, (0.42, 0.13), (0.58, 0.13), (0.5, 0.30)));
        (double, double)[] lapel = [(0.40, 0.14), (0.5, 0.30), (0.46, 0.36), (0.36, 0.20)];
        s.Add(new PolygonShape(T, lapel));
        s.Add(PolygonShape.Mirrored(T, lapel));
        if (coat)
        {
            foreach (double v in (double[])[0.40, 0.55, 0.70])
            {
                s.Add(new EllipseShape(D, 0.44, v, 0.014, 0.014));
                s.Add(new EllipseShape(D, 0.56, v, 0.014, 0.014));
            }
        }
        else
        {
            s.Add(new SegmentShape(D, 0.5, 0.30, 0.5, hemV, 0.006));
        }
        return s;
    }

    private static List<Shape> Trousers() =>
    [
        new PolygonShape(B, (0.32, 0.10), (0.68, 0.10), (0.70, 0.30), (0.69, 0.95), (0.53, 0.95), (0.50, 0.62), (0.47, 0.95), (0.31, 0.95), (0.30, 0.30)),
        new PolygonShape(T, (0.32, 0.10), (0.68, 0.10), (0.6835, 0.15), (0.3165, 0.15)),
        new SegmentShape(D, 0.5, 0.16, 0.5, 0.38, 0.005),
    ];

    private static List<Shape> Shorts() =>
    [
        new PolygonShape(B, (0.31, 0.28), (0.69, 0.28), (0.72, 0.45), (0.75, 0.72), (0.53, 0.72), (0.50, 0.61), (0.47, 0.72), (0.25, 0.72), (0.28, 0.45)),
        new PolygonShape(T, (0.31, 0.28), (0.69, 0.28), (0.699, 0.33), (0.301, 0.33)),
    ];

    private static List<Shape> Skirt(Garment g) => g.Length == GarmentLength.Long
        ?
        [
            new PolygonShape(B, (0.40, 0.20), (0.60, 0.20), (0.85, 0.90), (0.15, 0.90)),
            new PolygonShape(T, (0.40, 0.20), (0.60, 0.20), (0.6143, 0.24), (0.3857, 0.24)),
        ]
        :
        [
            new PolygonShape(B, (0.37, 0.26), (0.63, 0.26), (0.77, 0.70), (0.23, 0.70)),
            new PolygonShape(T, (0.37, 0.26), (0.63, 0.26), (0.6427, 0.30), (0.3573, 0.30)),
        ];

    private static List<Shape> ShoulderBag() =>
    [
        new EllipseShape(T, 0.5, 0.36, 0.22, 0.30, thickness: 0.025, vHi: 0.36),
        new PolygonShape(B, (0.26, 0.36), (0.74, 0.36), (0.78, 0.78), (0.22, 0.78)),
    ];

    private static List<Shape> Clutch() =>
    [
        new PolygonShape(B, (0.18, 0.33), (0.82, 0.33), (0.82, 0.70), (0.18, 0.70)),
        new PolygonShape(T, (0.18, 0.33), (0.82, 0.33), (0.5, 0.43)),
        new EllipseShape(D, 0.5, 0.42, 0.018, 0.018),
    ];

    private static List<Shape> Sneaker() =>
    [
        new PolygonShape(B, (0.14, 0.66), (0.15, 0.36), (0.28, 0.32), (0.40, 0.27), (0.50, 0.28), (0.62, 0.36), (0.78, 0.46), (0.88, 0.55), (0.89, 0.66)),
        new PolygonShape(T, (0.12, 0.66), (0.91, 0.66), (0.90, 0.72), (0.14, 0.73)),
        new SegmentShape(D, 0.41, 0.29, 0.47, 0.31, 0.007),
        new SegmentShape(D, 0.45, 0.31, 0.52, 0.33, 0.007),
        new SegmentShape(D, 0.49, 0.33, 0.56, 0.35, 0.007),
    ];

    private static List<Shape> Boot() =>
    [
        new PolygonShape(B, (0.28, 0.10), (0.60, 0.10), (0.64, 0.42), (0.78, 0.50), (0.88, 0.58), (0.89, 0.74), (0.26, 0.74)),
        new PolygonShape(T, (0.25, 0.74), (0.90, 0.74), (0.90, 0.80), (0.25, 0.80)),
    ];

    private static List<Shape> Cap() =>
    [
        new EllipseShape(B, 0.46, 0.64, 0.27, 0.34, vHi: 0.64),
        new PolygonShape(B, (0.66, 0.58), (0.92, 0.62), (0.93, 0.67), (0.66, 0.67)),
        new EllipseShape(T, 0.46, 0.64, 0.27, 0.34, vLo: 0.60, vHi: 0.64),
        new EllipseShape(D, 0.46, 0.31, 0.02, 0.02),
    ];

    private static List<Shape> SunHat() =>
    [
        new EllipseShape(B, 0.5, 0.67, 0.42, 0.08),
        new PolygonShape(B, (0.30, 0.66), (0.31, 0.34), (0.37, 0.26), (0.63, 0.26), (0.69, 0.34), (0.70, 0.66)),
        new PolygonShape(T, (0.3016, 0.61), (0.6984, 0.61), (0.70, 0.66), (0.30, 0.66)),
    ];
}
