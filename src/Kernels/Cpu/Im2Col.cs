using System.Numerics;
using System.Runtime.Intrinsics;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// Geometry of one conv2d call, and the unfold (im2col) / fold (col2im) loops between an image
/// [Cin, H, W] and its column matrix [Cin·Kh·Kw, Ho·Wo] (row r = (c·Kh + kh)·Kw + kw).
/// </summary>
internal readonly struct ConvGeom
{
    public readonly int N, Cin, H, W, Cout, Kh, Kw, Ho, Wo;
    public readonly Conv2dParams P;

    public ConvGeom(int n, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p)
    {
        N = n; Cin = cin; H = h; W = w; Cout = cout; Kh = kh; Kw = kw; P = p;
        Ho = p.OutH(h, kh); Wo = p.OutW(w, kw);
    }

    /// <summary>Rows of the column matrix (the GEMM reduction length).</summary>
    public int K => Cin * Kh * Kw;
    /// <summary>Output positions per image.</summary>
    public int Positions => Ho * Wo;
    /// <summary>1×1, stride 1, no padding: the image itself is the column matrix.</summary>
    public bool IsPointwise => Kh == 1 && Kw == 1 && P.StrideH == 1 && P.StrideW == 1
        && P.PadTop == 0 && P.PadBottom == 0 && P.PadLeft == 0 && P.PadRight == 0;

    /// <summary>The range of output columns [lo, hi) whose input column for tap <paramref name="kw"/> lies inside the image.</summary>
    public void ValidCols(int kw, out int lo, out int hi)
    {
        int off = kw * P.DilationW - P.PadLeft; // iw = ow·sw + off
        lo = off >= 0 ? 0 : (-off + P.StrideW - 1) / P.StrideW;
        int last = W - 1 - off; // need ow·sw ≤ last
        hi = last < 0 ? 0 : Math.Min(Wo, last / P.StrideW + 1);
        if (lo > hi) lo = hi;
    }
}

internal static unsafe class Im2Col<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>
    /// Unfolds images [nb, Cin, H, W] at <paramref name="x"/> into columns: image i's tap row r starts at
    /// col + i·<paramref name="imageStride"/> + r·<paramref name="rowStride"/> and holds the
    /// <paramref name="ohCount"/>·Wo values of output rows [ohStart, ohStart + ohCount) (all rows when ohCount &lt; 0).
    /// (imageStride, rowStride) = (K·P, P) gives [nb, K, P]; (P, nb·P) gives [K, nb·P].
    /// </summary>
    public static void Unfold(T* x, T* col, int nb, in ConvGeom g, long imageStride, long rowStride, int ohStart = 0, int ohCount = -1)
    {
        var geo = g;
        int planes = nb * g.Cin;
        int oh0 = ohStart, oh1 = ohCount < 0 ? g.Ho : ohStart + ohCount;
        long work = (long)g.Kh * g.Kw * (oh1 - oh0) * g.Wo;
        nint px = (nint)x, pc = (nint)col;
        int taps = g.Kh * g.Kw;
        Parallelism.For(planes, work, (s, e) =>
        {
            for (int pl = s; pl < e; pl++)
            {
                int i = pl / geo.Cin, c = pl % geo.Cin;
                UnfoldPlane((T*)px + (long)pl * geo.H * geo.W, (T*)pc + i * imageStride + (long)c * taps * rowStride, rowStride, geo, oh0, oh1);
            }
        });
    }

    private static void UnfoldPlane(T* src, T* dst0, long rowStride, in ConvGeom g, int oh0, int oh1)
    {
        int sh = g.P.StrideH, sw = g.P.StrideW, Wo = g.Wo;
        for (int kh = 0; kh < g.Kh; kh++)
        {
            int offH = kh * g.P.DilationH - g.P.PadTop;
            for (int kw = 0; kw < g.Kw; kw++)
            {
                T* dst = dst0 + (kh * g.Kw + kw) * rowStride;
                g.ValidCols(kw, out int lo, out int hi);
                int offW = kw * g.P.DilationW - g.P.PadLeft;
                for (int oh = oh0; oh < oh1; oh++, dst += Wo)
                {
                    int ih = oh * sh + offH;
                    if ((uint)ih >= (uint)g.H) { new Span<T>(dst, Wo).Clear(); continue; }
                    if (lo > 0) new Span<T>(dst, lo).Clear();
                    if (hi < Wo) new Span<T>(dst + hi, Wo - hi).Clear();
                    T* row = src + (long)ih * g.W + offW;
                    if (sw == 1) new ReadOnlySpan<T>(row + lo, hi - lo).CopyTo(new Span<T>(dst + lo, hi - lo));
                    else for (int ow = lo; ow < hi; ow++) dst[ow] = row[ow * sw];
                }
            }
        }
    }

    /// <summary>Folds columns [nb, K, P] back into images [nb, Cin, H, W] (overwriting them), summing overlapping taps.</summary>
    public static void Fold(T* col, T* x, int nb, in ConvGeom g)
    {
        var geo = g;
        int planes = nb * g.Cin;
        long work = (long)g.Kh * g.Kw * g.Positions;
        nint px = (nint)x, pc = (nint)col;
        Parallelism.For(planes, work, (s, e) =>
        {
            for (int pl = s; pl < e; pl++) FoldPlane((T*)pc + (long)pl * geo.Kh * geo.Kw * geo.Positions, (T*)px + (long)pl * geo.H * geo.W, geo);
        });
    }

    private static void FoldPlane(T* src, T* dst, in ConvGeom g)
    {
        new Span<T>(dst, g.H * g.W).Clear();
        int sh = g.P.StrideH, sw = g.P.StrideW, Wo = g.Wo;
        for (int kh = 0; kh < g.Kh; kh++)
        {
            int offH = kh * g.P.DilationH - g.P.PadTop;
            for (int kw = 0; kw < g.Kw; kw++)
            {
                g.ValidCols(kw, out int lo, out int hi);
                int offW = kw * g.P.DilationW - g.P.PadLeft;
                for (int oh = 0; oh < g.Ho; oh++, src += Wo)
                {
                    int ih = oh * sh + offH;
                    if ((uint)ih >= (uint)g.H) continue;
                    T* row = dst + (long)ih * g.W + offW;
                    if (sw == 1)
                    {
                        int n = hi - lo, i = 0;
                        if (typeof(T) == typeof(float) && Vector256.IsHardwareAccelerated)
                        {
                            float* a = (float*)(row + lo), b = (float*)(src + lo);
                            for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(a + i) + Vector256.Load(b + i), a + i);
                        }
                        for (; i < n; i++) row[lo + i] += src[lo + i];
                    }
                    else for (int ow = lo; ow < hi; ow++) row[ow * sw] += src[ow];
                }
            }
        }
    }
}
