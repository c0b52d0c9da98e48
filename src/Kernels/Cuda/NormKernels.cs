using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>Shape and scalars of a batch-norm launch (x is [N, C, S], S = H·W, 1 for [N, C]).</summary>
public struct BnParams
{
    public int N, C, S, Flags;
    public float Momentum, Eps;
    /// <summary>Split launches only: slices per channel, and elements per slice (the last may be shorter).</summary>
    public int Split, Slice;
}

/// <summary>Shape and scalars of a group-norm launch (x is [N, C, S] in G groups of C/G channels).</summary>
public struct GnParams
{
    public int N, C, S, G, Flags;
    public float Eps;
}

/// <summary>
/// Batch norm and group norm on ILGPU (float32), forward and backward, with the semantics of <c>CpuBackend.Conv.cs</c>.
/// Batch norm runs one group per channel (grid-stride over channels) — or, for channels too few to fill the device and long
/// enough to share (<see cref="BatchNormSplit"/>), several groups per channel, each over a contiguous slice, whose double
/// partial sums go through a workspace into a second launch that finishes them in slice order — group norm one group per (n, group) for the
/// statistics and gx, and one group per channel for gw/gb. Statistics are one pass over the data (Σ(x−x₀), Σ(x−x₀)²
/// with x₀ the first element of the channel or group, so that an offset mean does not cancel), accumulated in double per
/// thread and reduced with warp shuffles (<see cref="Warp.WarpSize"/>) and one shared-memory step across warps. The
/// group size is a launch parameter (2 threads on the CPU accelerator, 128–1024 on a GPU). Kernels never throw: the
/// launchers validate sizes first. Reductions are in a fixed order per launch shape, so results are deterministic.
/// </summary>
internal static class NormKernels
{
    /// <summary>Most warps per group the cross-warp reduction supports.</summary>
    public const int MaxWarps = BlockReduce.MaxWarps;

    // Flags
    public const int FWeight = 1, FBias = 2, FRunningMean = 4, FRunningVar = 8, FTraining = 16, FGradW = 32, FGradB = 64;
    /// <summary>Batch norm's fused epilogue: add a residual (forward) / write its gradient (backward); relu (forward) /
    /// mask the upstream gradient by the forward output y &gt; 0 (backward).</summary>
    public const int FResidual = 128, FRelu = 256, FGradResidual = 512;
    /// <summary>Group norm forward's fused epilogue: y ← silu(norm) (the VQ-VAE's swish(Normalize(x))).</summary>
    public const int FSilu = 1024;

    // ================================================================== device helpers

    /// <summary>Position (outer, inner) = (m / S, m % S) of a thread's element m, advanced by the group stride without a division per element.</summary>
    private struct Cursor { public int Outer, Inner; }

    /// <summary>The cursor of element m for rows of length s (s ≥ 1).</summary>
    private static Cursor Start(int m, int s)
    {
        Cursor c; c.Outer = m / s; c.Inner = m - c.Outer * s;
        return c;
    }

    /// <summary>The cursor <paramref name="step"/> elements further: one division only when the step wraps a row.</summary>
    private static Cursor Advance(Cursor c, int step, int s)
    {
        c.Inner += step;
        if (c.Inner >= s) { int q = c.Inner / s; c.Outer += q; c.Inner -= q * s; }
        return c;
    }

    // ================================================================== batch norm

    /// <summary>Two double sums (a thread's or a group's).</summary>
    internal struct Sums { public double A, B; }

    /// <summary>A thread's Σ(x − shift), Σ(x − shift)² over elements [lo, hi) of the channel at <paramref name="cOff"/>, the group
    /// striding through them. Four elements per trip, loaded before any is used: four loads in flight per thread instead of one
    /// (few groups per channel cannot hide memory latency with more threads). Same elements per thread and the same summation
    /// order as one per trip. With <paramref name="wide"/> (the split kernels) every step is in double, x − shift and its square
    /// too: a float x − shift rounds by the same offset for every x of a binade, a bias that does not average out over 10⁵–10⁶
    /// values. Callers pass <paramref name="wide"/> as a constant.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Sums StatSums(ArrayView<float> x, long cOff, long cs, int sLen, int lo, int hi, float shift, bool wide)
    {
        int step = Group.DimX;
        double s = 0, ss = 0;
        var cur = Start(lo + Group.IdxX, sLen);
        long m = lo + Group.IdxX;
        for (; m + 3L * step < hi; m += 4L * step)
        {
            var c1 = Advance(cur, step, sLen); var c2 = Advance(c1, step, sLen); var c3 = Advance(c2, step, sLen);
            float x0 = x[cur.Outer * cs + cOff + cur.Inner], x1 = x[c1.Outer * cs + cOff + c1.Inner];
            float x2 = x[c2.Outer * cs + cOff + c2.Inner], x3 = x[c3.Outer * cs + cOff + c3.Inner];
            double t0 = Term(x0, shift, wide); s += t0; ss += Square(t0, wide);
            double t1 = Term(x1, shift, wide); s += t1; ss += Square(t1, wide);
            double t2 = Term(x2, shift, wide); s += t2; ss += Square(t2, wide);
            double t3 = Term(x3, shift, wide); s += t3; ss += Square(t3, wide);
            cur = Advance(c3, step, sLen);
        }
        for (; m < hi; m += step, cur = Advance(cur, step, sLen))
        {
            double t = Term(x[cur.Outer * cs + cOff + cur.Inner], shift, wide);
            s += t; ss += Square(t, wide);
        }
        Sums r; r.A = s; r.B = ss;
        return r;
    }

    /// <summary>g·(x − mean), in float (both roundings) or in double.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double GradTerm(float g, float x, float mean, bool wide) => wide ? g * ((double)x - mean) : (float)(g * (float)(x - mean));

    /// <summary>v − shift, rounded to float (then widened exactly) or in double.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double Term(float v, float shift, bool wide) => wide ? (double)v - shift : (float)(v - shift);

    /// <summary>t², as a float product (t came from a float, so the narrowing is exact) or in double.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double Square(double t, bool wide) => wide ? t * t : (float)((float)t * (float)t);

    /// <summary>y ← relu?((x − mean)·scale + bias [+ res]) over elements [lo, hi) of the channel, four loads in flight per thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Normalize(ArrayView<float> x, ArrayView<float> y, ArrayView<float> res, long cOff, long cs, int sLen, int lo, int hi,
        float mean, float scale, float bias, bool addRes, bool relu)
    {
        int step = Group.DimX;
        var cw = Start(lo + Group.IdxX, sLen);
        long mw = lo + Group.IdxX;
        for (; mw + 3L * step < hi; mw += 4L * step)
        {
            var c1 = Advance(cw, step, sLen); var c2 = Advance(c1, step, sLen); var c3 = Advance(c2, step, sLen);
            long o0 = cw.Outer * cs + cOff + cw.Inner, o1 = c1.Outer * cs + cOff + c1.Inner;
            long o2 = c2.Outer * cs + cOff + c2.Inner, o3 = c3.Outer * cs + cOff + c3.Inner;
            float x0 = x[o0], x1 = x[o1], x2 = x[o2], x3 = x[o3];
            float r0 = 0f, r1 = 0f, r2 = 0f, r3 = 0f;
            if (addRes) { r0 = res[o0]; r1 = res[o1]; r2 = res[o2]; r3 = res[o3]; }
            y[o0] = BnOut(x0, r0, mean, scale, bias, addRes, relu);
            y[o1] = BnOut(x1, r1, mean, scale, bias, addRes, relu);
            y[o2] = BnOut(x2, r2, mean, scale, bias, addRes, relu);
            y[o3] = BnOut(x3, r3, mean, scale, bias, addRes, relu);
            cw = Advance(c3, step, sLen);
        }
        for (; mw < hi; mw += step, cw = Advance(cw, step, sLen))
        {
            long o = cw.Outer * cs + cOff + cw.Inner;
            y[o] = BnOut(x[o], addRes ? res[o] : 0f, mean, scale, bias, addRes, relu);
        }
    }

    /// <summary>A thread's Σg, Σg·(x − mean) over elements [lo, hi) of the channel, g = gy masked by the fused forward's relu output
    /// (<paramref name="relu"/>), written to gRes when <paramref name="writeRes"/>; four loads in flight per thread. With
    /// <paramref name="wide"/> (the split kernels) g·(x − mean) is in double (see <see cref="StatSums"/>: a float x − mean is
    /// biased by the mean's offset within each binade, and Σg·(x − mean) = gw/inv cancels to a small sum).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Sums GradSums(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> yRelu, ArrayView<float> gRes, long cOff, long cs, int sLen,
        int lo, int hi, float mean, bool relu, bool writeRes, bool wide)
    {
        int step = Group.DimX;
        double sg = 0, sgc = 0;
        var cw = Start(lo + Group.IdxX, sLen);
        long m = lo + Group.IdxX;
        for (; m + 3L * step < hi; m += 4L * step)
        {
            var c1 = Advance(cw, step, sLen); var c2 = Advance(c1, step, sLen); var c3 = Advance(c2, step, sLen);
            long o0 = cw.Outer * cs + cOff + cw.Inner, o1 = c1.Outer * cs + cOff + c1.Inner;
            long o2 = c2.Outer * cs + cOff + c2.Inner, o3 = c3.Outer * cs + cOff + c3.Inner;
            float g0 = gy[o0], g1 = gy[o1], g2 = gy[o2], g3 = gy[o3];
            float x0 = x[o0], x1 = x[o1], x2 = x[o2], x3 = x[o3];
            if (relu) { g0 = Masked(g0, yRelu[o0]); g1 = Masked(g1, yRelu[o1]); g2 = Masked(g2, yRelu[o2]); g3 = Masked(g3, yRelu[o3]); }
            if (writeRes) { gRes[o0] = g0; gRes[o1] = g1; gRes[o2] = g2; gRes[o3] = g3; }
            sg += g0; sgc += GradTerm(g0, x0, mean, wide);
            sg += g1; sgc += GradTerm(g1, x1, mean, wide);
            sg += g2; sgc += GradTerm(g2, x2, mean, wide);
            sg += g3; sgc += GradTerm(g3, x3, mean, wide);
            cw = Advance(c3, step, sLen);
        }
        for (; m < hi; m += step, cw = Advance(cw, step, sLen))
        {
            long o = cw.Outer * cs + cOff + cw.Inner;
            float g = gy[o];
            if (relu && !(yRelu[o] > 0f)) g = 0f;   // relu's gradient, masked by the fused forward's output
            if (writeRes) gRes[o] = g;
            sg += g; sgc += GradTerm(g, x[o], mean, wide);
        }
        Sums r; r.A = sg; r.B = sgc;
        return r;
    }

    /// <summary>gx = k·(g − mg − (x − mean)·inv·mgx) over elements [lo, hi) of the channel; g re-read from gRes when
    /// <paramref name="reuse"/> (relu + residual gradient: <see cref="GradSums"/> left the masked gradient there), else gy (masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradInput(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> yRelu, ArrayView<float> gRes, ArrayView<float> gx,
        long cOff, long cs, int sLen, int lo, int hi, float mean, float inv, float k, float mg, float mgx, bool relu, bool reuse)
    {
        int step = Group.DimX;
        var cg2 = Start(lo + Group.IdxX, sLen);
        long m2 = lo + Group.IdxX;
        for (; m2 + 3L * step < hi; m2 += 4L * step)
        {
            var c1 = Advance(cg2, step, sLen); var c2 = Advance(c1, step, sLen); var c3 = Advance(c2, step, sLen);
            long o0 = cg2.Outer * cs + cOff + cg2.Inner, o1 = c1.Outer * cs + cOff + c1.Inner;
            long o2 = c2.Outer * cs + cOff + c2.Inner, o3 = c3.Outer * cs + cOff + c3.Inner;
            float g0, g1, g2, g3;
            if (reuse) { g0 = gRes[o0]; g1 = gRes[o1]; g2 = gRes[o2]; g3 = gRes[o3]; }
            else
            {
                g0 = gy[o0]; g1 = gy[o1]; g2 = gy[o2]; g3 = gy[o3];
                if (relu) { g0 = Masked(g0, yRelu[o0]); g1 = Masked(g1, yRelu[o1]); g2 = Masked(g2, yRelu[o2]); g3 = Masked(g3, yRelu[o3]); }
            }
            float x0 = x[o0], x1 = x[o1], x2 = x[o2], x3 = x[o3];
            gx[o0] = k * (g0 - mg - (x0 - mean) * inv * mgx);
            gx[o1] = k * (g1 - mg - (x1 - mean) * inv * mgx);
            gx[o2] = k * (g2 - mg - (x2 - mean) * inv * mgx);
            gx[o3] = k * (g3 - mg - (x3 - mean) * inv * mgx);
            cg2 = Advance(c3, step, sLen);
        }
        for (; m2 < hi; m2 += step, cg2 = Advance(cg2, step, sLen))
        {
            long o = cg2.Outer * cs + cOff + cg2.Inner;
            float g;
            if (reuse) g = gRes[o];
            else
            {
                g = gy[o];
                if (relu && !(yRelu[o] > 0f)) g = 0f;
            }
            gx[o] = k * (g - mg - (x[o] - mean) * inv * mgx);
        }
    }

    /// <summary>The <paramref name="split"/> partial pairs of channel c from the workspace, summed in slice order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Sums Finish(ArrayView<double> ws, int c, int split)
    {
        long o = 2L * c * split;
        double a = 0, b = 0;
        int g = 0;
        for (; g + 4 <= split; g += 4, o += 8)   // eight loads in flight, then the same additions in the same order
        {
            double a0 = ws[o], b0 = ws[o + 1], a1 = ws[o + 2], b1 = ws[o + 3], a2 = ws[o + 4], b2 = ws[o + 5], a3 = ws[o + 6], b3 = ws[o + 7];
            a += a0; b += b0; a += a1; b += b1; a += a2; b += b2; a += a3; b += b3;
        }
        for (; g < split; g++, o += 2) { a += ws[o]; b += ws[o + 1]; }
        Sums r; r.A = a; r.B = b;
        return r;
    }

    internal static void BatchNormForwardKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> rm,
        ArrayView<float> rv, ArrayView<float> y, ArrayView<float> saveMean, ArrayView<float> saveInvStd, ArrayView<float> res, BnParams p)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;   // S = 0 means no elements: the loops do not run, the cursor must not divide by 0
        for (int c = Grid.IdxX; c < p.C; c += Grid.DimX)
        {
            long cOff = (long)c * p.S;
            float mean, inv;
            if ((p.Flags & FTraining) != 0)
            {
                float shift = mCount > 0 ? x[cOff] : 0f;
                var own = StatSums(x, cOff, cs, sLen, 0, mCount, shift, wide: false);
                var tot = BlockReduce.Sum2((float)own.A, (float)own.B, red);
                float ms = mCount > 0 ? tot.A / mCount : 0f;
                float var = mCount > 0 ? tot.B / mCount - ms * ms : 0f;
                if (var < 0f) var = 0f;
                mean = shift + ms;
                inv = 1f / MathF.Sqrt(var + p.Eps);
                if (Group.IdxX == 0 && mCount > 0)
                {
                    float keep = 1f - p.Momentum;
                    if ((p.Flags & FRunningMean) != 0) rm[c] = keep * rm[c] + p.Momentum * mean;
                    if ((p.Flags & FRunningVar) != 0)
                        rv[c] = keep * rv[c] + p.Momentum * (mCount > 1 ? var * mCount / (mCount - 1) : 0f);
                }
            }
            else
            {
                mean = rm[c];
                inv = 1f / MathF.Sqrt(rv[c] + p.Eps);
            }
            if (Group.IdxX == 0) { saveMean[c] = mean; saveInvStd[c] = inv; }
            float scale = (p.Flags & FWeight) != 0 ? inv * w[c] : inv;
            float bias = (p.Flags & FBias) != 0 ? b[c] : 0f;
            Normalize(x, y, res, cOff, cs, sLen, 0, mCount, mean, scale, bias, (p.Flags & FResidual) != 0, (p.Flags & FRelu) != 0);
        }
    }

    /// <summary>relu's gradient: g where the fused forward's output y was positive, else 0 (NaN y included).</summary>
    private static float Masked(float g, float y) => y > 0f ? g : 0f;

    /// <summary>relu?((x − mean)·scale + bias [+ r]); relu as the elementwise kernel has it: NaN stays NaN.</summary>
    private static float BnOut(float xv, float r, float mean, float scale, float bias, bool addRes, bool relu)
    {
        float v = (xv - mean) * scale + bias;
        if (addRes) v += r;
        if (relu && !(v > 0f) && !KMath.IsNaN(v)) v = 0f;
        return v;
    }

    internal static void BatchNormBackwardKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> w, ArrayView<float> saveMean,
        ArrayView<float> saveInvStd, ArrayView<float> gx, ArrayView<float> gw, ArrayView<float> gb, ArrayView<float> yRelu, ArrayView<float> gRes, BnParams p)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;   // S = 0 means no elements: the loops do not run, the cursor must not divide by 0
        for (int c = Grid.IdxX; c < p.C; c += Grid.DimX)
        {
            long cOff = (long)c * p.S;
            float mean = saveMean[c], inv = saveInvStd[c];
            float wc = (p.Flags & FWeight) != 0 ? w[c] : 1f;
            bool relu = (p.Flags & FRelu) != 0, writeRes = (p.Flags & FGradResidual) != 0;
            var own = GradSums(x, gy, yRelu, gRes, cOff, cs, sLen, 0, mCount, mean, relu, writeRes, wide: false);
            var tot = BlockReduce.Sum2((float)own.A, (float)own.B, red);
            float sgx = tot.B * inv;   // Σ gy·x̂
            if (Group.IdxX == 0)
            {
                if ((p.Flags & FGradW) != 0) gw[c] = sgx;
                if ((p.Flags & FGradB) != 0) gb[c] = tot.A;
            }
            // train: gx = k·(gy − Σgy/M − x̂·Σ(gy·x̂)/M), k = w·inv; eval: gx = k·gy
            bool train = (p.Flags & FTraining) != 0 && mCount > 0;
            float mg = train ? tot.A / mCount : 0f, mgx = train ? sgx / mCount : 0f;
            // With relu and a residual gradient, pass 1 left the masked gradient in gRes, and pass 2 reads it back (4 B)
            // instead of gy and y again (8 B); the same thread wrote the element, and global loads are plain ld (no .nc).
            GradInput(x, gy, yRelu, gRes, gx, cOff, cs, sLen, 0, mCount, mean, inv, wc * inv, mg, mgx, relu, relu && writeRes);
        }
    }

    // ------------------------------------------------------------------ batch norm split across groups (few, long channels)
    // Unit u of C·Split covers slice g = u % Split of channel c = u / Split: elements [g·Slice, min((g+1)·Slice, N·S)) of the
    // channel in (n, s) order, so a slice may start and end inside a sample. Pass 1 writes each unit's double sums to the
    // workspace (ws[2u], ws[2u + 1]); pass 2 (a second launch, so every partial is written) has every unit of a channel sum
    // that channel's partials in slice order — the same additions in the same order in every unit, so they agree bit for bit —
    // and then run the elementwise pass over its own slice. No atomics: the result depends only on the shape, Split and the
    // group size.

    /// <summary>min(g·slice, count): where slice g starts (and slice g − 1 ends).</summary>
    private static int SliceEnd(int g, int slice, int count)
    {
        long e = (long)g * slice;
        return e < count ? (int)e : count;
    }

    /// <summary>Pass 1 of the split forward (training): per unit, Σ(x − x₀), Σ(x − x₀)² over its slice (x₀ the channel's first element).</summary>
    internal static void BatchNormStatsPartialKernel(ArrayView<float> x, ArrayView<double> ws, BnParams p)
    {
        var red = SharedMemory.Allocate<double>(2 * MaxWarps);
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int units = p.C * p.Split;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int c = u / p.Split, g = u - c * p.Split;
            long cOff = (long)c * p.S;
            int lo = SliceEnd(g, p.Slice, mCount), hi = SliceEnd(g + 1, p.Slice, mCount);
            float shift = mCount > 0 ? x[cOff] : 0f;
            var own = StatSums(x, cOff, cs, sLen, lo, hi, shift, wide: true);
            var tot = BlockReduce.Sum2(own.A, own.B, red);
            if (Group.IdxX == 0) { ws[2L * u] = tot.A; ws[2L * u + 1] = tot.B; }
        }
    }

    /// <summary>Pass 2 of the split forward: the channel's statistics from the partials (training; slice 0 also writes the saved
    /// statistics and updates the running ones) or the running statistics (eval, no pass 1), then y over the unit's slice.</summary>
    internal static void BatchNormApplyKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> rm,
        ArrayView<float> rv, ArrayView<float> y, ArrayView<float> saveMean, ArrayView<float> saveInvStd, ArrayView<float> res, ArrayView<double> ws, BnParams p)
    {
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int units = p.C * p.Split;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int c = u / p.Split, g = u - c * p.Split;
            long cOff = (long)c * p.S;
            int lo = SliceEnd(g, p.Slice, mCount), hi = SliceEnd(g + 1, p.Slice, mCount);
            float mean, inv;
            if ((p.Flags & FTraining) != 0)
            {
                float shift = mCount > 0 ? x[cOff] : 0f;
                var tot = Finish(ws, c, p.Split);
                double ms = mCount > 0 ? tot.A / mCount : 0.0;
                double var = mCount > 0 ? tot.B / mCount - ms * ms : 0.0;
                if (var < 0.0) var = 0.0;
                mean = (float)(shift + ms);   // one rounding, at the mean's magnitude (not x₀'s): the gradients depend on it
                inv = 1f / MathF.Sqrt((float)var + p.Eps);
                if (g == 0 && Group.IdxX == 0 && mCount > 0)
                {
                    float keep = 1f - p.Momentum;
                    if ((p.Flags & FRunningMean) != 0) rm[c] = keep * rm[c] + p.Momentum * mean;
                    if ((p.Flags & FRunningVar) != 0)
                        rv[c] = keep * rv[c] + p.Momentum * (mCount > 1 ? (float)(var * mCount / (mCount - 1)) : 0f);
                }
            }
            else
            {
                mean = rm[c];
                inv = 1f / MathF.Sqrt(rv[c] + p.Eps);
            }
            if (g == 0 && Group.IdxX == 0) { saveMean[c] = mean; saveInvStd[c] = inv; }
            float scale = (p.Flags & FWeight) != 0 ? inv * w[c] : inv;
            float bias = (p.Flags & FBias) != 0 ? b[c] : 0f;
            Normalize(x, y, res, cOff, cs, sLen, lo, hi, mean, scale, bias, (p.Flags & FResidual) != 0, (p.Flags & FRelu) != 0);
        }
    }

    /// <summary>Pass 1 of the split backward: per unit, Σg and Σg·(x − mean) over its slice (g masked by relu, written to gRes).</summary>
    internal static void BatchNormGradPartialKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> saveMean, ArrayView<float> yRelu,
        ArrayView<float> gRes, ArrayView<double> ws, BnParams p)
    {
        var red = SharedMemory.Allocate<double>(2 * MaxWarps);
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int units = p.C * p.Split;
        bool relu = (p.Flags & FRelu) != 0, writeRes = (p.Flags & FGradResidual) != 0;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int c = u / p.Split, g = u - c * p.Split;
            long cOff = (long)c * p.S;
            int lo = SliceEnd(g, p.Slice, mCount), hi = SliceEnd(g + 1, p.Slice, mCount);
            var own = GradSums(x, gy, yRelu, gRes, cOff, cs, sLen, lo, hi, saveMean[c], relu, writeRes, wide: true);
            var tot = BlockReduce.Sum2(own.A, own.B, red);
            if (Group.IdxX == 0) { ws[2L * u] = tot.A; ws[2L * u + 1] = tot.B; }
        }
    }

    /// <summary>Pass 2 of the split backward: Σg and Σg·x̂ of the channel from the partials (slice 0 writes gw, gb), then gx over the unit's slice.</summary>
    internal static void BatchNormGradApplyKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> w, ArrayView<float> saveMean,
        ArrayView<float> saveInvStd, ArrayView<float> gx, ArrayView<float> gw, ArrayView<float> gb, ArrayView<float> yRelu, ArrayView<float> gRes,
        ArrayView<double> ws, BnParams p)
    {
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int units = p.C * p.Split;
        bool relu = (p.Flags & FRelu) != 0, writeRes = (p.Flags & FGradResidual) != 0;
        for (int u = Grid.IdxX; u < units; u += Grid.DimX)
        {
            int c = u / p.Split, g = u - c * p.Split;
            long cOff = (long)c * p.S;
            int lo = SliceEnd(g, p.Slice, mCount), hi = SliceEnd(g + 1, p.Slice, mCount);
            float mean = saveMean[c], inv = saveInvStd[c];
            float wc = (p.Flags & FWeight) != 0 ? w[c] : 1f;
            var tot = Finish(ws, c, p.Split);
            double sgx = tot.B * inv;   // Σ gy·x̂
            if (g == 0 && Group.IdxX == 0)
            {
                if ((p.Flags & FGradW) != 0) gw[c] = (float)sgx;
                if ((p.Flags & FGradB) != 0) gb[c] = (float)tot.A;
            }
            bool train = (p.Flags & FTraining) != 0 && mCount > 0;
            float mg = train ? (float)(tot.A / mCount) : 0f, mgx = train ? (float)(sgx / mCount) : 0f;
            GradInput(x, gy, yRelu, gRes, gx, cOff, cs, sLen, lo, hi, mean, inv, wc * inv, mg, mgx, relu, relu && writeRes);
        }
    }

    // ================================================================== group norm

    /// <summary>One group-norm output: (x − mean)·rstd (·w[c]) (+ b[c]), then silu when fused.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float GnOut(float xv, float mu, float r, int c, ArrayView<float> w, ArrayView<float> b, int flags)
    {
        float scale = (flags & FWeight) != 0 ? r * w[c] : r;
        float bias = (flags & FBias) != 0 ? b[c] : 0f;
        float v = (xv - mu) * scale + bias;
        // silu as the elementwise kernel computes it (ElementwiseOps.Silu), so the fused op is bit-identical
        return (flags & FSilu) != 0 ? v * KMath.SigmoidF(v) : v;
    }

    internal static void GroupNormForwardKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, GnParams p)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int cg = p.C / p.G;
        int mCount = cg * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int groups = p.N * p.G;
        for (int ng = Grid.IdxX; ng < groups; ng += Grid.DimX)
        {
            long off = (long)ng * mCount;
            float shift = mCount > 0 ? x[off] : 0f;
            double s = 0, ss = 0;
            // four loads in flight per thread (issue 7: the VQ-VAE's group norms read 100–200 K elements per group), summed
            // in the same order as one element at a time: thread t's elements t, t + nt, t + 2nt, … ascending
            int nt = Group.DimX, i0 = Group.IdxX;
            for (; i0 + 3 * nt < mCount; i0 += 4 * nt)
            {
                float a0 = x[off + i0], a1 = x[off + i0 + nt], a2 = x[off + i0 + 2 * nt], a3 = x[off + i0 + 3 * nt];
                float t0 = a0 - shift, t1 = a1 - shift, t2 = a2 - shift, t3 = a3 - shift;
                s += t0; ss += t0 * t0;
                s += t1; ss += t1 * t1;
                s += t2; ss += t2 * t2;
                s += t3; ss += t3 * t3;
            }
            for (; i0 < mCount; i0 += nt)
            {
                float t = x[off + i0] - shift;
                s += t; ss += t * t;
            }
            var tot = BlockReduce.Sum2((float)s, (float)ss, red);
            float ms = mCount > 0 ? tot.A / mCount : 0f;
            float var = mCount > 0 ? tot.B / mCount - ms * ms : 0f;
            if (var < 0f) var = 0f;
            float mu = shift + ms, r = 1f / MathF.Sqrt(var + p.Eps);
            if (Group.IdxX == 0) { mean[ng] = mu; rstd[ng] = r; }
            int c0 = ng % p.G * cg;
            var cur = Start(Group.IdxX, sLen);
            int i = Group.IdxX;
            for (; i + 3 * nt < mCount; i += 4 * nt)
            {
                // four loads first, then the four outputs (each depends on its own element and channel only)
                float a0 = x[off + i], a1 = x[off + i + nt], a2 = x[off + i + 2 * nt], a3 = x[off + i + 3 * nt];
                var cur1 = Advance(cur, nt, sLen);
                var cur2 = Advance(cur1, nt, sLen);
                var cur3 = Advance(cur2, nt, sLen);
                y[off + i] = GnOut(a0, mu, r, c0 + cur.Outer, w, b, p.Flags);
                y[off + i + nt] = GnOut(a1, mu, r, c0 + cur1.Outer, w, b, p.Flags);
                y[off + i + 2 * nt] = GnOut(a2, mu, r, c0 + cur2.Outer, w, b, p.Flags);
                y[off + i + 3 * nt] = GnOut(a3, mu, r, c0 + cur3.Outer, w, b, p.Flags);
                cur = Advance(cur3, nt, sLen);
            }
            for (; i < mCount; i += nt, cur = Advance(cur, nt, sLen))
                y[off + i] = GnOut(x[off + i], mu, r, c0 + cur.Outer, w, b, p.Flags);
        }
    }

    internal static void GroupNormBackwardKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> w, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> gx, GnParams p)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int cg = p.C / p.G;
        int mCount = cg * p.S;
        int sLen = p.S > 0 ? p.S : 1;
        int groups = p.N * p.G;
        bool hasW = (p.Flags & FWeight) != 0;
        for (int ng = Grid.IdxX; ng < groups; ng += Grid.DimX)
        {
            long off = (long)ng * mCount;
            float mu = mean[ng], r = rstd[ng];
            int c0 = ng % p.G * cg;
            double sg = 0, sgc = 0;
            var cur = Start(Group.IdxX, sLen);
            for (int i = Group.IdxX; i < mCount; i += Group.DimX, cur = Advance(cur, Group.DimX, sLen))
            {
                float g = gy[off + i];
                if (hasW) g *= w[c0 + cur.Outer];
                sg += g; sgc += g * (x[off + i] - mu);
            }
            var tot = BlockReduce.Sum2((float)sg, (float)sgc, red);
            float mg = mCount > 0 ? tot.A / mCount : 0f, mgx = mCount > 0 ? tot.B * r / mCount : 0f;
            // with ĝ = gy·w: gx = r·(ĝ − Σĝ/M − x̂·Σ(ĝ·x̂)/M)
            var cw = Start(Group.IdxX, sLen);
            for (int i = Group.IdxX; i < mCount; i += Group.DimX, cw = Advance(cw, Group.DimX, sLen))
            {
                float g = gy[off + i];
                if (hasW) g *= w[c0 + cw.Outer];
                gx[off + i] = r * (g - mg - (x[off + i] - mu) * r * mgx);
            }
        }
    }

    /// <summary>gw[c] = Σ_n Σ_s gy·x̂, gb[c] = Σ_n Σ_s gy: one group per channel.</summary>
    internal static void GroupNormParamKernel(ArrayView<float> x, ArrayView<float> gy, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> gw, ArrayView<float> gb, GnParams p)
    {
        var red = SharedMemory.Allocate<float>(2 * MaxWarps);
        int cg = p.C / p.G;
        int mCount = p.N * p.S;
        long cs = (long)p.C * p.S;
        int sLen = p.S > 0 ? p.S : 1;   // S = 0 means no elements: the loops do not run, the cursor must not divide by 0
        for (int c = Grid.IdxX; c < p.C; c += Grid.DimX)
        {
            long cOff = (long)c * p.S;
            int g = c / cg;
            double sb = 0, sw = 0;
            var cur = Start(Group.IdxX, sLen);
            for (int m = Group.IdxX; m < mCount; m += Group.DimX, cur = Advance(cur, Group.DimX, sLen))
            {
                long o = cur.Outer * cs + cOff + cur.Inner;
                int ng = cur.Outer * p.G + g;
                float v = gy[o];
                sb += v; sw += v * (x[o] - mean[ng]) * rstd[ng];
            }
            var tot = BlockReduce.Sum2((float)sb, (float)sw, red);
            if (Group.IdxX == 0)
            {
                if ((p.Flags & FGradW) != 0) gw[c] = tot.B;
                if ((p.Flags & FGradB) != 0) gb[c] = tot.A;
            }
        }
    }

    // ================================================================== launchers

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, BnParams>? BnFwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, BnParams>? BnBwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<double>, BnParams>? BnStats;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>? BnApply;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>? BnGradPartial;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>? BnGradApply;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GnParams>? GnFwd, GnBwd, GnParam;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    /// <summary>A group size for reductions over <paramref name="count"/> elements: 128 up to 2047, 256 up to 16383, else 512; clamped to the accelerator.</summary>
    public static int DefaultGroupSize(Accelerator acc, long count)
    {
        int want = count >= 16384 ? 512 : count >= 2048 ? 256 : 128;
        return BlockReduce.ClampGroup(acc, want);
    }

    /// <summary>
    /// Batch norm's group size (one group per channel, before clamping to the accelerator): 1,024 threads when the channels
    /// are too few to give every multiprocessor two groups and each holds at least 65,536 elements — ResNet-50's stem and
    /// layer1 at batch 64 (64–256 channels of 200,704–802,816) — so that one SM keeps twice as many loads in flight; else
    /// <see cref="DefaultGroupSize"/>'s rule. (Deterministic either way; the group size sets the summation order.)
    /// </summary>
    public static int BatchNormGroupSize(int channels, long count, int multiprocessors)
        => channels < 2 * multiprocessors && count >= 65536 ? 1024 : count >= 16384 ? 512 : count >= 2048 ? 256 : 128;

    /// <summary>Shortest slice of a channel the split batch norm gives one group (16 elements per thread of a 1,024-thread group).</summary>
    public const int MinSplitSlice = 16384;

    /// <summary>
    /// Slices per channel for batch norm (1: one group per channel). With fewer channels than one per multiprocessor, one group
    /// per channel leaves multiprocessors idle (ResNet-50 at batch 64 on an H100's 132: the stem's and layer1's 64 channels,
    /// layer2's 128), so each channel's N·S values are cut into ⌊2·SMs / C⌋ contiguous slices — at most one wave of two groups per
    /// multiprocessor (more would leave a short second wave) — of at least <see cref="MinSplitSlice"/> elements each.
    /// Channels ≥ SMs (layer1's 256: 256 groups already fill 97 % of 264 slots) and short channels are not split.
    /// </summary>
    public static int BatchNormSplit(int channels, long count, int multiprocessors)
    {
        if (channels <= 0 || count < 2L * MinSplitSlice) return 1;
        long g = Math.Min(2L * Math.Max(1, multiprocessors) / channels, count / MinSplitSlice);
        return (int)Math.Clamp(g, 1, 1024);
    }

    /// <summary>Tests set this to force the slices per channel (the emulator's 2 multiprocessors and short test channels never split by the rule).</summary>
    internal static int? BatchNormSplitOverride { get; set; }

    /// <summary>The slices per channel a batch norm of <paramref name="c"/> channels of <paramref name="count"/> (N·S) values runs with on
    /// <paramref name="acc"/>: <see cref="BatchNormSplitOverride"/> or <see cref="BatchNormSplit"/>, at most one slice per element.</summary>
    public static int BatchNormSplitFor(Accelerator acc, int c, long count)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (c <= 0 || count <= 1) return 1;
        int want = BatchNormSplitOverride ?? BatchNormSplit(c, count, acc.NumMultiprocessors);
        return (int)Math.Clamp(want, 1L, Math.Min(count, 1 << 20));
    }

    /// <summary>Doubles of workspace a split batch norm needs (two partial sums per slice; 0 unsplit, and 0 for the eval forward,
    /// which has no statistics to reduce).</summary>
    public static long BatchNormWorkspace(int c, int split, bool needsStatistics = true) => split < 2 || !needsStatistics ? 0 : 2L * c * split;

    private static ArrayView<double> CheckWorkspace(string op, ArrayView<double>? workspace, int c, int split, string shape)
    {
        long need = BatchNormWorkspace(c, split);
        if (workspace is not { } ws || ws.Length < need)
            throw new ArgumentException($"{op}: {split} slices per channel of {shape} need a workspace of {need} doubles, got {(workspace is { } w ? w.Length : 0)}");
        return ws;
    }

    private static int CheckGroup(Accelerator acc, string op, int groupSize, long count)
        => BlockReduce.CheckGroup(acc, op, groupSize == 0 ? DefaultGroupSize(acc, count) : groupSize);

    private static void Need(string op, string name, ArrayView<float> v, long n, string shape)
    {
        if (v.Length < n) throw new ArgumentException($"{op}: {name} has {v.Length} elements, needs {n} for {shape}");
    }

    private static void CheckShape(string op, int n, int c, int s)
    {
        if (n < 0 || c < 0 || s < 0) throw new ArgumentException($"{op}: negative shape [{n}, {c}, {s}]");
        if ((long)n * s > int.MaxValue || (long)n * c * s > int.MaxValue * 64L)
            throw new ArgumentException($"{op}: shape [{n}, {c}, {s}] is too large for one launch");
    }

    private static KernelConfig Config(int groups, int gs) => new(Math.Max(1, Math.Min(groups, 1 << 20)), gs);

    /// <summary>
    /// Batch norm forward of x [N, C, S] (S = H·W, 1 for [N, C]). Training: batch statistics (biased variance to
    /// normalise; running stats, when given, updated in place with the unbiased variance and <paramref name="momentum"/>).
    /// Eval: running stats (both required). saveMean/saveInvStd [C] receive the mean and 1/√(var+eps) used.
    /// Fused epilogue: y ← relu?(bn(x) [+ residual]) (residual [N, C, S] like x), in the same launch.
    /// When <see cref="BatchNormSplitFor"/> cuts each channel into slices (few, long channels), training runs two launches
    /// (partial sums per slice into <paramref name="workspace"/>, ≥ <see cref="BatchNormWorkspace"/> doubles, then statistics +
    /// normalisation per slice) and eval one (normalisation per slice; no workspace needed).
    /// </summary>
    public static void BatchNormForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float>? weight, ArrayView<float>? bias,
        ArrayView<float>? runningMean, ArrayView<float>? runningVar, bool training, float momentum, float eps,
        ArrayView<float> y, ArrayView<float> saveMean, ArrayView<float> saveInvStd, int n, int c, int s, int groupSize = 0,
        ArrayView<float>? residual = null, bool relu = false, ArrayView<double>? workspace = null)
    {
        const string op = "batch_norm (cuda)";
        CheckShape(op, n, c, s);
        string shape = $"[{n}, {c}, {s}]";
        long total = (long)n * c * s;
        Need(op, "x", x, total, shape); Need(op, "y", y, total, shape);
        Need(op, "saved mean", saveMean, c, shape); Need(op, "saved inverse std", saveInvStd, c, shape);
        if (weight is { } wv) Need(op, "weight", wv, c, shape);
        if (bias is { } bv) Need(op, "bias", bv, c, shape);
        if (runningMean is { } rmv) Need(op, "running mean", rmv, c, shape);
        if (runningVar is { } rvv) Need(op, "running var", rvv, c, shape);
        if (residual is { } resv) Need(op, "residual", resv, total, shape);
        if (!training && (runningMean is null || runningVar is null))
            throw new ArgumentException($"{op}: evaluation mode needs running mean and variance (input {shape})");
        if (training && (long)n * s == 1)
            throw new ArgumentException($"{op}: expected more than 1 value per channel when training, got input {shape}");
        if (c == 0) return;
        int gs = BlockReduce.CheckGroup(acc, op, groupSize == 0 ? BlockReduce.ClampGroup(acc, BatchNormGroupSize(c, (long)n * s, acc.NumMultiprocessors)) : groupSize);
        var p = new BnParams
        {
            N = n, C = c, S = s, Momentum = momentum, Eps = eps,
            Flags = (weight is null ? 0 : FWeight) | (bias is null ? 0 : FBias) | (runningMean is null ? 0 : FRunningMean)
                | (runningVar is null ? 0 : FRunningVar) | (training ? FTraining : 0) | (residual is null ? 0 : FResidual) | (relu ? FRelu : 0),
        };
        int split = BatchNormSplitFor(acc, c, (long)n * s);
        var str = stream ?? acc.DefaultStream;
        if (split > 1)
        {
            // Few, long channels: pass 1 (training only) writes every slice's partial sums, pass 2 finishes the statistics and normalises.
            p.Split = split;
            p.Slice = (int)(((long)n * s + split - 1) / split);
            var l = For(acc);
            var ws = training ? CheckWorkspace(op, workspace, c, split, shape) : workspace ?? x.Cast<double>();   // eval reads no partials
            int units = c * split;
            if (training)
            {
                var ks = l.BnStats ??= acc.LoadKernel<ArrayView<float>, ArrayView<double>, BnParams>(BatchNormStatsPartialKernel);
                CudaRuntime.CountLaunch();
                ks(str, Config(units, gs), x, ws, p);
            }
            var ka = l.BnApply ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>(BatchNormApplyKernel);
            CudaRuntime.CountLaunch();
            ka(str, Config(units, gs), x, weight ?? x, bias ?? x, runningMean ?? x, runningVar ?? x, y, saveMean, saveInvStd, residual ?? x, ws, p);
            return;
        }
        var k = For(acc).BnFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, BnParams>(BatchNormForwardKernel);
        CudaRuntime.CountLaunch();
        k(str, Config(c, gs), x, weight ?? x, bias ?? x, runningMean ?? x, runningVar ?? x, y, saveMean, saveInvStd, residual ?? x, p);
    }

    /// <summary>gx (and gw, gb [C] when given, overwritten) from the saved statistics; in eval mode the statistics are constants.
    /// Fused epilogue: with <paramref name="reluOutput"/> (the forward's y) gy is masked by y &gt; 0 first; <paramref name="gResidual"/>
    /// receives the (masked) gy. Global traffic per element (two passes over each channel): plain 8 + 12 B; relu 12 + 16 B;
    /// relu + residual 16 (gy, y, x in; gRes out) + 12 B (gRes, x in; gx out) — the second pass re-reads the masked gradient
    /// from gRes rather than gy and y. When <see cref="BatchNormSplitFor"/> cuts each channel into slices, two launches (partial
    /// sums per slice into <paramref name="workspace"/>, ≥ <see cref="BatchNormWorkspace"/> doubles; then gw, gb and gx per slice)
    /// with the same traffic per element.</summary>
    public static void BatchNormBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> gy, ArrayView<float>? weight,
        ArrayView<float> saveMean, ArrayView<float> saveInvStd, bool training, ArrayView<float> gx, ArrayView<float>? gw, ArrayView<float>? gb,
        int n, int c, int s, int groupSize = 0, ArrayView<float>? reluOutput = null, ArrayView<float>? gResidual = null, ArrayView<double>? workspace = null)
    {
        const string op = "batch_norm backward (cuda)";
        CheckShape(op, n, c, s);
        string shape = $"[{n}, {c}, {s}]";
        long total = (long)n * c * s;
        Need(op, "x", x, total, shape); Need(op, "gy", gy, total, shape); Need(op, "gx", gx, total, shape);
        Need(op, "saved mean", saveMean, c, shape); Need(op, "saved inverse std", saveInvStd, c, shape);
        if (weight is { } wv) Need(op, "weight", wv, c, shape);
        if (gw is { } gwv) Need(op, "weight gradient", gwv, c, shape);
        if (gb is { } gbv) Need(op, "bias gradient", gbv, c, shape);
        if (reluOutput is { } yv) Need(op, "relu output", yv, total, shape);
        if (gResidual is { } grv) Need(op, "residual gradient", grv, total, shape);
        if (c == 0) return;
        int gs = BlockReduce.CheckGroup(acc, op, groupSize == 0 ? BlockReduce.ClampGroup(acc, BatchNormGroupSize(c, (long)n * s, acc.NumMultiprocessors)) : groupSize);
        var p = new BnParams
        {
            N = n, C = c, S = s,
            Flags = (weight is null ? 0 : FWeight) | (training ? FTraining : 0) | (gw is null ? 0 : FGradW) | (gb is null ? 0 : FGradB)
                | (reluOutput is null ? 0 : FRelu) | (gResidual is null ? 0 : FGradResidual),
        };
        int split = BatchNormSplitFor(acc, c, (long)n * s);
        var str = stream ?? acc.DefaultStream;
        if (split > 1)
        {
            // Few, long channels: pass 1 writes every slice's Σg, Σg·(x − mean) (and the masked gradient to gRes), pass 2 finishes and writes gx.
            var ws = CheckWorkspace(op, workspace, c, split, shape);
            p.Split = split;
            p.Slice = (int)(((long)n * s + split - 1) / split);
            var l = For(acc);
            int units = c * split;
            var kp = l.BnGradPartial ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>(BatchNormGradPartialKernel);
            CudaRuntime.CountLaunch();
            kp(str, Config(units, gs), x, gy, saveMean, reluOutput ?? x, gResidual ?? x, ws, p);
            var ka = l.BnGradApply ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<double>, BnParams>(BatchNormGradApplyKernel);
            CudaRuntime.CountLaunch();
            ka(str, Config(units, gs), x, gy, weight ?? x, saveMean, saveInvStd, gx, gw ?? x, gb ?? x, reluOutput ?? x, gResidual ?? x, ws, p);
            return;
        }
        var k = For(acc).BnBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, BnParams>(BatchNormBackwardKernel);
        CudaRuntime.CountLaunch();
        k(str, Config(c, gs), x, gy, weight ?? x, saveMean, saveInvStd, gx, gw ?? x, gb ?? x, reluOutput ?? x, gResidual ?? x, p);
    }

    private static void GnCheck(string op, int n, int c, int s, int groups)
    {
        CheckShape(op, n, c, s);
        if (groups < 1 || c % groups != 0) throw new ArgumentException($"{op}: {c} channels of input [{n}, {c}, {s}] do not split into {groups} groups");
        if ((long)(c / groups) * s > int.MaxValue) throw new ArgumentException($"{op}: groups of [{n}, {c}, {s}] / {groups} are too large for one launch");
    }

    /// <summary>Group norm forward of x [N, C, S] with <paramref name="groups"/> groups; mean/rstd are [N, groups].</summary>
    public static void GroupNormForward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float>? weight, ArrayView<float>? bias,
        int groups, float eps, ArrayView<float> y, ArrayView<float> mean, ArrayView<float> rstd, int n, int c, int s, int groupSize = 0, bool silu = false)
    {
        const string op = "group_norm (cuda)";
        GnCheck(op, n, c, s, groups);
        string shape = $"[{n}, {c}, {s}] in {groups} groups";
        long total = (long)n * c * s;
        Need(op, "x", x, total, shape); Need(op, "y", y, total, shape);
        Need(op, "mean", mean, (long)n * groups, shape); Need(op, "rstd", rstd, (long)n * groups, shape);
        if (weight is { } wv) Need(op, "weight", wv, c, shape);
        if (bias is { } bv) Need(op, "bias", bv, c, shape);
        if (n == 0) return;
        int gs = CheckGroup(acc, op, groupSize, (long)(c / groups) * s);
        var k = For(acc).GnFwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GnParams>(GroupNormForwardKernel);
        var p = new GnParams { N = n, C = c, S = s, G = groups, Eps = eps, Flags = (weight is null ? 0 : FWeight) | (bias is null ? 0 : FBias) | (silu ? FSilu : 0) };
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, Config(n * groups, gs), x, weight ?? x, bias ?? x, y, mean, rstd, p);
    }

    /// <summary>gx, and gw/gb [C] (overwritten) when given, from the forward's mean/rstd [N, groups].</summary>
    public static void GroupNormBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> gy, ArrayView<float>? weight,
        int groups, ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> gx, ArrayView<float>? gw, ArrayView<float>? gb,
        int n, int c, int s, int groupSize = 0)
    {
        const string op = "group_norm backward (cuda)";
        GnCheck(op, n, c, s, groups);
        string shape = $"[{n}, {c}, {s}] in {groups} groups";
        long total = (long)n * c * s;
        Need(op, "x", x, total, shape); Need(op, "gy", gy, total, shape); Need(op, "gx", gx, total, shape);
        Need(op, "mean", mean, (long)n * groups, shape); Need(op, "rstd", rstd, (long)n * groups, shape);
        if (weight is { } wv) Need(op, "weight", wv, c, shape);
        if (gw is { } gwv) Need(op, "weight gradient", gwv, c, shape);
        if (gb is { } gbv) Need(op, "bias gradient", gbv, c, shape);
        if (c == 0) return;
        var l = For(acc);
        var str = stream ?? acc.DefaultStream;
        if (n > 0)
        {
            int gs = CheckGroup(acc, op, groupSize, (long)(c / groups) * s);
            var k = l.GnBwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GnParams>(GroupNormBackwardKernel);
            var p = new GnParams { N = n, C = c, S = s, G = groups, Flags = weight is null ? 0 : FWeight };
            CudaRuntime.CountLaunch();
            k(str, Config(n * groups, gs), x, gy, weight ?? x, mean, rstd, gx, p);
        }
        if (gw is null && gb is null) return;
        int gsp = CheckGroup(acc, op, groupSize, (long)n * s);
        var kp = l.GnParam ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GnParams>(GroupNormParamKernel);
        var pp = new GnParams { N = n, C = c, S = s, G = groups, Flags = (gw is null ? 0 : FGradW) | (gb is null ? 0 : FGradB) };
        CudaRuntime.CountLaunch();
        kp(str, Config(c, gsp), x, gy, mean, rstd, gw ?? gb!.Value, gb ?? gw!.Value, pp);
    }
}
