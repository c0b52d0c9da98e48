namespace FashionViL.Data;

/// <summary>
/// BEiT-style block-wise patch mask for MPFC (spec §2.4; reference <c>BlockWiseMaskedPatchProcessor</c>, itself from
/// BEiT's <c>masking_generator.py</c>). Defaults: 7×7 grid, 8 masked cells, blocks of 4..8 cells, aspect ratio in
/// [0.3, 1/0.3].
/// <para>Algorithm (mirrors the reference draw for draw): count = 0; while count &lt; N: budget = min(N − count, max);
/// up to 10 attempts: area ~ U(min, budget) (Python <c>random.uniform</c>, so a + (b − a)·u even when budget &lt; min),
/// log-aspect ~ U(ln minAspect, ln maxAspect), h = round(√(area·aspect)), w = round(√(area/aspect)) (round half to
/// even, like Python); if w &lt; W and h &lt; H: top ~ randint[0, H − h], left ~ randint[0, W − w] (inclusive); if
/// 0 &lt; h·w − (already masked in the rectangle) ≤ budget, mark the rectangle; stop attempting once a cell was
/// added. A round that adds nothing ends the loop, so the count can fall short of N (rare on 7×7).</para>
/// </summary>
public sealed class BlockMaskGenerator
{
    public BlockMaskGenerator(int height = 7, int width = 7, int numMaskingPatches = 8, int minNumPatches = 4,
        int maxNumPatches = 8, double minAspect = 0.3, double? maxAspect = null)
    {
        if (height <= 0 || width <= 0) throw new ArgumentOutOfRangeException(nameof(height), $"grid {height}x{width} must be positive");
        if (numMaskingPatches < 0 || numMaskingPatches > height * width)
            throw new ArgumentOutOfRangeException(nameof(numMaskingPatches), numMaskingPatches, $"must be in [0, {height * width}] for a {height}x{width} grid");
        if (minNumPatches < 0) throw new ArgumentOutOfRangeException(nameof(minNumPatches), minNumPatches, "must be non-negative");
        if (maxNumPatches <= 0) throw new ArgumentOutOfRangeException(nameof(maxNumPatches), maxNumPatches, "must be positive");
        double maxA = maxAspect ?? 1 / minAspect;
        if (!(minAspect > 0) || !(maxA >= minAspect) || double.IsInfinity(maxA))
            throw new ArgumentOutOfRangeException(nameof(minAspect), $"aspect range [{minAspect}, {maxA}] must be positive and ordered");
        Height = height; Width = width;
        NumMaskingPatches = numMaskingPatches; MinNumPatches = minNumPatches; MaxNumPatches = maxNumPatches;
        MinAspect = minAspect; MaxAspect = maxA;
        _logMin = Math.Log(minAspect); _logMax = Math.Log(maxA);
    }

    private readonly double _logMin, _logMax;

    public int Height { get; }
    public int Width { get; }
    public int NumMaskingPatches { get; }
    public int MinNumPatches { get; }
    public int MaxNumPatches { get; }
    public double MinAspect { get; }
    public double MaxAspect { get; }
    public int Cells => Height * Width;

    /// <summary>
    /// One mask, row-major, 1 = masked. For per-sample determinism pass
    /// <c>PhiloxRandom.ForSample(seed, sampleIndex, PhiloxRandom.Purpose.ImageMask)</c>.
    /// </summary>
    public long[] Generate(Random rng) => Generate(rng, null);

    /// <summary>One placed rectangle: rows [Top, Top+H), columns [Left, Left+W); Added = cells newly masked; Budget = the round's budget.</summary>
    internal readonly record struct Block(int Top, int Left, int H, int W, int Added, int Budget);

    /// <summary><see cref="Generate(Random)"/>, also reporting every rectangle placed (for tests).</summary>
    internal long[] Generate(Random rng, List<Block>? blocks)
    {
        ArgumentNullException.ThrowIfNull(rng);
        var mask = new long[Cells];
        int count = 0;
        while (count < NumMaskingPatches)
        {
            int budget = Math.Min(NumMaskingPatches - count, MaxNumPatches);
            int delta = MaskOnce(mask, budget, rng, blocks);
            if (delta == 0) break;
            count += delta;
        }
        return mask;
    }

    private int MaskOnce(long[] mask, int budget, Random rng, List<Block>? blocks)
    {
        int delta = 0;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double area = Uniform(rng, MinNumPatches, budget);
            double aspect = Math.Exp(Uniform(rng, _logMin, _logMax));
            int h = (int)Math.Round(Math.Sqrt(area * aspect), MidpointRounding.ToEven);
            int w = (int)Math.Round(Math.Sqrt(area / aspect), MidpointRounding.ToEven);
            if (w < Width && h < Height)
            {
                int top = rng.Next(0, Height - h + 1);
                int left = rng.Next(0, Width - w + 1);
                long already = 0;
                for (int i = top; i < top + h; i++)
                    for (int j = left; j < left + w; j++) already += mask[i * Width + j];
                long fresh = (long)h * w - already;
                if (fresh > 0 && fresh <= budget)
                {
                    for (int i = top; i < top + h; i++)
                        for (int j = left; j < left + w; j++)
                            if (mask[i * Width + j] == 0) { mask[i * Width + j] = 1; delta++; }
                    blocks?.Add(new Block(top, left, h, w, delta, budget));
                }
                if (delta > 0) break;
            }
        }
        return delta;
    }

    // Python's random.uniform(a, b) = a + (b - a) * random(); valid for b < a too.
    private static double Uniform(Random rng, double a, double b) => a + (b - a) * rng.NextDouble();
}
