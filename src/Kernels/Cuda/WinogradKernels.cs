using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Winograd F(2×2, 3×3) for the forward pass and the input gradient of 3×3, stride-1, padding-1 convolutions (issue 7; an A/B candidate behind
/// <see cref="CudaBackend.Winograd"/>, off by default until a device times it). Each 2×2 output tile of a plane comes
/// from a 4×4 input tile: Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, so a channel pair costs 16 multiplies per 2×2 outputs instead of
/// 36 (2.25× fewer). With P = N·⌈H/2⌉·⌈W/2⌉ tiles the 16 element-wise products over channels are 16 GEMMs:
/// M[ξ] (K × P) = U[ξ] (K × C) · V[ξ] (C × P), run as one strided-batched GEMM by the backend's matmul (so they follow
/// <see cref="Tensors.MatMulPrecision"/>: under Tf32 the transformed operands are rounded, not the raw ones).
/// <list type="bullet">
/// <item><see cref="WeightKernel"/>: U[ξ·K·C + k·C + c] from w[k, c, 3, 3];</item>
/// <item><see cref="InputKernel"/>: V[ξ·C·Pc + c·Pc + (p − p0)] for tiles p0 ≤ p &lt; p0 + Pc (a chunk of tiles, so the
/// workspace stays bounded), zero outside the input;</item>
/// <item><see cref="OutputKernel"/>: y[n, k, 2ty + a, 2tx + b] = (Aᵀ m A)[a, b] + bias[k] for the chunk's tiles, inside the plane.</item>
/// </list>
/// F(4×4, 3×3) (<see cref="Weight4Kernel"/>, <see cref="Input4Kernel"/>, <see cref="Output4Kernel"/>; fp32 only) does the
/// same with 6×6 input tiles, 36 transformed values and 4× fewer multiplies, at about ten times F(2×2)'s rounding error.
/// The results are those of a direct convolution up to fp32 rounding (the transforms add and halve; other sum orders),
/// not bit for bit — which is why it is a switch and not one of the kernel tuner's same-bits candidates.
/// </summary>
/// <summary>Which Winograd algorithm <see cref="CudaBackend.Winograd"/> runs 3×3 stride-1 convolutions with.</summary>
public enum WinogradMode
{
    /// <summary>The direct (implicit-GEMM) kernels.</summary>
    Off,
    /// <summary>F(2×2, 3×3): 16 transformed values per 2×2 output tile.</summary>
    F2x2,
    /// <summary>F(4×4, 3×3) in fp32 (36 per 4×4 tile), F(2×2, 3×3) under Tf32/Bf16.</summary>
    F4x4,
}

public static class WinogradKernels
{
    /// <summary>Geometry of one launch: input N × C × H × W, K output channels, output tiles of Tile × Tile (2: F(2×2, 3×3),
    /// 4: F(4×4, 3×3)), TilesH × TilesW of them per plane, the chunk of tiles [P0, P0 + Pc).</summary>
    public struct Shape
    {
        public int N, C, K, H, W, Tile, TilesH, TilesW, P0, Pc;
        /// <summary>1: write the transformed input tiles rounded to TF32 (F(2×2) only), as the tensor-core GEMM would round them.</summary>
        public int Round;
        /// <summary>Channel groups of the input and output transforms (set by their launchers): a work item is one tile and every
        /// Groups-th channel from its group's first.</summary>
        public int Groups;
    }

    /// <summary><paramref name="x"/> rounded to TF32 when <paramref name="round"/> (<see cref="TensorCoreGemm.Tf32Word"/>'s bits:
    /// the value the tensor-core GEMM would round it to; rounding a rounded value keeps it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Rnd(float x, bool round) => round ? Interop.IntAsFloat(TensorCoreGemm.Tf32Word(x)) : x;

    /// <summary>Six floats: a row or column of an F(4×4, 3×3) tile.</summary>
    public struct F6
    {
        public float A, B, C, D, E, F;
    }

    /// <summary>A 3×3 kernel, row-major.</summary>
    public struct K9
    {
        public float G00, G01, G02, G10, G11, G12, G20, G21, G22;
    }

    /// <summary>Kernel (k, c) of w [K, C, 3, 3], or with <paramref name="flip"/> ≠ 0 the input gradient's kernel w[c, k]
    /// rotated by 180° (w is [C, K, 3, 3]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static K9 ReadKernel(ArrayView<float> w, long i, int k, int c, int flip)
    {
        K9 g;
        if (flip == 0)
        {
            long o = i * 9;
            g.G00 = w[o]; g.G01 = w[o + 1]; g.G02 = w[o + 2]; g.G10 = w[o + 3]; g.G11 = w[o + 4]; g.G12 = w[o + 5]; g.G20 = w[o + 6]; g.G21 = w[o + 7]; g.G22 = w[o + 8];
        }
        else
        {
            long kk = i / c, cc = i - kk * c, o = (cc * k + kk) * 9;
            g.G00 = w[o + 8]; g.G01 = w[o + 7]; g.G02 = w[o + 6]; g.G10 = w[o + 5]; g.G11 = w[o + 4]; g.G12 = w[o + 3]; g.G20 = w[o + 2]; g.G21 = w[o + 1]; g.G22 = w[o];
        }
        return g;
    }

    /// <summary>Work item i of a transform over channels × the chunk's tiles: its channel, its index in the chunk, and the
    /// image and tile row/column of its tile.</summary>
    private struct Item
    {
        public int Channel, Local, N, Ty, Tx;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Item ItemOf(int i, Shape s)
    {
        Item it;
        it.Channel = i / s.Pc;
        it.Local = i - it.Channel * s.Pc;
        int p = s.P0 + it.Local, tiles = s.TilesH * s.TilesW;
        it.N = p / tiles;
        int r = p - it.N * tiles;
        it.Ty = r / s.TilesW;
        it.Tx = r - it.Ty * s.TilesW;
        return it;
    }

    /// <summary>U = G g Gᵀ for every (k, c): G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]; g = w[k, c] (w is [K, C, 3, 3]),
    /// or with <paramref name="mode"/> bit 0 the input gradient's kernel g = w[c, k] rotated by 180° (w is [C, K, 3, 3]: the
    /// forward's weight, whose input gradient is a padding-1 convolution of the output gradient with that kernel); bit 1: U
    /// written rounded to TF32.</summary>
    internal static void WeightKernel(ArrayView<float> w, ArrayView<float> u, int k, int c, int mode)
    {
        int flip = mode & 1;
        bool round = (mode & 2) != 0;
        long kc = (long)k * c, step = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < kc; i += step)
        {
            var kg = ReadKernel(w, i, k, c, flip);
            float g00 = kg.G00, g01 = kg.G01, g02 = kg.G02, g10 = kg.G10, g11 = kg.G11, g12 = kg.G12, g20 = kg.G20, g21 = kg.G21, g22 = kg.G22;
            // t = G g (4 × 3)
            float t00 = g00, t01 = g01, t02 = g02;
            float t10 = 0.5f * (g00 + g10 + g20), t11 = 0.5f * (g01 + g11 + g21), t12 = 0.5f * (g02 + g12 + g22);
            float t20 = 0.5f * (g00 - g10 + g20), t21 = 0.5f * (g01 - g11 + g21), t22 = 0.5f * (g02 - g12 + g22);
            float t30 = g20, t31 = g21, t32 = g22;
            WeightRow(u, i, kc, 0, t00, t01, t02, round);
            WeightRow(u, i, kc, 1, t10, t11, t12, round);
            WeightRow(u, i, kc, 2, t20, t21, t22, round);
            WeightRow(u, i, kc, 3, t30, t31, t32, round);
        }
    }

    /// <summary>Row r of U = t Gᵀ.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightRow(ArrayView<float> u, long i, long kc, int r, float a, float b, float c, bool round)
    {
        long o = 4 * r * kc + i;
        u[o] = Rnd(a, round);
        u[o + kc] = Rnd(0.5f * (a + b + c), round);
        u[o + 2 * kc] = Rnd(0.5f * (a - b + c), round);
        u[o + 3 * kc] = Rnd(c, round);
    }

    /// <summary>V = Bᵀ d B for every (c, tile) of the chunk: Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].
    /// Work item (g, tile): the tile's position found once (two divisions), then channels g, g + G, … (G =
    /// <see cref="Shape.Groups"/>); tiles wholly inside the plane read their 4×4 patch from four row offsets without bounds
    /// tests. Consecutive threads take consecutive tiles of one channel (coalesced stores). The arithmetic per (c, tile) is
    /// the same additions in the same order whatever the indexing.</summary>
    internal static void InputKernel(ArrayView<float> x, ArrayView<float> v, Shape s)
    {
        // G·Pc and C·Pc < 2³¹ (the launcher checks): 32-bit work indices
        int groups = s.Groups, work = groups * s.Pc, step = Grid.DimX * Group.DimX, plane = s.C * s.Pc;
        long hw = (long)s.H * s.W;
        bool round = s.Round != 0;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            int g = i / s.Pc, local = i - g * s.Pc;
            int p = s.P0 + local, tiles = s.TilesH * s.TilesW, n = p / tiles, r = p - n * tiles, ty = r / s.TilesW, tx = r - ty * s.TilesW;
            int h0 = 2 * ty - 1, w0 = 2 * tx - 1;
            bool inner = h0 >= 0 && w0 >= 0 && h0 + 3 < s.H && w0 + 3 < s.W;
            long xb = ((long)n * s.C + g) * hw, step4 = groups * hw;
            int o = g * s.Pc + local, oStep = groups * s.Pc;
            for (int c = g; c < s.C; c += groups)
            {
                float d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23, d30, d31, d32, d33;
                if (inner)
                {
                    long r0 = xb + (long)h0 * s.W + w0, r1 = r0 + s.W, r2 = r1 + s.W, r3 = r2 + s.W;
                    d00 = x[r0]; d01 = x[r0 + 1]; d02 = x[r0 + 2]; d03 = x[r0 + 3];
                    d10 = x[r1]; d11 = x[r1 + 1]; d12 = x[r1 + 2]; d13 = x[r1 + 3];
                    d20 = x[r2]; d21 = x[r2 + 1]; d22 = x[r2 + 2]; d23 = x[r2 + 3];
                    d30 = x[r3]; d31 = x[r3 + 1]; d32 = x[r3 + 2]; d33 = x[r3 + 3];
                }
                else
                {
                    d00 = At(x, s, xb, h0, w0); d01 = At(x, s, xb, h0, w0 + 1); d02 = At(x, s, xb, h0, w0 + 2); d03 = At(x, s, xb, h0, w0 + 3);
                    d10 = At(x, s, xb, h0 + 1, w0); d11 = At(x, s, xb, h0 + 1, w0 + 1); d12 = At(x, s, xb, h0 + 1, w0 + 2); d13 = At(x, s, xb, h0 + 1, w0 + 3);
                    d20 = At(x, s, xb, h0 + 2, w0); d21 = At(x, s, xb, h0 + 2, w0 + 1); d22 = At(x, s, xb, h0 + 2, w0 + 2); d23 = At(x, s, xb, h0 + 2, w0 + 3);
                    d30 = At(x, s, xb, h0 + 3, w0); d31 = At(x, s, xb, h0 + 3, w0 + 1); d32 = At(x, s, xb, h0 + 3, w0 + 2); d33 = At(x, s, xb, h0 + 3, w0 + 3);
                }
                // rows of Bᵀ d, one input row at a time: q_j = (d0 − d2, d1 + d2, d2 − d1, d1 − d3) in column j (the rounding
                // a separate path: a flag tested per value would cost every store its predicated instructions)
                if (round)
                {
                    InputRow(v, o, plane, 0, d00 - d20, d01 - d21, d02 - d22, d03 - d23, true);
                    InputRow(v, o, plane, 1, d10 + d20, d11 + d21, d12 + d22, d13 + d23, true);
                    InputRow(v, o, plane, 2, d20 - d10, d21 - d11, d22 - d12, d23 - d13, true);
                    InputRow(v, o, plane, 3, d10 - d30, d11 - d31, d12 - d32, d13 - d33, true);
                }
                else
                {
                    InputRow(v, o, plane, 0, d00 - d20, d01 - d21, d02 - d22, d03 - d23, false);
                    InputRow(v, o, plane, 1, d10 + d20, d11 + d21, d12 + d22, d13 + d23, false);
                    InputRow(v, o, plane, 2, d20 - d10, d21 - d11, d22 - d12, d23 - d13, false);
                    InputRow(v, o, plane, 3, d10 - d30, d11 - d31, d12 - d32, d13 - d33, false);
                }
                xb += step4;
                o += oStep;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float At(ArrayView<float> x, Shape s, long xb, int h, int w)
        => (uint)h < (uint)s.H && (uint)w < (uint)s.W ? x[xb + (long)h * s.W + w] : 0f;

    /// <summary>Row r of V = (Bᵀ d) B.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InputRow(ArrayView<float> v, int o, int plane, int r, float q0, float q1, float q2, float q3, bool round)
    {
        int b = 4 * r * plane + o;   // < Points·C·Pc ≤ 2³¹ − 1 (the launcher checks): one 32-bit add per store
        v[b] = Rnd(q0 - q2, round);
        v[b + plane] = Rnd(q1 + q2, round);
        v[b + 2 * plane] = Rnd(q2 - q1, round);
        v[b + 3 * plane] = Rnd(q1 - q3, round);
    }

    /// <summary>Y = Aᵀ m A (+ bias) for every (k, tile) of the chunk: Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]. Work item
    /// (g, tile) as in <see cref="InputKernel"/>: the tile's position once, then output channels g, g + G, ….</summary>
    internal static void OutputKernel(ArrayView<float> m, ArrayView<float> y, ArrayView<float> bias, Shape s, int hasBias)
    {
        // G·Pc and K·Pc < 2³¹ (the launcher checks): 32-bit work indices
        int groups = s.Groups, work = groups * s.Pc, step = Grid.DimX * Group.DimX, plane = s.K * s.Pc;
        long hw = (long)s.H * s.W;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            int g = i / s.Pc, local = i - g * s.Pc;
            int p = s.P0 + local, tiles = s.TilesH * s.TilesW, n = p / tiles, r = p - n * tiles, ty = r / s.TilesW, tx = r - ty * s.TilesW;
            int oh = 2 * ty, ow = 2 * tx;
            bool right = ow + 1 < s.W, down = oh + 1 < s.H;
            long yb = ((long)n * s.K + g) * hw + (long)oh * s.W + ow, yStep = groups * hw;
            int o = g * s.Pc + local, oStep = groups * s.Pc;   // m's indices < 16·K·Pc ≤ 2³¹ − 1 (the launcher checks)
            for (int k = g; k < s.K; k += groups)
            {
                float m00 = m[o], m01 = m[o + plane], m02 = m[o + 2 * plane], m03 = m[o + 3 * plane];
                float m10 = m[o + 4 * plane], m11 = m[o + 5 * plane], m12 = m[o + 6 * plane], m13 = m[o + 7 * plane];
                float m20 = m[o + 8 * plane], m21 = m[o + 9 * plane], m22 = m[o + 10 * plane], m23 = m[o + 11 * plane];
                float m30 = m[o + 12 * plane], m31 = m[o + 13 * plane], m32 = m[o + 14 * plane], m33 = m[o + 15 * plane];
                float bv = hasBias != 0 ? bias[k] : 0f;
                // Aᵀ m: row 0 = m0 + m1 + m2, row 1 = m1 − m2 − m3 (rows of m)
                float s00 = m00 + m10 + m20, s01 = m01 + m11 + m21, s02 = m02 + m12 + m22, s03 = m03 + m13 + m23;
                float s10 = m10 - m20 - m30, s11 = m11 - m21 - m31, s12 = m12 - m22 - m32, s13 = m13 - m23 - m33;
                y[yb] = s00 + s01 + s02 + bv;
                if (right) y[yb + 1] = s01 - s02 - s03 + bv;
                if (down)
                {
                    y[yb + s.W] = s10 + s11 + s12 + bv;
                    if (right) y[yb + s.W + 1] = s11 - s12 - s13 + bv;
                }
                yb += yStep;
                o += oStep;
            }
        }
    }

    // ---------------------------------------------------------------- F(4×4, 3×3): 6×6 input tiles, 36 products per tile
    // Bᵀ = [[4, 0, −5, 0, 1, 0], [0, −4, −4, 1, 1, 0], [0, 4, −4, −1, 1, 0], [0, −2, −1, 2, 1, 0], [0, 2, −1, −2, 1, 0],
    //       [0, 4, 0, −5, 0, 1]]; G = [[¼, 0, 0], [−⅙, −⅙, −⅙], [−⅙, ⅙, −⅙], [1/24, 1/12, ⅙], [1/24, −1/12, ⅙], [0, 0, 1]];
    // Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, −1, 2, −2, 0], [0, 1, 1, 4, 4, 0], [0, 1, −1, 8, −8, 1]] (Lavin and Gray's points 0, ±1, ±2, ∞).

    /// <summary>Bᵀ·d for six values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static F6 Bt6(float d0, float d1, float d2, float d3, float d4, float d5)
    {
        F6 r;
        r.A = 4f * d0 - 5f * d2 + d4;
        r.B = -4f * d1 - 4f * d2 + d3 + d4;
        r.C = 4f * d1 - 4f * d2 - d3 + d4;
        r.D = -2f * d1 - d2 + 2f * d3 + d4;
        r.E = 2f * d1 - d2 - 2f * d3 + d4;
        r.F = 4f * d1 - 5f * d3 + d5;
        return r;
    }

    /// <summary>G·g for three values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F6 G6(float g0, float g1, float g2)
    {
        F6 r;
        r.A = 0.25f * g0;
        r.B = -(g0 + g1 + g2) / 6f;
        r.C = -(g0 - g1 + g2) / 6f;
        r.D = g0 / 24f + g1 / 12f + g2 / 6f;
        r.E = g0 / 24f - g1 / 12f + g2 / 6f;
        r.F = g2;
        return r;
    }

    /// <summary>Aᵀ·m for six values.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static F4 At6(float m0, float m1, float m2, float m3, float m4, float m5)
    {
        F4 r;
        r.X = m0 + m1 + m2 + m3 + m4;
        r.Y = m1 - m2 + 2f * m3 - 2f * m4;
        r.Z = m1 + m2 + 4f * m3 + 4f * m4;
        r.W = m1 - m2 + 8f * m3 - 8f * m4 + m5;
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put6(ArrayView<float> dst, long o, long plane, int row, F6 v)
    {
        long b = 6L * row * plane + o;   // U: K·C may be large; V (Input4Kernel): 32-bit indices below
        dst[b] = v.A; dst[b + plane] = v.B; dst[b + 2 * plane] = v.C; dst[b + 3 * plane] = v.D; dst[b + 4 * plane] = v.E; dst[b + 5 * plane] = v.F;
    }

    /// <summary>U = G g Gᵀ (6×6) for every (k, c), as <see cref="WeightKernel"/>.</summary>
    internal static void Weight4Kernel(ArrayView<float> w, ArrayView<float> u, int k, int c, int flip)
    {
        long kc = (long)k * c, step = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < kc; i += step)
        {
            var g = ReadKernel(w, i, k, c, flip);
            // columns of G g, then each row of it times Gᵀ
            var c0 = G6(g.G00, g.G10, g.G20);
            var c1 = G6(g.G01, g.G11, g.G21);
            var c2 = G6(g.G02, g.G12, g.G22);
            Put6(u, i, kc, 0, G6(c0.A, c1.A, c2.A));
            Put6(u, i, kc, 1, G6(c0.B, c1.B, c2.B));
            Put6(u, i, kc, 2, G6(c0.C, c1.C, c2.C));
            Put6(u, i, kc, 3, G6(c0.D, c1.D, c2.D));
            Put6(u, i, kc, 4, G6(c0.E, c1.E, c2.E));
            Put6(u, i, kc, 5, G6(c0.F, c1.F, c2.F));
        }
    }

    /// <summary>V = Bᵀ d B (6×6) for every (c, tile) of the chunk, as <see cref="InputKernel"/>.</summary>
    internal static void Input4Kernel(ArrayView<float> x, ArrayView<float> v, Shape s)
    {
        int work = s.C * s.Pc, step = Grid.DimX * Group.DimX;
        long plane = work;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            var it = ItemOf(i, s);
            int c = it.Channel, n = it.N, ty = it.Ty, tx = it.Tx;
            int h0 = 4 * ty - 1, w0 = 4 * tx - 1;
            long xb = ((long)n * s.C + c) * s.H * s.W;
            // Bᵀ d column by column (each column's six rows), then each row of the result times B
            var c0 = Column6(x, s, xb, h0, w0);
            var c1 = Column6(x, s, xb, h0, w0 + 1);
            var c2 = Column6(x, s, xb, h0, w0 + 2);
            var c3 = Column6(x, s, xb, h0, w0 + 3);
            var c4 = Column6(x, s, xb, h0, w0 + 4);
            var c5 = Column6(x, s, xb, h0, w0 + 5);
            Put6(v, i, plane, 0, Bt6(c0.A, c1.A, c2.A, c3.A, c4.A, c5.A));
            Put6(v, i, plane, 1, Bt6(c0.B, c1.B, c2.B, c3.B, c4.B, c5.B));
            Put6(v, i, plane, 2, Bt6(c0.C, c1.C, c2.C, c3.C, c4.C, c5.C));
            Put6(v, i, plane, 3, Bt6(c0.D, c1.D, c2.D, c3.D, c4.D, c5.D));
            Put6(v, i, plane, 4, Bt6(c0.E, c1.E, c2.E, c3.E, c4.E, c5.E));
            Put6(v, i, plane, 5, Bt6(c0.F, c1.F, c2.F, c3.F, c4.F, c5.F));
        }
    }

    /// <summary>Bᵀ applied to input column <paramref name="w"/>, rows h0 … h0 + 5 (zero outside the plane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F6 Column6(ArrayView<float> x, Shape s, long xb, int h0, int w)
        => Bt6(At(x, s, xb, h0, w), At(x, s, xb, h0 + 1, w), At(x, s, xb, h0 + 2, w), At(x, s, xb, h0 + 3, w), At(x, s, xb, h0 + 4, w), At(x, s, xb, h0 + 5, w));

    /// <summary>Y = Aᵀ m A (4×4) (+ bias) for every (k, tile) of the chunk, as <see cref="OutputKernel"/> (a work item: one tile
    /// and every <see cref="Shape.Groups"/>-th output channel).</summary>
    internal static void Output4Kernel(ArrayView<float> m, ArrayView<float> y, ArrayView<float> bias, Shape s, int hasBias)
    {
        // G·Pc and 36·K·Pc < 2³¹ (the launcher checks): 32-bit work and workspace indices
        int groups = s.Groups, work = groups * s.Pc, step = Grid.DimX * Group.DimX, plane = s.K * s.Pc;
        long hw = (long)s.H * s.W;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            int g = i / s.Pc, local = i - g * s.Pc;
            int p = s.P0 + local, tiles = s.TilesH * s.TilesW, n = p / tiles, r = p - n * tiles, ty = r / s.TilesW, tx = r - ty * s.TilesW;
            int oh = 4 * ty, ow = 4 * tx;
            long yb = ((long)n * s.K + g) * hw, yStep = groups * hw;
            int o = g * s.Pc + local, oStep = groups * s.Pc;
            for (int k = g; k < s.K; k += groups)
            {
                // Aᵀ m column by column, then each of its four rows times A
                var a0 = MColumn(m, o, plane, 0);
                var a1 = MColumn(m, o, plane, 1);
                var a2 = MColumn(m, o, plane, 2);
                var a3 = MColumn(m, o, plane, 3);
                var a4 = MColumn(m, o, plane, 4);
                var a5 = MColumn(m, o, plane, 5);
                float bv = hasBias != 0 ? bias[k] : 0f;
                PutRow4(y, s, yb, oh, ow, At6(a0.X, a1.X, a2.X, a3.X, a4.X, a5.X), bv);
                PutRow4(y, s, yb, oh + 1, ow, At6(a0.Y, a1.Y, a2.Y, a3.Y, a4.Y, a5.Y), bv);
                PutRow4(y, s, yb, oh + 2, ow, At6(a0.Z, a1.Z, a2.Z, a3.Z, a4.Z, a5.Z), bv);
                PutRow4(y, s, yb, oh + 3, ow, At6(a0.W, a1.W, a2.W, a3.W, a4.W, a5.W), bv);
                yb += yStep;
                o += oStep;
            }
        }
    }

    /// <summary>Aᵀ applied to column <paramref name="j"/> of the 6×6 product tile (planes 6r + j).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static F4 MColumn(ArrayView<float> m, int o, int plane, int j)
        => At6(m[o + j * plane], m[o + (6 + j) * plane], m[o + (12 + j) * plane], m[o + (18 + j) * plane], m[o + (24 + j) * plane], m[o + (30 + j) * plane]);

    /// <summary>Output row <paramref name="oh"/>, columns ow … ow + 3, inside the plane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutRow4(ArrayView<float> y, Shape s, long yb, int oh, int ow, F4 v, float bv)
    {
        if (oh >= s.H) return;
        long o = yb + (long)oh * s.W + ow;
        y[o] = v.X + bv;
        if (ow + 1 < s.W) y[o + 1] = v.Y + bv;
        if (ow + 2 < s.W) y[o + 2] = v.Z + bv;
        if (ow + 3 < s.W) y[o + 3] = v.W + bv;
    }

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? Weight, Weight4;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, Shape>? Input, Input4;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>? Output, Output4;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    /// <summary>The three kernels' methods, for offline PTX compilation (<c>bench ptx</c>).</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> KernelMethods { get; } =
    [
        ((Action<ArrayView<float>, ArrayView<float>, int, int, int>)WeightKernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, Shape>)InputKernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>)OutputKernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, int, int, int>)Weight4Kernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, Shape>)Input4Kernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>)Output4Kernel).Method,
    ];

    /// <summary>Channel groups of a transform over <paramref name="channels"/> × <paramref name="tiles"/>: about 2¹⁸ work items (a
    /// large GPU's resident threads at full occupancy; the F(2×2) input transform's 102 registers allow a quarter of that, so
    /// every item is resident in a few waves), each looping over its channels with the tile's position found once — at 224²
    /// with 128 channels and 32,768 tiles per chunk, 8 groups of 16 channels.</summary>
    internal static int ChannelGroups(int channels, int tiles)
        => tiles <= 0 ? 1 : (int)Math.Clamp((TransformWorkTarget + tiles - 1) / tiles, 1, Math.Max(1, channels));

    /// <summary>Work items an F(2×2) transform aims for (<see cref="ChannelGroups"/>); settable for tests, which reach the
    /// channel loops with small shapes.</summary>
    internal static long TransformWorkTarget { get; set; } = 1L << 18;

    /// <summary>Threads per group of the transforms on a GPU (<see cref="Flat"/>).</summary>
    internal const int FlatThreads = 256;

    private static KernelConfig Flat(Accelerator acc, long work)
    {
        int nt = Math.Min(FlatThreads, acc.MaxNumThreadsPerGroup);
        return new KernelConfig((int)Math.Clamp((work + nt - 1) / nt, 1, 1 << 20), nt);
    }

    /// <summary>Whether a convolution is one F(2×2, 3×3) computes: 3×3 kernel, stride 1, padding 1 on every side, no dilation.</summary>
    public static bool Applies(int kh, int kw, Conv2dParams p)
        => kh == 3 && kw == 3 && p == Conv2dParams.Symmetric(1, 1);

    /// <summary>Output tiles of <paramref name="tile"/> × <paramref name="tile"/> per plane, rows and columns (a last partial
    /// tile where H or W is not a multiple).</summary>
    public static (int H, int W) Tiles(int h, int w, int tile = 2) => ((h + tile - 1) / tile, (w + tile - 1) / tile);

    /// <summary>Transformed values per tile: (tile + 2)², 16 for F(2×2, 3×3), 36 for F(4×4, 3×3).</summary>
    public static int Points(int tile) => (tile + 2) * (tile + 2);

    private static void CheckTile(int tile)
    {
        if (tile is not (2 or 4)) throw new ArgumentOutOfRangeException(nameof(tile), tile, "winograd: output tiles are 2×2 or 4×4");
    }

    /// <summary>u (Points(tile)·K·C floats) ← the transformed weight w [K, C, 3, 3]; with <paramref name="flipped"/>, the
    /// transformed input-gradient kernel of a forward weight w [C, K, 3, 3] (transposed, rotated by 180°); with
    /// <paramref name="roundTf32"/> (F(2×2) only), u rounded to TF32 as the tensor-core GEMM would round it.</summary>
    public static void TransformWeight(Accelerator acc, AcceleratorStream? stream, ArrayView<float> w, ArrayView<float> u, int k, int c, bool flipped = false, int tile = 2,
        bool roundTf32 = false)
    {
        ArgumentNullException.ThrowIfNull(acc);
        CheckTile(tile);
        if (roundTf32 && tile != 2) throw new ArgumentException("winograd: TF32 rounding in the transforms is F(2×2)'s (F(4×4) runs fp32 only)", nameof(roundTf32));
        long kc = (long)k * c;
        if (w.Length < 9 * kc || u.Length < Points(tile) * kc)
            throw new ArgumentException($"winograd: weight [{k}, {c}, 3, 3] needs {9 * kc} and {Points(tile) * kc} floats, got {w.Length} and {u.Length}");
        if (kc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int> kern;
        lock (l) kern = tile == 4
            ? l.Weight4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(Weight4Kernel)
            : l.Weight ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(WeightKernel);
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, Flat(acc, kc), w, u, k, c, (flipped ? 1 : 0) | (roundTf32 ? 2 : 0));
    }

    /// <summary>v (Points(Tile)·C·Pc floats) ← the transformed input tiles [P0, P0 + Pc) of x [N, C, H, W].</summary>
    public static void TransformInput(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> v, Shape s)
    {
        ArgumentNullException.ThrowIfNull(acc);
        Check(s, x.Length, (long)s.N * s.C * s.H * s.W, v.Length, (long)Points(s.Tile) * s.C * s.Pc, "input");
        if (s.Round != 0 && s.Tile != 2) throw new ArgumentException("winograd: TF32 rounding in the transforms is F(2×2)'s (F(4×4) runs fp32 only)", nameof(s));
        if ((long)s.C * s.Pc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, Shape> kern;
        lock (l) kern = s.Tile == 4
            ? l.Input4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, Shape>(Input4Kernel)
            : l.Input ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, Shape>(InputKernel);
        CudaRuntime.CountLaunch();
        // F(2×2): a work item per tile and channel group; F(4×4) keeps one per (channel, tile): looping over channels it held
        // its 6×6 patch and column sums at 168 registers (ptxas 12.4) against 56
        s.Groups = s.Tile == 2 ? ChannelGroups(s.C, s.Pc) : s.C;
        kern(stream ?? acc.DefaultStream, Flat(acc, s.Tile == 2 ? (long)s.Groups * s.Pc : (long)s.C * s.Pc), x, v, s);
    }

    /// <summary>The chunk's outputs of y [N, K, H, W] ← Aᵀ m A (+ bias) from m (Points(Tile)·K·Pc floats).</summary>
    public static void TransformOutput(Accelerator acc, AcceleratorStream? stream, ArrayView<float> m, ArrayView<float> y, ArrayView<float> bias, Shape s)
    {
        ArgumentNullException.ThrowIfNull(acc);
        Check(s, y.Length, (long)s.N * s.K * s.H * s.W, m.Length, (long)Points(s.Tile) * s.K * s.Pc, "output");
        if (bias.Length > 0 && bias.Length < s.K) throw new ArgumentException($"winograd: bias has {bias.Length} elements for {s.K} channels");
        if ((long)s.K * s.Pc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int> kern;
        lock (l) kern = s.Tile == 4
            ? l.Output4 ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>(Output4Kernel)
            : l.Output ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>(OutputKernel);
        CudaRuntime.CountLaunch();
        s.Groups = ChannelGroups(s.K, s.Pc);
        kern(stream ?? acc.DefaultStream, Flat(acc, (long)s.Groups * s.Pc), m, y, bias.Length > 0 ? bias : m, s, bias.Length > 0 ? 1 : 0);
    }

    private static void Check(Shape s, long planeLen, long planeNeed, long workLen, long workNeed, string what)
    {
        CheckTile(s.Tile);
        var (th, tw) = Tiles(s.H, s.W, s.Tile);
        if (s.TilesH != th || s.TilesW != tw)
            throw new ArgumentException($"winograd: {s.H}×{s.W} planes have {th}×{tw} tiles, not {s.TilesH}×{s.TilesW}");
        long tiles = (long)s.N * th * tw;
        if (s.P0 < 0 || s.Pc < 0 || s.P0 + (long)s.Pc > tiles)
            throw new ArgumentException($"winograd: tiles [{s.P0}, {s.P0 + (long)s.Pc}) outside the {tiles} tiles of the batch");
        if ((long)Points(s.Tile) * s.C * s.Pc > int.MaxValue || (long)Points(s.Tile) * s.K * s.Pc > int.MaxValue)
            throw new ArgumentException($"winograd: a chunk of {s.Pc} tiles with {s.C} → {s.K} channels is over 2³¹ transformed values; use smaller chunks");
        if (planeLen < planeNeed || workLen < workNeed)
            throw new ArgumentException($"winograd {what}: needs {planeNeed} and {workNeed} floats, got {planeLen} and {workLen}");
    }
}
