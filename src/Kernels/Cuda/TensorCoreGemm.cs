using FashionViL.Kernels.Cpu;
using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// The tensor-core SGEMM behind <see cref="MatMulPrecision"/> (issue 7): C[b] ← alpha·op(round(A[b]))·op(round(B[b])) +
/// beta·C[b] (+ bias) (then GELU), where round is TF32 (<see cref="PrecisionRounding.Tf32Bits"/>, = PTX cvt.rna.tf32.f32) or
/// bfloat16 (<see cref="PrecisionRounding.Bf16Bits"/>, round to nearest even) and accumulation is float32. Same
/// <see cref="GemmArgs"/> contract and validation as <see cref="GemmKernels"/>.
/// <para>
/// Layout: a group computes a 64×32 tile of C; K advances in steps of 16. Each step, the group stages A (64×16) and B
/// (16×32) in shared memory, rounding every operand once as it is stored (zero padding outside the matrix). On CUDA the
/// group is 4 warps; warp w owns rows 16w..16w+15 and all 32 columns (four m16n8 tiles, 16 float accumulators per lane in
/// registers the inline PTX names itself, see <see cref="DeclareAccumulators"/>) and issues
/// <c>mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32</c> twice per step (TF32) or
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c> once (bf16) per n8 tile, through <see cref="CudaAsm"/>.Emit
/// with the operands by value; the accumulators go to the shared C tile once per tile and the epilogue stores it coalesced.
/// Elsewhere (<see cref="CudaAsm.IsSupported"/>
/// false: ILGPU's CPU accelerator, any group size) the portable path emulates the four warps' mma.sync instructions
/// (<see cref="EmuStage"/>): each C register is summed from the A/B elements read back out of the fragments that the CUDA
/// path would feed the tensor cores, through the PTX ISA fragment layouts written independently, so CI checks the lane ↔
/// element mapping of the mma path as well as the rounded arithmetic (a deliberate A, B or C mapping error fails 10–20 of
/// the emulator tests).
/// The shared strides (A rows 20 words, B rows 40 words) make the fragment reads of a warp bank-conflict-free.
/// </para>
/// <para>
/// A second tile, <see cref="TensorCoreTile.Tile128x64"/> (TensorCoreGemm.Tile128.cs: 128×64 C per 8 warps, 32×32 per
/// warp, double-buffered stages with register prefetch), gives the same bits for the same inputs;
/// <see cref="Launch(Accelerator, AcceleratorStream?, in GemmArgs, Precision, TensorCoreTile)"/> picks it explicitly, the
/// four-argument Launch (what CudaBackend.MatMul calls) stays on 64×32.
/// </para>
/// <para>
/// Status: the portable path is what CI tests (emulator, against the CPU backend under the same precision); the kernel
/// compiles to PTX for sm_90 with both mma forms and assembles with ptxas 11.8 (12 HMMA, no local memory; `fashionvil
/// bench ptx`). The mma path has NOT run on a GPU yet: the bf16 m16n8k16 form matched a CPU reference on an H100 in
/// ilgpu-notes §2.10, the TF32 m16n8k8 form has never been tried on hardware. Correctness and speed on a GPU are owed.
/// </para>
/// </summary>
public static partial class TensorCoreGemm
{
    /// <summary>Rows of C per group (4 warps × 16 rows on CUDA).</summary>
    public const int BM = 64;
    /// <summary>Columns of C per group (four n8 tiles).</summary>
    public const int BN = 32;
    /// <summary>K per shared stage (two TF32 k8 steps, one bf16 k16 step).</summary>
    public const int BK = 16;

    /// <summary>Threads per group on CUDA: 4 warps.</summary>
    public const int GpuGroupSize = 128;

    internal const int AStride = BK + 4;   // As[m·20 + k]: lanes (g, t) read words 20g + t → 32 distinct banks
    internal const int BStride = BN + 8;   // Bs[k·40 + n]: lanes (g, t) read words 40t + g → 32 distinct banks

    internal const int FlagTransA = 1, FlagTransB = 2, FlagBias = 4, FlagGelu = 8, FlagBf16 = 128, FlagRoundedA = 256, FlagRoundedB = 512,
        FlagVecA = 1024, FlagVecB = 2048;   // 128×128 tile: the operand may be read as 16-byte float4 (GemmKernels.Aligned4)

    private static float LoadA(ArrayView<float> a, GemmShape s, long off, int m, int k)
        => (s.Flags & FlagTransA) != 0 ? a[off + (long)k * s.Lda + m] : a[off + (long)m * s.Lda + k];

    private static float LoadB(ArrayView<float> b, GemmShape s, long off, int k, int n)
        => (s.Flags & FlagTransB) != 0 ? b[off + (long)n * s.Ldb + k] : b[off + (long)k * s.Ldb + n];

    /// <summary>The operand as the tensor cores see it, as float32 bits (bf16: the upper half, low half zero).</summary>
    internal static uint Rounded(float x, bool bf16)
    {
        uint u = Interop.FloatAsInt(x);
        return bf16 ? (uint)PrecisionRounding.Bf16Bits(u) << 16 : PrecisionRounding.Tf32Bits(u);
    }

    /// <summary>Two bf16 operands (already rounded, in the upper halves) packed as one b32 register: lo = first (lower k).</summary>
    private static uint Pack(uint lo, uint hi) => (lo >> 16) | (hi & 0xFFFF0000u);

    /// <summary>The epilogue from values already loaded: α·acc (+ β·old) (+ b), then GELU when asked.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float EpilogueOf(float acc, float old, float b, GemmShape s)
    {
        float r = s.Alpha * acc;
        if (s.Beta != 0f) r += s.Beta * old;
        if ((s.Flags & FlagBias) != 0) r += b;
        if ((s.Flags & FlagGelu) != 0) r = ScalarMath.GeluF(r);
        return r;
    }

    /// <summary>
    /// Element e &lt; <paramref name="end"/> of a row-major shared C block of <paramref name="width"/> columns (row stride
    /// <paramref name="stride"/>), C row <paramref name="row0"/> + e / width, column <paramref name="n0"/> + e % width: its
    /// accumulator and the operands of its epilogue (bias, and C when β ≠ 0), loaded; <see cref="StoreLoaded"/> stores it.
    /// </summary>
    private struct Pending
    {
        public float V, Old, B;
        public long Ci;
        public bool Live;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Pending LoadPending(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, ArrayView<float> shared,
        int e, int end, int width, int stride, int row0, int n0)
    {
        var p = default(Pending);
        if (e >= end) return p;
        int r = e / width, col = e - r * width, row = row0 + r, n = n0 + col;
        if (row >= s.M || n >= s.N) return p;
        p.Live = true;
        p.V = shared[r * stride + col];
        p.Ci = cOff + (long)row * s.Ldc + n;
        if (s.Beta != 0f) p.Old = c[p.Ci];
        if ((s.Flags & FlagBias) != 0) p.B = bias[n];
        return p;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLoaded(ArrayView<float> c, GemmShape s, Pending p)
    {
        if (p.Live) c[p.Ci] = EpilogueOf(p.V, p.Old, p.B, s);
    }

    /// <summary>
    /// Writes a shared C block (elements e &lt; <paramref name="end"/>, see <see cref="LoadPending"/>) to C through the
    /// epilogue, each thread four elements (e, e + nt, e + 2nt, e + 3nt) at a time with all their loads issued before the
    /// first store: a loop that loads and stores one element at a time waits a load latency (the bias, C when β ≠ 0, the
    /// shared value) per element. The values are those of that loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void StoreBlock(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, ArrayView<float> shared,
        int end, int width, int stride, int row0, int n0, int tid, int nt)
    {
        for (int e = tid; e < end; e += 4 * nt)
        {
            var p0 = LoadPending(c, bias, s, cOff, shared, e, end, width, stride, row0, n0);
            var p1 = LoadPending(c, bias, s, cOff, shared, e + nt, end, width, stride, row0, n0);
            var p2 = LoadPending(c, bias, s, cOff, shared, e + 2 * nt, end, width, stride, row0, n0);
            var p3 = LoadPending(c, bias, s, cOff, shared, e + 3 * nt, end, width, stride, row0, n0);
            StoreLoaded(c, s, p0); StoreLoaded(c, s, p1); StoreLoaded(c, s, p2); StoreLoaded(c, s, p3);
        }
    }

    /// <summary><see cref="StoreBlock"/> two elements at a time: for the 128×128 tile, whose second half's warps still hold
    /// their 64 accumulators while the first half is stored (four pending elements cost it a 4-byte spill at 128 registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void StoreBlock2(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, ArrayView<float> shared,
        int end, int width, int stride, int row0, int n0, int tid, int nt)
    {
        for (int e = tid; e < end; e += 2 * nt)
        {
            var p0 = LoadPending(c, bias, s, cOff, shared, e, end, width, stride, row0, n0);
            var p1 = LoadPending(c, bias, s, cOff, shared, e + nt, end, width, stride, row0, n0);
            StoreLoaded(c, s, p0); StoreLoaded(c, s, p1);
        }
    }

    // ---------------------------------------------------------------- the warp's accumulators and mma (CUDA only)
    //
    // The 16 accumulators of a lane live in PTX registers the inline assembly names itself (fvlc0..fvlc15, declared once by
    // DeclareAccumulators), not in C# locals: ILGPU passes CudaAsm.EmitRef operands (Ref<T>/Input<T>) through .local
    // memory around every asm statement, and ptxas 11.8 did not promote them back (320-byte stack frame, 144 STL and 84 LDL
    // in the sm_90 SASS of the first version: about 28 local accesses per mma). Operands now go in by value (CudaAsm.Emit)
    // and results come out once per tile, straight into shared memory (SpillAccumulators), so the kernel has no local memory
    // at all; `fashionvil bench ptx` and KernelAuditTests check that on the assembled SASS.
    // Registers of n8 tile j: fvlc(4j)..fvlc(4j+3) = c0..c3 of the C fragment.

    /// <summary>Declares the accumulator registers; once per kernel, on CUDA only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DeclareAccumulators() => CudaAsm.Emit(".reg .f32 fvlc<16>;");

    /// <summary>Sets all 16 accumulators to +0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ZeroAccumulators() => CudaAsm.Emit(
        "mov.b32 fvlc0, 0; mov.b32 fvlc1, 0; mov.b32 fvlc2, 0; mov.b32 fvlc3, 0; mov.b32 fvlc4, 0; mov.b32 fvlc5, 0; " +
        "mov.b32 fvlc6, 0; mov.b32 fvlc7, 0; mov.b32 fvlc8, 0; mov.b32 fvlc9, 0; mov.b32 fvlc10, 0; mov.b32 fvlc11, 0; " +
        "mov.b32 fvlc12, 0; mov.b32 fvlc13, 0; mov.b32 fvlc14, 0; mov.b32 fvlc15, 0;");

    private const string Tf32 = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 ";
    private const string Bf16 = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ";
    private const string Ops = ", {%0,%1,%2,%3}, {%4,%5}, ";

    // ---------------------------------------------------------------- fragments (what a lane feeds the mma)
    //
    // Fragment layouts (PTX ISA, g = lane/4, t = lane%4): TF32 m16n8k8 A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4),
    // B b0 (k t, n g) b1 (k t+4, n g); bf16 m16n8k16 A a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..),
    // B b0 (k 2t..2t+1, n g) b1 (k 2t+8..2t+9, n g) (lower k in the low half); C c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t)
    // c3 (g+8, 2t+1). The functions below are the one place the kernels map a lane to shared-tile elements; the CUDA path
    // feeds their values to mma.sync; the portable path (EmuStage) reads them back through the layouts above, written
    // independently.

    // Each fragment word is a lane's base word plus a constant per register and k step: ALane/BLane (runtime, once per stage)
    // + AOff/BOff (compile-time at every CUDA call site). The CUDA stages index the shared tiles with the 64-bit base plus
    // that constant, so ptxas folds it into the LDS immediate (with 32-bit indices ILGPU widened after the add and every
    // fragment load cost 2–3 address instructions); AFrag/BFrag, which the portable path reads the ISA layout back through,
    // are the same sums, so CI checks the decomposition.

    /// <summary>Word of an A tile (row stride <see cref="AStride"/>) where lane (g, t)'s fragments for rows r0.. start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long ALane(int r0, int g, int t, bool bf16) => (long)(r0 + g) * AStride + (bf16 ? 2 * t : t);

    /// <summary>Offset from <see cref="ALane"/> of A register <paramref name="i"/> (0..3) of the m16 tile <paramref name="mOff"/>
    /// rows further, at k offset <paramref name="ks"/> (TF32: 0 or 8; bf16: one k16 step per stage, ks unused).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int AOff(int mOff, int ks, int i, bool bf16)
        => (mOff + ((i & 1) != 0 ? 8 : 0)) * AStride + (bf16 ? ((i & 2) != 0 ? 8 : 0) : ks + ((i & 2) != 0 ? 4 : 0));

    /// <summary>The A register at word lane + off (bf16: that word and the next, packed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint AFragAt(ArrayView<uint> As, long lane, int off, bool bf16)
        => bf16 ? Pack(As[lane + off], As[lane + off + 1]) : As[lane + off];

    /// <summary>A register <paramref name="i"/> (0..3) of lane (g, t) for rows r0.. at k offset <paramref name="ks"/> (TF32: 0 or 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint AFrag(ArrayView<uint> As, int r0, int g, int t, int ks, int i, bool bf16)
        => AFragAt(As, ALane(r0, g, t, bf16), AOff(0, ks, i, bf16), bf16);

    /// <summary>Word of a B tile (row stride <paramref name="stride"/>) where lane (g, t)'s fragments for columns n0.. start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long BLane(int stride, int n0, int g, int t, bool bf16) => (long)(bf16 ? 2 * t : t) * stride + n0 + g;

    /// <summary>Offset from <see cref="BLane"/> of B register <paramref name="i"/> (0..1) of the n8 tile <paramref name="nOff"/>
    /// columns further, at k offset <paramref name="ks"/> (TF32: 0 or 8; bf16 unused).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int BOff(int stride, int nOff, int ks, int i, bool bf16)
        => nOff + (bf16 ? (i != 0 ? 8 : 0) : ks + (i != 0 ? 4 : 0)) * stride;

    /// <summary>The B register at word lane + off (bf16: that word and the one a row below, packed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint BFragAt(ArrayView<uint> Bs, int stride, long lane, int off, bool bf16)
        => bf16 ? Pack(Bs[lane + off], Bs[lane + off + stride]) : Bs[lane + off];

    /// <summary>B register <paramref name="i"/> (0..1) of lane (g, t) for the n8 tile at column <paramref name="n0"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint BFrag(ArrayView<uint> Bs, int n0, int g, int t, int ks, int i, bool bf16) => BFrag(Bs, BStride, n0, g, t, ks, i, bf16);

    /// <summary><see cref="BFrag(ArrayView{uint}, int, int, int, int, int, bool)"/> for a B tile with row stride <paramref name="stride"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint BFrag(ArrayView<uint> Bs, int stride, int n0, int g, int t, int ks, int i, bool bf16)
        => BFragAt(Bs, stride, BLane(stride, n0, g, t, bf16), BOff(stride, 0, ks, i, bf16), bf16);

    /// <summary>Where accumulator register <paramref name="i"/> (0..3) of n8 tile <paramref name="j"/> of lane (g, t) goes in the
    /// shared C tile Cs[m·BN + n].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int CIndex(int r0, int g, int t, int j, int i) => (r0 + g + (i >= 2 ? 8 : 0)) * BN + 8 * j + 2 * t + (i & 1);

    /// <summary>
    /// One warp's 16-deep shared stage on CUDA: rows r0..r0+15 of the group tile times all four n8 tiles (columns 0..31),
    /// accumulated into fvlc0..15 (tile j in fvlc(4j)..fvlc(4j+3)). The A fragment is read once and used for the four tiles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void WarpStage(ArrayView<uint> As, ArrayView<uint> Bs, int r0, int g, int t, bool bf16)
    {
        // two TF32 k8 steps or one bf16 k16 step, unrolled: every fragment word is a lane base plus a constant
        if (bf16)
            Bf16Step(As, Bs, ALane(r0, g, t, true), BLane(BStride, 0, g, t, true));
        else
        {
            long al = ALane(r0, g, t, false), bl = BLane(BStride, 0, g, t, false);
            Tf32Step(As, Bs, al, bl, 0);
            Tf32Step(As, Bs, al, bl, 8);
        }
    }

    /// <summary>One TF32 k8 step of <see cref="WarpStage"/> at k offset <paramref name="ks"/> (a constant at each call).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tf32Step(ArrayView<uint> As, ArrayView<uint> Bs, long al, long bl, int ks)
    {
        uint a0 = AFragAt(As, al, AOff(0, ks, 0, false), false), a1 = AFragAt(As, al, AOff(0, ks, 1, false), false);
        uint a2 = AFragAt(As, al, AOff(0, ks, 2, false), false), a3 = AFragAt(As, al, AOff(0, ks, 3, false), false);
        CudaAsm.Emit(Tf32 + "{fvlc0,fvlc1,fvlc2,fvlc3}" + Ops + "{fvlc0,fvlc1,fvlc2,fvlc3};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 0, ks, 0, false), false), BFragAt(Bs, BStride, bl, BOff(BStride, 0, ks, 1, false), false));
        CudaAsm.Emit(Tf32 + "{fvlc4,fvlc5,fvlc6,fvlc7}" + Ops + "{fvlc4,fvlc5,fvlc6,fvlc7};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 8, ks, 0, false), false), BFragAt(Bs, BStride, bl, BOff(BStride, 8, ks, 1, false), false));
        CudaAsm.Emit(Tf32 + "{fvlc8,fvlc9,fvlc10,fvlc11}" + Ops + "{fvlc8,fvlc9,fvlc10,fvlc11};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 16, ks, 0, false), false), BFragAt(Bs, BStride, bl, BOff(BStride, 16, ks, 1, false), false));
        CudaAsm.Emit(Tf32 + "{fvlc12,fvlc13,fvlc14,fvlc15}" + Ops + "{fvlc12,fvlc13,fvlc14,fvlc15};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 24, ks, 0, false), false), BFragAt(Bs, BStride, bl, BOff(BStride, 24, ks, 1, false), false));
    }

    /// <summary>The bf16 k16 step of <see cref="WarpStage"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Bf16Step(ArrayView<uint> As, ArrayView<uint> Bs, long al, long bl)
    {
        uint a0 = AFragAt(As, al, AOff(0, 0, 0, true), true), a1 = AFragAt(As, al, AOff(0, 0, 1, true), true);
        uint a2 = AFragAt(As, al, AOff(0, 0, 2, true), true), a3 = AFragAt(As, al, AOff(0, 0, 3, true), true);
        CudaAsm.Emit(Bf16 + "{fvlc0,fvlc1,fvlc2,fvlc3}" + Ops + "{fvlc0,fvlc1,fvlc2,fvlc3};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 0, 0, 0, true), true), BFragAt(Bs, BStride, bl, BOff(BStride, 0, 0, 1, true), true));
        CudaAsm.Emit(Bf16 + "{fvlc4,fvlc5,fvlc6,fvlc7}" + Ops + "{fvlc4,fvlc5,fvlc6,fvlc7};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 8, 0, 0, true), true), BFragAt(Bs, BStride, bl, BOff(BStride, 8, 0, 1, true), true));
        CudaAsm.Emit(Bf16 + "{fvlc8,fvlc9,fvlc10,fvlc11}" + Ops + "{fvlc8,fvlc9,fvlc10,fvlc11};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 16, 0, 0, true), true), BFragAt(Bs, BStride, bl, BOff(BStride, 16, 0, 1, true), true));
        CudaAsm.Emit(Bf16 + "{fvlc12,fvlc13,fvlc14,fvlc15}" + Ops + "{fvlc12,fvlc13,fvlc14,fvlc15};", a0, a1, a2, a3, BFragAt(Bs, BStride, bl, BOff(BStride, 24, 0, 0, true), true), BFragAt(Bs, BStride, bl, BOff(BStride, 24, 0, 1, true), true));
    }

    /// <summary>Writes the lane's 16 accumulators into the shared C tile at <see cref="CIndex"/> (CUDA only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SpillAccumulators(ArrayView<float> Cs, int r0, int g, int t)
    {
        CudaAsm.Emit("mov.b32 %0, fvlc0;", out Cs[CIndex(r0, g, t, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvlc1;", out Cs[CIndex(r0, g, t, 0, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvlc2;", out Cs[CIndex(r0, g, t, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvlc3;", out Cs[CIndex(r0, g, t, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvlc4;", out Cs[CIndex(r0, g, t, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvlc5;", out Cs[CIndex(r0, g, t, 1, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvlc6;", out Cs[CIndex(r0, g, t, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvlc7;", out Cs[CIndex(r0, g, t, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvlc8;", out Cs[CIndex(r0, g, t, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvlc9;", out Cs[CIndex(r0, g, t, 2, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvlc10;", out Cs[CIndex(r0, g, t, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvlc11;", out Cs[CIndex(r0, g, t, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvlc12;", out Cs[CIndex(r0, g, t, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvlc13;", out Cs[CIndex(r0, g, t, 3, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvlc14;", out Cs[CIndex(r0, g, t, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvlc15;", out Cs[CIndex(r0, g, t, 3, 3)]);
    }

    // ---------------------------------------------------------------- the portable path: a warp-level mma emulator
    //
    // Off CUDA the group emulates the 4 warps × 32 lanes of the CUDA path whatever its real size, accumulating straight into
    // the shared C tile: C register c_i of n8 tile j of lane (g, t) in warp w is the element the PTX ISA layout gives it
    // (row g + 8·(i ≥ 2), column 2t + i%2), summed over the instruction's k from the A/B elements read back out of the
    // fragments that AFrag/BFrag build for the lanes and registers the layout assigns them, and stored where CIndex puts it.
    // The layout is written here from the ISA, not from AFrag/BFrag/CIndex, so a lane ↔ element mistake in those (which
    // the CUDA path's mma.sync would suffer) makes the emulator's result wrong, and CI sees it.

    /// <summary>Element (row, k) of warp w's A operand at k offset ks, taken from the lane and register the ISA assigns it.</summary>
    private static float AElement(ArrayView<uint> As, int r0, int row, int k, int ks, bool bf16)
    {
        if (!bf16)   // m16n8k8 tf32: lane (g = row%8, t = k%4), register (row ≥ 8) + 2·(k ≥ 4)
            return Interop.IntAsFloat(AFrag(As, r0, row & 7, k & 3, ks, (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0), false));
        // m16n8k16 bf16: lane (row%8, (k%8)/2), register (row ≥ 8) + 2·(k ≥ 8), half k%2 (low half = even k)
        uint reg = AFrag(As, r0, row & 7, (k & 7) >> 1, ks, (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0), true);
        return Interop.IntAsFloat((k & 1) == 0 ? reg << 16 : reg & 0xFFFF0000u);
    }

    /// <summary>Element (k, n) of n8 tile j's B operand, from the lane and register the ISA assigns it.</summary>
    private static float BElement(ArrayView<uint> Bs, int n0, int k, int n, int ks, bool bf16) => BElement(Bs, BStride, n0, k, n, ks, bf16);

    /// <summary><see cref="BElement(ArrayView{uint}, int, int, int, int, bool)"/> for a B tile with row stride <paramref name="stride"/>.</summary>
    private static float BElement(ArrayView<uint> Bs, int stride, int n0, int k, int n, int ks, bool bf16)
    {
        if (!bf16)   // tf32: lane (g = n, t = k%4), register (k ≥ 4)
            return Interop.IntAsFloat(BFrag(Bs, stride, n0, n, k & 3, ks, k >= 4 ? 1 : 0, false));
        uint reg = BFrag(Bs, stride, n0, n, (k & 7) >> 1, ks, k >= 8 ? 1 : 0, true);
        return Interop.IntAsFloat((k & 1) == 0 ? reg << 16 : reg & 0xFFFF0000u);
    }

    /// <summary>The emulated warps' 16-deep shared stage (two tf32 k8 mma or one bf16 k16 mma per n8 tile), accumulated in
    /// Cs at <see cref="CIndex"/>, as <see cref="WarpStage"/> + <see cref="SpillAccumulators"/> do on CUDA.</summary>
    internal static void EmuStage(ArrayView<uint> As, ArrayView<uint> Bs, ArrayView<float> Cs, bool bf16, int tid, int nt)
    {
        for (int e = tid; e < 4 * 32 * 16; e += nt)
        {
            int w = e / 512, lane = (e / 16) & 31, reg = e & 15, g = lane >> 2, t = lane & 3, j = reg >> 2, i = reg & 3;
            int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            int ci = CIndex(16 * w, g, t, j, i);
            float sum = Cs[ci];
            for (int ks = 0; ks < BK; ks += bf16 ? 16 : 8)
                for (int k = 0; k < (bf16 ? 16 : 8); k++)
                    sum += AElement(As, 16 * w, row, k, ks, bf16) * BElement(Bs, 8 * j, k, col, ks, bf16);
            Cs[ci] = sum;
        }
    }

    /// <summary>The kernel (explicitly grouped; grid x = column tiles, y = row tiles, z = batches, each grid-strided).</summary>
    internal static void Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As = SharedMemory.Allocate<uint>(BM * AStride);
        var Bs = SharedMemory.Allocate<uint>(BK * BStride);
        var Cs = SharedMemory.Allocate<float>(BM * BN);   // the C tile: the epilogue's input; the portable path's accumulators
        int tid = Group.IdxX, nt = Group.DimX;
        bool bf16 = (s.Flags & FlagBf16) != 0, ta = (s.Flags & FlagTransA) != 0, tb = (s.Flags & FlagTransB) != 0;
        int tilesM = (s.M + BM - 1) / BM, tilesN = (s.N + BN - 1) / BN;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3, r0 = warp * 16;
        if (CudaAsm.IsSupported) DeclareAccumulators();
        for (int bt = Grid.IdxZ; bt < s.Batch; bt += Grid.DimZ)
        {
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
            for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
            for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
            {
                int m0 = tm * BM, n0 = tn * BN;
                if (CudaAsm.IsSupported) ZeroAccumulators();
                else
                    for (int e = tid; e < BM * BN; e += nt) Cs[e] = 0f;
                for (int k0 = 0; k0 < s.K; k0 += BK)
                {
                    // Stage the rounded operands; the index order follows the stored layout so neighbouring threads read
                    // neighbouring addresses.
                    for (int e = tid; e < BM * BK; e += nt)
                    {
                        int am = ta ? e % BM : e / BK, ak = ta ? e / BM : e % BK;
                        float v = m0 + am < s.M && k0 + ak < s.K ? LoadA(a, s, aOff, m0 + am, k0 + ak) : 0f;
                        As[am * AStride + ak] = Rounded(v, bf16);
                    }
                    for (int e = tid; e < BK * BN; e += nt)
                    {
                        int bn = tb ? e / BK : e % BN, bk = tb ? e % BK : e / BN;
                        float v = n0 + bn < s.N && k0 + bk < s.K ? LoadB(b, s, bOff, k0 + bk, n0 + bn) : 0f;
                        Bs[bk * BStride + bn] = Rounded(v, bf16);
                    }
                    Group.Barrier();
                    if (CudaAsm.IsSupported)
                    {
                        if (warp < BM / 16) WarpStage(As, Bs, r0, g, t, bf16);
                    }
                    else
                        EmuStage(As, Bs, Cs, bf16, tid, nt);
                    Group.Barrier();
                }
                if (CudaAsm.IsSupported)
                {
                    if (warp < BM / 16) SpillAccumulators(Cs, r0, g, t);
                    Group.Barrier();
                }
                StoreBlock(c, bias, s, cOff, Cs, BM * BN, BN, BN, m0, n0, tid, nt);
                Group.Barrier();   // Cs is rewritten for the next tile only after every thread has read it
            }
        }
    }

    // ---------------------------------------------------------------- launcher

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>? Kernel, Kernel128;
        /// <summary>The 128×128 tile's kernels by layout: index TransA·2 + TransB.</summary>
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[] Kernel3 = new Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>?[12];
        /// <summary>The asynchronous 128×128 tile's kernels by layout (<see cref="AsyncStages"/>). Both tiles' arrays: index
        /// 4·part + TransA·2 + TransB (<see cref="TcPart"/>: only Full outside <c>bench dissect</c>).</summary>
        public readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long>?[] Kernel4 = new Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long>?[12];
    }

    /// <summary>The asynchronous 128×128 tile's kernel for a layout.</summary>
    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long> Kernel4For(bool ta, bool tb, TcPart part = TcPart.Full)
        => part switch
        {
            TcPart.NoGlobalLoads => Kernel4For<TcNoCopy>(ta, tb),
            TcPart.NoMath => Kernel4For<TcNoMath>(ta, tb),
            _ => Kernel4For<TcFull>(ta, tb),
        };

    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long> Kernel4For<TP>(bool ta, bool tb)
        where TP : struct, ITcPart => (ta, tb) switch
    {
        (false, false) => Kernel128x128Async<TcLayoutNN, TP>,
        (false, true) => Kernel128x128Async<TcLayoutNT, TP>,
        (true, false) => Kernel128x128Async<TcLayoutTN, TP>,
        _ => Kernel128x128Async<TcLayoutTT, TP>,
    };

    /// <summary>The asynchronous 128×128 tile's kernel methods (NN, NT, TN, TT), for offline PTX compilation.</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> Kernel128x128AsyncMethods { get; } =
        [Kernel4For(false, false).Method, Kernel4For(false, true).Method, Kernel4For(true, false).Method, Kernel4For(true, true).Method];

    /// <summary>
    /// Whether the TF32 GEMM rule (<see cref="Choose"/>) takes <see cref="TensorCoreTile.Tile128x128Async"/> — the 128×128 tile
    /// with cp.async stages (<c>TensorCoreGemm.Async.cs</c>: copies two stages ahead into three swizzled stage buffers), which
    /// runs where both operands take 128-bit loads (16-byte aligned, leading dimensions and batch strides multiples of 4) and
    /// hands the rest to the register-prefetch kernel — instead of <see cref="TensorCoreTile.Tile128x128"/>:
    /// <c>FVL_TC_ASYNC</c> = <c>off</c> (default) or <c>on</c>, an A/B switch for a device (session 21: not yet run on a GPU).
    /// Same bits either way; with it on, the kernel tuner also times the cp.async tile per shape (<see cref="TilesFor"/>). Read once, at the first use (an invalid
    /// value throws there, naming it; the CLI checks it at start). Settable for tests.
    /// </summary>
    public static bool AsyncStages
    {
        get => _asyncStages ??= ParseAsync(Environment.GetEnvironmentVariable("FVL_TC_ASYNC"));
        set => _asyncStages = value;
    }
    private static bool? _asyncStages;

    internal static bool ParseAsync(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "off" => false,
        "on" => true,
        _ => throw new ArgumentException($"FVL_TC_ASYNC = '{value}' is not a tensor-core staging setting: off (default) or on"),
    };

    /// <summary>Launches of the asynchronous 128×128 kernel since the process started (a <see cref="TensorCoreTile.Tile128x128Async"/>
    /// launch whose operands do not take 128-bit loads runs the register-prefetch kernel and is not counted here), for tests
    /// and diagnostics.</summary>
    internal static long AsyncLaunchCount;

    /// <summary><see cref="AsyncLaunchCount"/> for tools (gpu-check: the asynchronous kernel really ran).</summary>
    public static long AsyncLaunches => Interlocked.Read(ref AsyncLaunchCount);

    /// <summary>The 128×128 tile's kernel for a layout (one compiled kernel per TransA, TransB).</summary>
    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> Kernel3For(bool ta, bool tb, TcPart part = TcPart.Full)
        => part switch
        {
            TcPart.NoGlobalLoads => Kernel3For<TcNoCopy>(ta, tb),
            TcPart.NoMath => Kernel3For<TcNoMath>(ta, tb),
            _ => Kernel3For<TcFull>(ta, tb),
        };

    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> Kernel3For<TP>(bool ta, bool tb)
        where TP : struct, ITcPart => (ta, tb) switch
    {
        (false, false) => Kernel128x128<TcLayoutNN, TP>,
        (false, true) => Kernel128x128<TcLayoutNT, TP>,
        (true, false) => Kernel128x128<TcLayoutTN, TP>,
        _ => Kernel128x128<TcLayoutTT, TP>,
    };

    /// <summary>The 128×128 tile's kernel methods, one per layout (NN, NT, TN, TT), for offline PTX compilation.</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> Kernel128x128Methods { get; } =
        [Kernel3For(false, false).Method, Kernel3For(false, true).Method, Kernel3For(true, false).Method, Kernel3For(true, true).Method];

    // Holds the typed delegates (ILGPU's own kernel cache is weak) for as long as the accelerator lives.
    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    /// <summary>The kernel method of a tile (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo KernelMethod(TensorCoreTile tile = TensorCoreTile.Tile64x32) => tile switch
    {
        TensorCoreTile.Tile64x32 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Kernel).Method,
        TensorCoreTile.Tile128x64 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Kernel128).Method,
        TensorCoreTile.Tile128x128 => Kernel3For(false, true).Method,
        TensorCoreTile.Tile128x128Async => Kernel4For(false, true).Method,
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "tensor-core GEMM: unknown tile"),
    };

    /// <summary>Launches per tile since the process started (index: the tile; after <see cref="Runnable"/>), for tests and
    /// diagnostics: which tile a rule, an override or the tuner really ran.</summary>
    internal static readonly long[] LaunchCounts = new long[4];

    /// <summary>Every tile, for tuners and tests.</summary>
    public static IReadOnlyList<TensorCoreTile> Tiles { get; } = [TensorCoreTile.Tile64x32, TensorCoreTile.Tile128x64];

    /// <summary>The GEMM tiles the kernel tuner times for <paramref name="precision"/> (the 128×128 tiles are TF32 only): the
    /// cp.async tile only once <see cref="AsyncStages"/> opts in (no GPU has checked its bits yet, and the tuner does not
    /// compare bits on the device; gpu-check does).</summary>
    public static IReadOnlyList<TensorCoreTile> TilesFor(Precision precision)
        => precision != Precision.Tf32 ? Tiles : AsyncStages ? Tf32TilesAll : Tf32Tiles;

    /// <summary>Every GEMM tile that runs <paramref name="precision"/>, the cp.async tile included (overrides, tests, gpu-check).</summary>
    public static IReadOnlyList<TensorCoreTile> AllTilesFor(Precision precision) => precision == Precision.Tf32 ? Tf32TilesAll : Tiles;

    /// <summary>Every convolution tile that runs <paramref name="precision"/> (the 128×128 tile is TF32 only; the cp.async
    /// variant is a GEMM tile only).</summary>
    public static IReadOnlyList<TensorCoreTile> ConvTilesFor(Precision precision) => precision == Precision.Tf32 ? Tf32ConvTiles : Tiles;

    private static readonly IReadOnlyList<TensorCoreTile> Tf32TilesAll = [TensorCoreTile.Tile64x32, TensorCoreTile.Tile128x64, TensorCoreTile.Tile128x128, TensorCoreTile.Tile128x128Async];
    private static readonly IReadOnlyList<TensorCoreTile> Tf32Tiles = [TensorCoreTile.Tile64x32, TensorCoreTile.Tile128x64, TensorCoreTile.Tile128x128];
    private static readonly IReadOnlyList<TensorCoreTile> Tf32ConvTiles = Tf32Tiles;

    /// <summary>
    /// The tile the CUDA backend runs for an M × N GEMM under <paramref name="precision"/>: TF32 → the 128×128 tile (grids
    /// it cannot launch run 128×64, <see cref="Runnable"/>), bf16 → the 128×64 tile (the 128×128 tile is TF32 only).
    /// Measured on an H200 (2026-11-28, A/B in one device call, batch 64, every TF32 GEMM forced onto 128×128 with
    /// <c>FVL_TC_TILE</c>): GEMM time per step 60.3 → 34.8 ms (ITC), 113.5 → 65.4 ms (MLM), 100.1 → 57.2 ms (MPFC), and
    /// the kernel tuner, free to pick any tile per shape, reached the same totals (34.8, 65.3, 57.2 ms). Before that, 128×64
    /// was the faster of the two older tiles for all 28 GEMM shapes of ITC and MLM (2.4–6.6× faster than 64×32). All tiles
    /// give the same bits, so the choice never changes a result; split-K counts are sized on <see cref="SplitSizingTile"/>.
    /// </summary>
    public static TensorCoreTile Choose(Accelerator acc, int m, int n, Precision precision)
    {
        ArgumentNullException.ThrowIfNull(acc);
        return precision != Precision.Tf32 ? TensorCoreTile.Tile128x64 : AsyncStages ? TensorCoreTile.Tile128x128Async : TensorCoreTile.Tile128x128;
    }

    /// <summary>The tile the split-K count of a tensor-core GEMM is sized on (<see cref="GemmSplitK.Splits"/>): 128×64, whichever
    /// tile runs the partial products (the split count decides the summation order, so it stays what was measured and
    /// pinned when 128×64 ran every GEMM; the 128×128 tile's runs above kept it).</summary>
    public const TensorCoreTile SplitSizingTile = TensorCoreTile.Tile128x64;

    /// <summary>
    /// The tile the tensor-core convolution runs for its M × N implicit GEMM under <paramref name="precision"/>: TF32 → the
    /// 128×128 tile (grids it cannot launch run 128×64); bf16 → <see cref="ConvSizingTile"/>'s. Measured on an H200
    /// (2026-11-28, A/B in one device call, batch 64, every TF32 conv GEMM forced onto 128×128 with <c>FVL_TC_CONV_TILE</c>,
    /// GEMMs on 128×128): conv time per step 82.6 → 72.8 ms (ResNet-50, ITC/MLM), 297.4 → 251.5 ms (ResNet-50 + VQ-VAE
    /// encoder, MPFC); the kernel tuner picking per shape reached 71.1 and 250.2 ms. Split-K counts and the weight gradients'
    /// precision (<see cref="ConvKernels.WeightGradientPrecision"/>) stay decided on <see cref="ConvSizingTile"/>, as in those
    /// runs. All tiles give the same bits.
    /// </summary>
    public static TensorCoreTile ChooseConv(Accelerator acc, int m, int n, Precision precision)
        => precision == Precision.Tf32 ? TensorCoreTile.Tile128x128 : ConvSizingTile(acc, m, n);

    /// <summary>
    /// The tile a tensor-core convolution's split-K count and its weight gradient's precision are decided on (and the tile
    /// bf16 convolutions run): the 64×32 tile when M ≤ 64 (half a 128-row tile would be idle: on the H200 the 64-channel
    /// ResNet layers ran 1.2–1.6× faster on it than on 128×64, e.g. the stem 0.65 against 1.00 ms), else the 128×64 tile
    /// once its tiles give every multiprocessor one group, else 64×32 (measured mixed there, within ±10 %).
    /// </summary>
    public static TensorCoreTile ConvSizingTile(Accelerator acc, int m, int n)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (m <= BM) return TensorCoreTile.Tile64x32;
        long tiles128 = (long)((m + BM2 - 1) / BM2) * ((n + BN2 - 1) / BN2);
        return tiles128 >= acc.NumMultiprocessors ? TensorCoreTile.Tile128x64 : TensorCoreTile.Tile64x32;
    }

    /// <summary>The tile a launch on <paramref name="tile"/> runs: itself, except that the 128×128 tile (one C tile per group,
    /// no grid-stride loops) hands grids past CUDA's 65,535 row tiles or batches to the 128×64 tile, which gives the same bits.</summary>
    internal static TensorCoreTile Runnable(TensorCoreTile tile, int m, int batch)
        => tile is TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async && ((m + BM3 - 1) / BM3 > 65535 || batch > 65535) ? TensorCoreTile.Tile128x64 : tile;

    /// <summary>A tile override's value (<c>FVL_TC_TILE</c>, <c>FVL_TC_CONV_TILE</c>): <c>rule</c> or empty → null, else
    /// <c>64x32</c>, <c>128x64</c>, <c>128x128</c>, and for GEMMs (<paramref name="gemm"/>) <c>128x128a</c> (the cp.async
    /// variant) (case and spaces ignored); anything else is an error naming the variable.</summary>
    internal static TensorCoreTile? ParseTile(string variable, string? value, bool gemm = false) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "rule" => null,
        "64x32" => TensorCoreTile.Tile64x32,
        "128x64" => TensorCoreTile.Tile128x64,
        "128x128" => TensorCoreTile.Tile128x128,
        "128x128a" when gemm => TensorCoreTile.Tile128x128Async,
        _ => throw new ArgumentException($"{variable} = '{value}' is not a tensor-core tile: rule (default), 64x32, 128x64{(gemm ? ", 128x128 or 128x128a" : " or 128x128")}"),
    };

    /// <summary>The C tile (rows, columns) a group of <paramref name="tile"/> computes.</summary>
    public static (int Rows, int Cols) TileShape(TensorCoreTile tile) => tile switch
    {
        TensorCoreTile.Tile128x64 => (BM2, BN2),
        TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async => (BM3, BN3),
        _ => (BM, BN),
    };

    /// <summary>
    /// The launch bounds (PTX .maxntid / .minnctapersm) the CUDA loader gives a tile: the 128×64 and 128×128 tiles run 256
    /// threads and ask for 2 groups per SM (≤ 128 registers per thread); the 64×32 tile gets none. Other accelerators get none.
    /// </summary>
    public static KernelSpecialization CudaLaunchBounds(TensorCoreTile tile)
        => tile is TensorCoreTile.Tile128x64 or TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async ? new KernelSpecialization(GpuGroupSize2, 2) : default;

    /// <summary>Threads per group of <paramref name="tile"/> on <paramref name="acc"/>: the warp count the mma path needs on
    /// CUDA; elsewhere (the portable path) the accelerator's largest group up to that.</summary>
    public static int GroupSize(Accelerator acc, TensorCoreTile tile)
    {
        int gpu = tile is TensorCoreTile.Tile128x64 or TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async ? GpuGroupSize2 : GpuGroupSize;
        return acc.AcceleratorType == AcceleratorType.Cuda ? gpu : Math.Min(gpu, acc.MaxNumThreadsPerGroup);
    }

    /// <summary>mma.sync with tf32/bf16 operands needs sm_80 or newer; an older GPU gets an error naming the switch instead
    /// of a PTX load failure. (The CPU accelerator runs the portable path.)</summary>
    internal static void RequireTensorCores(Accelerator acc, Precision precision)
    {
        if (acc is CudaAccelerator cuda && cuda.Architecture is { } arch && arch < CudaArchitecture.SM_80)
            throw new NotSupportedException($"precision {precision.Name()} (MatMulPrecision / training.precision / --precision) needs tensor cores of " +
                $"compute capability 8.0 or newer; {cuda.Name} is {arch}. Use fp32 on this GPU.");
    }

    /// <summary>
    /// Validates <paramref name="args"/> as <see cref="GemmKernels.Launch(Accelerator, AcceleratorStream?, in GemmArgs)"/> does and
    /// enqueues the tensor-core GEMM with operands rounded to <paramref name="precision"/> (Tf32 or Bf16; Fp32 is refused:
    /// that is <see cref="GemmKernels"/>' job), on the 64×32 tile. Nothing to do for an empty C; K = 0 gives C ← beta·C + bias.
    /// </summary>
    public static void Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args, Precision precision)
        => Launch(acc, stream, args, precision, TensorCoreTile.Tile64x32);

    /// <summary>As <see cref="Launch(Accelerator, AcceleratorStream?, in GemmArgs, Precision)"/>, on the given tile (same bits
    /// either way).</summary>
    public static void Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args, Precision precision, TensorCoreTile tile)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (precision is not (Precision.Tf32 or Precision.Bf16))
            throw new ArgumentException($"matmul (tensor cores): precision {precision} has no tensor-core path (Tf32 or Bf16); Fp32 runs GemmKernels", nameof(precision));
        if (tile is not (TensorCoreTile.Tile64x32 or TensorCoreTile.Tile128x64 or TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async))
            throw new ArgumentOutOfRangeException(nameof(tile), tile, "matmul (tensor cores): unknown tile");
        if (tile is TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async && precision != Precision.Tf32)
            throw new ArgumentException($"matmul (tensor cores): the 128×128 tiles run Tf32 only, not {precision}; use Tile128x64 or Tile64x32", nameof(tile));
        GemmKernels.Validate(args);
        RequireTensorCores(acc, precision);
        if (args.M == 0 || args.N == 0 || args.Batch == 0) return;
        // the 128×128 kernel computes one tile per group (no grid-stride loops: they cost it the registers that kept it at
        // 2 groups per SM without spills); grids past CUDA's 65,535 row tiles or batches run the 128×64 tile (same bits)
        tile = Runnable(tile, args.M, args.Batch);
        bool hasBias = args.Bias.Length > 0;
        var s = new GemmShape
        {
            M = args.M, N = args.N, K = args.K, Lda = args.Lda, Ldb = args.Ldb, Ldc = args.Ldc, Batch = args.Batch,
            StrideA = args.StrideA, StrideB = args.StrideB, StrideC = args.StrideC, Alpha = args.Alpha, Beta = args.Beta,
            Flags = (args.TransA ? FlagTransA : 0) | (args.TransB ? FlagTransB : 0) | (hasBias ? FlagBias : 0) | (args.Gelu ? FlagGelu : 0)
                | (precision == Precision.Bf16 ? FlagBf16 : 0) | (args.ARounded ? FlagRoundedA : 0) | (args.BRounded ? FlagRoundedB : 0)
                | (tile is TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async && GemmKernels.Aligned4(args.A, args.Lda, args.StrideA) ? FlagVecA : 0)
                | (tile is TensorCoreTile.Tile128x128 or TensorCoreTile.Tile128x128Async && GemmKernels.Aligned4(args.B, args.Ldb, args.StrideB) ? FlagVecB : 0),
        };
        // The mma path needs exactly 4 (8) warps of 32; other accelerators run the portable path with their largest group.
        int nt = GroupSize(acc, tile);
        var (bm, bn) = TileShape(tile);
        int tilesM = (args.M + bm - 1) / bm, tilesN = (args.N + bn - 1) / bn;
        var grid = new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(args.Batch, 65535));
        // The 128×64 tile's portable path keeps its emulated accumulators in dynamic shared memory; CUDA requests none.
        bool cuda = acc.AcceleratorType == AcceleratorType.Cuda;
        // the cp.async tile needs 16-byte copies of both operands; otherwise the register-prefetch kernel (same bits)
        if (tile == TensorCoreTile.Tile128x128Async && ((s.Flags & FlagVecA) == 0 || (s.Flags & FlagVecB) == 0)) tile = TensorCoreTile.Tile128x128;
        bool async = tile == TensorCoreTile.Tile128x128Async;
        int dynamicWords = async ? (cuda ? Shared4Words : Shared4Words + C3Words)
            : cuda ? 0 : tile switch { TensorCoreTile.Tile128x64 => C2Words, TensorCoreTile.Tile128x128 => C3Words, _ => 0 };
        var cfg = dynamicWords > 0
            ? new KernelConfig(grid, new Index3D(nt, 1, 1), SharedMemoryConfig.RequestDynamic<float>(dynamicWords))
            : new KernelConfig(grid, new Index3D(nt, 1, 1));
        var loaded = Cache.GetValue(acc, _ => new Loaded());
        var bounds = cuda ? CudaLaunchBounds(tile) : default;
        var part = Part;
        int slot = 4 * PartIndex(part) + (args.TransA ? 2 : 0) + (args.TransB ? 1 : 0);
        if (async)
        {
            Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long> k4;
            lock (loaded)
                k4 = loaded.Kernel4[slot] ??=
                    acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape, long, long>(Kernel4For(args.TransA, args.TransB, part), bounds);
            Interlocked.Increment(ref LaunchCounts[(int)tile]);
            Interlocked.Increment(ref AsyncLaunchCount);
            // the operands' device addresses for cp.async (K = 0 reads nothing; the views are still valid)
            k4(stream ?? acc.DefaultStream, cfg, args.A, args.B, args.C, hasBias ? args.Bias : args.C, s,
                args.A.LoadEffectiveAddressAsPtr().ToInt64(), args.B.LoadEffectiveAddressAsPtr().ToInt64());
            return;
        }
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> kernel;
        lock (loaded)
            kernel = tile switch
            {
                TensorCoreTile.Tile128x64 => loaded.Kernel128 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Kernel128, bounds),
                TensorCoreTile.Tile128x128 => loaded.Kernel3[slot] ??=
                    acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Kernel3For(args.TransA, args.TransB, part), bounds),
                _ => loaded.Kernel ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Kernel),
            };
        Interlocked.Increment(ref LaunchCounts[(int)tile]);
        var view = hasBias ? args.Bias : args.C;   // a valid dummy when there is no bias (never read)
        kernel(stream ?? acc.DefaultStream, cfg, args.A, args.B, args.C, view, s);
    }
}
