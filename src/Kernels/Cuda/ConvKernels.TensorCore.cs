using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// The tensor-core implicit-GEMM convolution behind <see cref="MatMulPrecision"/> (issue 7; PyTorch's default has cuDNN
/// TF32 on for convolutions). Same three GEMMs (<see cref="ConvMode"/>), coordinate tables, split-K and output contract as
/// <see cref="ConvGemmKernel"/>; the tile and inner product are <see cref="TensorCoreGemm"/>'s: a group computes a 64×32
/// tile, K advances in steps of 16, each step stages A (64×16) and B (16×32) in shared memory as rounded operands (TF32 or
/// bfloat16, once per element as it is stored, zero outside), so the operands are exactly those the CPU backend's packed
/// GEMM rounds in its im2col path, and accumulation is float32. On CUDA (<see cref="CudaAsm.IsSupported"/>) 4 warps issue
/// <c>mma.sync</c> through <see cref="TensorCoreGemm.WarpStage"/> (m16n8k8 TF32 twice, or m16n8k16 bf16 once, per n8 tile
/// and step); elsewhere (ILGPU's CPU accelerator) <see cref="TensorCoreGemm.EmuStage"/> emulates those mma instructions
/// from the same fragments (float32 accumulation in the shared C tile), so CI checks the fragment mapping too.
/// <para>
/// Both tiles double-buffer their stages with register prefetch (as <see cref="TensorCoreGemm.Kernel128"/> does): the next
/// stage's 12 operands per thread are loaded into registers before the current stage's mma and rounded and stored into the
/// other buffer after it, one barrier per stage; the K-row tables run two stages ahead. The shared contents, and so the
/// mma instructions and their order, are those of the single-buffered version: the same bits
/// (tests/fixtures/convtc/digests.txt pins them).
/// </para>
/// <para>
/// Status: the portable path is what CI tests (emulator, against the CPU backend at the same precision); the kernel
/// compiles to PTX for sm_90 with both mma forms. The mma path has NOT run on a GPU: correctness and speed are owed.
/// </para>
/// </summary>
public static partial class ConvKernels
{
    private const int TcBM = TensorCoreGemm.BM, TcBN = TensorCoreGemm.BN, TcBK = TensorCoreGemm.BK;
    private const int TcAStride = TensorCoreGemm.AStride, TcBStride = TensorCoreGemm.BStride;

    /// <summary>Element e of a shared C block headed for <see cref="StoreTcBlock"/>: its value, bias and output index, loaded.</summary>
    private struct TcPending
    {
        public float V, B;
        public int O;
        public bool Live;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TcPending LoadTcPending(ArrayView<float> bias, ConvGemmShape s, int zOff, ArrayView<float> shared, ArrayView<ConvCol> cols,
        int e, int end, int width, int stride, int row0)
    {
        var p = default(TcPending);
        if (e >= end) return p;
        int r = e / width, c = e - r * width, m = row0 + r;
        int col = cols[c].Out;
        if (m >= s.M || col < 0) return p;
        p.Live = true;
        p.V = shared[r * stride + c];
        p.O = col + m * s.OutStride + zOff;
        if (s.HasBias != 0) p.B = bias[m];
        return p;
    }

    /// <summary>
    /// o[cols[c].Out + m·OutStride + zOff] ← v (+ bias[m]) over a shared C block (elements e &lt; <paramref name="end"/>: row
    /// m = <paramref name="row0"/> + e / width, column table entry c = e % width, shared word (e / width)·stride + c; rows
    /// past M and columns whose entry is negative skipped), four elements per thread at a time with their loads (shared
    /// value, column entry, bias) issued before the first store. Same values as one at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTcBlock(ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int zOff, ArrayView<float> shared,
        ArrayView<ConvCol> cols, int end, int width, int stride, int row0, int tid, int nt)
    {
        for (int e = tid; e < end; e += 4 * nt)
        {
            var p0 = LoadTcPending(bias, s, zOff, shared, cols, e, end, width, stride, row0);
            var p1 = LoadTcPending(bias, s, zOff, shared, cols, e + nt, end, width, stride, row0);
            var p2 = LoadTcPending(bias, s, zOff, shared, cols, e + 2 * nt, end, width, stride, row0);
            var p3 = LoadTcPending(bias, s, zOff, shared, cols, e + 3 * nt, end, width, stride, row0);
            if (p0.Live) o[p0.O] = p0.V + (s.HasBias != 0 ? p0.B : 0f);
            if (p1.Live) o[p1.O] = p1.V + (s.HasBias != 0 ? p1.B : 0f);
            if (p2.Live) o[p2.O] = p2.V + (s.HasBias != 0 ? p2.B : 0f);
            if (p3.Live) o[p3.O] = p3.V + (s.HasBias != 0 ? p3.B : 0f);
        }
    }

    // -----------------------------------------------------------------------------------------------------------------
    // Double-buffered stages with register prefetch (issue 7, convtcpf). Both tiles stage, per 16-deep K step, exactly
    // 8 A operands and 4 B operands per slot of a group of the CUDA size G (64×32: G = 128, A 64×16 = 8·128, B 16×32 =
    // 4·128; 128×64: G = 256, A 128×16 = 8·256, B 16×64 = 4·256). Slot p (0..G−1) holds
    //   A operands (m = p/16 + q·G/16, k = p%16), q < 8: consecutive slots walk k (contiguous in w and gy), and
    //   B operands (k = p/bn + q·G/bn, n = p%bn), q < 4: consecutive slots walk n, the output positions (bn = 32 or 64),
    // the element numbering of the former single-buffered staging loop (element i = p + G·q), so operand q of a slot is a fixed
    // step from operand 0 (G/16 rows of A, G/bn rows of the K-row table) and every operand is the same load, the same
    // zero padding and the same rounding as before: the same shared contents, the same mma instructions, the same bits.
    // On CUDA thread tid prefetches slot tid; on the emulator (groups of nt < G) slots nt.. are staged directly.
    // -----------------------------------------------------------------------------------------------------------------

    /// <summary>The 12 operands of one slot of one stage, as loaded (rounded when stored).</summary>
    private struct TcSlot
    {
        public float A0, A1, A2, A3, A4, A5, A6, A7, B0, B1, B2, B3;
    }

    /// <summary>
    /// Loads the operands of slot <paramref name="p"/> of the stage whose K-row table is at <paramref name="tab"/> (0 or 16):
    /// A through kA (zero when the K row is past the chunk or m ≥ M), B through the column and K-row tables (<see cref="LoadB"/>).
    /// <paramref name="group"/> = G of the tile, <paramref name="bnShift"/> = log2 of its width. Called with constants.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TcSlot FetchTcSlot(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, int m0, int tab, int p, int group, int bnShift,
        ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        var r = default(TcSlot);
        // A: one K row (one kA entry) per slot, rows m, m + G/16, …: one address advanced by a fixed step
        int ka = rows[tab + (p & (TcBK - 1))].A, m = m0 + (p >> 4), dm = group >> 4;
        int ga = ka + m * s.AStride, gaStep = dm * s.AStride;
        bool kIn = ka >= 0;
        r.A0 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A1 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A2 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A3 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A4 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A5 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A6 = kIn && m < s.M ? a[ga] : 0f; ga += gaStep; m += dm;
        r.A7 = kIn && m < s.M ? a[ga] : 0f;
        // B: one column (one column-table entry) per slot, K rows kk, kk + G/bn, …
        int nn = p & ((1 << bnShift) - 1), kr = tab + (p >> bnShift), dk = group >> bnShift;
        var col = cols[nn];   // one 16-byte shared load per table entry (packed ConvCol / ConvRow, as conv v3 and v4 read them)
        if (Folded(s))
        {
            // folded tables (FoldedB): two unsigned compares and one add per operand
            r.B0 = FoldedB(b, s, col, rows[kr]); kr += dk;
            r.B1 = FoldedB(b, s, col, rows[kr]); kr += dk;
            r.B2 = FoldedB(b, s, col, rows[kr]); kr += dk;
            r.B3 = FoldedB(b, s, col, rows[kr]);
            return r;
        }
        r.B0 = LoadB(b, s, col, rows[kr]); kr += dk;
        r.B1 = LoadB(b, s, col, rows[kr]); kr += dk;
        r.B2 = LoadB(b, s, col, rows[kr]); kr += dk;
        r.B3 = LoadB(b, s, col, rows[kr]);
        return r;
    }

    /// <summary>Rounds the operands of slot <paramref name="p"/> (once each) and stores them where the stage's A buffer
    /// (As[m·20 + k]) and B buffer (Bs[k·bStride + n]) keep them.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTcSlot(ArrayView<uint> As, ArrayView<uint> Bs, TcSlot r, int p, int group, int bnShift, int bStride, bool bf16, bool aRaw)
    {
        // one branch on the precision (and on A's rounding) per slot, then branch-free roundings (with the flag inside each
        // Rounded, ptxas kept two branches per operand). aRaw: A already holds rounded values (RoundOperands), stored as is,
        // which gives the same bits since rounding is idempotent
        if (aRaw)
        {
            if (bf16) StoreTcSlotAs(As, Bs, r, p, group, bnShift, bStride, true, false);
            else StoreTcSlotAs(As, Bs, r, p, group, bnShift, bStride, false, false);
        }
        else if (bf16) StoreTcSlotAs(As, Bs, r, p, group, bnShift, bStride, true, true);
        else StoreTcSlotAs(As, Bs, r, p, group, bnShift, bStride, false, true);
    }

    /// <summary><see cref="StoreTcSlot"/> for a precision and an A rounding known at the call (constants).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreTcSlotAs(ArrayView<uint> As, ArrayView<uint> Bs, TcSlot r, int p, int group, int bnShift, int bStride, bool bf16, bool roundA)
    {
        int sa = (p >> 4) * TcAStride + (p & (TcBK - 1)), saStep = (group >> 4) * TcAStride;
        As[sa] = TensorCoreGemm.Stored(r.A0, bf16, roundA); As[sa + saStep] = TensorCoreGemm.Stored(r.A1, bf16, roundA); sa += 2 * saStep;
        As[sa] = TensorCoreGemm.Stored(r.A2, bf16, roundA); As[sa + saStep] = TensorCoreGemm.Stored(r.A3, bf16, roundA); sa += 2 * saStep;
        As[sa] = TensorCoreGemm.Stored(r.A4, bf16, roundA); As[sa + saStep] = TensorCoreGemm.Stored(r.A5, bf16, roundA); sa += 2 * saStep;
        As[sa] = TensorCoreGemm.Stored(r.A6, bf16, roundA); As[sa + saStep] = TensorCoreGemm.Stored(r.A7, bf16, roundA);
        int sb = (p >> bnShift) * bStride + (p & ((1 << bnShift) - 1)), sbStep = (group >> bnShift) * bStride;
        Bs[sb] = TensorCoreGemm.Rounded(r.B0, bf16); Bs[sb + sbStep] = TensorCoreGemm.Rounded(r.B1, bf16); sb += 2 * sbStep;
        Bs[sb] = TensorCoreGemm.Rounded(r.B2, bf16); Bs[sb + sbStep] = TensorCoreGemm.Rounded(r.B3, bf16);
    }

    /// <summary>Stages slots <paramref name="slot0"/>, slot0 + <paramref name="step"/>, … (&lt; G) of the stage whose K-row table
    /// is at <paramref name="tab"/> directly into the buffers: the first stage of a tile, and the slots no thread prefetches
    /// when the group has fewer than G threads (the CPU accelerator). A is always rounded here (a pre-rounded A keeps its
    /// bits: rounding is idempotent), so only the prefetched slots take the raw-A stores.</summary>
    private static void StageTcSlots(ArrayView<float> a, ArrayView<float> b, ConvGemmShape s, ArrayView<uint> As, ArrayView<uint> Bs, int m0, int tab,
        int slot0, int step, int group, int bnShift, int bStride, bool bf16,
        ArrayView<ConvCol> cols, ArrayView<ConvRow> rows)
    {
        for (int p = slot0; p < group; p += step)
            StoreTcSlot(As, Bs, FetchTcSlot(a, b, s, m0, tab, p, group, bnShift, cols, rows), p, group, bnShift, bStride, bf16, aRaw: false);
    }

    // The K-row table (rows: 2 × 16 packed entries) hold stage j's rows at (j & 1)·16. Stage j is staged during stage
    // j − 1 (prefetch + leftover slots; stage 0 in the prologue), so its table must be written one stage earlier still:
    // during stage t the group writes stage t + 2's rows into slot (t & 1)·16. Hazards, with one barrier at the end of each
    // stage (and two in the prologue: tables 0 and 1 | stage 0 staged | loop):
    //   - write-after-read: slot (t & 1) last held stage t's rows, read only while staging stage t, i.e. in stage t − 1 (or
    //     the prologue before its second barrier): all those reads precede the barrier that ended stage t − 1. Nothing in
    //     stage t reads that slot (what stage t stages is stage t + 1's operands, through slot ((t + 1) & 1); the mma reads
    //     no table).
    //   - read-after-write: stage t + 2's rows are read in stage t + 1, after the barrier that ends stage t.
    // The operand buffers: stage t's mma reads buffer t & 1 while the prefetched stage t + 1 goes to the other one after
    // the mma; its last readers were stage t − 1's mma, before the previous barrier; stage t + 1's mma reads it after
    // this stage's barrier. So one barrier per stage covers tables and operands alike.

    /// <summary>
    /// The tensor-core kernel for all three modes (grid x = column tiles of 32, y = row tiles of 64, z = split-K chunks, each
    /// grid-strided). <paramref name="bf16"/> ≠ 0: operands rounded to bfloat16, else to TF32. Double-buffered stages with
    /// register prefetch (see the comment above): A 2×64×20 words, B 2×16×40 words, the C tile 64×32 (the portable path's
    /// accumulators, the CUDA path's epilogue): 24 KB of shared memory plus the tables.
    /// </summary>
    internal static void ConvGemmTcKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int flags)
    {
        const int group = TensorCoreGemm.GpuGroupSize, aWords = TcBM * TcAStride, bWords = TcBK * TcBStride;
        var As2 = SharedMemory.Allocate<uint>(2 * aWords);   // two A buffers, As[m·20 + k], rounded operand bits
        var Bs2 = SharedMemory.Allocate<uint>(2 * bWords);   // two B buffers, Bs[k·40 + n]
        var Cs = SharedMemory.Allocate<float>(TcBM * TcBN);       // the C tile: the epilogue's input; the portable path's accumulators
        var cols = SharedMemory.Allocate<ConvCol>(TcBN);       // the tile's columns (folded), Out for the epilogue
        var rows = SharedMemory.Allocate<ConvRow>(2 * TcBK);     // K rows of stage j at (j & 1)·16 (folded)
        bool isBf16 = (flags & 1) != 0, aRaw = (flags & 2) != 0;   // flags: bit 0 bf16 (else TF32), bit 1 A pre-rounded
        int tid = Group.IdxX, nt = Group.DimX;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3, r0 = warp * 16;
        if (CudaAsm.IsSupported) TensorCoreGemm.DeclareAccumulators();
        int tilesM = (s.M + TcBM - 1) / TcBM, tilesN = (s.N + TcBN - 1) / TcBN;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * TcBM, n0 = tn * TcBN;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + TcBK - 1) / TcBK;
            if (CudaAsm.IsSupported) TensorCoreGemm.ZeroAccumulators();
            else
                for (int e = tid; e < TcBM * TcBN; e += nt) Cs[e] = 0f;
            for (int e = tid; e < TcBN; e += nt) cols[e] = FoldedColumnOf(s, n0 + e);
            for (int e = tid; e < 2 * TcBK; e += nt) rows[e] = FoldedRowOf(s, kLo + e, kEnd);   // stages 0 and 1
            Group.Barrier();
            if (kTiles > 0)
                StageTcSlots(a, b, s, As2.SubView(0, aWords), Bs2.SubView(0, bWords), m0, 0, tid, nt, group, 5, TcBStride, isBf16, cols, rows);
            Group.Barrier();
            for (int kt = 0; kt < kTiles; kt++)
            {
                int cur = kt & 1, nxt = 1 - cur;
                bool more = kt + 1 < kTiles;
                var As = As2.SubView(cur * aWords, aWords);
                var Bs = Bs2.SubView(cur * bWords, bWords);
                // the next stage's operands of this thread's slot, into registers before this stage's mma
                var pre = default(TcSlot);
                if (more) pre = FetchTcSlot(a, b, s, m0, nxt * TcBK, tid, group, 5, cols, rows);
                if (CudaAsm.IsSupported)
                {
                    if (warp < TcBM / 16) TensorCoreGemm.WarpStage(As, Bs, r0, g, t, isBf16);
                }
                else
                    TensorCoreGemm.EmuStage(As, Bs, Cs, isBf16, tid, nt);
                if (more)
                {
                    var An = As2.SubView(nxt * aWords, aWords);
                    var Bn = Bs2.SubView(nxt * bWords, bWords);
                    StoreTcSlot(An, Bn, pre, tid, group, 5, TcBStride, isBf16, aRaw);
                    // the slots no thread prefetched: only groups smaller than G (the CPU accelerator); a CUDA launch is always G
                    // threads, and this branch folds away there (ptxas: less code, fewer registers)
                    if (!CudaAsm.IsSupported)
                        StageTcSlots(a, b, s, An, Bn, m0, nxt * TcBK, tid + nt, nt, group, 5, TcBStride, isBf16, cols, rows);
                }
                // stage kt + 2's K rows into the slot stage kt's rows held (see the hazard argument above)
                if (kt + 2 < kTiles)
                    for (int e = tid; e < TcBK; e += nt) rows[cur * TcBK + e] = FoldedRowOf(s, kLo + (kt + 2) * TcBK + e, kEnd);
                Group.Barrier();
            }
            if (CudaAsm.IsSupported)
            {
                if (warp < TcBM / 16) TensorCoreGemm.SpillAccumulators(Cs, r0, g, t);
                Group.Barrier();
            }
            StoreTcBlock(o, bias, s, zOff, Cs, cols, TcBM * TcBN, TcBN, TcBN, m0, tid, nt);
            Group.Barrier();   // the tables (and Cs) are rewritten for the next tile only after every thread has read them
        }
    }

    /// <summary>
    /// The 128×64 tensor-core tile for all three modes (<see cref="TensorCoreTile.Tile128x64"/>): grid x = column tiles of 64,
    /// y = row tiles of 128, z = split-K chunks. 8 warps, each a 32×32 sub-tile through <see cref="TensorCoreGemm.WarpStage128"/>
    /// (elsewhere <see cref="TensorCoreGemm.EmuStage128"/>), with the same coordinate tables and operand rounding as
    /// <see cref="ConvGemmTcKernel"/>, so every output sees the same mma instructions in the same order: bitwise the same
    /// result. Double-buffered stages with register prefetch, one barrier per stage, as the GEMM's
    /// <see cref="TensorCoreGemm.Kernel128"/> (the K-row tables run two stages ahead: see the hazard comment above). Shared
    /// memory: one 9,216-word buffer (k loop: A buffers 128×20 at 0 and 2,560, B buffers 16×72 at 5,120 and 6,272; after the
    /// last barrier of the k loop, the 128×72 C tile) plus 1.5 KB of tables; the portable path's accumulators are dynamic
    /// shared memory that only non-CUDA launches request.
    /// </summary>
    internal static void ConvGemmTc128Kernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> o, ArrayView<float> bias, ConvGemmShape s, int flags)
    {
        const int bm = TensorCoreGemm.BM2, bn = TensorCoreGemm.BN2, bStride = TensorCoreGemm.B2Stride, cStride = TensorCoreGemm.C2Stride;
        const int aWords = TensorCoreGemm.A2Words, bWords = TensorCoreGemm.B2Words, bBase = TensorCoreGemm.B2Base, group = TensorCoreGemm.GpuGroupSize2;
        var sh = SharedMemory.Allocate<uint>(TensorCoreGemm.Shared2Words);
        var Cs = sh.Cast<float>();                    // the C tile after the k loop (CUDA path)
        var Ce = SharedMemory.GetDynamic<float>();    // the portable path's emulated accumulators (never requested on CUDA)
        var cols = SharedMemory.Allocate<ConvCol>(bn);       // the tile's columns (folded), Out for the epilogue
        var rows = SharedMemory.Allocate<ConvRow>(2 * TcBK);     // K rows of stage j at (j & 1)·16 (folded)
        var digits = SharedMemory.Allocate<ConvDigits>(TcBK + 1);   // the rows the next refill computes ([16]: the step)
        bool isBf16 = (flags & 1) != 0, aRaw = (flags & 2) != 0;   // flags: bit 0 bf16 (else TF32), bit 1 A pre-rounded
        int tid = Group.IdxX, nt = Group.DimX;
        int warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
        int r0 = TensorCoreGemm.WarpRow(warp), c0 = TensorCoreGemm.WarpCol(warp);
        if (CudaAsm.IsSupported) TensorCoreGemm.DeclareAccumulators128();
        int tilesM = (s.M + bm - 1) / bm, tilesN = (s.N + bn - 1) / bn;
        for (int kz = Grid.IdxZ; kz < s.Splits; kz += Grid.DimZ)
        for (int tm = Grid.IdxY; tm < tilesM; tm += Grid.DimY)
        for (int tn = Grid.IdxX; tn < tilesN; tn += Grid.DimX)
        {
            int m0 = tm * bm, n0 = tn * bn;
            int kLo = kz * s.KChunk, kEnd = XMin(s.K, kLo + s.KChunk), zOff = kz * s.SplitStride;
            int kTiles = (kEnd - kLo + TcBK - 1) / TcBK;
            if (CudaAsm.IsSupported) TensorCoreGemm.ZeroAccumulators128();
            else
                for (int e = tid; e < TensorCoreGemm.C2Words; e += nt) Ce[e] = 0f;
            for (int e = tid; e < bn; e += nt) cols[e] = FoldedColumnOf(s, n0 + e);
            for (int e = tid; e < 2 * TcBK; e += nt) rows[e] = FoldedRowOf(s, kLo + e, kEnd);   // stages 0 and 1
            if (tid == 0) digits[TcBK] = DigitsOf(s, TcBK);
            StartDigits(s, digits, TcBK, kLo + 2 * TcBK, tid, nt);
            Group.Barrier();
            if (kTiles > 0)
                StageTcSlots(a, b, s, sh.SubView(0, aWords), sh.SubView(bBase, bWords), m0, 0, tid, nt, group, 6, bStride, isBf16, cols, rows);
            Group.Barrier();
            for (int kt = 0; kt < kTiles; kt++)
            {
                int cur = kt & 1, nxt = 1 - cur;
                bool more = kt + 1 < kTiles;
                // the next stage's operands of this thread's slot, into registers before this stage's mma
                var pre = default(TcSlot);
                if (more) pre = FetchTcSlot(a, b, s, m0, nxt * TcBK, tid, group, 6, cols, rows);
                if (CudaAsm.IsSupported)
                    TensorCoreGemm.WarpStage128(sh.SubView(cur * aWords, aWords), sh.SubView(bBase + cur * bWords, bWords), r0, c0, g, t, isBf16);
                else
                    TensorCoreGemm.EmuStage128(sh.SubView(cur * aWords, aWords), sh.SubView(bBase + cur * bWords, bWords), Ce, isBf16, tid, nt);
                if (more)
                {
                    var An = sh.SubView(nxt * aWords, aWords);
                    var Bn = sh.SubView(bBase + nxt * bWords, bWords);
                    StoreTcSlot(An, Bn, pre, tid, group, 6, bStride, isBf16, aRaw);
                    // the slots no thread prefetched: only groups smaller than G (the CPU accelerator); a CUDA launch is always G
                    // threads, and this branch folds away there (ptxas: less code, fewer registers)
                    if (!CudaAsm.IsSupported)
                        StageTcSlots(a, b, s, An, Bn, m0, nxt * TcBK, tid + nt, nt, group, 6, bStride, isBf16, cols, rows);
                }
                // stage kt + 2's K rows into the slot stage kt's rows held (see the hazard argument above)
                if (kt + 2 < kTiles)
                    RefillRows(s, rows, cur * TcBK, digits, TcBK, kEnd, tid, nt);
                Group.Barrier();
            }
            if (CudaAsm.IsSupported)
            {
                // the last barrier of the k loop (or the prologue's) ends every read of the stage buffers, which Cs overlaps
                TensorCoreGemm.SpillAccumulators128(Cs, r0, c0, g, t);
                Group.Barrier();
                StoreTcBlock(o, bias, s, zOff, Cs, cols, bm * bn, bn, cStride, m0, tid, nt);
            }
            else
                StoreTcBlock(o, bias, s, zOff, Ce, cols, bm * bn, bn, cStride, m0, tid, nt);
            Group.Barrier();   // the tables and the C tile are rewritten for the next tile only after every thread has read them
        }
    }

    /// <summary>Tensor-core conv launches per tile since the process started (index: the tile that ran), for tests and
    /// diagnostics.</summary>
    internal static readonly long[] ConvTileLaunches = new long[3];

    /// <summary>The tensor-core kernel method (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreKernelMethod => TensorCoreKernelMethodFor(TensorCoreTile.Tile64x32);

    /// <summary>The tensor-core kernel method of a tile (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreKernelMethodFor(TensorCoreTile tile) => tile switch
    {
        TensorCoreTile.Tile64x32 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>)ConvGemmTcKernel).Method,
        TensorCoreTile.Tile128x64 => ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>)ConvGemmTc128Kernel).Method,
        TensorCoreTile.Tile128x128 => Tc3KernelFor(false, TcPart.Full).Method,
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "tensor-core convolution: unknown tile"),
    };

    /// <summary>The 128×128 conv tile's kernel method for <paramref name="part"/> (offline PTX checks): the table path, or the
    /// forward convolutions' own (<see cref="ConvTc3Forward"/>).</summary>
    internal static System.Reflection.MethodInfo Tc3PartMethod(TcPart part, bool forward = false) => Tc3KernelFor(forward, part).Method;

    /// <summary>The kernel method the 128×128 tile runs for forward convolutions (for offline PTX compilation in tests and tools).</summary>
    public static System.Reflection.MethodInfo TensorCoreForwardKernelMethod { get; } = Tc3KernelFor(true, TcPart.Full).Method;

    /// <summary>The 128×128 conv tile's kernel for the mode (forward or any) running <paramref name="part"/> of its stage loop
    /// (<see cref="TcPart"/>).</summary>
    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int> Tc3KernelFor(bool forward, TcPart part)
        => forward ? Tc3KernelFor<ConvTc3Forward>(part) : Tc3KernelFor<ConvTc3AnyMode>(part);

    private static Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int> Tc3KernelFor<TM>(TcPart part)
        where TM : struct, IConvTc3Mode => part switch
    {
        TcPart.NoGlobalLoads => ConvGemmTc3Kernel<TM, TcNoCopy>,
        TcPart.NoMath => ConvGemmTc3Kernel<TM, TcNoMath>,
        _ => ConvGemmTc3Kernel<TM, TcFull>,
    };

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int> TcKernel(Accelerator acc, TensorCoreTile tile, bool forward)
    {
        var part = TensorCoreGemm.Part;
        var l = For(acc);
        var bounds = acc.AcceleratorType == AcceleratorType.Cuda ? TensorCoreGemm.CudaLaunchBounds(tile) : default;
        lock (l)
            return tile switch
            {
                TensorCoreTile.Tile128x64 => l.GemmTc128 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(ConvGemmTc128Kernel, bounds),
                TensorCoreTile.Tile128x128 => l.GemmTc3[2 * TensorCoreGemm.PartIndex(part) + (forward ? 1 : 0)] ??=
                    acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(Tc3KernelFor(forward, part), bounds),
                _ => l.GemmTc ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ConvGemmShape, int>(ConvGemmTcKernel),
            };
    }

    /// <summary>dst[i] = src[i] rounded as the tensor-core kernels round an operand (<see cref="TensorCoreGemm.Rounded"/>): each
    /// thread takes its grid-stride elements four at a time and loads all four before it stores any (one at a time kept one
    /// load in flight per thread, like the elementwise kernels did).</summary>
    internal static void RoundOperandsKernel(ArrayView<float> src, ArrayView<float> dst, int count, int bf16)
    {
        long step = (long)Grid.DimX * Group.DimX;
        bool b = bf16 != 0;
        for (long i = Grid.GlobalIndex.X; i < count; i += 4 * step)
        {
            long i1 = i + step, i2 = i1 + step, i3 = i2 + step;
            float x0 = src[i], x1 = i1 < count ? src[i1] : 0f, x2 = i2 < count ? src[i2] : 0f, x3 = i3 < count ? src[i3] : 0f;
            dst[i] = Interop.IntAsFloat(TensorCoreGemm.Rounded(x0, b));
            if (i1 < count) dst[i1] = Interop.IntAsFloat(TensorCoreGemm.Rounded(x1, b));
            if (i2 < count) dst[i2] = Interop.IntAsFloat(TensorCoreGemm.Rounded(x2, b));
            if (i3 < count) dst[i3] = Interop.IntAsFloat(TensorCoreGemm.Rounded(x3, b));
        }
    }

    /// <summary>
    /// dst ← src with every value rounded for <paramref name="precision"/> (Tf32 or Bf16) exactly as the tensor-core
    /// convolution rounds its operands. A weight rounded this way can be passed to <see cref="Conv2dForward"/> /
    /// <see cref="Conv2dBackwardInput"/> with <c>weightRounded: true</c>: the kernels then store it without rounding it again
    /// in every group and stage, and the results keep their bits (rounding twice is rounding once). src and dst may be the
    /// same view.
    /// </summary>
    public static void RoundOperands(Accelerator acc, AcceleratorStream? stream, ArrayView<float> src, ArrayView<float> dst, Precision precision)
    {
        ArgumentNullException.ThrowIfNull(acc);
        if (precision is not (Precision.Tf32 or Precision.Bf16))
            throw new ArgumentOutOfRangeException(nameof(precision), precision, "round operands (ilgpu): precision must be Tf32 or Bf16");
        if (dst.Length < src.Length)
            throw new ArgumentException($"round operands (ilgpu): destination has {dst.Length} elements, source {src.Length}");
        if (src.Length > int.MaxValue) throw new ArgumentException($"round operands (ilgpu): {src.Length} elements is over 2^31");
        if (src.Length == 0) return;
        var l = For(acc);
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> k;
        lock (l) k = l.RoundOps ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(RoundOperandsKernel);
        CudaRuntime.CountLaunch();
        // a quarter of the threads of a one-element-per-thread grid: each thread rounds four elements with its four loads in
        // flight together (with one element per thread, a multiprocessor's resident threads held one 4-byte load each)
        k(stream ?? acc.DefaultStream, Flat(acc, (src.Length + 3) / 4), src, dst, (int)src.Length, precision == Precision.Bf16 ? 1 : 0);
    }

    /// <summary>Forward convolutions launched on the 128×128 tile's forward path (tests: which path ran).</summary>
    internal static long Tc3ForwardLaunches;

    private static void LaunchTc(Accelerator acc, AcceleratorStream? stream, ArrayView<float> a, ArrayView<float> b, ArrayView<float> o,
        ArrayView<float> bias, ConvGemmShape s, Precision precision, TensorCoreTile tile, bool aRounded)
    {
        if (tile is not (TensorCoreTile.Tile64x32 or TensorCoreTile.Tile128x64 or TensorCoreTile.Tile128x128))
            throw new ArgumentOutOfRangeException(nameof(tile), tile, "conv2d (tensor cores): unknown tile");
        if (tile == TensorCoreTile.Tile128x128 && precision != Precision.Tf32)
            throw new ArgumentException($"conv2d (tensor cores): the 128×128 tile runs Tf32 only, not {precision}; use Tile128x64 or Tile64x32", nameof(tile));
        TensorCoreGemm.RequireTensorCores(acc, precision);
        // the 128×128 kernel runs one tile per group (no grid-stride loops): grids past 65,535 row tiles or split-K chunks
        // run the 128×64 tile (same bits)
        tile = TensorCoreGemm.Runnable(tile, s.M, s.Splits);
        var (tm, tn) = TensorCoreGemm.TileShape(tile);
        int tilesM = (s.M + tm - 1) / tm, tilesN = (s.N + tn - 1) / tn;
        var grid = new Index3D(tilesN, Math.Min(tilesM, 65535), Math.Min(s.Splits, 65535));
        var group = new Index3D(TensorCoreGemm.GroupSize(acc, tile), 1, 1);
        // the 128×64 / 128×128 tiles' portable path keeps its emulated accumulators in dynamic shared memory; CUDA requests none
        int dynamicWords = acc.AcceleratorType == AcceleratorType.Cuda ? 0
            : tile switch { TensorCoreTile.Tile128x64 => TensorCoreGemm.C2Words, TensorCoreTile.Tile128x128 => TensorCoreGemm.C3Words, _ => 0 };
        var cfg = dynamicWords > 0
            ? new KernelConfig(grid, group, SharedMemoryConfig.RequestDynamic<float>(dynamicWords))
            : new KernelConfig(grid, group);
        Interlocked.Increment(ref ConvTileLaunches[(int)tile]);
        // the 128×128 tile stages a forward convolution's weight as a row-major matrix (ConvTc3Forward), with 128-bit loads
        // when it is 16-byte aligned and its rows and K chunks are multiples of 4 floats
        bool forward = tile == TensorCoreTile.Tile128x128 && s.Mode == (int)ConvMode.Forward && Tc3ForwardPath;
        bool vecA = forward && GemmKernels.Aligned4(a, s.AStride, 0) && (s.Splits == 1 || s.KChunk % 4 == 0);
        if (forward) Interlocked.Increment(ref Tc3ForwardLaunches);
        var kernel = TcKernel(acc, tile, forward);
        CudaRuntime.CountLaunch();
        kernel(stream ?? acc.DefaultStream, cfg, a, b, o, bias.Length > 0 ? bias : o, s, (precision == Precision.Bf16 ? 1 : 0) | (aRounded ? 2 : 0) | (vecA ? 4 : 0));
    }
}
