using ILGPU;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>The 8×8 accumulators of one micro-tile: row r, column j is c{r}{j} (rows 0–3 and 4–7 are the two row quads).</summary>
internal struct Acc8x8
{
    public float c00, c01, c02, c03, c04, c05, c06, c07;
    public float c10, c11, c12, c13, c14, c15, c16, c17;
    public float c20, c21, c22, c23, c24, c25, c26, c27;
    public float c30, c31, c32, c33, c34, c35, c36, c37;
    public float c40, c41, c42, c43, c44, c45, c46, c47;
    public float c50, c51, c52, c53, c54, c55, c56, c57;
    public float c60, c61, c62, c63, c64, c65, c66, c67;
    public float c70, c71, c72, c73, c74, c75, c76, c77;
}

/// <summary>
/// The 8×8 float4 micro-tile step shared by the fp32 SGEMM (<see cref="GemmKernels"/> v5) and the implicit-GEMM
/// convolutions (<see cref="ConvKernels"/> v2–v4): per k step a thread reads two A quads and two B quads from k-major shared
/// tiles (quads i and i + halfQuads of row k) and adds their 64 products to its accumulators, each as <c>c += a·b</c> in
/// a fixed order, so every kernel built on it sums an output's terms in k order exactly as the others do.
/// </summary>
internal static class Micro8x8
{
    /// <summary>64 FMAs of one k step: A quads (ab, ab + halfQuads) and B quads (bb, bb + halfQuads) from shared memory.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Step(ref Acc8x8 c, ArrayView<F4> As4, ArrayView<F4> Bs4, int ab, int bb, int halfQuads) =>
        Fma(ref c, As4[ab], As4[ab + halfQuads], Bs4[bb], Bs4[bb + halfQuads]);

    /// <summary><see cref="Step(ref Acc8x8, ArrayView{F4}, ArrayView{F4}, int, int, int)"/> with 64-bit indices: called with a
    /// base index plus constant offsets, so ptxas folds the offsets into the shared loads' immediates.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Step(ref Acc8x8 c, ArrayView<F4> As4, ArrayView<F4> Bs4, long ab, long bb, int halfQuads) =>
        Fma(ref c, As4[ab], As4[ab + halfQuads], Bs4[bb], Bs4[bb + halfQuads]);

    /// <summary>The 8 k steps of a K tile, unrolled, with 64-bit indices: step kk reads A quads at ab + kk·aRowQuads (+ halfQuads)
    /// and B quads at bb + kk·bRowQuads (+ halfQuads), so each step's four LDS.128 take constant offsets from two bases and no
    /// address arithmetic sits between the FMAs (callers pass compile-time row strides).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Tile8(ref Acc8x8 c, ArrayView<F4> As4, ArrayView<F4> Bs4, long ab, long bb, int aRowQuads, int bRowQuads, int halfQuads)
    {
        Step(ref c, As4, Bs4, ab, bb, halfQuads);
        Step(ref c, As4, Bs4, ab + aRowQuads, bb + bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 2 * aRowQuads, bb + 2 * bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 3 * aRowQuads, bb + 3 * bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 4 * aRowQuads, bb + 4 * bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 5 * aRowQuads, bb + 5 * bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 6 * aRowQuads, bb + 6 * bRowQuads, halfQuads);
        Step(ref c, As4, Bs4, ab + 7 * aRowQuads, bb + 7 * bRowQuads, halfQuads);
    }

    /// <summary>The 64 FMAs of one k step: A quads al (rows 0–3), ah (rows 4–7), B quads bl, bh (columns 0–3, 4–7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Fma(ref Acc8x8 c, F4 al, F4 ah, F4 bl, F4 bh)
    {
        float a0 = al.X, a1 = al.Y, a2 = al.Z, a3 = al.W, a4 = ah.X, a5 = ah.Y, a6 = ah.Z, a7 = ah.W;
        float b0 = bl.X, b1 = bl.Y, b2 = bl.Z, b3 = bl.W, b4 = bh.X, b5 = bh.Y, b6 = bh.Z, b7 = bh.W;
        c.c00 += a0 * b0; c.c01 += a0 * b1; c.c02 += a0 * b2; c.c03 += a0 * b3; c.c04 += a0 * b4; c.c05 += a0 * b5; c.c06 += a0 * b6; c.c07 += a0 * b7;
        c.c10 += a1 * b0; c.c11 += a1 * b1; c.c12 += a1 * b2; c.c13 += a1 * b3; c.c14 += a1 * b4; c.c15 += a1 * b5; c.c16 += a1 * b6; c.c17 += a1 * b7;
        c.c20 += a2 * b0; c.c21 += a2 * b1; c.c22 += a2 * b2; c.c23 += a2 * b3; c.c24 += a2 * b4; c.c25 += a2 * b5; c.c26 += a2 * b6; c.c27 += a2 * b7;
        c.c30 += a3 * b0; c.c31 += a3 * b1; c.c32 += a3 * b2; c.c33 += a3 * b3; c.c34 += a3 * b4; c.c35 += a3 * b5; c.c36 += a3 * b6; c.c37 += a3 * b7;
        c.c40 += a4 * b0; c.c41 += a4 * b1; c.c42 += a4 * b2; c.c43 += a4 * b3; c.c44 += a4 * b4; c.c45 += a4 * b5; c.c46 += a4 * b6; c.c47 += a4 * b7;
        c.c50 += a5 * b0; c.c51 += a5 * b1; c.c52 += a5 * b2; c.c53 += a5 * b3; c.c54 += a5 * b4; c.c55 += a5 * b5; c.c56 += a5 * b6; c.c57 += a5 * b7;
        c.c60 += a6 * b0; c.c61 += a6 * b1; c.c62 += a6 * b2; c.c63 += a6 * b3; c.c64 += a6 * b4; c.c65 += a6 * b5; c.c66 += a6 * b6; c.c67 += a6 * b7;
        c.c70 += a7 * b0; c.c71 += a7 * b1; c.c72 += a7 * b2; c.c73 += a7 * b3; c.c74 += a7 * b4; c.c75 += a7 * b5; c.c76 += a7 * b6; c.c77 += a7 * b7;
    }
}
