using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>Four 32-bit words: a 128-bit shared-memory store (st.shared.v4) when written through a view of this type.</summary>
public struct U4
{
    public uint X, Y, Z, W;
}

/// <summary>The compile-time operand layouts of <see cref="TensorCoreGemm.Kernel128x128{TL}"/>: one compiled kernel per
/// (TransA, TransB), so no layout is decided at run time inside the K loop.</summary>
internal interface ITcLayout
{
    static abstract bool TransA { get; }
    static abstract bool TransB { get; }
}

internal struct TcLayoutNN : ITcLayout { public static bool TransA => false; public static bool TransB => false; }
internal struct TcLayoutNT : ITcLayout { public static bool TransA => false; public static bool TransB => true; }
internal struct TcLayoutTN : ITcLayout { public static bool TransA => true; public static bool TransB => false; }
internal struct TcLayoutTT : ITcLayout { public static bool TransA => true; public static bool TransB => true; }

// ---------------------------------------------------------------------------------------------------------------------
// The 128×128 tile (issue 7; TF32 only). Written after the 128×64 tile's SASS showed its K loop bound by integer work
// (1,347 instructions for 24 HMMA): what changes is the work per HMMA, not the arithmetic.
//
// - A group of 8 warps computes a 128×128 tile of C; warp w owns the 64×32 sub-tile at rows 64·(w / 4), columns 32·(w % 4):
//   4 m16 × 4 n8 mma tiles, 64 fp32 accumulators per lane in the asm-named registers fvle0..63 (tile (mi, nj) in
//   fvle(16mi + 4nj) .. +3 = its c0..c3). Per 16-deep stage a warp reads 32 A words and 16 B words per lane and issues 32
//   TF32 m16n8k8 mma (the 128×64 tile: 24 words for 16 mma).
// - Each operand is staged in the layout it has in global memory, so every global load and every shared store moves
//   16 bytes: "k-contiguous" tiles (A not transposed, B transposed) as T[r·20 + k] (128 rows of 16 k), "k-outer" tiles
//   (A transposed, B not transposed) as T[k·136 + r] (16 rows of 128). The fragment reads of lanes (g, t) touch words
//   20g + t or 136t + g ≡ 8t + g (mod 32): 32 distinct banks in every layout.
// - The layout is a type argument (TcLayoutNN … TT): ptxas sees one layout per kernel, and every fragment word is the
//   lane's base plus a constant (LDS immediates).
// - Per stage a thread prefetches two float4 of A and two of B (128-bit loads when the operand is 16-byte aligned with
//   ld % 4 = 0 and the stage lies inside the matrix; else four bounds-checked scalar loads each), before the stage's mma,
//   and stores them rounded (or as they are, when the caller rounded that operand) into the other buffer after them: one
//   barrier per stage.
// - Shared memory: 10,240 words (40 KB): two stages of A (2,560 words) and B (2,560 words). After the K loop the C tile
//   goes out in two halves of 64 rows through the same buffer (C[r·136 + n], 8,704 words): the warps of the half write
//   their accumulators, the group stores the half coalesced with the epilogue.
// - Every C element sees the same mma instructions in the same order as on the other tiles (k8 blocks ascending from +0),
//   so the three tiles give the same bits; the portable path (off CUDA) emulates the warps' mma from the same fragment
//   words, read back through the ISA layouts, as the other tiles' do.
// ---------------------------------------------------------------------------------------------------------------------

public static partial class TensorCoreGemm
{
    /// <summary>Rows of C per group of the 128×128 tile (2 warp rows × 64).</summary>
    public const int BM3 = 128;
    /// <summary>Columns of C per group of the 128×128 tile (4 warp columns × 32).</summary>
    public const int BN3 = 128;

    internal const int KcStride = BK + 4;                  // k-contiguous tile: T[r·20 + k], 128 rows
    internal const int KoStride = BM3 + 8;                 // k-outer tile: T[k·136 + r], 16 rows
    internal const int Op3Words = BM3 * KcStride;          // 2,560 words per operand buffer (≥ 16·136 = 2,176)
    internal const int Stage3Words = 2 * Op3Words;         // A, then B
    internal const int Shared3Words = 2 * Stage3Words;     // 10,240 words (40 KB): two stages
    internal const int C3Stride = BN3 + 8;                 // the C half-tile C[r·136 + n]
    internal const int C3Words = BM3 * C3Stride;           // the portable path's whole emulated C tile (dynamic shared)

    /// <summary>Word of an operand tile where lane (g, t)'s fragments start: rows (m of A, n of B) r0 + g, k t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long Lane3(bool kOuter, int r0, int g, int t) => kOuter ? (long)t * KoStride + r0 + g : (long)(r0 + g) * KcStride + t;

    /// <summary>Offset from <see cref="Lane3"/> of the word at row offset <paramref name="dr"/> and k offset <paramref name="dk"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Off3(bool kOuter, int dr, int dk) => kOuter ? dk * KoStride + dr : dr * KcStride + dk;

    /// <summary>Offset of A register i (0..3) of the warp's m16 tile mi (0..3) at k offset ks (0 or 8): ISA row g + 8·(i odd),
    /// column t + 4·(i ≥ 2).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int A3Off(bool ta, int mi, int ks, int i) => Off3(ta, 16 * mi + ((i & 1) != 0 ? 8 : 0), ks + ((i & 2) != 0 ? 4 : 0));

    /// <summary>Offset of B register i (0..1) of the warp's n8 tile nj (0..3) at k offset ks: ISA k t + 4i, column g.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int B3Off(bool tb, int nj, int ks, int i) => Off3(!tb, 8 * nj, ks + 4 * i);

    /// <summary>Where accumulator i (0..3) of mma tile (mi, nj) of lane (g, t) of the warp at column c0 goes in a C half-tile
    /// (rows relative to the warp's first row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int CIndex3(int c0, int g, int t, int mi, int nj, int i)
        => (16 * mi + g + (i >= 2 ? 8 : 0)) * C3Stride + c0 + 8 * nj + 2 * t + (i & 1);

    /// <summary>Declares the 64 accumulator registers of the 128×128 tile; once per kernel, on CUDA only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DeclareAccumulators3() => CudaAsm.Emit(".reg .f32 fvle<64>;");

    /// <summary>Sets the 64 accumulators to +0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ZeroAccumulators3()
    {
        CudaAsm.Emit("mov.b32 fvle0, 0; mov.b32 fvle1, 0; mov.b32 fvle2, 0; mov.b32 fvle3, 0; mov.b32 fvle4, 0; mov.b32 fvle5, 0; mov.b32 fvle6, 0; mov.b32 fvle7, 0; " +
            "mov.b32 fvle8, 0; mov.b32 fvle9, 0; mov.b32 fvle10, 0; mov.b32 fvle11, 0; mov.b32 fvle12, 0; mov.b32 fvle13, 0; mov.b32 fvle14, 0; mov.b32 fvle15, 0; " +
            "mov.b32 fvle16, 0; mov.b32 fvle17, 0; mov.b32 fvle18, 0; mov.b32 fvle19, 0; mov.b32 fvle20, 0; mov.b32 fvle21, 0; mov.b32 fvle22, 0; mov.b32 fvle23, 0; " +
            "mov.b32 fvle24, 0; mov.b32 fvle25, 0; mov.b32 fvle26, 0; mov.b32 fvle27, 0; mov.b32 fvle28, 0; mov.b32 fvle29, 0; mov.b32 fvle30, 0; mov.b32 fvle31, 0;");
        CudaAsm.Emit("mov.b32 fvle32, 0; mov.b32 fvle33, 0; mov.b32 fvle34, 0; mov.b32 fvle35, 0; mov.b32 fvle36, 0; mov.b32 fvle37, 0; mov.b32 fvle38, 0; mov.b32 fvle39, 0; " +
            "mov.b32 fvle40, 0; mov.b32 fvle41, 0; mov.b32 fvle42, 0; mov.b32 fvle43, 0; mov.b32 fvle44, 0; mov.b32 fvle45, 0; mov.b32 fvle46, 0; mov.b32 fvle47, 0; " +
            "mov.b32 fvle48, 0; mov.b32 fvle49, 0; mov.b32 fvle50, 0; mov.b32 fvle51, 0; mov.b32 fvle52, 0; mov.b32 fvle53, 0; mov.b32 fvle54, 0; mov.b32 fvle55, 0; " +
            "mov.b32 fvle56, 0; mov.b32 fvle57, 0; mov.b32 fvle58, 0; mov.b32 fvle59, 0; mov.b32 fvle60, 0; mov.b32 fvle61, 0; mov.b32 fvle62, 0; mov.b32 fvle63, 0;");
    }

    // The mma of tile (mi, nj): accumulators fvle(16mi + 4nj) .. +3 (constants: ILGPU needs the asm text at compile time).
    private const string M00 = Tf32 + "{fvle0,fvle1,fvle2,fvle3}" + Ops + "{fvle0,fvle1,fvle2,fvle3};";
    private const string M01 = Tf32 + "{fvle4,fvle5,fvle6,fvle7}" + Ops + "{fvle4,fvle5,fvle6,fvle7};";
    private const string M02 = Tf32 + "{fvle8,fvle9,fvle10,fvle11}" + Ops + "{fvle8,fvle9,fvle10,fvle11};";
    private const string M03 = Tf32 + "{fvle12,fvle13,fvle14,fvle15}" + Ops + "{fvle12,fvle13,fvle14,fvle15};";
    private const string M10 = Tf32 + "{fvle16,fvle17,fvle18,fvle19}" + Ops + "{fvle16,fvle17,fvle18,fvle19};";
    private const string M11 = Tf32 + "{fvle20,fvle21,fvle22,fvle23}" + Ops + "{fvle20,fvle21,fvle22,fvle23};";
    private const string M12 = Tf32 + "{fvle24,fvle25,fvle26,fvle27}" + Ops + "{fvle24,fvle25,fvle26,fvle27};";
    private const string M13 = Tf32 + "{fvle28,fvle29,fvle30,fvle31}" + Ops + "{fvle28,fvle29,fvle30,fvle31};";
    private const string M20 = Tf32 + "{fvle32,fvle33,fvle34,fvle35}" + Ops + "{fvle32,fvle33,fvle34,fvle35};";
    private const string M21 = Tf32 + "{fvle36,fvle37,fvle38,fvle39}" + Ops + "{fvle36,fvle37,fvle38,fvle39};";
    private const string M22 = Tf32 + "{fvle40,fvle41,fvle42,fvle43}" + Ops + "{fvle40,fvle41,fvle42,fvle43};";
    private const string M23 = Tf32 + "{fvle44,fvle45,fvle46,fvle47}" + Ops + "{fvle44,fvle45,fvle46,fvle47};";
    private const string M30 = Tf32 + "{fvle48,fvle49,fvle50,fvle51}" + Ops + "{fvle48,fvle49,fvle50,fvle51};";
    private const string M31 = Tf32 + "{fvle52,fvle53,fvle54,fvle55}" + Ops + "{fvle52,fvle53,fvle54,fvle55};";
    private const string M32 = Tf32 + "{fvle56,fvle57,fvle58,fvle59}" + Ops + "{fvle56,fvle57,fvle58,fvle59};";
    private const string M33 = Tf32 + "{fvle60,fvle61,fvle62,fvle63}" + Ops + "{fvle60,fvle61,fvle62,fvle63};";

    /// <summary>One TF32 k8 step (k offset <paramref name="ks"/>, a constant at each call) of one warp's 64×32 sub-tile: the
    /// four n8 B fragments read once (8 words), then per m16 tile its A fragment (4 words) and its four mma.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Tf32Step3(ArrayView<uint> As, ArrayView<uint> Bs, long al, long bl, bool ta, bool tb, int ks)
    {
        uint b00 = Bs[bl + B3Off(tb, 0, ks, 0)], b01 = Bs[bl + B3Off(tb, 0, ks, 1)], b10 = Bs[bl + B3Off(tb, 1, ks, 0)], b11 = Bs[bl + B3Off(tb, 1, ks, 1)];
        uint b20 = Bs[bl + B3Off(tb, 2, ks, 0)], b21 = Bs[bl + B3Off(tb, 2, ks, 1)], b30 = Bs[bl + B3Off(tb, 3, ks, 0)], b31 = Bs[bl + B3Off(tb, 3, ks, 1)];
        uint a0 = As[al + A3Off(ta, 0, ks, 0)], a1 = As[al + A3Off(ta, 0, ks, 1)], a2 = As[al + A3Off(ta, 0, ks, 2)], a3 = As[al + A3Off(ta, 0, ks, 3)];
        CudaAsm.Emit(M00, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M01, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M02, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M03, a0, a1, a2, a3, b30, b31);
        a0 = As[al + A3Off(ta, 1, ks, 0)]; a1 = As[al + A3Off(ta, 1, ks, 1)]; a2 = As[al + A3Off(ta, 1, ks, 2)]; a3 = As[al + A3Off(ta, 1, ks, 3)];
        CudaAsm.Emit(M10, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M11, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M12, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M13, a0, a1, a2, a3, b30, b31);
        a0 = As[al + A3Off(ta, 2, ks, 0)]; a1 = As[al + A3Off(ta, 2, ks, 1)]; a2 = As[al + A3Off(ta, 2, ks, 2)]; a3 = As[al + A3Off(ta, 2, ks, 3)];
        CudaAsm.Emit(M20, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M21, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M22, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M23, a0, a1, a2, a3, b30, b31);
        a0 = As[al + A3Off(ta, 3, ks, 0)]; a1 = As[al + A3Off(ta, 3, ks, 1)]; a2 = As[al + A3Off(ta, 3, ks, 2)]; a3 = As[al + A3Off(ta, 3, ks, 3)];
        CudaAsm.Emit(M30, a0, a1, a2, a3, b00, b01); CudaAsm.Emit(M31, a0, a1, a2, a3, b10, b11);
        CudaAsm.Emit(M32, a0, a1, a2, a3, b20, b21); CudaAsm.Emit(M33, a0, a1, a2, a3, b30, b31);
    }

    /// <summary>Writes the lane's 64 accumulators into a C half-tile at <see cref="CIndex3"/> (CUDA only): one base address,
    /// 64 immediate offsets.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SpillAccumulators3(ArrayView<float> Cs, int c0, int g, int t)
    {
        int b0 = CIndex3(c0, g, t, 0, 0, 0);
        var v = Cs.SubView(b0, Cs.Length - b0);
        CudaAsm.Emit("mov.b32 %0, fvle0;", out v[CIndex3(0, 0, 0, 0, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvle1;", out v[CIndex3(0, 0, 0, 0, 0, 1)]); CudaAsm.Emit("mov.b32 %0, fvle2;", out v[CIndex3(0, 0, 0, 0, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvle3;", out v[CIndex3(0, 0, 0, 0, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle4;", out v[CIndex3(0, 0, 0, 0, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvle5;", out v[CIndex3(0, 0, 0, 0, 1, 1)]); CudaAsm.Emit("mov.b32 %0, fvle6;", out v[CIndex3(0, 0, 0, 0, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvle7;", out v[CIndex3(0, 0, 0, 0, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle8;", out v[CIndex3(0, 0, 0, 0, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvle9;", out v[CIndex3(0, 0, 0, 0, 2, 1)]); CudaAsm.Emit("mov.b32 %0, fvle10;", out v[CIndex3(0, 0, 0, 0, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvle11;", out v[CIndex3(0, 0, 0, 0, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle12;", out v[CIndex3(0, 0, 0, 0, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvle13;", out v[CIndex3(0, 0, 0, 0, 3, 1)]); CudaAsm.Emit("mov.b32 %0, fvle14;", out v[CIndex3(0, 0, 0, 0, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvle15;", out v[CIndex3(0, 0, 0, 0, 3, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle16;", out v[CIndex3(0, 0, 0, 1, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvle17;", out v[CIndex3(0, 0, 0, 1, 0, 1)]); CudaAsm.Emit("mov.b32 %0, fvle18;", out v[CIndex3(0, 0, 0, 1, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvle19;", out v[CIndex3(0, 0, 0, 1, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle20;", out v[CIndex3(0, 0, 0, 1, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvle21;", out v[CIndex3(0, 0, 0, 1, 1, 1)]); CudaAsm.Emit("mov.b32 %0, fvle22;", out v[CIndex3(0, 0, 0, 1, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvle23;", out v[CIndex3(0, 0, 0, 1, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle24;", out v[CIndex3(0, 0, 0, 1, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvle25;", out v[CIndex3(0, 0, 0, 1, 2, 1)]); CudaAsm.Emit("mov.b32 %0, fvle26;", out v[CIndex3(0, 0, 0, 1, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvle27;", out v[CIndex3(0, 0, 0, 1, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle28;", out v[CIndex3(0, 0, 0, 1, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvle29;", out v[CIndex3(0, 0, 0, 1, 3, 1)]); CudaAsm.Emit("mov.b32 %0, fvle30;", out v[CIndex3(0, 0, 0, 1, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvle31;", out v[CIndex3(0, 0, 0, 1, 3, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle32;", out v[CIndex3(0, 0, 0, 2, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvle33;", out v[CIndex3(0, 0, 0, 2, 0, 1)]); CudaAsm.Emit("mov.b32 %0, fvle34;", out v[CIndex3(0, 0, 0, 2, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvle35;", out v[CIndex3(0, 0, 0, 2, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle36;", out v[CIndex3(0, 0, 0, 2, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvle37;", out v[CIndex3(0, 0, 0, 2, 1, 1)]); CudaAsm.Emit("mov.b32 %0, fvle38;", out v[CIndex3(0, 0, 0, 2, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvle39;", out v[CIndex3(0, 0, 0, 2, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle40;", out v[CIndex3(0, 0, 0, 2, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvle41;", out v[CIndex3(0, 0, 0, 2, 2, 1)]); CudaAsm.Emit("mov.b32 %0, fvle42;", out v[CIndex3(0, 0, 0, 2, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvle43;", out v[CIndex3(0, 0, 0, 2, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle44;", out v[CIndex3(0, 0, 0, 2, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvle45;", out v[CIndex3(0, 0, 0, 2, 3, 1)]); CudaAsm.Emit("mov.b32 %0, fvle46;", out v[CIndex3(0, 0, 0, 2, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvle47;", out v[CIndex3(0, 0, 0, 2, 3, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle48;", out v[CIndex3(0, 0, 0, 3, 0, 0)]); CudaAsm.Emit("mov.b32 %0, fvle49;", out v[CIndex3(0, 0, 0, 3, 0, 1)]); CudaAsm.Emit("mov.b32 %0, fvle50;", out v[CIndex3(0, 0, 0, 3, 0, 2)]); CudaAsm.Emit("mov.b32 %0, fvle51;", out v[CIndex3(0, 0, 0, 3, 0, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle52;", out v[CIndex3(0, 0, 0, 3, 1, 0)]); CudaAsm.Emit("mov.b32 %0, fvle53;", out v[CIndex3(0, 0, 0, 3, 1, 1)]); CudaAsm.Emit("mov.b32 %0, fvle54;", out v[CIndex3(0, 0, 0, 3, 1, 2)]); CudaAsm.Emit("mov.b32 %0, fvle55;", out v[CIndex3(0, 0, 0, 3, 1, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle56;", out v[CIndex3(0, 0, 0, 3, 2, 0)]); CudaAsm.Emit("mov.b32 %0, fvle57;", out v[CIndex3(0, 0, 0, 3, 2, 1)]); CudaAsm.Emit("mov.b32 %0, fvle58;", out v[CIndex3(0, 0, 0, 3, 2, 2)]); CudaAsm.Emit("mov.b32 %0, fvle59;", out v[CIndex3(0, 0, 0, 3, 2, 3)]);
        CudaAsm.Emit("mov.b32 %0, fvle60;", out v[CIndex3(0, 0, 0, 3, 3, 0)]); CudaAsm.Emit("mov.b32 %0, fvle61;", out v[CIndex3(0, 0, 0, 3, 3, 1)]); CudaAsm.Emit("mov.b32 %0, fvle62;", out v[CIndex3(0, 0, 0, 3, 3, 2)]); CudaAsm.Emit("mov.b32 %0, fvle63;", out v[CIndex3(0, 0, 0, 3, 3, 3)]);
    }

    /// <summary>
    /// The portable path of the 128×128 tile: the 8 warps × 32 lanes × 64 registers of the CUDA path, emulated as
    /// <see cref="EmuStage"/> does for the 64×32 tile. Register c_i of mma tile (mi, nj) of lane (g, t) in warp w is the ISA
    /// layout's element (row g + 8·(i ≥ 2), column 2t + i%2) of that tile, summed in k order from the A/B elements read back
    /// out of the fragment words (<see cref="Lane3"/> + <see cref="A3Off"/> / <see cref="B3Off"/>: what the CUDA path loads) of
    /// the lane and register the ISA assigns them; accumulated into <paramref name="Ce"/> (C[r·136 + n], all 128 rows).
    /// <paramref name="swizzled"/>: the tiles are the asynchronous tile's swizzled ones, read through LaneBase4 + Imm4.
    /// </summary>
    internal static void EmuStage3(ArrayView<uint> As, ArrayView<uint> Bs, ArrayView<float> Ce, bool ta, bool tb, int tid, int nt, bool swizzled = false)
    {
        for (int e = tid; e < 8 * 32 * 64; e += nt)
        {
            int w = e >> 11, lane = (e >> 6) & 31, reg = e & 63, g = lane >> 2, t = lane & 3, mi = reg >> 4, nj = (reg >> 2) & 3, i = reg & 3;
            int wr = 64 * (w >> 2), wc = 32 * (w & 3);
            int ci = (wr + 16 * mi + g + (i >= 2 ? 8 : 0)) * C3Stride + wc + 8 * nj + 2 * t + (i & 1);
            int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
            float sum = Ce[ci];
            for (int ks = 0; ks < BK; ks += 8)
                for (int k = 0; k < 8; k++)
                {
                    // m16n8k8 tf32 (PTX ISA): A element (row, k) is register (row ≥ 8) + 2·(k ≥ 4) of lane (row % 8, k % 4);
                    // B element (k, n) is register (k ≥ 4) of lane (n, k % 4)
                    // (swizzled: the asynchronous tile's stage layout, TensorCoreGemm.Async.cs: the same element at row offset
                    // 16·mi + 8·(row ≥ 8) (A) or 8·nj (B) and k offset ks + 4·(k ≥ 4) from that lane's bases)
                    int adr = 16 * mi + (row >= 8 ? 8 : 0), dk = ks + (k >= 4 ? 4 : 0);
                    uint av = As[swizzled ? LaneBase4(ta, wr, row & 7, k & 3, Sel4(ta, adr, dk)) + Imm4(ta, adr, dk)
                        : Lane3(ta, wr, row & 7, k & 3) + A3Off(ta, mi, ks, (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0))];
                    uint bv = Bs[swizzled ? LaneBase4(!tb, wc, col, k & 3, Sel4(!tb, 8 * nj, dk)) + Imm4(!tb, 8 * nj, dk)
                        : Lane3(!tb, wc, col, k & 3) + B3Off(tb, nj, ks, k >= 4 ? 1 : 0)];
                    sum += Interop.IntAsFloat(av) * Interop.IntAsFloat(bv);
                }
            Ce[ci] = sum;
        }
    }

    // Staging. An operand tile is R = 128 rows (m of A, n of B) by 16 k, read as 512 float4 along the stored matrix's
    // contiguous dimension; slot p (0..255) holds float4 p and p + 256 (q = 0, 1). k-contiguous (A not transposed, B
    // transposed): float4 f covers row f / 4, k 4·(f % 4) .. +3; k-outer: k row f / 32, rows 4·(f % 32) .. +3.

    /// <summary>Stage row (m or n) of the first element of float4 q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Slot3R(bool kOuter, int p, int q) => kOuter ? 4 * (p & 31) : (p >> 2) + 64 * q;

    /// <summary>Stage k of the first element of float4 q of slot p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Slot3K(bool kOuter, int p, int q) => kOuter ? (p >> 5) + 8 * q : 4 * (p & 3);

    /// <summary>Where float4 q of slot p goes in an operand buffer (a multiple of 4 words).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Place3(bool kOuter, int p, int q) => Off3(kOuter, Slot3R(kOuter, p, q), Slot3K(kOuter, p, q));

    /// <summary>
    /// Float4 q of slot p of the stage at (r0, k0) of an operand with <paramref name="rows"/> rows (m or n) and leading
    /// dimension <paramref name="ld"/> at <paramref name="off"/>: one 128-bit load when <paramref name="fast"/> (the operand is
    /// 16-byte aligned and the whole stage lies inside it), else four loads with zero padding outside the matrix.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static F4 Fetch3(ArrayView<float> x, ArrayView<F4> x4, long off, int ld, bool kOuter, int r0, int k0, int rows, int kMax, int p, int q, bool fast)
    {
        int r = r0 + Slot3R(kOuter, p, q), k = k0 + Slot3K(kOuter, p, q);
        long gi = off + (kOuter ? (long)k * ld + r : (long)r * ld + k);
        if (fast) return x4[gi >> 2];
        F4 v;
        if (kOuter)
        {
            bool kIn = k < kMax;
            v.X = LoadIf(x, gi, kIn && r < rows); v.Y = LoadIf(x, gi + 1, kIn && r + 1 < rows);
            v.Z = LoadIf(x, gi + 2, kIn && r + 2 < rows); v.W = LoadIf(x, gi + 3, kIn && r + 3 < rows);
        }
        else
        {
            bool rIn = r < rows;
            v.X = LoadIf(x, gi, rIn && k < kMax); v.Y = LoadIf(x, gi + 1, rIn && k + 1 < kMax);
            v.Z = LoadIf(x, gi + 2, rIn && k + 2 < kMax); v.W = LoadIf(x, gi + 3, rIn && k + 3 < kMax);
        }
        return v;
    }

    /// <summary>A float4 as the tensor cores' operand words: TF32-rounded, or as it is when the caller rounded it already.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static U4 Words3(F4 v, bool round)
    {
        U4 u;
        if (round) { u.X = Tf32Word(v.X); u.Y = Tf32Word(v.Y); u.Z = Tf32Word(v.Z); u.W = Tf32Word(v.W); }
        else { u.X = Interop.FloatAsInt(v.X); u.Y = Interop.FloatAsInt(v.Y); u.Z = Interop.FloatAsInt(v.Z); u.W = Interop.FloatAsInt(v.W); }
        return u;
    }

    /// <summary><see cref="PrecisionRounding.Tf32Bits"/> written for the SASS: the NaN test as a float compare (one FSETP, not
    /// a mask and an integer compare), then one add or or, one mask: 4 instructions per operand instead of 6. The same bits for
    /// every input (NaN: quieted, sign and payload kept; finite values and infinities: the 13 low bits rounded to nearest,
    /// ties away; tested against Tf32Bits on every special class and random bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint Tf32Word(float x)
    {
        uint u = Interop.FloatAsInt(x);
        uint r = !float.IsNaN(x) ? u + 0x00001000u : u | 0x00400000u;
        return r & 0xFFFFE000u;
    }

    /// <summary>Stages slots <paramref name="slot0"/>, slot0 + <paramref name="step"/>, … (&lt; 256) of the stage at k0 into the
    /// operand buffers at word <paramref name="aBuf"/> / <paramref name="bBuf"/>: the first stage, and the slots no thread
    /// prefetches when the group has fewer than 256 threads (the CPU accelerator).</summary>
    private static void StageSlots3(ArrayView<float> a, ArrayView<F4> a4, ArrayView<float> b, ArrayView<F4> b4, GemmShape s, long aOff, long bOff,
        int m0, int n0, int k0, ArrayView<U4> sh4, int aBuf, int bBuf, int slot0, int step, bool ta, bool tb)
    {
        int f = s.Flags;
        bool fastA = (f & FlagVecA) != 0 && m0 + BM3 <= s.M && k0 + BK <= s.K, fastB = (f & FlagVecB) != 0 && n0 + BN3 <= s.N && k0 + BK <= s.K;
        bool roundA = (f & FlagRoundedA) == 0, roundB = (f & FlagRoundedB) == 0;
        for (int p = slot0; p < GpuGroupSize2; p += step)
            for (int q = 0; q < 2; q++)
            {
                sh4[(aBuf + Place3(ta, p, q)) >> 2] = Words3(Fetch3(a, a4, aOff, s.Lda, ta, m0, k0, s.M, s.K, p, q, fastA), roundA);
                sh4[(bBuf + Place3(!tb, p, q)) >> 2] = Words3(Fetch3(b, b4, bOff, s.Ldb, !tb, n0, k0, s.N, s.K, p, q, fastB), roundB);
            }
    }

    /// <summary>One stage's mma on the buffers at word <paramref name="cur"/>: the warp's 32 mma on CUDA, the emulated warps
    /// elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Compute3(ArrayView<uint> sh, ArrayView<float> Ce, int cur, long al, long bl, bool ta, bool tb, int tid, int nt)
    {
        var As = sh.SubView(cur, Op3Words);
        var Bs = sh.SubView(cur + Op3Words, Op3Words);
        if (CudaAsm.IsSupported)
        {
            Tf32Step3(As, Bs, al, bl, ta, tb, 0);
            Tf32Step3(As, Bs, al, bl, ta, tb, 8);
        }
        else
            EmuStage3(As, Bs, Ce, ta, tb, tid, nt);
    }

    /// <summary>Stores this thread's prefetched float4s into the stage at word <paramref name="nxt"/> (A at sa0, sa0 + saq; B at
    /// sb0, sb0 + sbq, relative to it), rounded unless the caller rounded that operand. Nobody reads that stage now: its last
    /// readers finished before the previous barrier.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put3(ArrayView<U4> sh4, int nxt, int sa0, int saq, int sb0, int sbq, bool roundA, bool roundB, F4 pa0, F4 pa1, F4 pb0, F4 pb1)
    {
        int sa = (nxt + sa0) >> 2, sb = (nxt + sb0) >> 2, saStep = saq >> 2, sbStep = sbq >> 2;
        if (roundA) { sh4[sa] = Words3(pa0, true); sh4[sa + saStep] = Words3(pa1, true); }
        else { sh4[sa] = Words3(pa0, false); sh4[sa + saStep] = Words3(pa1, false); }
        if (roundB) { sh4[sb] = Words3(pb0, true); sh4[sb + sbStep] = Words3(pb1, true); }
        else { sh4[sb] = Words3(pb0, false); sh4[sb + sbStep] = Words3(pb1, false); }
    }

    /// <summary>Half <paramref name="h"/> (rows 64h .. 64h + 63) of the C tile: on CUDA its 4 warps write their accumulators
    /// into the C half-tile (elsewhere the group copies that half of the emulated tile), then the group stores it coalesced
    /// with the epilogue.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreHalf3(ArrayView<float> c, ArrayView<float> bias, GemmShape s, long cOff, ArrayView<float> Cs, ArrayView<float> Ce,
        int m0, int n0, int h, int warp, int wc, int g, int t, int tid, int nt)
    {
        if (CudaAsm.IsSupported)
        {
            if ((warp >> 2) == h) SpillAccumulators3(Cs, wc, g, t);
        }
        else   // the portable path's half of the emulated tile, so the store below runs on the emulator as on CUDA
            for (int e = tid; e < 64 * BN3; e += nt) Cs[(e >> 7) * C3Stride + (e & (BN3 - 1))] = Ce[(64 * h + (e >> 7)) * C3Stride + (e & (BN3 - 1))];
        Group.Barrier();
        StoreBlock2(c, bias, s, cOff, Cs, 64 * BN3, BN3, C3Stride, m0 + 64 * h, n0, tid, nt);
        Group.Barrier();
    }

    /// <summary>The 128×128 kernel for the layout <typeparamref name="TL"/> (TF32 only; explicitly grouped; one C tile per group:
    /// grid x = column tiles, y = row tiles, z = batches, exactly; the launcher keeps larger grids on the 128×64 tile). On CUDA
    /// the group must be 256 threads; elsewhere any size ≤ 256.</summary>
    internal static void Kernel128x128<TL, TP>(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmShape s)
        where TL : struct, ITcLayout
        where TP : struct, ITcPart
    {
        var sh4 = SharedMemory.Allocate<U4>(Shared3Words / 4);
        var sh = sh4.Cast<uint>();
        var Cs = sh.Cast<float>();                 // a C half-tile after the k loop (CUDA path)
        var Ce = SharedMemory.GetDynamic<float>();  // the portable path's emulated accumulators (C3Words; non-CUDA launches only)
        bool ta = TL.TransA, tb = TL.TransB;
        var a4 = a.Cast<F4>();
        var b4 = b.Cast<F4>();
        int tid = Group.IdxX, nt = Group.DimX;
        int f = s.Flags;
        bool vecA = (f & FlagVecA) != 0, vecB = (f & FlagVecB) != 0, roundA = (f & FlagRoundedA) == 0, roundB = (f & FlagRoundedB) == 0;
        int kTiles = (s.K + BK - 1) / BK;
        int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3, wr = 64 * (warp >> 2), wc = 32 * (warp & 3);
        long al = Lane3(ta, wr, g, t), bl = Lane3(!tb, wc, g, t);
        if (CudaAsm.IsSupported) DeclareAccumulators3();
        int bt = Grid.IdxZ, m0 = Grid.IdxY * BM3, n0 = Grid.IdxX * BN3;
        long aOff = bt * s.StrideA, bOff = bt * s.StrideB, cOff = bt * s.StrideC;
        if (CudaAsm.IsSupported) ZeroAccumulators3();
        else
        {
            for (int e = tid; e < C3Words; e += nt) Ce[e] = 0f;
        }
        bool mIn = m0 + BM3 <= s.M, nIn = n0 + BN3 <= s.N;
        int sa0 = Place3(ta, tid, 0), saq = Place3(ta, tid, 1) - sa0, sb0 = Op3Words + Place3(!tb, tid, 0), sbq = Op3Words + Place3(!tb, tid, 1) - sb0;
        if (kTiles > 0)
        {
            // the first stage: with 256 threads (always on CUDA) each thread its own slot, as the loops below prefetch them
            // (so the emulator's 256-thread groups run this path too); smaller groups stage every slot
            if (CudaAsm.IsSupported || nt == GpuGroupSize2)
            {
                bool kIn = BK <= s.K;
                F4 pa0 = Fetch3(a, a4, aOff, s.Lda, ta, m0, 0, s.M, s.K, tid, 0, vecA && mIn && kIn), pa1 = Fetch3(a, a4, aOff, s.Lda, ta, m0, 0, s.M, s.K, tid, 1, vecA && mIn && kIn);
                F4 pb0 = Fetch3(b, b4, bOff, s.Ldb, !tb, n0, 0, s.N, s.K, tid, 0, vecB && nIn && kIn), pb1 = Fetch3(b, b4, bOff, s.Ldb, !tb, n0, 0, s.N, s.K, tid, 1, vecB && nIn && kIn);
                Put3(sh4, 0, sa0, saq, sb0, sbq, roundA, roundB, pa0, pa1, pb0, pb1);
            }
            else
                StageSlots3(a, a4, b, b4, s, aOff, bOff, m0, n0, 0, sh4, 0, Op3Words, tid, nt, ta, tb);
        }
        if (!TP.Copy)   // TcPart.NoGlobalLoads: stage 0 stays in its buffer, the other one holds zeros
            for (int e = tid; e < Stage3Words; e += nt) sh[Stage3Words + e] = 0u;
        Group.Barrier();
        // this thread's slot in float4 units for the 128-bit path (exact when the operand is 16-byte aligned, which
        // vecA / vecB say): stage 1's first float4, the second float4's distance, and one stage's step, so the loop
        // only adds (recomputed from (m0, k, slot) only on the bounds-checked path)
        long fa = (aOff + (ta ? (long)Slot3K(true, tid, 0) * s.Lda + m0 + Slot3R(true, tid, 0) : (long)(m0 + Slot3R(false, tid, 0)) * s.Lda + Slot3K(false, tid, 0))) >> 2;
        long fb = (bOff + (tb ? (long)(n0 + Slot3R(false, tid, 0)) * s.Ldb + Slot3K(false, tid, 0) : (long)Slot3K(true, tid, 0) * s.Ldb + n0 + Slot3R(true, tid, 0))) >> 2;
        long faq = (ta ? 8L * s.Lda : 64L * s.Lda) >> 2, fbq = (tb ? 64L * s.Ldb : 8L * s.Ldb) >> 2;
        long fak = ta ? 4L * s.Lda : 4, fbk = tb ? 4 : 4L * s.Ldb;   // BK = 16 elements of k, in float4 units
        // Stages kt < kFast prefetch a next stage that lies inside both operands (both 16-byte aligned): that loop
        // has no bounds test and no scalar path; the rest run the general loop.
        int kFast = vecA && vecB && mIn && nIn ? Math.Min(s.K / BK - 1, kTiles - 1) : 0;
        int kt = 0;
        for (; kt < kFast; kt++)
        {
            int cur = (kt & 1) * Stage3Words;
            fa += fak; fb += fbk;
            F4 pa0 = default, pa1 = default, pb0 = default, pb1 = default;
            if (TP.Copy) { pa0 = a4[fa]; pa1 = a4[fa + faq]; pb0 = b4[fb]; pb1 = b4[fb + fbq]; }
            if (TP.Math) Compute3(sh, Ce, cur, al, bl, ta, tb, tid, nt);
            if (TP.Copy)
            {
                Put3(sh4, Stage3Words - cur, sa0, saq, sb0, sbq, roundA, roundB, pa0, pa1, pb0, pb1);
                if (!CudaAsm.IsSupported)
                    StageSlots3(a, a4, b, b4, s, aOff, bOff, m0, n0, (kt + 1) * BK, sh4, Stage3Words - cur, Stage3Words - cur + Op3Words, tid + nt, nt, ta, tb);
            }
            Group.Barrier();
        }
        for (; kt < kTiles; kt++)
        {
            int cur = (kt & 1) * Stage3Words;
            bool more = kt + 1 < kTiles;
            int k1 = (kt + 1) * BK;
            // the next stage's float4s of this thread's slot, into registers before this stage's mma
            F4 pa0 = default, pa1 = default, pb0 = default, pb1 = default;
            if (more && TP.Copy)
            {
                bool kIn = k1 + BK <= s.K, fastA = vecA && mIn && kIn, fastB = vecB && nIn && kIn;
                pa0 = Fetch3(a, a4, aOff, s.Lda, ta, m0, k1, s.M, s.K, tid, 0, fastA);
                pa1 = Fetch3(a, a4, aOff, s.Lda, ta, m0, k1, s.M, s.K, tid, 1, fastA);
                pb0 = Fetch3(b, b4, bOff, s.Ldb, !tb, n0, k1, s.N, s.K, tid, 0, fastB);
                pb1 = Fetch3(b, b4, bOff, s.Ldb, !tb, n0, k1, s.N, s.K, tid, 1, fastB);
            }
            if (TP.Math) Compute3(sh, Ce, cur, al, bl, ta, tb, tid, nt);
            if (more && TP.Copy)
            {
                Put3(sh4, Stage3Words - cur, sa0, saq, sb0, sbq, roundA, roundB, pa0, pa1, pb0, pb1);
                if (!CudaAsm.IsSupported)
                    StageSlots3(a, a4, b, b4, s, aOff, bOff, m0, n0, k1, sh4, Stage3Words - cur, Stage3Words - cur + Op3Words, tid + nt, nt, ta, tb);
            }
            Group.Barrier();
        }
        // the last barrier of the k loop (or the first stage's) ends every read of the stage buffers; the C tile goes out in two
        // halves of 64 rows through them (written out twice, not as a loop: the audit's hot loop is the innermost loop with
        // math, and the epilogue's GELU loop would be nested one deeper than the stage loop)
        StoreHalf3(c, bias, s, cOff, Cs, Ce, m0, n0, 0, warp, wc, g, t, tid, nt);
        StoreHalf3(c, bias, s, cOff, Cs, Ce, m0, n0, 1, warp, wc, g, t, tid, nt);
    }
}
