using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>SGD scalars, rounded to float from the double hyper-parameters exactly as the CPU backend does.</summary>
public struct SgdScalars
{
    public float Wd, Mom, Damp, NegLr;
    public int UseWd, UseMom, Nesterov, First;
}

/// <summary>Row-sort launch shape: rows of c elements padded to p (a power of two), the first k written out.</summary>
public struct SortShape
{
    public int Rows, C, K, P, Descending;
}

/// <summary>
/// Fused SGD step, per-row stable sort / top-k (bitonic over (value, index) keys: NaN largest, ties by lower index,
/// the CPU backend's total order, so the result is identical), and the masked select/scatter count-scan-copy passes.
/// </summary>
internal static class MiscKernels
{
    /// <summary>Row lengths up to this sort in shared memory; longer rows sort in a global scratch buffer.</summary>
    public const int SharedSortCap = 2048;
    /// <summary>Mask elements per chunk of the masked select/scatter passes (one thread per chunk).</summary>
    public const int MaskChunk = 256;

    // ================================================================== SGD

    internal static void SgdKernel(ArrayView<float> p, ArrayView<float> g, ArrayView<float> buf, int n, SgdScalars h)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i += Grid.DimX * Group.DimX)
        {
            float d = g[i];
            if (h.UseWd != 0) d += h.Wd * p[i];
            if (h.UseMom != 0)
            {
                float b = h.First != 0 ? d : buf[i] * h.Mom + h.Damp * d;
                buf[i] = b;
                d = h.Nesterov != 0 ? d + h.Mom * b : b;
            }
            p[i] += h.NegLr * d;
        }
    }

    // ================================================================== sort

    /// <summary>Whether (ka, ia) comes strictly before (kb, ib) in the output order; padding (index ≥ c) comes last.</summary>
    private static bool Before(float ka, int ia, float kb, int ib, int c, int desc)
    {
        if (ia >= c) return false;
        if (ib >= c) return true;
        bool na = float.IsNaN(ka), nb = float.IsNaN(kb);
        int cmp;
        if (na || nb) cmp = na == nb ? 0 : (na ? 1 : -1);
        else cmp = ka < kb ? -1 : (ka > kb ? 1 : 0);
        if (desc != 0) cmp = -cmp;
        return cmp != 0 ? cmp < 0 : ia < ib;
    }

    /// <summary>One group sorts one row in (keys, ids) of length s.P: load, bitonic network, write the first s.K.</summary>
    private static void SortRow(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, ArrayView<float> keys, ArrayView<int> ids, int row, SortShape s)
    {
        int tid = Group.IdxX, gs = Group.DimX;
        long xBase = (long)row * s.C;
        for (int i = tid; i < s.P; i += gs)
        {
            keys[i] = i < s.C ? x[xBase + i] : 0f;
            ids[i] = i;
        }
        Group.Barrier();
        int half = s.P / 2;
        for (int size = 2; size <= s.P; size *= 2)
        {
            for (int stride = size / 2; stride > 0; stride /= 2)
            {
                for (int t = tid; t < half; t += gs)
                {
                    int i = 2 * stride * (t / stride) + t % stride;
                    int j = i + stride;
                    bool up = (i & size) == 0;
                    float ki = keys[i], kj = keys[j];
                    int ii = ids[i], ij = ids[j];
                    bool swap = up ? Before(kj, ij, ki, ii, s.C, s.Descending) : Before(ki, ii, kj, ij, s.C, s.Descending);
                    if (swap)
                    {
                        keys[i] = kj; keys[j] = ki;
                        ids[i] = ij; ids[j] = ii;
                    }
                }
                Group.Barrier();
            }
        }
        long oBase = (long)row * s.K;
        for (int i = tid; i < s.K; i += gs)
        {
            values[oBase + i] = keys[i];
            indices[oBase + i] = ids[i];
        }
        Group.Barrier();
    }

    internal static void SortSharedKernel(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, SortShape s)
    {
        var keys = SharedMemory.Allocate<float>(SharedSortCap);
        var ids = SharedMemory.Allocate<int>(SharedSortCap);
        for (int row = Grid.IdxX; row < s.Rows; row += Grid.DimX)
            SortRow(x, values, indices, keys, ids, row, s);
    }

    internal static void SortGlobalKernel(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, ArrayView<float> keys, ArrayView<int> ids, SortShape s)
    {
        // Scratch holds one padded row per group.
        long at = (long)Grid.IdxX * s.P;
        var k = keys.SubView(at, s.P);
        var d = ids.SubView(at, s.P);
        for (int row = Grid.IdxX; row < s.Rows; row += Grid.DimX)
            SortRow(x, values, indices, k, d, row, s);
    }

    // ================================================================== masks

    /// <summary>counts[c] ← true elements of chunk c of the n-element mask.</summary>
    internal static void MaskCountKernel(ArrayView<byte> mask, ArrayView<int> counts, int n, int chunks)
    {
        for (int c = Grid.GlobalIndex.X; c < chunks; c += Grid.DimX * Group.DimX)
        {
            int a = c * MaskChunk, b = Math.Min(n, a + MaskChunk), cnt = 0;
            for (int i = a; i < b; i++) if (mask[i] != 0) cnt++;
            counts[c] = cnt;
        }
    }

    /// <summary>counts ← exclusive prefix sum of counts (one thread; chunks are few), counts[chunks] ← total.</summary>
    internal static void MaskScanKernel(ArrayView<int> counts, int chunks)
    {
        if (Grid.GlobalIndex.X != 0) return;
        int run = 0;
        for (int c = 0; c < chunks; c++) { int v = counts[c]; counts[c] = run; run += v; }
        counts[chunks] = run;
    }

    /// <summary>select: packed[k] ← full[i] for the k-th true i (k &lt; limit); else full[i] ← packed[k].</summary>
    internal static void MaskCopyKernel(ArrayView<byte> mask, ArrayView<int> start, ArrayView<float> full, ArrayView<float> packed, int n, int chunks, int select)
    {
        for (int c = Grid.GlobalIndex.X; c < chunks; c += Grid.DimX * Group.DimX)
        {
            int a = c * MaskChunk, b = Math.Min(n, a + MaskChunk), k = start[c];
            for (int i = a; i < b; i++)
            {
                if (mask[i] == 0) continue;
                if (k < packed.Length)
                {
                    if (select != 0) packed[k] = full[i]; else full[i] = packed[k];
                }
                k++;
            }
        }
    }
}
