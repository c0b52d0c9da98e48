using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cuda;

/// <summary>Which layer-norm forward statistics kernel to run (the lab times both; <see cref="ShiftedOnePass"/> is the default).</summary>
public enum LayerNormVariant
{
    /// <summary>One pass over the row for Σ(x−x₀) and Σ(x−x₀)² (x₀ = the row's first element), then the write pass.</summary>
    ShiftedOnePass,
    /// <summary>Mean pass, centred sum-of-squares pass, write pass (three reads of the row).</summary>
    TwoPass,
    /// <summary><see cref="ShiftedOnePass"/> with both loops unrolled by four (four independent loads in flight per thread).</summary>
    ShiftedOnePassX4,
}

/// <summary>Which softmax forward kernel to run (the lab times both; <see cref="Online"/> is the default).</summary>
public enum SoftmaxVariant
{
    /// <summary>One pass keeping a running (max, Σexp) pair per thread, merged across the group; then the write pass.</summary>
    Online,
    /// <summary>Max pass, Σexp pass, write pass.</summary>
    TwoPass,
    /// <summary><see cref="Online"/> with both loops unrolled by four: one rescale per four loads.</summary>
    OnlineX4,
}

/// <summary>AdamW scalars, computed on the host exactly as the CPU backend computes them (double, then rounded to float).</summary>
public struct AdamWScalars
{
    public float Beta1, OneMinusBeta1, Beta2, OneMinusBeta2, Eps, NegStep, NegDecay;
    public int Decay;

    public static AdamWScalars From(AdamWParams hp)
    {
        double stepSize = hp.Lr;
        if (hp.CorrectBias) stepSize = stepSize * Math.Sqrt(1.0 - Math.Pow(hp.Beta2, hp.Step)) / (1.0 - Math.Pow(hp.Beta1, hp.Step));
        return new AdamWScalars
        {
            Beta1 = (float)hp.Beta1, OneMinusBeta1 = (float)(1.0 - hp.Beta1),
            Beta2 = (float)hp.Beta2, OneMinusBeta2 = (float)(1.0 - hp.Beta2),
            Eps = (float)hp.Eps, NegStep = (float)(-stepSize),
            NegDecay = (float)(-hp.Lr * hp.WeightDecay), Decay = hp.WeightDecay > 0 ? 1 : 0,
        };
    }
}

/// <summary>
/// Dropout scalars of the fused residual layer norm: On = 0 keeps every element unscaled (eval, p = 0: no draw);
/// otherwise element i is kept iff <c>(Philox.Word(Seed, Offset, i) &gt;&gt; 8) ≥ Thr</c> and scaled by Scale, exactly
/// as <see cref="DropoutKernels"/> does.
/// </summary>
public struct DropScalars
{
    public ulong Seed, Offset;
    public uint Thr;
    public float Scale;
    public int On;

    public static DropScalars From(double p, ulong seed, ulong offset)
        => p == 0 ? default : new DropScalars { Seed = seed, Offset = offset, Thr = DropoutKernels.Threshold(p), Scale = DropoutKernels.KeepScale(p), On = 1 };
}

/// <summary>
/// Row-wise family on ILGPU (float32): layer norm forward/backward, softmax and log-softmax forward/backward over the
/// last dim, fused cross-entropy forward/backward (hard targets with ignore_index, or soft targets), and fused AdamW.
/// Row kernels run one group per row (grid-stride over rows), reduce with warp shuffles (<see cref="Warp.WarpSize"/>,
/// never a literal) and one shared-memory step across warps; the group size is a launch parameter (2 threads on the
/// CPU accelerator, 128–1024 on a GPU). Semantics follow <c>CpuBackend.Nn.cs</c>. Kernels never throw: the launchers
/// validate sizes, and an out-of-range hard target (which the backend rejects before launching) yields NaN, not an
/// out-of-bounds read.
/// </summary>
internal static class RowKernels
{
    /// <summary>Most warps per group the cross-warp reduction supports (1024 threads of 32 lanes).</summary>
    public const int MaxWarps = BlockReduce.MaxWarps;
    /// <summary>Rows summed per partial in the deterministic gw/gb reduction.</summary>
    public const int ParamRowsPerBlock = 64;

    // ================================================================== device helpers

    private struct MaxSum { public float M, S; }

    /// <summary>Merges two (max, Σexp(x−max)) pairs; symmetric, so xor-shuffle partners agree bit for bit.</summary>
    private static MaxSum Merge(MaxSum a, MaxSum b)
    {
        MaxSum r;
        r.M = a.M > b.M ? a.M : b.M;
        r.S = (a.M == r.M ? a.S : a.S * MathF.Exp(a.M - r.M)) + (b.M == r.M ? b.S : b.S * MathF.Exp(b.M - r.M));
        return r;
    }

    private static MaxSum GroupMaxSum(MaxSum v, ArrayView<float> red)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1)
        {
            MaxSum u; u.M = Warp.ShuffleXor(v.M, o); u.S = Warp.ShuffleXor(v.S, o);
            v = Merge(v, u);
        }
        int nw = Group.DimX / Warp.WarpSize;
        if (nw == 1) return v;
        int w = Group.IdxX / Warp.WarpSize;
        if (Warp.IsFirstLane) { red[w] = v.M; red[MaxWarps + w] = v.S; }
        Group.Barrier();
        MaxSum acc; acc.M = red[0]; acc.S = red[MaxWarps];
        for (int i = 1; i < nw; i++) { MaxSum u; u.M = red[i]; u.S = red[MaxWarps + i]; acc = Merge(acc, u); }
        Group.Barrier();
        return acc;
    }

    /// <summary>(max, Σexp(x−max)) of row [off, off+c) in one read. The running max starts at float.MinValue so that −∞ entries add exp(−∞)=0, never NaN.</summary>
    private static MaxSum RowMaxSum(ArrayView<float> x, long off, int c, ArrayView<float> red)
    {
        float m = float.MinValue; double s = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float xi = x[off + i];
            if (xi > m) { s = s * MathF.Exp(m - xi) + 1.0; m = xi; }
            else s += MathF.Exp(xi - m);
        }
        MaxSum v; v.M = m; v.S = (float)s;
        return GroupMaxSum(v, red);
    }

    /// <summary><see cref="RowMaxSum"/> with four loads in flight per thread and one rescale per four elements.</summary>
    private static MaxSum RowMaxSumX4(ArrayView<float> x, long off, int c, ArrayView<float> red)
    {
        int g = Group.DimX;
        float m = float.MinValue; double s = 0;
        for (int i = Group.IdxX; i < c; i += 4 * g)
        {
            // padding with −∞ adds exp(−∞ − m) = 0 (m ≥ float.MinValue is finite)
            float a0 = x[off + i];
            float a1 = i + g < c ? x[off + i + g] : float.NegativeInfinity;
            float a2 = i + 2 * g < c ? x[off + i + 2 * g] : float.NegativeInfinity;
            float a3 = i + 3 * g < c ? x[off + i + 3 * g] : float.NegativeInfinity;
            float m01 = a0 > a1 ? a0 : a1, m23 = a2 > a3 ? a2 : a3;
            float mx = m01 > m23 ? m01 : m23;
            if (mx > m) { s *= MathF.Exp(m - mx); m = mx; }
            s += (MathF.Exp(a0 - m) + MathF.Exp(a1 - m)) + (MathF.Exp(a2 - m) + MathF.Exp(a3 - m));
        }
        MaxSum v; v.M = m; v.S = (float)s;
        return GroupMaxSum(v, red);
    }

    // ================================================================== layer norm

    /// <summary>flags: 1 = weight present, 2 = bias present.</summary>
    internal static void LayerNormForwardKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int d, float eps, int flags)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        float inv = 1f / d;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * d;
            float shift = x[off];
            double s = 0, ss = 0;
            for (int i = Group.IdxX; i < d; i += Group.DimX)
            {
                float t = x[off + i] - shift;
                s += t; ss += t * t;
            }
            var tot = BlockReduce.Sum2((float)s, (float)ss, red);
            float ms = tot.A * inv;
            float var = tot.B * inv - ms * ms;
            if (var < 0f) var = 0f;
            float m = shift + ms, rs = 1f / MathF.Sqrt(var + eps);
            WriteLayerNormRow(x, w, b, y, mean, rstd, r, off, d, m, rs, flags);
        }
    }

    internal static void LayerNormForwardX4Kernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int d, float eps, int flags)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        float inv = 1f / d;
        int g = Group.DimX;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * d;
            float shift = x[off];
            double s = 0, ss = 0;
            for (int i = Group.IdxX; i < d; i += 4 * g)
            {
                // padding with the shift contributes exactly zero
                float t0 = x[off + i] - shift;
                float t1 = (i + g < d ? x[off + i + g] : shift) - shift;
                float t2 = (i + 2 * g < d ? x[off + i + 2 * g] : shift) - shift;
                float t3 = (i + 3 * g < d ? x[off + i + 3 * g] : shift) - shift;
                s += (t0 + t1) + (t2 + t3);
                ss += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3);
            }
            var tot = BlockReduce.Sum2((float)s, (float)ss, red);
            float ms = tot.A * inv;
            float var = tot.B * inv - ms * ms;
            if (var < 0f) var = 0f;
            float m = shift + ms, rs = 1f / MathF.Sqrt(var + eps);
            if (Group.IdxX == 0) { mean[r] = m; rstd[r] = rs; }
            for (int i = Group.IdxX; i < d; i += 4 * g)
            {
                int i1 = i + g, i2 = i + 2 * g, i3 = i + 3 * g;
                float v0 = x[off + i];
                float v1 = i1 < d ? x[off + i1] : 0f, v2 = i2 < d ? x[off + i2] : 0f, v3 = i3 < d ? x[off + i3] : 0f;
                y[off + i] = Affine(v0, m, rs, w, b, i, flags);
                if (i1 < d) y[off + i1] = Affine(v1, m, rs, w, b, i1, flags);
                if (i2 < d) y[off + i2] = Affine(v2, m, rs, w, b, i2, flags);
                if (i3 < d) y[off + i3] = Affine(v3, m, rs, w, b, i3, flags);
            }
        }
    }

    private static float Affine(float v, float m, float rs, ArrayView<float> w, ArrayView<float> b, int i, int flags)
    {
        v = (v - m) * rs;
        if ((flags & 1) != 0) v *= w[i];
        if ((flags & 2) != 0) v += b[i];
        return v;
    }

    internal static void LayerNormForwardTwoPassKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int d, float eps, int flags)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        float inv = 1f / d;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * d;
            double s = 0;
            for (int i = Group.IdxX; i < d; i += Group.DimX) s += x[off + i];
            float m = BlockReduce.Sum((float)s, red) * inv;
            double ss = 0;
            for (int i = Group.IdxX; i < d; i += Group.DimX) { float t = x[off + i] - m; ss += t * t; }
            float rs = 1f / MathF.Sqrt(BlockReduce.Sum((float)ss, red) * inv + eps);
            WriteLayerNormRow(x, w, b, y, mean, rstd, r, off, d, m, rs, flags);
        }
    }

    private static void WriteLayerNormRow(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int r, long off, int d, float m, float rs, int flags)
    {
        if (Group.IdxX == 0) { mean[r] = m; rstd[r] = rs; }
        for (int i = Group.IdxX; i < d; i += Group.DimX)
        {
            float v = (x[off + i] - m) * rs;
            if ((flags & 1) != 0) v *= w[i];
            if ((flags & 2) != 0) v += b[i];
            y[off + i] = v;
        }
    }

    /// <summary>
    /// Per-(row block, column) partial sums for gw and gb: part[rb·d + c] = Σ gy·x̂, part[(nb + rb)·d + c] = Σ gy
    /// over rows [rb·64, rb·64+64). Fixed order: the result does not depend on the launch shape.
    /// </summary>
    internal static void LayerNormParamPartialKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> part, int rows, int d, int nb)
    {
        long items = (long)nb * d;
        for (long it = Grid.GlobalIndex.X; it < items; it += (long)Grid.DimX * Group.DimX)
        {
            int rb = (int)(it / d), c = (int)(it - (long)rb * d);
            int r0 = rb * ParamRowsPerBlock, r1 = r0 + ParamRowsPerBlock < rows ? r0 + ParamRowsPerBlock : rows;
            float aw = 0f, ab = 0f;
            int r = r0;
            // Four rows per trip with all 16 loads issued first (a thread's rows are a dependent chain of additions); the
            // same rows in the same order as one per trip, so the partials are bit for bit those of the plain loop.
            for (; r + 3 < r1; r += 4)
            {
                long o0 = (long)r * d + c, o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
                float g0 = gy[o0], g1 = gy[o1], g2 = gy[o2], g3 = gy[o3];
                float x0 = x[o0], x1 = x[o1], x2 = x[o2], x3 = x[o3];
                float m0 = mean[r], m1 = mean[r + 1], m2 = mean[r + 2], m3 = mean[r + 3];
                float s0 = rstd[r], s1 = rstd[r + 1], s2 = rstd[r + 2], s3 = rstd[r + 3];
                ab += g0; aw += g0 * ((x0 - m0) * s0);
                ab += g1; aw += g1 * ((x1 - m1) * s1);
                ab += g2; aw += g2 * ((x2 - m2) * s2);
                ab += g3; aw += g3 * ((x3 - m3) * s3);
            }
            for (; r < r1; r++)
            {
                long o = (long)r * d + c;
                float g = gy[o];
                ab += g;
                aw += g * ((x[o] - mean[r]) * rstd[r]);
            }
            part[it] = aw;
            part[items + it] = ab;
        }
    }

    /// <summary>gw[c] = Σ_rb part[rb·d + c], gb[c] likewise (flags: 1 = write gw, 2 = write gb).</summary>
    internal static void LayerNormParamReduceKernel(ArrayView<float> part, ArrayView<float> gw, ArrayView<float> gb, int d, int nb, int flags)
    {
        long items = (long)nb * d;
        for (int c = Grid.GlobalIndex.X; c < d; c += Grid.DimX * Group.DimX)
        {
            float aw = 0f, ab = 0f;
            int rb = 0;
            for (; rb + 3 < nb; rb += 4)   // eight loads in flight, then the same additions in the same order
            {
                long o = (long)rb * d + c;
                float w0 = part[o], w1 = part[o + d], w2 = part[o + 2L * d], w3 = part[o + 3L * d];
                float b0 = part[items + o], b1 = part[items + o + d], b2 = part[items + o + 2L * d], b3 = part[items + o + 3L * d];
                aw += w0; aw += w1; aw += w2; aw += w3;
                ab += b0; ab += b1; ab += b2; ab += b3;
            }
            for (; rb < nb; rb++) { aw += part[(long)rb * d + c]; ab += part[items + (long)rb * d + c]; }
            if ((flags & 1) != 0) gw[c] = aw;
            if ((flags & 2) != 0) gb[c] = ab;
        }
    }

    // ================================================================== dropout + residual add + layer norm

    /// <summary>Element i of Dropout(v): v·Scale when kept, else 0 (v itself when dropout is off).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Drop(float v, long i, DropScalars dp)
    {
        if (dp.On == 0) return v;
        return (Philox.Word(dp.Seed, dp.Offset, i) >> 8) >= dp.Thr ? v * dp.Scale : 0f;
    }

    /// <summary>Longest row whose dropout mask the fused kernels stage in shared memory (longer rows draw per element).</summary>
    public const int MaskRow = 4096;

    /// <summary>
    /// The dropout keep flags of row elements [off, off + d) into <paramref name="keep"/> (d ≤ <see cref="MaskRow"/>): the
    /// group draws each Philox block of the row once (one block per thread, four words) instead of once per element, then
    /// waits at a barrier. The flags are exactly <see cref="Drop"/>'s, so what uses them is unchanged bit for bit.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageMask(ArrayView<byte> keep, long off, int d, DropScalars dp)
    {
        long b0 = off >> 2, b1 = (off + d - 1) >> 2;
        for (long blk = b0 + Group.IdxX; blk <= b1; blk += Group.DimX)
        {
            Philox.Block(dp.Seed, dp.Offset + (ulong)blk, out uint w0, out uint w1, out uint w2, out uint w3);
            long e = (blk << 2) - off;
            if (e >= 0) keep[(int)e] = (w0 >> 8) >= dp.Thr ? (byte)1 : (byte)0;
            if (e + 1 >= 0 && e + 1 < d) keep[(int)e + 1] = (w1 >> 8) >= dp.Thr ? (byte)1 : (byte)0;
            if (e + 2 >= 0 && e + 2 < d) keep[(int)e + 2] = (w2 >> 8) >= dp.Thr ? (byte)1 : (byte)0;
            if (e + 3 < d) keep[(int)e + 3] = (w3 >> 8) >= dp.Thr ? (byte)1 : (byte)0;
        }
        Group.Barrier();
    }

    /// <summary><see cref="Drop"/> of element i of the row: from the staged flags when <paramref name="staged"/>, else drawn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DropRow(float v, ArrayView<byte> keep, int i, long off, bool staged, DropScalars dp)
    {
        if (dp.On == 0) return v;
        if (!staged) return Drop(v, off + i, dp);
        return keep[i] != 0 ? v * dp.Scale : 0f;
    }

    /// <summary>
    /// <see cref="LayerNormForwardKernel"/> on s = Dropout(h) + residual, which it computes in its statistics pass and
    /// writes to <paramref name="sOut"/> (the backward's input); the same per-thread order and reductions, so s, y, mean and
    /// rstd are bit for bit those of the dropout kernel, the add kernel and the layer-norm kernel.
    /// </summary>
    internal static void DropoutAddLayerNormForwardKernel(ArrayView<float> h, ArrayView<float> res, ArrayView<float> w, ArrayView<float> b,
        ArrayView<float> sOut, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int rows, int d, float eps, int flags, DropScalars dp)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        var keep = SharedMemory.Allocate<byte>(MaskRow);
        bool staged = dp.On != 0 && d <= MaskRow;
        float inv = 1f / d;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * d;
            if (staged) StageMask(keep, off, d, dp);
            float shift = DropRow(h[off], keep, 0, off, staged, dp) + res[off];
            double s = 0, ss = 0;
            for (int i = Group.IdxX; i < d; i += Group.DimX)
            {
                float v = DropRow(h[off + i], keep, i, off, staged, dp) + res[off + i];
                sOut[off + i] = v;
                float t = v - shift;
                s += t; ss += t * t;
            }
            var tot = BlockReduce.Sum2((float)s, (float)ss, red);
            float ms = tot.A * inv;
            float var = tot.B * inv - ms * ms;
            if (var < 0f) var = 0f;
            float m = shift + ms, rs = 1f / MathF.Sqrt(var + eps);
            // each thread reads back only the elements it wrote above
            WriteLayerNormRow(sOut, w, b, y, mean, rstd, r, off, d, m, rs, flags);
            if (staged) Group.Barrier();   // every thread is done with this row's flags before the next row's are staged
        }
    }

    /// <summary>
    /// Layer norm backward, gx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = gy·w (flags bit 1: weight present), that also
    /// writes gh = Dropout backward of gx (flags bit 2: gh wanted): gx·Scale where kept, else 0. The plain layer norm's
    /// backward is this kernel without bit 2.
    /// </summary>
    internal static void DropoutAddLayerNormBackwardKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> w, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> gx, ArrayView<float> gh, int rows, int d, int flags, DropScalars dp)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        var keep = SharedMemory.Allocate<byte>(MaskRow);
        bool staged = (flags & 2) != 0 && dp.On != 0 && d <= MaskRow;
        float inv = 1f / d;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * d;
            if (staged) StageMask(keep, off, d, dp);
            float m = mean[r], rs = rstd[r];
            double a = 0, bsum = 0;
            for (int i = Group.IdxX; i < d; i += Group.DimX)
            {
                float g = gy[off + i];
                if ((flags & 1) != 0) g *= w[i];
                a += g; bsum += g * ((x[off + i] - m) * rs);
            }
            var tot = BlockReduce.Sum2((float)a, (float)bsum, red);
            float sg = tot.A * inv, sgx = tot.B * inv;
            for (int i = Group.IdxX; i < d; i += Group.DimX)
            {
                float g = gy[off + i];
                if ((flags & 1) != 0) g *= w[i];
                float xh = (x[off + i] - m) * rs;
                float gxi = (xh * -sgx + g - sg) * rs;
                gx[off + i] = gxi;
                if ((flags & 2) != 0) gh[off + i] = DropRow(gxi, keep, i, off, staged, dp);
            }
            if (staged) Group.Barrier();   // every thread is done with this row's flags before the next row's are staged
        }
    }

    // ================================================================== softmax

    /// <summary>Online softmax / log-softmax (log ≠ 0) over rows of width c.</summary>
    internal static void SoftmaxForwardKernel(ArrayView<float> x, ArrayView<float> y, int rows, int c, int log)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            var st = RowMaxSum(x, off, c, red);
            WriteSoftmaxRow(x, y, off, c, st.M, st.S, log);
        }
    }

    internal static void SoftmaxForwardX4Kernel(ArrayView<float> x, ArrayView<float> y, int rows, int c, int log)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int g = Group.DimX;
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            var st = RowMaxSumX4(x, off, c, red);
            float lse = st.M + MathF.Log(st.S), inv = 1f / st.S;
            for (int i = Group.IdxX; i < c; i += 4 * g)
            {
                int i1 = i + g, i2 = i + 2 * g, i3 = i + 3 * g;
                float v0 = x[off + i];
                float v1 = i1 < c ? x[off + i1] : 0f, v2 = i2 < c ? x[off + i2] : 0f, v3 = i3 < c ? x[off + i3] : 0f;
                if (log != 0)
                {
                    y[off + i] = v0 - lse;
                    if (i1 < c) y[off + i1] = v1 - lse;
                    if (i2 < c) y[off + i2] = v2 - lse;
                    if (i3 < c) y[off + i3] = v3 - lse;
                }
                else
                {
                    y[off + i] = MathF.Exp(v0 - st.M) * inv;
                    if (i1 < c) y[off + i1] = MathF.Exp(v1 - st.M) * inv;
                    if (i2 < c) y[off + i2] = MathF.Exp(v2 - st.M) * inv;
                    if (i3 < c) y[off + i3] = MathF.Exp(v3 - st.M) * inv;
                }
            }
        }
    }

    internal static void SoftmaxForwardTwoPassKernel(ArrayView<float> x, ArrayView<float> y, int rows, int c, int log)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            float m = float.MinValue;
            for (int i = Group.IdxX; i < c; i += Group.DimX) { float v = x[off + i]; m = v > m ? v : m; }
            m = BlockReduce.Max(m, red);
            double ps = 0;
            for (int i = Group.IdxX; i < c; i += Group.DimX) ps += MathF.Exp(x[off + i] - m);
            float s = BlockReduce.Sum((float)ps, red);
            WriteSoftmaxRow(x, y, off, c, m, s, log);
        }
    }

    private static void WriteSoftmaxRow(ArrayView<float> x, ArrayView<float> y, long off, int c, float m, float s, int log)
    {
        if (log != 0)
        {
            float lse = m + MathF.Log(s);
            for (int i = Group.IdxX; i < c; i += Group.DimX) y[off + i] = x[off + i] - lse;
        }
        else
        {
            float inv = 1f / s;
            for (int i = Group.IdxX; i < c; i += Group.DimX) y[off + i] = MathF.Exp(x[off + i] - m) * inv;
        }
    }

    /// <summary>softmax: gx = y·(gy − Σgy·y); log-softmax: gx = gy − exp(y)·Σgy.</summary>
    internal static void SoftmaxBackwardKernel(ArrayView<float> y, ArrayView<float> gy, ArrayView<float> gx, int rows, int c, int log)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            double ps = 0;
            float s;
            if (log != 0)
            {
                for (int i = Group.IdxX; i < c; i += Group.DimX) ps += gy[off + i];
                s = BlockReduce.Sum((float)ps, red);
                for (int i = Group.IdxX; i < c; i += Group.DimX) gx[off + i] = MathF.Exp(y[off + i]) * -s + gy[off + i];
            }
            else
            {
                for (int i = Group.IdxX; i < c; i += Group.DimX) ps += y[off + i] * gy[off + i];
                s = BlockReduce.Sum((float)ps, red);
                for (int i = Group.IdxX; i < c; i += Group.DimX) gx[off + i] = (gy[off + i] - s) * y[off + i];
            }
        }
    }

    // ================================================================== cross-entropy

    /// <summary>Hard targets: lse[r] = log Σ exp(x); loss[r] = lse − x[t] (0 when t = ignoreIndex; NaN for an out-of-range t).</summary>
    internal static void CrossEntropyForwardHardKernel(ArrayView<float> x, ArrayView<long> target, ArrayView<float> loss, ArrayView<float> lse,
        int rows, int c, int ignoreIndex)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            var st = RowMaxSum(x, off, c, red);
            if (Group.IdxX == 0)
            {
                float e = st.M + MathF.Log(st.S);
                lse[r] = e;
                long t = target[r];
                loss[r] = t == ignoreIndex ? 0f : (t >= 0 && t < c ? e - x[off + t] : float.NaN);
            }
        }
    }

    /// <summary><see cref="CrossEntropyForwardHardKernel"/> with the 4-way unrolled log-sum-exp.</summary>
    internal static void CrossEntropyForwardHardX4Kernel(ArrayView<float> x, ArrayView<long> target, ArrayView<float> loss, ArrayView<float> lse,
        int rows, int c, int ignoreIndex)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            var st = RowMaxSumX4(x, off, c, red);
            if (Group.IdxX == 0)
            {
                float e = st.M + MathF.Log(st.S);
                lse[r] = e;
                long t = target[r];
                loss[r] = t == ignoreIndex ? 0f : (t >= 0 && t < c ? e - x[off + t] : float.NaN);
            }
        }
    }

    /// <summary>Soft targets: loss[r] = lse·Σt − Σt·x, in the same read of the row as the log-sum-exp.</summary>
    internal static void CrossEntropyForwardSoftKernel(ArrayView<float> x, ArrayView<float> target, ArrayView<float> loss, ArrayView<float> lse,
        int rows, int c)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            float m = float.MinValue;
            double s = 0, st = 0, stx = 0;
            for (int i = Group.IdxX; i < c; i += Group.DimX)
            {
                float xi = x[off + i], ti = target[off + i];
                st += ti; stx += ti * xi;
                if (xi > m) { s = s * MathF.Exp(m - xi) + 1.0; m = xi; }
                else s += MathF.Exp(xi - m);
            }
            MaxSum v; v.M = m; v.S = (float)s;
            v = GroupMaxSum(v, red);
            var tt = BlockReduce.Sum2((float)st, (float)stx, red);
            if (Group.IdxX == 0)
            {
                float e = v.M + MathF.Log(v.S);
                lse[r] = e;
                loss[r] = c == 0 ? 0f : e * tt.A - tt.B;
            }
        }
    }

    /// <summary>gx = g·(softmax − onehot(t)); rows with t = ignoreIndex get zeros.</summary>
    internal static void CrossEntropyBackwardHardKernel(ArrayView<float> x, ArrayView<long> target, ArrayView<float> lse, ArrayView<float> gLoss,
        ArrayView<float> gx, int rows, int c, int ignoreIndex)
    {
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            long t = target[r];
            if (t == ignoreIndex)
            {
                for (int i = Group.IdxX; i < c; i += Group.DimX) gx[off + i] = 0f;
                continue;
            }
            float g = gLoss[r], e = lse[r];
            for (int i = Group.IdxX; i < c; i += Group.DimX)
            {
                float v = MathF.Exp(x[off + i] - e) * g;
                if (i == t) v -= g;
                gx[off + i] = v;
            }
        }
    }

    /// <summary>gx = g·(softmax·Σt − t).</summary>
    internal static void CrossEntropyBackwardSoftKernel(ArrayView<float> x, ArrayView<float> target, ArrayView<float> lse, ArrayView<float> gLoss,
        ArrayView<float> gx, int rows, int c)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        for (int r = Grid.IdxX; r < rows; r += Grid.DimX)
        {
            long off = (long)r * c;
            double pst = 0;
            for (int i = Group.IdxX; i < c; i += Group.DimX) pst += target[off + i];
            float st = BlockReduce.Sum((float)pst, red);
            float g = gLoss[r], e = lse[r];
            for (int i = Group.IdxX; i < c; i += Group.DimX)
                gx[off + i] = (MathF.Exp(x[off + i] - e) * st - target[off + i]) * g;
        }
    }

    // ================================================================== AdamW

    /// <summary>One AdamW step over a flat buffer, the CPU backend's operations in the same order.</summary>
    internal static void AdamWKernel(ArrayView<float> p, ArrayView<float> grad, ArrayView<float> expAvg, ArrayView<float> expAvgSq, int n, AdamWScalars h)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX)
        {
            float g = grad[i];
            float m = expAvg[i] * h.Beta1 + g * h.OneMinusBeta1;
            float v = expAvgSq[i] * h.Beta2 + g * g * h.OneMinusBeta2;
            expAvg[i] = m; expAvgSq[i] = v;
            float denom = MathF.Sqrt(v) + h.Eps;
            float w = p[i] + h.NegStep * (m / denom);
            if (h.Decay != 0) w += w * h.NegDecay;
            p[i] = w;
        }
    }

    // ================================================================== launchers

    /// <summary>The typed delegates of one accelerator, each loaded (compiled) on first use and then kept alive.</summary>
    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>? LnFwd, LnFwd2, LnFwd4;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? LnPart;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? LnReduce;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int, DropScalars>? DalnFwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, DropScalars>? DalnBwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? SmFwd, SmFwd2, SmFwd4;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? SmBwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, int, int, int>? CeFwdHard, CeFwdHard4;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? CeFwdSoft;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? CeBwdHard;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>? CeBwdSoft;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, AdamWScalars>? AdamW;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    /// <summary>A group size for rows of the given width: 256 threads up to 2047 wide, 512 up to 8191, else 1024; clamped to what the accelerator allows.</summary>
    public static int DefaultGroupSize(Accelerator acc, int width)
    {
        int want = width >= 8192 ? 1024 : width >= 2048 ? 512 : 256;
        return BlockReduce.ClampGroup(acc, want);
    }

    private static int CheckGroup(Accelerator acc, string op, int groupSize, int width)
        => BlockReduce.CheckGroup(acc, op, groupSize == 0 ? DefaultGroupSize(acc, width) : groupSize);

    private static void Need<T>(string op, string name, ArrayView<T> v, long n, int rows, int width) where T : unmanaged
    {
        if (v.Length < n) throw new ArgumentException($"{op}: {name} has {v.Length} elements, needs {n} for [{rows}, {width}]");
    }

    private static KernelConfig RowConfig(int rows, int gs) => new(Math.Min(rows, 1 << 20), gs);

    private static KernelConfig FlatConfig(Accelerator acc, long n, int gs)
    {
        long groups = (n + gs - 1) / gs;
        int cap = Math.Max(1, acc.NumMultiprocessors * 8);
        return new KernelConfig((int)Math.Clamp(groups, 1, cap), gs);
    }

    private static int RowCheck(string op, int rows, int width)
    {
        if (rows < 0 || width < 0) throw new ArgumentException($"{op}: negative shape [{rows}, {width}]");
        return rows;
    }

    /// <summary>Layer norm over rows of width d: y, mean [rows], rstd [rows]. weight/bias null when absent.</summary>
    public static void LayerNormForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float>? weight, ArrayView<float>? bias,
        float eps, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int rows, int d,
        LayerNormVariant variant = LayerNormVariant.ShiftedOnePass, int groupSize = 0)
    {
        const string op = "layer_norm (cuda)";
        if (RowCheck(op, rows, d) == 0) return;
        if (d == 0) throw new ArgumentException($"{op}: rows of width 0 ([{rows}, 0]) have no mean");
        long n = (long)rows * d;
        Need(op, "x", x, n, rows, d); Need(op, "y", y, n, rows, d);
        Need(op, "mean", mean, rows, rows, d); Need(op, "rstd", rstd, rows, rows, d);
        if (weight is { } wv) Need(op, "weight", wv, d, rows, d);
        if (bias is { } bv) Need(op, "bias", bv, d, rows, d);
        int gs = CheckGroup(acc, op, groupSize, d);
        var l = For(acc);
        var k = variant switch
        {
            LayerNormVariant.TwoPass => l.LnFwd2 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>(LayerNormForwardTwoPassKernel),
            LayerNormVariant.ShiftedOnePassX4 => l.LnFwd4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>(LayerNormForwardX4Kernel),
            _ => l.LnFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>(LayerNormForwardKernel),
        };
        int flags = (weight is null ? 0 : 1) | (bias is null ? 0 : 2);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, RowConfig(rows, gs), x, weight ?? x, bias ?? x, y, mean, rstd, rows, d, eps, flags);
    }

    /// <summary>Floats of workspace <see cref="LayerNormBackward"/> needs when gw or gb is wanted.</summary>
    public static long LayerNormBackwardWorkspace(int rows, int d) => 2L * ((rows + ParamRowsPerBlock - 1) / ParamRowsPerBlock) * d;

    /// <summary>
    /// gx, and optionally gw/gb (deterministic: per-64-row partials into <paramref name="workspace"/>, then a fixed-order
    /// reduce). workspace needs <see cref="LayerNormBackwardWorkspace"/> floats when gw or gb is given.
    /// </summary>
    public static void LayerNormBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> gy, ArrayView<float>? weight,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> gx, ArrayView<float>? gw, ArrayView<float>? gb, ArrayView<float> workspace,
        int rows, int d, int groupSize = 0)
    {
        const string op = "layer_norm backward (cuda)";
        RowCheck(op, rows, d);
        long n = (long)rows * d;
        Need(op, "x", x, n, rows, d); Need(op, "gy", gy, n, rows, d); Need(op, "gx", gx, n, rows, d);
        Need(op, "mean", mean, rows, rows, d); Need(op, "rstd", rstd, rows, rows, d);
        if (weight is { } wv) Need(op, "weight", wv, d, rows, d);
        if (gw is { } gwv) Need(op, "gw", gwv, d, rows, d);
        if (gb is { } gbv) Need(op, "gb", gbv, d, rows, d);
        var s = stream ?? acc.DefaultStream;
        var l = For(acc);
        if (rows > 0 && d > 0)
        {
            int gs = CheckGroup(acc, op, groupSize, d);
            var k = l.DalnBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, DropScalars>(DropoutAddLayerNormBackwardKernel);
            CudaRuntime.CountLaunch();
            k(s, RowConfig(rows, gs), x, gy, weight ?? x, mean, rstd, gx, gx, rows, d, weight is null ? 0 : 1, default);
        }
        LayerNormParamGrads(acc, s, op, x, gy, mean, rstd, gw, gb, workspace, rows, d);
    }

    /// <summary>gw/gb of the layer norm (deterministic per-64-row partials, then a fixed-order reduce); nothing when both are null.</summary>
    private static void LayerNormParamGrads(Accelerator acc, AcceleratorStream s, string op, ArrayView<float> x, ArrayView<float> gy,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float>? gw, ArrayView<float>? gb, ArrayView<float> workspace, int rows, int d)
    {
        var l = For(acc);
        if ((gw is null && gb is null) || d == 0) return;
        int nb = (rows + ParamRowsPerBlock - 1) / ParamRowsPerBlock;
        int flat = BlockReduce.ClampGroup(acc, 256);
        int flags = (gw is null ? 0 : 1) | (gb is null ? 0 : 2);
        if (nb > 0)
        {
            Need(op, "workspace", workspace, LayerNormBackwardWorkspace(rows, d), rows, d);
            var kp = l.LnPart ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(LayerNormParamPartialKernel);
            CudaRuntime.CountLaunch();
            kp(s, FlatConfig(acc, (long)nb * d, flat), x, gy, mean, rstd, workspace, rows, d, nb);
        }
        var part = nb > 0 ? workspace : (gw ?? gb!.Value);   // nb = 0: the reduce writes zeros and never reads part
        var kr = l.LnReduce ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(LayerNormParamReduceKernel);
        CudaRuntime.CountLaunch();
        kr(s, FlatConfig(acc, d, flat), part, gw ?? gb!.Value, gb ?? gw!.Value, d, nb, flags);
    }

    /// <summary>
    /// Fused s ← Dropout(h) + residual, y ← LayerNorm(s) over rows of width d (one launch): bitwise
    /// <see cref="DropoutKernels.Dropout"/>, an add and <see cref="LayerNormForward"/> (default variant, same group size).
    /// p = 0 draws nothing and keeps h unscaled.
    /// </summary>
    public static void DropoutAddLayerNormForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> h, ArrayView<float> residual,
        double p, ulong seed, ulong offset, ArrayView<float>? weight, ArrayView<float>? bias, float eps,
        ArrayView<float> s, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int rows, int d, int groupSize = 0)
    {
        const string op = "dropout_add_layer_norm (cuda)";
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1]");
        if (RowCheck(op, rows, d) == 0) return;
        if (d == 0) throw new ArgumentException($"{op}: rows of width 0 ([{rows}, 0]) have no mean");
        long n = (long)rows * d;
        Need(op, "h", h, n, rows, d); Need(op, "residual", residual, n, rows, d);
        Need(op, "s", s, n, rows, d); Need(op, "y", y, n, rows, d);
        Need(op, "mean", mean, rows, rows, d); Need(op, "rstd", rstd, rows, rows, d);
        if (weight is { } wv) Need(op, "weight", wv, d, rows, d);
        if (bias is { } bv) Need(op, "bias", bv, d, rows, d);
        int gs = CheckGroup(acc, op, groupSize, d);
        var k = For(acc).DalnFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int, DropScalars>(DropoutAddLayerNormForwardKernel);
        int flags = (weight is null ? 0 : 1) | (bias is null ? 0 : 2);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, RowConfig(rows, gs), h, residual, weight ?? h, bias ?? h, s, y, mean, rstd, rows, d, eps, flags, DropScalars.From(p, seed, offset));
    }

    /// <summary>
    /// The backward of <see cref="DropoutAddLayerNormForward"/>: gs (the layer-norm input gradient) and, when given, gh = the
    /// dropout backward of gs in the same launch; gw/gb as in <see cref="LayerNormBackward"/> (same workspace).
    /// </summary>
    public static void DropoutAddLayerNormBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> s, ArrayView<float> gy, ArrayView<float>? weight,
        ArrayView<float> mean, ArrayView<float> rstd, double p, ulong seed, ulong offset, ArrayView<float> gs, ArrayView<float>? gh,
        ArrayView<float>? gw, ArrayView<float>? gb, ArrayView<float> workspace, int rows, int d, int groupSize = 0)
    {
        const string op = "dropout_add_layer_norm backward (cuda)";
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1]");
        RowCheck(op, rows, d);
        long n = (long)rows * d;
        Need(op, "s", s, n, rows, d); Need(op, "gy", gy, n, rows, d); Need(op, "gs", gs, n, rows, d);
        if (gh is { } ghv) Need(op, "gh", ghv, n, rows, d);
        Need(op, "mean", mean, rows, rows, d); Need(op, "rstd", rstd, rows, rows, d);
        if (weight is { } wv) Need(op, "weight", wv, d, rows, d);
        if (gw is { } gwv) Need(op, "gw", gwv, d, rows, d);
        if (gb is { } gbv) Need(op, "gb", gbv, d, rows, d);
        var st = stream ?? acc.DefaultStream;
        if (rows > 0 && d > 0)
        {
            int g = CheckGroup(acc, op, groupSize, d);
            var k = For(acc).DalnBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, DropScalars>(DropoutAddLayerNormBackwardKernel);
            int flags = (weight is null ? 0 : 1) | (gh is null ? 0 : 2);
            CudaRuntime.CountLaunch();
            k(st, RowConfig(rows, g), s, gy, weight ?? s, mean, rstd, gs, gh ?? gs, rows, d, flags, DropScalars.From(p, seed, offset));
        }
        LayerNormParamGrads(acc, st, op, s, gy, mean, rstd, gw, gb, workspace, rows, d);
    }

    /// <summary>Softmax (log = false) or log-softmax over rows of width c.</summary>
    public static void Softmax(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> y, int rows, int c, bool log,
        SoftmaxVariant variant = SoftmaxVariant.Online, int groupSize = 0)
    {
        string op = log ? "log_softmax (cuda)" : "softmax (cuda)";
        if (RowCheck(op, rows, c) == 0 || c == 0) return;
        long n = (long)rows * c;
        Need(op, "x", x, n, rows, c); Need(op, "y", y, n, rows, c);
        int gs = CheckGroup(acc, op, groupSize, c);
        var l = For(acc);
        var k = variant switch
        {
            SoftmaxVariant.TwoPass => l.SmFwd2 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(SoftmaxForwardTwoPassKernel),
            SoftmaxVariant.OnlineX4 => l.SmFwd4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(SoftmaxForwardX4Kernel),
            _ => l.SmFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(SoftmaxForwardKernel),
        };
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, RowConfig(rows, gs), x, y, rows, c, log ? 1 : 0);
    }

    /// <summary>gx from the forward output y and gy.</summary>
    public static void SoftmaxBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> y, ArrayView<float> gy, ArrayView<float> gx,
        int rows, int c, bool log, int groupSize = 0)
    {
        string op = log ? "log_softmax backward (cuda)" : "softmax backward (cuda)";
        if (RowCheck(op, rows, c) == 0 || c == 0) return;
        long n = (long)rows * c;
        Need(op, "y", y, n, rows, c); Need(op, "gy", gy, n, rows, c); Need(op, "gx", gx, n, rows, c);
        int gs = CheckGroup(acc, op, groupSize, c);
        var k = For(acc).SmBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(SoftmaxBackwardKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, RowConfig(rows, gs), y, gy, gx, rows, c, log ? 1 : 0);
    }

    /// <summary>
    /// Cross-entropy per row of logits [rows, c]: exactly one of <paramref name="target"/> (int64 [rows], range-checked by
    /// the caller) and <paramref name="softTarget"/> ([rows, c]). Writes loss [rows] and logSumExp [rows].
    /// </summary>
    public static void CrossEntropyForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> logits, ArrayView<long>? target,
        ArrayView<float>? softTarget, int ignoreIndex, ArrayView<float> loss, ArrayView<float> logSumExp, int rows, int c, int groupSize = 0,
        SoftmaxVariant variant = SoftmaxVariant.Online)
    {
        const string op = "cross_entropy (cuda)";
        if ((target is null) == (softTarget is null)) throw new ArgumentException($"{op}: pass exactly one of target and softTarget");
        if (variant == SoftmaxVariant.TwoPass) throw new ArgumentException($"{op}: variant {variant} is not implemented (Online or OnlineX4)");
        if (RowCheck(op, rows, c) == 0) return;
        long n = (long)rows * c;
        Need(op, "logits", logits, n, rows, c); Need(op, "loss", loss, rows, rows, c); Need(op, "logSumExp", logSumExp, rows, rows, c);
        int gs = CheckGroup(acc, op, groupSize, c);
        var l = For(acc);
        var s = stream ?? acc.DefaultStream;
        if (target is { } t)
        {
            Need(op, "target", t, rows, rows, c);
            var k = variant == SoftmaxVariant.OnlineX4
                ? l.CeFwdHard4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, int, int, int>(CrossEntropyForwardHardX4Kernel)
                : l.CeFwdHard ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, int, int, int>(CrossEntropyForwardHardKernel);
            CudaRuntime.CountLaunch();
            k(s, RowConfig(rows, gs), logits, t, loss, logSumExp, rows, c, ignoreIndex);
        }
        else
        {
            var st = softTarget!.Value;
            Need(op, "softTarget", st, n, rows, c);
            var k = l.CeFwdSoft ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(CrossEntropyForwardSoftKernel);
            CudaRuntime.CountLaunch();
            k(s, RowConfig(rows, gs), logits, st, loss, logSumExp, rows, c);
        }
    }

    /// <summary>gLogits [rows, c] ← ∂(Σ gLoss·loss)/∂logits, from the forward's logSumExp.</summary>
    public static void CrossEntropyBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> logits, ArrayView<long>? target,
        ArrayView<float>? softTarget, int ignoreIndex, ArrayView<float> logSumExp, ArrayView<float> gLoss, ArrayView<float> gLogits,
        int rows, int c, int groupSize = 0)
    {
        const string op = "cross_entropy backward (cuda)";
        if ((target is null) == (softTarget is null)) throw new ArgumentException($"{op}: pass exactly one of target and softTarget");
        if (RowCheck(op, rows, c) == 0 || c == 0) return;
        long n = (long)rows * c;
        Need(op, "logits", logits, n, rows, c); Need(op, "gLogits", gLogits, n, rows, c);
        Need(op, "logSumExp", logSumExp, rows, rows, c); Need(op, "gLoss", gLoss, rows, rows, c);
        int gs = CheckGroup(acc, op, groupSize, c);
        var l = For(acc);
        var s = stream ?? acc.DefaultStream;
        if (target is { } t)
        {
            Need(op, "target", t, rows, rows, c);
            var k = l.CeBwdHard ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(CrossEntropyBackwardHardKernel);
            CudaRuntime.CountLaunch();
            k(s, RowConfig(rows, gs), logits, t, logSumExp, gLoss, gLogits, rows, c, ignoreIndex);
        }
        else
        {
            var st = softTarget!.Value;
            Need(op, "softTarget", st, n, rows, c);
            var k = l.CeBwdSoft ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(CrossEntropyBackwardSoftKernel);
            CudaRuntime.CountLaunch();
            k(s, RowConfig(rows, gs), logits, st, logSumExp, gLoss, gLogits, rows, c);
        }
    }

    /// <summary>One fused AdamW step (transformers 3.x) over n elements of flat param/grad/state buffers.</summary>
    public static void AdamWStep(Accelerator acc, AcceleratorStream? stream, ArrayView<float> param, ArrayView<float> grad,
        ArrayView<float> expAvg, ArrayView<float> expAvgSq, int n, AdamWParams hp, int groupSize = 0)
    {
        const string op = "adamw (cuda)";
        if (hp.Step < 1) throw new ArgumentException($"{op}: step must be ≥ 1 (the step being taken), got {hp.Step}");
        if (n < 0) throw new ArgumentException($"{op}: negative length {n}");
        if (n == 0) return;
        foreach (var (v, name) in new[] { (param, "param"), (grad, "grad"), (expAvg, "exp_avg"), (expAvgSq, "exp_avg_sq") })
            if (v.Length < n) throw new ArgumentException($"{op}: {name} has {v.Length} elements, needs {n}");
        int gs = groupSize == 0 ? BlockReduce.ClampGroup(acc, 256) : CheckGroup(acc, op, groupSize, n);
        var k = For(acc).AdamW ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, AdamWScalars>(AdamWKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, n, gs), param, grad, expAvg, expAvgSq, n, AdamWScalars.From(hp));
    }
}
