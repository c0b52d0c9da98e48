using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

// ---------------------------------------------------------------------------------------------------------------------
// The 128×128 tensor-core conv tile (issue 7; TF32 only; TensorCoreTile.Tile128x128): the GEMM's 128×128 warp layout
// (TensorCoreGemm.Tile128x128.cs: 8 warps of 64×32, 32 HMMA per 16-deep stage, 64 asm-named accumulators) on the conv's
// implicit GEMM, with the same coordinate tables, split-K chunks and output contract as ConvGemmTcKernel / ConvGemmTc128Kernel.
//
// - Stage buffers as the GEMM tile's with A not transposed and B k-outer: A[m·20 + k] (128 rows), B[k·136 + n] (16 rows),
//   two stages in 40 KB; the C tile leaves in two halves of 64 rows through them.
// - Slot p (0..255) of a stage holds A operands (m = p/16 + 16q, k = p%16), q < 8 (consecutive slots walk k, contiguous
//   in w and gy) and B operands (k = p/128 + 2q, n = p%128), q < 8 (consecutive slots walk the output positions). Every
//   operand is the load, zero padding and rounding of the other tiles, so each output sees the same mma instructions in
//   the same order: bitwise the same result.
// - The K-row tables run two stages ahead, one barrier per stage (the hazard argument above ConvGemmTcKernel holds as is).
// - One tile per group (no grid-stride loops, for registers); the launcher keeps grids past 65,535 row tiles or split
//   chunks on the 128×64 tile.
// ---------------------------------------------------------------------------------------------------------------------

/// <summary>The compile-time mode of <see cref="ConvKernels.ConvGemmTc3Kernel{TM, TP}"/>: any mode through the coordinate
/// tables, or the forward convolution's own staging (its A is the weight, a plain row-major M × K matrix).</summary>
internal interface IConvTc3Mode
{
    static abstract bool Forward { get; }
}

internal struct ConvTc3AnyMode : IConvTc3Mode { public static bool Forward => false; }
internal struct ConvTc3Forward : IConvTc3Mode { public static bool Forward => true; }

public static partial class ConvKernels
{
    /// <summary>The forward tile's operands of one slot of one stage: A as the GEMM tile's two float4 of k-contiguous weight
    /// (<see cref="TensorCoreGemm.Slot3R"/> / <see cref="TensorCoreGemm.Slot3K"/>), B as 8 consecutive K rows of one column.</summary>
    private struct TcSlotF
    {
        public F4 A0, A1;
        public float B0, B1, B2, B3, B4, B5, B6, B7;
    }

    /// <summary>Loads slot <paramref name="p"/>'s operands of the forward stage at <paramref name="k0"/> whose K-row table is at
    /// <paramref name="tab"/>: A (the weight, row m at m·AStride, element k at k) as two float4 — 128-bit loads when
    /// <paramref name="vecA"/> and the stage's 128 × 16 block lies inside [m &lt; M, k &lt; kEnd], else bounds-checked scalars
    /// (zeros outside, as the table path's kA &lt; 0 and m ≥ M give); B: column p mod 128, K rows 8·(p / 128) .. +7 (folded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TcSlotF FetchFwdSlot(ArrayView<float> a, ArrayView<F4> a4, ArrayView<float> b, ConvGemmShape s, int m0, int k0, int kEnd, int tab,
        int p, bool vecA, ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        var r = default(TcSlotF);
        bool fast = vecA && m0 + 128 <= s.M && k0 + TcBK <= kEnd;
        r.A0 = TensorCoreGemm.Fetch3(a, a4, 0, s.AStride, false, m0, k0, s.M, kEnd, p, 0, fast);
        r.A1 = TensorCoreGemm.Fetch3(a, a4, 0, s.AStride, false, m0, k0, s.M, kEnd, p, 1, fast);
        int kr = tab + 8 * (p >> 7);
        var col = cols[p & 127];
        r.B0 = FoldedB(b, s, col, rows[kr]); r.B1 = FoldedB(b, s, col, rows[kr + 1]);
        r.B2 = FoldedB(b, s, col, rows[kr + 2]); r.B3 = FoldedB(b, s, col, rows[kr + 3]);
        r.B4 = FoldedB(b, s, col, rows[kr + 4]); r.B5 = FoldedB(b, s, col, rows[kr + 5]);
        r.B6 = FoldedB(b, s, col, rows[kr + 6]); r.B7 = FoldedB(b, s, col, rows[kr + 7]);
        return r;
    }

    /// <summary>Stores a forward slot into the stage at word <paramref name="stage"/>: A k-contiguous at
    /// <see cref="TensorCoreGemm.Place3"/> (rounded unless <paramref name="roundA"/> is false: a pre-rounded weight), B
    /// k-contiguous too (B[n·20 + k], the GEMM tile's layout for a transposed B): two 128-bit stores per operand.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreFwdSlot(ArrayView<U4> sh4, int stage, TcSlotF r, int p, bool roundA)
    {
        sh4[(stage + TensorCoreGemm.Place3(false, p, 0)) >> 2] = TensorCoreGemm.Words3(r.A0, roundA);
        sh4[(stage + TensorCoreGemm.Place3(false, p, 1)) >> 2] = TensorCoreGemm.Words3(r.A1, roundA);
        int sb = (stage + TensorCoreGemm.Op3Words + FwdBWord(8 * (p >> 7), p & 127)) >> 2;
        U4 lo, hi;
        lo.X = TensorCoreGemm.Tf32Word(r.B0); lo.Y = TensorCoreGemm.Tf32Word(r.B1); lo.Z = TensorCoreGemm.Tf32Word(r.B2); lo.W = TensorCoreGemm.Tf32Word(r.B3);
        hi.X = TensorCoreGemm.Tf32Word(r.B4); hi.Y = TensorCoreGemm.Tf32Word(r.B5); hi.Z = TensorCoreGemm.Tf32Word(r.B6); hi.W = TensorCoreGemm.Tf32Word(r.B7);
        sh4[sb] = lo;
        sh4[sb + 1] = hi;
    }

    /// <summary>Word of B element (k, n) in the forward path's B buffer: k-contiguous, B[n·20 + k].</summary>
    internal static int FwdBWord(int k, int n) => n * TensorCoreGemm.KcStride + k;

    /// <summary>Where lane (g, t) of the warp at column <paramref name="wc"/> starts reading its B fragments: the GEMM tile's
    /// k-outer B (the table path's B[k·136 + n]) or its transposed, k-contiguous B (the forward path).</summary>
    internal static long Tc3LaneB(bool forward, int wc, int g, int t) => TensorCoreGemm.Lane3(!forward, wc, g, t);

    /// <summary>Stages forward slots slot0, slot0 + step, … (&lt; 256) directly (the first stage; the slots no thread prefetches
    /// on smaller groups).</summary>
    private static void StageFwdSlots(ArrayView<float> a, ArrayView<F4> a4, ArrayView<float> b, ConvGemmShape s, ArrayView<U4> sh4, int stage, int m0,
        int k0, int kEnd, int tab, int slot0, int step, bool vecA, bool roundA, ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        for (int p = slot0; p < TensorCoreGemm.GpuGroupSize2; p += step)
            StoreFwdSlot(sh4, stage, FetchFwdSlot(a, a4, b, s, m0, k0, kEnd, tab, p, vecA, cols, rows), p, roundA);
    }

    /// <summary>The 16 operands of one slot of one stage of the 128×128 tile, as loaded (rounded when stored).</summary>
    private struct TcSlot3
    {
        public float A0, A1, A2, A3, A4, A5, A6, A7, B0, B1, B2, B3, B4, B5, B6, B7;
    }

    /// <summary>Loads slot <paramref name="p"/>'s operands of the stage whose K-row table is at <paramref name="tab"/> (0 or 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TcSlot3 FetchTcSlot3(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, int m0, int tab, int p,
        ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        var r = default(TcSlot3);
        // A: one K row (one kA entry) per slot, rows m, m + 16, …: one address advanced by a fixed step
        int ka = rows[tab + (p & (TcBK - 1))].A, m = m0 + (p >> 4);
        int ga = ka + m * s.AStride, gaStep = 16 * s.AStride;
        bool kIn = ka >= 0;
        r.A0 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A1 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A2 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A3 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A4 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A5 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A6 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += 16;
        r.A7 = kIn && m < s.M ? a[ga] : 0f;
        // B: one column per slot, K rows kr, kr + 2, …
        int kr = tab + (p >> 7);
        var col = cols[p & 127];
        if (Folded(s))
        {
            r.B0 = FoldedB(b, s, col, rows[kr]); r.B1 = FoldedB(b, s, col, rows[kr + 2]);
            r.B2 = FoldedB(b, s, col, rows[kr + 4]); r.B3 = FoldedB(b, s, col, rows[kr + 6]);
            r.B4 = FoldedB(b, s, col, rows[kr + 8]); r.B5 = FoldedB(b, s, col, rows[kr + 10]);
            r.B6 = FoldedB(b, s, col, rows[kr + 12]); r.B7 = FoldedB(b, s, col, rows[kr + 14]);
            return r;
        }
        r.B0 = LoadB(b, s, col, rows[kr]); r.B1 = LoadB(b, s, col, rows[kr + 2]);
        r.B2 = LoadB(b, s, col, rows[kr + 4]); r.B3 = LoadB(b, s, col, rows[kr + 6]);
        r.B4 = LoadB(b, s, col, rows[kr + 8]); r.B5 = LoadB(b, s, col, rows[kr + 10]);
        r.B6 = LoadB(b, s, col, rows[kr + 12]); r.B7 = LoadB(b, s, col, rows[kr + 14]);
        return r;
    }

    /// <summary>Rounds slot <paramref name="p"/>'s operands (A only when <paramref name="roundA"/>: a pre-rounded weight keeps its
    /// bits) and stores them into the stage at word <paramref name="stage"/> (A at 0, B at <see cref="TensorCoreGemm.Op3Words"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTcSlot3(ArrayView<uint> sh, int stage, TcSlot3 r, int p, bool roundA)
    {
        int sa = stage + (p >> 4) * TensorCoreGemm.KcStride + (p & (TcBK - 1)), saStep = 16 * TensorCoreGemm.KcStride;
        if (roundA)
        {
            sh[sa] = TensorCoreGemm.Tf32Word(r.A0); sh[sa + saStep] = TensorCoreGemm.Tf32Word(r.A1); sh[sa + 2 * saStep] = TensorCoreGemm.Tf32Word(r.A2);
            sh[sa + 3 * saStep] = TensorCoreGemm.Tf32Word(r.A3); sh[sa + 4 * saStep] = TensorCoreGemm.Tf32Word(r.A4); sh[sa + 5 * saStep] = TensorCoreGemm.Tf32Word(r.A5);
            sh[sa + 6 * saStep] = TensorCoreGemm.Tf32Word(r.A6); sh[sa + 7 * saStep] = TensorCoreGemm.Tf32Word(r.A7);
        }
        else
        {
            sh[sa] = Interop.FloatAsInt(r.A0); sh[sa + saStep] = Interop.FloatAsInt(r.A1); sh[sa + 2 * saStep] = Interop.FloatAsInt(r.A2);
            sh[sa + 3 * saStep] = Interop.FloatAsInt(r.A3); sh[sa + 4 * saStep] = Interop.FloatAsInt(r.A4); sh[sa + 5 * saStep] = Interop.FloatAsInt(r.A5);
            sh[sa + 6 * saStep] = Interop.FloatAsInt(r.A6); sh[sa + 7 * saStep] = Interop.FloatAsInt(r.A7);
        }
        int sb = stage + TensorCoreGemm.Op3Words + (p >> 7) * TensorCoreGemm.KoStride + (p & 127), sbStep = 2 * TensorCoreGemm.KoStride;
        sh[sb] = TensorCoreGemm.Tf32Word(r.B0); sh[sb + sbStep] = TensorCoreGemm.Tf32Word(r.B1); sh[sb + 2 * sbStep] = TensorCoreGemm.Tf32Word(r.B2);
        sh[sb + 3 * sbStep] = TensorCoreGemm.Tf32Word(r.B3); sh[sb + 4 * sbStep] = TensorCoreGemm.Tf32Word(r.B4); sh[sb + 5 * sbStep] = TensorCoreGemm.Tf32Word(r.B5);
        sh[sb + 6 * sbStep] = TensorCoreGemm.Tf32Word(r.B6); sh[sb + 7 * sbStep] = TensorCoreGemm.Tf32Word(r.B7);
    }

    /// <summary>Stages slots slot0, slot0 + step, … (&lt; 256) of a stage directly: the first stage on the emulator, and the
    /// slots no thread prefetches when the group has fewer than 256 threads (the CPU accelerator).</summary>
    private static void StageTcSlots3(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, ArrayView<uint> sh, int stage, int m0, int tab,
        int slot0, int step, ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        for (int p = slot0; p < TensorCoreGemm.GpuGroupSize2; p += step)
            StoreTcSlot3(sh, stage, FetchTcSlot3(a, b, s, m0, tab, p, cols, rows), p, roundA: true);
    }

    /// <summary>Half <paramref name="h"/> of the C tile: on CUDA its 4 warps write their accumulators into the C half-tile
    /// (elsewhere the group copies that half of the emulated tile), then the group stores it through the column table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTcHalf3(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, ArrayView<float> Cs, ArrayView<float> Ce,
        ArrayView<ConvCol> cols, int m0, int h, int warp, int wc, int g, int t, int tid, int nt)
    {
        if (CudaAsm.IsSupported)
        {
            if ((warp >> 2) == h) TensorCoreGemm.SpillAccumulators3(Cs, wc, g, t);
        }
        else   // the portable path's half of the emulated tile, so the store below runs on the emulator as on CUDA
            for (int e = tid; e < 64 * 128; e += nt) Cs[(e >> 7) * TensorCoreGemm.C3Stride + (e & 127)] = Ce[(64 * h + (e >> 7)) * TensorCoreGemm.C3Stride + (e & 127)];
        Group.Barrier();
        StoreTcBlock(o, bias, s, zOff, Cs, cols, 64 * 128, 128, TensorCoreGemm.C3Stride, m0 + 64 * h, tid, nt);
        Group.Barrier();
    }

    /// <summary>
    /// The 128×128 tensor-core tile for all three modes (TF32 only): grid x = column tiles of 128, y = row tiles of 128,
    /// z = split-K chunks, one tile per group. <paramref name="flags"/> bit 1: A pre-rounded (stored as it is); bit 2 (forward
    /// only): A is 16-byte aligned with AStride and the K chunks multiples of 4 (128-bit weight loads). On CUDA the group is
    /// 256 threads; elsewhere any size ≤ 256 (the portable path emulates the warps' mma, as the other tiles do).
    /// <typeparamref name="TM"/> = <see cref="ConvTc3Forward"/> (forward convolutions only) stages the weight as the GEMM
    /// tile stages a row-major A (two float4 per thread and stage instead of 8 table-addressed scalars) and B as 8
    /// consecutive K rows of one column, stored k-contiguous (two 128-bit stores instead of 8 scalar ones); the mma read
    /// B through the GEMM tile's transposed-B fragments. Every output sees the same operands in the same mma order: the same
    /// bits as the table path.
    /// </summary>
    internal static void ConvGemmTc3Kernel<TM, TP>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int flags)
        where TM : struct, IConvTc3Mode
        where TP : struct, ITcPart
    {
        const int stageWords = TensorCoreGemm.Stage3Words, opWords = TensorCoreGemm.Op3Words;
        var sh4 = SharedMemory.Allocate<U4>(TensorCoreGemm.Shared3Words / 4);   // 16-byte aligned: the forward tile stores U4
        var sh = sh4.Cast<uint>();
        var a4 = a.Cast<F4>();
        var Cs = sh.Cast<float>();                    // a C half-tile after the k loop (CUDA path)
        var Ce = SharedMemory.GetDynamic<float>();    // the portable path's emulated accumulators (never requested on CUDA)
        var cols = SharedMemory.Allocate<ConvCol>(128);          // the tile's columns (folded), Out for the epilogue
        var rows = SharedMemory.Allocate<ConvRow>(2 * TcBK);     // K rows of stage j at (j & 1)·16 (folded)
        var digits = SharedMemory.Allocate<ConvDigits>(TcBK + 1);   // the digits of the rows the next refill computes; [16]: the step
        bool aRaw = (flags & 2) != 0, vecA = (flags & 4) != 0, fwd = TM.Forward;
        int tid = Group.IdxX, nt = Group.DimX;
        int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3, wr = 64 * (warp >> 2), wc = 32 * (warp & 3);
        // B k-outer (B[k·136 + n]) on the table path, k-contiguous (B[n·20 + k]) on the forward path
        long al = TensorCoreGemm.Lane3(false, wr, g, t), bl = Tc3LaneB(fwd, wc, g, t);
        if (CudaAsm.IsSupported) TensorCoreGemm.DeclareAccumulators3();
        int kz = Grid.IdxZ, m0 = Grid.IdxY * 128, n0 = Grid.IdxX * 128;
        int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
        int kTiles = (kEnd - kLo + TcBK - 1) / TcBK;
        if (CudaAsm.IsSupported) TensorCoreGemm.ZeroAccumulators3();
        else
            for (int e = tid; e < TensorCoreGemm.C3Words; e += nt) Ce[e] = 0f;
        for (int e = tid; e < 128; e += nt) cols[e] = FoldedColumnOf(s, n0 + e);
        for (int e = tid; e < 2 * TcBK; e += nt) rows[e] = FoldedRowOf(s, kLo + e, kEnd);   // stages 0 and 1
        // the digits of the rows each refill computes next (stage 2 first), advanced by one stage per refill: the refill
        // finds its rows by carries instead of divisions (each slot is read and written by the same thread only)
        if (tid == 0) digits[TcBK] = DigitsOf(s, TcBK);
        StartDigits(s, digits, TcBK, kLo + 2 * TcBK, tid, nt);
        Group.Barrier();
        if (kTiles > 0 && fwd)
            StageFwdSlots(a, a4, b, s, sh4, 0, m0, kLo, kEnd, 0, tid, nt, vecA, !aRaw, cols, rows);
        else if (kTiles > 0)
            StageTcSlots3(a, b, s, sh, 0, m0, 0, tid, nt, cols, rows);
        if (!TP.Copy)   // TcPart.NoGlobalLoads: stage 0 stays in its buffer, the other one holds zeros
            for (int e = tid; e < stageWords; e += nt) sh[stageWords + e] = 0u;
        Group.Barrier();
        for (int kt = 0; kt < kTiles; kt++)
        {
            int cur = (kt & 1) * stageWords, nxt = stageWords - cur, tabNxt = ((kt + 1) & 1) * TcBK;
            bool more = kt + 1 < kTiles;
            // the next stage's operands of this thread's slot, into registers before this stage's mma
            var pre = default(TcSlot3);
            var preF = default(TcSlotF);
            if (more && TP.Copy && fwd) preF = FetchFwdSlot(a, a4, b, s, m0, kLo + (kt + 1) * TcBK, kEnd, tabNxt, tid, vecA, cols, rows);
            else if (more && TP.Copy) pre = FetchTcSlot3(a, b, s, m0, tabNxt, tid, cols, rows);
            if (TP.Math && CudaAsm.IsSupported)
            {
                var As = sh.SubView(cur, opWords);
                var Bs = sh.SubView(cur + opWords, opWords);
                TensorCoreGemm.Tf32Step3(As, Bs, al, bl, false, fwd, 0);
                TensorCoreGemm.Tf32Step3(As, Bs, al, bl, false, fwd, 8);
            }
            else if (TP.Math)
                TensorCoreGemm.EmuStage3(sh.SubView(cur, opWords), sh.SubView(cur + opWords, opWords), Ce, false, fwd, tid, nt);
            if (more && TP.Copy && fwd)
            {
                // nobody reads the other buffers now: their last readers finished before the previous barrier
                if (aRaw) StoreFwdSlot(sh4, nxt, preF, tid, roundA: false);
                else StoreFwdSlot(sh4, nxt, preF, tid, roundA: true);
                if (!CudaAsm.IsSupported)
                    StageFwdSlots(a, a4, b, s, sh4, nxt, m0, kLo + (kt + 1) * TcBK, kEnd, tabNxt, tid + nt, nt, vecA, !aRaw, cols, rows);
            }
            else if (more && TP.Copy)
            {
                // nobody reads the other buffers now: their last readers finished before the previous barrier
                if (aRaw) StoreTcSlot3(sh, nxt, pre, tid, roundA: false);
                else StoreTcSlot3(sh, nxt, pre, tid, roundA: true);
                if (!CudaAsm.IsSupported)
                    StageTcSlots3(a, b, s, sh, nxt, m0, tabNxt, tid + nt, nt, cols, rows);
            }
            // stage kt + 2's K rows into the slot stage kt's rows held (the hazard argument above ConvGemmTcKernel)
            if (kt + 2 < kTiles)
                RefillRows(s, rows, (kt & 1) * TcBK, digits, TcBK, kEnd, tid, nt);   // rows kLo + (kt + 2)·16 + e
            Group.Barrier();
        }
        // the last barrier of the k loop (or the prologue's) ends every read of the stage buffers
        StoreTcHalf3(o, bias, s, zOff, Cs, Ce, cols, m0, 0, warp, wc, g, t, tid, nt);
        StoreTcHalf3(o, bias, s, zOff, Cs, Ce, cols, m0, 1, warp, wc, g, t, tid, nt);
    }
}
