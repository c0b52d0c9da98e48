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
/// false: ILGPU's CPU accelerator, any group size) the portable path computes the same math — the same rounded operands
/// from the same shared tiles, exact products, float32 accumulation — into a 64×32 shared accumulator tile.
/// The shared strides (A rows 20 words, B rows 40 words) make the fragment reads of a warp bank-conflict-free.
/// </para>
/// <para>
/// Status: the portable path is what CI tests (emulator, against the CPU backend under the same precision) and the kernel
/// compiles to PTX for sm_90 with both mma forms. The mma path has NOT run on a GPU yet: the bf16 m16n8k16 form matched a
/// CPU reference on an H100 in ilgpu-notes §2.10, the TF32 m16n8k8 form has never been tried on hardware. Correctness
/// and speed on a GPU are owed.
/// </para>
/// </summary>
public static class TensorCoreGemm
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

    internal const int FlagTransA = 1, FlagTransB = 2, FlagBias = 4, FlagGelu = 8, FlagBf16 = 128;

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

    private static float Epilogue(float acc, ArrayView<float> c, ArrayView<float> bias, GemmShape s, long ci, int n)
    {
        float r = s.Alpha * acc;
        if (s.Beta != 0f) r += s.Beta * c[ci];
        if ((s.Flags & FlagBias) != 0) r += bias[n];
        if ((s.Flags & FlagGelu) != 0) r = ScalarMath.GeluF(r);
        return r;
    }

    private static void Store(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, int row, int col, float v)
    {
        if (row >= s.M || col >= s.N) return;
        long ci = cOff + (long)row * s.Ldc + col;
        c[ci] = Epilogue(v, c, bias, s, ci, col);
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

    /// <summary>B element pair (k, k+1) of column n, packed as one bf16x2 register.</summary>
    private static uint PackB(ArrayView<uint> Bs, int k, int n) => Pack(Bs[k * BStride + n], Bs[(k + 1) * BStride + n]);

    /// <summary>
    /// One warp's 16-deep shared stage: rows r0..r0+15 of the group tile times all four n8 tiles (columns 0..31), accumulated
    /// into fvlc0..15. The A fragment is read once and used for the four tiles. Fragment layouts (PTX ISA, g = lane/4,
    /// t = lane%4): TF32 m16n8k8 A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4), B b0 (k t, n g) b1 (k t+4, n g);
    /// bf16 m16n8k16 A a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..), B b0 (k 2t..2t+1, n g)
    /// b1 (k 2t+8..2t+9, n g); C c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void WarpStage(ArrayView<uint> As, ArrayView<uint> Bs, int r0, int g, int t, bool bf16)
    {
        int ra = (r0 + g) * AStride, rb = (r0 + g + 8) * AStride;
        if (bf16)
        {
            uint a0 = Pack(As[ra + 2 * t], As[ra + 2 * t + 1]);
            uint a1 = Pack(As[rb + 2 * t], As[rb + 2 * t + 1]);
            uint a2 = Pack(As[ra + 2 * t + 8], As[ra + 2 * t + 9]);
            uint a3 = Pack(As[rb + 2 * t + 8], As[rb + 2 * t + 9]);
            int k0 = 2 * t, k1 = 2 * t + 8;
            CudaAsm.Emit(Bf16 + "{fvlc0,fvlc1,fvlc2,fvlc3}" + Ops + "{fvlc0,fvlc1,fvlc2,fvlc3};", a0, a1, a2, a3, PackB(Bs, k0, g), PackB(Bs, k1, g));
            CudaAsm.Emit(Bf16 + "{fvlc4,fvlc5,fvlc6,fvlc7}" + Ops + "{fvlc4,fvlc5,fvlc6,fvlc7};", a0, a1, a2, a3, PackB(Bs, k0, g + 8), PackB(Bs, k1, g + 8));
            CudaAsm.Emit(Bf16 + "{fvlc8,fvlc9,fvlc10,fvlc11}" + Ops + "{fvlc8,fvlc9,fvlc10,fvlc11};", a0, a1, a2, a3, PackB(Bs, k0, g + 16), PackB(Bs, k1, g + 16));
            CudaAsm.Emit(Bf16 + "{fvlc12,fvlc13,fvlc14,fvlc15}" + Ops + "{fvlc12,fvlc13,fvlc14,fvlc15};", a0, a1, a2, a3, PackB(Bs, k0, g + 24), PackB(Bs, k1, g + 24));
        }
        else
        {
            for (int ks = 0; ks < BK; ks += 8)
            {
                uint a0 = As[ra + ks + t], a1 = As[rb + ks + t], a2 = As[ra + ks + t + 4], a3 = As[rb + ks + t + 4];
                int q0 = (ks + t) * BStride + g, q1 = (ks + t + 4) * BStride + g;
                CudaAsm.Emit(Tf32 + "{fvlc0,fvlc1,fvlc2,fvlc3}" + Ops + "{fvlc0,fvlc1,fvlc2,fvlc3};", a0, a1, a2, a3, Bs[q0], Bs[q1]);
                CudaAsm.Emit(Tf32 + "{fvlc4,fvlc5,fvlc6,fvlc7}" + Ops + "{fvlc4,fvlc5,fvlc6,fvlc7};", a0, a1, a2, a3, Bs[q0 + 8], Bs[q1 + 8]);
                CudaAsm.Emit(Tf32 + "{fvlc8,fvlc9,fvlc10,fvlc11}" + Ops + "{fvlc8,fvlc9,fvlc10,fvlc11};", a0, a1, a2, a3, Bs[q0 + 16], Bs[q1 + 16]);
                CudaAsm.Emit(Tf32 + "{fvlc12,fvlc13,fvlc14,fvlc15}" + Ops + "{fvlc12,fvlc13,fvlc14,fvlc15};", a0, a1, a2, a3, Bs[q0 + 24], Bs[q1 + 24]);
            }
        }
    }

    /// <summary>Writes the lane's 16 accumulators into the shared C tile Cs[m·BN + n] (rows r0.., fragment layout above).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SpillAccumulators(ArrayView<float> Cs, int r0, int g, int t)
    {
        int ia = (r0 + g) * BN + 2 * t, ib = ia + 8 * BN;
        CudaAsm.Emit("mov.b32 %0, fvlc0;", out Cs[ia]); CudaAsm.Emit("mov.b32 %0, fvlc1;", out Cs[ia + 1]);
        CudaAsm.Emit("mov.b32 %0, fvlc2;", out Cs[ib]); CudaAsm.Emit("mov.b32 %0, fvlc3;", out Cs[ib + 1]);
        CudaAsm.Emit("mov.b32 %0, fvlc4;", out Cs[ia + 8]); CudaAsm.Emit("mov.b32 %0, fvlc5;", out Cs[ia + 9]);
        CudaAsm.Emit("mov.b32 %0, fvlc6;", out Cs[ib + 8]); CudaAsm.Emit("mov.b32 %0, fvlc7;", out Cs[ib + 9]);
        CudaAsm.Emit("mov.b32 %0, fvlc8;", out Cs[ia + 16]); CudaAsm.Emit("mov.b32 %0, fvlc9;", out Cs[ia + 17]);
        CudaAsm.Emit("mov.b32 %0, fvlc10;", out Cs[ib + 16]); CudaAsm.Emit("mov.b32 %0, fvlc11;", out Cs[ib + 17]);
        CudaAsm.Emit("mov.b32 %0, fvlc12;", out Cs[ia + 24]); CudaAsm.Emit("mov.b32 %0, fvlc13;", out Cs[ia + 25]);
        CudaAsm.Emit("mov.b32 %0, fvlc14;", out Cs[ib + 24]); CudaAsm.Emit("mov.b32 %0, fvlc15;", out Cs[ib + 25]);
    }

    /// <summary>The portable stage (any accelerator, any group size): Cs[m·BN + n] += Σ_k As[m,k]·Bs[k,n] over the 16-deep
    /// stage, exact products of the same rounded operands, float32 accumulation in k order.</summary>
    internal static void PortableStage(ArrayView<uint> As, ArrayView<uint> Bs, ArrayView<float> Cs, int tid, int nt)
    {
        for (int e = tid; e < BM * BN; e += nt)
        {
            int m = e / BN, n = e % BN;
            float acc = Cs[e];
            for (int kk = 0; kk < BK; kk++)
                acc += Interop.IntAsFloat(As[m * AStride + kk]) * Interop.IntAsFloat(Bs[kk * BStride + n]);
            Cs[e] = acc;
        }
    }

    /// <summary>The kernel (explicitly grouped; grid x = column tiles, y = row tiles, z = batches, each grid-strided).</summary>
    internal static void Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var As = SharedMemory.Allocate<uint>(BM * AStride);
        var Bs = SharedMemory.Allocate<uint>(BK * BStride);
        var Cs = SharedMemory.Allocate<float>(BM * BN);   // the portable path's accumulators; the mma path's C tile for the epilogue
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
                        PortableStage(As, Bs, Cs, tid, nt);
                    Group.Barrier();
                }
                if (CudaAsm.IsSupported)
                {
                    if (warp < BM / 16) SpillAccumulators(Cs, r0, g, t);
                    Group.Barrier();
                }
                for (int e = tid; e < BM * BN; e += nt) Store(c, bias, s, cOff, m0 + e / BN, n0 + e % BN, Cs[e]);
                Group.Barrier();   // Cs is rewritten for the next tile only after every thread has read it
            }
        }
    }

    // ---------------------------------------------------------------- launcher

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>? Kernel;
    }

    // Holds the typed delegate (ILGPU's own kernel cache is weak) for as long as the accelerator lives.
    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    /// <summary>The kernel method (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo KernelMethod
        => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>)Kernel).Method;

    /// <summary>
    /// Validates <paramref name="args"/> as <see cref="GemmKernels.Launch(Accelerator, AcceleratorStream?, in GemmArgs)"/> does and
    /// enqueues the tensor-core GEMM with operands rounded to <paramref name="precision"/> (Tf32 or Bf16; Fp32 is refused:
    /// that is <see cref="GemmKernels"/>' job). Nothing to do for an empty C; K = 0 gives C ← beta·C + bias.
    /// </summary>
    /// <summary>mma.sync with tf32/bf16 operands needs sm_80 or newer; an older GPU gets an error naming the switch instead
    /// of a PTX load failure. (The CPU accelerator runs the portable path.)</summary>
    internal static void RequireTensorCores(Accelerator acc, Precision precision)
    {
        if (acc is CudaAccelerator cuda && cuda.Architecture is { } arch && arch < CudaArchitecture.SM_80)
            throw new NotSupportedException($"precision {precision.Name()} (MatMulPrecision / training.precision / --precision) needs tensor cores of " +
                $"compute capability 8.0 or newer; {cuda.Name} is {arch}. Use fp32 on this GPU.");
    }

    public static void Launch(Accelerator acc, AcceleratorStream? stream, in GemmArgs args, Precision precision)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (precision is not (Precision.Tf32 or Precision.Bf16))
            throw new ArgumentException($"matmul (tensor cores): precision {precision} has no tensor-core path (Tf32 or Bf16); Fp32 runs GemmKernels", nameof(precision));
        GemmKernels.Validate(args);
        RequireTensorCores(acc, precision);
        if (args.M == 0 || args.N == 0 || args.Batch == 0) return;
        bool hasBias = args.Bias.Length > 0;
        var s = new GemmShape
        {
            M = args.M, N = args.N, K = args.K, Lda = args.Lda, Ldb = args.Ldb, Ldc = args.Ldc, Batch = args.Batch,
            StrideA = args.StrideA, StrideB = args.StrideB, StrideC = args.StrideC, Alpha = args.Alpha, Beta = args.Beta,
            Flags = (args.TransA ? FlagTransA : 0) | (args.TransB ? FlagTransB : 0) | (hasBias ? FlagBias : 0) | (args.Gelu ? FlagGelu : 0)
                | (precision == Precision.Bf16 ? FlagBf16 : 0),
        };
        // The mma path needs exactly 4 warps of 32; other accelerators run the portable path with their largest group (≤ 128).
        int nt = acc.AcceleratorType == AcceleratorType.Cuda ? GpuGroupSize : Math.Min(GpuGroupSize, acc.MaxNumThreadsPerGroup);
        int tilesM = (args.M + BM - 1) / BM, tilesN = (args.N + BN - 1) / BN;
        var cfg = new KernelConfig(new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(args.Batch, 65535)), new Index3D(nt, 1, 1));
        var loaded = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape> kernel;
        lock (loaded)
            kernel = loaded.Kernel ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(Kernel);
        var view = hasBias ? args.Bias : args.C;   // a valid dummy when there is no bias (never read)
        kernel(stream ?? acc.DefaultStream, cfg, args.A, args.B, args.C, view, s);
    }
}
