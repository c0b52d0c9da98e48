using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// Iteration plan over same-shaped strided operands: dims are coalesced where every operand allows,
/// size-1 dims dropped, and the last remaining dim becomes the inner loop. The outer index space is
/// split across threads; element order within a row is preserved.
/// </summary>
internal sealed class StridedPlan
{
    public readonly int[] Shape;          // coalesced shape, inner dim last (rank ≥ 1)
    public readonly int[][] Strides;      // per operand
    public readonly int[] Offsets;        // per operand, in elements
    public readonly int Inner;
    public readonly int Outer;

    public StridedPlan(ReadOnlySpan<int> shape, params Tensor[] ops)
    {
        int n = ops.Length;
        var dims = new List<int>();
        var strides = new List<int>[n];
        for (int k = 0; k < n; k++) strides[k] = new List<int>();
        for (int d = 0; d < shape.Length; d++)
        {
            if (shape[d] == 1) continue;
            dims.Add(shape[d]);
            for (int k = 0; k < n; k++) strides[k].Add(ops[k].Strides[d]);
        }
        // merge dim i into i+1 when contiguous for every operand
        for (int i = dims.Count - 2; i >= 0; i--)
        {
            bool ok = true;
            for (int k = 0; k < n && ok; k++) ok = strides[k][i] == strides[k][i + 1] * dims[i + 1];
            if (!ok) continue;
            dims[i] *= dims[i + 1];
            dims.RemoveAt(i + 1);
            for (int k = 0; k < n; k++) strides[k].RemoveAt(i);
        }
        if (dims.Count == 0) { dims.Add(1); for (int k = 0; k < n; k++) strides[k].Add(0); }
        Shape = dims.ToArray();
        Strides = new int[n][];
        Offsets = new int[n];
        for (int k = 0; k < n; k++) { Strides[k] = strides[k].ToArray(); Offsets[k] = ops[k].Offset; }
        Inner = Shape[^1];
        long outer = 1;
        for (int i = 0; i < Shape.Length - 1; i++) outer *= Shape[i];
        Outer = Shape.Aggregate(1L, (a, b) => a * b) == 0 ? 0 : (int)outer;
    }

    public int InnerStride(int k) => Strides[k][^1];

    /// <summary>Element offset of operand k at the start of outer row <paramref name="row"/>.</summary>
    public int RowOffset(int k, int row)
    {
        int off = Offsets[k];
        var st = Strides[k];
        for (int d = Shape.Length - 2; d >= 0; d--)
        {
            int i = row % Shape[d];
            row /= Shape[d];
            off += i * st[d];
        }
        return off;
    }

    /// <summary>Runs body(firstRow, endRow) over the outer rows, in parallel when the work is large.</summary>
    public void ForRows(Action<int, int> body, long costPerRow = 1)
    {
        if (Outer == 0) return;
        Parallelism.For(Outer, Inner * costPerRow, body);
    }
}

/// <summary>Splits [0, n) into chunks over the machine's cores when the total work justifies it.</summary>
public static class Parallelism
{
    /// <summary>Below this many element-operations, run on the calling thread.</summary>
    public const long MinWorkPerThread = 1 << 15;

    /// <summary>Maximum threads used (defaults to the processor count).</summary>
    public static int MaxThreads { get; set; } = Environment.ProcessorCount;

    public static void For(int n, long workPerItem, Action<int, int> body)
    {
        if (n <= 0) return;
        long total = n * Math.Max(workPerItem, 1);
        int threads = (int)Math.Min(Math.Min(MaxThreads, n), Math.Max(1, total / MinWorkPerThread));
        if (threads <= 1) { body(0, n); return; }
        int chunk = (n + threads - 1) / threads;
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            int s = t * chunk, e = Math.Min(n, s + chunk);
            if (s < e) body(s, e);
        });
    }
}
