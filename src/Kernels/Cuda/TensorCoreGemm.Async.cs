using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

// ---------------------------------------------------------------------------------------------------------------------
// The 128×128 TF32 tile with asynchronous copies (issue 7; FVL_TC_ASYNC=on, an A/B switch; session 21, not yet run on a
// GPU). The same 8 warps of 64×32, the same 32 mma per 16-deep stage in the same order (same bits as every other tile);
// what changes is how the operands reach shared memory.
//
// - The synchronous tile (TensorCoreGemm.Tile128x128.cs) prefetches one stage into registers before each stage's mma and
//   stores it after them, then waits at a barrier: every stage waits for the slowest of the group's 1,024 global loads
//   issued one stage earlier, and a 128×128 tile at ≈ 85 TFLOP/s (session 19, H200) spends ≈ 3× the stage loop's issue
//   time per stage. Here each thread issues its four 16-byte chunks of a stage with cp.async (global → shared, no
//   registers; sm_80+) two stages ahead, in three stage buffers: a load has two stage times to arrive instead of one.
// - Three stages of 128 × 16 A and B words are 12,288 words, exactly ILGPU's 48 KB cap on dynamic shared memory (ILGPU
//   never raises the limit with cuFuncSetAttribute), so the tiles are not padded: the bank spread of the fragment reads
//   comes from an XOR swizzle of the 16-byte chunks instead (Swz4). k-contiguous tiles (A not transposed, B transposed):
//   element (r, k) at 16r + 4·((k/4) ⊕ ((r/2) mod 4)) + k mod 4; k-outer tiles: 128k + 4·((r/4) ⊕ 2·(k mod 4)) + r mod 4.
//   A lane's fragment words are then one of four lane bases (LaneBase4) plus a constant per register and k step
//   (Imm4): 32 distinct banks for every fragment register (tested).
// - cp.async copies bits. TF32 rounding happens in shared memory: after its copies of a stage have landed
//   (cp.async.wait_group), each thread rounds its own chunks of any operand the caller did not round (16-byte shared load,
//   Tf32Word, 16-byte store), then the barrier publishes the stage. Chunks past the matrix are zero-filled by cp.async's
//   source size (0–16 bytes), as the synchronous tile's bounds-checked loads give zeros.
// - ILGPU gives a kernel no addresses: the shared base is its dynamic-shared symbol read in inline PTX (`mov.u32 %0,
//   __dyn_shared_alloca`; 0x400 on sm_90 with no static shared memory), the global ones come in as kernel arguments (the
//   operands' device addresses, read on the host).
// - Needs 16-byte aligned operands with leading dimensions and batch strides multiples of 4 (the 128-bit loads' rule,
//   FlagVecA and FlagVecB); other GEMMs run the synchronous tile. Off CUDA the copies are plain loads and stores into the
//   same swizzled words, and the emulated warps read the fragments through LaneBase4 + Imm4, as the CUDA path does.
// ---------------------------------------------------------------------------------------------------------------------

public static partial class TensorCoreGemm
{
    /// <summary>Words of one operand tile (128 rows × 16 k) of the asynchronous 128×128 tile: unpadded, swizzled.</summary>
    internal const int Op4Words = BM3 * BK;
    /// <summary>Words of one stage (A, then B).</summary>
    internal const int Stage4Words = 2 * Op4Words;
    /// <summary>Stage buffers in flight.</summary>
    internal const int Stages4 = 3;
    /// <summary>12,288 words = 48 KB: ILGPU's cap on a group's dynamic shared memory on CUDA.</summary>
    internal const int Shared4Words = Stages4 * Stage4Words;

    /// <summary>Word of element (r, k) (r &lt; 128, k &lt; 16) of a swizzled operand tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Swz4(bool kOuter, int r, int k) => kOuter
        ? 128 * k + 4 * ((r >> 2) ^ (2 * (k & 3))) + (r & 3)
        : 16 * r + 4 * ((k >> 2) ^ ((r >> 1) & 3)) + (k & 3);

    /// <summary>Lane base <paramref name="j"/> (0..3) of lane (g, t) for a warp whose rows of the tile start at
    /// <paramref name="r0"/> (a multiple of 32): the word of element (r0 + g + dr, t + dk) is base <see cref="Sel4"/>(dr, dk)
    /// plus <see cref="Imm4"/>(dr, dk) for every dr a multiple of 8 and dk a multiple of 4 below 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long LaneBase4(bool kOuter, int r0, int g, int t, int j) => kOuter
        ? 128L * t + 4 * ((r0 >> 2) + (g >> 2) + ((2 * j) ^ (2 * t))) + (g & 3)
        : 16L * (r0 + g) + t + 4 * (j ^ ((g >> 1) & 3));

    /// <summary>Which lane base the word at row offset dr, k offset dk uses (a constant at every CUDA call).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Sel4(bool kOuter, int dr, int dk) => kOuter ? (dr >> 3) & 3 : (dk >> 2) & 3;

    /// <summary>The constant offset from that base (an LDS immediate on CUDA).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Imm4(bool kOuter, int dr, int dk) => kOuter ? 128 * dk + 4 * ((dr >> 2) & ~6) : 16 * dr;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Pick4(int j, long b0, long b1, long b2, long b3) => j == 0 ? b0 : j == 1 ? b1 : j == 2 ? b2 : b3;

    /// <summary>Fragment word of row offset dr, k offset dk from the lane's four bases.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Frag4(bool kOuter, long b0, long b1, long b2, long b3, int dr, int dk)
        => Pick4(Sel4(kOuter, dr, dk), b0, b1, b2, b3) + Imm4(kOuter, dr, dk);

    /// <summary>One TF32 k8 step of a warp's 64×32 sub-tile on swizzled tiles (the synchronous tile's Tf32Step3 order:
    /// the four n8 B fragments, then per m16 tile its A fragment and four mma).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Tf32Step4(ArrayView<uint> sh, long aCur, long bCur, bool ta, bool tb,
        long a0b, long a1b, long a2b, long a3b, long b0b, long b1b, long b2b, long b3b, int ks)
    {
        bool ka = ta, kb = !tb;
        long bq = bCur;
        uint b00 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 0, ks)], b01 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 0, ks + 4)];
        uint b10 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 8, ks)], b11 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 8, ks + 4)];
        uint b20 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 16, ks)], b21 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 16, ks + 4)];
        uint b30 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 24, ks)], b31 = sh[bq + Frag4(kb, b0b, b1b, b2b, b3b, 24, ks + 4)];
        long aq = aCur;
        uint a0 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 0, ks)], a1 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 8, ks)];
        uint a2 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 0, ks + 4)], a3 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 8, ks + 4)];
        CudaAsm.Emit(M00, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M01, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M02, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M03, a0, a1, a2, a3, b30, b31);
        a0 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 16, ks)]; a1 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 24, ks)];
        a2 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 16, ks + 4)]; a3 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 24, ks + 4)];
        CudaAsm.Emit(M10, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M11, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M12, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M13, a0, a1, a2, a3, b30, b31);
        a0 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 32, ks)]; a1 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 40, ks)];
        a2 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 32, ks + 4)]; a3 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 40, ks + 4)];
        CudaAsm.Emit(M20, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M21, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M22, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M23, a0, a1, a2, a3, b30, b31);
        a0 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 48, ks)]; a1 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 56, ks)];
        a2 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 48, ks + 4)]; a3 = sh[aq + Frag4(ka, a0b, a1b, a2b, a3b, 56, ks + 4)];
        CudaAsm.Emit(M30, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M31, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M32, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M33, a0, a1, a2, a3, b30, b31);
    }

    /// <summary>Elements (0..4) of the 16-byte chunk whose first element is at (row r, k) of an operand with
    /// <paramref name="rows"/> rows and <paramref name="kMax"/> k that lie inside it (a chunk runs along k when k-contiguous,
    /// along the rows when k-outer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Valid4(bool kOuter, int r, int k, int rows, int kMax)
        => kOuter ? (k < kMax ? Math.Max(0, Math.Min(rows - r, 4)) : 0) : (r < rows ? Math.Max(0, Math.Min(kMax - k, 4)) : 0);

    /// <summary>One 16-byte chunk global → shared: cp.async with <paramref name="valid"/> elements read and the rest zero-filled
    /// on CUDA (the destination: the dynamic shared window's symbol plus 4·<paramref name="dstWord"/>; <paramref name="addr"/>:
    /// the operand's device address), plain loads and stores elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Chunk4(ArrayView<float> x, ArrayView<uint> sh, long addr, long gi, int dstWord, int valid)
    {
        if (CudaAsm.IsSupported)
        {
            long src = valid > 0 ? addr + 4 * gi : addr;   // a chunk wholly outside reads nothing: any valid address will do
            CudaAsm.Emit("{ .reg .u64 fvlg; .reg .u32 fvls; mov.u32 fvls, __dyn_shared_alloca; mad.lo.u32 fvls, %0, 4, fvls; " +
                "cvta.to.global.u64 fvlg, %1; cp.async.cg.shared.global [fvls], [fvlg], 16, %2; }", (uint)dstWord, src, (uint)(4 * valid));
        }
        else
        {
            for (int j = 0; j < 4; j++) sh[dstWord + j] = j < valid ? Interop.FloatAsInt(x[gi + j]) : 0u;
        }
    }

    /// <summary>A 16-byte chunk wholly inside the operand, global → shared: cp.async on CUDA, four loads and stores elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ChunkFull4(ArrayView<float> x, ArrayView<uint> sh, long addr, long gi, int dstWord)
    {
        if (CudaAsm.IsSupported)
            CudaAsm.Emit("{ .reg .u64 fvlg; .reg .u32 fvls; mov.u32 fvls, __dyn_shared_alloca; mad.lo.u32 fvls, %0, 4, fvls; " +
                "cvta.to.global.u64 fvlg, %1; cp.async.cg.shared.global [fvls], [fvlg], 16; }", (uint)dstWord, addr + 4 * gi);
        else
        {
            for (int j = 0; j < 4; j++) sh[dstWord + j] = Interop.FloatAsInt(x[gi + j]);
        }
    }

    /// <summary>This thread's four chunks of the stage at k0 into the stage buffer at word <paramref name="buf"/> (one slot per
    /// thread: 256-thread groups): plain 16-byte copies when the stage lies inside both operands, else each with its elements
    /// inside counted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void IssueSlot4(ArrayView<float> a, ArrayView<float> b, ArrayView<uint> sh, long aAddr, long bAddr, GemmShape s, bool ta, bool tb,
        bool inner, int m0, int n0, int k0, int buf, long gA0, long gA1, long gB0, long gB1, int dA0, int dA1, int dB0, int dB1,
        int rA0, int kA0, int rA1, int kA1, int rB0, int kB0, int rB1, int kB1)
    {
        if (inner && k0 + BK <= s.K)
        {
            ChunkFull4(a, sh, aAddr, gA0, buf + dA0); ChunkFull4(a, sh, aAddr, gA1, buf + dA1);
            ChunkFull4(b, sh, bAddr, gB0, buf + dB0); ChunkFull4(b, sh, bAddr, gB1, buf + dB1);
        }
        else
        {
            Chunk4(a, sh, aAddr, gA0, buf + dA0, Valid4(ta, m0 + rA0, k0 + kA0, s.M, s.K));
            Chunk4(a, sh, aAddr, gA1, buf + dA1, Valid4(ta, m0 + rA1, k0 + kA1, s.M, s.K));
            Chunk4(b, sh, bAddr, gB0, buf + dB0, Valid4(!tb, n0 + rB0, k0 + kB0, s.N, s.K));
            Chunk4(b, sh, bAddr, gB1, buf + dB1, Valid4(!tb, n0 + rB1, k0 + kB1, s.N, s.K));
        }
    }

    /// <summary>Chunk q (0, 1) of slot p of the operand tile at (r0, k0) into the operand buffer at word <paramref name="buf"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SlotChunk4(ArrayView<float> x, ArrayView<uint> sh, long addr, long off, int ld, bool kOuter,
        int r0, int k0, int rows, int kMax, int p, int q, int buf)
    {
        int r = Slot3R(kOuter, p, q), k = Slot3K(kOuter, p, q);
        long gi = off + (kOuter ? (long)(k0 + k) * ld + r0 + r : (long)(r0 + r) * ld + k0 + k);
        Chunk4(x, sh, addr, gi, buf + Swz4(kOuter, r, k), Valid4(kOuter, r0 + r, k0 + k, rows, kMax));
    }

    /// <summary>Rounds a 16-byte chunk of shared words to TF32 in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RoundChunk4(ArrayView<U4> sh4, int word)
    {
        U4 v = sh4[word >> 2];
        v.X = Tf32Word(Interop.IntAsFloat(v.X)); v.Y = Tf32Word(Interop.IntAsFloat(v.Y));
        v.Z = Tf32Word(Interop.IntAsFloat(v.Z)); v.W = Tf32Word(Interop.IntAsFloat(v.W));
        sh4[word >> 2] = v;
    }

    /// <summary>Issues (CUDA) or performs (elsewhere) the copies of stage <paramref name="k0"/> into the stage buffer at word
    /// <paramref name="buf"/>: slots tid, tid + nt, … (one slot per thread on CUDA).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void IssueStage4(ArrayView<float> a, ArrayView<float> b, ArrayView<uint> sh, long aAddr, long bAddr, GemmShape s,
        long aOff, long bOff, int m0, int n0, int k0, int buf, bool ta, bool tb, int tid, int nt)
    {
        for (int p = tid; p < GpuGroupSize2; p += nt)
        {
            SlotChunk4(a, sh, aAddr, aOff, s.Lda, ta, m0, k0, s.M, s.K, p, 0, buf);
            SlotChunk4(a, sh, aAddr, aOff, s.Lda, ta, m0, k0, s.M, s.K, p, 1, buf);
            SlotChunk4(b, sh, bAddr, bOff, s.Ldb, !tb, n0, k0, s.N, s.K, p, 0, buf + Op4Words);
            SlotChunk4(b, sh, bAddr, bOff, s.Ldb, !tb, n0, k0, s.N, s.K, p, 1, buf + Op4Words);
        }
    }

    /// <summary>Rounds this thread's chunks (the slots it copied) of the stage at word <paramref name="buf"/> for each operand
    /// the caller did not round.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RoundStage4(ArrayView<U4> sh4, int buf, bool ta, bool tb, bool roundA, bool roundB, int tid, int nt)
    {
        for (int p = tid; p < GpuGroupSize2; p += nt)
        {
            if (roundA)
            {
                RoundChunk4(sh4, buf + Swz4(ta, Slot3R(ta, p, 0), Slot3K(ta, p, 0)));
                RoundChunk4(sh4, buf + Swz4(ta, Slot3R(ta, p, 1), Slot3K(ta, p, 1)));
            }
            if (roundB)
            {
                RoundChunk4(sh4, buf + Op4Words + Swz4(!tb, Slot3R(!tb, p, 0), Slot3K(!tb, p, 0)));
                RoundChunk4(sh4, buf + Op4Words + Swz4(!tb, Slot3R(!tb, p, 1), Slot3K(!tb, p, 1)));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CommitGroup4()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("cp.async.commit_group;");
    }

    /// <summary>Waits until at most one of this thread's copy groups is still in flight (CUDA; elsewhere copies are done).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WaitGroups4Leave1()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("cp.async.wait_group 1;");
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WaitGroups4All()
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("cp.async.wait_group 0;");
    }

    /// <summary>
    /// The asynchronous 128×128 kernel for the layout <typeparamref name="TL"/> (TF32 only; both operands 16-byte aligned with
    /// leading dimensions and batch strides multiples of 4; one C tile per group, grid as the synchronous tile's).
    /// <paramref name="aAddr"/> / <paramref name="bAddr"/>: the device addresses of a[0] and b[0] (used on CUDA only). Dynamic
    /// shared memory: <see cref="Shared4Words"/> words on CUDA, plus <see cref="C3Words"/> for the emulated accumulators
    /// elsewhere. On CUDA the group must be 256 threads; elsewhere any size ≤ 256.
    /// </summary>
    internal static void Kernel128x128Async<TL, TP>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s,
        long aAddr, long bAddr)
        where TL : struct, ITcLayout
        where TP : struct, ITcPart
    {
        var dyn = SharedMemory.GetDynamic<float>();
        var sh = dyn.Cast<uint>();
        var sh4 = dyn.Cast<U4>();
        // the portable path's emulated accumulators after the stage buffers (empty on CUDA; a view chosen between two views
        // would make ILGPU address all of shared memory through generic pointers)
        var Ce = dyn.SubView(CudaAsm.IsSupported ? 0 : Shared4Words, CudaAsm.IsSupported ? 0 : C3Words);
        bool ta = TL.TransA, tb = TL.TransB;
        int tid = Group.IdxX, nt = Group.DimX;
        int f = s.Flags;
        bool roundA = (f & FlagRoundedA) == 0, roundB = (f & FlagRoundedB) == 0;
        int kTiles = (s.K + BK - 1) / BK;
        int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3, wr = 64 * (warp >> 2), wc = 32 * (warp & 3);
        if (CudaAsm.IsSupported) DeclareAccumulators3();
        int bt = Grid.IdxZ, m0 = Grid.IdxY * BM3, n0 = Grid.IdxX * BN3;
        long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
        if (CudaAsm.IsSupported) ZeroAccumulators3();
        else
        {
            for (int e = tid; e < C3Words; e += nt) Ce[e] = 0f;
        }
        // the lane's fragment bases (A: k-outer when transposed; B: k-outer when not transposed)
        long a0b = LaneBase4(ta, wr, g, t, 0), a1b = LaneBase4(ta, wr, g, t, 1), a2b = LaneBase4(ta, wr, g, t, 2), a3b = LaneBase4(ta, wr, g, t, 3);
        long b0b = LaneBase4(!tb, wc, g, t, 0), b1b = LaneBase4(!tb, wc, g, t, 1), b2b = LaneBase4(!tb, wc, g, t, 2), b3b = LaneBase4(!tb, wc, g, t, 3);
        if (!TP.Copy)
        {
            // TcPart.NoGlobalLoads: only stage 0 is copied; the other two buffers hold zeros
            for (int e = tid; e < Shared4Words; e += nt) sh[e] = 0u;
            Group.Barrier();
        }
        if (CudaAsm.IsSupported || nt == GpuGroupSize2)
        {
            // one slot per thread (256 threads: always on CUDA; the emulator's 256-thread groups run this path too, with
            // plain copies for cp.async and the emulated warps for the mma): its four chunks' shared words and element
            // indices, computed once; the indices advance one stage (16 k) per issue
            int rA0 = Slot3R(ta, tid, 0), kA0 = Slot3K(ta, tid, 0), rA1 = Slot3R(ta, tid, 1), kA1 = Slot3K(ta, tid, 1);
            int rB0 = Slot3R(!tb, tid, 0), kB0 = Slot3K(!tb, tid, 0), rB1 = Slot3R(!tb, tid, 1), kB1 = Slot3K(!tb, tid, 1);
            int dA0 = Swz4(ta, rA0, kA0), dA1 = Swz4(ta, rA1, kA1), dB0 = Op4Words + Swz4(!tb, rB0, kB0), dB1 = Op4Words + Swz4(!tb, rB1, kB1);
            long gA0 = aOff + (ta ? (long)kA0 * s.Lda + m0 + rA0 : (long)(m0 + rA0) * s.Lda + kA0);
            long gA1 = aOff + (ta ? (long)kA1 * s.Lda + m0 + rA1 : (long)(m0 + rA1) * s.Lda + kA1);
            long gB0 = bOff + (tb ? (long)(n0 + rB0) * s.Ldb + kB0 : (long)kB0 * s.Ldb + n0 + rB0);
            long gB1 = bOff + (tb ? (long)(n0 + rB1) * s.Ldb + kB1 : (long)kB1 * s.Ldb + n0 + rB1);
            long stepA = ta ? (long)BK * s.Lda : BK, stepB = tb ? BK : (long)BK * s.Ldb;
            bool inner = m0 + BM3 <= s.M && n0 + BN3 <= s.N;
            // two stages in flight before the first mma: one copy group per stage (empty when there is no such stage), so
            // that "all but the newest group done" always means "this stage's copies have landed"
            for (int j = 0; j < 2; j++)
            {
                if (j < kTiles && (TP.Copy || j == 0))
                {
                    IssueSlot4(a, b, sh, aAddr, bAddr, s, ta, tb, inner, m0, n0, j * BK, j * Stage4Words, gA0, gA1, gB0, gB1, dA0, dA1, dB0, dB1,
                        rA0, kA0, rA1, kA1, rB0, kB0, rB1, kB1);
                    gA0 += stepA; gA1 += stepA; gB0 += stepB; gB1 += stepB;
                }
                CommitGroup4();
            }
            int cur = 0, nxt = 2 * Stage4Words;
            for (int kt = 0; kt < kTiles; kt++)
            {
                WaitGroups4Leave1();
                if (roundA) { RoundChunk4(sh4, cur + dA0); RoundChunk4(sh4, cur + dA1); }
                if (roundB) { RoundChunk4(sh4, cur + dB0); RoundChunk4(sh4, cur + dB1); }
                // publishes stage kt; every warp is done with stage kt − 1, whose buffer the copies below refill
                Group.Barrier();
                if (kt + 2 < kTiles && TP.Copy)
                {
                    IssueSlot4(a, b, sh, aAddr, bAddr, s, ta, tb, inner, m0, n0, (kt + 2) * BK, nxt, gA0, gA1, gB0, gB1, dA0, dA1, dB0, dB1,
                        rA0, kA0, rA1, kA1, rB0, kB0, rB1, kB1);
                    gA0 += stepA; gA1 += stepA; gB0 += stepB; gB1 += stepB;
                }
                CommitGroup4();
                if (TP.Math && CudaAsm.IsSupported)
                {
                    Tf32Step4(sh, cur, cur + Op4Words, ta, tb, a0b, a1b, a2b, a3b, b0b, b1b, b2b, b3b, 0);
                    Tf32Step4(sh, cur, cur + Op4Words, ta, tb, a0b, a1b, a2b, a3b, b0b, b1b, b2b, b3b, 8);
                }
                else if (TP.Math)
                    EmuStage3(sh.SubView(cur, Op4Words), sh.SubView(cur + Op4Words, Op4Words), Ce, ta, tb, tid, nt, swizzled: true);
                cur = cur == 2 * Stage4Words ? 0 : cur + Stage4Words;
                nxt = nxt == 2 * Stage4Words ? 0 : nxt + Stage4Words;
            }
        }
        else
        {
            // smaller groups (the emulator): every slot by the group's threads in turn, copies done at once; the same words,
            // rounding and barriers
            if (kTiles > 0) IssueStage4(a, b, sh, aAddr, bAddr, s, aOff, bOff, m0, n0, 0, 0, ta, tb, tid, nt);
            if (kTiles > 1 && TP.Copy) IssueStage4(a, b, sh, aAddr, bAddr, s, aOff, bOff, m0, n0, BK, Stage4Words, ta, tb, tid, nt);
            int cur = 0, nxt = 2 * Stage4Words;
            for (int kt = 0; kt < kTiles; kt++)
            {
                if (roundA || roundB) RoundStage4(sh4, cur, ta, tb, roundA, roundB, tid, nt);
                Group.Barrier();
                if (kt + 2 < kTiles && TP.Copy) IssueStage4(a, b, sh, aAddr, bAddr, s, aOff, bOff, m0, n0, (kt + 2) * BK, nxt, ta, tb, tid, nt);
                if (TP.Math) EmuStage3(sh.SubView(cur, Op4Words), sh.SubView(cur + Op4Words, Op4Words), Ce, ta, tb, tid, nt, swizzled: true);
                cur = cur == 2 * Stage4Words ? 0 : cur + Stage4Words;
                nxt = nxt == 2 * Stage4Words ? 0 : nxt + Stage4Words;
            }
        }
        WaitGroups4All();
        Group.Barrier();   // every warp's last mma has read its stage: the C half-tiles reuse the stage buffers
        StoreHalf3(c, bias, s, cOff, dyn, Ce, m0, n0, 0, warp, wc, g, t, tid, nt);
        StoreHalf3(c, bias, s, cOff, dyn, Ce, m0, n0, 1, warp, wc, g, t, tid, nt);
    }
}
