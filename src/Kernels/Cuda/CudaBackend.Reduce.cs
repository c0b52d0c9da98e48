using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using Device = FashionViL.Tensors.Device;

namespace FashionViL.Kernels.Cuda;

/// <summary>Kept dims (one output each, row-major) and reduced dims of a reduction, each coalesced to rank ≤ 6.</summary>
public struct ReduceLayout
{
    public Dims6 KeptSize, KeptStride, RedSize, RedStride;
    public int Base;

    public static int Offset(Dims6 size, Dims6 st, int i)
    {
        int r = i, q, o = 0;
        q = r / size.D5; o += (r - q * size.D5) * st.D5; r = q;
        q = r / size.D4; o += (r - q * size.D4) * st.D4; r = q;
        q = r / size.D3; o += (r - q * size.D3) * st.D3; r = q;
        q = r / size.D2; o += (r - q * size.D2) * st.D2; r = q;
        q = r / size.D1; o += (r - q * size.D1) * st.D1; r = q;
        return o + r * st.D0;
    }
}

/// <summary>
/// Reductions: one group per output (grid-stride over outputs), threads stride over the reduced elements,
/// then warp shuffles and one shared-memory round across warps. Sums accumulate in float64.
/// Modes: 0 sum, 1 mean, 2 var (two passes: mean, then squared deviations), 3 max, 4 min (with first arg-extremum).
/// </summary>
internal static class ReduceKernels
{
    private const int MaxWarps = 32;

    /// <summary>Sum of v over the group; every thread gets the result.</summary>
    private static double GroupSum(double v, ArrayView<double> shared)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o /= 2) v += Warp.ShuffleDown(v, o);
        if (Warp.IsFirstLane) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
        double s = 0;
        for (int w = 0; w < warps; w++) s += shared[w];
        Group.Barrier();
        return s;
    }

    /// <summary>Whether (v1, k1) wins over (v2, k2): NaN first, then the extremum, ties to the lower index.</summary>
    private static bool Better(double v1, int k1, double v2, int k2, bool max)
    {
        bool n1 = KMath.IsNaN(v1), n2 = KMath.IsNaN(v2);
        if (n1 || n2) return n1 && n2 ? k1 < k2 : n1;
        if (v1 == v2) return k1 < k2;
        return max ? v1 > v2 : v1 < v2;
    }

    /// <summary>
    /// One thread per output, serial over the reduced elements: used when the outputs are the fast-moving
    /// dims (adjacent threads then read adjacent memory, e.g. a column sum of a row-major matrix) or the
    /// reductions are short. Same maths and tie rules as <see cref="Reduce{T, TIO}"/>.
    /// </summary>
    public static void ReducePerThread<T, TIO>(ArrayView<T> x, ArrayView<T> y, ArrayView<long> idx, ReduceLayout l,
        int nOut, int nRed, int mode, double correction, int writeIdx)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var io = default(TIO);
        for (int o = Grid.GlobalIndex.X; o < nOut; o = KMath.NextGridStride(o, nOut))
        {
            int baseOff = l.Base + ReduceLayout.Offset(l.KeptSize, l.KeptStride, o);
            double r;
            if (mode <= 2)
            {
                double s = 0;
                for (int j = 0; j < nRed; j++) s += io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                r = mode == 0 ? s : s / nRed;
                if (mode == 2)
                {
                    double ss = 0;
                    for (int j = 0; j < nRed; j++)
                    {
                        double d = io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]) - r;
                        ss += d * d;
                    }
                    double den = nRed - correction;
                    r = ss / (den > 0 ? den : 0.0);
                }
            }
            else
            {
                bool max = mode == 3;
                double bv = max ? double.NegativeInfinity : double.PositiveInfinity;
                int bk = int.MaxValue;
                for (int j = 0; j < nRed; j++)
                {
                    double v = io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                    if (Better(v, j, bv, bk, max)) { bv = v; bk = j; }
                }
                r = bv;
                if (writeIdx != 0) idx[o] = bk;
            }
            y[o] = io.FromDouble(r);
        }
    }

    /// <summary>
    /// Stage 1 of a split per-thread reduction (sum or mean): the per-thread form for few outputs over long reductions,
    /// e.g. a Linear layer's bias gradient Σ over 4,800 rows of [4,800, 768] — 768 threads, 3 groups, would otherwise walk
    /// 4,800 rows each. Virtual thread t handles output t % nOut (adjacent threads read adjacent memory, as in
    /// <see cref="ReducePerThread{T, TIO}"/>) over the chunk t / nOut of the reduced elements, four loads in flight, and
    /// writes its float64 partial to partV[o·split + chunk] for <see cref="ReduceFinish{T, TIO}"/>.
    /// </summary>
    public static void ReducePerThreadSplit<T, TIO>(ArrayView<T> x, ArrayView<double> partV, ReduceLayout l, int nOut, int nRed, int split)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var io = default(TIO);
        int chunk = (nRed + split - 1) / split;
        long total = (long)nOut * split, step = (long)Grid.DimX * Group.DimX;
        // a single reduced dim (the usual [rows, cols] column sum) needs no index arithmetic per element
        bool flat = l.RedSize.D0 == 1 && l.RedSize.D1 == 1 && l.RedSize.D2 == 1 && l.RedSize.D3 == 1 && l.RedSize.D4 == 1;
        for (long t = Grid.GlobalIndex.X; t < total; t += step)
        {
            int o = (int)(t % nOut), part = (int)(t / nOut);
            int baseOff = l.Base + ReduceLayout.Offset(l.KeptSize, l.KeptStride, o);
            int j0 = part * chunk, j1 = j0 + chunk < nRed ? j0 + chunk : nRed;
            double s = 0;
            if (flat)
            {
                int st = l.RedStride.D5;
                int j = j0;
                for (; j + 3 < j1; j += 4)
                {
                    T a = x[baseOff + j * st], b = x[baseOff + (j + 1) * st], c = x[baseOff + (j + 2) * st], d = x[baseOff + (j + 3) * st];
                    s += io.ToDouble(a); s += io.ToDouble(b); s += io.ToDouble(c); s += io.ToDouble(d);
                }
                for (; j < j1; j++) s += io.ToDouble(x[baseOff + j * st]);
            }
            else
                for (int j = j0; j < j1; j++) s += io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
            partV[(long)o * split + part] = s;
        }
    }

    /// <summary>
    /// Stage 1 of a split reduction (few outputs, long reductions: the GPU would otherwise run a handful of
    /// groups). Virtual group g handles part g % split of output g / split and writes a partial sum (modes 0, 1)
    /// or a partial (value, index) extremum (modes 3, 4).
    /// </summary>
    public static void ReduceSplit<T, TIO>(ArrayView<T> x, ArrayView<double> partV, ArrayView<int> partI, ReduceLayout l,
        int nOut, int nRed, int mode, int split)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var sv = SharedMemory.Allocate<double>(MaxWarps);
        var si = SharedMemory.Allocate<int>(MaxWarps);
        var io = default(TIO);
        int chunk = (nRed + split - 1) / split;
        int total = nOut * split;
        for (int g = Grid.IdxX; g < total; g += Grid.DimX)
        {
            int o = g / split, part = g - o * split;
            int j0 = part * chunk, j1 = j0 + chunk < nRed ? j0 + chunk : nRed;
            int baseOff = l.Base + ReduceLayout.Offset(l.KeptSize, l.KeptStride, o);
            if (mode <= 2)
            {
                double s = 0;
                for (int j = j0 + Group.IdxX; j < j1; j += Group.DimX)
                    s += io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                s = GroupSum(s, sv);
                if (Group.IdxX == 0) partV[g] = s;
            }
            else
            {
                bool max = mode == 3;
                double bv = max ? double.NegativeInfinity : double.PositiveInfinity;
                int bk = int.MaxValue;
                for (int j = j0 + Group.IdxX; j < j1; j += Group.DimX)
                {
                    double v = io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                    if (Better(v, j, bv, bk, max)) { bv = v; bk = j; }
                }
                for (int off = Warp.WarpSize / 2; off > 0; off /= 2)
                {
                    double ov = Warp.ShuffleDown(bv, off);
                    int ok = Warp.ShuffleDown(bk, off);
                    if (Better(ov, ok, bv, bk, max)) { bv = ov; bk = ok; }
                }
                if (Warp.IsFirstLane) { sv[Warp.WarpIdx] = bv; si[Warp.WarpIdx] = bk; }
                Group.Barrier();
                int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
                bv = sv[0]; bk = si[0];
                for (int w = 1; w < warps; w++)
                    if (Better(sv[w], si[w], bv, bk, max)) { bv = sv[w]; bk = si[w]; }
                Group.Barrier();
                if (Group.IdxX == 0) { partV[g] = bv; partI[g] = bk; }
            }
        }
    }

    /// <summary>Stage 2 of a split reduction: one thread per output combines its <paramref name="split"/> partials in order.</summary>
    public static void ReduceFinish<T, TIO>(ArrayView<double> partV, ArrayView<int> partI, ArrayView<T> y, ArrayView<long> idx,
        int nOut, int nRed, int mode, int split, int writeIdx)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var io = default(TIO);
        for (int o = Grid.GlobalIndex.X; o < nOut; o = KMath.NextGridStride(o, nOut))
        {
            double r;
            if (mode <= 2)
            {
                double s = 0;
                int p = 0, b = o * split;
                for (; p + 4 <= split; p += 4)   // four loads in flight, then the same additions in the same order
                {
                    double v0 = partV[b + p], v1 = partV[b + p + 1], v2 = partV[b + p + 2], v3 = partV[b + p + 3];
                    s += v0; s += v1; s += v2; s += v3;
                }
                for (; p < split; p++) s += partV[b + p];
                r = mode == 0 ? s : s / nRed;
            }
            else
            {
                bool max = mode == 3;
                double bv = partV[o * split];
                int bk = partI[o * split];
                for (int p = 1; p < split; p++)
                    if (Better(partV[o * split + p], partI[o * split + p], bv, bk, max)) { bv = partV[o * split + p]; bk = partI[o * split + p]; }
                r = bv;
                if (writeIdx != 0) idx[o] = bk;
            }
            y[o] = io.FromDouble(r);
        }
    }

    public static void Reduce<T, TIO>(ArrayView<T> x, ArrayView<T> y, ArrayView<long> idx, ReduceLayout l,
        int nOut, int nRed, int mode, double correction, int writeIdx)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var sv = SharedMemory.Allocate<double>(MaxWarps);
        var si = SharedMemory.Allocate<int>(MaxWarps);
        var io = default(TIO);
        for (int o = Grid.IdxX; o < nOut; o += Grid.DimX)
        {
            int baseOff = l.Base + ReduceLayout.Offset(l.KeptSize, l.KeptStride, o);
            double r;
            if (mode <= 2)
            {
                double s = 0;
                for (int j = Group.IdxX; j < nRed; j += Group.DimX)
                    s += io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                s = GroupSum(s, sv);
                r = mode == 0 ? s : s / nRed;
                if (mode == 2)
                {
                    double m = r, ss = 0;
                    for (int j = Group.IdxX; j < nRed; j += Group.DimX)
                    {
                        double d = io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]) - m;
                        ss += d * d;
                    }
                    ss = GroupSum(ss, sv);
                    double den = nRed - correction;
                    r = ss / (den > 0 ? den : 0.0);
                }
            }
            else
            {
                bool max = mode == 3;
                double bv = max ? double.NegativeInfinity : double.PositiveInfinity;
                int bk = int.MaxValue;
                for (int j = Group.IdxX; j < nRed; j += Group.DimX)
                {
                    double v = io.ToDouble(x[baseOff + ReduceLayout.Offset(l.RedSize, l.RedStride, j)]);
                    if (Better(v, j, bv, bk, max)) { bv = v; bk = j; }
                }
                for (int off = Warp.WarpSize / 2; off > 0; off /= 2)
                {
                    double ov = Warp.ShuffleDown(bv, off);
                    int ok = Warp.ShuffleDown(bk, off);
                    if (Better(ov, ok, bv, bk, max)) { bv = ov; bk = ok; }
                }
                if (Warp.IsFirstLane) { sv[Warp.WarpIdx] = bv; si[Warp.WarpIdx] = bk; }
                Group.Barrier();
                int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
                bv = sv[0]; bk = si[0];
                for (int w = 1; w < warps; w++)
                    if (Better(sv[w], si[w], bv, bk, max)) { bv = sv[w]; bk = si[w]; }
                Group.Barrier();
                r = bv;
                if (writeIdx != 0 && Group.IdxX == 0) idx[o] = bk;
            }
            if (Group.IdxX == 0) y[o] = io.FromDouble(r);
        }
    }
}

public sealed partial class CudaBackend
{
    private MemoryBuffer1D<long, Stride1D.Dense>? _noIndices;

    public void Reduce(ReduceOp op, Tensor x, int[] dims, Tensor y, Tensor? indices = null, double p0 = 0)
    {
        RequireFloat(x, $"reduce {op}");
        RequireHere(x, $"reduce {op}"); RequireHere(y, $"reduce {op}");
        RequireContiguous(y, $"reduce {op}", "output");
        if (y.DType != x.DType) throw new ArgumentException($"cuda: reduce {op}: output {y.DType.Name()} differs from input {x.DType.Name()}");
        if (y.Rank != x.Rank) throw new ArgumentException($"cuda: reduce {op}: output {y.ShapeString} must keep the rank of input {x.ShapeString}");
        var isReduced = new bool[x.Rank];
        foreach (var d in dims)
        {
            if (d < 0 || d >= x.Rank) throw new ArgumentException($"cuda: reduce {op}: dim {d} out of range for {x.ShapeString}");
            isReduced[d] = true;
        }
        for (int d = 0; d < x.Rank; d++)
            if (y.Sizes[d] != (isReduced[d] ? 1 : x.Sizes[d])) throw new ArgumentException($"cuda: reduce {op}: output {y.ShapeString} does not match input {x.ShapeString} reduced over [{string.Join(",", dims)}]");
        if (indices is not null)
        {
            if (dims.Length != 1 || op is not (ReduceOp.Max or ReduceOp.Min)) throw new ArgumentException("cuda: reduce: indices are only produced by max/min over one dim");
            if (indices.DType != DType.Int64 || !indices.Sizes.SequenceEqual(y.Sizes)) throw new ArgumentException($"cuda: reduce {op}: indices must be int64 {y.ShapeString}, got {indices.DType.Name()} {indices.ShapeString}");
            RequireContiguous(indices, $"reduce {op}", "indices");
        }
        var kept = new List<(int Size, int Stride)>();
        var red = new List<(int Size, int Stride)>();
        for (int d = 0; d < x.Rank; d++)
            if (x.Sizes[d] != 1) (isReduced[d] ? red : kept).Add((x.Sizes[d], x.Strides[d]));
        int nOut = y.Numel, nRed = 1;
        foreach (var (s, _) in red) nRed *= s;
        if (x.Numel == 0 && nRed == 0 && nOut > 0 && op is ReduceOp.Max or ReduceOp.Min)
            throw new ArgumentException($"cuda: reduce {op}: cannot reduce over an empty dimension of {x.ShapeString}");
        if (nOut == 0) return;
        if (x.Numel == 0) nRed = 0;
        var kc = Coalesce(kept, op);
        var rc = Coalesce(red, op);
        var l = new ReduceLayout { KeptSize = Dims6.From(Sizes(kc)), KeptStride = Dims6.Strides(Strides(kc)) };
        l.RedSize = Dims6.From(Sizes(rc)); l.RedStride = Dims6.Strides(Strides(rc));
        int mode = op switch { ReduceOp.Sum => 0, ReduceOp.Mean => 1, ReduceOp.Var => 2, ReduceOp.Max => 3, _ => 4 };
        _noIndices ??= Acc.Allocate1D<long>(1);
        ArrayView<long> iv = indices is null ? _noIndices.View : Dense<long>(indices);
        // Per-thread when the fastest kept dim is unit-stride and the reduced dims are not (coalesced reads across
        // threads), or when each reduction is short; otherwise a group per output with warp shuffles.
        int keptInner = kc.Count > 0 ? kc[^1].Stride : 0, redInner = rc.Count > 0 ? rc[^1].Stride : 0;
        bool perThread = nRed <= 16 || (keptInner == 1 && redInner != 1 && nOut >= 32);
        // Few outputs over long reductions: split each reduction across several groups (not for var, which
        // needs the mean before its second pass).
        // Per-thread sums over long reductions with too few outputs to fill the device: split the reduced elements too.
        if (perThread && op is ReduceOp.Sum or ReduceOp.Mean && nOut > 0)
        {
            int columnSplit = ColumnSplitOverride ?? ColumnSplit(nOut, nRed, Runtime.MaxGroups * Runtime.GroupSize);
            if (columnSplit > 1)
            {
                if (x.DType == DType.Float32) ReducePerThreadSplitT<float, Elems.F32>(x, y, l, nOut, nRed, mode, Math.Min(columnSplit, nRed));
                else ReducePerThreadSplitT<double, Elems.F64>(x, y, l, nOut, nRed, mode, Math.Min(columnSplit, nRed));
                return;
            }
        }
        int split = 1;
        if (!perThread && op != ReduceOp.Var)
        {
            if (SplitOverride is int forced) split = forced;
            else if (nOut < Runtime.MaxGroups) split = (int)Math.Clamp(Math.Min(Runtime.MaxGroups / nOut, nRed / (Runtime.GroupSize * 16L)), 1, 4096);
        }
        split = Math.Clamp(split, 1, Math.Max(nRed, 1));
        if (split > 1)
        {
            if (x.DType == DType.Float32) ReduceSplitT<float, Elems.F32>(x, y, iv, l, nOut, nRed, mode, split, indices is not null);
            else ReduceSplitT<double, Elems.F64>(x, y, iv, l, nOut, nRed, mode, split, indices is not null);
            return;
        }
        if (x.DType == DType.Float32) ReduceT<float, Elems.F32>(x, y, iv, l, nOut, nRed, mode, p0, indices is not null, perThread);
        else ReduceT<double, Elems.F64>(x, y, iv, l, nOut, nRed, mode, p0, indices is not null, perThread);
    }

    /// <summary>Tests set this to force a split factor (the emulator has too few groups to choose one itself).</summary>
    internal static int? SplitOverride { get; set; }

    /// <summary>Tests set this to force the chunk count of the split per-thread reduction (1: never split).</summary>
    internal static int? ColumnSplitOverride { get; set; }

    /// <summary>
    /// Chunks for a per-thread sum of nOut outputs over nRed elements on a device that holds <paramref name="threads"/>
    /// threads at once: 1 (no split) while the outputs alone fill a quarter of it or each sum is under 64 elements; else
    /// about √nRed chunks (a thread's chunk and the finishing thread's walk over the partials are then about equally long),
    /// at least 16 elements each, and no more threads than the device holds.
    /// </summary>
    internal static int ColumnSplit(int nOut, int nRed, int threads)
    {
        if (nRed < 64 || (long)nOut * 4 >= threads) return 1;
        long sp = Math.Min((long)Math.Round(Math.Sqrt(nRed)), Math.Min(nRed / 16, threads / Math.Max(nOut, 1)));
        return (int)Math.Max(1, sp);
    }

    private void ReducePerThreadSplitT<T, TIO>(Tensor x, Tensor y, ReduceLayout l, int nOut, int nRed, int mode, int split)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var (xv, xb) = Strided<T>(x);
        l.Base = xb;
        using var pv = Tensor.Empty([nOut * split], DType.Float64, Device);
        var k1 = Runtime.Kernel(("reduce-thread-split", typeof(T), typeof(TIO), typeof(void)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<double>, ReduceLayout, int, int, int>(ReduceKernels.ReducePerThreadSplit<T, TIO>));
        CudaRuntime.CountLaunch();
        k1(Stream, Runtime.Grid((long)nOut * split), xv, Dense<double>(pv), l, nOut, nRed, split);
        var k2 = Runtime.Kernel(("reduce-finish", typeof(T), typeof(TIO), typeof(void)),
            acc => acc.LoadKernel<ArrayView<double>, ArrayView<int>, ArrayView<T>, ArrayView<long>, int, int, int, int, int>(ReduceKernels.ReduceFinish<T, TIO>));
        _noPartI ??= Acc.Allocate1D<int>(1);
        CudaRuntime.CountLaunch();
        k2(Stream, Runtime.Grid(nOut), Dense<double>(pv), _noPartI.View, Dense<T>(y), _noIndices!.View, nOut, nRed, mode, split, 0);
    }

    private MemoryBuffer1D<int, Stride1D.Dense>? _noPartI;

    private void ReduceSplitT<T, TIO>(Tensor x, Tensor y, ArrayView<long> iv, ReduceLayout l, int nOut, int nRed, int mode, int split, bool writeIdx)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var (xv, xb) = Strided<T>(x);
        l.Base = xb;
        using var pv = Tensor.Empty([nOut * split], DType.Float64, Device);
        using var pi = Tensor.Empty([nOut * split], DType.Int32, Device);
        var k1 = Runtime.Kernel(("reduce-split", typeof(T), typeof(TIO), typeof(void)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<double>, ArrayView<int>, ReduceLayout, int, int, int, int>(ReduceKernels.ReduceSplit<T, TIO>));
        int groups = (int)Math.Min((long)nOut * split, (long)Runtime.MaxGroups * 4);
        CudaRuntime.CountLaunch();
        k1(Stream, new KernelConfig(groups, Runtime.GroupSize), xv, Dense<double>(pv), Dense<int>(pi), l, nOut, nRed, mode, split);
        var k2 = Runtime.Kernel(("reduce-finish", typeof(T), typeof(TIO), typeof(void)),
            acc => acc.LoadKernel<ArrayView<double>, ArrayView<int>, ArrayView<T>, ArrayView<long>, int, int, int, int, int>(ReduceKernels.ReduceFinish<T, TIO>));
        CudaRuntime.CountLaunch();
        k2(Stream, Runtime.Grid(nOut), Dense<double>(pv), Dense<int>(pi), Dense<T>(y), iv, nOut, nRed, mode, split, writeIdx ? 1 : 0);
    }

    private void ReduceT<T, TIO>(Tensor x, Tensor y, ArrayView<long> iv, ReduceLayout l, int nOut, int nRed, int mode, double correction, bool writeIdx, bool perThread)
        where T : unmanaged where TIO : struct, IElem<T>
    {
        var (xv, xb) = Strided<T>(x);
        l.Base = xb;
        if (perThread)
        {
            var kt = Runtime.Kernel(("reduce-thread", typeof(T), typeof(TIO), typeof(void)),
                acc => acc.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<long>, ReduceLayout, int, int, int, double, int>(ReduceKernels.ReducePerThread<T, TIO>));
            CudaRuntime.CountLaunch();
            kt(Stream, Runtime.Grid(nOut), xv, Dense<T>(y), iv, l, nOut, nRed, mode, correction, writeIdx ? 1 : 0);
            return;
        }
        var k = Runtime.Kernel(("reduce", typeof(T), typeof(TIO), typeof(void)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<long>, ReduceLayout, int, int, int, double, int>(ReduceKernels.Reduce<T, TIO>));
        int groups = (int)Math.Min(nOut, (long)Runtime.MaxGroups * 4);
        CudaRuntime.CountLaunch();
        k(Stream, new KernelConfig(groups, Runtime.GroupSize), xv, Dense<T>(y), iv, l, nOut, nRed, mode, correction, writeIdx ? 1 : 0);
    }

    private static List<(int Size, int Stride)> Coalesce(List<(int Size, int Stride)> dims, ReduceOp op)
    {
        var r = new List<(int Size, int Stride)>(dims);
        for (int i = r.Count - 2; i >= 0; i--)
            if (r[i].Stride == r[i + 1].Stride * r[i + 1].Size) { r[i] = (r[i].Size * r[i + 1].Size, r[i + 1].Stride); r.RemoveAt(i + 1); }
        if (r.Count > Strided3.MaxRank) throw new NotSupportedException($"cuda: reduce {op} needs more than {Strided3.MaxRank} dims after coalescing");
        return r;
    }

    private static int[] Sizes(List<(int Size, int Stride)> d) => d.Select(e => e.Size).ToArray();
    private static int[] Strides(List<(int Size, int Stride)> d) => d.Select(e => e.Stride).ToArray();
}
