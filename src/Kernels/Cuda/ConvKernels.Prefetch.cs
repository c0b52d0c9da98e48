using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>One K row of the implicit GEMM (see <see cref="ConvKernels"/>): A offset, B base, tap offsets (one 16-byte load).</summary>
internal struct ConvRow
{
    public int A, Base, H, W;
}

/// <summary>A K row's index and its mixed-radix digits (ConvKernels.DigitsOf), kept per table slot so that the next row of the
/// slot follows by carries instead of divisions (one 16-byte value).</summary>
internal struct ConvDigits
{
    public int Hi, Mid, Lo, K;
}

/// <summary>One GEMM column: B base, top-left input coordinate, output offset (one 16-byte load; Out is the fourth int).</summary>
internal struct ConvCol
{
    public int Base, H, W, Out;
}

/// <summary>The compile-time tile of <see cref="ConvKernels.ConvGemmPrefetchKernel{T}"/>: a Size × Size output tile run by
/// (Size/8)² threads of 8×8 (Size a power of two, 64 or 128). Static abstract members fold to constants after inlining, so
/// shared-memory sizes stay constants.</summary>
internal interface IConvTile
{
    static abstract int Size { get; }
}

/// <summary>v3's tile: 128 × 128, 256 threads.</summary>
internal struct ConvTile128 : IConvTile
{
    public static int Size => 128;
}

/// <summary>v4's tile: 64 × 64, 64 threads (2 warps).</summary>
internal struct ConvTile64 : IConvTile
{
    public static int Size => 64;
}

/// <summary>
/// v3 and v4 (issue 7): implicit-GEMM convolution with v2's 8×8 float4 micro-tile, double-buffered shared tiles and
/// register prefetch (as <see cref="GemmKernels"/> v5), one kernel body generic over the tile (<see cref="IConvTile"/>):
/// v3 = 128 × 128 with 256 threads (where v2 ran), v4 = 64 × 64 with 64 threads (where v1 ran: small GEMMs that leave a
/// 128 tile's grid short of the device). Every output is the same single fma chain over k ascending as v1 and v2, so all
/// four give the same bits.
/// </summary>
public static partial class ConvKernels
{
    /// <summary>K rows per tile of the prefetching kernels.</summary>
    private const int PfBK = 8;

    private static void StoreRow8(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, int m, int o0, int o1, int o2, int o3,
        int o4, int o5, int o6, int o7, float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        if (m >= s.M) return;
        float bv = s.HasBias != 0 ? bias[m] : 0f;
        int ro = m * s.OutStride + zOff;
        if (o0 >= 0) o[o0 + ro] = v0 + bv;
        if (o1 >= 0) o[o1 + ro] = v1 + bv;
        if (o2 >= 0) o[o2 + ro] = v2 + bv;
        if (o3 >= 0) o[o3 + ro] = v3 + bv;
        if (o4 >= 0) o[o4 + ro] = v4 + bv;
        if (o5 >= 0) o[o5 + ro] = v5 + bv;
        if (o6 >= 0) o[o6 + ro] = v6 + bv;
        if (o7 >= 0) o[o7 + ro] = v7 + bv;
    }

    /// <summary>The epilogue of an 8×8 micro-tile: rows rowA..+3 and rowA + half..+3, columns colA..+3 and colB..+3, whose
    /// output offsets are outs[col·stride + off] (v2: the int cOut table; v3/v4: the Out field of the packed columns).</summary>
    private static void Store8x8(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, int rowA, int half,
        ArrayView<int> outs, int stride, int off, int colA, int colB, in Acc8x8 c)
    {
        int o0 = outs[colA * stride + off], o1 = outs[(colA + 1) * stride + off], o2 = outs[(colA + 2) * stride + off], o3 = outs[(colA + 3) * stride + off];
        int o4 = outs[colB * stride + off], o5 = outs[(colB + 1) * stride + off], o6 = outs[(colB + 2) * stride + off], o7 = outs[(colB + 3) * stride + off];
        StoreRow8(o, bias, s, zOff, rowA, o0, o1, o2, o3, o4, o5, o6, o7, c.c00, c.c01, c.c02, c.c03, c.c04, c.c05, c.c06, c.c07);
        StoreRow8(o, bias, s, zOff, rowA + 1, o0, o1, o2, o3, o4, o5, o6, o7, c.c10, c.c11, c.c12, c.c13, c.c14, c.c15, c.c16, c.c17);
        StoreRow8(o, bias, s, zOff, rowA + 2, o0, o1, o2, o3, o4, o5, o6, o7, c.c20, c.c21, c.c22, c.c23, c.c24, c.c25, c.c26, c.c27);
        StoreRow8(o, bias, s, zOff, rowA + 3, o0, o1, o2, o3, o4, o5, o6, o7, c.c30, c.c31, c.c32, c.c33, c.c34, c.c35, c.c36, c.c37);
        StoreRow8(o, bias, s, zOff, rowA + half, o0, o1, o2, o3, o4, o5, o6, o7, c.c40, c.c41, c.c42, c.c43, c.c44, c.c45, c.c46, c.c47);
        StoreRow8(o, bias, s, zOff, rowA + half + 1, o0, o1, o2, o3, o4, o5, o6, o7, c.c50, c.c51, c.c52, c.c53, c.c54, c.c55, c.c56, c.c57);
        StoreRow8(o, bias, s, zOff, rowA + half + 2, o0, o1, o2, o3, o4, o5, o6, o7, c.c60, c.c61, c.c62, c.c63, c.c64, c.c65, c.c66, c.c67);
        StoreRow8(o, bias, s, zOff, rowA + half + 3, o0, o1, o2, o3, o4, o5, o6, o7, c.c70, c.c71, c.c72, c.c73, c.c74, c.c75, c.c76, c.c77);
    }

    /// <summary>B(k, n) through the packed tables (the same element <see cref="LoadB(ArrayView{float}, ConvGemmShape, int, int, int, int, int, int)"/> reads;
    /// the old table layout, used only where <see cref="Folded"/> is false).</summary>
    private static float LoadB(ArrayView<float> b, ConvGemmShape s, ConvCol c, ConvRow r) => LoadB(b, s, c.Base, c.H, c.W, r.Base, r.H, r.W);

    /// <summary>B(k, n) through folded table entries (<see cref="FoldedB"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FoldedB(ArrayView<float> b, ConvGemmShape s, ConvCol c, ConvRow r) => FoldedB(b, s, c.Base, c.H, c.W, r.Base, r.H, r.W);

    /// <summary>Four B operands of one column: K rows rows[kr], rows[kr + kStep], … (one branch on the table layout per quad).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 LoadB4(ArrayView<float> b, ConvGemmShape s, ConvCol col, ArrayView<ConvRow> rows, int kr, int kStep)
    {
        F4 v;
        if (Folded(s))
        {
            v.X = FoldedB(b, s, col, rows[kr]);
            v.Y = FoldedB(b, s, col, rows[kr + kStep]);
            v.Z = FoldedB(b, s, col, rows[kr + 2 * kStep]);
            v.W = FoldedB(b, s, col, rows[kr + 3 * kStep]);
        }
        else
        {
            v.X = LoadB(b, s, col, rows[kr]);
            v.Y = LoadB(b, s, col, rows[kr + kStep]);
            v.Z = LoadB(b, s, col, rows[kr + 2 * kStep]);
            v.W = LoadB(b, s, col, rows[kr + 3 * kStep]);
        }
        return v;
    }

    /// <summary>
    /// Loads slot <paramref name="e"/> (&lt; (Size/8)²) of the K tile whose rows are in table buffer <paramref name="buf"/>:
    /// A elements i = e + threads·j (m = i / 8, k = i % 8: consecutive slots walk k, contiguous in w and gy; one K row per
    /// slot) and B elements i = e + threads·j (k = i / Size, n = i % Size: consecutive slots walk n, the output positions;
    /// one column per slot), j &lt; Size·8 / threads (4 for v3, 8 for v4): quads pa0/pb0, then pa1/pb1 (v4 only).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadSlot<T>(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, ArrayView<ConvCol> cols, ArrayView<ConvRow> rows,
        int m0, int buf, int e, out F4 pa0, out F4 pa1, out F4 pb0, out F4 pb1) where T : struct, IConvTile
    {
        int size = T.Size, threads = size / 8 * (size / 8);
        int mStep = threads / PfBK, kStep = threads / size;   // between a slot's A rows, between its B K rows
        int ka = rows[buf * PfBK + (e & (PfBK - 1))].A, m = m0 + e / PfBK;
        var col = cols[e & (size - 1)];
        int kr = buf * PfBK + e / size;
        // A: one address advanced by a fixed step (A(m, k) = a[ka + m·AStride] for m = m, m + mStep, …; 0 when ka = −1 or m ≥ M)
        bool kIn = ka >= 0;
        int ga = ka + m * s.AStride, gaStep = mStep * s.AStride;
        pa0.X = kIn && m < s.M ? a[ga] : 0f;
        pa0.Y = kIn && m + mStep < s.M ? a[ga + gaStep] : 0f;
        pa0.Z = kIn && m + 2 * mStep < s.M ? a[ga + 2 * gaStep] : 0f;
        pa0.W = kIn && m + 3 * mStep < s.M ? a[ga + 3 * gaStep] : 0f;
        pb0 = LoadB4(b, s, col, rows, kr, kStep);
        pa1 = default;
        pb1 = default;
        if (size * PfBK / threads > 4)
        {
            pa1.X = kIn && m + 4 * mStep < s.M ? a[ga + 4 * gaStep] : 0f;
            pa1.Y = kIn && m + 5 * mStep < s.M ? a[ga + 5 * gaStep] : 0f;
            pa1.Z = kIn && m + 6 * mStep < s.M ? a[ga + 6 * gaStep] : 0f;
            pa1.W = kIn && m + 7 * mStep < s.M ? a[ga + 7 * gaStep] : 0f;
            pb1 = LoadB4(b, s, col, rows, kr + 4 * kStep, kStep);
        }
    }

    /// <summary>Stores slot <paramref name="e"/> (as <see cref="LoadSlot{T}"/> mapped it) into shared buffer <paramref name="buf"/>:
    /// As[k·(Size+4) + m] (the k-major stores of a warp hit distinct banks: the row stride is 4 mod 32), Bs[k·Size + n].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutSlot<T>(ArrayView<float> As, ArrayView<float> Bs, int buf, int e, F4 pa0, F4 pa1, F4 pb0, F4 pb1) where T : struct, IConvTile
    {
        int size = T.Size, threads = size / 8 * (size / 8), aStride = size + 4;
        int mStep = threads / PfBK;
        int ai = buf * PfBK * aStride + (e & (PfBK - 1)) * aStride + e / PfBK, bi = buf * PfBK * size + e;
        As[ai] = pa0.X;
        As[ai + mStep] = pa0.Y;
        As[ai + 2 * mStep] = pa0.Z;
        As[ai + 3 * mStep] = pa0.W;
        Bs[bi] = pb0.X;
        Bs[bi + threads] = pb0.Y;
        Bs[bi + 2 * threads] = pb0.Z;
        Bs[bi + 3 * threads] = pb0.W;
        if (size * PfBK / threads > 4)
        {
            As[ai + 4 * mStep] = pa1.X;
            As[ai + 5 * mStep] = pa1.Y;
            As[ai + 6 * mStep] = pa1.Z;
            As[ai + 7 * mStep] = pa1.W;
            Bs[bi + 4 * threads] = pb1.X;
            Bs[bi + 5 * threads] = pb1.Y;
            Bs[bi + 6 * threads] = pb1.Z;
            Bs[bi + 7 * threads] = pb1.W;
        }
    }

    /// <summary>Loads and stores slots first, first + nt, … of buffer <paramref name="buf"/> (the slots nobody prefetched).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageSlots<T>(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, ArrayView<float> As, ArrayView<float> Bs,
        ArrayView<ConvCol> cols, ArrayView<ConvRow> rows, int m0, int buf, int first, int nt) where T : struct, IConvTile
    {
        int threads = T.Size / 8 * (T.Size / 8);
        for (int e = first; e < threads; e += nt)
        {
            LoadSlot<T>(a, b, s, cols, rows, m0, buf, e, out var pa0, out var pa1, out var pb0, out var pb1);
            PutSlot<T>(As, Bs, buf, e, pa0, pa1, pb0, pb1);
        }
    }

    /// <summary>
    /// The prefetching implicit-GEMM kernel (v3: T = <see cref="ConvTile128"/>, v4: <see cref="ConvTile64"/>), all three modes.
    /// Per output tile (grid-strided as v1/v2): the column table, then K tiles of 8 through two shared buffers. During K tile t
    /// thread e loads slot e of tile t + 1 into registers before the 8 k steps of FMAs on tile t and stores it into the other
    /// buffer after them; one barrier per K tile. With fewer threads than slots (the CPU emulator's 2-thread groups) the
    /// slots nobody owns are loaded and stored directly after the FMAs (same buffer, same barrier), so any group size works.
    /// Micro-tile (tx, ty) owns rows ty·4..+3 and Size/2 + ty·4..+3 and the same split of columns (as v2).
    /// <para>
    /// K-row tables: the loads of tile t + 1 happen during tile t, so its table must be complete one barrier earlier: the
    /// table of tile t + 2 is computed during tile t, into table buffer t &amp; 1 (tile u lives in buffer u &amp; 1).
    /// Hazards, with B(t) the barrier ending tile t: (1) the reads of table t (the loads of tile t, during tile t − 1 or the
    /// prologue) all precede B(t − 1), and its overwrite by table t + 2 follows B(t − 1) (no write-after-read); (2) table
    /// t + 2 is written before B(t) and first read during tile t + 1, after B(t) (read-after-write); (3) during tile t the
    /// reads of table t + 1 and the write of table t + 2 touch different buffers. The shared data buffers follow the same
    /// argument one tile later: buffer t + 1 &amp; 1 was last read by the FMAs of tile t − 1, before B(t − 1).
    /// </para>
    /// </summary>
    internal static void ConvGemmPrefetchKernel<T>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s)
        where T : struct, IConvTile
    {
        var As4 = SharedMemory.Allocate<F4>(2 * PfBK * (T.Size + 4) / 4);   // two buffers of As[k·(Size + 4) + m], as float4
        var Bs4 = SharedMemory.Allocate<F4>(2 * PfBK * T.Size / 4);         // two buffers of Bs[k·Size + n], as float4
        var As = As4.Cast<float>();
        var Bs = Bs4.Cast<float>();
        var cols = SharedMemory.Allocate<ConvCol>(T.Size);
        var rows = SharedMemory.Allocate<ConvRow>(2 * PfBK);                 // K rows of tile u in buffer u & 1
        var digits = SharedMemory.Allocate<ConvDigits>(PfBK + 1);            // the rows the next refill computes ([8]: the step)
        int size = T.Size, q = size / 8, threads = q * q, aQuads = (size + 4) / 4, bQuads = size / 4;
        int tid = Group.IdxX, nt = Group.DimX;
        // a CUDA launch is exactly `threads` threads (GroupSizeOf): one pass, every thread owns a slot, known to ptxas
        int passes = CudaAsm.IsSupported ? 1 : (threads + nt - 1) / nt;
        bool ownsSlot = CudaAsm.IsSupported || tid < threads;
        int tilesM = (s.M + size - 1) / size, tilesN = (s.N + size - 1) / size;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * size, n0 = tn * size;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + PfBK - 1) / PfBK;
            for (int p = 0; p < passes; p++)
            {
                int mt = p * nt + tid;
                bool active = mt < threads;
                mt &= threads - 1;
                int tx = mt & (q - 1), ty = mt / q;
                var acc = default(Acc8x8);
                for (int e = tid; e < size; e += nt) cols[e] = FoldedColumnOf(s, n0 + e);
                for (int e = tid; e < 2 * PfBK; e += nt) rows[e] = FoldedRowOf(s, kLo + e, kEnd);   // tiles 0 and 1
                if (tid == 0) digits[PfBK] = DigitsOf(s, PfBK);
                StartDigits(s, digits, PfBK, kLo + 2 * PfBK, tid, nt);
                Group.Barrier();
                if (kTiles > 0) StageSlots<T>(a, b, s, As, Bs, cols, rows, m0, 0, tid, nt);
                Group.Barrier();
                for (int kt = 0; kt < kTiles; kt++)
                {
                    int cur = kt & 1, nxt = cur ^ 1;
                    bool more = kt + 1 < kTiles;
                    F4 pa0 = default, pa1 = default, pb0 = default, pb1 = default;
                    if (more && ownsSlot) LoadSlot<T>(a, b, s, cols, rows, m0, nxt, tid, out pa0, out pa1, out pb0, out pb1);
                    int ab = cur * PfBK * aQuads + ty, bb = cur * PfBK * bQuads + tx;
                    if (size == 128)
                    {
                        // v3: the 8 k steps unrolled with 64-bit indices, so each step's four LDS.128 take constant offsets
                        // from two bases (no address arithmetic in the k loop). v4 keeps the loop: unrolled, it spills.
                        Micro8x8.Tile8(ref acc, As4, Bs4, ab, bb, aQuads, bQuads, q);
                    }
                    else
                        for (int kk = 0; kk < PfBK; kk++) Micro8x8.Step(ref acc, As4, Bs4, ab + kk * aQuads, bb + kk * bQuads, q);
                    if (more)
                    {
                        if (ownsSlot) PutSlot<T>(As, Bs, nxt, tid, pa0, pa1, pb0, pb1);
                        if (!CudaAsm.IsSupported) StageSlots<T>(a, b, s, As, Bs, cols, rows, m0, nxt, tid + nt, nt);
                    }
                    if (kt + 2 < kTiles)
                        RefillRows(s, rows, cur * PfBK, digits, PfBK, kEnd, tid, nt);
                    Group.Barrier();
                }
                if (active) Store8x8(o, bias, s, zOff, m0 + ty * 4, size / 2, cols.Cast<int>(), 4, 3, tx * 4, size / 2 + tx * 4, acc);
                Group.Barrier();   // the tables and buffers are rewritten by the next pass or tile
            }
        }
    }

    /// <summary>The kernel method of an fp32 version (for offline PTX compilation in tests and tools; Auto: v1).</summary>
    public static System.Reflection.MethodInfo KernelMethod(ConvVersion v) => v switch
    {
        ConvVersion.Tile128 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemm128Kernel).Method,
        ConvVersion.Tile128Prefetch => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemmPrefetchKernel<ConvTile128>).Method,
        ConvVersion.Tile64Prefetch => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemmPrefetchKernel<ConvTile64>).Method,
        _ => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape>)ConvGemmKernel).Method,
    };

    /// <summary>Every fp32 version, for the lab and the tests.</summary>
    public static IReadOnlyList<ConvVersion> Versions { get; } = [ConvVersion.Tile64, ConvVersion.Tile128, ConvVersion.Tile128Prefetch, ConvVersion.Tile64Prefetch];

    /// <summary>
    /// The launch bounds (PTX .maxntid / .minnctapersm) the CUDA loader gives a version: v3 runs 256 threads and asks for 2
    /// groups per SM, v4 64 threads and 8 groups, so ptxas keeps both at ≤ 128 registers per thread (65,536 per SM). v1 and
    /// v2 get none (unchanged). Other accelerators get none (the CPU accelerator refuses a bound above its group size).
    /// </summary>
    public static KernelSpecialization CudaLaunchBounds(ConvVersion v) => v switch
    {
        ConvVersion.Tile128Prefetch => new KernelSpecialization(GpuGroupSize, 2),
        ConvVersion.Tile64Prefetch => new KernelSpecialization(64, 8),
        _ => default,
    };

    /// <summary>Output rows (= columns) of a version's tile.</summary>
    private static int TileOf(ConvVersion v) => v is ConvVersion.Tile128 or ConvVersion.Tile128Prefetch ? BM2 : BM;

    /// <summary>Threads per group the launcher gives a version (v4: 64, the others 256; at most what the device allows).</summary>
    private static int GroupSizeOf(Accelerator acc, ConvVersion v) => Math.Min(v == ConvVersion.Tile64Prefetch ? 64 : GpuGroupSize, acc.MaxNumThreadsPerGroup);
}
