using System.Numerics;
using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// CNN primitives. Convolution lowers to the backend's GEMM: each image is unfolded (im2col) into a
/// [Cin·Kh·Kw, Ho·Wo] column matrix (skipped for 1×1 stride-1 convolutions, whose input already is one),
/// and y[n] = W[Cout, K] · col[n]. Pooling and normalisation are direct loops, parallel over planes or channels.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    /// <summary>
    /// Upper bound on the elements of one im2col buffer (default 8M, 32 MB of float32): the batch is processed in
    /// chunks of images that fit, and a forward image too large on its own in bands of output rows.
    /// </summary>
    public static long ConvColumnBudget { get; set; } = 1L << 23;

    // ------------------------------------------------------------------ conv2d

    private static ConvGeom ConvCheck(string op, Tensor x, Tensor w, Tensor y, Conv2dParams p, string xName, string yName)
    {
        RequireFloat(x, op);
        if (x.Rank != 4) throw new ArgumentException($"{op}: {xName} {x.ShapeString} must be [N,C,H,W]");
        if (w.Rank != 4) throw new ArgumentException($"{op}: weight {w.ShapeString} must be [Cout,Cin,Kh,Kw]");
        if (w.DType != x.DType || y.DType != x.DType)
            throw new ArgumentException($"{op}: dtypes differ ({xName} {x.DType.Name()}, weight {w.DType.Name()}, {yName} {y.DType.Name()})");
        if (p.StrideH < 1 || p.StrideW < 1 || p.DilationH < 1 || p.DilationW < 1 || p.PadTop < 0 || p.PadBottom < 0 || p.PadLeft < 0 || p.PadRight < 0)
            throw new ArgumentException($"{op}: invalid geometry {p} (strides and dilations must be ≥ 1, paddings ≥ 0)");
        if (x.Size(1) != w.Size(1))
            throw new ArgumentException($"{op}: {xName} {x.ShapeString} has {x.Size(1)} channels, weight {w.ShapeString} expects {w.Size(1)}");
        var g = new ConvGeom(x.Size(0), x.Size(1), x.Size(2), x.Size(3), w.Size(0), w.Size(2), w.Size(3), p);
        if (!ConvFits(g.H, g.W, g.Kh, g.Kw, p))
            throw new ArgumentException($"{op}: {xName} {x.ShapeString} is too small for weight {w.ShapeString} with {p}");
        int[] want = [g.N, g.Cout, g.Ho, g.Wo];
        if (!y.Sizes.SequenceEqual(want))
            throw new ArgumentException($"{op}: {yName} {y.ShapeString} should be {Shape.Format(want)} for {xName} {x.ShapeString} and weight {w.ShapeString}");
        RequireContiguous(x, op, xName);
        RequireContiguous(w, op, "weight");
        RequireContiguous(y, op, yName);
        return g;
    }

    /// <summary>Whether the dilated kernel fits in the padded input (Conv2dParams.OutH alone truncates toward zero).</summary>
    internal static bool ConvFits(int h, int w, int kh, int kw, Conv2dParams p)
        => kh >= 1 && kw >= 1 && h + p.PadTop + p.PadBottom >= p.DilationH * (kh - 1) + 1 && w + p.PadLeft + p.PadRight >= p.DilationW * (kw - 1) + 1;

    private static void BiasCheck(string op, Tensor? b, int c, DType dt, string name = "bias")
    {
        if (b is null) return;
        if (b.Rank != 1 || b.Size(0) != c) throw new ArgumentException($"{op}: {name} {b.ShapeString} should be [{c}]");
        if (b.DType != dt) throw new ArgumentException($"{op}: {name} is {b.DType.Name()}, expected {dt.Name()}");
        RequireContiguous(b, op, name);
    }

    /// <summary>A [b, rows, cols] view with row stride <paramref name="ld"/> and batch stride <paramref name="bs"/>.</summary>
    private static Tensor View3(Tensor t, int b, int rows, int cols, int bs, int ld, int offset)
        => t.AsStrided([b, rows, cols], [bs, ld, 1], offset);

    public void Conv2dForward(Tensor x, Tensor w, Tensor? bias, Tensor y, Conv2dParams p)
    {
        var g = ConvCheck("conv2d", x, w, y, p, "input", "output");
        BiasCheck("conv2d", bias, g.Cout, x.DType);
        if (g.N == 0) return;
        int K = g.K, P = g.Positions, imgX = g.Cin * g.H * g.W, imgY = g.Cout * P;
        if (g.IsPointwise)
        {
            using var wv = View3(w, g.N, g.Cout, K, 0, K, w.Offset);
            using var xv = View3(x, g.N, K, P, imgX, P, x.Offset);
            using var yv = View3(y, g.N, g.Cout, P, imgY, P, y.Offset);
            MatMul(wv, xv, yv, false, false);
        }
        else if ((long)K * P <= ConvColumnBudget)
        {
            int nb = (int)Math.Clamp(ConvColumnBudget / Math.Max(1L * K * P, 1), 1, g.N);
            using var col = Tensor.Empty([nb, K, P], x.DType, x.Device);
            for (int n0 = 0; n0 < g.N; n0 += nb)
            {
                int cnt = Math.Min(nb, g.N - n0);
                if (x.DType == DType.Float32) Im2Col<float>.Unfold(x.DataPtr<float>() + (long)n0 * imgX, col.DataPtr<float>(), cnt, g, (long)K * P, P);
                else Im2Col<double>.Unfold(x.DataPtr<double>() + (long)n0 * imgX, col.DataPtr<double>(), cnt, g, (long)K * P, P);
                using var wv = View3(w, cnt, g.Cout, K, 0, K, w.Offset);
                using var cv = View3(col, cnt, K, P, K * P, P, col.Offset);
                using var yv = View3(y, cnt, g.Cout, P, imgY, P, y.Offset + n0 * imgY);
                MatMul(wv, cv, yv, false, false);
            }
        }
        else
        {
            // One image's columns exceed the budget (e.g. the VQ-VAE's 3×3 convs at full resolution):
            // unfold bands of output rows, multiply into a band buffer, and copy the band into y.
            int rows = (int)Math.Clamp(ConvColumnBudget / Math.Max(1L * K * g.Wo, 1), 1, g.Ho);
            using var col = Tensor.Empty([K, rows * g.Wo], x.DType, x.Device);
            using var band = Tensor.Empty([g.Cout, rows * g.Wo], x.DType, x.Device);
            using var wv = View3(w, 1, g.Cout, K, 0, K, w.Offset);
            for (int n = 0; n < g.N; n++)
                for (int oh0 = 0; oh0 < g.Ho; oh0 += rows)
                {
                    int cnt = Math.Min(rows, g.Ho - oh0), pt = cnt * g.Wo;
                    if (x.DType == DType.Float32) Im2Col<float>.Unfold(x.DataPtr<float>() + (long)n * imgX, col.DataPtr<float>(), 1, g, 0, pt, oh0, cnt);
                    else Im2Col<double>.Unfold(x.DataPtr<double>() + (long)n * imgX, col.DataPtr<double>(), 1, g, 0, pt, oh0, cnt);
                    using var cv = View3(col, 1, K, pt, 0, pt, col.Offset);
                    using var bv = View3(band, 1, g.Cout, pt, 0, pt, band.Offset);
                    MatMul(wv, cv, bv, false, false);
                    using var src = band.AsStrided([g.Cout, pt], [pt, 1], band.Offset);
                    using var dst = y.AsStrided([g.Cout, pt], [P, 1], y.Offset + n * imgY + oh0 * g.Wo);
                    Copy(src, dst);
                }
        }
        if (bias is not null)
        {
            if (x.DType == DType.Float32) AddChannelBias<float>(y.DataPtr<float>(), bias.DataPtr<float>(), g.N, g.Cout, P);
            else AddChannelBias<double>(y.DataPtr<double>(), bias.DataPtr<double>(), g.N, g.Cout, P);
        }
    }

    private static void AddChannelBias<T>(T* y, T* b, int n, int c, int plane) where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint py = (nint)y, pb = (nint)b;
        Parallelism.For(n * c, plane, (s, e) =>
        {
            for (int i = s; i < e; i++)
            {
                var span = new Span<T>((T*)py + (long)i * plane, plane);
                TensorPrimitives.Add(span, ((T*)pb)[i % c], span);
            }
        });
    }

    public void Conv2dBackwardInput(Tensor gy, Tensor w, Tensor gx, Conv2dParams p)
    {
        var g = ConvCheck("conv2d backward (input)", gx, w, gy, p, "input gradient", "output gradient");
        if (g.N == 0) return;
        int K = g.K, P = g.Positions, imgX = g.Cin * g.H * g.W, imgY = g.Cout * P;
        if (g.IsPointwise)
        {
            using var wv = View3(w, g.N, g.Cout, K, 0, K, w.Offset);
            using var gyv = View3(gy, g.N, g.Cout, P, imgY, P, gy.Offset);
            using var gxv = View3(gx, g.N, K, P, imgX, P, gx.Offset);
            MatMul(wv, gyv, gxv, true, false);
            return;
        }
        int nb = (int)Math.Clamp(ConvColumnBudget / Math.Max(1L * K * P, 1), 1, g.N);
        using var col = Tensor.Empty([nb, K, P], gx.DType, gx.Device);
        for (int n0 = 0; n0 < g.N; n0 += nb)
        {
            int cnt = Math.Min(nb, g.N - n0);
            using (var wv = View3(w, cnt, g.Cout, K, 0, K, w.Offset))
            using (var gyv = View3(gy, cnt, g.Cout, P, imgY, P, gy.Offset + n0 * imgY))
            using (var cv = View3(col, cnt, K, P, K * P, P, col.Offset))
                MatMul(wv, gyv, cv, true, false);
            if (gx.DType == DType.Float32) Im2Col<float>.Fold(col.DataPtr<float>(), gx.DataPtr<float>() + (long)n0 * imgX, cnt, g);
            else Im2Col<double>.Fold(col.DataPtr<double>(), gx.DataPtr<double>() + (long)n0 * imgX, cnt, g);
        }
    }

    public void Conv2dBackwardWeight(Tensor x, Tensor gy, Tensor gw, Tensor? gb, Conv2dParams p)
    {
        const string op = "conv2d backward (weight)";
        var g = ConvCheck(op, x, gw, gy, p, "input", "output gradient");
        BiasCheck(op, gb, g.Cout, x.DType, "bias gradient");
        int K = g.K, P = g.Positions, imgX = g.Cin * g.H * g.W, imgY = g.Cout * P;
        if (g.N == 0)
        {
            Fill(gw, 0);
            if (gb is not null) Fill(gb, 0);
            return;
        }
        // gw[Cout, K] = Σ_chunks gyᶜ[Cout, cnt·P] · colᶜ[K, cnt·P]ᵀ: the images of a chunk sit side by side,
        // so the GEMM reduces over cnt·P at once (deep layers have P = 49).
        int nb = (int)Math.Clamp(ConvColumnBudget / Math.Max(1L * K * P, 1), 1, g.N);
        using var col = Tensor.Empty([K, nb * P], x.DType, x.Device);
        using var gyc = Tensor.Empty([g.Cout, nb * P], x.DType, x.Device);
        using var gwv = View3(gw, 1, g.Cout, K, 0, K, gw.Offset);
        for (int n0 = 0; n0 < g.N; n0 += nb)
        {
            int cnt = Math.Min(nb, g.N - n0);
            int ld = cnt * P;
            if (x.DType == DType.Float32) Im2Col<float>.Unfold(x.DataPtr<float>() + (long)n0 * imgX, col.DataPtr<float>(), cnt, g, P, ld);
            else Im2Col<double>.Unfold(x.DataPtr<double>() + (long)n0 * imgX, col.DataPtr<double>(), cnt, g, P, ld);
            // gy[n0.., Cout, P] → [Cout, cnt, P]
            using (var src = gy.AsStrided([g.Cout, cnt, P], [P, imgY, 1], gy.Offset + n0 * imgY))
            using (var dst = gyc.AsStrided([g.Cout, cnt, P], [ld, P, 1], gyc.Offset))
                Copy(src, dst);
            using var gyv = View3(gyc, 1, g.Cout, ld, 0, ld, gyc.Offset);
            using var cv = View3(col, 1, K, ld, 0, ld, col.Offset);
            MatMul(gyv, cv, gwv, false, true, 1, n0 == 0 ? 0 : 1);
        }
        if (gb is not null)
        {
            if (x.DType == DType.Float32) ChannelSums<float>(gy.DataPtr<float>(), gb.DataPtr<float>(), g.N, g.Cout, P);
            else ChannelSums<double>(gy.DataPtr<double>(), gb.DataPtr<double>(), g.N, g.Cout, P);
        }
    }

    /// <summary>s[c] ← Σ_n Σ_p t[n, c, p] (accumulated in float64).</summary>
    private static void ChannelSums<T>(T* t, T* s, int n, int c, int plane) where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint pt = (nint)t, ps = (nint)s;
        Parallelism.For(c, (long)n * plane, (s0, e0) =>
        {
            for (int ch = s0; ch < e0; ch++)
            {
                double acc = 0;
                for (int i = 0; i < n; i++)
                {
                    T* row = (T*)pt + ((long)i * c + ch) * plane;
                    for (int j = 0; j < plane; j++) acc += double.CreateTruncating(row[j]);
                }
                ((T*)ps)[ch] = T.CreateTruncating(acc);
            }
        });
    }

    // ------------------------------------------------------------------ pooling

    public void MaxPool2dForward(Tensor x, Tensor y, Tensor indices, Pool2dParams p)
    {
        const string op = "max_pool2d";
        RequireFloat(x, op);
        if (x.Rank != 4) throw new ArgumentException($"{op}: input {x.ShapeString} must be [N,C,H,W]");
        if (p.KernelH < 1 || p.KernelW < 1 || p.StrideH < 1 || p.StrideW < 1 || p.PadH < 0 || p.PadW < 0 || p.PadH > p.KernelH / 2 || p.PadW > p.KernelW / 2)
            throw new ArgumentException($"{op}: invalid geometry {p} (padding must be at most half the kernel)");
        int N = x.Size(0), C = x.Size(1), H = x.Size(2), W = x.Size(3), Ho = p.OutH(H), Wo = p.OutW(W);
        if (H + 2 * p.PadH < p.KernelH || W + 2 * p.PadW < p.KernelW) throw new ArgumentException($"{op}: input {x.ShapeString} is too small for {p}");
        int[] want = [N, C, Ho, Wo];
        if (!y.Sizes.SequenceEqual(want) || !indices.Sizes.SequenceEqual(want))
            throw new ArgumentException($"{op}: output {y.ShapeString} and indices {indices.ShapeString} should be {Shape.Format(want)} for input {x.ShapeString}");
        if (y.DType != x.DType || indices.DType != DType.Int64)
            throw new ArgumentException($"{op}: output must be {x.DType.Name()} (got {y.DType.Name()}) and indices int64 (got {indices.DType.Name()})");
        RequireContiguous(x, op, "input"); RequireContiguous(y, op, "output"); RequireContiguous(indices, op, "indices");
        if (x.DType == DType.Float32) MaxPoolT<float>(x.DataPtr<float>(), y.DataPtr<float>(), indices.DataPtr<long>(), N * C, H, W, Ho, Wo, p);
        else MaxPoolT<double>(x.DataPtr<double>(), y.DataPtr<double>(), indices.DataPtr<long>(), N * C, H, W, Ho, Wo, p);
    }

    private static void MaxPoolT<T>(T* x, T* y, long* idx, int planes, int H, int W, int Ho, int Wo, Pool2dParams p)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, py = (nint)y, pi = (nint)idx;
        Parallelism.For(planes, (long)Ho * Wo * p.KernelH * p.KernelW, (s, e) =>
        {
            for (int pl = s; pl < e; pl++)
                MaxPoolPlane((T*)px + (long)pl * H * W, (T*)py + (long)pl * Ho * Wo, (long*)pi + (long)pl * Ho * Wo, H, W, Ho, Wo,
                    p.KernelH, p.KernelW, p.StrideH, p.StrideW, p.PadH, p.PadW);
        });
    }

    private static void MaxPoolPlane<T>(T* xs, T* ys, long* ids, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        // Tap-major order over a whole output row: each output still sees its window in row-major order (so the
        // first max wins, and NaN wins as in PyTorch, padding being −∞), but consecutive iterations are independent.
        for (int oh = 0; oh < Ho; oh++)
        {
            T* yr = ys + oh * Wo; long* ir = ids + oh * Wo;
            int h0 = Math.Max(oh * sh - ph, 0), h1 = Math.Min(oh * sh - ph + kh, H);
            for (int ow = 0; ow < Wo; ow++)
            {
                int first = h0 * W + Math.Max(ow * sw - pw, 0);
                yr[ow] = xs[first]; ir[ow] = first;
            }
            for (int ih = h0; ih < h1; ih++)
            {
                T* row = xs + ih * W;
                for (int k = 0; k < kw; k++)
                {
                    int off = k - pw; // iw = ow·sw + off
                    int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
                    int hi = W - 1 - off < 0 ? 0 : Math.Min(Wo, (W - 1 - off) / sw + 1);
                    for (int ow = lo; ow < hi; ow++)
                    {
                        int iw = ow * sw + off;
                        T v = row[iw], bv = yr[ow];
                        bool take = (v > bv) | T.IsNaN(v);
                        // Branch-free select: on real data the comparison is unpredictable.
                        long m = -(long)Unsafe.As<bool, byte>(ref take);
                        yr[ow] = SelectBits(m, v, bv);
                        ir[ow] = ((long)(ih * W + iw) & m) | (ir[ow] & ~m);
                    }
                }
            }
        }
    }

    /// <summary>a where the mask <paramref name="m"/> is all ones, b where it is zero (bitwise, so −0 and NaN payloads survive).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static T SelectBits<T>(long m, T a, T b) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            int mi = (int)m, r = (Unsafe.As<T, int>(ref a) & mi) | (Unsafe.As<T, int>(ref b) & ~mi);
            return Unsafe.As<int, T>(ref r);
        }
        long r2 = (Unsafe.As<T, long>(ref a) & m) | (Unsafe.As<T, long>(ref b) & ~m);
        return Unsafe.As<long, T>(ref r2);
    }

    public void MaxPool2dBackward(Tensor gy, Tensor indices, Tensor gx, Pool2dParams? p = null)
    {
        const string op = "max_pool2d backward";
        RequireFloat(gy, op);
        if (gy.Rank != 4 || gx.Rank != 4 || !indices.Sizes.SequenceEqual(gy.Sizes) || gx.Size(0) != gy.Size(0) || gx.Size(1) != gy.Size(1))
            throw new ArgumentException($"{op}: output gradient {gy.ShapeString}, indices {indices.ShapeString} and input gradient {gx.ShapeString} do not match");
        // The scatter needs no geometry; a given one must still describe these shapes (the CUDA backend gathers with it).
        if (p is { } pg && (pg.OutH(gx.Size(2)) != gy.Size(2) || pg.OutW(gx.Size(3)) != gy.Size(3)))
            throw new ArgumentException($"{op}: {pg} on input gradient {gx.ShapeString} gives {pg.OutH(gx.Size(2))}×{pg.OutW(gx.Size(3))} outputs, the output gradient is {gy.ShapeString}");
        if (indices.DType != DType.Int64 || gx.DType != gy.DType)
            throw new ArgumentException($"{op}: indices must be int64 (got {indices.DType.Name()}) and gradients one dtype (got {gy.DType.Name()}, {gx.DType.Name()})");
        RequireContiguous(gy, op, "output gradient"); RequireContiguous(indices, op, "indices"); RequireContiguous(gx, op, "input gradient");
        int planes = gx.Size(0) * gx.Size(1), hw = gx.Size(2) * gx.Size(3), ohw = gy.Size(2) * gy.Size(3);
        var ids = indices.AsSpan<long>();
        for (int i = 0; i < ids.Length; i++)
            if ((ulong)ids[i] >= (ulong)hw)
                throw new ArgumentOutOfRangeException(nameof(indices), $"{op}: index {ids[i]} at position {i} is outside the {gx.Size(2)}×{gx.Size(3)} input plane of {gx.ShapeString}");
        if (gy.DType == DType.Float32) ScatterPlanes<float>(gy.DataPtr<float>(), indices.DataPtr<long>(), gx.DataPtr<float>(), planes, hw, ohw);
        else ScatterPlanes<double>(gy.DataPtr<double>(), indices.DataPtr<long>(), gx.DataPtr<double>(), planes, hw, ohw);
    }

    private static void ScatterPlanes<T>(T* gy, long* idx, T* gx, int planes, int hw, int ohw) where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint pgy = (nint)gy, pi = (nint)idx, pgx = (nint)gx;
        Parallelism.For(planes, hw + ohw, (s, e) =>
        {
            for (int pl = s; pl < e; pl++)
            {
                T* dst = (T*)pgx + (long)pl * hw;
                T* src = (T*)pgy + (long)pl * ohw;
                long* ids = (long*)pi + (long)pl * ohw;
                new Span<T>(dst, hw).Clear();
                for (int j = 0; j < ohw; j++) dst[ids[j]] += src[j];
            }
        });
    }

    private static void AdaptiveCheck(string op, Tensor x, Tensor y, string xName, string yName)
    {
        RequireFloat(x, op);
        if (x.Rank != 4 || y.Rank != 4 || x.Size(0) != y.Size(0) || x.Size(1) != y.Size(1))
            throw new ArgumentException($"{op}: {xName} {x.ShapeString} and {yName} {y.ShapeString} must both be [N,C,·,·] with equal N and C");
        if (y.DType != x.DType) throw new ArgumentException($"{op}: dtypes differ ({x.DType.Name()}, {y.DType.Name()})");
        if ((y.Size(2) == 0 || y.Size(3) == 0) && x.Numel > 0 || (x.Size(2) == 0 || x.Size(3) == 0) && y.Numel > 0)
            throw new ArgumentException($"{op}: cannot pool {x.ShapeString} to {y.ShapeString}");
        RequireContiguous(x, op, xName); RequireContiguous(y, op, yName);
    }

    public void AdaptiveAvgPool2dForward(Tensor x, Tensor y)
    {
        AdaptiveCheck("adaptive_avg_pool2d", x, y, "input", "output");
        if (x.DType == DType.Float32) AdaptiveT<float>(x.DataPtr<float>(), y.DataPtr<float>(), x.Size(0) * x.Size(1), x.Size(2), x.Size(3), y.Size(2), y.Size(3), false);
        else AdaptiveT<double>(x.DataPtr<double>(), y.DataPtr<double>(), x.Size(0) * x.Size(1), x.Size(2), x.Size(3), y.Size(2), y.Size(3), false);
    }

    public void AdaptiveAvgPool2dBackward(Tensor gy, Tensor gx)
    {
        AdaptiveCheck("adaptive_avg_pool2d backward", gx, gy, "input gradient", "output gradient");
        if (gx.DType == DType.Float32) AdaptiveT<float>(gx.DataPtr<float>(), gy.DataPtr<float>(), gx.Size(0) * gx.Size(1), gx.Size(2), gx.Size(3), gy.Size(2), gy.Size(3), true);
        else AdaptiveT<double>(gx.DataPtr<double>(), gy.DataPtr<double>(), gx.Size(0) * gx.Size(1), gx.Size(2), gx.Size(3), gy.Size(2), gy.Size(3), true);
    }

    /// <summary>Forward: y ← window means of x. Backward: x ← Σ over windows of y / window size (x overwritten).</summary>
    private static void AdaptiveT<T>(T* x, T* y, int planes, int H, int W, int Ho, int Wo, bool backward) where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, py = (nint)y;
        Parallelism.For(planes, (long)H * W + Ho * Wo, (s, e) =>
        {
            for (int pl = s; pl < e; pl++)
            {
                T* xs = (T*)px + (long)pl * H * W;
                T* ys = (T*)py + (long)pl * Ho * Wo;
                if (backward) new Span<T>(xs, H * W).Clear();
                for (int oh = 0; oh < Ho; oh++)
                {
                    int h0 = (int)((long)oh * H / Ho), h1 = (int)(((long)(oh + 1) * H + Ho - 1) / Ho);
                    for (int ow = 0; ow < Wo; ow++)
                    {
                        int w0 = (int)((long)ow * W / Wo), w1 = (int)(((long)(ow + 1) * W + Wo - 1) / Wo);
                        double inv = 1.0 / ((h1 - h0) * (w1 - w0));
                        if (!backward)
                        {
                            double acc = 0;
                            for (int ih = h0; ih < h1; ih++)
                                for (int iw = w0; iw < w1; iw++) acc += double.CreateTruncating(xs[ih * W + iw]);
                            ys[oh * Wo + ow] = T.CreateTruncating(acc * inv);
                        }
                        else
                        {
                            T g = T.CreateTruncating(double.CreateTruncating(ys[oh * Wo + ow]) * inv);
                            for (int ih = h0; ih < h1; ih++)
                                for (int iw = w0; iw < w1; iw++) xs[ih * W + iw] += g;
                        }
                    }
                }
            }
        });
    }

    // ------------------------------------------------------------------ batch norm

    private static void StatCheck(string op, Tensor? t, int c, DType dt, string name)
    {
        if (t is null) return;
        if (t.Numel != c || t.Rank != 1) throw new ArgumentException($"{op}: {name} {t.ShapeString} should be [{c}]");
        if (t.DType != dt) throw new ArgumentException($"{op}: {name} is {t.DType.Name()}, expected {dt.Name()}");
        RequireContiguous(t, op, name);
    }

    /// <summary>(N, C, spatial size) of a [N,C,*] tensor.</summary>
    private static (int N, int C, int S) NcsOf(string op, Tensor x)
    {
        if (x.Rank < 2) throw new ArgumentException($"{op}: input {x.ShapeString} must be [N,C,*]");
        int s = 1;
        for (int d = 2; d < x.Rank; d++) s *= x.Sizes[d];
        return (x.Size(0), x.Size(1), s);
    }

    public void BatchNormForward(Tensor x, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar,
        bool training, double momentum, double eps, Tensor y, Tensor saveMean, Tensor saveInvStd,
        Tensor? residual = null, bool relu = false)
    {
        const string op = "batch_norm";
        RequireFloat(x, op);
        var (N, C, S) = NcsOf(op, x);
        RequireSameShape(x, y, op);
        if (y.DType != x.DType) throw new ArgumentException($"{op}: output is {y.DType.Name()}, input {x.DType.Name()}");
        StatCheck(op, weight, C, x.DType, "weight"); StatCheck(op, bias, C, x.DType, "bias");
        StatCheck(op, runningMean, C, x.DType, "running mean"); StatCheck(op, runningVar, C, x.DType, "running var");
        StatCheck(op, saveMean, C, x.DType, "saved mean"); StatCheck(op, saveInvStd, C, x.DType, "saved inverse std");
        RequireContiguous(x, op, "input"); RequireContiguous(y, op, "output");
        if (residual is not null)
        {
            RequireSameShape(x, residual, op);
            if (residual.DType != x.DType) throw new ArgumentException($"{op}: residual is {residual.DType.Name()}, input {x.DType.Name()}");
            RequireContiguous(residual, op, "residual");
        }
        if (!training && (runningMean is null || runningVar is null))
            throw new ArgumentException($"{op}: evaluation mode needs running mean and variance (input {x.ShapeString})");
        if (training && (long)N * S == 1)
            throw new ArgumentException($"{op}: expected more than 1 value per channel when training, got input {x.ShapeString}");
        if (x.DType == DType.Float32)
            BnFwdT<float>(x.DataPtr<float>(), P<float>(weight), P<float>(bias), P<float>(runningMean), P<float>(runningVar), training, momentum, eps,
                y.DataPtr<float>(), saveMean.DataPtr<float>(), saveInvStd.DataPtr<float>(), N, C, S, P<float>(residual), relu);
        else
            BnFwdT<double>(x.DataPtr<double>(), P<double>(weight), P<double>(bias), P<double>(runningMean), P<double>(runningVar), training, momentum, eps,
                y.DataPtr<double>(), saveMean.DataPtr<double>(), saveInvStd.DataPtr<double>(), N, C, S, P<double>(residual), relu);
    }

    private static T* P<T>(Tensor? t) where T : unmanaged => t is null ? null : t.DataPtr<T>();

    private static void BnFwdT<T>(T* x, T* w, T* b, T* rm, T* rv, bool training, double momentum, double eps,
        T* y, T* sm, T* sis, int N, int C, int S, T* res, bool relu) where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, pw = (nint)w, pb = (nint)b, prm = (nint)rm, prv = (nint)rv, py = (nint)y, psm = (nint)sm, psis = (nint)sis, pres = (nint)res;
        bool fused = res != null || relu;
        long M = (long)N * S, cs = (long)C * S;
        Parallelism.For(C, 2 * M, (s, e) =>
        {
            for (int c = s; c < e; c++)
            {
                double mean, invStd;
                if (training)
                {
                    // One pass, shifted by the channel's first value so that the variance does not cancel.
                    double shift = M > 0 ? double.CreateTruncating(((T*)px)[(long)c * S]) : 0, sum = 0, ss = 0;
                    for (int n = 0; n < N; n++) NormMath<T>.SumSq((T*)px + n * cs + (long)c * S, S, shift, ref sum, ref ss);
                    double d = M > 0 ? sum / M : 0;
                    mean = shift + d;
                    double var = M > 0 ? Math.Max(ss / M - d * d, 0) : 0;
                    invStd = 1.0 / Math.Sqrt(var + eps);
                    if (M > 0)
                    {
                        if (prm != 0) { T* q = (T*)prm + c; *q = T.CreateTruncating((1 - momentum) * double.CreateTruncating(*q) + momentum * mean); }
                        if (prv != 0) { T* q = (T*)prv + c; *q = T.CreateTruncating((1 - momentum) * double.CreateTruncating(*q) + momentum * (M > 1 ? var * M / (M - 1) : 0)); }
                    }
                }
                else
                {
                    mean = double.CreateTruncating(((T*)prm)[c]);
                    invStd = 1.0 / Math.Sqrt(double.CreateTruncating(((T*)prv)[c]) + eps);
                }
                ((T*)psm)[c] = T.CreateTruncating(mean);
                ((T*)psis)[c] = T.CreateTruncating(invStd);
                double scale = invStd * (pw != 0 ? double.CreateTruncating(((T*)pw)[c]) : 1);
                double shiftOut = (pb != 0 ? double.CreateTruncating(((T*)pb)[c]) : 0) - mean * scale;
                for (int n = 0; n < N; n++)
                {
                    long o = n * cs + (long)c * S;
                    if (fused) NormMath<T>.AffineAddRelu((T*)px + o, pres != 0 ? (T*)pres + o : null, (T*)py + o, S, scale, shiftOut, relu);
                    else NormMath<T>.Affine((T*)px + o, (T*)py + o, S, scale, shiftOut);
                }
            }
        });
    }

    public void BatchNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor saveMean, Tensor saveInvStd, bool training,
        Tensor gx, Tensor? gw, Tensor? gb, Tensor? reluOutput = null, Tensor? gResidual = null)
    {
        const string op = "batch_norm backward";
        RequireFloat(x, op);
        var (N, C, S) = NcsOf(op, x);
        RequireSameShape(x, gy, op); RequireSameShape(x, gx, op);
        if (gy.DType != x.DType || gx.DType != x.DType) throw new ArgumentException($"{op}: dtypes differ ({x.DType.Name()}, {gy.DType.Name()}, {gx.DType.Name()})");
        StatCheck(op, weight, C, x.DType, "weight"); StatCheck(op, saveMean, C, x.DType, "saved mean"); StatCheck(op, saveInvStd, C, x.DType, "saved inverse std");
        StatCheck(op, gw, C, x.DType, "weight gradient"); StatCheck(op, gb, C, x.DType, "bias gradient");
        RequireContiguous(x, op, "input"); RequireContiguous(gy, op, "output gradient"); RequireContiguous(gx, op, "input gradient");
        foreach (var (t, name) in new[] { (reluOutput, "relu output"), (gResidual, "residual gradient") })
        {
            if (t is null) continue;
            RequireSameShape(x, t, op);
            if (t.DType != x.DType) throw new ArgumentException($"{op}: {name} is {t.DType.Name()}, input {x.DType.Name()}");
            RequireContiguous(t, op, name);
        }
        if (x.DType == DType.Float32)
            BnBwdT<float>(x.DataPtr<float>(), gy.DataPtr<float>(), P<float>(weight), saveMean.DataPtr<float>(), saveInvStd.DataPtr<float>(), training,
                gx.DataPtr<float>(), P<float>(gw), P<float>(gb), N, C, S, P<float>(reluOutput), P<float>(gResidual));
        else
            BnBwdT<double>(x.DataPtr<double>(), gy.DataPtr<double>(), P<double>(weight), saveMean.DataPtr<double>(), saveInvStd.DataPtr<double>(), training,
                gx.DataPtr<double>(), P<double>(gw), P<double>(gb), N, C, S, P<double>(reluOutput), P<double>(gResidual));
    }

    private static void BnBwdT<T>(T* x, T* gy, T* w, T* sm, T* sis, bool training, T* gx, T* gw, T* gb, int N, int C, int S, T* yRelu, T* gRes)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, pgy = (nint)gy, pw = (nint)w, psm = (nint)sm, psis = (nint)sis, pgx = (nint)gx, pgw = (nint)gw, pgb = (nint)gb;
        nint pyr = (nint)yRelu, pgr = (nint)gRes;
        long M = (long)N * S, cs = (long)C * S;
        Parallelism.For(C, 3 * M, (s, e) =>
        {
            for (int c = s; c < e; c++)
            {
                double mean = double.CreateTruncating(((T*)psm)[c]), inv = double.CreateTruncating(((T*)psis)[c]);
                double wc = pw != 0 ? double.CreateTruncating(((T*)pw)[c]) : 1;
                // Σ gy and Σ gy·x̂ over the channel
                // The upstream gradient g: gy, or (relu fused) gy masked by y > 0, stored to the residual's gradient (or to gx,
                // which Combine then overwrites in place) so that the second pass reads it like gy.
                double sg = 0, sgc = 0;
                T* g = (T*)pgy;
                if (pyr != 0)
                {
                    g = pgr != 0 ? (T*)pgr : (T*)pgx;
                    for (int n = 0; n < N; n++)
                    {
                        long o = n * cs + (long)c * S;
                        NormMath<T>.SumDotMasked((T*)pgy + o, (T*)pyr + o, (T*)px + o, g + o, S, mean, ref sg, ref sgc);
                    }
                }
                else
                {
                    for (int n = 0; n < N; n++)
                    {
                        long o = n * cs + (long)c * S;
                        NormMath<T>.SumDot((T*)pgy + o, (T*)px + o, S, mean, ref sg, ref sgc);
                        if (pgr != 0) new ReadOnlySpan<T>((T*)pgy + o, S).CopyTo(new Span<T>((T*)pgr + o, S));
                    }
                }
                double sgx = sgc * inv;
                if (pgw != 0) ((T*)pgw)[c] = T.CreateTruncating(sgx);
                if (pgb != 0) ((T*)pgb)[c] = T.CreateTruncating(sg);
                // train: gx = k·(gy − Σgy/M − x̂·Σ(gy·x̂)/M), k = w·inv; eval: gx = k·gy. As a·gy + b·x + c:
                double k = wc * inv;
                double mg = training && M > 0 ? sg / M : 0, mgx = training && M > 0 ? sgx / M : 0;
                double a = k, bx = -k * inv * mgx, c0 = -k * mg + k * inv * mgx * mean;
                for (int n = 0; n < N; n++)
                {
                    long o = n * cs + (long)c * S;
                    NormMath<T>.Combine(g + o, (T*)px + o, (T*)pgx + o, S, a, bx, c0);
                }
            }
        });
    }

    // ------------------------------------------------------------------ group norm

    private static (int N, int C, int S) GnCheck(string op, Tensor x, int groups, Tensor mean, Tensor rstd)
    {
        RequireFloat(x, op);
        var (N, C, S) = NcsOf(op, x);
        if (groups < 1 || C % groups != 0) throw new ArgumentException($"{op}: {C} channels of input {x.ShapeString} do not split into {groups} groups");
        if (mean.Numel != N * groups || rstd.Numel != N * groups || mean.DType != x.DType || rstd.DType != x.DType)
            throw new ArgumentException($"{op}: mean {mean.ShapeString} and rstd {rstd.ShapeString} should be [{N},{groups}] {x.DType.Name()}");
        RequireContiguous(x, op, "input"); RequireContiguous(mean, op, "mean"); RequireContiguous(rstd, op, "rstd");
        return (N, C, S);
    }

    public void GroupNormForward(Tensor x, Tensor? weight, Tensor? bias, int groups, double eps, Tensor y, Tensor mean, Tensor rstd)
    {
        const string op = "group_norm";
        var (N, C, S) = GnCheck(op, x, groups, mean, rstd);
        RequireSameShape(x, y, op);
        if (y.DType != x.DType) throw new ArgumentException($"{op}: output is {y.DType.Name()}, input {x.DType.Name()}");
        RequireContiguous(y, op, "output");
        StatCheck(op, weight, C, x.DType, "weight"); StatCheck(op, bias, C, x.DType, "bias");
        if (x.DType == DType.Float32) GnFwdT<float>(x.DataPtr<float>(), P<float>(weight), P<float>(bias), groups, eps, y.DataPtr<float>(), mean.DataPtr<float>(), rstd.DataPtr<float>(), N, C, S);
        else GnFwdT<double>(x.DataPtr<double>(), P<double>(weight), P<double>(bias), groups, eps, y.DataPtr<double>(), mean.DataPtr<double>(), rstd.DataPtr<double>(), N, C, S);
    }

    private static void GnFwdT<T>(T* x, T* w, T* b, int G, double eps, T* y, T* mean, T* rstd, int N, int C, int S)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, pw = (nint)w, pb = (nint)b, py = (nint)y, pm = (nint)mean, pr = (nint)rstd;
        int cg = C / G;
        long M = (long)cg * S;
        Parallelism.For(N * G, 2 * M, (s, e) =>
        {
            for (int ng = s; ng < e; ng++)
            {
                T* xs = (T*)px + ng * M; T* ys = (T*)py + ng * M;
                double shift = M > 0 ? double.CreateTruncating(xs[0]) : 0, sum = 0, ss = 0;
                NormMath<T>.SumSq(xs, M, shift, ref sum, ref ss);
                double d = M > 0 ? sum / M : 0, mu = shift + d;
                double r = 1.0 / Math.Sqrt((M > 0 ? Math.Max(ss / M - d * d, 0) : 0) + eps);
                ((T*)pm)[ng] = T.CreateTruncating(mu); ((T*)pr)[ng] = T.CreateTruncating(r);
                int c0 = ng % G * cg;
                for (int j = 0; j < cg; j++)
                {
                    int c = c0 + j;
                    double scale = r * (pw != 0 ? double.CreateTruncating(((T*)pw)[c]) : 1);
                    double shiftOut = (pb != 0 ? double.CreateTruncating(((T*)pb)[c]) : 0) - mu * scale;
                    NormMath<T>.Affine(xs + (long)j * S, ys + (long)j * S, S, scale, shiftOut);
                }
            }
        });
    }

    public void GroupNormBackward(Tensor x, Tensor gy, Tensor? weight, int groups, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb)
    {
        const string op = "group_norm backward";
        var (N, C, S) = GnCheck(op, x, groups, mean, rstd);
        RequireSameShape(x, gy, op); RequireSameShape(x, gx, op);
        if (gy.DType != x.DType || gx.DType != x.DType) throw new ArgumentException($"{op}: dtypes differ ({x.DType.Name()}, {gy.DType.Name()}, {gx.DType.Name()})");
        RequireContiguous(gy, op, "output gradient"); RequireContiguous(gx, op, "input gradient");
        StatCheck(op, weight, C, x.DType, "weight"); StatCheck(op, gw, C, x.DType, "weight gradient"); StatCheck(op, gb, C, x.DType, "bias gradient");
        if (x.DType == DType.Float32)
            GnBwdT<float>(x.DataPtr<float>(), gy.DataPtr<float>(), P<float>(weight), groups, mean.DataPtr<float>(), rstd.DataPtr<float>(), gx.DataPtr<float>(), P<float>(gw), P<float>(gb), N, C, S);
        else
            GnBwdT<double>(x.DataPtr<double>(), gy.DataPtr<double>(), P<double>(weight), groups, mean.DataPtr<double>(), rstd.DataPtr<double>(), gx.DataPtr<double>(), P<double>(gw), P<double>(gb), N, C, S);
    }

    private static void GnBwdT<T>(T* x, T* gy, T* w, int G, T* mean, T* rstd, T* gx, T* gw, T* gb, int N, int C, int S)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        nint px = (nint)x, pgy = (nint)gy, pw = (nint)w, pm = (nint)mean, pr = (nint)rstd, pgx = (nint)gx, pgw = (nint)gw, pgb = (nint)gb;
        int cg = C / G;
        long M = (long)cg * S;
        // gx per (n, g): with ĝ = gy·w, gx = r·(ĝ − Σĝ/M − x̂·Σ(ĝ·x̂)/M)
        Parallelism.For(N * G, 3 * M, (s, e) =>
        {
            for (int ng = s; ng < e; ng++)
            {
                T* xs = (T*)px + ng * M; T* gs = (T*)pgy + ng * M; T* os = (T*)pgx + ng * M;
                double mu = double.CreateTruncating(((T*)pm)[ng]), r = double.CreateTruncating(((T*)pr)[ng]);
                int c0 = ng % G * cg;
                double sg = 0, sgx = 0;
                for (int j = 0; j < cg; j++)
                {
                    double wc = pw != 0 ? double.CreateTruncating(((T*)pw)[c0 + j]) : 1, a = 0, b = 0;
                    NormMath<T>.SumDot(gs + (long)j * S, xs + (long)j * S, S, mu, ref a, ref b);
                    sg += wc * a; sgx += wc * b * r;
                }
                double mg = M > 0 ? sg / M : 0, mgx = M > 0 ? sgx / M : 0;
                for (int j = 0; j < cg; j++)
                {
                    double wc = pw != 0 ? double.CreateTruncating(((T*)pw)[c0 + j]) : 1;
                    long o = (long)j * S;
                    NormMath<T>.Combine(gs + o, xs + o, os + o, S, r * wc, -r * r * mgx, -r * mg + r * r * mgx * mu);
                }
            }
        });
        if (pgw == 0 && pgb == 0) return;
        // gw[c] = Σ_n Σ_s gy·x̂, gb[c] = Σ_n Σ_s gy
        Parallelism.For(C, (long)N * S, (s, e) =>
        {
            for (int c = s; c < e; c++)
            {
                int g = c / cg;
                double sw = 0, sb = 0;
                for (int n = 0; n < N; n++)
                {
                    long ng = (long)n * G + g;
                    double mu = double.CreateTruncating(((T*)pm)[ng]), r = double.CreateTruncating(((T*)pr)[ng]), a = 0, b = 0;
                    long o = ((long)n * C + c) * S;
                    NormMath<T>.SumDot((T*)pgy + o, (T*)px + o, S, mu, ref a, ref b);
                    sb += a; sw += b * r;
                }
                if (pgw != 0) ((T*)pgw)[c] = T.CreateTruncating(sw);
                if (pgb != 0) ((T*)pgb)[c] = T.CreateTruncating(sb);
            }
        });
    }
}
