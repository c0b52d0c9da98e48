using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>The C tile (and group) of a <see cref="TensorCoreGemm"/> launch. Both give bitwise-identical results for the
/// same inputs and precision (every C element sees the same mma instructions in the same order), so a tuner may pick
/// either per shape.</summary>
public enum TensorCoreTile
{
    /// <summary>64×32 C tile per group of 4 warps (128 threads), single-buffered shared tiles.</summary>
    Tile64x32 = 0,
    /// <summary>128×64 C tile per group of 8 warps (256 threads), double-buffered shared tiles with register prefetch.</summary>
    Tile128x64 = 1,
    /// <summary>128×128 C tile per group of 8 warps (64×32 per warp), one compiled kernel per operand layout, 128-bit staging;
    /// TF32 only.</summary>
    Tile128x128 = 2,
    /// <summary>The 128×128 tile with cp.async stages (TensorCoreGemm.Async.cs: three swizzled stage buffers filled two stages
    /// ahead); TF32 GEMMs only, operands that take 128-bit loads (others run <see cref="Tile128x128"/>). Not a conv tile.</summary>
    Tile128x128Async = 3,
}

// ---------------------------------------------------------------------------------------------------------------------
// The 128×64 tile (issue 7). A group of 8 warps computes a 128×64 tile of C; warp w owns the 32×32 sub-tile at rows
// WarpRow(w) = 32·(w / 2), columns WarpCol(w) = 32·(w % 2): 2 m16 × 4 n8 mma tiles, 32 fp32 accumulators per lane in the
// asm-named registers fvld0..31 (tile (mi, j) in fvld(16mi + 4j) .. fvld(16mi + 4j + 3) = its c0..c3). Per 16-deep stage
// the warp reads 2 A fragments (one per m16, reused for the 4 n8 tiles) and 4 B fragments (one per n8, reused for the 2 m16
// tiles) per k8 step and issues 16 TF32 m16n8k8 or 8 bf16 m16n8k16 mma: 2× the mma per fragment register of the 64×32 tile.
//
// Per stage the group stages A 128×16 and B 16×64 (3,072 operands, 12 per thread), each rounded once as it is stored in
// shared memory; the next stage's 12 operands are loaded from global memory into registers before the current stage's mma
// and rounded and stored into the other shared buffer after them, one barrier per stage (as
// GemmKernels.Reg128PrefetchKernel does for fp32).
//
// Shared memory: one uint buffer of 9,216 words (36,864 B), used as
//   k loop:   A buffers at 0 and 2,560 (As[m·20 + k], 128 rows), B buffers at 5,120 and 6,272 (Bs[k·72 + n], 16 rows)
//   epilogue: the C tile Cs[m·72 + n] (128 rows), written by the accumulators after the last barrier of the k loop.
// Strides: A 20 words as in the 64×32 tile (TF32 fragment reads of lanes (g, t): words 20g + t → 32 distinct banks);
// B 72 words (TF32: words 72t + g ≡ 8t + g mod 32 → 32 distinct banks; bf16 reads words 144t + g ≡ 16t + g: 2-way, as the
// 64×32 tile's stride 40 gives); C 72 words (epilogue reads: 64 consecutive words per row → conflict-free; the accumulator
// spill writes words 72g + 2t (+1) ≡ 8g + 2t: 2-way, once per tile). Off CUDA the portable path accumulates in a second
// shared C tile of the same layout (EmuStage128), in dynamic shared memory that only non-CUDA launches request.
// ---------------------------------------------------------------------------------------------------------------------

public static partial class TensorCoreGemm
{
    /// <summary>Rows of C per group of the 128×64 tile (4 warp rows × 32).</summary>
    public const int BM2 = 128;
    /// <summary>Columns of C per group of the 128×64 tile (2 warp columns × 32).</summary>
    public const int BN2 = 64;
    /// <summary>Threads per group of the 128×64 tile on CUDA: 8 warps.</summary>
    public const int GpuGroupSize2 = 256;

    internal const int B2Stride = BN2 + 8;                   // Bs[k·72 + n]
    internal const int C2Stride = BN2 + 8;                   // Cs[m·72 + n]
    internal const int A2Words = BM2 * AStride;              // 2,560 words per A buffer
    internal const int B2Words = BK * B2Stride;              // 1,152 words per B buffer
    internal const int B2Base = 2 * A2Words;                 // the B buffers follow the two A buffers
    internal const int Stage2Words = 2 * A2Words + 2 * B2Words;   // 7,424 words (29,696 B): both stages' A and B
    internal const int C2Words = BM2 * C2Stride;             // 9,216 words (36,864 B): the C tile
    /// <summary>Shared words per group on CUDA: the larger of the two uses of the buffer.</summary>
    internal const int Shared2Words = C2Words > Stage2Words ? C2Words : Stage2Words;

    /// <summary>First row of warp <paramref name="w"/>'s 32×32 sub-tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int WarpRow(int w) => 32 * (w >> 1);

    /// <summary>First column of warp <paramref name="w"/>'s 32×32 sub-tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int WarpCol(int w) => 32 * (w & 1);

    /// <summary>Where accumulator register <paramref name="i"/> (0..3) of mma tile (<paramref name="mi"/>, <paramref name="j"/>)
    /// of lane (g, t) of the warp at (r0, c0) goes in the C tile Cs[m·72 + n].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int CIndex128(int r0, int c0, int g, int t, int mi, int j, int i)
        => (r0 + 16 * mi + g + (i >= 2 ? 8 : 0)) * C2Stride + c0 + 8 * j + 2 * t + (i & 1);

    /// <summary>Declares the 32 accumulator registers of the 128×64 tile; once per kernel, on CUDA only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DeclareAccumulators128() => CudaAsm.Emit(".reg .f32 fvld<32>;");

    /// <summary>Sets the 32 accumulators to +0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ZeroAccumulators128() => CudaAsm.Emit(
        "mov.b32 fvld0, 0; mov.b32 fvld1, 0; mov.b32 fvld2, 0; mov.b32 fvld3, 0; mov.b32 fvld4, 0; mov.b32 fvld5, 0; " +
        "mov.b32 fvld6, 0; mov.b32 fvld7, 0; mov.b32 fvld8, 0; mov.b32 fvld9, 0; mov.b32 fvld10, 0; mov.b32 fvld11, 0; " +
        "mov.b32 fvld12, 0; mov.b32 fvld13, 0; mov.b32 fvld14, 0; mov.b32 fvld15, 0; mov.b32 fvld16, 0; mov.b32 fvld17, 0; " +
        "mov.b32 fvld18, 0; mov.b32 fvld19, 0; mov.b32 fvld20, 0; mov.b32 fvld21, 0; mov.b32 fvld22, 0; mov.b32 fvld23, 0; " +
        "mov.b32 fvld24, 0; mov.b32 fvld25, 0; mov.b32 fvld26, 0; mov.b32 fvld27, 0; mov.b32 fvld28, 0; mov.b32 fvld29, 0; " +
        "mov.b32 fvld30, 0; mov.b32 fvld31, 0;");

    /// <summary>
    /// One warp's 16-deep stage on CUDA: its 32×32 sub-tile at (r0, c0) from the shared stage (As: 128 rows of stride 20, Bs:
    /// 16 rows of stride 72), accumulated into fvld0..31. The two A fragments and four B fragments of a k step are read once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void WarpStage128(ArrayView<uint> As, ArrayView<uint> Bs, int r0, int c0, int g, int t, bool bf16)
    {
        // two TF32 k8 steps or one bf16 k16 step, unrolled; every fragment word is the lane's base (ALane/BLane, once per
        // stage) plus a constant, which ptxas folds into the LDS immediate
        if (bf16)
            Bf16Step128(As, Bs, ALane(r0, g, t, true), BLane(B2Stride, c0, g, t, true));
        else
        {
            long al = ALane(r0, g, t, false), bl = BLane(B2Stride, c0, g, t, false);
            Tf32Step128(As, Bs, al, bl, 0);
            Tf32Step128(As, Bs, al, bl, 8);
        }
    }

    /// <summary>Offset from <see cref="ALane"/> of A register i of the warp's m16 tile mi (0, 1) at k offset ks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int A128Off(int mi, int ks, int i, bool bf16) => AOff(16 * mi, ks, i, bf16);

    /// <summary>Offset from <see cref="BLane"/> (stride 72) of B register i of the warp's n8 tile j (0..3) at k offset ks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int B128Off(int j, int ks, int i, bool bf16) => BOff(B2Stride, 8 * j, ks, i, bf16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint A128(ArrayView<uint> As, long al, int mi, int ks, int i, bool bf16) => AFragAt(As, al, A128Off(mi, ks, i, bf16), bf16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint B128(ArrayView<uint> Bs, long bl, int j, int ks, int i, bool bf16) => BFragAt(Bs, B2Stride, bl, B128Off(j, ks, i, bf16), bf16);

    /// <summary>One TF32 k8 step of <see cref="WarpStage128"/> at k offset <paramref name="ks"/> (a constant at each call): the two
    /// A fragments read once, each n8 tile's B fragment read just before its two mma.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tf32Step128(ArrayView<uint> As, ArrayView<uint> Bs, long al, long bl, int ks)
    {
        uint a00 = A128(As, al, 0, ks, 0, false), a01 = A128(As, al, 0, ks, 1, false), a02 = A128(As, al, 0, ks, 2, false), a03 = A128(As, al, 0, ks, 3, false);
        uint a10 = A128(As, al, 1, ks, 0, false), a11 = A128(As, al, 1, ks, 1, false), a12 = A128(As, al, 1, ks, 2, false), a13 = A128(As, al, 1, ks, 3, false);
        uint b0 = B128(Bs, bl, 0, ks, 0, false), b1 = B128(Bs, bl, 0, ks, 1, false);
        CudaAsm.Emit(Tf32 + "{fvld0,fvld1,fvld2,fvld3}" + Ops + "{fvld0,fvld1,fvld2,fvld3};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Tf32 + "{fvld16,fvld17,fvld18,fvld19}" + Ops + "{fvld16,fvld17,fvld18,fvld19};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 1, ks, 0, false); b1 = B128(Bs, bl, 1, ks, 1, false);
        CudaAsm.Emit(Tf32 + "{fvld4,fvld5,fvld6,fvld7}" + Ops + "{fvld4,fvld5,fvld6,fvld7};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Tf32 + "{fvld20,fvld21,fvld22,fvld23}" + Ops + "{fvld20,fvld21,fvld22,fvld23};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 2, ks, 0, false); b1 = B128(Bs, bl, 2, ks, 1, false);
        CudaAsm.Emit(Tf32 + "{fvld8,fvld9,fvld10,fvld11}" + Ops + "{fvld8,fvld9,fvld10,fvld11};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Tf32 + "{fvld24,fvld25,fvld26,fvld27}" + Ops + "{fvld24,fvld25,fvld26,fvld27};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 3, ks, 0, false); b1 = B128(Bs, bl, 3, ks, 1, false);
        CudaAsm.Emit(Tf32 + "{fvld12,fvld13,fvld14,fvld15}" + Ops + "{fvld12,fvld13,fvld14,fvld15};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Tf32 + "{fvld28,fvld29,fvld30,fvld31}" + Ops + "{fvld28,fvld29,fvld30,fvld31};", a10, a11, a12, a13, b0, b1);
    }

    /// <summary>The bf16 k16 step of <see cref="WarpStage128"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Bf16Step128(ArrayView<uint> As, ArrayView<uint> Bs, long al, long bl)
    {
        uint a00 = A128(As, al, 0, 0, 0, true), a01 = A128(As, al, 0, 0, 1, true), a02 = A128(As, al, 0, 0, 2, true), a03 = A128(As, al, 0, 0, 3, true);
        uint a10 = A128(As, al, 1, 0, 0, true), a11 = A128(As, al, 1, 0, 1, true), a12 = A128(As, al, 1, 0, 2, true), a13 = A128(As, al, 1, 0, 3, true);
        uint b0 = B128(Bs, bl, 0, 0, 0, true), b1 = B128(Bs, bl, 0, 0, 1, true);
        CudaAsm.Emit(Bf16 + "{fvld0,fvld1,fvld2,fvld3}" + Ops + "{fvld0,fvld1,fvld2,fvld3};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Bf16 + "{fvld16,fvld17,fvld18,fvld19}" + Ops + "{fvld16,fvld17,fvld18,fvld19};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 1, 0, 0, true); b1 = B128(Bs, bl, 1, 0, 1, true);
        CudaAsm.Emit(Bf16 + "{fvld4,fvld5,fvld6,fvld7}" + Ops + "{fvld4,fvld5,fvld6,fvld7};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Bf16 + "{fvld20,fvld21,fvld22,fvld23}" + Ops + "{fvld20,fvld21,fvld22,fvld23};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 2, 0, 0, true); b1 = B128(Bs, bl, 2, 0, 1, true);
        CudaAsm.Emit(Bf16 + "{fvld8,fvld9,fvld10,fvld11}" + Ops + "{fvld8,fvld9,fvld10,fvld11};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Bf16 + "{fvld24,fvld25,fvld26,fvld27}" + Ops + "{fvld24,fvld25,fvld26,fvld27};", a10, a11, a12, a13, b0, b1);
        b0 = B128(Bs, bl, 3, 0, 0, true); b1 = B128(Bs, bl, 3, 0, 1, true);
        CudaAsm.Emit(Bf16 + "{fvld12,fvld13,fvld14,fvld15}" + Ops + "{fvld12,fvld13,fvld14,fvld15};", a00, a01, a02, a03, b0, b1);
        CudaAsm.Emit(Bf16 + "{fvld28,fvld29,fvld30,fvld31}" + Ops + "{fvld28,fvld29,fvld30,fvld31};", a10, a11, a12, a13, b0, b1);
    }

    /// <summary>Writes the lane's 32 accumulators into the C tile at <see cref="CIndex128"/> (CUDA only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SpillAccumulators128(ArrayView<float> Cs, int r0, int c0, int g, int t)
    {
        // CIndex128 is the lane's base plus a constant per register: one base address, 32 immediate offsets (ptxas had hoisted
        // the 32 addresses out of every loop and spilled them when each was formed separately)
        int b0 = CIndex128(r0, c0, g, t, 0, 0, 0);
        var v = Cs.SubView(b0, Cs.Length - b0);
        CudaAsm.Emit("mov.b32 %0, fvld0;", out v[CIndex128(0, 0, 0, 0, 0, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvld1;", out v[CIndex128(0, 0, 0, 0, 0, 0, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld2;", out v[CIndex128(0, 0, 0, 0, 0, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvld3;", out v[CIndex128(0, 0, 0, 0, 0, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld4;", out v[CIndex128(0, 0, 0, 0, 0, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvld5;", out v[CIndex128(0, 0, 0, 0, 0, 1, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld6;", out v[CIndex128(0, 0, 0, 0, 0, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvld7;", out v[CIndex128(0, 0, 0, 0, 0, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld8;", out v[CIndex128(0, 0, 0, 0, 0, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvld9;", out v[CIndex128(0, 0, 0, 0, 0, 2, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld10;", out v[CIndex128(0, 0, 0, 0, 0, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvld11;", out v[CIndex128(0, 0, 0, 0, 0, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld12;", out v[CIndex128(0, 0, 0, 0, 0, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvld13;", out v[CIndex128(0, 0, 0, 0, 0, 3, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld14;", out v[CIndex128(0, 0, 0, 0, 0, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvld15;", out v[CIndex128(0, 0, 0, 0, 0, 3, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld16;", out v[CIndex128(0, 0, 0, 0, 1, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvld17;", out v[CIndex128(0, 0, 0, 0, 1, 0, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld18;", out v[CIndex128(0, 0, 0, 0, 1, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvld19;", out v[CIndex128(0, 0, 0, 0, 1, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld20;", out v[CIndex128(0, 0, 0, 0, 1, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvld21;", out v[CIndex128(0, 0, 0, 0, 1, 1, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld22;", out v[CIndex128(0, 0, 0, 0, 1, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvld23;", out v[CIndex128(0, 0, 0, 0, 1, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld24;", out v[CIndex128(0, 0, 0, 0, 1, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvld25;", out v[CIndex128(0, 0, 0, 0, 1, 2, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld26;", out v[CIndex128(0, 0, 0, 0, 1, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvld27;", out v[CIndex128(0, 0, 0, 0, 1, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvld28;", out v[CIndex128(0, 0, 0, 0, 1, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvld29;", out v[CIndex128(0, 0, 0, 0, 1, 3, 1)]);
        CudaAsm.Emit("mov.b32 %0, fvld30;", out v[CIndex128(0, 0, 0, 0, 1, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvld31;", out v[CIndex128(0, 0, 0, 0, 1, 3, 3)]);
    }

    /// <summary>
    /// The portable path of the 128×64 tile: the 8 warps × 32 lanes × 32 registers of <see cref="WarpStage128"/>, emulated
    /// as <see cref="EmuStage"/> does for the 64×32 tile (register c_i of mma tile (mi, j) of lane (g, t) is the ISA layout's
    /// element (row g + 8·(i ≥ 2), column 2t + i%2), summed in k order from the A/B elements read back out of the fragments
    /// AFrag/BFrag build, stored where <see cref="CIndex128"/> puts it). Same per-element order of additions as EmuStage, so
    /// the two tiles agree bitwise.
    /// </summary>
    internal static void EmuStage128(ArrayView<uint> As, ArrayView<uint> Bs, ArrayView<float> Cs, bool bf16, int tid, int nt)
    {
        for (int e = tid; e < 8 * 32 * 32; e += nt)
        {
            int w = e >> 10, lane = (e >> 5) & 31, reg = e & 31, g = lane >> 2, t = lane & 3, mi = reg >> 4, j = (reg >> 2) & 3, i = reg & 3;
            int r0 = WarpRow(w), c0 = WarpCol(w);
            int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            int ci = CIndex128(r0, c0, g, t, mi, j, i);
            float sum = Cs[ci];
            for (int ks = 0; ks < BK; ks += bf16 ? 16 : 8)
                for (int k = 0; k < (bf16 ? 16 : 8); k++)
                    sum += AElement(As, r0 + 16 * mi, row, k, ks, bf16) * BElement(Bs, B2Stride, c0 + 8 * j, k, col, ks, bf16);
            Cs[ci] = sum;
        }
    }

    // Slot p (0..255) of a stage holds A operands p + 256q (q < 8) and B operands p + 256q (q < 4), numbered in the order
    // that makes neighbouring threads read neighbouring global addresses: A row-major (not transposed) e → (m e/16, k e%16),
    // transposed e → (m e%128, k e/128); B row-major e → (k e/64, n e%64), transposed e → (k e%16, n e/16). Written for
    // (p, q) so that q enters linearly: operand q of a slot is a fixed step (rows of the stored matrix) from operand 0.

    /// <summary>Stage row m of A operand q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SlotAm(int p, int q, bool ta) => ta ? p & (BM2 - 1) : (p >> 4) + 16 * q;

    /// <summary>Stage column k of A operand q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SlotAk(int p, int q, bool ta) => ta ? (p >> 7) + 2 * q : p & (BK - 1);

    /// <summary>Stage row k of B operand q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SlotBk(int p, int q, bool tb) => tb ? p & (BK - 1) : (p >> 6) + 4 * q;

    /// <summary>Stage column n of B operand q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SlotBn(int p, int q, bool tb) => tb ? (p >> 4) + 16 * q : p & (BN2 - 1);

    /// <summary>A operand q of slot p of the stage at (m0, k0), as stored; zero outside the matrix.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FetchA2(ArrayView<float> a, GemmShape s, long aOff, int m0, int k0, int p, int q, bool ta)
    {
        int m = m0 + SlotAm(p, q, ta), k = k0 + SlotAk(p, q, ta);
        // one address whatever the layout (select the stored row and column first: ptxas kept both candidate 64-bit
        // addresses of each operand live when the loads themselves were selected)
        int row = ta ? k : m, col = ta ? m : k;
        return m < s.M && k < s.K ? a[aOff + (long)row * s.Lda + col] : 0f;
    }

    /// <summary>Where A operand q of slot p goes in an A buffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PlaceA2(int p, int q, bool ta) => SlotAm(p, q, ta) * AStride + SlotAk(p, q, ta);

    /// <summary>B operand q of slot p of the stage at (k0, n0), as stored; zero outside the matrix.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FetchB2(ArrayView<float> b, GemmShape s, long bOff, int k0, int n0, int p, int q, bool tb)
    {
        int k = k0 + SlotBk(p, q, tb), n = n0 + SlotBn(p, q, tb);
        int row = tb ? n : k, col = tb ? k : n;
        return n < s.N && k < s.K ? b[bOff + (long)row * s.Ldb + col] : 0f;
    }

    /// <summary>Where B operand q of slot p goes in a B buffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PlaceB2(int p, int q, bool tb) => SlotBk(p, q, tb) * B2Stride + SlotBn(p, q, tb);

    /// <summary><paramref name="x"/>[<paramref name="i"/>] when <paramref name="inside"/>, else 0 (zero padding; i is not read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadIf(ArrayView<float> x, long i, bool inside) => inside ? x[i] : 0f;

    /// <summary>Stores a slot's 8 prefetched A operands (operand q at sa + q·saStep), rounded for the precision
    /// <paramref name="bf16"/> or, with <paramref name="round"/> false, as they are (both constants at each call).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreA2(ArrayView<uint> sh, int sa, int saStep, bool bf16, bool round,
        float a0, float a1, float a2, float a3, float a4, float a5, float a6, float a7)
    {
        sh[sa] = Stored(a0, bf16, round); sh[sa + saStep] = Stored(a1, bf16, round); sa += 2 * saStep;
        sh[sa] = Stored(a2, bf16, round); sh[sa + saStep] = Stored(a3, bf16, round); sa += 2 * saStep;
        sh[sa] = Stored(a4, bf16, round); sh[sa + saStep] = Stored(a5, bf16, round); sa += 2 * saStep;
        sh[sa] = Stored(a6, bf16, round); sh[sa + saStep] = Stored(a7, bf16, round);
    }

    /// <summary>Stores a slot's 4 prefetched B operands (operand q at sb + q·sbStep), as <see cref="StoreA2"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreB2(ArrayView<uint> sh, int sb, int sbStep, bool bf16, bool round, float b0, float b1, float b2, float b3)
    {
        sh[sb] = Stored(b0, bf16, round); sh[sb + sbStep] = Stored(b1, bf16, round); sb += 2 * sbStep;
        sh[sb] = Stored(b2, bf16, round); sh[sb + sbStep] = Stored(b3, bf16, round);
    }

    /// <summary>An operand's bits as stored: rounded for the precision, or as they are (already rounded by the caller).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Stored(float x, bool bf16, bool round) => round ? Rounded(x, bf16) : Interop.FloatAsInt(x);

    /// <summary>Stages the operands of slots <paramref name="slot0"/>, slot0 + <paramref name="step"/>, … (&lt; 256) of the
    /// stage at k0 into the buffers at <paramref name="aBuf"/> / <paramref name="bBuf"/>: slot p holds A operands p + 256q
    /// (q &lt; 8) and B operands p + 256q (q &lt; 4). Used for the first stage, and for the slots no thread prefetches when the
    /// group has fewer than 256 threads (the CPU accelerator).</summary>
    private static void StageSlots2(ArrayView<float> a, ArrayView<float> b, GemmShape s, long aOff, long bOff, int m0, int n0, int k0,
        ArrayView<uint> sh, int aBuf, int bBuf, int slot0, int step, bool ta, bool tb, bool bf16)
    {
        for (int p = slot0; p < GpuGroupSize2; p += step)
        {
            for (int q = 0; q < BM2 * BK / GpuGroupSize2; q++)
            {
                sh[aBuf + PlaceA2(p, q, ta)] = Rounded(FetchA2(a, s, aOff, m0, k0, p, q, ta), bf16);
            }
            for (int q = 0; q < BK * BN2 / GpuGroupSize2; q++)
            {
                sh[bBuf + PlaceB2(p, q, tb)] = Rounded(FetchB2(b, s, bOff, k0, n0, p, q, tb), bf16);
            }
        }
    }

    /// <summary>The 128×64 kernel (explicitly grouped; grid x = column tiles, y = row tiles, z = batches, each grid-strided).
    /// On CUDA the group must be 256 threads; elsewhere any size ≤ 256.</summary>
    internal static void Kernel128(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
    {
        var sh = SharedMemory.Allocate<uint>(Shared2Words);
        var Cs = sh.Cast<float>();   // the C tile after the k loop (CUDA path)
        // The portable path's emulated accumulators (C2Words floats): dynamic shared memory, requested only by non-CUDA
        // launches, so the 48 KB static budget on CUDA holds just the stage/C buffer (a static allocation used only in the
        // portable branches stayed in the PTX: 73,728 B).
        var Ce = SharedMemory.GetDynamic<float>();
        int tid = Group.IdxX, nt = Group.DimX;
        bool bf16 = (s.Flags & FlagBf16) != 0, ta = (s.Flags & FlagTransA) != 0, tb = (s.Flags & FlagTransB) != 0;
        bool rawA = (s.Flags & FlagRoundedA) != 0, rawB = (s.Flags & FlagRoundedB) != 0;
        int tilesM = (s.M + BM2 - 1) / BM2, tilesN = (s.N + BN2 - 1) / BN2, kTiles = (s.K + BK - 1) / BK;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3, r0 = WarpRow(warp), c0 = WarpCol(warp);
        if (CudaAsm.IsSupported) DeclareAccumulators128();
        for (int bt = Grid.IdxZ; bt < s.Batch; bt += Grid.DimZ)
        {
            long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
            for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
            for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
            {
                int m0 = tm * BM2, n0 = tn * BN2;
                if (CudaAsm.IsSupported) ZeroAccumulators128();
                if (kTiles > 0) StageSlots2(a, b, s, aOff, bOff, m0, n0, 0, sh, 0, B2Base, tid, nt, ta, tb, bf16);
                if (!CudaAsm.IsSupported)
                {
                    for (int e = tid; e < C2Words; e += nt) Ce[e] = 0f;
                }
                Group.Barrier();
                for (int kt = 0; kt < kTiles; kt++)
                {
                    int cur = kt & 1, aCur = cur * A2Words, bCur = B2Base + cur * B2Words;
                    int aNxt = A2Words - aCur, bNxt = 2 * B2Base + B2Words - bCur;
                    bool more = kt + 1 < kTiles;
                    int k1 = (kt + 1) * BK;
                    // the next stage's operands of this thread's slot, into registers before the mma of this stage
                    float pa0 = 0f, pa1 = 0f, pa2 = 0f, pa3 = 0f, pa4 = 0f, pa5 = 0f, pa6 = 0f, pa7 = 0f, pb0 = 0f, pb1 = 0f, pb2 = 0f, pb3 = 0f;
                    if (more)
                    {
                        // one address per operand, advanced by a fixed step (operand q + 1 lies 16 rows of A below operand q, or
                        // 2 rows when A is transposed; 4 or 16 rows of B), so nothing per operand is loop-invariant for ptxas to
                        // hoist into registers of its own
                        int am = m0 + SlotAm(tid, 0, ta), ak = k1 + SlotAk(tid, 0, ta), dm = ta ? 0 : 16, dk = ta ? 2 : 0;
                        long ga = aOff + (long)(ta ? ak : am) * s.Lda + (ta ? am : ak), gaStep = (long)(ta ? 2 : 16) * s.Lda;
                        if (m0 + BM2 <= s.M && k1 + BK <= s.K)
                        {
                            // the whole stage lies inside A: no bounds test per operand
                            pa0 = a[ga]; ga += gaStep; pa1 = a[ga]; ga += gaStep; pa2 = a[ga]; ga += gaStep; pa3 = a[ga]; ga += gaStep;
                            pa4 = a[ga]; ga += gaStep; pa5 = a[ga]; ga += gaStep; pa6 = a[ga]; ga += gaStep; pa7 = a[ga];
                        }
                        else
                        {
                            pa0 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa1 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa2 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa3 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa4 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa5 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa6 = LoadIf(a, ga, am < s.M && ak < s.K); ga += gaStep; am += dm; ak += dk;
                            pa7 = LoadIf(a, ga, am < s.M && ak < s.K);
                        }
                        int bk = k1 + SlotBk(tid, 0, tb), bn = n0 + SlotBn(tid, 0, tb), dbk = tb ? 0 : 4, dbn = tb ? 16 : 0;
                        long gb = bOff + (long)(tb ? bn : bk) * s.Ldb + (tb ? bk : bn), gbStep = (long)(tb ? 16 : 4) * s.Ldb;
                        if (n0 + BN2 <= s.N && k1 + BK <= s.K)
                        {
                            pb0 = b[gb]; gb += gbStep; pb1 = b[gb]; gb += gbStep; pb2 = b[gb]; gb += gbStep; pb3 = b[gb];
                        }
                        else
                        {
                            pb0 = LoadIf(b, gb, bn < s.N && bk < s.K); gb += gbStep; bk += dbk; bn += dbn;
                            pb1 = LoadIf(b, gb, bn < s.N && bk < s.K); gb += gbStep; bk += dbk; bn += dbn;
                            pb2 = LoadIf(b, gb, bn < s.N && bk < s.K); gb += gbStep; bk += dbk; bn += dbn;
                            pb3 = LoadIf(b, gb, bn < s.N && bk < s.K);
                        }
                    }
                    if (CudaAsm.IsSupported)
                        WarpStage128(sh.SubView(aCur, A2Words), sh.SubView(bCur, B2Words), r0, c0, g, t, bf16);
                    else
                        EmuStage128(sh.SubView(aCur, A2Words), sh.SubView(bCur, B2Words), Ce, bf16, tid, nt);
                    if (more)
                    {
                        // nobody reads the other buffers now: their last readers finished before the previous barrier
                        int sa = aNxt + PlaceA2(tid, 0, ta), saStep = PlaceA2(tid, 1, ta) - PlaceA2(tid, 0, ta);
                        int sb = bNxt + PlaceB2(tid, 0, tb), sbStep = PlaceB2(tid, 1, tb) - PlaceB2(tid, 0, tb);
                        // one branch on the precision per operand, then branch-free roundings (with the flag inside each
                        // Rounded, ptxas kept two branches per operand); an operand the caller rounded already is stored as it is
                        if (rawA) StoreA2(sh, sa, saStep, false, false, pa0, pa1, pa2, pa3, pa4, pa5, pa6, pa7);
                        else if (bf16) StoreA2(sh, sa, saStep, true, true, pa0, pa1, pa2, pa3, pa4, pa5, pa6, pa7);
                        else StoreA2(sh, sa, saStep, false, true, pa0, pa1, pa2, pa3, pa4, pa5, pa6, pa7);
                        if (rawB) StoreB2(sh, sb, sbStep, false, false, pb0, pb1, pb2, pb3);
                        else if (bf16) StoreB2(sh, sb, sbStep, true, true, pb0, pb1, pb2, pb3);
                        else StoreB2(sh, sb, sbStep, false, true, pb0, pb1, pb2, pb3);
                        StageSlots2(a, b, s, aOff, bOff, m0, n0, k1, sh, aNxt, bNxt, tid + nt, nt, ta, tb, bf16);
                    }
                    Group.Barrier();
                }
                if (CudaAsm.IsSupported)
                {
                    // the last barrier of the k loop (or of the previous tile) ends every read of the stage buffers
                    if (warp < 8) SpillAccumulators128(Cs, r0, c0, g, t);
                    Group.Barrier();
                    StoreBlock(c, bias, s, cOff, Cs, BM2 * BN2, BN2, C2Stride, m0, n0, tid, nt);
                }
                else
                {
                    StoreBlock(c, bias, s, cOff, Ce, BM2 * BN2, BN2, C2Stride, m0, n0, tid, nt);
                }
                Group.Barrier();   // the buffer is rewritten for the next tile only after every thread has read it
            }
        }
    }
}
