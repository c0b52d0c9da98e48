using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// Transformer, loss and optimiser kernels. Rows are the last dim; every kernel has one generic body for
/// float32 and float64, vectorised with TensorPrimitives / Vector256 and accumulating in the tensor's dtype
/// (as PyTorch does). Results do not depend on the thread count.
/// Dropout convention, shared by <see cref="Dropout"/> and the fused attention: element i is KEPT iff
/// <c>Philox.Uniform(seed, offset, i) ≥ p</c>, so the dropped set is exactly where
/// <c>Generator.Bernoulli(p)</c> drawn at the same (seed, offset) gives 1.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    // ------------------------------------------------------------------ shared helpers

    private static void RequireSameDType(string op, Tensor a, Tensor b)
    {
        if (a.DType != b.DType) throw new ArgumentException($"{op}: {a.ShapeString} is {a.DType.Name()} but {b.ShapeString} is {b.DType.Name()}");
    }

    /// <summary>x itself when contiguous (a new handle), else a contiguous copy. The caller disposes it.</summary>
    private Tensor Dense(Tensor x) => x.ContiguousRaw();

    private static int LastDim(Tensor t) => t.Rank == 0 ? 1 : t.Sizes[^1];

    /// <summary>keep[j] ← 1 when element (start + j) of the Philox stream survives dropout with probability p.</summary>
    internal static void KeepMask(ulong seed, ulong offset, long start, int n, double p, Span<byte> keep)
    {
        if (p <= 0) { keep[..n].Fill(1); return; }
        if (p >= 1) { keep[..n].Clear(); return; }
        // u = (w >> 8)·2⁻²⁴ ≥ p  ⇔  (w >> 8) ≥ ⌈p·2²⁴⌉ (exact: both sides are integers scaled by a power of two).
        uint thr = (uint)Math.Ceiling(p * 16777216.0);
        long end = start + n, i = start;
        if (Avx2.IsSupported)
        {
            long aligned = (start + 3) & ~3L;
            if (end - aligned >= 16)
            {
                KeepScalar(seed, offset, start, aligned, start, thr, keep);
                for (i = aligned; i + 16 <= end; i += 16)
                {
                    Philox4Counters(seed, offset + (ulong)(i >> 2), out var w0, out var w1, out var w2, out var w3);
                    int b = (int)(i - start);
                    for (int j = 0; j < 4; j++, b += 4)
                    {
                        keep[b] = (byte)((uint)w0.GetElement(j) >> 8 >= thr ? 1 : 0);
                        keep[b + 1] = (byte)((uint)w1.GetElement(j) >> 8 >= thr ? 1 : 0);
                        keep[b + 2] = (byte)((uint)w2.GetElement(j) >> 8 >= thr ? 1 : 0);
                        keep[b + 3] = (byte)((uint)w3.GetElement(j) >> 8 >= thr ? 1 : 0);
                    }
                }
            }
        }
        KeepScalar(seed, offset, i, end, start, thr, keep);
    }

    private static void KeepScalar(ulong seed, ulong offset, long i, long end, long start, uint thr, Span<byte> keep)
    {
        while (i < end)
        {
            Philox.Block(seed, offset + (ulong)(i >> 2), out var w0, out var w1, out var w2, out var w3);
            long blockEnd = Math.Min(end, (i & ~3L) + 4);
            for (; i < blockEnd; i++)
            {
                uint w = (i & 3) switch { 0 => w0, 1 => w1, 2 => w2, _ => w3 };
                keep[(int)(i - start)] = (byte)(w >> 8 >= thr ? 1 : 0);
            }
        }
    }

    /// <summary>
    /// Philox4x32-10 on the four counters c, c+1, c+2, c+3 at once (one per 64-bit lane, values in the low 32 bits);
    /// lane j of r_k equals word k of <see cref="Philox.Block"/>(seed, c + j).
    /// </summary>
    private static void Philox4Counters(ulong seed, ulong c, out Vector256<ulong> r0, out Vector256<ulong> r1, out Vector256<ulong> r2, out Vector256<ulong> r3)
    {
        var lo32 = Vector256.Create(0xFFFFFFFFUL);
        var ctr = Vector256.Create(c, c + 1, c + 2, c + 3);
        Vector256<ulong> c0 = ctr & lo32, c1 = ctr >> 32, c2 = Vector256<ulong>.Zero, c3 = Vector256<ulong>.Zero;
        var m0 = Vector256.Create(0xD2511F53UL).AsUInt32();
        var m1 = Vector256.Create(0xCD9E8D57UL).AsUInt32();
        uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
        for (int round = 0; round < 10; round++)
        {
            var p0 = Avx2.Multiply(c0.AsUInt32(), m0); // 32×32→64 on the low half of each lane
            var p1 = Avx2.Multiply(c2.AsUInt32(), m1);
            var n0 = (p1 >> 32) ^ c1 ^ Vector256.Create((ulong)k0);
            var n2 = (p0 >> 32) ^ c3 ^ Vector256.Create((ulong)k1);
            c1 = p1 & lo32; c3 = p0 & lo32; c0 = n0; c2 = n2;
            k0 += 0x9E3779B9; k1 += 0xBB67AE85;
        }
        r0 = c0; r1 = c1; r2 = c2; r3 = c3;
    }

    private static void CheckProbability(string op, double p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1]");
    }

    // ------------------------------------------------------------------ layer norm

    public void LayerNormForward(Tensor x, Tensor? weight, Tensor? bias, double eps, Tensor y, Tensor mean, Tensor rstd)
    {
        const string op = "layer_norm";
        RequireFloat(x, op);
        RequireSameShape(x, y, op);
        RequireContiguous(y, op, "output");
        RequireContiguous(mean, op, "mean"); RequireContiguous(rstd, op, "rstd");
        if (x.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {x.ShapeString}");
        int d = LastDim(x), r = Shape.Numel(x.Sizes[..^1].ToArray());
        if (mean.Numel != r || rstd.Numel != r) throw new ArgumentException($"{op}: input {x.ShapeString} has {r} rows but mean {mean.ShapeString} / rstd {rstd.ShapeString}");
        foreach (var (t, name) in new[] { (weight, "weight"), (bias, "bias") })
        {
            if (t is null) continue;
            if (t.Numel != d || t.Rank != 1) throw new ArgumentException($"{op}: {name} {t.ShapeString} must be [{d}] for input {x.ShapeString}");
            RequireSameDType(op, x, t);
        }
        foreach (var t in new[] { y, mean, rstd }) RequireSameDType(op, x, t);
        using var xc = Dense(x);
        using var wc = weight?.ContiguousRaw();
        using var bc = bias?.ContiguousRaw();
        if (x.DType == DType.Float32) LayerNormForwardT<float>(xc, wc, bc, eps, y, mean, rstd, r, d);
        else LayerNormForwardT<double>(xc, wc, bc, eps, y, mean, rstd, r, d);
    }

    private static void LayerNormForwardT<T>(Tensor x, Tensor? w, Tensor? b, double eps, Tensor y, Tensor mean, Tensor rstd, int rows, int d)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* px = x.DataPtr<T>(), py = y.DataPtr<T>(), pm = mean.DataPtr<T>(), pr = rstd.DataPtr<T>();
        T* pw = w is null ? null : w.DataPtr<T>(), pb = b is null ? null : b.DataPtr<T>();
        T dd = T.CreateTruncating(d), teps = T.CreateTruncating(eps);
        Parallelism.For(rows, 4L * d, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var xr = new ReadOnlySpan<T>(px + (long)r * d, d);
                var yr = new Span<T>(py + (long)r * d, d);
                // two passes (mean, then the centred sum of squares): no cancellation for large means
                T m = d == 0 ? T.Zero : TensorPrimitives.Sum(xr) / dd;
                TensorPrimitives.Subtract(xr, m, yr);
                T rs = T.One / T.Sqrt(TensorPrimitives.Dot<T>(yr, yr) / dd + teps);
                pm[r] = m; pr[r] = rs;
                TensorPrimitives.Multiply<T>(yr, rs, yr);
                if (pw != null && pb != null) TensorPrimitives.MultiplyAdd<T>(yr, new ReadOnlySpan<T>(pw, d), new ReadOnlySpan<T>(pb, d), yr);
                else if (pw != null) TensorPrimitives.Multiply<T>(yr, new ReadOnlySpan<T>(pw, d), yr);
                else if (pb != null) TensorPrimitives.Add<T>(yr, new ReadOnlySpan<T>(pb, d), yr);
            }
        });
    }

    public void LayerNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb)
    {
        const string op = "layer_norm backward";
        RequireFloat(x, op);
        RequireSameShape(x, gy, op); RequireSameShape(x, gx, op);
        RequireContiguous(gx, op, "gx");
        if (x.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {x.ShapeString}");
        int d = LastDim(x), r = Shape.Numel(x.Sizes[..^1].ToArray());
        if (mean.Numel != r || rstd.Numel != r) throw new ArgumentException($"{op}: input {x.ShapeString} has {r} rows but mean {mean.ShapeString} / rstd {rstd.ShapeString}");
        foreach (var (t, name) in new[] { (weight, "weight"), (gw, "gw"), (gb, "gb") })
        {
            if (t is null) continue;
            if (t.Numel != d) throw new ArgumentException($"{op}: {name} {t.ShapeString} must have {d} elements for input {x.ShapeString}");
            RequireSameDType(op, x, t);
        }
        if (gw is not null) RequireContiguous(gw, op, "gw");
        if (gb is not null) RequireContiguous(gb, op, "gb");
        foreach (var t in new[] { gy, gx, mean, rstd }) RequireSameDType(op, x, t);
        using var xc = Dense(x);
        using var gyc = Dense(gy);
        using var wc = weight?.ContiguousRaw();
        using var mc = Dense(mean);
        using var rc = Dense(rstd);
        if (x.DType == DType.Float32) LayerNormBackwardT<float>(xc, gyc, wc, mc, rc, gx, gw, gb, r, d);
        else LayerNormBackwardT<double>(xc, gyc, wc, mc, rc, gx, gw, gb, r, d);
    }

    private static void LayerNormBackwardT<T>(Tensor x, Tensor gy, Tensor? w, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb, int rows, int d)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* px = x.DataPtr<T>(), pg = gy.DataPtr<T>(), pm = mean.DataPtr<T>(), pr = rstd.DataPtr<T>(), pgx = gx.DataPtr<T>();
        T* pw = w is null ? null : w.DataPtr<T>();
        T dd = T.CreateTruncating(d);
        // gx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = gy · w.
        Parallelism.For(rows, 6L * d, (r0, r1) =>
        {
            var gBuf = new T[d]; var hBuf = new T[d];
            var g = gBuf.AsSpan(); var xh = hBuf.AsSpan();
            for (int r = r0; r < r1; r++)
            {
                var xr = new ReadOnlySpan<T>(px + (long)r * d, d);
                var gr = new ReadOnlySpan<T>(pg + (long)r * d, d);
                var gxr = new Span<T>(pgx + (long)r * d, d);
                T m = pm[r], rs = pr[r];
                if (pw != null) TensorPrimitives.Multiply(gr, new ReadOnlySpan<T>(pw, d), g); else gr.CopyTo(g);
                TensorPrimitives.Subtract(xr, m, xh);
                TensorPrimitives.Multiply<T>(xh, rs, xh);
                T sg = TensorPrimitives.Sum<T>(g) / dd, sgx = TensorPrimitives.Dot<T>(g, xh) / dd;
                TensorPrimitives.MultiplyAdd<T>(xh, -sgx, g, gxr);   // g − x̂·mean(g·x̂)
                TensorPrimitives.Subtract<T>(gxr, sg, gxr);
                TensorPrimitives.Multiply<T>(gxr, rs, gxr);
            }
        });
        if (gw is null && gb is null) return;
        // Column sums over rows, split by column so the result does not depend on the thread count.
        T* pgw = gw is null ? null : gw.DataPtr<T>(), pgb = gb is null ? null : gb.DataPtr<T>();
        Parallelism.For(d, 3L * rows, (c0, c1) =>
        {
            int n = c1 - c0;
            var aw = new T[n]; var ab = new T[n]; var tmp = new T[n];
            for (int r = 0; r < rows; r++)
            {
                var xr = new ReadOnlySpan<T>(px + (long)r * d + c0, n);
                var gr = new ReadOnlySpan<T>(pg + (long)r * d + c0, n);
                TensorPrimitives.Add<T>(ab, gr, ab);
                TensorPrimitives.Subtract(xr, pm[r], tmp);
                TensorPrimitives.Multiply<T>(tmp, pr[r], tmp);
                TensorPrimitives.MultiplyAdd<T>(gr, tmp, aw, aw);
            }
            if (pgw != null) aw.CopyTo(new Span<T>(pgw + c0, n));
            if (pgb != null) ab.CopyTo(new Span<T>(pgb + c0, n));
        });
    }

    // ------------------------------------------------------------------ dropout + residual add + layer norm

    public void DropoutAddLayerNormForward(Tensor h, Tensor residual, double p, ulong seed, ulong offset, Tensor? weight, Tensor? bias, double eps,
        Tensor s, Tensor y, Tensor mean, Tensor rstd)
    {
        const string op = "dropout_add_layer_norm";
        RequireFloat(h, op);
        CheckProbability(op, p);
        RequireSameShape(h, residual, op); RequireSameShape(h, s, op);
        RequireSameDType(op, h, residual); RequireSameDType(op, h, s);
        RequireContiguous(s, op, "s");
        if (h.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {h.ShapeString}");
        if (h.Numel > 0)
        {
            using var hc = Dense(h);
            using var rc = Dense(residual);
            if (h.DType == DType.Float32) DropoutAddT<float>(hc, rc, s, p, seed, offset);
            else DropoutAddT<double>(hc, rc, s, p, seed, offset);
        }
        LayerNormForward(s, weight, bias, eps, y, mean, rstd);
    }

    /// <summary>s ← (keep ? h·scale : 0) + residual with <see cref="DropoutT{T}"/>'s mask and scale; p = 0: s ← h + residual.</summary>
    private static void DropoutAddT<T>(Tensor h, Tensor residual, Tensor s, double p, ulong seed, ulong offset) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* ph = h.DataPtr<T>(), pr = residual.DataPtr<T>(), ps = s.DataPtr<T>();
        int n = h.Numel;
        T scale = p >= 1 ? T.Zero : T.CreateTruncating(1.0 / (1.0 - p));
        const int Chunk = 4096; // a multiple of 4: chunks start on Philox block boundaries
        int chunks = (n + Chunk - 1) / Chunk;
        Parallelism.For(chunks, Chunk * 4L, (c0, c1) =>
        {
            Span<byte> keep = p == 0 ? default : stackalloc byte[Chunk];
            for (int ch = c0; ch < c1; ch++)
            {
                int st = ch * Chunk, len = Math.Min(Chunk, n - st);
                if (p == 0) { TensorPrimitives.Add(new ReadOnlySpan<T>(ph + st, len), new ReadOnlySpan<T>(pr + st, len), new Span<T>(ps + st, len)); continue; }
                KeepMask(seed, offset, st, len, p, keep);
                for (int i = 0; i < len; i++) ps[st + i] = (keep[i] != 0 ? ph[st + i] * scale : T.Zero) + pr[st + i];
            }
        });
    }

    public void DropoutAddLayerNormBackward(Tensor s, Tensor gy, Tensor? weight, Tensor mean, Tensor rstd, double p, ulong seed, ulong offset,
        Tensor gs, Tensor? gh, Tensor? gw, Tensor? gb)
    {
        const string op = "dropout_add_layer_norm backward";
        CheckProbability(op, p);
        LayerNormBackward(s, gy, weight, mean, rstd, gs, gw, gb);
        if (gh is null) return;
        RequireSameShape(gs, gh, op); RequireSameDType(op, gs, gh);
        RequireContiguous(gh, op, "gh");
        if (p == 0) { Copy(gs, gh); return; }
        using var mask = Tensor.Empty(gs.Shape, DType.UInt8, gs.Device);
        Dropout(gs, gh, mask, p, seed, offset);
    }

    // ------------------------------------------------------------------ softmax

    public void Softmax(Tensor x, Tensor y, bool log)
    {
        string op = log ? "log_softmax" : "softmax";
        RequireFloat(x, op);
        RequireSameShape(x, y, op); RequireSameDType(op, x, y);
        RequireContiguous(y, op, "output");
        if (x.Numel == 0) return;
        using var xc = Dense(x);
        int c = LastDim(x), r = x.Numel / c;
        if (x.DType == DType.Float32) SoftmaxT<float>(xc, y, log, r, c);
        else SoftmaxT<double>(xc, y, log, r, c);
    }

    private static void SoftmaxT<T>(Tensor x, Tensor y, bool log, int rows, int c) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* px = x.DataPtr<T>(), py = y.DataPtr<T>();
        Parallelism.For(rows, 8L * c, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
                SoftmaxRow(new ReadOnlySpan<T>(px + (long)r * c, c), new Span<T>(py + (long)r * c, c), log);
        });
    }

    /// <summary>Numerically stable (log-)softmax of one row; src and dst may alias. Returns log Σ exp(x).</summary>
    private static T SoftmaxRow<T>(ReadOnlySpan<T> src, Span<T> dst, bool log) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T m = TensorPrimitives.Max(src);
        if (T.IsNegativeInfinity(m)) m = T.Zero; // all −∞: exp gives 0s, sum 0, log −∞ (PyTorch gives NaN rows either way)
        if (log)
        {
            // log Σ exp(x − m) without keeping the exponentials: a per-thread scratch row.
            T[] tmp = Scratch<T>.Get(src.Length);
            var t = tmp.AsSpan(0, src.Length);
            TensorPrimitives.Subtract(src, m, t);
            TensorPrimitives.Exp(t, t);
            T lse = m + T.Log(TensorPrimitives.Sum<T>(t));
            TensorPrimitives.Subtract(src, lse, dst);
            return lse;
        }
        TensorPrimitives.Subtract(src, m, dst);
        TensorPrimitives.Exp<T>(dst, dst);
        T s = TensorPrimitives.Sum<T>(dst);
        TensorPrimitives.Multiply<T>(dst, T.One / s, dst);
        return m + T.Log(s);
    }

    /// <summary>A growing per-thread scratch array.</summary>
    private static class Scratch<T>
    {
        [ThreadStatic] private static T[]? _a;
        [ThreadStatic] private static T[]? _b;
        public static T[] Get(int n) { if (_a is null || _a.Length < n) _a = new T[Math.Max(n, 16)]; return _a; }
        public static T[] Get2(int n) { if (_b is null || _b.Length < n) _b = new T[Math.Max(n, 16)]; return _b; }
    }

    public void SoftmaxBackward(Tensor y, Tensor gy, Tensor gx, bool log)
    {
        string op = log ? "log_softmax backward" : "softmax backward";
        RequireFloat(y, op);
        RequireSameShape(y, gy, op); RequireSameShape(y, gx, op);
        RequireSameDType(op, y, gy); RequireSameDType(op, y, gx);
        RequireContiguous(gx, op, "gx");
        if (y.Numel == 0) return;
        using var yc = Dense(y);
        using var gc = Dense(gy);
        int c = LastDim(y), r = y.Numel / c;
        if (y.DType == DType.Float32) SoftmaxBackwardT<float>(yc, gc, gx, log, r, c);
        else SoftmaxBackwardT<double>(yc, gc, gx, log, r, c);
    }

    private static void SoftmaxBackwardT<T>(Tensor y, Tensor gy, Tensor gx, bool log, int rows, int c) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* py = y.DataPtr<T>(), pg = gy.DataPtr<T>(), pgx = gx.DataPtr<T>();
        Parallelism.For(rows, 6L * c, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var yr = new ReadOnlySpan<T>(py + (long)r * c, c);
                var gr = new ReadOnlySpan<T>(pg + (long)r * c, c);
                var o = new Span<T>(pgx + (long)r * c, c);
                if (log)
                {
                    // gx = gy − exp(y)·Σgy
                    T s = TensorPrimitives.Sum(gr);
                    T[] tmp = Scratch<T>.Get(c);
                    var e = tmp.AsSpan(0, c);
                    TensorPrimitives.Exp(yr, e);
                    TensorPrimitives.MultiplyAdd(e, -s, gr, o);
                }
                else
                {
                    // gx = y·(gy − Σ gy·y)
                    T dot = TensorPrimitives.Dot(yr, gr);
                    TensorPrimitives.Subtract(gr, dot, o);
                    TensorPrimitives.Multiply(o, yr, o);
                }
            }
        });
    }

    // ------------------------------------------------------------------ cross-entropy

    private static void CheckCrossEntropy(string op, Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor rowTensor1, Tensor? rowTensor2)
    {
        RequireFloat(logits, op);
        if (logits.Rank != 2) throw new ArgumentException($"{op}: logits must be [N, C], got {logits.ShapeString}");
        int n = logits.Sizes[0], c = logits.Sizes[1];
        if ((target is null) == (softTarget is null)) throw new ArgumentException($"{op}: pass exactly one of target and softTarget");
        if (target is not null)
        {
            if (target.DType != DType.Int64) throw new ArgumentException($"{op}: target must be int64, got {target.DType.Name()} {target.ShapeString}");
            if (target.Rank != 1 || target.Sizes[0] != n) throw new ArgumentException($"{op}: target {target.ShapeString} does not match logits {logits.ShapeString} (want [{n}])");
            foreach (var (t, i) in target.ToArray<long>().Select((t, i) => (t, i)))
                if (t != ignoreIndex && (t < 0 || t >= c))
                    throw new ArgumentException($"{op}: target {t} at row {i} is out of range for {c} classes (logits {logits.ShapeString}, ignore_index {ignoreIndex})");
        }
        if (softTarget is not null)
        {
            RequireSameShape(logits, softTarget, op);
            RequireSameDType(op, logits, softTarget);
        }
        if (rowTensor1.Numel != n) throw new ArgumentException($"{op}: per-row tensor {rowTensor1.ShapeString} must have {n} elements for logits {logits.ShapeString}");
        if (rowTensor2 is not null && rowTensor2.Numel != n) throw new ArgumentException($"{op}: per-row tensor {rowTensor2.ShapeString} must have {n} elements for logits {logits.ShapeString}");
        RequireSameDType(op, logits, rowTensor1);
        if (rowTensor2 is not null) RequireSameDType(op, logits, rowTensor2);
    }

    public void CrossEntropyForward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor loss, Tensor logSumExp)
    {
        const string op = "cross_entropy";
        CheckCrossEntropy(op, logits, target, softTarget, ignoreIndex, loss, logSumExp);
        RequireContiguous(loss, op, "loss"); RequireContiguous(logSumExp, op, "logSumExp");
        if (logits.Numel == 0 && logits.Sizes[0] == 0) return;
        using var xc = Dense(logits);
        using var tc = target?.ContiguousRaw();
        using var sc = softTarget?.ContiguousRaw();
        if (logits.DType == DType.Float32) CrossEntropyForwardT<float>(xc, tc, sc, ignoreIndex, loss, logSumExp);
        else CrossEntropyForwardT<double>(xc, tc, sc, ignoreIndex, loss, logSumExp);
    }

    private static void CrossEntropyForwardT<T>(Tensor x, Tensor? target, Tensor? soft, int ignoreIndex, Tensor loss, Tensor lse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = x.Sizes[0], c = x.Sizes[1];
        T* px = x.DataPtr<T>(), pl = loss.DataPtr<T>(), pe = lse.DataPtr<T>();
        long* pt = target is null ? null : target.DataPtr<long>();
        T* ps = soft is null ? null : soft.DataPtr<T>();
        Parallelism.For(n, 8L * c, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var xr = new ReadOnlySpan<T>(px + (long)r * c, c);
                T e;
                if (c == 0) e = T.NegativeInfinity;
                else
                {
                    T m = TensorPrimitives.Max(xr);
                    if (T.IsNegativeInfinity(m)) m = T.Zero;
                    var tmp = Scratch<T>.Get(c).AsSpan(0, c);
                    TensorPrimitives.Subtract(xr, m, tmp);
                    TensorPrimitives.Exp(tmp, tmp);
                    e = m + T.Log(TensorPrimitives.Sum<T>(tmp));
                }
                pe[r] = e;
                if (pt != null)
                {
                    long t = pt[r];
                    pl[r] = t == ignoreIndex ? T.Zero : e - xr[(int)t];
                }
                else
                {
                    // −Σ t·(x − lse) = lse·Σt − Σ t·x
                    var tr = new ReadOnlySpan<T>(ps + (long)r * c, c);
                    pl[r] = c == 0 ? T.Zero : e * TensorPrimitives.Sum(tr) - TensorPrimitives.Dot(tr, xr);
                }
            }
        });
    }

    public void CrossEntropyBackward(Tensor logits, Tensor? target, Tensor? softTarget, int ignoreIndex, Tensor logSumExp, Tensor gLoss, Tensor gLogits)
    {
        const string op = "cross_entropy backward";
        CheckCrossEntropy(op, logits, target, softTarget, ignoreIndex, logSumExp, gLoss);
        RequireSameShape(logits, gLogits, op); RequireSameDType(op, logits, gLogits);
        RequireContiguous(gLogits, op, "gLogits");
        if (logits.Numel == 0) return;
        using var xc = Dense(logits);
        using var tc = target?.ContiguousRaw();
        using var sc = softTarget?.ContiguousRaw();
        using var ec = Dense(logSumExp);
        using var gc = Dense(gLoss);
        if (logits.DType == DType.Float32) CrossEntropyBackwardT<float>(xc, tc, sc, ignoreIndex, ec, gc, gLogits);
        else CrossEntropyBackwardT<double>(xc, tc, sc, ignoreIndex, ec, gc, gLogits);
    }

    private static void CrossEntropyBackwardT<T>(Tensor x, Tensor? target, Tensor? soft, int ignoreIndex, Tensor lse, Tensor gLoss, Tensor gx)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = x.Sizes[0], c = x.Sizes[1];
        T* px = x.DataPtr<T>(), pe = lse.DataPtr<T>(), pgl = gLoss.DataPtr<T>(), pgx = gx.DataPtr<T>();
        long* pt = target is null ? null : target.DataPtr<long>();
        T* ps = soft is null ? null : soft.DataPtr<T>();
        Parallelism.For(n, 6L * c, (r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                var o = new Span<T>(pgx + (long)r * c, c);
                var xr = new ReadOnlySpan<T>(px + (long)r * c, c);
                T g = pgl[r];
                if (pt != null)
                {
                    long t = pt[r];
                    if (t == ignoreIndex) { o.Clear(); continue; }
                    // g·(softmax − onehot)
                    TensorPrimitives.Subtract(xr, pe[r], o);
                    TensorPrimitives.Exp(o, o);
                    TensorPrimitives.Multiply(o, g, o);
                    o[(int)t] -= g;
                }
                else
                {
                    // g·(softmax·Σt − t)
                    var tr = new ReadOnlySpan<T>(ps + (long)r * c, c);
                    T st = TensorPrimitives.Sum(tr);
                    TensorPrimitives.Subtract(xr, pe[r], o);
                    TensorPrimitives.Exp(o, o);
                    TensorPrimitives.Multiply(o, st, o);
                    TensorPrimitives.Subtract(o, tr, o);
                    TensorPrimitives.Multiply(o, g, o);
                }
            }
        });
    }

    // ------------------------------------------------------------------ dropout

    public void Dropout(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset)
    {
        const string op = "dropout";
        RequireFloat(x, op);
        CheckProbability(op, p);
        RequireSameShape(x, y, op); RequireSameShape(x, mask, op); RequireSameDType(op, x, y);
        if (mask.DType is not (DType.UInt8 or DType.Bool)) throw new ArgumentException($"{op}: mask must be uint8, got {mask.DType.Name()} {mask.ShapeString}");
        RequireContiguous(y, op, "output"); RequireContiguous(mask, op, "mask");
        if (x.Numel == 0) return;
        using var xc = Dense(x);
        if (x.DType == DType.Float32) DropoutT<float>(xc, y, mask, p, seed, offset);
        else DropoutT<double>(xc, y, mask, p, seed, offset);
    }

    private static void DropoutT<T>(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* px = x.DataPtr<T>(), py = y.DataPtr<T>();
        byte* pm = (byte*)mask.DataPtrRaw();
        int n = x.Numel;
        T scale = p >= 1 ? T.Zero : T.CreateTruncating(1.0 / (1.0 - p));
        const int Chunk = 4096; // a multiple of 4: chunks start on Philox block boundaries
        int chunks = (n + Chunk - 1) / Chunk;
        Parallelism.For(chunks, Chunk * 4L, (c0, c1) =>
        {
            for (int ch = c0; ch < c1; ch++)
            {
                int s = ch * Chunk, len = Math.Min(Chunk, n - s);
                var keep = new Span<byte>(pm + s, len);
                KeepMask(seed, offset, s, len, p, keep);
                for (int i = 0; i < len; i++) py[s + i] = keep[i] != 0 ? px[s + i] * scale : T.Zero;
            }
        });
    }

    // ------------------------------------------------------------------ fused attention

    /// <summary>A [B,H,R,D] operand: element offsets per (b,h) and row, rows with unit stride.</summary>
    private readonly struct Heads4
    {
        public readonly int SB, SH, SR, Off;
        public Heads4(Tensor t) { SB = t.Strides[0]; SH = t.Strides[1]; SR = t.Strides[2]; Off = t.Offset; }
        public long Row(int b, int h, int r) => Off + (long)b * SB + (long)h * SH + (long)r * SR;
    }

    private static void CheckAttention(string op, Tensor q, Tensor k, Tensor v, out int bsz, out int heads, out int l, out int s, out int d)
    {
        RequireFloat(q, op);
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4)
            throw new ArgumentException($"{op}: q {q.ShapeString}, k {k.ShapeString}, v {v.ShapeString} must all be [B,H,L,D]");
        bsz = q.Sizes[0]; heads = q.Sizes[1]; l = q.Sizes[2]; d = q.Sizes[3]; s = k.Sizes[2];
        if (k.Sizes[0] != bsz || k.Sizes[1] != heads || k.Sizes[3] != d || !k.Sizes.SequenceEqual(v.Sizes))
            throw new ArgumentException($"{op}: q {q.ShapeString}, k {k.ShapeString} and v {v.ShapeString} do not match (want k = v = [{bsz},{heads},S,{d}])");
        RequireSameDType(op, q, k); RequireSameDType(op, q, v);
    }

    /// <summary>A handle whose last dim has unit stride (a copy when it does not).</summary>
    private static Tensor UnitRows(Tensor t) => t.Rank > 0 && (t.Sizes[^1] <= 1 || t.Strides[^1] == 1) ? t.Alias() : t.ContiguousRaw();

    private static void RequireUnitRows(Tensor t, string op, string name)
    {
        if (t.Sizes[^1] > 1 && t.Strides[^1] != 1) throw new ArgumentException($"{op}: {name} {t.ShapeString} must have unit stride in its last dim");
    }

    public void AttentionForward(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double dropoutP, ulong seed, ulong offset, Tensor? o, Tensor? probs)
    {
        const string op = "attention";
        CheckAttention(op, q, k, v, out int bsz, out int heads, out int l, out int s, out _);
        CheckProbability(op, dropoutP);
        int[] pShape = [bsz, heads, l, s];
        if (o is null && probs is null) throw new ArgumentException($"{op}: neither the output nor the probabilities asked for (q {q.ShapeString})");
        if (o is not null && !o.Sizes.SequenceEqual(q.Sizes)) throw new ArgumentException($"{op}: output {o.ShapeString} must match q {q.ShapeString}");
        if (probs is not null && !probs.Sizes.SequenceEqual(pShape)) throw new ArgumentException($"{op}: probs {probs.ShapeString} must be {Shape.Format(pShape)}");
        if (mask is not null)
        {
            if (!mask.Sizes.SequenceEqual(pShape)) throw new ArgumentException($"{op}: mask {mask.ShapeString} must be broadcast to {Shape.Format(pShape)}");
            RequireSameDType(op, q, mask);
        }
        if (o is not null) { RequireSameDType(op, q, o); RequireUnitRows(o, op, "output"); }
        if (probs is not null) { RequireSameDType(op, q, probs); RequireContiguous(probs, op, "probs"); }
        if ((o?.Numel ?? 0) == 0 && (probs?.Numel ?? 0) == 0) return;
        using var qc = UnitRows(q);
        using var kc = UnitRows(k);
        using var vc = UnitRows(v);
        if (q.DType == DType.Float32) AttentionForwardT<float>(qc, kc, vc, mask, scale, dropoutP, seed, offset, o, probs);
        else AttentionForwardT<double>(qc, kc, vc, mask, scale, dropoutP, seed, offset, o, probs);
    }

    // Attention works on blocks of 4 query rows per (b, h) so every k/v row loaded is used four times.
    // The three inner routines below are the small GEMMs of attention written for that block shape.
    private const int QBlock = 4;

    /// <summary>r[i] ← a_i · b for the four rows a_i (length d).</summary>
    private static void Dot4<T>(T** a, T* b, int d, T* r) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int e = 0;
        T t0 = T.Zero, t1 = T.Zero, t2 = T.Zero, t3 = T.Zero;
        if (Vector256.IsHardwareAccelerated && d >= Vector256<T>.Count)
        {
            int w = Vector256<T>.Count;
            Vector256<T> s0 = default, s1 = default, s2 = default, s3 = default;
            for (; e <= d - w; e += w)
            {
                var vb = Vector256.Load(b + e);
                s0 += Vector256.Load(a[0] + e) * vb;
                s1 += Vector256.Load(a[1] + e) * vb;
                s2 += Vector256.Load(a[2] + e) * vb;
                s3 += Vector256.Load(a[3] + e) * vb;
            }
            t0 = Vector256.Sum(s0); t1 = Vector256.Sum(s1); t2 = Vector256.Sum(s2); t3 = Vector256.Sum(s3);
        }
        for (; e < d; e++)
        {
            T be = b[e];
            t0 += a[0][e] * be; t1 += a[1][e] * be; t2 += a[2][e] * be; t3 += a[3][e] * be;
        }
        r[0] = t0; r[1] = t1; r[2] = t2; r[3] = t3;
    }

    /// <summary>dst_i ← Σ_s w[i·n + s] · row_s for the four destination rows (row_s at rows + s·rowStride, length d).</summary>
    private static void WeightedRows4<T>(T* rows, long rowStride, int n, T* w, int d, T** dst) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int e = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            int vw = Vector256<T>.Count;
            for (; e <= d - vw; e += vw)
            {
                Vector256<T> a0 = default, a1 = default, a2 = default, a3 = default;
                T* r = rows + e;
                for (int s = 0; s < n; s++, r += rowStride)
                {
                    var vr = Vector256.Load(r);
                    a0 += Vector256.Create(w[s]) * vr;
                    a1 += Vector256.Create(w[n + s]) * vr;
                    a2 += Vector256.Create(w[2 * n + s]) * vr;
                    a3 += Vector256.Create(w[3 * n + s]) * vr;
                }
                a0.Store(dst[0] + e); a1.Store(dst[1] + e); a2.Store(dst[2] + e); a3.Store(dst[3] + e);
            }
        }
        for (; e < d; e++)
        {
            T a0 = T.Zero, a1 = T.Zero, a2 = T.Zero, a3 = T.Zero;
            T* r = rows + e;
            for (int s = 0; s < n; s++, r += rowStride)
            {
                T x = *r;
                a0 += w[s] * x; a1 += w[n + s] * x; a2 += w[2 * n + s] * x; a3 += w[3 * n + s] * x;
            }
            dst[0][e] = a0; dst[1][e] = a1; dst[2][e] = a2; dst[3][e] = a3;
        }
    }

    /// <summary>row_s += Σ_i w[i·n + s] · src_i for every s (row_s at rows + s·rowStride, length d).</summary>
    private static void AddWeightedSources4<T>(T* rows, long rowStride, int n, T* w, int d, T** src) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int s = 0; s < n; s++)
        {
            T* r = rows + s * rowStride;
            T w0 = w[s], w1 = w[n + s], w2 = w[2 * n + s], w3 = w[3 * n + s];
            int e = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                int vw = Vector256<T>.Count;
                var c0 = Vector256.Create(w0); var c1 = Vector256.Create(w1); var c2 = Vector256.Create(w2); var c3 = Vector256.Create(w3);
                for (; e <= d - vw; e += vw)
                {
                    var acc = Vector256.Load(r + e);
                    acc += c0 * Vector256.Load(src[0] + e) + c1 * Vector256.Load(src[1] + e) + c2 * Vector256.Load(src[2] + e) + c3 * Vector256.Load(src[3] + e);
                    acc.Store(r + e);
                }
            }
            for (; e < d; e++) r[e] += w0 * src[0][e] + w1 * src[1][e] + w2 * src[2][e] + w3 * src[3][e];
        }
    }

    /// <summary>
    /// The fused forward. Either output may be null: without <paramref name="probs"/> the scores of a query block go to a
    /// per-thread scratch of 4·S instead of the [B,H,L,S] tensor (same arithmetic, so o is bitwise the same); without
    /// <paramref name="o"/> the block stops after the softmax (no dropout mask, no P·V).
    /// </summary>
    private static void AttentionForwardT<T>(Tensor q, Tensor k, Tensor v, Tensor? mask, double scale, double p, ulong seed, ulong offset, Tensor? o, Tensor? probs)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int bsz = q.Sizes[0], heads = q.Sizes[1], l = q.Sizes[2], d = q.Sizes[3], s = k.Sizes[2];
        T* bq = (T*)q.Storage.Pointer, bk = (T*)k.Storage.Pointer, bv = (T*)v.Storage.Pointer;
        T* bo = o is null ? null : (T*)o.Storage.Pointer;
        T* pp = probs is null ? null : probs.DataPtr<T>();
        T* bm = mask is null ? null : (T*)mask.Storage.Pointer;
        var sq = new Heads4(q); var sk = new Heads4(k); var sv = new Heads4(v);
        var so = o is null ? default : new Heads4(o);
        int mb = 0, mh = 0, ml = 0, ms = 0, mo = 0;
        if (mask is not null) { mb = mask.Strides[0]; mh = mask.Strides[1]; ml = mask.Strides[2]; ms = mask.Strides[3]; mo = mask.Offset; }
        T tScale = T.CreateTruncating(scale);
        T drop = p >= 1 ? T.Zero : T.CreateTruncating(1.0 / (1.0 - p));
        bool output = bo != null;
        long cost = (output ? 2L : 1L) * l * s * Math.Max(d, 1) + 1;
        Parallelism.For(bsz * heads, cost, (i0, i1) =>
        {
            int sn = Math.Max(s, 1);
            var keep = new byte[sn];
            var wBuf = new T[QBlock * sn];                    // dropped, scaled probabilities of the block
            var scBuf = pp == null ? new T[QBlock * sn] : []; // the block's scores when probs is not asked for
            var dummy = new T[Math.Max(d, 1)];                // destination for the unused rows of a partial block
            var dotBuf = new T[QBlock];
            fixed (T* w = wBuf, scratch = scBuf, dm = dummy, dots = dotBuf)
            {
                T** qr = stackalloc T*[QBlock];
                T** orow = stackalloc T*[QBlock];
                for (int bh = i0; bh < i1; bh++)
                {
                    int b = bh / heads, h = bh % heads;
                    T* kBase = bk + sk.Row(b, h, 0), vBase = bv + sv.Row(b, h, 0);
                    for (int l0 = 0; l0 < l; l0 += QBlock)
                    {
                        int nb = Math.Min(QBlock, l - l0);
                        // row i of the block's scores/probabilities: in probs, or in the scratch
                        T* rows = pp != null ? pp + ((long)bh * l + l0) * s : scratch;
                        for (int i = 0; i < QBlock; i++)
                        {
                            qr[i] = bq + sq.Row(b, h, l0 + Math.Min(i, nb - 1));
                            orow[i] = output && i < nb ? bo + so.Row(b, h, l0 + i) : dm;
                        }
                        // scores → probs rows
                        for (int si = 0; si < s; si++)
                        {
                            Dot4(qr, kBase + (long)si * sk.SR, d, dots);
                            for (int i = 0; i < nb; i++)
                            {
                                int li = l0 + i;
                                T sc = tScale * dots[i];
                                if (bm != null) sc += bm[mo + (long)b * mb + (long)h * mh + (long)li * ml + (long)si * ms];
                                rows[(long)i * s + si] = sc;
                            }
                        }
                        if (!output)
                        {
                            for (int i = 0; i < nb && s > 0; i++)
                            {
                                var pr = new Span<T>(rows + (long)i * s, s);
                                SoftmaxRow<T>(pr, pr, false);
                            }
                            continue;
                        }
                        new Span<T>(w, QBlock * s).Clear();
                        for (int i = 0; i < nb; i++)
                        {
                            long rowStart = ((long)bh * l + l0 + i) * s;
                            if (s == 0) continue;
                            var pr = new Span<T>(rows + (long)i * s, s);
                            SoftmaxRow<T>(pr, pr, false);
                            KeepMask(seed, offset, rowStart, s, p, keep);
                            for (int si = 0; si < s; si++) w[i * s + si] = keep[si] != 0 ? pr[si] * drop : T.Zero;
                        }
                        WeightedRows4(vBase, sv.SR, s, w, d, orow);
                    }
                }
            }
        });
    }

    public void AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double dropoutP, ulong seed, ulong offset,
        Tensor go, Tensor gq, Tensor gk, Tensor gv)
    {
        const string op = "attention backward";
        CheckAttention(op, q, k, v, out int bsz, out int heads, out int l, out int s, out _);
        CheckProbability(op, dropoutP);
        int[] pShape = [bsz, heads, l, s];
        if (!probs.Sizes.SequenceEqual(pShape)) throw new ArgumentException($"{op}: probs {probs.ShapeString} must be {Shape.Format(pShape)}");
        if (!go.Sizes.SequenceEqual(q.Sizes) || !gq.Sizes.SequenceEqual(q.Sizes))
            throw new ArgumentException($"{op}: go {go.ShapeString} and gq {gq.ShapeString} must match q {q.ShapeString}");
        if (!gk.Sizes.SequenceEqual(k.Sizes) || !gv.Sizes.SequenceEqual(v.Sizes))
            throw new ArgumentException($"{op}: gk {gk.ShapeString} and gv {gv.ShapeString} must match k {k.ShapeString}");
        foreach (var t in new[] { probs, go, gq, gk, gv }) RequireSameDType(op, q, t);
        RequireUnitRows(gq, op, "gq"); RequireUnitRows(gk, op, "gk"); RequireUnitRows(gv, op, "gv");
        using var qc = UnitRows(q);
        using var kc = UnitRows(k);
        using var vc = UnitRows(v);
        using var goc = UnitRows(go);
        using var pc = Dense(probs);
        if (q.DType == DType.Float32) AttentionBackwardT<float>(qc, kc, vc, pc, scale, dropoutP, seed, offset, goc, gq, gk, gv);
        else AttentionBackwardT<double>(qc, kc, vc, pc, scale, dropoutP, seed, offset, goc, gq, gk, gv);
    }

    private static void AttentionBackwardT<T>(Tensor q, Tensor k, Tensor v, Tensor probs, double scale, double p, ulong seed, ulong offset,
        Tensor go, Tensor gq, Tensor gk, Tensor gv) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int bsz = q.Sizes[0], heads = q.Sizes[1], l = q.Sizes[2], d = q.Sizes[3], s = k.Sizes[2];
        T* bq = (T*)q.Storage.Pointer, bk = (T*)k.Storage.Pointer, bv = (T*)v.Storage.Pointer, bgo = (T*)go.Storage.Pointer;
        T* bgq = (T*)gq.Storage.Pointer, bgk = (T*)gk.Storage.Pointer, bgv = (T*)gv.Storage.Pointer;
        T* pp = probs.DataPtr<T>();
        var sq = new Heads4(q); var sk = new Heads4(k); var sv = new Heads4(v); var sgo = new Heads4(go);
        var sgq = new Heads4(gq); var sgk = new Heads4(gk); var sgv = new Heads4(gv);
        T tScale = T.CreateTruncating(scale);
        T drop = p >= 1 ? T.Zero : T.CreateTruncating(1.0 / (1.0 - p));
        Parallelism.For(bsz * heads, 5L * l * s * Math.Max(d, 1) + 1, (i0, i1) =>
        {
            int sn = Math.Max(s, 1);
            var keep = new byte[sn];
            var pdBuf = new T[QBlock * sn];   // P·keep·drop: the weights of V in the forward
            var gsBuf = new T[QBlock * sn];   // gradient of the scaled scores
            var dummy = new T[Math.Max(d, 1)];
            var zeros = new T[Math.Max(d, 1)];
            var dotBuf = new T[QBlock];
            fixed (T* pd = pdBuf, gs = gsBuf, dm = dummy, zr = zeros, dots = dotBuf)
            {
                T** gor = stackalloc T*[QBlock];
                T** qr = stackalloc T*[QBlock];
                T** gqr = stackalloc T*[QBlock];
                for (int bh = i0; bh < i1; bh++)
                {
                    int b = bh / heads, h = bh % heads;
                    T* kBase = bk + sk.Row(b, h, 0), vBase = bv + sv.Row(b, h, 0);
                    T* gkBase = bgk + sgk.Row(b, h, 0), gvBase = bgv + sgv.Row(b, h, 0);
                    for (int si = 0; si < s; si++)
                    {
                        new Span<T>(gkBase + (long)si * sgk.SR, d).Clear();
                        new Span<T>(gvBase + (long)si * sgv.SR, d).Clear();
                    }
                    for (int l0 = 0; l0 < l; l0 += QBlock)
                    {
                        int nb = Math.Min(QBlock, l - l0);
                        for (int i = 0; i < QBlock; i++)
                        {
                            bool real = i < nb;
                            gor[i] = real ? bgo + sgo.Row(b, h, l0 + i) : zr;
                            qr[i] = real ? bq + sq.Row(b, h, l0 + i) : zr;
                            gqr[i] = real ? bgq + sgq.Row(b, h, l0 + i) : dm;
                        }
                        new Span<T>(pd, QBlock * s).Clear();
                        new Span<T>(gs, QBlock * s).Clear();
                        for (int i = 0; i < nb; i++)
                        {
                            long rowStart = ((long)bh * l + l0 + i) * s;
                            KeepMask(seed, offset, rowStart, s, p, keep);
                            for (int si = 0; si < s; si++)
                            {
                                // gs temporarily holds keep·drop, the factor between P and the weights of V
                                T f = keep[si] != 0 ? drop : T.Zero;
                                gs[i * s + si] = f;
                                pd[i * s + si] = pp[rowStart + si] * f;
                            }
                        }
                        // gV_s += Σ_i pd_i[s]·gO_i
                        AddWeightedSources4(gvBase, sgv.SR, s, pd, d, gor);
                        // gP_i[s] = keep·drop·(gO_i · v_s), then through the softmax: gS = P·(gP − Σ P·gP)·scale
                        for (int si = 0; si < s; si++)
                        {
                            Dot4(gor, vBase + (long)si * sv.SR, d, dots);
                            for (int i = 0; i < nb; i++) gs[i * s + si] *= dots[i];
                        }
                        for (int i = 0; i < nb; i++)
                        {
                            var pr = new ReadOnlySpan<T>(pp + ((long)bh * l + l0 + i) * s, s);
                            var gr = new Span<T>(gs + i * s, s);
                            T dot = TensorPrimitives.Dot(pr, gr);
                            for (int si = 0; si < s; si++) gr[si] = pr[si] * (gr[si] - dot) * tScale;
                        }
                        // gQ_i = Σ_s gS_i[s]·k_s; gK_s += Σ_i gS_i[s]·q_i
                        WeightedRows4(kBase, sk.SR, s, gs, d, gqr);
                        AddWeightedSources4(gkBase, sgk.SR, s, gs, d, qr);
                    }
                }
            }
        });
    }


    // ------------------------------------------------------------------ VQ lookup

    public void VqLookup(Tensor z, Tensor codebook, Tensor ids)
    {
        const string op = "vq_lookup";
        RequireFloat(z, op);
        if (z.Rank != 2 || codebook.Rank != 2) throw new ArgumentException($"{op}: z {z.ShapeString} must be [N, D] and codebook {codebook.ShapeString} [K, D]");
        int n = z.Sizes[0], d = z.Sizes[1], kk = codebook.Sizes[0];
        if (codebook.Sizes[1] != d) throw new ArgumentException($"{op}: z {z.ShapeString} has {d} features, codebook {codebook.ShapeString} has {codebook.Sizes[1]}");
        if (kk == 0 && n > 0) throw new ArgumentException($"{op}: codebook {codebook.ShapeString} is empty");
        RequireSameDType(op, z, codebook);
        if (ids.DType != DType.Int64 || ids.Numel != n) throw new ArgumentException($"{op}: ids must be int64 with {n} elements, got {ids.DType.Name()} {ids.ShapeString}");
        RequireContiguous(ids, op, "ids");
        if (n == 0) return;
        using var zc = Dense(z);
        using var ec = Dense(codebook);
        if (z.DType == DType.Float32) VqLookupT<float>(zc, ec, ids);
        else VqLookupT<double>(zc, ec, ids);
    }

    private void VqLookupT<T>(Tensor z, Tensor e, Tensor ids) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = z.Sizes[0], d = z.Sizes[1], kk = e.Sizes[0];
        T* pz = z.DataPtr<T>(), pe = e.DataPtr<T>();
        long* pi = ids.DataPtr<long>();
        var en = new T[kk];
        for (int j = 0; j < kk; j++) { var r = new ReadOnlySpan<T>(pe + (long)j * d, d); en[j] = TensorPrimitives.Dot(r, r); }
        // d_k = ‖z‖² + ‖e_k‖² − 2 z·e_k, with the cross term from one GEMM per block of rows (bounded scratch).
        const int Block = 256;
        using var cross = Tensor.Empty([1, Math.Min(Block, n), kk], z.DType);
        using var eView = e.AsStrided([1, kk, d], [0, d, 1], e.Offset);
        T* pc = cross.DataPtr<T>();
        for (int r0 = 0; r0 < n; r0 += Block)
        {
            int nb = Math.Min(Block, n - r0);
            using var zBlock = z.AsStrided([1, nb, d], [0, d, 1], z.Offset + r0 * d);
            using var cBlock = cross.AsStrided([1, nb, kk], [0, kk, 1], cross.Offset);
            // Exact float32 whatever MatMulPrecision says: the result is a discrete nearest-code choice, not a GEMM output.
            if (d > 0) MatMul(zBlock, eView, cBlock, false, true, -2, 0, null, Precision.Fp32);
            else new Span<T>(pc, nb * kk).Clear();
            Parallelism.For(nb, 2L * kk + d, (i0, i1) =>
            {
                for (int i = i0; i < i1; i++)
                {
                    var zr = new ReadOnlySpan<T>(pz + (long)(r0 + i) * d, d);
                    T zn = TensorPrimitives.Dot(zr, zr);
                    T* cr = pc + (long)i * kk;
                    long best = 0; T bestD = T.PositiveInfinity; bool found = false;
                    for (int j = 0; j < kk; j++)
                    {
                        T dist = zn + en[j] + cr[j];
                        if (T.IsNaN(dist)) continue;
                        if (!found || dist < bestD) { bestD = dist; best = j; found = true; } // strict <: the first minimum wins
                    }
                    pi[r0 + i] = best;
                }
            });
        }
    }

    // ------------------------------------------------------------------ top-k and sort

    public void TopK(Tensor x, int k, bool largest, Tensor values, Tensor indices)
    {
        const string op = "topk";
        RequireFloat(x, op);
        if (x.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {x.ShapeString}");
        int c = x.Sizes[^1];
        if (k < 0 || k > c) throw new ArgumentException($"{op}: k = {k} is out of range for {c} elements in the last dim of {x.ShapeString}");
        SortRows(op, x, k, largest, values, indices);
    }

    public void Sort(Tensor x, bool descending, Tensor values, Tensor indices)
    {
        const string op = "sort";
        RequireFloat(x, op);
        if (x.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {x.ShapeString}");
        SortRows(op, x, x.Sizes[^1], descending, values, indices);
    }

    private void SortRows(string op, Tensor x, int k, bool descending, Tensor values, Tensor indices)
    {
        var want = x.Shape; want[^1] = k;
        if (!values.Sizes.SequenceEqual(want) || !indices.Sizes.SequenceEqual(want))
            throw new ArgumentException($"{op}: values {values.ShapeString} and indices {indices.ShapeString} must be {Shape.Format(want)} for input {x.ShapeString}");
        if (indices.DType != DType.Int64) throw new ArgumentException($"{op}: indices must be int64, got {indices.DType.Name()}");
        RequireSameDType(op, x, values);
        RequireContiguous(values, op, "values"); RequireContiguous(indices, op, "indices");
        int c = x.Sizes[^1];
        if (c == 0 || x.Numel == 0) return;
        int rows = x.Numel / c;
        using var xc = Dense(x);
        if (x.DType == DType.Float32) SortRowsT<float>(xc, rows, c, k, descending, values, indices);
        else SortRowsT<double>(xc, rows, c, k, descending, values, indices);
    }

    private static void SortRowsT<T>(Tensor x, int rows, int c, int k, bool descending, Tensor values, Tensor indices) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* px = x.DataPtr<T>(), pv = values.DataPtr<T>();
        long* pi = indices.DataPtr<long>();
        Parallelism.For(rows, 16L * c, (r0, r1) =>
        {
            var idx = new int[c];
            var key = new T[c];
            for (int r = r0; r < r1; r++)
            {
                T* xr = px + (long)r * c;
                for (int i = 0; i < c; i++) { idx[i] = i; key[i] = xr[i]; }
                // A total order (NaN counts as the largest, like PyTorch; ties by index) makes the unstable sort stable.
                Array.Sort(idx, (a, b) =>
                {
                    T va = key[a], vb = key[b];
                    int cmp;
                    bool na = T.IsNaN(va), nb = T.IsNaN(vb);
                    if (na || nb) cmp = na == nb ? 0 : (na ? 1 : -1);
                    else cmp = va < vb ? -1 : va > vb ? 1 : 0;
                    if (descending) cmp = -cmp;
                    return cmp != 0 ? cmp : a.CompareTo(b);
                });
                for (int i = 0; i < k; i++) { pv[(long)r * k + i] = key[idx[i]]; pi[(long)r * k + i] = idx[i]; }
            }
        });
    }

    // ------------------------------------------------------------------ optimisers

    private static void CheckState(string op, Tensor param, params (Tensor? T, string Name)[] others)
    {
        RequireFloat(param, op);
        RequireContiguous(param, op, "param");
        foreach (var (t, name) in others)
        {
            if (t is null) continue;
            if (!t.Sizes.SequenceEqual(param.Sizes)) throw new ArgumentException($"{op}: {name} {t.ShapeString} does not match param {param.ShapeString}");
            RequireSameDType(op, param, t);
            RequireContiguous(t, op, name);
        }
    }

    public void AdamWStep(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, AdamWParams p)
    {
        const string op = "adamw";
        CheckState(op, param, (grad, "grad"), (expAvg, "exp_avg"), (expAvgSq, "exp_avg_sq"));
        if (p.Step < 1) throw new ArgumentException($"{op}: step must be ≥ 1 (the step being taken), got {p.Step}");
        if (param.Numel == 0) return;
        if (param.DType == DType.Float32) AdamWT<float>(param, grad, expAvg, expAvgSq, p);
        else AdamWT<double>(param, grad, expAvg, expAvgSq, p);
    }

    /// <summary>Validates every item, then runs <see cref="AdamWStep"/>'s arithmetic on each in turn (bitwise the same).</summary>
    public void AdamWStepMany(IReadOnlyList<AdamWItem> items)
    {
        const string op = "adamw (multi-tensor)";
        ArgumentNullException.ThrowIfNull(items);
        for (int i = 0; i < items.Count; i++)
        {
            var it = items[i];
            string at = $"{op}, item {i}";
            if (it.Param is null) throw new ArgumentNullException(nameof(items), $"{at} has no param");
            if (it.Grad is null || it.ExpAvg is null || it.ExpAvgSq is null) throw new ArgumentNullException(nameof(items), $"{at} ({it.Param.ShapeString}): grad, exp_avg and exp_avg_sq are required");
            CheckState(at, it.Param, (it.Grad, "grad"), (it.ExpAvg, "exp_avg"), (it.ExpAvgSq, "exp_avg_sq"));
            if (it.Hp.Step < 1) throw new ArgumentException($"{at} ({it.Param.ShapeString}): step must be ≥ 1 (the step being taken), got {it.Hp.Step}");
        }
        AdamWItem.CheckDisjoint(items, op);
        foreach (var it in items)
        {
            if (it.Param.Numel == 0) continue;
            if (it.Param.DType == DType.Float32) AdamWT<float>(it.Param, it.Grad, it.ExpAvg, it.ExpAvgSq, it.Hp);
            else AdamWT<double>(it.Param, it.Grad, it.ExpAvg, it.ExpAvgSq, it.Hp);
        }
    }

    private static void AdamWT<T>(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, AdamWParams hp) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* pp = param.DataPtr<T>(), pg = grad.DataPtr<T>(), pm = expAvg.DataPtr<T>(), pv = expAvgSq.DataPtr<T>();
        // Python-float scalars as in transformers 3.x AdamW.step
        double stepSize = hp.Lr;
        if (hp.CorrectBias) stepSize = stepSize * Math.Sqrt(1.0 - Math.Pow(hp.Beta2, hp.Step)) / (1.0 - Math.Pow(hp.Beta1, hp.Step));
        T b1 = T.CreateTruncating(hp.Beta1), c1 = T.CreateTruncating(1.0 - hp.Beta1);
        T b2 = T.CreateTruncating(hp.Beta2), c2 = T.CreateTruncating(1.0 - hp.Beta2);
        T eps = T.CreateTruncating(hp.Eps), negStep = T.CreateTruncating(-stepSize);
        bool decay = hp.WeightDecay > 0;
        T negDecay = T.CreateTruncating(-hp.Lr * hp.WeightDecay);
        int n = param.Numel;
        Parallelism.For(n, 16, (s, e) =>
        {
            int i = s;
            if (Vector256.IsHardwareAccelerated)
            {
                // The same operations in the same order as the scalar tail, so every element rounds identically.
                int w = Vector256<T>.Count;
                var vb1 = Vector256.Create(b1); var vc1 = Vector256.Create(c1); var vb2 = Vector256.Create(b2); var vc2 = Vector256.Create(c2);
                var veps = Vector256.Create(eps); var vstep = Vector256.Create(negStep); var vdec = Vector256.Create(negDecay);
                for (; i <= e - w; i += w)
                {
                    var g = Vector256.Load(pg + i);
                    var m = Vector256.Load(pm + i) * vb1 + g * vc1;
                    var v = Vector256.Load(pv + i) * vb2 + g * g * vc2;
                    m.Store(pm + i); v.Store(pv + i);
                    var wv = Vector256.Load(pp + i) + vstep * (m / (Vector256.Sqrt(v) + veps));
                    if (decay) wv += wv * vdec;
                    wv.Store(pp + i);
                }
            }
            for (; i < e; i++)
            {
                T g = pg[i];
                T m = pm[i] * b1 + g * c1;          // exp_avg.mul_(β₁).add_(g, alpha=1−β₁)
                T v = pv[i] * b2 + g * g * c2;      // exp_avg_sq.mul_(β₂).addcmul_(g, g, value=1−β₂)
                pm[i] = m; pv[i] = v;
                T denom = T.Sqrt(v) + eps;
                T w = pp[i] + negStep * (m / denom); // p.addcdiv_(exp_avg, denom, value=−step_size)
                if (decay) w += w * negDecay;        // p.add_(p, alpha=−lr·wd), after the update
                pp[i] = w;
            }
        });
    }

    public void SgdStep(Tensor param, Tensor grad, Tensor? momentumBuffer, SgdParams p, bool firstStep)
    {
        const string op = "sgd";
        CheckState(op, param, (grad, "grad"), (momentumBuffer, "momentum_buffer"));
        if (p.Momentum != 0 && momentumBuffer is null) throw new ArgumentException($"{op}: momentum {p.Momentum} needs a momentum buffer for param {param.ShapeString}");
        if (p.Nesterov && (p.Momentum <= 0 || p.Dampening != 0)) throw new ArgumentException($"{op}: nesterov needs momentum > 0 and dampening 0 (got momentum {p.Momentum}, dampening {p.Dampening})");
        if (param.Numel == 0) return;
        if (param.DType == DType.Float32) SgdT<float>(param, grad, momentumBuffer, p, firstStep);
        else SgdT<double>(param, grad, momentumBuffer, p, firstStep);
    }

    private static void SgdT<T>(Tensor param, Tensor grad, Tensor? buf, SgdParams hp, bool first) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* pp = param.DataPtr<T>(), pg = grad.DataPtr<T>();
        T* pb = buf is null ? null : buf.DataPtr<T>();
        T wd = T.CreateTruncating(hp.WeightDecay), mom = T.CreateTruncating(hp.Momentum);
        T damp = T.CreateTruncating(1.0 - hp.Dampening), negLr = T.CreateTruncating(-hp.Lr);
        bool useWd = hp.WeightDecay != 0, useMom = hp.Momentum != 0;
        Parallelism.For(param.Numel, 12, (s, e) =>
        {
            for (int i = s; i < e; i++)
            {
                T d = pg[i];
                if (useWd) d += wd * pp[i];                         // d_p = g + wd·p
                if (useMom)
                {
                    T b = first ? d : pb[i] * mom + damp * d;      // buf = clone(d_p) at first, else μ·buf + (1−τ)·d_p
                    pb[i] = b;
                    d = hp.Nesterov ? d + mom * b : b;
                }
                pp[i] += negLr * d;
            }
        });
    }
}
