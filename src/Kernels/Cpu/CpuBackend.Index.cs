using System.Numerics;
using System.Numerics.Tensors;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// Indexing kernels. Every index tensor is read and range-checked completely before anything is written,
/// so a bad index leaves the destination untouched. Accumulating kernels (index_add, scatter_add,
/// embedding backward) are deterministic: work is partitioned over destination elements, and each
/// destination element receives its contributions in ascending source order whatever the thread count.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    // ------------------------------------------------------------------ helpers

    /// <summary>Reads an Int64/Int32 index tensor (any strides) as ints, checking 0 ≤ v &lt; size for every value.</summary>
    private static int[] ReadIndices(Tensor index, int size, string op, int dim)
    {
        if (index.DType is not (DType.Int64 or DType.Int32))
            throw new ArgumentException($"{op}: index {index.ShapeString} must be int64 or int32, got {index.DType.Name()}");
        var r = new int[index.Numel];
        if (r.Length == 0) return r;
        using var c = index.ContiguousRaw();
        if (c.DType == DType.Int64)
        {
            long* p = c.DataPtr<long>();
            for (int i = 0; i < r.Length; i++)
            {
                long v = p[i];
                if ((ulong)v >= (ulong)size) throw OutOfRange(op, v, dim, size);
                r[i] = (int)v;
            }
        }
        else
        {
            int* p = c.DataPtr<int>();
            for (int i = 0; i < r.Length; i++)
            {
                int v = p[i];
                if ((uint)v >= (uint)size) throw OutOfRange(op, v, dim, size);
                r[i] = v;
            }
        }
        return r;
    }

    private static ArgumentOutOfRangeException OutOfRange(string op, long v, int dim, int size)
        => new("index", $"{op}: index {v} is out of range for dim {dim} of size {size}");

    private static void RequireRank1(Tensor t, string op, string name)
    {
        if (t.Rank == 0) throw new ArgumentException($"{op}: {name} must have at least one dimension, got a scalar");
    }

    private static void RequireDType(Tensor a, Tensor b, string op)
    {
        if (a.DType != b.DType) throw new ArgumentException($"{op}: dtypes differ ({a.ShapeString} is {a.DType.Name()}, {b.ShapeString} is {b.DType.Name()})");
    }

    private static void RequireAddable(Tensor t, string op)
    {
        if (t.DType is not (DType.Float32 or DType.Float64 or DType.Int32 or DType.Int64))
            throw new NotSupportedException($"{op}: the CPU backend accumulates float32, float64, int32 or int64, got {t.DType.Name()} for {t.ShapeString}");
    }

    /// <summary>(product of sizes before dim, size at dim, product of sizes after dim).</summary>
    private static (int Outer, int N, int Inner) Split3(ReadOnlySpan<int> shape, int dim)
    {
        int outer = 1, inner = 1;
        for (int i = 0; i < dim; i++) outer *= shape[i];
        for (int i = dim + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, shape[dim], inner);
    }

    /// <summary>
    /// Element offsets (with <paramref name="strides"/>) of every row-major position of the sub-shape
    /// <paramref name="sizes"/>[from..to).
    /// </summary>
    private static int[] Offsets(ReadOnlySpan<int> sizes, ReadOnlySpan<int> strides, int from, int to)
    {
        int n = 1;
        for (int i = from; i < to; i++) n *= sizes[i];
        var r = new int[n];
        for (int p = 0; p < n; p++)
        {
            int rem = p, off = 0;
            for (int d = to - 1; d >= from; d--) { off += rem % sizes[d] * strides[d]; rem /= sizes[d]; }
            r[p] = off;
        }
        return r;
    }

    /// <summary>Runs <paramref name="body"/> on <paramref name="dst"/> if contiguous, else on a contiguous copy that is written back.</summary>
    private static void InPlace(Tensor dst, Action<Tensor> body)
    {
        if (dst.IsContiguous) { body(dst); return; }
        using var work = dst.ContiguousRaw();
        body(work);
        CpuBackend.Instance.Copy(work, dst);
    }

    // ------------------------------------------------------------------ index_select / index_add

    public void IndexSelect(Tensor x, int dim, Tensor index, Tensor y)
    {
        const string op = "index_select";
        RequireRank1(x, op, "input");
        int d = Shape.Dim(dim, x.Rank, op);
        if (index.Rank > 1) throw new ArgumentException($"{op}: index {index.ShapeString} must be 1-D");
        RequireDType(x, y, op);
        if (y.Numel > 0) RequireContiguous(y, op, "output"); // empty tensors report non-contiguous strides
        var want = x.Shape; want[d] = index.Numel;
        if (!y.Sizes.SequenceEqual(want)) throw new ArgumentException($"{op}: output {y.ShapeString} must be {Shape.Format(want)} for input {x.ShapeString} and index {index.ShapeString} on dim {d}");
        var idx = ReadIndices(index, x.Sizes[d], op, d);
        if (y.Numel == 0) return;
        using var xc = x.ContiguousRaw();
        var (outer, n0, inner) = Split3(x.Sizes, d);
        switch (x.DType.Size())
        {
            case 1: IndexSelectT((byte*)xc.DataPtrRaw(), idx, (byte*)y.DataPtrRaw(), outer, n0, inner); break;
            case 2: IndexSelectT((short*)xc.DataPtrRaw(), idx, (short*)y.DataPtrRaw(), outer, n0, inner); break;
            case 4: IndexSelectT((int*)xc.DataPtrRaw(), idx, (int*)y.DataPtrRaw(), outer, n0, inner); break;
            default: IndexSelectT((long*)xc.DataPtrRaw(), idx, (long*)y.DataPtrRaw(), outer, n0, inner); break;
        }
    }

    private static void IndexSelectT<T>(T* x, int[] idx, T* y, int outer, int size, int inner) where T : unmanaged
    {
        int n = idx.Length;
        Parallelism.For(outer * n, inner, (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                int o = r / n, i = r % n;
                T* src = x + ((long)o * size + idx[i]) * inner;
                T* dst = y + (long)r * inner;
                if (inner == 1) *dst = *src;
                else new ReadOnlySpan<T>(src, inner).CopyTo(new Span<T>(dst, inner));
            }
        });
    }

    public void IndexAdd(Tensor dst, int dim, Tensor index, Tensor src)
    {
        const string op = "index_add";
        RequireRank1(dst, op, "destination");
        int d = Shape.Dim(dim, dst.Rank, op);
        if (index.Rank > 1) throw new ArgumentException($"{op}: index {index.ShapeString} must be 1-D");
        RequireDType(dst, src, op);
        RequireAddable(dst, op);
        var want = dst.Shape; want[d] = index.Numel;
        if (!src.Sizes.SequenceEqual(want)) throw new ArgumentException($"{op}: source {src.ShapeString} must be {Shape.Format(want)} for destination {dst.ShapeString} and index {index.ShapeString} on dim {d}");
        var idx = ReadIndices(index, dst.Sizes[d], op, d);
        if (src.Numel == 0) return;
        var (outer, size, inner) = Split3(dst.Sizes, d);
        using var sc = src.ContiguousRaw();
        InPlace(dst, w => AccumulateRows(w, sc, idx, outer, size, inner, skip: -1));
    }

    /// <summary>dst[o, idx[i], :] += src[o, i, :] for every i (idx[i] ≠ skip), partitioned over destination rows (o, k).</summary>
    private static void AccumulateRows(Tensor dst, Tensor src, int[] idx, int outer, int size, int inner, int skip)
    {
        switch (dst.DType)
        {
            case DType.Float32: AccumulateRowsT(dst.DataPtr<float>(), src.DataPtr<float>(), idx, outer, size, inner, skip); break;
            case DType.Float64: AccumulateRowsT(dst.DataPtr<double>(), src.DataPtr<double>(), idx, outer, size, inner, skip); break;
            case DType.Int32: AccumulateRowsT(dst.DataPtr<int>(), src.DataPtr<int>(), idx, outer, size, inner, skip); break;
            case DType.Int64: AccumulateRowsT(dst.DataPtr<long>(), src.DataPtr<long>(), idx, outer, size, inner, skip); break;
            default: throw new NotSupportedException($"accumulate on {dst.DType.Name()}");
        }
    }

    private static void AccumulateRowsT<T>(T* dst, T* src, int[] idx, int outer, int size, int inner, int skip) where T : unmanaged, INumber<T>
    {
        // CSR of the inverse map: for destination row k, the source rows i with idx[i] == k, ascending.
        int n = idx.Length;
        var start = new int[size + 1];
        foreach (var k in idx) if (k != skip) start[k + 1]++;
        for (int k = 0; k < size; k++) start[k + 1] += start[k];
        var rows = new int[start[size]];
        var fill = (int[])start.Clone();
        for (int i = 0; i < n; i++) if (idx[i] != skip) rows[fill[idx[i]]++] = i;
        if (rows.Length == 0) return;
        long avg = (long)rows.Length * inner / Math.Max(size, 1) + 1;
        Parallelism.For(outer * size, avg, (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                int o = r / size, k = r % size;
                int a = start[k], b = start[k + 1];
                if (a == b) continue;
                var drow = new Span<T>(dst + (long)r * inner, inner);
                T* sbase = src + (long)o * n * inner;
                for (int j = a; j < b; j++)
                {
                    var srow = new ReadOnlySpan<T>(sbase + (long)rows[j] * inner, inner);
                    if (inner == 1) drow[0] += srow[0];
                    else TensorPrimitives.Add(drow, srow, drow);
                }
            }
        });
    }

    public void EmbeddingBackward(Tensor ids, Tensor gy, Tensor gWeight, int paddingIdx)
    {
        const string op = "embedding_backward";
        if (gWeight.Rank != 2) throw new ArgumentException($"{op}: weight gradient {gWeight.ShapeString} must be [V, D]");
        RequireDType(gWeight, gy, op);
        RequireFloat(gWeight, op);
        int v = gWeight.Sizes[0], dModel = gWeight.Sizes[1];
        if (gy.Rank == 0 || gy.Sizes[^1] != dModel || (long)gy.Numel != (long)ids.Numel * dModel)
            throw new ArgumentException($"{op}: gradient {gy.ShapeString} must be [{ids.Numel}, {dModel}] for ids {ids.ShapeString} and weight {gWeight.ShapeString}");
        if (paddingIdx >= v) throw new ArgumentOutOfRangeException(nameof(paddingIdx), $"{op}: padding index {paddingIdx} is out of range for {v} embeddings");
        var idx = ReadIndices(ids, v, op, 0);
        if (idx.Length == 0 || dModel == 0) return;
        using var gc = gy.ContiguousRaw();
        InPlace(gWeight, w => AccumulateRows(w, gc, idx, 1, v, dModel, paddingIdx < 0 ? -1 : paddingIdx));
    }

    // ------------------------------------------------------------------ gather / scatter

    public void Gather(Tensor x, int dim, Tensor index, Tensor y)
    {
        const string op = "gather";
        RequireRank1(x, op, "input");
        int d = Shape.Dim(dim, x.Rank, op);
        if (index.Rank != x.Rank) throw new ArgumentException($"{op}: index {index.ShapeString} must have the rank of input {x.ShapeString}");
        for (int i = 0; i < x.Rank; i++)
            if (i != d && index.Sizes[i] > x.Sizes[i])
                throw new ArgumentException($"{op}: index {index.ShapeString} is larger than input {x.ShapeString} in dim {i}");
        RequireDType(x, y, op);
        if (y.Numel > 0) RequireContiguous(y, op, "output"); // empty tensors report non-contiguous strides
        if (!y.Sizes.SequenceEqual(index.Sizes)) throw new ArgumentException($"{op}: output {y.ShapeString} must have the index's shape {index.ShapeString}");
        var idx = ReadIndices(index, x.Sizes[d], op, d);
        if (y.Numel == 0) return;
        var (outer, n, inner) = Split3(index.Sizes, d);
        var outOff = Offsets(index.Sizes, x.Strides, 0, d);
        var inOff = Offsets(index.Sizes, x.Strides, d + 1, index.Rank);
        int sd = x.Strides[d];
        byte* xp = (byte*)x.DataPtrRaw(), yp = (byte*)y.DataPtrRaw();
        switch (x.DType.Size())
        {
            case 1: GatherT((byte*)xp, idx, (byte*)yp, outOff, inOff, sd, n); break;
            case 2: GatherT((short*)xp, idx, (short*)yp, outOff, inOff, sd, n); break;
            case 4: GatherT((int*)xp, idx, (int*)yp, outOff, inOff, sd, n); break;
            default: GatherT((long*)xp, idx, (long*)yp, outOff, inOff, sd, n); break;
        }
    }

    private static void GatherT<T>(T* x, int[] idx, T* y, int[] outOff, int[] inOff, int sd, int n) where T : unmanaged
    {
        int inner = inOff.Length;
        Parallelism.For(outOff.Length * n, inner, (s, e) =>
        {
            for (int r = s; r < e; r++)
            {
                T* xo = x + outOff[r / n];
                int b = r * inner;
                for (int k = 0; k < inner; k++) y[b + k] = xo[(long)idx[b + k] * sd + inOff[k]];
            }
        });
    }

    public void Scatter(Tensor dst, int dim, Tensor index, Tensor src, bool add)
    {
        string op = add ? "scatter_add" : "scatter";
        RequireRank1(dst, op, "destination");
        int d = Shape.Dim(dim, dst.Rank, op);
        if (index.Rank != dst.Rank || src.Rank != dst.Rank)
            throw new ArgumentException($"{op}: destination {dst.ShapeString}, index {index.ShapeString} and source {src.ShapeString} must have the same rank");
        for (int i = 0; i < dst.Rank; i++)
        {
            if (index.Sizes[i] > src.Sizes[i]) throw new ArgumentException($"{op}: index {index.ShapeString} is larger than source {src.ShapeString} in dim {i}");
            if (i != d && index.Sizes[i] > dst.Sizes[i]) throw new ArgumentException($"{op}: index {index.ShapeString} is larger than destination {dst.ShapeString} in dim {i}");
        }
        RequireDType(dst, src, op);
        if (add) RequireAddable(dst, op);
        var idx = ReadIndices(index, dst.Sizes[d], op, d);
        if (idx.Length == 0) return;
        var (outer, n, inner) = Split3(index.Sizes, d);
        var dOut = Offsets(index.Sizes, dst.Strides, 0, d);
        var dIn = Offsets(index.Sizes, dst.Strides, d + 1, index.Rank);
        var sOut = Offsets(index.Sizes, src.Strides, 0, d);
        var sIn = Offsets(index.Sizes, src.Strides, d + 1, index.Rank);
        var g = new ScatterGeom(dOut, dIn, sOut, sIn, dst.Strides[d], src.Strides[d], n);
        void* dp = dst.DataPtrRaw(), sp = src.DataPtrRaw();
        if (add)
        {
            switch (dst.DType)
            {
                case DType.Float32: ScatterT((float*)dp, (float*)sp, idx, g, true); break;
                case DType.Float64: ScatterT((double*)dp, (double*)sp, idx, g, true); break;
                case DType.Int32: ScatterT((int*)dp, (int*)sp, idx, g, true); break;
                default: ScatterT((long*)dp, (long*)sp, idx, g, true); break;
            }
            return;
        }
        switch (dst.DType.Size())
        {
            case 1: ScatterT((byte*)dp, (byte*)sp, idx, g, false); break;
            case 2: ScatterT((short*)dp, (short*)sp, idx, g, false); break;
            case 4: ScatterT((int*)dp, (int*)sp, idx, g, false); break;
            default: ScatterT((long*)dp, (long*)sp, idx, g, false); break;
        }
    }

    private sealed record ScatterGeom(int[] DOut, int[] DIn, int[] SOut, int[] SIn, int DStride, int SStride, int N);

    /// <summary>
    /// One task per (outer, inner) column of the index: the column's writes land on distinct destination
    /// columns, so columns run in parallel without races and each column applies its j's in order.
    /// </summary>
    private static void ScatterT<T>(T* dst, T* src, int[] idx, ScatterGeom g, bool add) where T : unmanaged
    {
        int inner = g.DIn.Length, n = g.N;
        Parallelism.For(g.DOut.Length * inner, n, (s, e) =>
        {
            for (int c = s; c < e; c++)
            {
                int o = c / inner, k = c % inner;
                T* dcol = dst + g.DOut[o] + g.DIn[k];
                T* scol = src + g.SOut[o] + g.SIn[k];
                int ib = o * n * inner + k;
                for (int j = 0; j < n; j++)
                {
                    T* p = dcol + (long)idx[ib + j * inner] * g.DStride;
                    T v = scol[(long)j * g.SStride];
                    if (add) *p = AddT(*p, v); else *p = v;
                }
            }
        });
    }

    private static T AddT<T>(T a, T b) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return (T)(object)((float)(object)a + (float)(object)b);
        if (typeof(T) == typeof(double)) return (T)(object)((double)(object)a + (double)(object)b);
        if (typeof(T) == typeof(int)) return (T)(object)((int)(object)a + (int)(object)b);
        if (typeof(T) == typeof(long)) return (T)(object)((long)(object)a + (long)(object)b);
        throw new NotSupportedException($"add on {typeof(T).Name}");
    }

    // ------------------------------------------------------------------ masked select / scatter

    /// <summary>Elements per counting chunk of the masked kernels (fixed, so the result does not depend on thread count).</summary>
    private const int MaskChunk = 1 << 14;

    /// <summary>A contiguous bool copy of the mask (broadcast views expanded) and per-chunk true counts, prefix-summed.</summary>
    private static (Tensor Mask, int[] ChunkStart) MaskPrefix(Tensor mask, Tensor like, string op)
    {
        if (mask.DType != DType.Bool) throw new ArgumentException($"{op}: mask {mask.ShapeString} must be bool, got {mask.DType.Name()}");
        if (!mask.Sizes.SequenceEqual(like.Sizes)) throw new ArgumentException($"{op}: mask {mask.ShapeString} must have the shape of {like.ShapeString} (expand it first)");
        var m = mask.ContiguousRaw();
        int total = m.Numel, chunks = (total + MaskChunk - 1) / MaskChunk;
        var start = new int[chunks + 1];
        if (total > 0)
        {
            byte* mp = (byte*)m.DataPtrRaw();
            Parallelism.For(chunks, MaskChunk, (s, e) =>
            {
                for (int c = s; c < e; c++)
                {
                    int a = c * MaskChunk, b = Math.Min(total, a + MaskChunk);
                    start[c + 1] = (b - a) - new ReadOnlySpan<byte>(mp + a, b - a).Count((byte)0);
                }
            });
            for (int c = 0; c < chunks; c++) start[c + 1] += start[c];
        }
        return (m, start);
    }

    public void MaskedSelect(Tensor x, Tensor mask, Tensor y)
    {
        const string op = "masked_select";
        RequireDType(x, y, op);
        if (y.Numel > 0) RequireContiguous(y, op, "output"); // empty tensors report non-contiguous strides
        var (m, start) = MaskPrefix(mask, x, op);
        using var _ = m;
        int count = start[^1];
        if (y.Rank != 1 || y.Numel != count) throw new ArgumentException($"{op}: mask {mask.ShapeString} selects {count} elements but the output is {y.ShapeString}");
        if (count == 0) return;
        using var xc = x.ContiguousRaw();
        byte* mp = (byte*)m.DataPtrRaw();
        switch (x.DType.Size())
        {
            case 1: MaskedCopy((byte*)xc.DataPtrRaw(), (byte*)y.DataPtrRaw(), mp, start, m.Numel, select: true); break;
            case 2: MaskedCopy((short*)xc.DataPtrRaw(), (short*)y.DataPtrRaw(), mp, start, m.Numel, select: true); break;
            case 4: MaskedCopy((int*)xc.DataPtrRaw(), (int*)y.DataPtrRaw(), mp, start, m.Numel, select: true); break;
            default: MaskedCopy((long*)xc.DataPtrRaw(), (long*)y.DataPtrRaw(), mp, start, m.Numel, select: true); break;
        }
    }

    public void MaskedScatter(Tensor dst, Tensor mask, Tensor src)
    {
        const string op = "masked_scatter";
        RequireDType(dst, src, op);
        var (m, start) = MaskPrefix(mask, dst, op);
        using var _ = m;
        int count = start[^1];
        if (src.Numel < count) throw new ArgumentException($"{op}: mask {mask.ShapeString} has {count} true elements but source {src.ShapeString} has only {src.Numel}");
        if (count == 0) return;
        using var sc = src.ContiguousRaw();
        byte* mp = (byte*)m.DataPtrRaw();
        int total = m.Numel;
        InPlace(dst, w =>
        {
            switch (w.DType.Size())
            {
                case 1: MaskedCopy((byte*)w.DataPtrRaw(), (byte*)sc.DataPtrRaw(), mp, start, total, select: false); break;
                case 2: MaskedCopy((short*)w.DataPtrRaw(), (short*)sc.DataPtrRaw(), mp, start, total, select: false); break;
                case 4: MaskedCopy((int*)w.DataPtrRaw(), (int*)sc.DataPtrRaw(), mp, start, total, select: false); break;
                default: MaskedCopy((long*)w.DataPtrRaw(), (long*)sc.DataPtrRaw(), mp, start, total, select: false); break;
            }
        });
    }

    /// <summary>select: packed[k] ← full[i] for the k-th true i; otherwise full[i] ← packed[k].</summary>
    private static void MaskedCopy<T>(T* full, T* packed, byte* mask, int[] chunkStart, int total, bool select) where T : unmanaged
    {
        Parallelism.For(chunkStart.Length - 1, MaskChunk, (s, e) =>
        {
            for (int c = s; c < e; c++)
            {
                int k = chunkStart[c];
                if (k == chunkStart[c + 1]) continue;
                int a = c * MaskChunk, b = Math.Min(total, a + MaskChunk);
                for (int i = a; i < b; i++)
                {
                    if (mask[i] == 0) continue;
                    if (select) packed[k++] = full[i]; else full[i] = packed[k++];
                }
            }
        });
    }
}
