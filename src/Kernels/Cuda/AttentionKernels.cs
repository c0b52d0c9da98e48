using System.Runtime.CompilerServices;
using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>Where element [b,h,l,s] of an additive attention mask lives: Offset + b·B + h·H + l·L + s·S (zero strides broadcast).</summary>
public readonly record struct AttentionMaskLayout(long Offset, long B, long H, long L, long S)
{
    /// <summary>The layout of a mask tensor already broadcast (expanded) to [B,H,L,S].</summary>
    public static AttentionMaskLayout Of(Tensor mask)
    {
        if (mask.Rank != 4) throw new ArgumentException($"attention (cuda): mask {mask.ShapeString} must be rank 4 [B,H,L,S]");
        var st = mask.Strides;
        return new AttentionMaskLayout(mask.Offset, st[0], st[1], st[2], st[3]);
    }
}

/// <summary>
/// Where row r of head (b, h) of a [B,H,R,D] attention operand starts: Offset + b·B + h·H + r·R elements into its view; the
/// row's D elements follow with unit stride. <see cref="Dense"/> is the contiguous [B,H,R,D] layout; the heads of a
/// contiguous [B,R,H,D] tensor (a [B,R,H·D] projection split into heads, viewed as [B,H,R,D] without a copy) are
/// <c>(0, R·H·D, D, H·D)</c>. Strides are non-negative; distinct (b, h, r) rows of an output must not overlap.
/// </summary>
public struct AttentionHeadsLayout
{
    public long Offset, B, H, R;

    public AttentionHeadsLayout(long offset, long b, long h, long r) { Offset = offset; B = b; H = h; R = r; }

    /// <summary>Contiguous [B,H,R,D].</summary>
    public static AttentionHeadsLayout Dense(int heads, int rows, int d) => new(0, (long)heads * rows * d, (long)rows * d, d);

    /// <summary>The layout of a rank-4 tensor [B,H,R,D] with unit stride on D, relative to its first element (size-1 dims get stride 0).</summary>
    public static AttentionHeadsLayout Of(Tensor t)
    {
        if (t.Rank != 4) throw new ArgumentException($"attention (cuda): operand {t.ShapeString} must be rank 4 [B,H,R,D]");
        long S(int i) => t.Sizes[i] <= 1 ? 0 : t.Strides[i];
        return new AttentionHeadsLayout(0, S(0), S(1), S(2));
    }

    public override readonly string ToString() => $"(offset {Offset}, strides B {B}, H {H}, R {R})";
}

/// <summary>The per-operand layouts of one attention launch (<see cref="AttentionHeadsLayout.Dense"/> each when contiguous).</summary>
public struct AttentionLayouts
{
    public AttentionHeadsLayout Q, K, V, O, GO, GQ, GK, GV;

    /// <summary>Every operand contiguous: q, o, go, gq [B,H,L,D]; k, v, gk, gv [B,H,S,D].</summary>
    public static AttentionLayouts Dense(int h, int l, int s, int d)
    {
        var lq = AttentionHeadsLayout.Dense(h, l, d);
        var lk = AttentionHeadsLayout.Dense(h, s, d);
        return new AttentionLayouts { Q = lq, K = lk, V = lk, O = lq, GO = lq, GQ = lq, GK = lk, GV = lk };
    }
}

/// <summary>The scalar arguments of the attention kernels.</summary>
public struct AttentionParams
{
    public int B, H, L, S, D, Flags;
    public float Scale, Drop;   // Drop: the factor kept probabilities get, (float)(1/(1−p)); 0 when p = 1
    public uint Thr;            // keep iff (Philox word >> 8) ≥ Thr
    public ulong Seed, Offset;
    public long MaskOff, MaskSB, MaskSH, MaskSL, MaskSS;
    public AttentionLayouts X;   // where the rows of q, k, v, o, go, gq, gk, gv live
}

/// <summary>
/// Fused attention on ILGPU (float32), the semantics of <c>CpuBackend.AttentionForward/Backward</c>:
/// o = dropout(softmax(scale·q·kᵀ + mask))·v with the softmax (before dropout) written to probs [B,H,L,S]; dropout keeps
/// element i (flat index in [B,H,L,S]) iff <c>Philox.Uniform(seed, offset, i) ≥ p</c>, computed in the kernels from
/// <see cref="Philox.Block"/>, one block per four consecutive elements (a thread applies all four words; only the S &gt; SCap
/// staging draws per element). The forward can skip the probabilities (output only) or the dropout and P·V (probabilities
/// only, the backward's recompute): see <see cref="Forward"/>.
/// q, o, gq, go are [B,H,L,D], k, v, gk, gv [B,H,S,D], each with its own offset and B/H/row strides and unit stride on D
/// (<see cref="AttentionHeadsLayout"/>: e.g. the heads of a [B,L,H·D] projection viewed as [B,H,L,D] without a copy, and
/// outputs written straight into a [B,L,H·D] buffer); probs [B,H,L,S] contiguous; the mask any strides
/// (<see cref="AttentionMaskLayout"/>). The layouts change addresses only, never the arithmetic or the dropout index (flat in
/// [B,H,L,S]): results are bitwise those of contiguous operands.
/// <para>
/// Forward: one group per (b·h, tile of <see cref="QT"/> query rows). The Q tile sits in shared memory, K then V stream
/// through in tiles of <see cref="KT"/> rows (padded rows, <see cref="PaddedStride"/>: conflict-free reads), the scores of the tile's rows are
/// kept in shared memory when S ≤ <see cref="SCap"/> (else in probs, which is global scratch until the softmax overwrites it),
/// one warp per row does the softmax with shuffles, and the O accumulators reuse the Q tile's shared memory.
/// Backward: kernel 1 (per query tile) computes gS = P∘(gP − rowsum(P∘gP))·scale with gP = keep·drop·(gO·vᵀ), writes gS to a
/// workspace [B,H,L,S] and gq = gS·k; kernel 2 (per b·h and tile of <see cref="KT2"/> keys) sums gk = gSᵀ·q and
/// gv = (P·keep·drop)ᵀ·gO over all query rows: deterministic, no atomics. D ≤ <see cref="DMax"/>; any L, S ≥ 0.
/// </para>
/// <para>
/// Inner loops (issue 7, attnblk): when D % 4 = 0 every operand is read from shared memory as float4 (128-bit loads) and
/// register-blocked: scores 4 query rows × 1 key × 4 e per step (16 FMAs per 5 loads, unrolled by four float4 by hand),
/// P·V and gS·K 4 rows × 4 columns × 4 keys (64 FMAs per 8 loads), kernel 2 4 keys × 4 columns of both products (32 FMAs
/// per 4 loads, unrolled by two rows). Shared row strides are compile-time constants and the loop indices 64-bit, so ptxas
/// folds the unrolled loads' offsets into immediates. D % 4 ≠ 0 keeps the scalar loops. Every output is still one sum
/// formed in the same order from zero (e ascending for a score; j, then l, ascending within a tile, the tile's sum then
/// added to the accumulator), so results are bitwise those of the scalar loops, on every path and group size.
/// </para>
/// <para>
/// Loads in flight (issue 7, session 20): rows move between global and shared memory four items per thread at a time, all
/// four read before any is written (<see cref="MoveRows"/>; float4 items where <see cref="Vec"/> allows), kernel 2 loads a
/// query tile's q, gO, P and gS in one round, kernel 1's row passes four elements per lane, and the scores load their mask
/// values before the dot products: a load issued after a store waits for that store's operand, so one-at-a-time loops held
/// one load per thread in flight. Values and order are unchanged, so are the bits.
/// </para>
/// <para>
/// Tile sizes are constants, the group size a launch parameter (a multiple of the warp size: 128 on a GPU, 2 on the CPU
/// accelerator), reductions use <see cref="Warp.WarpSize"/>. Shared memory: 41 728 bytes per group (forward and kernel 1),
/// 34 816 (kernel 2), under the 48 KiB ILGPU can launch. Kernels never throw; the launchers validate every size first.
/// </para>
/// </summary>
internal static class AttentionKernels
{
    /// <summary>Query rows per group (forward, backward kernel 1).</summary>
    public const int QT = 16;
    /// <summary>K/V rows per shared tile.</summary>
    public const int KT = 32;
    /// <summary>Longest key sequence whose scores stay in shared memory (longer ones go through global memory).</summary>
    public const int SCap = 256;
    /// <summary>Largest head dimension.</summary>
    public const int DMax = 128;
    /// <summary>Keys per group in backward kernel 2.</summary>
    public const int KT2 = 16;
    /// <summary>Query rows per shared tile in backward kernel 2.</summary>
    public const int LT = 16;
    /// <summary>Rows (keys) blocked per thread.</summary>
    private const int RB = 4;

    /// <summary>Threads per group on a GPU (the kernels take any multiple of the warp size).</summary>
    public const int GpuGroupSize = 128;

    /// <summary>Flags: an additive mask; dropout on; forward without the probabilities (shared-S mode only: with S &gt;
    /// <see cref="SCap"/> probs is the scores' scratch and is written anyway); forward without the output (probabilities only).</summary>
    internal const int FlagMask = 1, FlagDropout = 2, FlagNoProbs = 4, FlagNoOutput = 8;

    /// <summary>Flags: operand rows readable/writable as float4 (D % 4 = 0, a 16-byte aligned view, offset and strides
    /// multiples of 4 elements; <see cref="VecFlags"/>). Only how the rows move changes, never a value.</summary>
    internal const int FlagVecQ = 16, FlagVecK = 32, FlagVecV = 64, FlagVecGO = 128, FlagVecO = 256, FlagVecGQ = 512,
        FlagVecGK = 1024, FlagVecGV = 2048;

    // ================================================================== device helpers

    private static float WarpSum(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) v += Warp.ShuffleXor(v, o);
        return v;
    }

    private static float WarpMax(float v)
    {
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) { float u = Warp.ShuffleXor(v, o); v = u > v ? u : v; }
        return v;
    }

    /// <summary>keep·drop for flat element i of [B,H,L,S] (Drop when dropout is off).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Factor(AttentionParams a, long i)
    {
        if ((a.Flags & FlagDropout) == 0) return a.Drop;
        return (Philox.Word(a.Seed, a.Offset, i) >> 8) >= a.Thr ? a.Drop : 0f;
    }

    /// <summary>Row r of head (b, h) of an operand laid out by <paramref name="x"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Row(AttentionHeadsLayout x, int b, int h, int r) => x.Offset + b * x.B + h * x.H + r * x.R;

    // The tile loops below walk flat i = j·D + e over n rows of D with step g (the group size) and keep (j, e) by addition
    // (g = gq·D + gr): one division per call instead of one per element.

    /// <summary>
    /// dst[base + j·rowStride + e] ← rows[j·ld + e] for j &lt; n, e &lt; d (a shared row tile back to global memory): a thread
    /// reads up to four of its elements before it writes any (<see cref="MoveRows"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRows(ArrayView<float> dst, long baseOff, long rowStride, ArrayView<float> rows, int n, int d, int ld, bool vec)
        => MoveRows(dst, baseOff, rowStride, rows, n, d, ld, vec, toShared: false);

    /// <summary>
    /// Row stride (floats) of the padded K/V tile. D % 4 ≠ 0 (the scalar path): D + 1, odd, so scalar column reads (8 or
    /// 32 keys j of a warp reading word j·ld + e) hit distinct banks. D % 4 = 0 (the float4 path): <see cref="DMax"/> + 4 =
    /// 132 for every D, a compile-time constant (so the unrolled loads take immediate offsets). A warp's 128-bit K load in
    /// the scores reads 8 consecutive keys j (<see cref="Scores"/>), word t[j·ld + e..e+3] in the 4-bank group
    /// (j·ld/4 + e/4) mod 8 = (33·j + e/4) mod 8 = (j + e/4) mod 8: 8 distinct groups, 128 bytes, one conflict-free pass
    /// (any odd ld/4 would do; D + 4 would not for D = 4 mod 8). The row reads of P·V (lanes along e) are contiguous.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PaddedStride(int d) => (d & 3) != 0 ? d + 1 : DMax + 4;

    /// <summary>Row stride, in float4, of the padded K/V tile on the float4 path.</summary>
    private const int T4 = (DMax + 4) / 4;

    /// <summary>Row stride, in float4, of kernel 2's shared row tiles (the q and gO tiles, the gk/gv accumulators):
    /// <see cref="DMax"/> floats for every D, a compile-time constant. Their reads are broadcasts or contiguous along e.</summary>
    private const int R4 = DMax / 4;

    /// <summary>
    /// Row stride (floats) of the forward's and kernel 1's Q/gO tile and its accumulators: <see cref="DMax"/> + 4 for every D
    /// (constant, so the unrolled loads take immediate offsets). The scores read it with a warp on 4 consecutive rows × 8
    /// keys (see <see cref="Scores"/>): a 128-bit load of the four rows r..r+3 covers the 4-bank groups (33·r + e/4) mod 8,
    /// four distinct ones, so it is one conflict-free pass; with DMax floats (32 float4, even) all four would share a group.
    /// </summary>
    private const int QLd = DMax + 4, Q4 = QLd / 4;

    /// <summary>Floats of the padded K/V tile: KT rows of at most <see cref="PaddedStride"/>(DMax) = DMax + 4.</summary>
    private const int KvFloats = KT * (DMax + 4);

    /// <summary>
    /// dst[j·ld + e] ← src[base + j·rowStride + e] for j &lt; n, e &lt; d (ld ≥ d: <see cref="PaddedStride"/>(d) for the K/V
    /// tile, <see cref="QLd"/> or <see cref="DMax"/> for the row tiles). A thread issues up to four global loads before it
    /// stores any: a load that follows a shared store in program order waits for the store's operand, so a loop of
    /// load → store keeps one load in flight per thread and pays the memory latency once per element (16 times per K/V tile
    /// at D = 64 with 128 threads): by a latency model (not a profile), the cause of the attention kernels' ≈ 4 TFLOP/s on
    /// the H200. When
    /// <paramref name="vec"/> (d, ld, base and rowStride multiples of 4, src 16-byte aligned) the loads are float4: a
    /// 32 × 64 tile is then four 128-bit loads per thread, all in flight at once.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadPadded(ArrayView<float> dst, ArrayView<float> src, long baseOff, long rowStride, int n, int d, int ld, bool vec)
        => MoveRows(src, baseOff, rowStride, dst, n, d, ld, vec, toShared: true);

    /// <summary>
    /// Moves n rows of d elements between global[base + j·rowStride + e] and shared[j·ld + e], toward shared memory when
    /// <paramref name="toShared"/>: four elements (float4 items when <paramref name="vec"/>) per thread and round, all four
    /// read before any is written.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MoveRows(ArrayView<float> global, long baseOff, long rowStride, ArrayView<float> shared, int n, int d, int ld, bool vec, bool toShared)
    {
        int g = Group.DimX, w = vec ? d >> 2 : d, sl = vec ? ld >> 2 : ld, total = n * w;
        long gb = vec ? baseOff >> 2 : baseOff, gr = vec ? rowStride >> 2 : rowStride;
        var g4 = global.Cast<F4>();
        var s4 = shared.Cast<F4>();
        for (int i0 = Group.IdxX; i0 < total; i0 += 4 * g)
        {
            int i1 = i0 + g, i2 = i1 + g, i3 = i2 + g;
            int j0 = i0 / w, j1 = i1 / w, j2 = i2 / w, j3 = i3 / w;
            int e0 = i0 - j0 * w, e1 = i1 - j1 * w, e2 = i2 - j2 * w, e3 = i3 - j3 * w;
            long ga0 = gb + j0 * gr + e0, ga1 = gb + j1 * gr + e1, ga2 = gb + j2 * gr + e2, ga3 = gb + j3 * gr + e3;
            int sa0 = j0 * sl + e0, sa1 = j1 * sl + e1, sa2 = j2 * sl + e2, sa3 = j3 * sl + e3;
            F4 x0 = Read(global, g4, shared, s4, ga0, sa0, vec, toShared), x1 = default, x2 = default, x3 = default;
            if (i1 < total) x1 = Read(global, g4, shared, s4, ga1, sa1, vec, toShared);
            if (i2 < total) x2 = Read(global, g4, shared, s4, ga2, sa2, vec, toShared);
            if (i3 < total) x3 = Read(global, g4, shared, s4, ga3, sa3, vec, toShared);
            Write(global, g4, shared, s4, ga0, sa0, vec, toShared, x0);
            if (i1 < total) Write(global, g4, shared, s4, ga1, sa1, vec, toShared, x1);
            if (i2 < total) Write(global, g4, shared, s4, ga2, sa2, vec, toShared, x2);
            if (i3 < total) Write(global, g4, shared, s4, ga3, sa3, vec, toShared, x3);
        }
    }

    /// <summary>Item (global ga, shared sa) of <see cref="MoveRows"/> from its source: a float4, or a float in X.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 Read(ArrayView<float> g, ArrayView<F4> g4, ArrayView<float> s, ArrayView<F4> s4, long ga, int sa, bool vec, bool toShared)
    {
        if (vec) return toShared ? g4[ga] : s4[sa];
        F4 x = default;
        x.X = toShared ? g[ga] : s[sa];
        return x;
    }

    /// <summary>Item (global ga, shared sa) of <see cref="MoveRows"/> to its destination.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Write(ArrayView<float> g, ArrayView<F4> g4, ArrayView<float> s, ArrayView<F4> s4, long ga, int sa, bool vec, bool toShared, F4 x)
    {
        if (vec)
        {
            if (toShared) s4[sa] = x; else g4[ga] = x;
        }
        else if (toShared) s[sa] = x.X;
        else g[ga] = x.X;
    }

    /// <summary>
    /// acc[r·QLd + e] += Σ_{j &lt; nk} w[r·SCap + wOff + j]·t[j·ld + e] for rows r &lt; nq, each sum formed j ascending from
    /// zero and then added to acc (the order every path keeps, so the bits do not depend on the path or the group size).
    /// D % 4 = 0: a thread owns 4 rows × 4 columns (16 sums) and reads w and t as float4 (64 FMAs per 8 loads, 4 keys per
    /// step, the key tail nk % 4 with scalar w; wOff, SCap, QLd and ld = 4·T4 are multiples of 4, so every word is 16-byte
    /// aligned). A warp (D = 64: 2 row groups × 16 column quads) reads 16 contiguous t words (2 passes) and 2 w words
    /// (rows r, r + 4: SCap apart, the same bank group, 2 passes) per load. Otherwise 4 rows × 1 column with scalar loads.
    /// </summary>
    private static void AccumulateRows(ArrayView<F4> acc4, ArrayView<F4> w4, int wOff, ArrayView<F4> t4, int nq, int nk, int d, int ld)
    {
        if ((d & 3) != 0)
        {
            AccumulateRowsScalar(acc4.Cast<float>(), w4.Cast<float>(), wOff, t4.Cast<float>(), nq, nk, d, ld);
            return;
        }
        int d4 = d >> 2;
        const int S4 = SCap / 4;
        int items = QT / RB * d4;
        for (int it = Group.IdxX; it < items; it += Group.DimX)
        {
            int rg = it / d4, e4 = it - rg * d4;
            int r0 = rg * RB;
            if (r0 >= nq) continue;
            // rows past nq read stale (finite or not) shared values; their results are never stored
            // 64-bit indices with constant strides: ptxas folds the offsets of the 8 loads into immediates
            long wb = (r0 * SCap + wOff) >> 2, tb = e4;
            var acc = default(Acc4x4);
            int j = 0;
            for (; j + 4 <= nk; j += 4, wb++, tb += 4 * T4)
            {
                F4 w0 = w4[wb], w1 = w4[wb + S4], w2 = w4[wb + 2 * S4], w3 = w4[wb + 3 * S4];
                Rank1(ref acc, w0.X, w1.X, w2.X, w3.X, t4[tb]);            // key j
                Rank1(ref acc, w0.Y, w1.Y, w2.Y, w3.Y, t4[tb + T4]);       // key j + 1
                Rank1(ref acc, w0.Z, w1.Z, w2.Z, w3.Z, t4[tb + 2 * T4]);   // key j + 2
                Rank1(ref acc, w0.W, w1.W, w2.W, w3.W, t4[tb + 3 * T4]);   // key j + 3
            }
            var w = w4.Cast<float>();
            for (int wj = r0 * SCap + wOff + j; j < nk; j++, wj++, tb += T4)
                Rank1(ref acc, w[wj], w[wj + SCap], w[wj + 2 * SCap], w[wj + 3 * SCap], t4[tb]);
            int o = r0 * Q4 + e4;
            AddQuad(acc4, o, acc.R0);
            if (r0 + 1 < nq) AddQuad(acc4, o + Q4, acc.R1);
            if (r0 + 2 < nq) AddQuad(acc4, o + 2 * Q4, acc.R2);
            if (r0 + 3 < nq) AddQuad(acc4, o + 3 * Q4, acc.R3);
        }
    }

    /// <summary>acc4[i] += q, element by element.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddQuad(ArrayView<F4> acc4, int i, F4 q)
    {
        F4 v = acc4[i];
        v.X += q.X; v.Y += q.Y; v.Z += q.Z; v.W += q.W;
        acc4[i] = v;
    }

    /// <summary>A 4×4 block of accumulators, row i = Ri (registers once inlined).</summary>
    private struct Acc4x4
    {
        public F4 R0, R1, R2, R3;
    }

    /// <summary>One rank-1 step: row i of <paramref name="a"/> += c_i · r (one term per accumulator).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rank1(ref Acc4x4 a, float c0, float c1, float c2, float c3, F4 r)
    {
        a.R0.X += c0 * r.X; a.R0.Y += c0 * r.Y; a.R0.Z += c0 * r.Z; a.R0.W += c0 * r.W;
        a.R1.X += c1 * r.X; a.R1.Y += c1 * r.Y; a.R1.Z += c1 * r.Z; a.R1.W += c1 * r.W;
        a.R2.X += c2 * r.X; a.R2.Y += c2 * r.Y; a.R2.Z += c2 * r.Z; a.R2.W += c2 * r.W;
        a.R3.X += c3 * r.X; a.R3.Y += c3 * r.Y; a.R3.Z += c3 * r.Z; a.R3.W += c3 * r.W;
    }

    /// <summary><see cref="AccumulateRows"/> for D % 4 ≠ 0: four rows × one column per thread, scalar loads.</summary>
    private static void AccumulateRowsScalar(ArrayView<float> acc, ArrayView<float> w, int wOff, ArrayView<float> t, int nq, int nk, int d, int ld)
    {
        int items = QT / RB * d;
        for (int it = Group.IdxX; it < items; it += Group.DimX)
        {
            int rg = it / d, e = it - rg * d;
            int r0 = rg * RB;
            if (r0 >= nq) continue;
            int w0 = r0 * SCap + wOff;
            float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
            for (int j = 0; j < nk; j++)
            {
                float x = t[j * ld + e];
                a0 += w[w0 + j] * x;
                a1 += w[w0 + SCap + j] * x;
                a2 += w[w0 + 2 * SCap + j] * x;
                a3 += w[w0 + 3 * SCap + j] * x;
            }
            int o = r0 * QLd + e;
            acc[o] += a0;
            if (r0 + 1 < nq) acc[o + QLd] += a1;
            if (r0 + 2 < nq) acc[o + 2 * QLd] += a2;
            if (r0 + 3 < nq) acc[o + 3 * QLd] += a3;
        }
    }

    /// <summary>
    /// dot(r, j) = rows[r·QLd..]·t[j·ld..] for r &lt; nq, j &lt; nk, each formed e ascending from zero, four rows (r0, r0 + 4,
    /// r0 + 8, r0 + 12) × one key per thread; calls back through the flat outputs: out[(r·SCap) + j] in shared memory, or
    /// (when big) glob[gBase + r·S + j0 + j]. Scaled by scale, plus the mask. D % 4 = 0: the rows and the key are read as
    /// float4 (16 FMAs per 5 loads, each load one conflict-free pass: <see cref="QLd"/>, <see cref="PaddedStride"/>);
    /// otherwise scalar loads.
    /// </summary>
    private static void Scores(ArrayView<F4> rows4, ArrayView<F4> t4, int nq, int nk, int j0, int d, int ld,
        ArrayView<float> sc, ArrayView<float> glob, long gBase, bool big, ArrayView<float> mask, AttentionParams a, int b, int h, int l0, bool scaleAndMask)
    {
        bool vec = (d & 3) == 0;
        var rows = rows4.Cast<float>();
        var t = t4.Cast<float>();
        int d4 = d >> 2;
        // item it → key j = (it / 32)·8 + it % 8 and rows r0 + 4·i (i < 4), r0 = (it / 8) % 4: 32 consecutive items (a warp)
        // cover 4 consecutive rows × 8 keys, so each 128-bit load of the warp reads 4 (Q) or 8 (K) distinct words in
        // distinct bank groups — one shared-memory pass per load (with 32 keys × 1 row group, a K load took 4 passes and
        // each Q load a whole pass for one broadcast word).
        const int RG = QT / RB, JL = 8;
        int items = RG * KT;
        for (int it = Group.IdxX; it < items; it += Group.DimX)
        {
            int q = it / JL, jl = it - q * JL;
            int rq = q / RG, r0 = q - rq * RG, j = rq * JL + jl;
            if (r0 >= nq || j >= nk) continue;
            // rows past nq read stale (finite or not) shared values; their results are never stored
            int jj = j0 + j;
            // the mask's four values first: their loads are then in flight during the dot products (issued after the
            // scores' shared stores they would each wait for the previous store)
            float m0 = 0f, m1 = 0f, m2 = 0f, m3 = 0f;
            if (scaleAndMask && (a.Flags & FlagMask) != 0)
            {
                long mb = a.MaskOff + b * a.MaskSB + h * a.MaskSH + (l0 + r0) * a.MaskSL + jj * a.MaskSS, ms = RG * a.MaskSL;
                m0 = mask[mb];
                if (r0 + RG < nq) m1 = mask[mb + ms];
                if (r0 + 2 * RG < nq) m2 = mask[mb + 2 * ms];
                if (r0 + 3 * RG < nq) m3 = mask[mb + 3 * ms];
            }
            float s0 = 0f, s1 = 0f, s2 = 0f, s3 = 0f;
            if (vec)
            {
                // 64-bit indices with constant strides: ptxas folds the offsets into immediates; unrolled by four
                // float4 (16 e) by hand (ptxas does not unroll a loop of unknown trip count), then the rest
                long qp = (long)r0 * Q4, kp = (long)j * T4;
                var sv = default(F4);
                int e = 0;
                for (; e + 4 <= d4; e += 4, qp += 4, kp += 4)
                {
                    ScoreStep(ref sv, rows4, t4, qp, kp);
                    ScoreStep(ref sv, rows4, t4, qp + 1, kp + 1);
                    ScoreStep(ref sv, rows4, t4, qp + 2, kp + 2);
                    ScoreStep(ref sv, rows4, t4, qp + 3, kp + 3);
                }
                for (; e < d4; e++, qp++, kp++) ScoreStep(ref sv, rows4, t4, qp, kp);
                s0 = sv.X; s1 = sv.Y; s2 = sv.Z; s3 = sv.W;
            }
            else
            {
                int q0 = r0 * QLd, kb = j * ld;
                for (int e = 0; e < d; e++)
                {
                    float kx = t[kb + e];
                    s0 += rows[q0 + e] * kx;
                    s1 += rows[q0 + RG * QLd + e] * kx;
                    s2 += rows[q0 + 2 * RG * QLd + e] * kx;
                    s3 += rows[q0 + 3 * RG * QLd + e] * kx;
                }
            }
            StoreScore(s0, m0, r0, jj, sc, glob, gBase, big, a, scaleAndMask);
            if (r0 + RG < nq) StoreScore(s1, m1, r0 + RG, jj, sc, glob, gBase, big, a, scaleAndMask);
            if (r0 + 2 * RG < nq) StoreScore(s2, m2, r0 + 2 * RG, jj, sc, glob, gBase, big, a, scaleAndMask);
            if (r0 + 3 * RG < nq) StoreScore(s3, m3, r0 + 3 * RG, jj, sc, glob, gBase, big, a, scaleAndMask);
        }
    }

    /// <summary>
    /// One float4 step of <see cref="Scores"/>: s.X..s.W (rows r0, r0 + 4, r0 + 8, r0 + 12) += the rows' 4 values at
    /// rows4[qp + i·4·Q4] times the key's at t4[kp], each accumulator in e order (X, Y, Z, W).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreStep(ref F4 s, ArrayView<F4> rows4, ArrayView<F4> t4, long qp, long kp)
    {
        const int RG = QT / RB;
        F4 k = t4[kp], x0 = rows4[qp], x1 = rows4[qp + RG * Q4], x2 = rows4[qp + 2 * RG * Q4], x3 = rows4[qp + 3 * RG * Q4];
        s.X += x0.X * k.X; s.Y += x1.X * k.X; s.Z += x2.X * k.X; s.W += x3.X * k.X;
        s.X += x0.Y * k.Y; s.Y += x1.Y * k.Y; s.Z += x2.Y * k.Y; s.W += x3.Y * k.Y;
        s.X += x0.Z * k.Z; s.Y += x1.Z * k.Z; s.Z += x2.Z * k.Z; s.W += x3.Z * k.Z;
        s.X += x0.W * k.W; s.Y += x1.W * k.W; s.Z += x2.W * k.W; s.W += x3.W * k.W;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreScore(float dot, float maskValue, int r, int jj, ArrayView<float> sc, ArrayView<float> glob, long gBase, bool big,
        AttentionParams a, bool scaleAndMask)
    {
        float v = dot;
        if (scaleAndMask)
        {
            v = a.Scale * dot;
            if ((a.Flags & FlagMask) != 0) v += maskValue;
        }
        if (big) glob[gBase + (long)r * a.S + jj] = v;
        else sc[r * SCap + jj] = v;
    }

    /// <summary>Big-S mode: sc[r·SCap + j] ← glob at (r, j0 + j) for the tile's rows (times keep·drop when <paramref name="dropWeights"/>).</summary>
    private static void StageTile(ArrayView<float> sc, ArrayView<float> glob, long gBase, int nq, int nk, int j0, AttentionParams a, bool dropWeights)
    {
        for (int i = Group.IdxX; i < nq * KT; i += Group.DimX)
        {
            int r = i / KT, j = i - r * KT;
            if (j >= nk) continue;
            long gi = gBase + (long)r * a.S + j0 + j;
            float x = glob[gi];
            sc[r * SCap + j] = dropWeights ? x * Factor(a, gi) : x;
        }
    }

    // ================================================================== forward

    internal static void ForwardKernel(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> mask,
        ArrayView<float> o, ArrayView<float> probs, AttentionParams a)
    {
        var qs4 = SharedMemory.Allocate<F4>(QT * Q4);           // Q tile, then the O accumulators (row stride QLd)
        var kv4 = SharedMemory.Allocate<F4>(KvFloats / 4);      // K tile, then V tile (padded rows)
        var sc4 = SharedMemory.Allocate<F4>(QT * SCap / 4);     // scores, then dropped probabilities
        var qs = qs4.Cast<float>();
        var kv = kv4.Cast<float>();
        var sc = sc4.Cast<float>();
        int L = a.L, S = a.S, D = a.D, ld = PaddedStride(D);
        bool big = S > SCap;
        int qTiles = (L + QT - 1) / QT;
        int tiles = a.B * a.H * qTiles;
        int tid = Group.IdxX, g = Group.DimX, warp = Warp.WarpSize;
        int nw = g / warp, wi = tid / warp, lane = Warp.LaneIdx;
        bool weights = (a.Flags & FlagNoOutput) == 0, writeProbs = (a.Flags & FlagNoProbs) == 0;
        for (int t = Grid.IdxX; t < tiles; t += Grid.DimX)
        {
            int bh = t / qTiles, l0 = (t - bh * qTiles) * QT;
            int nq = IntrinsicMath.Min(QT, L - l0);
            int b = bh / a.H, h = bh - b * a.H;
            long pBase = ((long)bh * L + l0) * S;
            long kBase = Row(a.X.K, b, h, 0), kSR = a.X.K.R;

            LoadPadded(qs, q, Row(a.X.Q, b, h, l0), a.X.Q.R, nq, D, QLd, (a.Flags & FlagVecQ) != 0);
            Group.Barrier();
            for (int j0 = 0; j0 < S; j0 += KT)
            {
                int nk = IntrinsicMath.Min(KT, S - j0);
                LoadPadded(kv, k, kBase + j0 * kSR, kSR, nk, D, ld, (a.Flags & FlagVecK) != 0);
                Group.Barrier();
                Scores(qs4, kv4, nq, nk, j0, D, ld, sc, probs, pBase, big, mask, a, b, h, l0, true);
                Group.Barrier();
            }

            // softmax, one warp per row; probs ← p, sc ← keep·drop·p (shared mode)
            for (int r = wi; r < nq; r += nw)
            {
                long prow = pBase + (long)r * S;
                int srow = r * SCap;
                float m = float.NegativeInfinity;
                for (int j = lane; j < S; j += warp)
                {
                    float x = big ? probs[prow + j] : sc[srow + j];
                    m = x > m ? x : m;
                }
                m = WarpMax(m);
                if (m == float.NegativeInfinity) m = 0f;   // all −∞: exp gives zeros (as the CPU backend)
                float sum = 0f;
                for (int j = lane; j < S; j += warp)
                {
                    float ex;
                    if (big) { ex = MathF.Exp(probs[prow + j] - m); probs[prow + j] = ex; }
                    else { ex = MathF.Exp(sc[srow + j] - m); sc[srow + j] = ex; }
                    sum += ex;
                }
                sum = WarpSum(sum);
                float inv = 1f / sum;
                if (big || !weights)
                {
                    // big: probs is also the scratch StageTile reads; probabilities only: no dropout, no weights
                    for (int j = lane; j < S; j += warp) probs[prow + j] = (big ? probs[prow + j] : sc[srow + j]) * inv;
                }
                else if ((a.Flags & FlagDropout) == 0)
                {
                    for (int j = lane; j < S; j += warp)
                    {
                        float p = sc[srow + j] * inv;
                        if (writeProbs) probs[prow + j] = p;
                        sc[srow + j] = p * a.Drop;
                    }
                }
                else
                {
                    // one Philox block per four consecutive elements (flat index i uses word i % 4 of counter offset + i / 4,
                    // the stream's layout): a lane takes whole blocks, so each block is generated once, not four times
                    long c0 = prow >> 2, c1 = (prow + S + 3) >> 2;
                    for (long c = c0 + lane; c < c1; c += warp)
                    {
                        Philox.Block(a.Seed, a.Offset + (ulong)c, out uint w0, out uint w1, out uint w2, out uint w3);
                        int j = (int)((c << 2) - prow);
                        SoftmaxWeight(sc, probs, srow, prow, j, S, inv, w0, a, writeProbs);
                        SoftmaxWeight(sc, probs, srow, prow, j + 1, S, inv, w1, a, writeProbs);
                        SoftmaxWeight(sc, probs, srow, prow, j + 2, S, inv, w2, a, writeProbs);
                        SoftmaxWeight(sc, probs, srow, prow, j + 3, S, inv, w3, a, writeProbs);
                    }
                }
            }
            if (!weights) { Group.Barrier(); continue; }   // probabilities only: no P·V, no output
            for (int i = tid; i < nq * QLd; i += g) qs[i] = 0f;
            Group.Barrier();

            for (int j0 = 0; j0 < S; j0 += KT)
            {
                int nk = IntrinsicMath.Min(KT, S - j0);
                LoadPadded(kv, v, Row(a.X.V, b, h, j0), a.X.V.R, nk, D, ld, (a.Flags & FlagVecV) != 0);
                if (big) StageTile(sc, probs, pBase, nq, nk, j0, a, true);
                Group.Barrier();
                AccumulateRows(qs4, sc4, big ? 0 : j0, kv4, nq, nk, D, ld);
                Group.Barrier();
            }
            StoreRows(o, Row(a.X.O, b, h, l0), a.X.O.R, qs, nq, D, QLd, (a.Flags & FlagVecO) != 0);
            Group.Barrier();
        }
    }

    /// <summary>Element j of a softmax row (when 0 ≤ j &lt; S): p = sc·inv to probs (when asked), p·keep·drop to sc, keep from <paramref name="word"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SoftmaxWeight(ArrayView<float> sc, ArrayView<float> probs, int srow, long prow, int j, int S, float inv, uint word,
        AttentionParams a, bool writeProbs)
    {
        if (j < 0 || j >= S) return;
        float p = sc[srow + j] * inv;
        if (writeProbs) probs[prow + j] = p;
        sc[srow + j] = p * ((word >> 8) >= a.Thr ? a.Drop : 0f);
    }

    // ================================================================== backward

    /// <summary>Kernel 1: gS (to ws) and gq, per (b·h, query tile).</summary>
    internal static void BackwardQKernel(ArrayView<float> k, ArrayView<float> v, ArrayView<float> probs, ArrayView<float> go,
        ArrayView<float> gq, ArrayView<float> ws, AttentionParams a)
    {
        var qs4 = SharedMemory.Allocate<F4>(QT * Q4);           // gO tile, then the gQ accumulators (row stride QLd)
        var kv4 = SharedMemory.Allocate<F4>(KvFloats / 4);      // V tile, then K tile (padded rows)
        var sc4 = SharedMemory.Allocate<F4>(QT * SCap / 4);     // gO·vᵀ, then gS
        var qs = qs4.Cast<float>();
        var kv = kv4.Cast<float>();
        var sc = sc4.Cast<float>();
        int L = a.L, S = a.S, D = a.D, ld = PaddedStride(D);
        bool big = S > SCap;
        int qTiles = (L + QT - 1) / QT;
        int tiles = a.B * a.H * qTiles;
        int tid = Group.IdxX, g = Group.DimX, warp = Warp.WarpSize;
        int nw = g / warp, wi = tid / warp, lane = Warp.LaneIdx;
        for (int t = Grid.IdxX; t < tiles; t += Grid.DimX)
        {
            int bh = t / qTiles, l0 = (t - bh * qTiles) * QT;
            int nq = IntrinsicMath.Min(QT, L - l0);
            int b = bh / a.H, h = bh - b * a.H;
            long pBase = ((long)bh * L + l0) * S;

            LoadPadded(qs, go, Row(a.X.GO, b, h, l0), a.X.GO.R, nq, D, QLd, (a.Flags & FlagVecGO) != 0);
            Group.Barrier();
            for (int j0 = 0; j0 < S; j0 += KT)
            {
                int nk = IntrinsicMath.Min(KT, S - j0);
                LoadPadded(kv, v, Row(a.X.V, b, h, j0), a.X.V.R, nk, D, ld, (a.Flags & FlagVecV) != 0);
                Group.Barrier();
                Scores(qs4, kv4, nq, nk, j0, D, ld, sc, ws, pBase, big, probs, a, b, h, l0, false);
                Group.Barrier();
            }

            // gP = keep·drop·(gO·v); gS = P·(gP − Σ P·gP)·scale, one warp per row. A lane takes its elements j = lane +
            // u·warp four at a time and loads the four probabilities (and, big, the four gP) before it stores anything,
            // so one memory latency covers four elements; when the row fits in one such batch (S ≤ 4·warp, shared mode)
            // the probabilities are loaded once, before the dropout's Philox blocks, and kept for the second pass. Each
            // element's arithmetic and the lane's summation order are those of the one-element loops.
            bool dropout = (a.Flags & FlagDropout) != 0, regs = !big && S <= 4 * warp;
            for (int r = wi; r < nq; r += nw)
            {
                long prow = pBase + (long)r * S;
                int srow = r * SCap;
                float p0 = 0f, p1 = 0f, p2 = 0f, p3 = 0f;
                if (regs) LoadQuad(probs, prow, lane, warp, S, out p0, out p1, out p2, out p3);
                if (dropout)
                {
                    // keep·drop one Philox block per four consecutive elements (as the forward), then the dot in the usual
                    // lane order so its rounding is unchanged
                    long c0 = prow >> 2, c1 = (prow + S + 3) >> 2;
                    for (long c = c0 + lane; c < c1; c += warp)
                    {
                        Philox.Block(a.Seed, a.Offset + (ulong)c, out uint w0, out uint w1, out uint w2, out uint w3);
                        int j = (int)((c << 2) - prow);
                        DropGradient(sc, ws, big, srow, prow, j, S, w0, a);
                        DropGradient(sc, ws, big, srow, prow, j + 1, S, w1, a);
                        DropGradient(sc, ws, big, srow, prow, j + 2, S, w2, a);
                        DropGradient(sc, ws, big, srow, prow, j + 3, S, w3, a);
                    }
                    Warp.Barrier();
                }
                float dot = 0f;
                for (int jb = lane; jb < S; jb += 4 * warp)
                {
                    if (!regs) LoadQuad(probs, prow, jb, warp, S, out p0, out p1, out p2, out p3);
                    float x0, x1, x2, x3;
                    if (big) LoadQuad(ws, prow, jb, warp, S, out x0, out x1, out x2, out x3);
                    else LoadQuad(sc, srow, jb, warp, S, out x0, out x1, out x2, out x3);
                    dot = GradientDot(dot, p0, x0, jb, sc, ws, big, srow, prow, S, a, dropout);
                    dot = GradientDot(dot, p1, x1, jb + warp, sc, ws, big, srow, prow, S, a, dropout);
                    dot = GradientDot(dot, p2, x2, jb + 2 * warp, sc, ws, big, srow, prow, S, a, dropout);
                    dot = GradientDot(dot, p3, x3, jb + 3 * warp, sc, ws, big, srow, prow, S, a, dropout);
                }
                dot = WarpSum(dot);
                for (int jb = lane; jb < S; jb += 4 * warp)
                {
                    if (!regs) LoadQuad(probs, prow, jb, warp, S, out p0, out p1, out p2, out p3);
                    float x0, x1, x2, x3;
                    if (big) LoadQuad(ws, prow, jb, warp, S, out x0, out x1, out x2, out x3);
                    else LoadQuad(sc, srow, jb, warp, S, out x0, out x1, out x2, out x3);
                    ScoreGradient(p0, x0, dot, jb, sc, ws, big, srow, prow, S, a);
                    ScoreGradient(p1, x1, dot, jb + warp, sc, ws, big, srow, prow, S, a);
                    ScoreGradient(p2, x2, dot, jb + 2 * warp, sc, ws, big, srow, prow, S, a);
                    ScoreGradient(p3, x3, dot, jb + 3 * warp, sc, ws, big, srow, prow, S, a);
                }
            }
            for (int i = tid; i < nq * QLd; i += g) qs[i] = 0f;
            Group.Barrier();

            for (int j0 = 0; j0 < S; j0 += KT)
            {
                int nk = IntrinsicMath.Min(KT, S - j0);
                LoadPadded(kv, k, Row(a.X.K, b, h, j0), a.X.K.R, nk, D, ld, (a.Flags & FlagVecK) != 0);
                if (big) StageTile(sc, ws, pBase, nq, nk, j0, a, false);
                Group.Barrier();
                AccumulateRows(qs4, sc4, big ? 0 : j0, kv4, nq, nk, D, ld);
                Group.Barrier();
            }
            StoreRows(gq, Row(a.X.GQ, b, h, l0), a.X.GQ.R, qs, nq, D, QLd, (a.Flags & FlagVecGQ) != 0);
            Group.Barrier();
        }
    }

    /// <summary>x0..x3 ← v[base + j + u·step] for u &lt; 4 (0 past n): four independent loads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadQuad(ArrayView<float> v, long baseOff, int j, int step, int n, out float x0, out float x1, out float x2, out float x3)
    {
        x0 = j < n ? v[baseOff + j] : 0f;
        x1 = j + step < n ? v[baseOff + j + step] : 0f;
        x2 = j + 2 * step < n ? v[baseOff + j + 2 * step] : 0f;
        x3 = j + 3 * step < n ? v[baseOff + j + 3 * step] : 0f;
    }

    /// <summary>Element j (when j &lt; S) of kernel 1's first pass: dot + p·gP, where gP = x (dropout: already times keep·drop)
    /// or x·drop, stored back (no dropout).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float GradientDot(float dot, float p, float x, int j, ArrayView<float> sc, ArrayView<float> ws, bool big, int srow,
        long prow, int S, AttentionParams a, bool dropout)
    {
        if (j >= S) return dot;
        if (dropout) return dot + p * x;
        float gp = x * a.Drop;
        if (big) ws[prow + j] = gp; else sc[srow + j] = gp;
        return dot + p * gp;
    }

    /// <summary>Element j (when j &lt; S) of kernel 1's second pass: gS = p·(gP − dot)·scale to ws (and sc, shared mode).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScoreGradient(float p, float gp, float dot, int j, ArrayView<float> sc, ArrayView<float> ws, bool big, int srow,
        long prow, int S, AttentionParams a)
    {
        if (j >= S) return;
        float gs = p * (gp - dot) * a.Scale;
        ws[prow + j] = gs;
        if (!big) sc[srow + j] = gs;
    }

    /// <summary>Element j of a row (when 0 ≤ j &lt; S): gO·vᵀ times keep·drop, keep from <paramref name="word"/>, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DropGradient(ArrayView<float> sc, ArrayView<float> ws, bool big, int srow, long prow, int j, int S, uint word, AttentionParams a)
    {
        if (j < 0 || j >= S) return;
        float f = (word >> 8) >= a.Thr ? a.Drop : 0f;
        if (big) ws[prow + j] *= f; else sc[srow + j] *= f;
    }

    /// <summary>Kernel 2: gk = gSᵀ·q and gv = (P·keep·drop)ᵀ·gO, per (b·h, tile of KT2 keys), summed over all query rows.</summary>
    internal static void BackwardKVKernel(ArrayView<float> q, ArrayView<float> probs, ArrayView<float> go, ArrayView<float> ws,
        ArrayView<float> gk, ArrayView<float> gv, AttentionParams a)
    {
        var accK4 = SharedMemory.Allocate<F4>(KT2 * DMax / 4);
        var accV4 = SharedMemory.Allocate<F4>(KT2 * DMax / 4);
        var qt4 = SharedMemory.Allocate<F4>(LT * DMax / 4);
        var got4 = SharedMemory.Allocate<F4>(LT * DMax / 4);
        var pdt4 = SharedMemory.Allocate<F4>(LT * KT2 / 4);
        var gst4 = SharedMemory.Allocate<F4>(LT * KT2 / 4);
        var accK = accK4.Cast<float>();
        var accV = accV4.Cast<float>();
        var qt = qt4.Cast<float>();
        var got = got4.Cast<float>();
        var pdt = pdt4.Cast<float>();
        var gst = gst4.Cast<float>();
        int L = a.L, S = a.S, D = a.D;
        bool vec = (D & 3) == 0;
        int kTiles = (S + KT2 - 1) / KT2;
        int tiles = a.B * a.H * kTiles;
        int tid = Group.IdxX, g = Group.DimX;
        bool dropout = (a.Flags & FlagDropout) != 0;
        for (int t = Grid.IdxX; t < tiles; t += Grid.DimX)
        {
            int bh = t / kTiles, s0 = (t - bh * kTiles) * KT2;
            int ns = IntrinsicMath.Min(KT2, S - s0);
            int b = bh / a.H, h = bh - b * a.H;
            long pBase = (long)bh * L * S;
            for (int i = tid; i < ns * DMax; i += g) { accK[i] = 0f; accV[i] = 0f; }
            for (int l0 = 0; l0 < L; l0 += LT)
            {
                int nl = IntrinsicMath.Min(LT, L - l0);
                LoadQueryTile(qt4, got4, pdt, gst, q, go, probs, ws, Row(a.X.Q, b, h, l0), a.X.Q.R, (a.Flags & FlagVecQ) != 0,
                    Row(a.X.GO, b, h, l0), a.X.GO.R, (a.Flags & FlagVecGO) != 0, pBase + (long)l0 * S + s0, nl, ns, a, dropout);
                if (dropout)
                {
                    // P·keep·drop with one Philox block per four consecutive elements of a row's ns keys (≤ KB2 blocks)
                    Group.Barrier();
                    for (int it = tid; it < LT * KB2; it += g)
                    {
                        int l = it / KB2, bi = it - l * KB2;
                        if (l >= nl) continue;
                        long rb = pBase + (long)(l0 + l) * S + s0;
                        long c = (rb >> 2) + bi;
                        if ((c << 2) >= rb + ns) continue;
                        Philox.Block(a.Seed, a.Offset + (ulong)c, out uint w0, out uint w1, out uint w2, out uint w3);
                        int e = (int)((c << 2) - rb), row = l * KT2;
                        DropWeight(pdt, row, e, ns, w0, a);
                        DropWeight(pdt, row, e + 1, ns, w1, a);
                        DropWeight(pdt, row, e + 2, ns, w2, a);
                        DropWeight(pdt, row, e + 3, ns, w3, a);
                    }
                }
                Group.Barrier();
                if (vec) KeyValueProducts(accK4, accV4, qt4, got4, pdt4, gst4, ns, nl, D);
                else KeyValueProductsScalar(accK, accV, qt, got, pdt, gst, ns, nl, D);
                Group.Barrier();
            }
            StoreRows(gk, Row(a.X.GK, b, h, s0), a.X.GK.R, accK, ns, D, DMax, (a.Flags & FlagVecGK) != 0);
            StoreRows(gv, Row(a.X.GV, b, h, s0), a.X.GV.R, accV, ns, D, DMax, (a.Flags & FlagVecGV) != 0);
            Group.Barrier();
        }
    }

    /// <summary>
    /// Kernel 2's operands for query rows l0 .. l0 + nl − 1 in one round of loads per thread: the nl × d rows of q and gO
    /// (at qBase / goBase, row strides qR / goR; float4 when vecQ / vecGO) into qt and got (row stride <see cref="DMax"/>),
    /// and the LT × KT2 tile of P (times drop when dropout is off) and gS at pRow (element (l, s) at pRow + l·S + s) into
    /// pdt and gst, zero past nl or ns. Each thread takes two items of each and issues all eight loads before its first
    /// store (see <see cref="LoadPadded"/>): one memory latency per query tile instead of one per element.
    /// </summary>
    private static void LoadQueryTile(ArrayView<F4> qt4, ArrayView<F4> got4, ArrayView<float> pdt, ArrayView<float> gst,
        ArrayView<float> q, ArrayView<float> go, ArrayView<float> probs, ArrayView<float> ws,
        long qBase, long qR, bool vecQ, long goBase, long goR, bool vecGO, long pRow, int nl, int ns, AttentionParams a, bool dropout)
    {
        int g = Group.DimX, d = a.D;
        int wq = vecQ ? d >> 2 : d, wg = vecGO ? d >> 2 : d;
        int nQ = nl * wq, nG = nl * wg;
        const int nP = LT * KT2;
        int total = IntrinsicMath.Max(nP, IntrinsicMath.Max(nQ, nG));
        for (int i0 = Group.IdxX; i0 < total; i0 += 2 * g)
        {
            int i1 = i0 + g;
            F4 q0 = default, q1 = default, g0 = default, g1 = default;
            if (i0 < nQ) q0 = LoadItem(q, qBase, qR, i0, wq, vecQ);
            if (i1 < nQ) q1 = LoadItem(q, qBase, qR, i1, wq, vecQ);
            if (i0 < nG) g0 = LoadItem(go, goBase, goR, i0, wg, vecGO);
            if (i1 < nG) g1 = LoadItem(go, goBase, goR, i1, wg, vecGO);
            float p0 = 0f, p1 = 0f, s0 = 0f, s1 = 0f;   // rows past nl, keys past ns contribute zero
            int l0 = i0 / KT2, c0 = i0 - l0 * KT2, l1 = i1 / KT2, c1 = i1 - l1 * KT2;
            bool in0 = i0 < nP && l0 < nl && c0 < ns, in1 = i1 < nP && l1 < nl && c1 < ns;
            long pi0 = pRow + (long)l0 * a.S + c0, pi1 = pRow + (long)l1 * a.S + c1;
            if (in0) { p0 = probs[pi0]; s0 = ws[pi0]; }
            if (in1) { p1 = probs[pi1]; s1 = ws[pi1]; }
            if (!dropout) { p0 *= a.Drop; p1 *= a.Drop; }
            if (i0 < nQ) StoreItem(qt4, i0, wq, q0, vecQ);
            if (i1 < nQ) StoreItem(qt4, i1, wq, q1, vecQ);
            if (i0 < nG) StoreItem(got4, i0, wg, g0, vecGO);
            if (i1 < nG) StoreItem(got4, i1, wg, g1, vecGO);
            if (i0 < nP) { pdt[i0] = p0; gst[i0] = s0; }
            if (i1 < nP) { pdt[i1] = p1; gst[i1] = s1; }
        }
    }

    /// <summary>Item i of a row tile of w items per row (w = d/4 float4 when vec, else d floats; only X used then) at base + row·rowStride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 LoadItem(ArrayView<float> src, long baseOff, long rowStride, int i, int w, bool vec)
    {
        int j = i / w, e = i - j * w;
        if (vec) return src.Cast<F4>()[(baseOff >> 2) + j * (rowStride >> 2) + e];
        F4 x = default;
        x.X = src[baseOff + j * rowStride + e];
        return x;
    }

    /// <summary>Item i of <see cref="LoadItem"/> into a shared row tile of row stride <see cref="DMax"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreItem(ArrayView<F4> dst4, int i, int w, F4 x, bool vec)
    {
        int j = i / w, e = i - j * w;
        if (vec) dst4[j * R4 + e] = x;
        else dst4.Cast<float>()[j * DMax + e] = x.X;
    }

    /// <summary>
    /// accV[s·DMax + e] += Σ_{l &lt; nl} pdt[l·KT2 + s]·got[l·DMax + e] and accK[s·DMax + e] += Σ_l gst[l·KT2 + s]·qt[l·DMax + e]
    /// for keys s &lt; ns, each sum formed l ascending from zero, then added (the order of every path). D % 4 = 0: a thread
    /// owns 4 keys × 4 columns of both products (32 sums) and reads all four operands as float4: 32 FMAs per 4 loads (a
    /// warp's pdt, gst loads: two adjacent words, one pass; got, qt: 16 contiguous words, two passes), unrolled by two rows.
    /// </summary>
    private static void KeyValueProducts(ArrayView<F4> accK4, ArrayView<F4> accV4, ArrayView<F4> qt4, ArrayView<F4> got4,
        ArrayView<F4> pdt4, ArrayView<F4> gst4, int ns, int nl, int d)
    {
        int d4 = d >> 2;
        const int K4 = KT2 / 4;
        int items = K4 * d4;
        for (int it = Group.IdxX; it < items; it += Group.DimX)
        {
            int sg = it / d4, e4 = it - sg * d4;
            int sb = sg * RB;
            if (sb >= ns) continue;
            var av = default(Acc4x4);
            var ak = default(Acc4x4);
            // 64-bit indices with constant strides (see AccumulateRows), unrolled by two rows l by hand
            long w = sg, x = e4;
            int l = 0;
            for (; l + 2 <= nl; l += 2, w += 2 * K4, x += 2 * R4)
            {
                KeyValueStep(ref av, ref ak, pdt4, got4, gst4, qt4, w, x);
                KeyValueStep(ref av, ref ak, pdt4, got4, gst4, qt4, w + K4, x + R4);
            }
            if (l < nl) KeyValueStep(ref av, ref ak, pdt4, got4, gst4, qt4, w, x);
            int o = sb * R4 + e4;
            AddQuad(accV4, o, av.R0); AddQuad(accK4, o, ak.R0);
            if (sb + 1 < ns) { AddQuad(accV4, o + R4, av.R1); AddQuad(accK4, o + R4, ak.R1); }
            if (sb + 2 < ns) { AddQuad(accV4, o + 2 * R4, av.R2); AddQuad(accK4, o + 2 * R4, ak.R2); }
            if (sb + 3 < ns) { AddQuad(accV4, o + 3 * R4, av.R3); AddQuad(accK4, o + 3 * R4, ak.R3); }
        }
    }

    /// <summary>One query row of <see cref="KeyValueProducts"/>: gv block += p ⊗ gO row, gk block += gS ⊗ q row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void KeyValueStep(ref Acc4x4 av, ref Acc4x4 ak, ArrayView<F4> pdt4, ArrayView<F4> got4, ArrayView<F4> gst4, ArrayView<F4> qt4, long w, long x)
    {
        F4 p = pdt4[w];
        Rank1(ref av, p.X, p.Y, p.Z, p.W, got4[x]);
        F4 gs = gst4[w];
        Rank1(ref ak, gs.X, gs.Y, gs.Z, gs.W, qt4[x]);
    }

    /// <summary><see cref="KeyValueProducts"/> for D % 4 ≠ 0: four keys × one column per thread, scalar loads.</summary>
    private static void KeyValueProductsScalar(ArrayView<float> accK, ArrayView<float> accV, ArrayView<float> qt, ArrayView<float> got,
        ArrayView<float> pdt, ArrayView<float> gst, int ns, int nl, int d)
    {
        int items = KT2 / RB * d;
        for (int it = Group.IdxX; it < items; it += Group.DimX)
        {
            int sg = it / d, e = it - sg * d;
            int sb = sg * RB;
            if (sb >= ns) continue;
            float v0 = 0f, v1 = 0f, v2 = 0f, v3 = 0f, k0 = 0f, k1 = 0f, k2 = 0f, k3 = 0f;
            for (int l = 0; l < nl; l++)
            {
                float gx = got[l * DMax + e], qx = qt[l * DMax + e];
                int w = l * KT2 + sb;
                v0 += pdt[w] * gx; v1 += pdt[w + 1] * gx; v2 += pdt[w + 2] * gx; v3 += pdt[w + 3] * gx;
                k0 += gst[w] * qx; k1 += gst[w + 1] * qx; k2 += gst[w + 2] * qx; k3 += gst[w + 3] * qx;
            }
            int o = sb * DMax + e;
            accV[o] += v0; accK[o] += k0;
            if (sb + 1 < ns) { accV[o + DMax] += v1; accK[o + DMax] += k1; }
            if (sb + 2 < ns) { accV[o + 2 * DMax] += v2; accK[o + 2 * DMax] += k2; }
            if (sb + 3 < ns) { accV[o + 3 * DMax] += v3; accK[o + 3 * DMax] += k3; }
        }
    }

    /// <summary>Philox blocks that can overlap KT2 consecutive elements.</summary>
    private const int KB2 = KT2 / 4 + 1;

    /// <summary>pdt[row + e] ·= keep·drop (when 0 ≤ e &lt; ns), keep from <paramref name="word"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DropWeight(ArrayView<float> pdt, int row, int e, int ns, uint word, AttentionParams a)
    {
        if (e < 0 || e >= ns) return;
        pdt[row + e] *= (word >> 8) >= a.Thr ? a.Drop : 0f;
    }

    // ================================================================== launchers

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>? Fwd;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>? BwdQ;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>? BwdKV;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    private static Loaded For(Accelerator acc) => Cache.GetValue(acc, _ => new Loaded());

    private static int GroupSize(Accelerator acc, string op, int groupSize)
    {
        int warp = acc.WarpSize;
        int gs = groupSize == 0 ? Math.Max(warp, Math.Min(GpuGroupSize, acc.MaxNumThreadsPerGroup) / warp * warp) : groupSize;
        if (gs <= 0 || gs % warp != 0 || gs > acc.MaxNumThreadsPerGroup)
            throw new ArgumentException($"{op}: group size {gs} must be a positive multiple of the warp size {warp}, at most {acc.MaxNumThreadsPerGroup}");
        return gs;
    }

    private static KernelConfig Config(long tiles, int gs) => new((int)Math.Min(tiles, 1 << 20), gs);

    private static AttentionParams Params(string op, int b, int h, int l, int s, int d, double scale, double p, ulong seed, ulong offset)
    {
        if (b < 0 || h < 0 || l < 0 || s < 0 || d < 0) throw new ArgumentException($"{op}: negative shape B={b}, H={h}, L={l}, S={s}, D={d}");
        if (d > DMax) throw new ArgumentException($"{op}: head dimension {d} (q [{b},{h},{l},{d}]) exceeds the kernel's maximum {DMax}");
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1]");
        if ((long)b * h * l * Math.Max(s, d) > int.MaxValue || (long)b * h * s * d > int.MaxValue)
            throw new ArgumentException($"{op}: [{b},{h},{l},{s}] with D={d} is too large for 32-bit tile counts");
        return new AttentionParams
        {
            B = b, H = h, L = l, S = s, D = d,
            Scale = (float)scale, Drop = DropoutKernels.KeepScale(p), Thr = DropoutKernels.Threshold(p),
            Flags = p > 0 ? FlagDropout : 0, Seed = seed, Offset = offset,
        };
    }

    /// <summary>Whether the rows of an operand laid out by <paramref name="x"/> in <paramref name="view"/> can move as float4:
    /// D, the view's address (16-byte aligned), the layout's offset and strides all multiples of 4 elements.</summary>
    internal static bool Vec(ArrayView<float> view, AttentionHeadsLayout x, int d)
        => (d & 3) == 0 && view.Length > 0 && view.LoadEffectiveAddressAsPtr().ToInt64() % 16 == 0
           && ((x.Offset | x.B | x.H | x.R) & 3) == 0;

    /// <summary>The <c>FlagVec*</c> bits of the operands given (null: not used by the launch).</summary>
    private static int VecFlags(int d, AttentionLayouts x, ArrayView<float>? q = null, ArrayView<float>? k = null, ArrayView<float>? v = null,
        ArrayView<float>? go = null, ArrayView<float>? o = null, ArrayView<float>? gq = null, ArrayView<float>? gk = null, ArrayView<float>? gv = null)
    {
        int f = 0;
        if (q is { } a && Vec(a, x.Q, d)) f |= FlagVecQ;
        if (k is { } b && Vec(b, x.K, d)) f |= FlagVecK;
        if (v is { } c && Vec(c, x.V, d)) f |= FlagVecV;
        if (go is { } e && Vec(e, x.GO, d)) f |= FlagVecGO;
        if (o is { } g && Vec(g, x.O, d)) f |= FlagVecO;
        if (gq is { } h && Vec(h, x.GQ, d)) f |= FlagVecGQ;
        if (gk is { } i && Vec(i, x.GK, d)) f |= FlagVecGK;
        if (gv is { } j && Vec(j, x.GV, d)) f |= FlagVecGV;
        return f;
    }

    private static void Need(string op, string name, ArrayView<float> view, long n, string shape)
    {
        if (view.Length < n) throw new ArgumentException($"{op}: {name} has {view.Length} elements, needs {n} for {shape}");
    }

    /// <summary>The operand [b,h,rows,d] laid out by <paramref name="x"/> lies inside <paramref name="view"/> (non-negative offset and strides).</summary>
    private static void Need(string op, string name, ArrayView<float> view, AttentionHeadsLayout x, int b, int h, int rows, int d, string shape)
    {
        if (x.Offset < 0 || x.B < 0 || x.H < 0 || x.R < 0)
            throw new ArgumentException($"{op}: {name} layout {x} has a negative offset or stride ({shape})");
        if ((long)b * h * rows * d == 0) return;
        long end = x.Offset + (b - 1) * x.B + (h - 1) * x.H + (rows - 1) * x.R + d;   // one past the last element
        if (end > view.Length)
            throw new ArgumentException($"{op}: {name} layout {x} reaches element {end - 1}, the view has {view.Length} elements ({shape})");
    }

    /// <summary>
    /// Fused attention forward: o [B,H,L,D] and probs [B,H,L,S] (softmax before dropout) from contiguous q [B,H,L,D],
    /// k, v [B,H,S,D] and an optional additive mask laid out by <paramref name="maskLayout"/> (zero strides broadcast).
    /// Dropout with probability <paramref name="dropoutP"/> from the Philox stream at (seed, offset).
    /// Either output may be null (not both): without <paramref name="o"/> the kernel stops after the softmax (probabilities
    /// only: no dropout, no P·V); without <paramref name="probs"/> nothing [B,H,L,S] is written, which needs S ≤ <see cref="SCap"/>
    /// (longer rows keep their scores in probs: pass a scratch of that size). What is written is bitwise the same.
    /// </summary>
    public static void Forward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float>? mask, AttentionMaskLayout maskLayout, ArrayView<float>? o, ArrayView<float>? probs,
        int b, int h, int l, int s, int d, double scale, double dropoutP, ulong seed, ulong offset, int groupSize = 0)
        => Forward(acc, stream, q, k, v, mask, maskLayout, o, probs, AttentionLayouts.Dense(h, l, s, d), b, h, l, s, d, scale, dropoutP, seed, offset, groupSize);

    /// <summary>
    /// <see cref="Forward(Accelerator, AcceleratorStream?, ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}?, AttentionMaskLayout, ArrayView{float}?, ArrayView{float}?, int, int, int, int, int, double, double, ulong, ulong, int)"/>
    /// with q, k, v and o laid out by <paramref name="layouts"/> (Q, K, V, O; the gradient entries are ignored): strided
    /// [B,H,R,D] operands with unit stride on D, read and written in place, bitwise the results of contiguous ones.
    /// </summary>
    public static void Forward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float>? mask, AttentionMaskLayout maskLayout, ArrayView<float>? o, ArrayView<float>? probs, AttentionLayouts layouts,
        int b, int h, int l, int s, int d, double scale, double dropoutP, ulong seed, ulong offset, int groupSize = 0)
    {
        const string op = "attention (cuda)";
        ArgumentNullException.ThrowIfNull(acc);
        var a = Params(op, b, h, l, s, d, scale, dropoutP, seed, offset);
        a.X = layouts;
        string shape = $"q [{b},{h},{l},{d}], k/v [{b},{h},{s},{d}]";
        long np = (long)b * h * l * s;
        Need(op, "q", q, layouts.Q, b, h, l, d, shape); Need(op, "k", k, layouts.K, b, h, s, d, shape); Need(op, "v", v, layouts.V, b, h, s, d, shape);
        if (o is null && probs is null) throw new ArgumentException($"{op}: neither the output nor the probabilities asked for ({shape})");
        if (o is { } ov) Need(op, "o", ov, layouts.O, b, h, l, d, shape); else a.Flags |= FlagNoOutput;
        if (probs is { } pv) Need(op, "probs", pv, np, shape);
        else if (s > SCap) throw new ArgumentException($"{op}: S = {s} > {SCap} keeps the scores in probs: a probs buffer of {np} floats is required ({shape})");
        else a.Flags |= FlagNoProbs;
        if (mask is { } mv && np > 0)
        {
            var m = maskLayout;
            if (m.Offset < 0 || m.B < 0 || m.H < 0 || m.L < 0 || m.S < 0)
                throw new ArgumentException($"{op}: mask layout {m} has a negative offset or stride");
            long last = m.Offset + (b - 1) * m.B + (h - 1) * m.H + (l - 1) * m.L + (s - 1) * m.S;
            if (last >= mv.Length)
                throw new ArgumentException($"{op}: mask layout {m} reaches element {last}, the mask has {mv.Length} ([{b},{h},{l},{s}])");
            a.Flags |= FlagMask;
            a.MaskOff = m.Offset; a.MaskSB = m.B; a.MaskSH = m.H; a.MaskSL = m.L; a.MaskSS = m.S;
        }
        if ((long)b * h * l == 0) return;
        a.Flags |= VecFlags(d, layouts, q: q, k: k, v: v, o: o);
        int gs = GroupSize(acc, op, groupSize);
        var kern = For(acc).Fwd ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(ForwardKernel);
        long tiles = (long)b * h * ((l + QT - 1) / QT);
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, Config(tiles, gs), q, k, v, mask ?? q, o ?? q, probs ?? q, a);
    }

    /// <summary>Floats of workspace <see cref="Backward"/> needs: one per element of probs.</summary>
    public static long BackwardWorkspace(int b, int h, int l, int s) => (long)b * h * l * s;

    /// <summary>
    /// Attention backward: gq [B,H,L,D], gk and gv [B,H,S,D] (all contiguous, overwritten) from the saved probs, go and the
    /// same dropout stream. <paramref name="workspace"/> holds <see cref="BackwardWorkspace"/> floats (gS).
    /// </summary>
    public static void Backward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> probs, ArrayView<float> go, ArrayView<float> gq, ArrayView<float> gk, ArrayView<float> gv, ArrayView<float> workspace,
        int b, int h, int l, int s, int d, double scale, double dropoutP, ulong seed, ulong offset, int groupSize = 0)
        => Backward(acc, stream, q, k, v, probs, go, gq, gk, gv, workspace, AttentionLayouts.Dense(h, l, s, d), b, h, l, s, d, scale, dropoutP, seed, offset, groupSize);

    /// <summary>
    /// The backward with q, k, v, go, gq, gk, gv laid out by <paramref name="layouts"/> (the O entry is ignored); gq, gk, gv
    /// are overwritten row by row in place. Bitwise the results of contiguous operands.
    /// </summary>
    public static void Backward(Accelerator acc, AcceleratorStream? stream, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> probs, ArrayView<float> go, ArrayView<float> gq, ArrayView<float> gk, ArrayView<float> gv, ArrayView<float> workspace,
        AttentionLayouts layouts, int b, int h, int l, int s, int d, double scale, double dropoutP, ulong seed, ulong offset, int groupSize = 0)
    {
        const string op = "attention backward (cuda)";
        ArgumentNullException.ThrowIfNull(acc);
        var a = Params(op, b, h, l, s, d, scale, dropoutP, seed, offset);
        a.X = layouts;
        string shape = $"q [{b},{h},{l},{d}], k/v [{b},{h},{s},{d}]";
        long np = (long)b * h * l * s;
        var x = layouts;
        Need(op, "q", q, x.Q, b, h, l, d, shape); Need(op, "k", k, x.K, b, h, s, d, shape); Need(op, "v", v, x.V, b, h, s, d, shape);
        Need(op, "probs", probs, np, shape); Need(op, "go", go, x.GO, b, h, l, d, shape); Need(op, "gq", gq, x.GQ, b, h, l, d, shape);
        Need(op, "gk", gk, x.GK, b, h, s, d, shape); Need(op, "gv", gv, x.GV, b, h, s, d, shape); Need(op, "workspace", workspace, np, shape);
        a.Flags |= VecFlags(d, layouts, q: q, k: k, v: v, go: go, gq: gq, gk: gk, gv: gv);
        int gs = GroupSize(acc, op, groupSize);
        var st = stream ?? acc.DefaultStream;
        var loaded = For(acc);
        if ((long)b * h * l > 0)
        {
            var k1 = loaded.BwdQ ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(BackwardQKernel);
            CudaRuntime.CountLaunch();
            k1(st, Config((long)b * h * ((l + QT - 1) / QT), gs), k, v, probs, go, gq, workspace, a);
        }
        if ((long)b * h * s > 0)
        {
            var k2 = loaded.BwdKV ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(BackwardKVKernel);
            CudaRuntime.CountLaunch();
            k2(st, Config((long)b * h * ((s + KT2 - 1) / KT2), gs), q, probs, go, workspace, gk, gv, a);
        }
    }
}
