using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Indexing family on ILGPU (float32 data, int64 indices): embedding backward (float atomics), index_select, gather,
/// scatter / scatter_add along a dim of contiguous tensors, and the fused VQ lookup. Semantics follow
/// <c>CpuBackend.Index.cs</c> and <c>CpuBackend.Nn.cs</c>. Tensors are described as [outer, n, inner] around the indexed
/// dim (<see cref="Split"/>). Index values live on the device, so the launchers cannot range-check them without a sync:
/// the backend checks them before launching, and the kernels never throw and never touch memory out of range: an
/// out-of-range index reads NaN (select, gather) or is skipped (scatter, embedding backward).
/// The atomic kernels (embedding backward, scatter_add) add in an unspecified order, so their float results can differ
/// from the CPU backend's (ascending-source order) in the last bits.
/// </summary>
internal static class IndexKernels
{
    /// <summary>z rows per VQ group.</summary>
    public const int VqRows = 32;
    /// <summary>Codebook rows per shared-memory tile.</summary>
    public const int VqCodes = 64;
    /// <summary>Feature dims per shared-memory chunk.</summary>
    public const int VqDims = 16;
    private const int VqEsStride = VqDims + 1;
    private const int VqQuads = VqCodes / 4;   // padded row: kk·17 + d hits distinct banks across kk

    // ================================================================== kernels

    internal static void EmbeddingBackwardKernel(ArrayView<long> ids, ArrayView<float> gy, ArrayView<float> gWeight, int n, int d, int v, int paddingIdx)
    {
        int total = n * d;
        for (int e = Grid.GlobalIndex.X; e < total; e += Grid.DimX * Group.DimX)
        {
            int i = e / d;
            long id = ids[i];
            if (id == paddingIdx || id < 0 || id >= v) continue;
            Atomic.Add(ref gWeight[id * d + (e - i * d)], gy[e]);
        }
    }

    /// <summary>y [outer, n, inner] ← x [outer, size, inner] rows idx[0..n).</summary>
    internal static void IndexSelectKernel(ArrayView<float> x, ArrayView<long> idx, ArrayView<float> y, int outer, int size, int n, int inner)
    {
        int total = outer * n * inner;
        for (int e = Grid.GlobalIndex.X; e < total; e += Grid.DimX * Group.DimX)
        {
            int r = e / inner, k = e - r * inner;
            int o = r / n, i = r - o * n;
            long id = idx[i];
            y[e] = id >= 0 && id < size ? x[((long)o * size + id) * inner + k] : float.NaN;
        }
    }

    /// <summary>y [outer, ni, inner] ← x [outer, nx, inner][o, idx[o, j, k], k].</summary>
    internal static void GatherKernel(ArrayView<float> x, ArrayView<long> idx, ArrayView<float> y, int outer, int nx, int ni, int inner)
    {
        int total = outer * ni * inner;
        int plane = ni * inner;
        for (int e = Grid.GlobalIndex.X; e < total; e += Grid.DimX * Group.DimX)
        {
            int o = e / plane, k = (e - o * plane) % inner;
            long id = idx[e];
            y[e] = id >= 0 && id < nx ? x[((long)o * nx + id) * inner + k] : float.NaN;
        }
    }

    /// <summary>dst [outer, nd, inner][o, idx[o, j, k], k] (+)= src [outer, ns, inner][o, j, k] for the index's [outer, ni, inner].</summary>
    internal static void ScatterKernel(ArrayView<float> dst, ArrayView<long> idx, ArrayView<float> src, int outer, int nd, int ni, int ns, int inner, int add)
    {
        int total = outer * ni * inner;
        int plane = ni * inner;
        for (int e = Grid.GlobalIndex.X; e < total; e += Grid.DimX * Group.DimX)
        {
            int o = e / plane, rem = e - o * plane;
            int j = rem / inner, k = rem - j * inner;
            long id = idx[e];
            if (id < 0 || id >= nd) continue;
            float v = src[((long)o * ns + j) * inner + k];
            long t = ((long)o * nd + id) * inner + k;
            if (add != 0) Atomic.Add(ref dst[t], v);
            else dst[t] = v;
        }
    }

    /// <summary>
    /// ids[r] ← argmin_k (‖z_r‖² + ‖e_k‖²) − 2 z_r·e_k, first minimum on ties, NaN distances skipped (all NaN → 0).
    /// A group owns <see cref="VqRows"/> rows of z and walks the codebook in tiles of <see cref="VqCodes"/> rows; each tile
    /// is staged through shared memory <see cref="VqDims"/> features at a time, together with the matching z chunk. The
    /// dot products accumulate in shared memory (any group size works); after a tile, one thread per row scans the
    /// tile's distances in ascending k, so the running argmin sees codes in index order. Every code's dot product and
    /// norm are summed in the same order whatever its position, so equal codebook rows give bit-equal distances.
    /// </summary>
    internal static void VqLookupKernel(ArrayView<float> z, ArrayView<float> e, ArrayView<long> ids, int n, int kCount, int d)
    {
        var zs = SharedMemory.Allocate<float>(VqRows * VqDims);
        var es = SharedMemory.Allocate<float>(VqCodes * VqEsStride);
        var dot = SharedMemory.Allocate<float>(VqRows * VqCodes);
        var en = SharedMemory.Allocate<float>(VqCodes);
        var zn = SharedMemory.Allocate<float>(VqRows);
        var bestD = SharedMemory.Allocate<float>(VqRows);
        var bestI = SharedMemory.Allocate<int>(VqRows);
        int tid = Group.IdxX, gs = Group.DimX;
        int blocks = (n + VqRows - 1) / VqRows;
        for (int blk = Grid.IdxX; blk < blocks; blk += Grid.DimX)
        {
            int r0 = blk * VqRows;
            // ‖z_r‖² for the block's rows, and the running minimum
            for (int r = tid; r < VqRows; r += gs)
            {
                float acc = 0f;
                if (r0 + r < n)
                {
                    long zo = (long)(r0 + r) * d;
                    for (int f = 0; f < d; f++) { float q = z[zo + f]; acc += q * q; }
                }
                zn[r] = acc; bestD[r] = float.PositiveInfinity; bestI[r] = -1;
            }
            for (int k0 = 0; k0 < kCount; k0 += VqCodes)
            {
                for (int q = tid; q < VqRows * VqCodes; q += gs) dot[q] = 0f;
                for (int q = tid; q < VqCodes; q += gs) en[q] = 0f;
                for (int d0 = 0; d0 < d; d0 += VqDims)
                {
                    Group.Barrier();   // previous chunk's readers are done (and the zeroing above is visible)
                    for (int q = tid; q < VqRows * VqDims; q += gs)
                    {
                        int r = q / VqDims, f = q - r * VqDims;
                        zs[q] = r0 + r < n && d0 + f < d ? z[(long)(r0 + r) * d + d0 + f] : 0f;
                    }
                    for (int q = tid; q < VqCodes * VqDims; q += gs)
                    {
                        int kk = q / VqDims, f = q - kk * VqDims;
                        es[kk * VqEsStride + f] = k0 + kk < kCount && d0 + f < d ? e[(long)(k0 + kk) * d + d0 + f] : 0f;
                    }
                    Group.Barrier();
                    // a thread owns row r and codes j, j+Q, j+2Q, j+3Q: one z load per four FMAs; across a warp the
                    // code rows (stride 17) fall in distinct banks and the z reads broadcast
                    for (int q = tid; q < VqRows * VqQuads; q += gs)
                    {
                        int r = q / VqQuads, j = q - r * VqQuads;
                        int zb = r * VqDims, e0 = j * VqEsStride;
                        int e1 = e0 + VqQuads * VqEsStride, e2 = e1 + VqQuads * VqEsStride, e3 = e2 + VqQuads * VqEsStride;
                        float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
                        for (int f = 0; f < VqDims; f++)
                        {
                            float zf = zs[zb + f];
                            a0 += zf * es[e0 + f]; a1 += zf * es[e1 + f]; a2 += zf * es[e2 + f]; a3 += zf * es[e3 + f];
                        }
                        int db = r * VqCodes + j;
                        dot[db] += a0; dot[db + VqQuads] += a1; dot[db + 2 * VqQuads] += a2; dot[db + 3 * VqQuads] += a3;
                    }
                    for (int kk = tid; kk < VqCodes; kk += gs)
                    {
                        int eb = kk * VqEsStride;
                        float acc = 0f;
                        for (int f = 0; f < VqDims; f++) acc += es[eb + f] * es[eb + f];
                        en[kk] += acc;
                    }
                }
                Group.Barrier();
                int kn = kCount - k0 < VqCodes ? kCount - k0 : VqCodes;
                for (int r = tid; r < VqRows; r += gs)
                {
                    float bd = bestD[r]; int bi = bestI[r];
                    float znr = zn[r];
                    for (int kk = 0; kk < kn; kk++)
                    {
                        float dist = znr + en[kk] + -2f * dot[r * VqCodes + kk];
                        if (float.IsNaN(dist)) continue;
                        if (bi < 0 || dist < bd) { bd = dist; bi = k0 + kk; }
                    }
                    bestD[r] = bd; bestI[r] = bi;
                }
                Group.Barrier();   // the scan is done before the next tile clears dot/en
            }
            for (int r = tid; r < VqRows; r += gs)
                if (r0 + r < n) ids[r0 + r] = bestI[r] < 0 ? 0 : bestI[r];
            Group.Barrier();   // zn/best are reused by the next block
        }
    }

    // ================================================================== launchers

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<long>, ArrayView<float>, ArrayView<float>, int, int, int, int>? Embedding;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, int, int, int, int>? Select, Gather;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<long>, ArrayView<float>, int, int, int, int, int, int>? Scatter;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<long>, int, int, int>? Vq;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    /// <summary>(product of sizes before dim, size at dim, product of sizes after dim) of a row-major shape.</summary>
    public static (int Outer, int N, int Inner) Split(ReadOnlySpan<int> shape, int dim)
    {
        if ((uint)dim >= (uint)shape.Length) throw new ArgumentException($"dim {dim} is out of range for a shape of rank {shape.Length}");
        long outer = 1, inner = 1;
        for (int i = 0; i < dim; i++) outer *= shape[i];
        for (int i = dim + 1; i < shape.Length; i++) inner *= shape[i];
        if (outer > int.MaxValue || inner > int.MaxValue) throw new ArgumentException($"shape is too large for 32-bit indexing around dim {dim}");
        return ((int)outer, shape[dim], (int)inner);
    }

    private static int FlatGroup(Accelerator acc, int groupSize, string op)
    {
        int warp = acc.WarpSize;
        int max = acc.MaxNumThreadsPerGroup / warp * warp;
        int gs = groupSize == 0 ? Math.Clamp(256 / warp * warp, warp, Math.Max(warp, max)) : groupSize;
        if (gs <= 0 || gs % warp != 0 || gs > acc.MaxNumThreadsPerGroup)
            throw new ArgumentException($"{op}: group size {gs} must be a positive multiple of the warp size {warp}, at most {acc.MaxNumThreadsPerGroup} threads");
        return gs;
    }

    private static KernelConfig FlatConfig(Accelerator acc, long n, int gs)
    {
        long groups = (n + gs - 1) / gs;
        int cap = Math.Max(1, acc.NumMultiprocessors * 8);
        return new KernelConfig((int)Math.Clamp(groups, 1, cap), gs);
    }

    private static void Need<T>(string op, string name, ArrayView<T> v, long n, string shape) where T : unmanaged
    {
        if (v.Length < n) throw new ArgumentException($"{op}: {name} has {v.Length} elements, needs {n} for {shape}");
    }

    /// <summary>Most elements a flat launch indexes: int.MaxValue less headroom so that the grid-stride step cannot overflow.</summary>
    private const long MaxFlat = int.MaxValue - (1L << 28);

    private static long Total(string op, params int[] sizes)
    {
        long t = 1;
        foreach (int s in sizes)
        {
            if (s < 0) throw new ArgumentException($"{op}: negative size in [{string.Join(", ", sizes)}]");
            t *= s;
        }
        if (t > MaxFlat) throw new ArgumentException($"{op}: [{string.Join(", ", sizes)}] has more than {MaxFlat} elements (32-bit grid-stride indexing)");
        return t;
    }

    /// <summary>gWeight [V, D] += Σ rows of gy [N, D] by ids [N] (int64); rows with id == paddingIdx skipped (−1: none). Float atomics.</summary>
    public static void EmbeddingBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<long> ids, ArrayView<float> gy, ArrayView<float> gWeight,
        int n, int d, int v, int paddingIdx, int groupSize = 0)
    {
        const string op = "embedding_backward (cuda)";
        long total = Total(op, n, d);
        Total(op, v, d);
        string shape = $"ids [{n}], gradient [{n}, {d}], weight [{v}, {d}]";
        if (paddingIdx >= v || paddingIdx < -1) throw new ArgumentOutOfRangeException(nameof(paddingIdx), $"{op}: padding index {paddingIdx} is out of range for {v} embeddings");
        Need(op, "ids", ids, n, shape); Need(op, "gy", gy, total, shape); Need(op, "gWeight", gWeight, (long)v * d, shape);
        if (total == 0) return;
        int gs = FlatGroup(acc, groupSize, op);
        var k = For(acc).Embedding ??= acc.LoadKernel<ArrayView<long>, ArrayView<float>, ArrayView<float>, int, int, int, int>(EmbeddingBackwardKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, total, gs), ids, gy, gWeight, n, d, v, paddingIdx);
    }

    /// <summary>y [outer, n, inner] ← x [outer, size, inner] selected by index [n] (int64) along the middle dim.</summary>
    public static void IndexSelect(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<long> index, ArrayView<float> y,
        int outer, int size, int n, int inner, int groupSize = 0)
    {
        const string op = "index_select (cuda)";
        long total = Total(op, outer, n, inner);
        long xTotal = Total(op, outer, size, inner);
        string shape = $"input [{outer}, {size}, {inner}], index [{n}]";
        Need(op, "x", x, xTotal, shape); Need(op, "index", index, n, shape); Need(op, "y", y, total, shape);
        if (total == 0) return;
        if (size == 0) throw new ArgumentException($"{op}: cannot select {n} entries from an empty dim ({shape})");
        int gs = FlatGroup(acc, groupSize, op);
        var k = For(acc).Select ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, int, int, int, int>(IndexSelectKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, total, gs), x, index, y, outer, size, n, inner);
    }

    /// <summary>
    /// y ← x.gather(dim, index) for contiguous x [outer, nx, inner] and index/y [outer, ni, inner] (the index may differ
    /// from x only in the gathered dim; the CPU backend's smaller-index case goes through a contiguous copy).
    /// </summary>
    public static void Gather(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<long> index, ArrayView<float> y,
        int outer, int nx, int ni, int inner, int groupSize = 0)
    {
        const string op = "gather (cuda)";
        long total = Total(op, outer, ni, inner);
        long xTotal = Total(op, outer, nx, inner);
        string shape = $"input [{outer}, {nx}, {inner}], index [{outer}, {ni}, {inner}]";
        Need(op, "x", x, xTotal, shape); Need(op, "index", index, total, shape); Need(op, "y", y, total, shape);
        if (total == 0) return;
        if (nx == 0) throw new ArgumentException($"{op}: cannot gather from an empty dim ({shape})");
        int gs = FlatGroup(acc, groupSize, op);
        var k = For(acc).Gather ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, int, int, int, int>(GatherKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, total, gs), x, index, y, outer, nx, ni, inner);
    }

    /// <summary>
    /// dst.scatter_(dim, index, src) (<paramref name="add"/> false; duplicates: an unspecified write wins) or
    /// dst.scatter_add_ (float atomics) for contiguous dst [outer, nd, inner], index [outer, ni, inner] and
    /// src [outer, ns, inner] with ns ≥ ni.
    /// </summary>
    public static void Scatter(Accelerator acc, AcceleratorStream? stream, ArrayView<float> dst, ArrayView<long> index, ArrayView<float> src,
        int outer, int nd, int ni, int ns, int inner, bool add, int groupSize = 0)
    {
        string op = add ? "scatter_add (cuda)" : "scatter (cuda)";
        long total = Total(op, outer, ni, inner);
        long dTotal = Total(op, outer, nd, inner), sTotal = Total(op, outer, ns, inner);
        string shape = $"destination [{outer}, {nd}, {inner}], index [{outer}, {ni}, {inner}], source [{outer}, {ns}, {inner}]";
        if (ns < ni) throw new ArgumentException($"{op}: index is larger than the source in the scattered dim ({shape})");
        Need(op, "dst", dst, dTotal, shape); Need(op, "index", index, total, shape); Need(op, "src", src, sTotal, shape);
        if (total == 0) return;
        if (nd == 0) throw new ArgumentException($"{op}: cannot scatter into an empty dim ({shape})");
        int gs = FlatGroup(acc, groupSize, op);
        var k = For(acc).Scatter ??= acc.LoadKernel<ArrayView<float>, ArrayView<long>, ArrayView<float>, int, int, int, int, int, int>(ScatterKernel);
        CudaRuntime.CountLaunch();
        k(stream ?? acc.DefaultStream, FlatConfig(acc, total, gs), dst, index, src, outer, nd, ni, ns, inner, add ? 1 : 0);
    }

    /// <summary>ids [N] (int64) ← argmin_k ‖z_n − e_k‖² for z [N, D] and codebook [K, D]; first minimum on ties. Fused: no N×K matrix.</summary>
    public static void VqLookup(Accelerator acc, AcceleratorStream? stream, ArrayView<float> z, ArrayView<float> codebook, ArrayView<long> ids,
        int n, int k, int d, int groupSize = 0)
    {
        const string op = "vq_lookup (cuda)";
        long zTotal = Total(op, n, d), eTotal = Total(op, k, d);
        string shape = $"z [{n}, {d}], codebook [{k}, {d}]";
        if (k == 0 && n > 0) throw new ArgumentException($"{op}: codebook [{k}, {d}] is empty");
        Need(op, "z", z, zTotal, shape); Need(op, "codebook", codebook, eTotal, shape); Need(op, "ids", ids, n, shape);
        if (n == 0) return;
        int gs = FlatGroup(acc, groupSize, op);
        var kern = For(acc).Vq ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, int, int, int>(VqLookupKernel);
        int blocks = (n + VqRows - 1) / VqRows;
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, new KernelConfig(Math.Min(blocks, 1 << 20), gs), z, codebook, ids, n, k, d);
    }
}
