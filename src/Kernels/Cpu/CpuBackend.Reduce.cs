using System.Numerics;
using System.Numerics.Tensors;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    public void Reduce(ReduceOp op, Tensor x, int[] dims, Tensor y, Tensor? indices = null, double p0 = 0)
    {
        RequireFloat(x, $"reduce {op}");
        RequireContiguous(y, $"reduce {op}", "output");
        if (y.Rank != x.Rank) throw new ArgumentException($"reduce {op}: output {y.ShapeString} must keep the rank of input {x.ShapeString}");
        var isReduced = new bool[x.Rank];
        foreach (var d in dims) isReduced[d] = true;
        for (int d = 0; d < x.Rank; d++)
            if (y.Sizes[d] != (isReduced[d] ? 1 : x.Sizes[d])) throw new ArgumentException($"reduce {op}: output {y.ShapeString} does not match input {x.ShapeString} reduced over [{string.Join(",", dims)}]");
        if (indices is not null && (dims.Length != 1 || op is not (ReduceOp.Max or ReduceOp.Min)))
            throw new ArgumentException("reduce: indices are only produced by max/min over one dim");
        if (x.DType == DType.Float32 && op is ReduceOp.Sum or ReduceOp.Mean && TrySumLeading(x, isReduced, y, op == ReduceOp.Mean)) return;
        if (x.DType == DType.Float32) ReduceT<float>(op, x, isReduced, y, indices, p0);
        else ReduceT<double>(op, x, isReduced, y, indices, p0);
    }

    private static void ReduceT<T>(ReduceOp op, Tensor xt, bool[] isReduced, Tensor yt, Tensor? it, double correction)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        // Split x's dims into kept (outer, one output each) and reduced (inner odometer).
        var keptShape = new List<int>(); var keptStride = new List<int>();
        var redShape = new List<int>(); var redStride = new List<int>();
        for (int d = 0; d < xt.Rank; d++)
        {
            if (isReduced[d]) { redShape.Add(xt.Sizes[d]); redStride.Add(xt.Strides[d]); }
            else { keptShape.Add(xt.Sizes[d]); keptStride.Add(xt.Strides[d]); }
        }
        int nOut = yt.Numel, nRed = 1;
        foreach (var s in redShape) nRed *= s;
        T* px = (T*)xt.Storage.Pointer + xt.Offset; T* py = yt.DataPtr<T>();
        long* pi = it is null ? null : it.DataPtr<long>();
        int[] rs = redShape.ToArray(), rst = redStride.ToArray(), ks = keptShape.ToArray(), kst = keptStride.ToArray();
        // Inner run: the reduced dims with unit stride innermost become a dense span.
        bool denseInner = rs.Length == 1 && rst[0] == 1;
        if (nRed == 0 && op is ReduceOp.Max or ReduceOp.Min)
            throw new ArgumentException($"reduce {op}: cannot reduce over an empty dimension of {xt.ShapeString}");

        Parallelism.For(nOut, nRed, (s, e) =>
        {
            var buf = new double[nRed];
            for (int o = s; o < e; o++)
            {
                int baseOff = 0, rem = o;
                for (int d = ks.Length - 1; d >= 0; d--) { baseOff += rem % ks[d] * kst[d]; rem /= ks[d]; }
                T* p = px + baseOff;
                if (denseInner && typeof(T) == typeof(float) && op is ReduceOp.Sum or ReduceOp.Mean)
                {
                    float sum = TensorPrimitives.Sum(new ReadOnlySpan<float>((float*)p, nRed));
                    py[o] = T.CreateTruncating(op == ReduceOp.Mean ? sum / nRed : sum);
                    continue;
                }
                // Gather the reduced elements (in row-major order of the reduced dims) as doubles.
                var vals = buf;
                if (denseInner) for (int j = 0; j < nRed; j++) vals[j] = double.CreateTruncating(p[j]);
                else
                {
                    var idx = new int[rs.Length];
                    for (int j = 0; j < nRed; j++)
                    {
                        int off = 0;
                        for (int d = 0; d < rs.Length; d++) off += idx[d] * rst[d];
                        vals[j] = double.CreateTruncating(p[off]);
                        for (int d = rs.Length - 1; d >= 0; d--) { if (++idx[d] < rs[d]) break; idx[d] = 0; }
                    }
                }
                double r;
                switch (op)
                {
                    case ReduceOp.Sum: r = SumD(vals, nRed); break;
                    case ReduceOp.Mean: r = SumD(vals, nRed) / nRed; break;
                    case ReduceOp.Var:
                    {
                        double m = SumD(vals, nRed) / nRed, ss = 0;
                        for (int j = 0; j < nRed; j++) { double dv = vals[j] - m; ss += dv * dv; }
                        r = ss / Math.Max(nRed - correction, 0);
                        break;
                    }
                    default:
                    {
                        bool max = op == ReduceOp.Max;
                        int best = 0; double bv = vals[0];
                        for (int j = 1; j < nRed && !double.IsNaN(bv); j++)
                        {
                            double v = vals[j];
                            if (double.IsNaN(v) || (max ? v > bv : v < bv)) { bv = v; best = j; }
                        }
                        r = bv;
                        if (pi != null) pi[o] = best;
                        break;
                    }
                }
                py[o] = T.CreateTruncating(r);
            }
        });
    }

    /// <summary>
    /// Sum over leading dims of a contiguous float32 tensor (the bias-gradient shape [rows, cols] → [cols]):
    /// rows are added with SIMD into float32 sums, one column block per task.
    /// </summary>
    private static bool TrySumLeading(Tensor x, bool[] isReduced, Tensor y, bool mean)
    {
        if (!x.IsContiguous || x.Rank == 0) return false;
        int k = 0;
        while (k < x.Rank && isReduced[k]) k++;
        for (int d = k; d < x.Rank; d++) if (isReduced[d]) return false;
        if (k == 0 || k == x.Rank) return false;
        int rows = 1, cols = 1;
        for (int d = 0; d < k; d++) rows *= x.Sizes[d];
        for (int d = k; d < x.Rank; d++) cols *= x.Sizes[d];
        float* px = x.DataPtr<float>(), py = y.DataPtr<float>();
        // Split the columns into blocks that stay in L1 while all rows stream through.
        const int block = 1024;
        int nb = (cols + block - 1) / block;
        Parallelism.For(nb, (long)rows * Math.Min(block, cols), (s, e) =>
        {
            for (int b = s; b < e; b++)
            {
                int c0 = b * block, n = Math.Min(block, cols - c0);
                var acc = new Span<float>(py + c0, n);
                acc.Clear();
                for (int r = 0; r < rows; r++) TensorPrimitives.Add(acc, new ReadOnlySpan<float>(px + (long)r * cols + c0, n), acc);
                if (mean) TensorPrimitives.Multiply(acc, 1f / rows, acc);
            }
        });
        return true;
    }

    private static double SumD(double[] v, int n)
    {
        // Pairwise-free Kahan–Neumaier: float64 accumulation is enough for float32 data; this keeps float64 data exact-ish too.
        double s = 0, c = 0;
        for (int i = 0; i < n; i++)
        {
            double t = s + v[i];
            c += Math.Abs(s) >= Math.Abs(v[i]) ? (s - t) + v[i] : (v[i] - t) + s;
            s = t;
        }
        return s + c;
    }

    // ------------------------------------------------------------------ random

    public void Random(RandomKind kind, Tensor dst, ulong seed, ulong offset, double a = 0, double b = 1)
    {
        RequireContiguous(dst, "random", "output");
        if (kind is RandomKind.Uniform or RandomKind.Normal && !dst.DType.IsFloating())
            throw new ArgumentException($"random {kind}: output must be floating point, got {dst.DType.Name()}");
        byte* p = (byte*)dst.DataPtrRaw();
        int es = dst.DType.Size(); var dt = dst.DType;
        // Blocks of 4 elements share one Philox call; chunk boundaries are multiples of 4.
        int blocks = (dst.Numel + 3) / 4, n = dst.Numel;
        Parallelism.For(blocks, 64, (s, e) =>
        {
            for (int blk = s; blk < e; blk++)
            {
                int i0 = blk * 4, i1 = Math.Min(n, i0 + 4);
                for (int i = i0; i < i1; i++)
                {
                    double v = kind switch
                    {
                        RandomKind.Uniform => a + (b - a) * Philox.Uniform(seed, offset, i),
                        RandomKind.Normal => a + b * Philox.Normal(seed, offset, i),
                        RandomKind.Bernoulli => Philox.Uniform(seed, offset, i) < a ? 1 : 0,
                        _ => a + (long)(((ulong)Philox.Word(seed, offset, i) * (ulong)(b - a)) >> 32),
                    };
                    if (kind == RandomKind.Uniform && dt == DType.Float32 && (float)v >= b) v = Math.BitDecrement((float)b);
                    Elem.Write(p + (long)i * es, dt, v);
                }
            }
        });
    }

    public void RandPerm(Tensor dst, ulong seed, ulong offset)
    {
        if (dst.DType != DType.Int64 || dst.Rank != 1) throw new ArgumentException($"randperm: output must be int64 [n], got {dst.DType.Name()} {dst.ShapeString}");
        int n = dst.Numel;
        var keys = new ulong[n];
        for (int i = 0; i < n; i++) keys[i] = ((ulong)Philox.Word(seed, offset, i) << 32) | (uint)i; // ties broken by index
        Array.Sort(keys);
        var d = dst.AsSpan<long>();
        for (int i = 0; i < n; i++) d[i] = (long)(keys[i] & 0xFFFFFFFF);
    }
}
