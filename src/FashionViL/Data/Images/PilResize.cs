namespace FashionViL.Data.Images;

/// <summary>
/// PIL's <c>Image.resize(size, BILINEAR)</c> for 8-bit RGB images, reproduced exactly (Pillow's Resample.c): a separable
/// triangle filter whose support is scaled by the downscale factor (so downscaling is antialiased), weights normalised
/// per output pixel and quantised to 22-bit fixed point, a horizontal pass rounded to 8 bits, then a vertical pass.
/// torchvision's <c>Resize</c> on PIL images (the reference's transforms) calls exactly this.
/// ImageSharp's Triangle resampler is not used: it differs from PIL by rounding and edge handling (see Data/README.md).
/// </summary>
public static class PilResize
{
    const int PrecisionBits = 32 - 8 - 2;

    public static RgbImage Bilinear(RgbImage src, int width, int height)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"resize to {width}x{height}: size must be positive");
        if (width == src.Width && height == src.Height) return new RgbImage(width, height, (byte[])src.Pixels.Clone());
        var tmp = src;
        if (width != src.Width) tmp = Horizontal(src, width);
        if (height != src.Height) tmp = Vertical(tmp, height);
        return tmp;
    }

    static double Triangle(double x)
    {
        if (x < 0) x = -x;
        return x < 1 ? 1 - x : 0;
    }

    /// <summary>Per output index: (first input index, count) and the fixed-point weights (ksize per output).</summary>
    internal static (int[] Bounds, int[] Weights, int KSize) Coefficients(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = 1.0 * filterScale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var kk = new int[outSize * ksize];
        var pre = new double[ksize];
        double ss = 1.0 / filterScale;
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            double ww = 0;
            int xmin = (int)(center - support + 0.5); // C (int) truncates toward zero
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            Array.Clear(pre);
            for (int x = 0; x < xmax; x++)
            {
                double w = Triangle((x + xmin - center + 0.5) * ss);
                pre[x] = w; ww += w;
            }
            for (int x = 0; x < xmax; x++)
                if (ww != 0.0) pre[x] /= ww;
            for (int x = 0; x < ksize; x++)
            {
                double v = pre[x] * (1 << PrecisionBits);
                kk[xx * ksize + x] = (int)(pre[x] < 0 ? v - 0.5 : v + 0.5);
            }
            bounds[xx * 2] = xmin; bounds[xx * 2 + 1] = xmax;
        }
        return (bounds, kk, ksize);
    }

    static byte Clip8(int ss)
    {
        int v = ss >> PrecisionBits;
        return v < 0 ? (byte)0 : v > 255 ? (byte)255 : (byte)v;
    }

    static RgbImage Horizontal(RgbImage src, int outW)
    {
        var (bounds, kk, ksize) = Coefficients(src.Width, outW);
        var dst = new RgbImage(outW, src.Height);
        byte[] s = src.Pixels, d = dst.Pixels;
        for (int y = 0; y < src.Height; y++)
        {
            int rowIn = y * src.Width * 3, rowOut = y * outW * 3;
            for (int xx = 0; xx < outW; xx++)
            {
                int xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k0 = xx * ksize;
                int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; x++)
                {
                    int k = kk[k0 + x], p = rowIn + (x + xmin) * 3;
                    s0 += s[p] * k; s1 += s[p + 1] * k; s2 += s[p + 2] * k;
                }
                d[rowOut + xx * 3] = Clip8(s0); d[rowOut + xx * 3 + 1] = Clip8(s1); d[rowOut + xx * 3 + 2] = Clip8(s2);
            }
        }
        return dst;
    }

    static RgbImage Vertical(RgbImage src, int outH)
    {
        var (bounds, kk, ksize) = Coefficients(src.Height, outH);
        int rowLen = src.Width * 3;
        var dst = new RgbImage(src.Width, outH);
        var acc = new int[rowLen];
        for (int yy = 0; yy < outH; yy++)
        {
            int ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1], k0 = yy * ksize;
            Array.Fill(acc, 1 << (PrecisionBits - 1));
            // Row by row (cache-friendly); each output value still sums its taps in ascending y, as Pillow does.
            for (int y = 0; y < ymax; y++)
            {
                int k = kk[k0 + y];
                var row = src.Pixels.AsSpan((y + ymin) * rowLen, rowLen);
                for (int xc = 0; xc < row.Length; xc++) acc[xc] += row[xc] * k;
            }
            var d = dst.Pixels.AsSpan(yy * rowLen, rowLen);
            for (int xc = 0; xc < d.Length; xc++) d[xc] = Clip8(acc[xc]);
        }
        return dst;
    }
}
