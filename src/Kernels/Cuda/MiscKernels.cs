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
    public int Rows, C, K, P;
}

/// <summary>
/// Fused SGD step, per-row stable sort / top-k (bitonic over (order key, index) pairs: NaN largest, ties by lower index,
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

    /// <summary>
    /// The row order as an unsigned key: ascending keys (ties by index) are the CPU backend's total order. NaN (any payload)
    /// is the largest value, −0 and +0 are equal (both map to +0's key); <paramref name="desc"/> ≠ 0 complements the key, so
    /// the same ascending network sorts descending with NaN first and ties still by index. Padding gets 0xFFFFFFFF with an
    /// index ≥ c, so it always sorts last.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static uint SortKey(float v, int desc)
    {
        uint u = Interop.FloatAsInt(v);
        uint b;
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) b = 0xFFFFFFFFu;          // NaN
        else if ((u & 0x7FFFFFFFu) == 0) b = 0x80000000u;               // ±0
        else b = (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;       // negative: all bits flipped; positive: sign set
        return desc != 0 ? ~b : b;
    }

    /// <summary>
    /// One group sorts one row: (key, index) pairs of length s.P in (keys, ids), a bitonic network on unsigned keys with
    /// ties by index (no float compares: the direction is folded into the key), then the first s.K values are read back
    /// from x by index (their exact bits) with their indices.
    /// </summary>
    private static void SortRow(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, ArrayView<uint> keys, ArrayView<int> ids,
        int row, SortShape s, int desc)
    {
        int tid = Group.IdxX, gs = Group.DimX;
        long xBase = (long)row * s.C;
        for (int i = tid; i < s.P; i += gs)
        {
            keys[i] = i < s.C ? SortKey(x[xBase + i], desc) : 0xFFFFFFFFu;
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
                    uint ki = keys[i], kj = keys[j];
                    int ii = ids[i], ij = ids[j];
                    // (j before i) in an ascending run, (i before j) in a descending one
                    bool jFirst = kj < ki || (kj == ki && ij < ii);
                    bool iFirst = ki < kj || (ki == kj && ii < ij);
                    bool swap = (i & size) == 0 ? jFirst : iFirst;
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
            int id = ids[i];
            values[oBase + i] = x[xBase + id];
            indices[oBase + i] = id;
        }
        Group.Barrier();
    }

    internal static void SortSharedKernel(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, SortShape s, int desc)
    {
        var keys = SharedMemory.Allocate<uint>(SharedSortCap);
        var ids = SharedMemory.Allocate<int>(SharedSortCap);
        for (int row = Grid.IdxX; row < s.Rows; row += Grid.DimX)
            SortRow(x, values, indices, keys, ids, row, s, desc);
    }

    internal static void SortGlobalKernel(ArrayView<float> x, ArrayView<float> values, ArrayView<long> indices, ArrayView<uint> keys, ArrayView<int> ids,
        SortShape s, int desc)
    {
        // Scratch holds one padded row per group.
        long at = (long)Grid.IdxX * s.P;
        var k = keys.SubView(at, s.P);
        var d = ids.SubView(at, s.P);
        for (int row = Grid.IdxX; row < s.Rows; row += Grid.DimX)
            SortRow(x, values, indices, k, d, row, s, desc);
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
