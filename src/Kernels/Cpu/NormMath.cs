using System.Numerics;
using System.Runtime.Intrinsics;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// Vectorised row helpers for batch/group norm: float64 accumulation (float32 data is widened),
/// and fused affine updates. T is float or double.
/// </summary>
internal static unsafe class NormMath<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Σ(x − shift) and Σ(x − shift)² over n values.</summary>
    public static void SumSq(T* p, long n, double shift, ref double s, ref double ss)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vs = Vector256<double>.Zero; var vss = Vector256<double>.Zero; var sh = Vector256.Create(shift);
            if (typeof(T) == typeof(float))
            {
                float* f = (float*)p;
                for (; i + 8 <= n; i += 8)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(f + i));
                    lo -= sh; hi -= sh;
                    vs += lo + hi; vss += lo * lo + hi * hi;
                }
            }
            else
            {
                double* d = (double*)p;
                for (; i + 4 <= n; i += 4)
                {
                    var v = Vector256.Load(d + i) - sh;
                    vs += v; vss += v * v;
                }
            }
            s += Vector256.Sum(vs); ss += Vector256.Sum(vss);
        }
        for (; i < n; i++) { double d = double.CreateTruncating(p[i]) - shift; s += d; ss += d * d; }
    }

    /// <summary>Σg and Σg·(x − mean) over n values.</summary>
    public static void SumDot(T* g, T* x, long n, double mean, ref double sg, ref double sgx)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var a = Vector256<double>.Zero; var b = Vector256<double>.Zero; var m = Vector256.Create(mean);
            if (typeof(T) == typeof(float))
            {
                float* gf = (float*)g, xf = (float*)x;
                for (; i + 8 <= n; i += 8)
                {
                    var (glo, ghi) = Vector256.Widen(Vector256.Load(gf + i));
                    var (xlo, xhi) = Vector256.Widen(Vector256.Load(xf + i));
                    a += glo + ghi; b += glo * (xlo - m) + ghi * (xhi - m);
                }
            }
            else
            {
                double* gd = (double*)g, xd = (double*)x;
                for (; i + 4 <= n; i += 4)
                {
                    var gv = Vector256.Load(gd + i);
                    a += gv; b += gv * (Vector256.Load(xd + i) - m);
                }
            }
            sg += Vector256.Sum(a); sgx += Vector256.Sum(b);
        }
        for (; i < n; i++)
        {
            double gv = double.CreateTruncating(g[i]);
            sg += gv; sgx += gv * (double.CreateTruncating(x[i]) - mean);
        }
    }

    /// <summary>
    /// Σg and Σg·(x − mean) over n values of the relu-masked gradient g = (y &gt; 0 ? gy : 0), which is also stored to
    /// <paramref name="gOut"/>. Same arithmetic, in the same order, as <see cref="SumDot"/> run on gOut.
    /// </summary>
    public static void SumDotMasked(T* gy, T* y, T* x, T* gOut, long n, double mean, ref double sg, ref double sgx)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var a = Vector256<double>.Zero; var b = Vector256<double>.Zero; var m = Vector256.Create(mean);
            if (typeof(T) == typeof(float))
            {
                float* gf = (float*)gy, yf = (float*)y, xf = (float*)x, of = (float*)gOut;
                for (; i + 8 <= n; i += 8)
                {
                    var gm = Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.Load(yf + i), Vector256<float>.Zero), Vector256.Load(gf + i), Vector256<float>.Zero);
                    Vector256.Store(gm, of + i);
                    var (glo, ghi) = Vector256.Widen(gm);
                    var (xlo, xhi) = Vector256.Widen(Vector256.Load(xf + i));
                    a += glo + ghi; b += glo * (xlo - m) + ghi * (xhi - m);
                }
            }
            else
            {
                double* gd = (double*)gy, yd = (double*)y, xd = (double*)x, od = (double*)gOut;
                for (; i + 4 <= n; i += 4)
                {
                    var gv = Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.Load(yd + i), Vector256<double>.Zero), Vector256.Load(gd + i), Vector256<double>.Zero);
                    Vector256.Store(gv, od + i);
                    a += gv; b += gv * (Vector256.Load(xd + i) - m);
                }
            }
            sg += Vector256.Sum(a); sgx += Vector256.Sum(b);
        }
        for (; i < n; i++)
        {
            T g = y[i] > T.Zero ? gy[i] : T.Zero;
            gOut[i] = g;
            double gv = double.CreateTruncating(g);
            sg += gv; sgx += gv * (double.CreateTruncating(x[i]) - mean);
        }
    }

    /// <summary>
    /// dst ← relu?(src·scale + shift [+ res]): the batch-norm output with the residual add and relu fused, each step
    /// rounded as <see cref="Affine"/>, the elementwise add and the elementwise relu round it (relu keeps NaN, maps −0 to 0).
    /// </summary>
    public static void AffineAddRelu(T* src, T* res, T* dst, long n, double scale, double shift, bool relu)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            if (typeof(T) == typeof(float))
            {
                float* s = (float*)src, r = (float*)res, d = (float*)dst;
                var a = Vector256.Create((float)scale); var b = Vector256.Create((float)shift);
                for (; i + 8 <= n; i += 8)
                {
                    var v = Vector256.FusedMultiplyAdd(Vector256.Load(s + i), a, b);
                    if (r != null) v += Vector256.Load(r + i);
                    if (relu) v = Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256<float>.Zero) | ~Vector256.Equals(v, v), v, Vector256<float>.Zero);
                    Vector256.Store(v, d + i);
                }
            }
            else
            {
                double* s = (double*)src, r = (double*)res, d = (double*)dst;
                var a = Vector256.Create(scale); var b = Vector256.Create(shift);
                for (; i + 4 <= n; i += 4)
                {
                    var v = Vector256.FusedMultiplyAdd(Vector256.Load(s + i), a, b);
                    if (r != null) v += Vector256.Load(r + i);
                    if (relu) v = Vector256.ConditionalSelect(Vector256.GreaterThan(v, Vector256<double>.Zero) | ~Vector256.Equals(v, v), v, Vector256<double>.Zero);
                    Vector256.Store(v, d + i);
                }
            }
        }
        T ts = T.CreateTruncating(scale), tb = T.CreateTruncating(shift);
        for (; i < n; i++)
        {
            T v = src[i] * ts + tb;
            if (res != null) v += res[i];
            if (relu) v = v > T.Zero || T.IsNaN(v) ? v : T.Zero;
            dst[i] = v;
        }
    }

    /// <summary>dst ← src·scale + shift.</summary>
    public static void Affine(T* src, T* dst, long n, double scale, double shift)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            if (typeof(T) == typeof(float))
            {
                float* s = (float*)src, d = (float*)dst;
                var a = Vector256.Create((float)scale); var b = Vector256.Create((float)shift);
                for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(s + i), a, b), d + i);
            }
            else
            {
                double* s = (double*)src, d = (double*)dst;
                var a = Vector256.Create(scale); var b = Vector256.Create(shift);
                for (; i + 4 <= n; i += 4) Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(s + i), a, b), d + i);
            }
        }
        T ts = T.CreateTruncating(scale), tb = T.CreateTruncating(shift);
        for (; i < n; i++) dst[i] = src[i] * ts + tb;
    }

    /// <summary>dst ← a·g + b·x + c.</summary>
    public static void Combine(T* g, T* x, T* dst, long n, double a, double b, double c)
    {
        long i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            if (typeof(T) == typeof(float))
            {
                float* gf = (float*)g, xf = (float*)x, d = (float*)dst;
                var va = Vector256.Create((float)a); var vb = Vector256.Create((float)b); var vc = Vector256.Create((float)c);
                for (; i + 8 <= n; i += 8)
                    Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(gf + i), va, Vector256.FusedMultiplyAdd(Vector256.Load(xf + i), vb, vc)), d + i);
            }
            else
            {
                double* gd = (double*)g, xd = (double*)x, d = (double*)dst;
                var va = Vector256.Create(a); var vb = Vector256.Create(b); var vc = Vector256.Create(c);
                for (; i + 4 <= n; i += 4)
                    Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(gd + i), va, Vector256.FusedMultiplyAdd(Vector256.Load(xd + i), vb, vc)), d + i);
            }
        }
        for (; i < n; i++) dst[i] = T.CreateTruncating(a * double.CreateTruncating(g[i]) + b * double.CreateTruncating(x[i]) + c);
    }
}
