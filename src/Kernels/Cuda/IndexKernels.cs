using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Indexing family on ILGPU (float32 data, int64 indices): embedding backward (deterministic), index_select, gather,
/// scatter / scatter_add along a dim of contiguous tensors, and the fused VQ lookup. Semantics follow
/// <c>CpuBackend.Index.cs</c> and <c>CpuBackend.Nn.cs</c>. Tensors are described as [outer, n, inner] around the indexed
/// dim (<see cref="Split"/>). Index values live on the device, so the launchers cannot range-check them without a sync:
/// the backend checks them before launching, and the kernels never throw and never touch memory out of range: an
/// out-of-range index reads NaN (select, gather) or is skipped (scatter, embedding backward).
/// scatter_add uses float atomics and adds in an unspecified order, so its float results can differ from the CPU backend's
/// (ascending-source order) in the last bits. Embedding backward does not: it sums every id's rows in ascending source order
/// without float atomics (three passes, <see cref="EmbeddingBackward"/>), bit-identical to the CPU backend and run to run.
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
    /// <summary>Columns of a heavy embedding segment one group sums (one adder thread each).</summary>
    public const int EmbHeavyCols = 32;
    /// <summary>Rows of a heavy segment's column slice staged in shared memory per tile (two tiles: 32 KiB).</summary>
    public const int EmbHeavyRows = 128;
    /// <summary>Default: a segment (an id's source rows) is heavy from this many rows on.</summary>
    public const int EmbHeavyMin = 16;
    /// <summary>Most threads of the single planning group (its shared scan arrays are sized for it).</summary>
    public const int PlanMaxThreads = 1024;

    // ================================================================== kernels

    /// <summary>
    /// Embedding backward, pass 1 of 3 (one warp per token i, lanes stride over j &lt; i): rank[i] ← #{j &lt; i : ids[j] = ids[i]}
    /// and head[i] ← the first j with ids[j] = ids[i] (i itself when none); head[i] ← −1 for a skipped token (padding or
    /// out of range). Integer counts and minima only, combined by warp shuffles: the result does not depend on timing.
    /// </summary>
    internal static void EmbeddingRankKernel(ArrayView<long> ids, ArrayView<int> scratch, int n, int v, int paddingIdx)
    {
        var rank = scratch.SubView(0, n);
        var head = scratch.SubView(n, n);
        int ws = Warp.WarpSize, lane = Warp.LaneIdx;
        int warps = Grid.DimX * Group.DimX / ws;
        for (int i = Grid.GlobalIndex.X / ws; i < n; i += warps)
        {
            long id = ids[i];
            bool valid = id != paddingIdx && id >= 0 && id < v;
            int before = 0, first = i;
            if (valid)
                for (int j = lane; j < i; j += ws)
                    if (ids[j] == id)
                    {
                        if (before == 0) first = j;
                        before++;
                    }
            for (int o = ws / 2; o > 0; o >>= 1)
            {
                before += Warp.ShuffleXor(before, o);
                int u = Warp.ShuffleXor(first, o);
                first = u < first ? u : first;
            }
            if (lane == 0)
            {
                rank[i] = valid ? before : 0;
                head[i] = valid ? first : -1;
            }
        }
    }

    /// <summary>
    /// Embedding backward, pass 2 of 3 (a single group): cnt[f] ← segment size of every first occurrence f (integer atomics
    /// within the group), off ← exclusive scan of cnt, the first occurrences split into a heavy list (≥ <paramref name="heavyMin"/>
    /// rows) and a light list, in ascending f, and order[off[head[j]] + rank[j]] ← j: every id's source rows, ascending.
    /// Scan: each thread owns a contiguous run of tokens; the per-thread totals are scanned in shared memory (Hillis–Steele).
    /// </summary>
    internal static void EmbeddingPlanKernel(ArrayView<int> scratch, int n, int heavyMin)
    {
        var rank = scratch.SubView(0, n);
        var head = scratch.SubView(n, n);
        var cnt = scratch.SubView(2 * n, n);
        var off = scratch.SubView(3 * n, n);
        var order = scratch.SubView(4 * n, n);
        var hlist = scratch.SubView(5 * n, n);
        var llist = scratch.SubView(6 * n, n);
        var meta = scratch.SubView(7 * n, 2);
        var red = SharedMemory.Allocate<int>(3 * PlanMaxThreads);
        int tid = Group.IdxX, gs = Group.DimX;
        for (int i = tid; i < n; i += gs) cnt[i] = 0;
        Group.Barrier();
        for (int j = tid; j < n; j += gs)
        {
            int h = head[j];
            if (h >= 0) Atomic.Add(ref cnt[h], 1);
        }
        Group.Barrier();
        int per = (n + gs - 1) / gs;
        int a = tid * per < n ? tid * per : n;
        int b = a + per < n ? a + per : n;
        int sc = 0, sh = 0, sl = 0;
        for (int i = a; i < b; i++)
        {
            int c = cnt[i];
            sc += c;
            if (c >= heavyMin) sh++;
            else if (c > 0) sl++;
        }
        red[tid] = sc; red[gs + tid] = sh; red[2 * gs + tid] = sl;
        Group.Barrier();
        for (int o = 1; o < gs; o <<= 1)
        {
            int x0 = 0, x1 = 0, x2 = 0;
            if (tid >= o) { x0 = red[tid - o]; x1 = red[gs + tid - o]; x2 = red[2 * gs + tid - o]; }
            Group.Barrier();
            red[tid] += x0; red[gs + tid] += x1; red[2 * gs + tid] += x2;
            Group.Barrier();
        }
        int oc = red[tid] - sc, oh = red[gs + tid] - sh, ol = red[2 * gs + tid] - sl;
        for (int i = a; i < b; i++)
        {
            int c = cnt[i];
            if (c == 0) continue;
            off[i] = oc;
            oc += c;
            if (c >= heavyMin) hlist[oh++] = i;
            else llist[ol++] = i;
        }
        if (tid == gs - 1) { meta[0] = red[gs + tid]; meta[1] = red[2 * gs + tid]; }
        Group.Barrier();   // off is complete (global writes of this group are visible after the barrier)
        for (int j = tid; j < n; j += gs)
        {
            int h = head[j];
            int p = h >= 0 ? off[h] + rank[j] : -1;
            if ((uint)p < (uint)n) order[p] = j;   // always true for a consistent plan; guards the write all the same
        }
    }

    /// <summary>
    /// Embedding backward, pass 3 of 3: gWeight[id] ← ((gWeight[id] + gy[j1]) + gy[j2]) + … over the id's source rows in
    /// ascending j, exactly the CPU backend's order, each element written once (no float atomics).
    /// Light segments (&lt; heavyMin rows): one thread per (segment, column), reading its rows straight from memory.
    /// Heavy segments (one id repeated many times, e.g. token types): one group per (segment, <see cref="EmbHeavyCols"/>-column
    /// slice); loader threads stage <see cref="EmbHeavyRows"/> rows of the slice in shared memory (double buffered) while the
    /// adder threads (one per column, <paramref name="adders"/> of them) run the sequential sums over the previous tile.
    /// With adders = group size (small groups) every thread both loads and adds. Row numbers read from the plan are
    /// range-checked (always in range for a consistent plan) so that no bug upstream can make a read leave gy.
    /// </summary>
    internal static void EmbeddingSumKernel(ArrayView<long> ids, ArrayView<float> gy, ArrayView<float> gWeight, ArrayView<int> scratch,
        int n, int d, int adders)
    {
        var cnt = scratch.SubView(2 * n, n);
        var off = scratch.SubView(3 * n, n);
        var order = scratch.SubView(4 * n, n);
        var hlist = scratch.SubView(5 * n, n);
        var llist = scratch.SubView(6 * n, n);
        var meta = scratch.SubView(7 * n, 2);
        var buf = SharedMemory.Allocate<float>(2 * EmbHeavyRows * EmbHeavyCols);
        var acc = SharedMemory.Allocate<float>(EmbHeavyCols);
        int heavyCount = meta[0], lightCount = meta[1];

        // light segments first: they are short, so the groups that also own heavy items start those soon
        int lightTotal = lightCount * d;
        for (int e = Grid.GlobalIndex.X; e < lightTotal; e += Grid.DimX * Group.DimX)
        {
            int s = e / d, c = e - s * d;
            int f = llist[s];
            int s0 = off[f], m = cnt[f];
            long w = ids[f] * d + c;
            float a = gWeight[w];
            int r = 0;
            for (; r + 2 <= m; r += 2)
            {
                int j0 = order[s0 + r], j1 = order[s0 + r + 1];
                float x0 = (uint)j0 < (uint)n ? gy[(long)j0 * d + c] : 0f;   // always in range for a consistent plan
                float x1 = (uint)j1 < (uint)n ? gy[(long)j1 * d + c] : 0f;
                a += x0;
                a += x1;
            }
            if (r < m)
            {
                int j0 = order[s0 + r];
                a += (uint)j0 < (uint)n ? gy[(long)j0 * d + c] : 0f;
            }
            gWeight[w] = a;
        }

        int tid = Group.IdxX, gs = Group.DimX;
        bool split = adders < gs;
        int lt = split ? tid - adders : tid, lc = split ? gs - adders : gs;
        bool isAdder = tid < adders, isLoader = !split || tid >= adders;
        int slices = (d + EmbHeavyCols - 1) / EmbHeavyCols;
        for (int item = Grid.IdxX; item < heavyCount * slices; item += Grid.DimX)
        {
            int s = item / slices, q = item - s * slices;
            int f = hlist[s];
            int s0 = off[f], m = cnt[f];
            int c0 = q * EmbHeavyCols;
            int cw = d - c0 < EmbHeavyCols ? d - c0 : EmbHeavyCols;
            long wrow = ids[f] * d + c0;
            if (isAdder)
                for (int col = tid; col < EmbHeavyCols; col += adders) acc[col] = col < cw ? gWeight[wrow + col] : 0f;
            int tiles = (m + EmbHeavyRows - 1) / EmbHeavyRows;
            // tile 0: every thread loads
            int rows0 = m < EmbHeavyRows ? m : EmbHeavyRows;
            for (int x = tid; x < rows0 * EmbHeavyCols; x += gs)
            {
                int r = x / EmbHeavyCols, col = x - r * EmbHeavyCols;
                int j = order[s0 + r];
                buf[x] = col < cw && (uint)j < (uint)n ? gy[(long)j * d + c0 + col] : 0f;
            }
            Group.Barrier();
            for (int t = 0; t < tiles; t++)
            {
                int cur = (t & 1) * EmbHeavyRows * EmbHeavyCols;
                int rows = m - t * EmbHeavyRows < EmbHeavyRows ? m - t * EmbHeavyRows : EmbHeavyRows;
                if (isAdder)
                    for (int col = tid; col < EmbHeavyCols; col += adders)
                    {
                        float a = acc[col];
                        int p = cur + col, r = 0;
                        for (; r + 8 <= rows; r += 8, p += 8 * EmbHeavyCols)
                        {
                            float v0 = buf[p], v1 = buf[p + EmbHeavyCols], v2 = buf[p + 2 * EmbHeavyCols], v3 = buf[p + 3 * EmbHeavyCols];
                            float v4 = buf[p + 4 * EmbHeavyCols], v5 = buf[p + 5 * EmbHeavyCols], v6 = buf[p + 6 * EmbHeavyCols], v7 = buf[p + 7 * EmbHeavyCols];
                            a += v0; a += v1; a += v2; a += v3; a += v4; a += v5; a += v6; a += v7;
                        }
                        for (; r < rows; r++, p += EmbHeavyCols) a += buf[p];
                        acc[col] = a;
                    }
                if (isLoader && t + 1 < tiles)
                {
                    int nxt = EmbHeavyRows * EmbHeavyCols - cur;
                    int r1 = (t + 1) * EmbHeavyRows;
                    int rowsN = m - r1 < EmbHeavyRows ? m - r1 : EmbHeavyRows;
                    for (int x = lt; x < rowsN * EmbHeavyCols; x += lc)
                    {
                        int r = x / EmbHeavyCols, col = x - r * EmbHeavyCols;
                        int j = order[s0 + r1 + r];
                        buf[nxt + x] = col < cw && (uint)j < (uint)n ? gy[(long)j * d + c0 + col] : 0f;
                    }
                }
                Group.Barrier();
            }
            if (isAdder)
                for (int col = tid; col < cw; col += adders) gWeight[wrow + col] = acc[col];
            Group.Barrier();   // acc and buf are reused by the next item
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
    /// <summary>Element q of the z chunk (row r0 + q / VqDims, feature d0 + q % VqDims), 0 past the rows, the features or the chunk.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float VqZ(ArrayView<float> z, int q, int r0, int n, int d, int d0)
    {
        int r = q / VqDims, f = q - r * VqDims;
        return q < VqRows * VqDims && r0 + r < n && d0 + f < d ? z[(long)(r0 + r) * d + d0 + f] : 0f;
    }

    /// <summary>Element q of the codebook chunk (code k0 + q / VqDims, feature d0 + q % VqDims), 0 past the codes, the features or the chunk.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static float VqE(ArrayView<float> e, int q, int k0, int kCount, int d, int d0)
    {
        int kk = q / VqDims, f = q - kk * VqDims;
        return q < VqCodes * VqDims && k0 + kk < kCount && d0 + f < d ? e[(long)(k0 + kk) * d + d0 + f] : 0f;
    }

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
                    // four elements per thread at a time, all loaded before any is stored (a load issued after a store waits
                    // for that store's operand: one at a time, each chunk cost 12 memory latencies per thread, not 3)
                    for (int q = tid; q < VqRows * VqDims; q += 4 * gs)
                    {
                        float v0 = VqZ(z, q, r0, n, d, d0), v1 = VqZ(z, q + gs, r0, n, d, d0);
                        float v2 = VqZ(z, q + 2 * gs, r0, n, d, d0), v3 = VqZ(z, q + 3 * gs, r0, n, d, d0);
                        zs[q] = v0;
                        if (q + gs < VqRows * VqDims) zs[q + gs] = v1;
                        if (q + 2 * gs < VqRows * VqDims) zs[q + 2 * gs] = v2;
                        if (q + 3 * gs < VqRows * VqDims) zs[q + 3 * gs] = v3;
                    }
                    for (int q = tid; q < VqCodes * VqDims; q += 4 * gs)
                    {
                        float v0 = VqE(e, q, k0, kCount, d, d0), v1 = VqE(e, q + gs, k0, kCount, d, d0);
                        float v2 = VqE(e, q + 2 * gs, k0, kCount, d, d0), v3 = VqE(e, q + 3 * gs, k0, kCount, d, d0);
                        es[q / VqDims * VqEsStride + q % VqDims] = v0;
                        if (q + gs < VqCodes * VqDims) es[(q + gs) / VqDims * VqEsStride + (q + gs) % VqDims] = v1;
                        if (q + 2 * gs < VqCodes * VqDims) es[(q + 2 * gs) / VqDims * VqEsStride + (q + 2 * gs) % VqDims] = v2;
                        if (q + 3 * gs < VqCodes * VqDims) es[(q + 3 * gs) / VqDims * VqEsStride + (q + 3 * gs) % VqDims] = v3;
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
        public Action<AcceleratorStream, KernelConfig, ArrayView<long>, ArrayView<int>, int, int, int>? EmbRank;
        public Action<AcceleratorStream, KernelConfig, ArrayView<int>, int, int>? EmbPlan;
        public Action<AcceleratorStream, KernelConfig, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int>? EmbSum;
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

    /// <summary>Device scratch (int32 elements) <see cref="EmbeddingBackward"/> needs for <paramref name="n"/> ids.</summary>
    public static long EmbeddingScratch(int n) => 7L * n + 2;

    /// <summary>
    /// gWeight [V, D] += Σ rows of gy [N, D] by ids [N] (int64); rows with id == paddingIdx (−1: none) or out of [0, V) skipped.
    /// Deterministic and bit-identical to the CPU backend: gWeight[id] ← ((gWeight[id] + gy[j1]) + gy[j2]) + … in ascending j.
    /// Three launches, no host sync: rank (O(N²/warp) integer comparisons), plan (one group: counts, scan, ascending row
    /// lists), sum (light ids one thread per element, heavy ids through shared-memory tiles). <paramref name="scratch"/> holds
    /// <see cref="EmbeddingScratch"/>(n) ints. <paramref name="heavyMin"/> and <paramref name="adders"/> (0: defaults) let tests
    /// reach the heavy path and its split loader/adder form on small groups.
    /// </summary>
    public static void EmbeddingBackward(Accelerator acc, AcceleratorStream? stream, ArrayView<long> ids, ArrayView<float> gy, ArrayView<float> gWeight,
        ArrayView<int> scratch, int n, int d, int v, int paddingIdx, int groupSize = 0, int heavyMin = 0, int adders = 0)
    {
        const string op = "embedding_backward (cuda)";
        long total = Total(op, n, d);
        Total(op, v, d);
        Total(op, n, 8);   // the scratch's 7n + 2 ints stay 32-bit indexable
        string shape = $"ids [{n}], gradient [{n}, {d}], weight [{v}, {d}]";
        if (paddingIdx >= v || paddingIdx < -1) throw new ArgumentOutOfRangeException(nameof(paddingIdx), $"{op}: padding index {paddingIdx} is out of range for {v} embeddings");
        Need(op, "ids", ids, n, shape); Need(op, "gy", gy, total, shape); Need(op, "gWeight", gWeight, (long)v * d, shape);
        Need(op, "scratch", scratch, EmbeddingScratch(n), shape);
        if (total == 0) return;
        int gs = FlatGroup(acc, groupSize, op);
        if (heavyMin < 0) throw new ArgumentOutOfRangeException(nameof(heavyMin), $"{op}: heavy threshold {heavyMin} must be ≥ 0 (0: default {EmbHeavyMin})");
        int hm = heavyMin == 0 ? EmbHeavyMin : heavyMin;
        int ad = adders == 0 ? (gs >= 2 * EmbHeavyCols ? EmbHeavyCols : gs) : adders;
        if (ad < 1 || ad > gs) throw new ArgumentOutOfRangeException(nameof(adders), $"{op}: {ad} adder threads must be in [1, group size {gs}]");
        int ps = Math.Min(PlanMaxThreads, acc.MaxNumThreadsPerGroup) / acc.WarpSize * acc.WarpSize;
        var l = For(acc);
        var rank = l.EmbRank ??= acc.LoadKernel<ArrayView<long>, ArrayView<int>, int, int, int>(EmbeddingRankKernel);
        var plan = l.EmbPlan ??= acc.LoadKernel<ArrayView<int>, int, int>(EmbeddingPlanKernel);
        var sum = l.EmbSum ??= acc.LoadKernel<ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int>(EmbeddingSumKernel);
        var st = stream ?? acc.DefaultStream;
        CudaRuntime.CountLaunch();
        rank(st, FlatConfig(acc, (long)n * acc.WarpSize, gs), ids, scratch, n, v, paddingIdx);
        CudaRuntime.CountLaunch();
        plan(st, new KernelConfig(1, Math.Max(ps, acc.WarpSize)), scratch, n, hm);
        CudaRuntime.CountLaunch();
        sum(st, FlatConfig(acc, total, gs), ids, gy, gWeight, scratch, n, d, ad);
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
