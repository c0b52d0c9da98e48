using FashionViL.Kernels.Cpu;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>Which rung of the SGEMM ladder to run (the kernel lab times all of them; <see cref="GemmKernels.Best"/> is wired).</summary>
public enum GemmVersion
{
    /// <summary>v1: one thread per output element, K loop straight from global memory.</summary>
    Naive = 1,
    /// <summary>v2: 16×16 output tile per group, A/B tiles staged in shared memory, one output per thread (per pass).</summary>
    Tiled16 = 2,
    /// <summary>v3: 64×64 tile, BK 16, 4×4 outputs per thread in scalar registers (rows/cols strided by 16), scalar loads.</summary>
    Reg64x4 = 3,
    /// <summary>v4: 128×128 tile, BK 8, 8×8 outputs per thread, 128-bit global and shared loads/stores where aligned.</summary>
    Reg128x8Vec = 4,
    /// <summary>v5: v4 with double-buffered shared tiles and the next K tile prefetched into registers (one barrier per tile).</summary>
    Reg128x8Prefetch = 5,
    /// <summary>v6: v5 compiled once per operand layout, with a bounds-free K-tile loop for interior tiles of aligned operands.</summary>
    Reg128x8Layout = 6,
}

/// <summary>
/// One strided-batched SGEMM for the ILGPU kernels: C[b] ← alpha·op(A[b])·op(B[b]) + beta·C[b] (+ bias[N]) (then GELU).
/// Element (r, c) of the stored A of batch b is A[b·StrideA + r·Lda + c]; op(A) is M×K (stored K×M when TransA).
/// A batch stride of 0 shares (broadcasts) that operand. beta = 0 never reads C. <see cref="Bias"/> with length 0 = no bias.
/// </summary>
public struct GemmArgs
{
    public ArrayView<float> A, B, C, Bias;
    public int M, N, K, Lda, Ldb, Ldc, Batch;
    public long StrideA, StrideB, StrideC;
    public bool TransA, TransB, Gelu;
    public float Alpha, Beta;
    /// <summary>Tensor-core GEMMs only: A (<see cref="ARounded"/>) or B (<see cref="BRounded"/>) already holds values rounded
    /// for the precision (<see cref="ConvKernels.RoundOperands"/>), so the 128×64 tile stores that operand's prefetched values
    /// without rounding them again (same bits: rounding is idempotent). The 64×32 tile and the fp32 SGEMM ignore them.</summary>
    public bool ARounded, BRounded;

    /// <summary>Dense row-major operands: lda/ldb/ldc are the stored row lengths, batch strides = one matrix each.</summary>
    public static GemmArgs Dense(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int batch, int m, int n, int k,
        bool transA = false, bool transB = false, float alpha = 1f, float beta = 0f)
        => new()
        {
            A = a, B = b, C = c, M = m, N = n, K = k, Batch = batch,
            Lda = transA ? m : k, Ldb = transB ? k : n, Ldc = n,
            StrideA = (long)m * k, StrideB = (long)k * n, StrideC = (long)m * n,
            TransA = transA, TransB = transB, Alpha = alpha, Beta = beta,
        };
}

/// <summary>The scalar part of <see cref="GemmArgs"/> as the kernels receive it.</summary>
public struct GemmShape
{
    public int M, N, K, Lda, Ldb, Ldc, Batch, Flags;
    public long StrideA, StrideB, StrideC;
    public float Alpha, Beta;
}

/// <summary>Four floats: a 128-bit load or store (ld.v4.f32 / st.v4.f32) when read through a view of this type.</summary>
public struct F4
{
    public float X, Y, Z, W;
}

/// <summary>
/// SGEMM kernels for the CUDA backend (issue 3), a ladder of versions kept for the kernel lab (<see cref="GemmVersion"/>).
/// Every tile size is a constant; the group shape is a launch parameter and every cooperative loop strides by
/// Group.DimX, so the same kernel runs with 2-thread groups on ILGPU's CPU accelerator and 256-thread groups on a GPU.
/// Kernels never throw: bounds are checked for any M, N, K, and the launcher validates the views' lengths first.
/// The GELU epilogue is exact-erf GELU, the same formula as <see cref="ScalarMath.GeluF"/>; the context needs
/// EnableAlgorithms() (or LibDevice) for MathF.Exp on CUDA.
/// </summary>
public static class GemmKernels
{
    /// <summary>
    /// The version <see cref="Launch(Accelerator, AcceleratorStream?, in GemmArgs)"/> and the CUDA backend run: v6. Measured
    /// on an H200 (2026-11-28, A/B in one device call, batch 64, every fp32 GEMM forced onto v6 with <c>FVL_SGEMM</c>):
    /// GEMM time per step 93.2 → 84.6 ms (ITC), 167.2 → 141.4 ms (MLM), 146.5 → 122.1 ms (MPFC) against v5, the earlier
    /// rule. Same tile as v5 (so the same split-K counts) and the same bits as every other version.
    /// </summary>
    public const GemmVersion Best = GemmVersion.Reg128x8Layout;

    internal const int FlagTransA = 1, FlagTransB = 2, FlagBias = 4, FlagGelu = 8, FlagVecA = 16, FlagVecB = 32, FlagVecC = 64;

    /// <summary>Threads per group on a GPU (the kernels accept any group size; the CPU accelerator gets its maximum, e.g. 2).</summary>
    public const int GpuGroupSize = 256;

    /// <summary>The C tile one group of version <paramref name="v"/> computes (v1: one element per thread of a group).</summary>
    public static (int M, int N) TileOf(GemmVersion v) => v switch
    {
        GemmVersion.Naive => (1, GpuGroupSize),
        GemmVersion.Tiled16 => (T2, T2),
        GemmVersion.Reg64x4 => (BM3, BM3),
        _ => (BM4, BN4),
    };

    // ---------------------------------------------------------------- shared helpers (inlined into the kernels)

    private static float LoadA(ArrayView<float> a, GemmShape s, long off, int m, int k)
        => (s.Flags & FlagTransA) != 0 ? a[off + (long)k * s.Lda + m] : a[off + (long)m * s.Lda + k];

    private static float LoadB(ArrayView<float> b, GemmShape s, long off, int k, int n)
        => (s.Flags & FlagTransB) != 0 ? b[off + (long)n * s.Ldb + k] : b[off + (long)k * s.Ldb + n];

    /// <summary>alpha·acc (+ beta·C) (+ bias[n]) (then GELU) for the element at c[ci], column n.</summary>
    private static float Epilogue(float acc, ArrayView<float> c, ArrayView<float> bias, GemmShape s, long ci, int n)
    {
        float r = s.Alpha * acc;
        if (s.Beta != 0f) r += s.Beta * c[ci];
        if ((s.Flags & FlagBias) != 0) r += bias[n];
        if ((s.Flags & FlagGelu) != 0) r = ScalarMath.GeluF(r);
        return r;
    }

    /// <summary>Stores four outputs of one row at columns col, col+stride, col+2·stride, col+3·stride (each bounds-checked).</summary>
    private static void StoreScalar(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, int row, int col, int stride,
        float v0, float v1, float v2, float v3)
    {
        if (row >= s.M) return;
        long ci = cOff + (long)row * s.Ldc + col;
        if (col < s.N) c[ci] = Epilogue(v0, c, bias, s, ci, col);
        if (col + stride < s.N) c[ci + stride] = Epilogue(v1, c, bias, s, ci + stride, col + stride);
        if (col + 2 * stride < s.N) c[ci + 2 * stride] = Epilogue(v2, c, bias, s, ci + 2 * stride, col + 2 * stride);
        if (col + 3 * stride < s.N) c[ci + 3 * stride] = Epilogue(v3, c, bias, s, ci + 3 * stride, col + 3 * stride);
    }

    /// <summary>Stores four adjacent outputs of one row at columns col..col+3: one 128-bit access when aligned and inside.</summary>
    private static void StoreQuad(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, int row, int col, bool vec,
        float v0, float v1, float v2, float v3)
    {
        if (row >= s.M) return;
        long ci = cOff + (long)row * s.Ldc + col;
        if (vec && col + 3 < s.N)
        {
            var c4 = c.Cast<F4>();
            F4 old = default;
            if (s.Beta != 0f) old = c4[ci >> 2];
            F4 r;
            r.X = s.Alpha * v0 + s.Beta * old.X;
            r.Y = s.Alpha * v1 + s.Beta * old.Y;
            r.Z = s.Alpha * v2 + s.Beta * old.Z;
            r.W = s.Alpha * v3 + s.Beta * old.W;
            if ((s.Flags & FlagBias) != 0)
            {
                r.X += bias[col]; r.Y += bias[col + 1]; r.Z += bias[col + 2]; r.W += bias[col + 3];
            }
            if ((s.Flags & FlagGelu) != 0)
            {
                r.X = ScalarMath.GeluF(r.X); r.Y = ScalarMath.GeluF(r.Y); r.Z = ScalarMath.GeluF(r.Z); r.W = ScalarMath.GeluF(r.W);
            }
            c4[ci >> 2] = r;
            return;
        }
        if (col < s.N) c[ci] = Epilogue(v0, c, bias, s, ci, col);
        if (col + 1 < s.N) c[ci + 1] = Epilogue(v1, c, bias, s, ci + 1, col + 1);
        if (col + 2 < s.N) c[ci + 2] = Epilogue(v2, c, bias, s, ci + 2, col + 2);
        if (col + 3 < s.N) c[ci + 3] = Epilogue(v3, c, bias, s, ci + 3, col + 3);
    }

    // ---------------------------------------------------------------- v1: naive

    /// <summary>v1: one thread per output (grid-stride over batch·M·N), K loop from global memory.</summary>
    internal static void NaiveKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        long total = (long)s.Batch * s.M * s.N;
        long step = (long)Grid.DimX * Group.DimX;
        for (long idx = Grid.GlobalIndex.X; idx < total; idx += step)
        {
            int n = (int)(idx % s.N);
            long r = idx / s.N;
            int m = (int)(r % s.M);
            int bt = (int)(r / s.M);
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB;
            float acc = 0f;
            for (int k = 0; k < s.K; k++) acc += LoadA(a, s, aOff, m, k) * LoadB(b, s, bOff, k, n);
            long ci = bt * s.StrideC + (long)m * s.Ldc + n;
            c[ci] = Epilogue(acc, c, bias, s, ci, n);
        }
    }

    // ---------------------------------------------------------------- v2: shared-memory tiles

    private const int T2 = 16;

    /// <summary>v2 (vs v1: A/B reuse through shared memory): a 16×16 output tile per group, 16-deep K tiles staged in shared
    /// memory; thread t owns tile elements t, t+DimX, … (one pass each, so any group size works).</summary>
    internal static void TiledKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As = SharedMemory.Allocate<float>(T2 * T2);   // As[k·16 + m]
        var Bs = SharedMemory.Allocate<float>(T2 * T2);   // Bs[k·16 + n]
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = (T2 * T2 + nt - 1) / nt;
        int tilesM = (s.M + T2 - 1) / T2, tilesN = (s.N + T2 - 1) / T2;
        bool ta = (s.Flags & FlagTransA) != 0, tb = (s.Flags & FlagTransB) != 0;
        for (int bt = Grid.IdxZ; bt < s.Batch; bt += Grid.DimZ)
        {
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
            for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
            for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
            {
                int m0 = tm * T2, n0 = tn * T2;
                for (int p = 0; p < passes; p++)
                {
                    int e = p * nt + tid;
                    bool active = e < T2 * T2;
                    int lm = (e & (T2 * T2 - 1)) / T2, ln = e & (T2 - 1);
                    float acc = 0f;
                    for (int k0 = 0; k0 < s.K; k0 += T2)
                    {
                        for (int i = tid; i < T2 * T2; i += nt)
                        {
                            // index order follows the stored layout so neighbouring threads read neighbouring addresses
                            int am = ta ? i & (T2 - 1) : i / T2, ak = ta ? i / T2 : i & (T2 - 1);
                            As[ak * T2 + am] = m0 + am < s.M && k0 + ak < s.K ? LoadA(a, s, aOff, m0 + am, k0 + ak) : 0f;
                            int bn = tb ? i / T2 : i & (T2 - 1), bk = tb ? i & (T2 - 1) : i / T2;
                            Bs[bk * T2 + bn] = n0 + bn < s.N && k0 + bk < s.K ? LoadB(b, s, bOff, k0 + bk, n0 + bn) : 0f;
                        }
                        Group.Barrier();
                        for (int kk = 0; kk < T2; kk++) acc += As[kk * T2 + lm] * Bs[kk * T2 + ln];
                        Group.Barrier();
                    }
                    if (active && m0 + lm < s.M && n0 + ln < s.N)
                    {
                        long ci = cOff + (long)(m0 + lm) * s.Ldc + n0 + ln;
                        c[ci] = Epilogue(acc, c, bias, s, ci, n0 + ln);
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------- v3: register blocking 64×64, 4×4 per thread

    private const int BM3 = 64, BN3 = 64, BK3 = 16, Micro3 = (BM3 / 4) * (BN3 / 4);

    /// <summary>v3 (vs v2: register blocking, 16 FMAs per 8 shared loads): a 64×64 tile per group, K tiles of 16; each of
    /// the 256 micro-tiles is 4×4 outputs at rows ty+16i, cols tx+16j held in scalar locals (ILGPU does not unroll loops).</summary>
    internal static void Reg64Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As = SharedMemory.Allocate<float>(BK3 * BM3);   // As[k·64 + m]
        var Bs = SharedMemory.Allocate<float>(BK3 * BN3);   // Bs[k·64 + n]
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = (Micro3 + nt - 1) / nt;
        int tilesM = (s.M + BM3 - 1) / BM3, tilesN = (s.N + BN3 - 1) / BN3;
        bool ta = (s.Flags & FlagTransA) != 0, tb = (s.Flags & FlagTransB) != 0;
        for (int bt = Grid.IdxZ; bt < s.Batch; bt += Grid.DimZ)
        {
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
            for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
            for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
            {
                int m0 = tm * BM3, n0 = tn * BN3;
                for (int p = 0; p < passes; p++)
                {
                    int mt = p * nt + tid;
                    bool active = mt < Micro3;
                    mt &= Micro3 - 1;
                    int tx = mt & 15, ty = mt >> 4;
                    float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f, c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f, c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f, c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f;
                    for (int k0 = 0; k0 < s.K; k0 += BK3)
                    {
                        for (int i = tid; i < BK3 * BM3; i += nt)
                        {
                            int am = ta ? i & (BM3 - 1) : i / BK3, ak = ta ? i / BM3 : i & (BK3 - 1);
                            As[ak * BM3 + am] = m0 + am < s.M && k0 + ak < s.K ? LoadA(a, s, aOff, m0 + am, k0 + ak) : 0f;
                            int bn = tb ? i / BK3 : i & (BN3 - 1), bk = tb ? i & (BK3 - 1) : i / BN3;
                            Bs[bk * BN3 + bn] = n0 + bn < s.N && k0 + bk < s.K ? LoadB(b, s, bOff, k0 + bk, n0 + bn) : 0f;
                        }
                        Group.Barrier();
                        for (int kk = 0; kk < BK3; kk++)
                        {
                            int ab = kk * BM3 + ty, bb = kk * BN3 + tx;
                            float a0 = As[ab], a1 = As[ab + 16], a2 = As[ab + 32], a3 = As[ab + 48];
                            float b0 = Bs[bb], b1 = Bs[bb + 16], b2 = Bs[bb + 32], b3 = Bs[bb + 48];
                            c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                            c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                            c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                            c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                        }
                        Group.Barrier();
                    }
                    if (active)
                    {
                        StoreScalar(c, bias, s, cOff, m0 + ty + 0, n0 + tx, 16, c00, c01, c02, c03);
                        StoreScalar(c, bias, s, cOff, m0 + ty + 16, n0 + tx, 16, c10, c11, c12, c13);
                        StoreScalar(c, bias, s, cOff, m0 + ty + 32, n0 + tx, 16, c20, c21, c22, c23);
                        StoreScalar(c, bias, s, cOff, m0 + ty + 48, n0 + tx, 16, c30, c31, c32, c33);
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------- v4: register blocking 128×128, 8×8 per thread, 128-bit

    private const int BM4 = 128, BN4 = 128, BK4 = 8, Micro4 = (BM4 / 8) * (BN4 / 8), Quads4 = BK4 * BM4 / 4;

    /// <summary>Slot e (0..255) of the op(A)[m0.., k0..] tile as a float4 from global memory: one 128-bit load when aligned
    /// and inside, else four bounds-checked scalar loads (zeros outside). TransA: the slot runs along m, else along k.</summary>
    private static F4 LoadSlotA(ArrayView<float> a, GemmShape s, long aOff, int m0, int k0, int e)
        => LoadSlotA(a, s, aOff, m0, k0, e, (s.Flags & FlagTransA) != 0);

    /// <summary><see cref="LoadSlotA(ArrayView{float}, GemmShape, long, int, int, int)"/> with the layout given (a constant in v5).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 LoadSlotA(ArrayView<float> a, GemmShape s, long aOff, int m0, int k0, int e, bool ta)
    {
        bool vec = (s.Flags & FlagVecA) != 0;
        F4 v;
        if (ta)
        {
            int gk = k0 + (e >> 5), gm = m0 + ((e & 31) << 2);
            long gi = aOff + (long)gk * s.Lda + gm;
            if (vec && gk < s.K && gm + 3 < s.M) return a.Cast<F4>()[gi >> 2];
            bool kin = gk < s.K;
            v.X = kin && gm < s.M ? a[gi] : 0f;
            v.Y = kin && gm + 1 < s.M ? a[gi + 1] : 0f;
            v.Z = kin && gm + 2 < s.M ? a[gi + 2] : 0f;
            v.W = kin && gm + 3 < s.M ? a[gi + 3] : 0f;
        }
        else
        {
            int gm = m0 + (e >> 1), gk = k0 + ((e & 1) << 2);
            long gi = aOff + (long)gm * s.Lda + gk;
            if (vec && gm < s.M && gk + 3 < s.K) return a.Cast<F4>()[gi >> 2];
            bool min = gm < s.M;
            v.X = min && gk < s.K ? a[gi] : 0f;
            v.Y = min && gk + 1 < s.K ? a[gi + 1] : 0f;
            v.Z = min && gk + 2 < s.K ? a[gi + 2] : 0f;
            v.W = min && gk + 3 < s.K ? a[gi + 3] : 0f;
        }
        return v;
    }

    /// <summary>Slot e of the op(B)[k0.., n0..] tile (see <see cref="LoadSlotA"/>). Not TransB: the slot runs along n, else along k.</summary>
    private static F4 LoadSlotB(ArrayView<float> b, GemmShape s, long bOff, int k0, int n0, int e)
        => LoadSlotB(b, s, bOff, k0, n0, e, (s.Flags & FlagTransB) != 0);

    /// <summary><see cref="LoadSlotB(ArrayView{float}, GemmShape, long, int, int, int)"/> with the layout given (a constant in v5).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 LoadSlotB(ArrayView<float> b, GemmShape s, long bOff, int k0, int n0, int e, bool tb)
    {
        bool vec = (s.Flags & FlagVecB) != 0;
        F4 v;
        if (!tb)
        {
            int gk = k0 + (e >> 5), gn = n0 + ((e & 31) << 2);
            long gi = bOff + (long)gk * s.Ldb + gn;
            if (vec && gk < s.K && gn + 3 < s.N) return b.Cast<F4>()[gi >> 2];
            bool kin = gk < s.K;
            v.X = kin && gn < s.N ? b[gi] : 0f;
            v.Y = kin && gn + 1 < s.N ? b[gi + 1] : 0f;
            v.Z = kin && gn + 2 < s.N ? b[gi + 2] : 0f;
            v.W = kin && gn + 3 < s.N ? b[gi + 3] : 0f;
        }
        else
        {
            int gn = n0 + (e >> 1), gk = k0 + ((e & 1) << 2);
            long gi = bOff + (long)gn * s.Ldb + gk;
            if (vec && gn < s.N && gk + 3 < s.K) return b.Cast<F4>()[gi >> 2];
            bool nin = gn < s.N;
            v.X = nin && gk < s.K ? b[gi] : 0f;
            v.Y = nin && gk + 1 < s.K ? b[gi + 1] : 0f;
            v.Z = nin && gk + 2 < s.K ? b[gi + 2] : 0f;
            v.W = nin && gk + 3 < s.K ? b[gi + 3] : 0f;
        }
        return v;
    }

    /// <summary>Writes slot e into a k-major shared tile T[k·128 + i] starting at float4 <paramref name="base4"/>: as one
    /// float4 when the slot runs along i (<paramref name="alongI"/>), else transposed into four rows.</summary>
    private static void PutSlot(ArrayView<F4> t4, ArrayView<float> t, int base4, int e, F4 v, bool alongI)
    {
        if (alongI)
        {
            t4[base4 + e] = v;   // e = k·32 + i/4
            return;
        }
        int i = e >> 1, o = base4 * 4 + ((e & 1) << 2) * BM4 + i;
        t[o] = v.X;
        t[o + BM4] = v.Y;
        t[o + 2 * BM4] = v.Z;
        t[o + 3 * BM4] = v.W;
    }

    /// <summary>Stages op(A)[m0.., k0..] into As[k·128 + m] and op(B)[k0.., n0..] into Bs[k·128 + n] (all 256 slots of each,
    /// strided by the group size) at float4 offset <paramref name="base4"/>.</summary>
    private static void StageTiles(ArrayView<float> a, ArrayView<float> b, GemmShape s, long aOff, long bOff, int m0, int n0, int k0,
        ArrayView<F4> As4, ArrayView<float> As, ArrayView<F4> Bs4, ArrayView<float> Bs, int base4, int first, int nt)
        => StageTiles(a, b, s, aOff, bOff, m0, n0, k0, As4, As, Bs4, Bs, base4, first, nt, (s.Flags & FlagTransA) != 0, (s.Flags & FlagTransB) != 0);

    /// <summary><see cref="StageTiles(ArrayView{float}, ArrayView{float}, GemmShape, long, long, int, int, int, ArrayView{F4}, ArrayView{float}, ArrayView{F4}, ArrayView{float}, int, int, int)"/>
    /// with the layout given (constants in v5).</summary>
    private static void StageTiles(ArrayView<float> a, ArrayView<float> b, GemmShape s, long aOff, long bOff, int m0, int n0, int k0,
        ArrayView<F4> As4, ArrayView<float> As, ArrayView<F4> Bs4, ArrayView<float> Bs, int base4, int first, int nt, bool ta, bool tb)
    {
        for (int e = first; e < Quads4; e += nt)
        {
            PutSlot(As4, As, base4, e, LoadSlotA(a, s, aOff, m0, k0, e, ta), ta);
            PutSlot(Bs4, Bs, base4, e, LoadSlotB(b, s, bOff, k0, n0, e, tb), !tb);
        }
    }

    /// <summary>v4 (vs v3: 64 FMAs per 4 shared float4 loads, 128-bit global loads/C stores): a 128×128 tile per group,
    /// K tiles of 8; micro-tile (tx, ty) owns rows ty·4..+3 and 64+ty·4..+3 and the same split of columns, so a warp's
    /// float4 shared reads are conflict-free broadcasts.</summary>
    internal static void Reg128Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As4 = SharedMemory.Allocate<F4>(Quads4);   // As[k·128 + m], as float4
        var Bs4 = SharedMemory.Allocate<F4>(Quads4);   // Bs[k·128 + n], as float4
        var As = As4.Cast<float>();
        var Bs = Bs4.Cast<float>();
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = (Micro4 + nt - 1) / nt;
        int tilesM = (s.M + BM4 - 1) / BM4, tilesN = (s.N + BN4 - 1) / BN4;
        bool vecC = (s.Flags & FlagVecC) != 0;
        for (int bt = Grid.IdxZ; bt < s.Batch; bt += Grid.DimZ)
        {
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
            for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
            for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
            {
                int m0 = tm * BM4, n0 = tn * BN4;
                for (int p = 0; p < passes; p++)
                {
                    int mt = p * nt + tid;
                    bool active = mt < Micro4;
                    mt &= Micro4 - 1;
                    int tx = mt & 15, ty = mt >> 4;
                    float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f, c04 = 0f, c05 = 0f, c06 = 0f, c07 = 0f;
                    float c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f, c14 = 0f, c15 = 0f, c16 = 0f, c17 = 0f;
                    float c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f, c24 = 0f, c25 = 0f, c26 = 0f, c27 = 0f;
                    float c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f, c34 = 0f, c35 = 0f, c36 = 0f, c37 = 0f;
                    float c40 = 0f, c41 = 0f, c42 = 0f, c43 = 0f, c44 = 0f, c45 = 0f, c46 = 0f, c47 = 0f;
                    float c50 = 0f, c51 = 0f, c52 = 0f, c53 = 0f, c54 = 0f, c55 = 0f, c56 = 0f, c57 = 0f;
                    float c60 = 0f, c61 = 0f, c62 = 0f, c63 = 0f, c64 = 0f, c65 = 0f, c66 = 0f, c67 = 0f;
                    float c70 = 0f, c71 = 0f, c72 = 0f, c73 = 0f, c74 = 0f, c75 = 0f, c76 = 0f, c77 = 0f;
                    for (int k0 = 0; k0 < s.K; k0 += BK4)
                    {
                        StageTiles(a, b, s, aOff, bOff, m0, n0, k0, As4, As, Bs4, Bs, 0, tid, nt);
                        Group.Barrier();
                        for (int kk = 0; kk < BK4; kk++)
                        {
                            int ab = kk * (BM4 / 4) + ty, bb = kk * (BN4 / 4) + tx;
                            F4 al = As4[ab], ah = As4[ab + 16], bl = Bs4[bb], bh = Bs4[bb + 16];
                            float a0 = al.X, a1 = al.Y, a2 = al.Z, a3 = al.W, a4 = ah.X, a5 = ah.Y, a6 = ah.Z, a7 = ah.W;
                            float b0 = bl.X, b1 = bl.Y, b2 = bl.Z, b3 = bl.W, b4 = bh.X, b5 = bh.Y, b6 = bh.Z, b7 = bh.W;
                            c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3; c04 += a0 * b4; c05 += a0 * b5; c06 += a0 * b6; c07 += a0 * b7;
                            c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3; c14 += a1 * b4; c15 += a1 * b5; c16 += a1 * b6; c17 += a1 * b7;
                            c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3; c24 += a2 * b4; c25 += a2 * b5; c26 += a2 * b6; c27 += a2 * b7;
                            c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3; c34 += a3 * b4; c35 += a3 * b5; c36 += a3 * b6; c37 += a3 * b7;
                            c40 += a4 * b0; c41 += a4 * b1; c42 += a4 * b2; c43 += a4 * b3; c44 += a4 * b4; c45 += a4 * b5; c46 += a4 * b6; c47 += a4 * b7;
                            c50 += a5 * b0; c51 += a5 * b1; c52 += a5 * b2; c53 += a5 * b3; c54 += a5 * b4; c55 += a5 * b5; c56 += a5 * b6; c57 += a5 * b7;
                            c60 += a6 * b0; c61 += a6 * b1; c62 += a6 * b2; c63 += a6 * b3; c64 += a6 * b4; c65 += a6 * b5; c66 += a6 * b6; c67 += a6 * b7;
                            c70 += a7 * b0; c71 += a7 * b1; c72 += a7 * b2; c73 += a7 * b3; c74 += a7 * b4; c75 += a7 * b5; c76 += a7 * b6; c77 += a7 * b7;
                        }
                        Group.Barrier();
                    }
                    if (active)
                    {
                        int rowA = m0 + ty * 4, colB = n0 + tx * 4;
                        StoreQuad(c, bias, s, cOff, rowA + 0, colB, vecC, c00, c01, c02, c03);
                        StoreQuad(c, bias, s, cOff, rowA + 0, colB + 64, vecC, c04, c05, c06, c07);
                        StoreQuad(c, bias, s, cOff, rowA + 1, colB, vecC, c10, c11, c12, c13);
                        StoreQuad(c, bias, s, cOff, rowA + 1, colB + 64, vecC, c14, c15, c16, c17);
                        StoreQuad(c, bias, s, cOff, rowA + 2, colB, vecC, c20, c21, c22, c23);
                        StoreQuad(c, bias, s, cOff, rowA + 2, colB + 64, vecC, c24, c25, c26, c27);
                        StoreQuad(c, bias, s, cOff, rowA + 3, colB, vecC, c30, c31, c32, c33);
                        StoreQuad(c, bias, s, cOff, rowA + 3, colB + 64, vecC, c34, c35, c36, c37);
                        StoreQuad(c, bias, s, cOff, rowA + 64, colB, vecC, c40, c41, c42, c43);
                        StoreQuad(c, bias, s, cOff, rowA + 64, colB + 64, vecC, c44, c45, c46, c47);
                        StoreQuad(c, bias, s, cOff, rowA + 65, colB, vecC, c50, c51, c52, c53);
                        StoreQuad(c, bias, s, cOff, rowA + 65, colB + 64, vecC, c54, c55, c56, c57);
                        StoreQuad(c, bias, s, cOff, rowA + 66, colB, vecC, c60, c61, c62, c63);
                        StoreQuad(c, bias, s, cOff, rowA + 66, colB + 64, vecC, c64, c65, c66, c67);
                        StoreQuad(c, bias, s, cOff, rowA + 67, colB, vecC, c70, c71, c72, c73);
                        StoreQuad(c, bias, s, cOff, rowA + 67, colB + 64, vecC, c74, c75, c76, c77);
                    }
                }
            }
        }
    }

    /// <summary>v5 (vs v4: double-buffered shared tiles, the next K tile's global loads issued before the FMAs of the current
    /// one and stored after them, one barrier per K tile instead of two). Thread t prefetches slot t into registers; with
    /// fewer than 256 threads (CPU emulator) the remaining slots are staged synchronously, so both paths run in tests.</summary>
    internal static void Reg128PrefetchKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As4 = SharedMemory.Allocate<F4>(2 * Quads4);   // two buffers of As[k·128 + m], as float4
        var Bs4 = SharedMemory.Allocate<F4>(2 * Quads4);   // two buffers of Bs[k·128 + n], as float4
        var As = As4.Cast<float>();
        var Bs = Bs4.Cast<float>();
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = CudaAsm.IsSupported ? 1 : (Micro4 + nt - 1) / nt;   // CUDA launches 256 threads: one pass, known to ptxas
        int kTiles = (s.K + BK4 - 1) / BK4;
        bool vecC = (s.Flags & FlagVecC) != 0;
        bool ownsSlot = CudaAsm.IsSupported || tid < Quads4;
        // one C tile per group (the launcher's grid is exact; larger grids run v4): grid-stride loops over the tiles held
        // their counters across the K loop, and ptxas 12.4 / 13.0 spilled them at the 128-register cap (20 + 24 bytes)
        int bt = Grid.IdxZ, m0 = Grid.IdxY * BM4, n0 = Grid.IdxX * BN4;
        long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
        bool ta = (s.Flags & FlagTransA) != 0, tb = (s.Flags & FlagTransB) != 0;
        for (int p = 0; p < passes; p++)
        {
            int mt = p * nt + tid, tx = mt & 15, ty = (mt & (Micro4 - 1)) >> 4;
            bool active = mt < Micro4;
            var acc = default(Acc8x8);
            StageFirst(a, b, s, aOff, bOff, m0, n0, As4, As, Bs4, Bs, tid, nt, kTiles, ta, tb);
            for (int kt = 0; kt < kTiles; kt++)
                PrefetchedKTile(ref acc, a, b, s, aOff, bOff, m0, n0, As4, As, Bs4, Bs, kt, kTiles, tid, nt, tx, ty, ownsSlot, ta, tb, stageRest: !CudaAsm.IsSupported);
            if (active) StoreTile(c, bias, s, cOff, m0 + ty * 4, n0 + tx * 4, vecC, acc);
        }
    }

    /// <summary>The first K tile of a pass of v5/v6 staged (all slots, strided by the group), then a barrier.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StageFirst(ArrayView<float> a, ArrayView<float> b, GemmShape s, long aOff, long bOff, int m0, int n0,
        ArrayView<F4> As4, ArrayView<float> As, ArrayView<F4> Bs4, ArrayView<float> Bs, int tid, int nt, int kTiles, bool ta, bool tb)
    {
        if (kTiles > 0) StageTiles(a, b, s, aOff, bOff, m0, n0, 0, As4, As, Bs4, Bs, 0, tid, nt, ta, tb);
        Group.Barrier();
    }

    /// <summary>
    /// K tile <paramref name="kt"/> of v5 (and of v6 outside its stage loop): the next K tile's slot loaded into registers
    /// (bounds-checked, 128-bit where aligned and inside), this tile's 8 k steps of the 8×8 micro-tile, the slot stored into
    /// the other buffer, one barrier. <paramref name="stageRest"/>: stage the slots no thread prefetched (groups smaller than
    /// 256, the CPU accelerator).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchedKTile(ref Acc8x8 acc, ArrayView<float> a, ArrayView<float> b, GemmShape s, long aOff, long bOff, int m0, int n0,
        ArrayView<F4> As4, ArrayView<float> As, ArrayView<F4> Bs4, ArrayView<float> Bs, int kt, int kTiles, int tid, int nt, int tx, int ty,
        bool ownsSlot, bool ta, bool tb, bool stageRest)
    {
        int cur = (kt & 1) * Quads4, nxt = Quads4 - cur;
        bool more = kt + 1 < kTiles;
        int k1 = (kt + 1) * BK4;
        F4 pa = default, pb = default;
        if (more && ownsSlot)
        {
            pa = LoadSlotA(a, s, aOff, m0, k1, tid, ta);
            pb = LoadSlotB(b, s, bOff, k1, n0, tid, tb);
        }
        // the 8 k steps unrolled (row kk of a k-major tile is BM4 / 4 = 32 quads further)
        Micro8x8.Tile8(ref acc, As4, Bs4, cur + ty, cur + tx, BM4 / 4, BN4 / 4, 16);
        if (more)
        {
            // nobody reads buffer nxt now: its last readers finished before the previous barrier
            if (ownsSlot)
            {
                PutSlot(As4, As, nxt, tid, pa, ta);
                PutSlot(Bs4, Bs, nxt, tid, pb, !tb);
            }
            if (stageRest) StageTiles(a, b, s, aOff, bOff, m0, n0, k1, As4, As, Bs4, Bs, nxt, tid + nt, nt, ta, tb);
        }
        Group.Barrier();
    }

    /// <summary>v6 (vs v5: one compiled kernel per operand layout, and a K-tile loop for the tiles whose next K tile lies inside
    /// both aligned operands, loading float4 at indices advanced by a constant, without bounds tests or scalar paths; the rest
    /// run v5's loop). The same micro-tiles, shared tiles and K order as v4 and v5: the same bits.</summary>
    internal static void Reg128LayoutKernel<TL>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
        where TL : struct, ITcLayout
    {
        var As4 = SharedMemory.Allocate<F4>(2 * Quads4);   // two buffers of As[k·128 + m], as float4
        var Bs4 = SharedMemory.Allocate<F4>(2 * Quads4);   // two buffers of Bs[k·128 + n], as float4
        var As = As4.Cast<float>();
        var Bs = Bs4.Cast<float>();
        var a4 = a.Cast<F4>();
        var b4 = b.Cast<F4>();
        bool ta = TL.TransA, tb = TL.TransB;   // one compiled kernel per layout: no layout test inside the K loop
        int tid = Group.IdxX, nt = Group.DimX;
        int passes = CudaAsm.IsSupported ? 1 : (Micro4 + nt - 1) / nt;   // CUDA launches 256 threads: one pass, known to ptxas
        int kTiles = (s.K + BK4 - 1) / BK4;
        bool vecC = (s.Flags & FlagVecC) != 0, vecAB = (s.Flags & FlagVecA) != 0 && (s.Flags & FlagVecB) != 0;
        bool ownsSlot = CudaAsm.IsSupported || tid < Quads4;
        // one C tile per group (the launcher's grid is exact; larger grids run v4): grid-stride loops over the tiles held
        // their counters across the K loop, and ptxas 12.4 / 13.0 spilled them at the 128-register cap (20 + 24 bytes)
        int bt = Grid.IdxZ, m0 = Grid.IdxY * BM4, n0 = Grid.IdxX * BN4;
        long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
        // K tiles kt < kFast prefetch a next tile that lies inside both operands, both 16-byte aligned: that loop loads
        // float4 (index fa / fb, advanced by a constant per K tile) without bounds tests or a scalar path
        int kFast = vecAB && m0 + BM4 <= s.M && n0 + BN4 <= s.N ? Math.Min(s.K / BK4 - 1, kTiles - 1) : 0;
        for (int p = 0; p < passes; p++)
        {
            int mt = p * nt + tid, tx = mt & 15, ty = (mt & (Micro4 - 1)) >> 4;
            bool active = mt < Micro4;
            var acc = default(Acc8x8);
            StageFirst(a, b, s, aOff, bOff, m0, n0, As4, As, Bs4, Bs, tid, nt, kTiles, ta, tb);
            int kt = 0;
            // this thread's slot of K tile 0 in float4 (exact: both operands are aligned wherever kFast > 0)
            long pfa = (aOff + (ta ? (long)(tid >> 5) * s.Lda + m0 + ((tid & 31) << 2) : (long)(m0 + (tid >> 1)) * s.Lda + ((tid & 1) << 2))) >> 2;
            long pfb = (bOff + (tb ? (long)(n0 + (tid >> 1)) * s.Ldb + ((tid & 1) << 2) : (long)(tid >> 5) * s.Ldb + n0 + ((tid & 31) << 2))) >> 2;
            for (; kt < kFast; kt++)
            {
                int cur = (kt & 1) * Quads4, nxt = Quads4 - cur;
                pfa += ta ? 2 * s.Lda : 2; pfb += tb ? 2 : 2 * s.Ldb;   // one K tile (8 rows of k) further, in float4 (int: ld < 2^30)
                F4 pa = default, pb = default;
                if (ownsSlot) { pa = a4[pfa]; pb = b4[pfb]; }
                // the 8 k steps unrolled (row kk of a k-major tile is BM4 / 4 = 32 quads further)
                Micro8x8.Tile8(ref acc, As4, Bs4, cur + ty, cur + tx, BM4 / 4, BN4 / 4, 16);
                // nobody reads buffer nxt now: its last readers finished before the previous barrier
                if (ownsSlot)
                {
                    PutSlot(As4, As, nxt, tid, pa, ta);
                    PutSlot(Bs4, Bs, nxt, tid, pb, !tb);
                }
                if (!CudaAsm.IsSupported) StageTiles(a, b, s, aOff, bOff, m0, n0, (kt + 1) * BK4, As4, As, Bs4, Bs, nxt, tid + nt, nt, ta, tb);
                Group.Barrier();
            }
            for (; kt < kTiles; kt++)
                PrefetchedKTile(ref acc, a, b, s, aOff, bOff, m0, n0, As4, As, Bs4, Bs, kt, kTiles, tid, nt, tx, ty, ownsSlot, ta, tb, stageRest: !CudaAsm.IsSupported);
            if (active) StoreTile(c, bias, s, cOff, m0 + ty * 4, n0 + tx * 4, vecC, acc);
        }
    }

    /// <summary>The epilogue of an 8×8 micro-tile: rows rowA..+3 and rowA + 64..+3, columns colB..+3 and colB + 64..+3.</summary>
    private static void StoreTile(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, int rowA, int colB, bool vecC, in Acc8x8 a)
    {
        StoreQuad(c, bias, s, cOff, rowA + 0, colB, vecC, a.c00, a.c01, a.c02, a.c03);
        StoreQuad(c, bias, s, cOff, rowA + 0, colB + 64, vecC, a.c04, a.c05, a.c06, a.c07);
        StoreQuad(c, bias, s, cOff, rowA + 1, colB, vecC, a.c10, a.c11, a.c12, a.c13);
        StoreQuad(c, bias, s, cOff, rowA + 1, colB + 64, vecC, a.c14, a.c15, a.c16, a.c17);
        StoreQuad(c, bias, s, cOff, rowA + 2, colB, vecC, a.c20, a.c21, a.c22, a.c23);
        StoreQuad(c, bias, s, cOff, rowA + 2, colB + 64, vecC, a.c24, a.c25, a.c26, a.c27);
        StoreQuad(c, bias, s, cOff, rowA + 3, colB, vecC, a.c30, a.c31, a.c32, a.c33);
        StoreQuad(c, bias, s, cOff, rowA + 3, colB + 64, vecC, a.c34, a.c35, a.c36, a.c37);
        StoreQuad(c, bias, s, cOff, rowA + 64, colB, vecC, a.c40, a.c41, a.c42, a.c43);
        StoreQuad(c, bias, s, cOff, rowA + 64, colB + 64, vecC, a.c44, a.c45, a.c46, a.c47);
        StoreQuad(c, bias, s, cOff, rowA + 65, colB, vecC, a.c50, a.c51, a.c52, a.c53);
        StoreQuad(c, bias, s, cOff, rowA + 65, colB + 64, vecC, a.c54, a.c55, a.c56, a.c57);
        StoreQuad(c, bias, s, cOff, rowA + 66, colB, vecC, a.c60, a.c61, a.c62, a.c63);
        StoreQuad(c, bias, s, cOff, rowA + 66, colB + 64, vecC, a.c64, a.c65, a.c66, a.c67);
        StoreQuad(c, bias, s, cOff, rowA + 67, colB, vecC, a.c70, a.c71, a.c72, a.c73);
        StoreQuad(c, bias, s, cOff, rowA + 67, colB + 64, vecC, a.c74, a.c75, a.c76, a.c77);
    }

    // ---------------------------------------------------------------- launcher

    private sealed class Loaded
    {
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[] Kernels = new Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[6];
        /// <summary>v6 by layout: index TransA·2 + TransB.</summary>
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[] V6 = new Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[4];
    }

    /// <summary>v6's kernel for a layout (one compiled kernel per TransA, TransB).</summary>
    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> V6For(bool ta, bool tb) => (ta, tb) switch
    {
        (false, false) => Reg128LayoutKernel<TcLayoutNN>,
        (false, true) => Reg128LayoutKernel<TcLayoutNT>,
        (true, false) => Reg128LayoutKernel<TcLayoutTN>,
        _ => Reg128LayoutKernel<TcLayoutTT>,
    };

    /// <summary>v6's kernel methods, one per layout (NN, NT, TN, TT), for offline PTX compilation.</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> Reg128LayoutMethods { get; } =
        [V6For(false, false).Method, V6For(false, true).Method, V6For(true, false).Method, V6For(true, true).Method];

    // Holds the typed delegates (ILGPU's own kernel cache is weak) for as long as the accelerator lives.
    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> Kernel(Accelerator acc, GemmVersion v,
        bool ta = false, bool tb = false)
    {
        var loaded = Cache.GetValue(acc, _ => new Loaded());
        lock (loaded)
        {
            if (v == GemmVersion.Reg128x8Layout)
                return loaded.V6[(ta ? 2 : 0) + (tb ? 1 : 0)] ??=
                    acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(V6For(ta, tb), Bounds(acc, v));
            return loaded.Kernels[(int)v] ??= v switch
            {
                GemmVersion.Naive => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(NaiveKernel),
                GemmVersion.Tiled16 => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(TiledKernel),
                GemmVersion.Reg64x4 => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Reg64Kernel),
                GemmVersion.Reg128x8Vec => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Reg128Kernel, Bounds(acc, v)),
                GemmVersion.Reg128x8Prefetch => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Reg128PrefetchKernel, Bounds(acc, v)),
                _ => throw new ArgumentOutOfRangeException(nameof(v), v, "gemm (ilgpu): unknown version"),
            };
        }
    }

    /// <summary>
    /// The launch bounds (PTX .maxntid / .minnctapersm, CUDA's __launch_bounds__) the CUDA loader gives a version: the two
    /// 128×128 kernels run 256 threads and ask for 2 groups per SM, so ptxas keeps them at ≤ 128 registers per thread.
    /// Without them ptxas 11.8 gave v5 129 registers (`fashionvil bench ptx`), one over the limit for two groups of 256,
    /// so an SM held one group (8 warps); with them it uses 118 and no spills (measured offline; the GPU's own JIT is owed).
    /// Other accelerators get none (the CPU accelerator refuses a bound above its group size).
    /// </summary>
    public static KernelSpecialization CudaLaunchBounds(GemmVersion v)
        => v is GemmVersion.Reg128x8Vec or GemmVersion.Reg128x8Prefetch or GemmVersion.Reg128x8Layout ? new KernelSpecialization(GpuGroupSize, 2) : default;

    private static KernelSpecialization Bounds(Accelerator acc, GemmVersion v)
        => acc.AcceleratorType == AcceleratorType.Cuda ? CudaLaunchBounds(v) : default;

    /// <summary>The kernel method of a version (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo KernelMethod(GemmVersion v) => v switch
    {
        GemmVersion.Naive => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)NaiveKernel).Method,
        GemmVersion.Tiled16 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)TiledKernel).Method,
        GemmVersion.Reg64x4 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Reg64Kernel).Method,
        GemmVersion.Reg128x8Vec => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Reg128Kernel).Method,
        GemmVersion.Reg128x8Prefetch => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Reg128PrefetchKernel).Method,
        GemmVersion.Reg128x8Layout => V6For(false, true).Method,   // v6 NT (a linear's forward); every layout: Reg128LayoutMethods
        _ => throw new ArgumentOutOfRangeException(nameof(v), v, "gemm (ilgpu): unknown version"),
    };

    /// <summary>Launches per version since the process started (index: the version that ran, after <see cref="Runnable"/>), for
    /// tests and diagnostics.</summary>
    internal static readonly long[] LaunchCounts = new long[7];

    /// <summary>Every version, for the lab and the tests.</summary>
    public static IReadOnlyList<GemmVersion> Versions { get; } = [GemmVersion.Naive, GemmVersion.Tiled16, GemmVersion.Reg64x4, GemmVersion.Reg128x8Vec, GemmVersion.Reg128x8Prefetch, GemmVersion.Reg128x8Layout];

    /// <summary>Loads (once per accelerator) and enqueues the best version on <paramref name="stream"/> (null: the default stream).</summary>
    public static void Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args) => Launch(acc, stream, args, Best);

    /// <summary>
    /// Validates <paramref name="args"/> (ArgumentException naming the shapes: no kernel ever reads out of range) and
    /// enqueues version <paramref name="version"/>. Nothing to do for an empty C; K = 0 gives C ← beta·C + bias.
    /// </summary>
    public static void Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args, GemmVersion version)
    {
        ArgumentNullException.ThrowIfNull(acc);
        Validate(args);
        if (args.M == 0 || args.N == 0 || args.Batch == 0) return;
        bool hasBias = args.Bias.Length > 0;
        var s = new GemmShape
        {
            M = args.M, N = args.N, K = args.K, Lda = args.Lda, Ldb = args.Ldb, Ldc = args.Ldc, Batch = args.Batch,
            StrideA = args.StrideA, StrideB = args.StrideB, StrideC = args.StrideC, Alpha = args.Alpha, Beta = args.Beta,
            Flags = (args.TransA ? FlagTransA : 0) | (args.TransB ? FlagTransB : 0) | (hasBias ? FlagBias : 0) | (args.Gelu ? FlagGelu : 0)
                | (Aligned4(args.A, args.Lda, args.StrideA) ? FlagVecA : 0)
                | (Aligned4(args.B, args.Ldb, args.StrideB) ? FlagVecB : 0)
                | (Aligned4(args.C, args.Ldc, args.StrideC) ? FlagVecC : 0),
        };
        int nt = Math.Min(GpuGroupSize, acc.MaxNumThreadsPerGroup);
        version = Runnable(version, args.M, args.Batch);
        KernelConfig cfg;
        if (version == GemmVersion.Naive)
        {
            long total = (long)args.Batch * args.M * args.N;
            cfg = new KernelConfig((int)Math.Min((total + nt - 1) / nt, 1 << 20), nt);
        }
        else
        {
            int tile = version switch { GemmVersion.Tiled16 => T2, GemmVersion.Reg64x4 => BM3, _ => BM4 };
            int tilesM = (args.M + tile - 1) / tile, tilesN = (args.N + tile - 1) / tile;
            cfg = new KernelConfig(new Index3D(Math.Min(tilesN, int.MaxValue), Math.Min(tilesM, 65535), Math.Min(args.Batch, 65535)), new Index3D(nt, 1, 1));
        }
        var view = args.Bias.Length > 0 ? args.Bias : args.C;   // a valid dummy when there is no bias (never read)
        Interlocked.Increment(ref LaunchCounts[(int)version]);
        Kernel(acc, version, args.TransA, args.TransB)(stream ?? acc.DefaultStream, cfg, args.A, args.B, args.C, view, s);
    }

    /// <summary>The version a launch of <paramref name="version"/> runs: itself, except that v5 and v6 (one C tile per group,
    /// no grid-stride loops) hand grids past CUDA's 65,535 row tiles or batches to v4, which gives the same bits.</summary>
    internal static GemmVersion Runnable(GemmVersion version, int m, int batch)
        => version is GemmVersion.Reg128x8Prefetch or GemmVersion.Reg128x8Layout && ((m + BM4 - 1) / BM4 > 65535 || batch > 65535) ? GemmVersion.Reg128x8Vec : version;

    /// <summary>128-bit accesses are safe when the view starts 16-byte aligned (device buffers are) and rows and batches keep it.</summary>
    internal static bool Aligned4(ArrayView<float> v, int ld, long batchStride) => v.LoadEffectiveAddressAsPtr().ToInt64() % 16 == 0 && ld % 4 == 0 && batchStride % 4 == 0;

    internal static void Validate(in GemmArgs g)
    {
        string Desc(in GemmArgs x) => $"batch {x.Batch}, M {x.M}, N {x.N}, K {x.K}, transA {x.TransA}, transB {x.TransB}, lda {x.Lda}, ldb {x.Ldb}, ldc {x.Ldc}, "
            + $"strides {x.StrideA}/{x.StrideB}/{x.StrideC}, views {x.A.Length}/{x.B.Length}/{x.C.Length}/{x.Bias.Length}";
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 0 || g.StrideA < 0 || g.StrideB < 0 || g.StrideC < 0)
            throw new ArgumentException($"matmul (ilgpu): negative size or stride: {Desc(g)}");
        int aCols = g.TransA ? g.M : g.K, aRows = g.TransA ? g.K : g.M;
        int bCols = g.TransB ? g.K : g.N, bRows = g.TransB ? g.N : g.K;
        if ((aRows > 1 && g.Lda < aCols) || (bRows > 1 && g.Ldb < bCols) || (g.M > 1 && g.Ldc < g.N))
            throw new ArgumentException($"matmul (ilgpu): a leading dimension is shorter than its row: {Desc(g)}");
        if (g.M == 0 || g.N == 0 || g.Batch == 0) return;
        if (g.Batch > 1 && g.StrideC < (long)(g.M - 1) * g.Ldc + g.N)
            throw new ArgumentException($"matmul (ilgpu): batches of C overlap (StrideC {g.StrideC}): {Desc(g)}");
        static long Need(int batch, long stride, int rows, int cols, int ld) => rows == 0 || cols == 0 ? 0 : (batch - 1) * stride + (long)(rows - 1) * ld + cols;
        if (Need(g.Batch, g.StrideA, aRows, aCols, g.Lda) > g.A.Length || Need(g.Batch, g.StrideB, bRows, bCols, g.Ldb) > g.B.Length
            || Need(g.Batch, g.StrideC, g.M, g.N, g.Ldc) > g.C.Length)
            throw new ArgumentException($"matmul (ilgpu): a view is too short for its shape and strides: {Desc(g)}");
        if (g.Bias.Length > 0 && g.Bias.Length < g.N)
            throw new ArgumentException($"matmul (ilgpu): bias has {g.Bias.Length} elements, N is {g.N}: {Desc(g)}");
    }
}
