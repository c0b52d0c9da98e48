using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Winograd F(2×2, 3×3) for the forward pass and the input gradient of 3×3, stride-1, padding-1 convolutions (issue 7; an A/B candidate behind
/// <see cref="CudaBackend.WinogradConv"/>, off by default until a device times it). Each 2×2 output tile of a plane comes
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
/// The results are those of a direct convolution up to fp32 rounding (the transforms add and halve; other sum orders),
/// not bit for bit — which is why it is a switch and not one of the kernel tuner's same-bits candidates.
/// </summary>
public static class WinogradKernels
{
    /// <summary>Geometry of one launch: input N × C × H × W, K output channels, tiles TilesH × TilesW per plane, the chunk of
    /// tiles [P0, P0 + Pc).</summary>
    public struct Shape
    {
        public int N, C, K, H, W, TilesH, TilesW, P0, Pc;
    }

    /// <summary>U = G g Gᵀ for every (k, c): G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]; g = w[k, c] (w is [K, C, 3, 3]),
    /// or with <paramref name="flip"/> ≠ 0 the input gradient's kernel g = w[c, k] rotated by 180° (w is [C, K, 3, 3]: the
    /// forward's weight, whose input gradient is a padding-1 convolution of the output gradient with that kernel).</summary>
    internal static void WeightKernel(ArrayView<float> w, ArrayView<float> u, int k, int c, int flip)
    {
        long kc = (long)k * c, step = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < kc; i += step)
        {
            float g00, g01, g02, g10, g11, g12, g20, g21, g22;
            if (flip == 0)
            {
                long o = i * 9;
                g00 = w[o]; g01 = w[o + 1]; g02 = w[o + 2]; g10 = w[o + 3]; g11 = w[o + 4]; g12 = w[o + 5]; g20 = w[o + 6]; g21 = w[o + 7]; g22 = w[o + 8];
            }
            else
            {
                long kk = i / c, cc = i - kk * c, o = (cc * k + kk) * 9;
                g00 = w[o + 8]; g01 = w[o + 7]; g02 = w[o + 6]; g10 = w[o + 5]; g11 = w[o + 4]; g12 = w[o + 3]; g20 = w[o + 2]; g21 = w[o + 1]; g22 = w[o];
            }
            // t = G g (4 × 3)
            float t00 = g00, t01 = g01, t02 = g02;
            float t10 = 0.5f * (g00 + g10 + g20), t11 = 0.5f * (g01 + g11 + g21), t12 = 0.5f * (g02 + g12 + g22);
            float t20 = 0.5f * (g00 - g10 + g20), t21 = 0.5f * (g01 - g11 + g21), t22 = 0.5f * (g02 - g12 + g22);
            float t30 = g20, t31 = g21, t32 = g22;
            WeightRow(u, i, kc, 0, t00, t01, t02);
            WeightRow(u, i, kc, 1, t10, t11, t12);
            WeightRow(u, i, kc, 2, t20, t21, t22);
            WeightRow(u, i, kc, 3, t30, t31, t32);
        }
    }

    /// <summary>Row r of U = t Gᵀ.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightRow(ArrayView<float> u, long i, long kc, int r, float a, float b, float c)
    {
        long o = 4 * r * kc + i;
        u[o] = a;
        u[o + kc] = 0.5f * (a + b + c);
        u[o + 2 * kc] = 0.5f * (a - b + c);
        u[o + 3 * kc] = c;
    }

    /// <summary>V = Bᵀ d B for every (c, tile) of the chunk: Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].</summary>
    internal static void InputKernel(ArrayView<float> x, ArrayView<float> v, Shape s)
    {
        // C·Pc < 2³¹ (the launcher checks): 32-bit index arithmetic
        int work = s.C * s.Pc, step = Grid.DimX * Group.DimX, plane = s.C * s.Pc;
        int tiles = s.TilesH * s.TilesW;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            int c = i / s.Pc, pl = i - c * s.Pc, p = s.P0 + pl;
            int n = p / tiles, r = p - n * tiles, ty = r / s.TilesW, tx = r - ty * s.TilesW;
            int h0 = 2 * ty - 1, w0 = 2 * tx - 1;
            long xb = ((long)n * s.C + c) * s.H * s.W;
            // rows of Bᵀ d, one input row at a time: q_j = (d0 − d2, d1 + d2, d2 − d1, d1 − d3) in column j
            float d00 = At(x, s, xb, h0, w0), d01 = At(x, s, xb, h0, w0 + 1), d02 = At(x, s, xb, h0, w0 + 2), d03 = At(x, s, xb, h0, w0 + 3);
            float d10 = At(x, s, xb, h0 + 1, w0), d11 = At(x, s, xb, h0 + 1, w0 + 1), d12 = At(x, s, xb, h0 + 1, w0 + 2), d13 = At(x, s, xb, h0 + 1, w0 + 3);
            float d20 = At(x, s, xb, h0 + 2, w0), d21 = At(x, s, xb, h0 + 2, w0 + 1), d22 = At(x, s, xb, h0 + 2, w0 + 2), d23 = At(x, s, xb, h0 + 2, w0 + 3);
            float d30 = At(x, s, xb, h0 + 3, w0), d31 = At(x, s, xb, h0 + 3, w0 + 1), d32 = At(x, s, xb, h0 + 3, w0 + 2), d33 = At(x, s, xb, h0 + 3, w0 + 3);
            int o = i;
            InputRow(v, o, plane, 0, d00 - d20, d01 - d21, d02 - d22, d03 - d23);
            InputRow(v, o, plane, 1, d10 + d20, d11 + d21, d12 + d22, d13 + d23);
            InputRow(v, o, plane, 2, d20 - d10, d21 - d11, d22 - d12, d23 - d13);
            InputRow(v, o, plane, 3, d10 - d30, d11 - d31, d12 - d32, d13 - d33);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float At(ArrayView<float> x, Shape s, long xb, int h, int w)
        => (uint)h < (uint)s.H && (uint)w < (uint)s.W ? x[xb + (long)h * s.W + w] : 0f;

    /// <summary>Row r of V = (Bᵀ d) B.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InputRow(ArrayView<float> v, int o, int plane, int r, float q0, float q1, float q2, float q3)
    {
        long b = 4L * r * plane + o;
        v[b] = q0 - q2;
        v[b + plane] = q1 + q2;
        v[b + 2 * plane] = q2 - q1;
        v[b + 3 * plane] = q1 - q3;
    }

    /// <summary>Y = Aᵀ m A (+ bias) for every (k, tile) of the chunk: Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].</summary>
    internal static void OutputKernel(ArrayView<float> m, ArrayView<float> y, ArrayView<float> bias, Shape s, int hasBias)
    {
        // K·Pc < 2³¹ (the launcher checks): 32-bit index arithmetic
        int work = s.K * s.Pc, step = Grid.DimX * Group.DimX;
        long plane = work;
        int tiles = s.TilesH * s.TilesW;
        for (int i = Grid.GlobalIndex.X; i < work; i += step)
        {
            int k = i / s.Pc, pl = i - k * s.Pc, p = s.P0 + pl;
            int n = p / tiles, r = p - n * tiles, ty = r / s.TilesW, tx = r - ty * s.TilesW;
            long o = i;
            float m00 = m[o], m01 = m[o + plane], m02 = m[o + 2 * plane], m03 = m[o + 3 * plane];
            float m10 = m[o + 4 * plane], m11 = m[o + 5 * plane], m12 = m[o + 6 * plane], m13 = m[o + 7 * plane];
            float m20 = m[o + 8 * plane], m21 = m[o + 9 * plane], m22 = m[o + 10 * plane], m23 = m[o + 11 * plane];
            float m30 = m[o + 12 * plane], m31 = m[o + 13 * plane], m32 = m[o + 14 * plane], m33 = m[o + 15 * plane];
            // Aᵀ m: row 0 = m0 + m1 + m2, row 1 = m1 − m2 − m3 (rows of m)
            float s00 = m00 + m10 + m20, s01 = m01 + m11 + m21, s02 = m02 + m12 + m22, s03 = m03 + m13 + m23;
            float s10 = m10 - m20 - m30, s11 = m11 - m21 - m31, s12 = m12 - m22 - m32, s13 = m13 - m23 - m33;
            float bv = hasBias != 0 ? bias[k] : 0f;
            int oh = 2 * ty, ow = 2 * tx;
            long yb = ((long)n * s.K + k) * s.H * s.W + (long)oh * s.W + ow;
            bool right = ow + 1 < s.W, down = oh + 1 < s.H;
            y[yb] = s00 + s01 + s02 + bv;
            if (right) y[yb + 1] = s01 - s02 - s03 + bv;
            if (down)
            {
                y[yb + s.W] = s10 + s11 + s12 + bv;
                if (right) y[yb + s.W + 1] = s11 - s12 - s13 + bv;
            }
        }
    }

    private sealed class Loaded
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int>? Weight;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, Shape>? Input;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>? Output;
    }

    private static readonly ConditionalWeakTable<Accelerator, Loaded> Cache = new();

    /// <summary>The three kernels' methods, for offline PTX compilation (<c>bench ptx</c>).</summary>
    public static IReadOnlyList<System.Reflection.MethodInfo> KernelMethods { get; } =
    [
        ((Action<ArrayView<float>, ArrayView<float>, int, int, int>)WeightKernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, Shape>)InputKernel).Method,
        ((Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>)OutputKernel).Method,
    ];

    private static KernelConfig Flat(Accelerator acc, long work)
    {
        int nt = Math.Min(256, acc.MaxNumThreadsPerGroup);
        return new KernelConfig((int)Math.Clamp((work + nt - 1) / nt, 1, 1 << 20), nt);
    }

    /// <summary>Whether a convolution is one F(2×2, 3×3) computes: 3×3 kernel, stride 1, padding 1 on every side, no dilation.</summary>
    public static bool Applies(int kh, int kw, Conv2dParams p)
        => kh == 3 && kw == 3 && p == Conv2dParams.Symmetric(1, 1);

    /// <summary>Tiles per plane, rows and columns (a last partial tile where H or W is odd).</summary>
    public static (int H, int W) Tiles(int h, int w) => ((h + 1) / 2, (w + 1) / 2);

    /// <summary>u (16·K·C floats) ← the transformed weight w [K, C, 3, 3]; with <paramref name="flipped"/>, the transformed
    /// input-gradient kernel of a forward weight w [C, K, 3, 3] (transposed, rotated by 180°).</summary>
    public static void TransformWeight(Accelerator acc, AcceleratorStream? stream, ArrayView<float> w, ArrayView<float> u, int k, int c, bool flipped = false)
    {
        ArgumentNullException.ThrowIfNull(acc);
        long kc = (long)k * c;
        if (w.Length < 9 * kc || u.Length < 16 * kc)
            throw new ArgumentException($"winograd: weight [{k}, {c}, 3, 3] needs {9 * kc} and {16 * kc} floats, got {w.Length} and {u.Length}");
        if (kc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int> kern;
        lock (l) kern = l.Weight ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int>(WeightKernel);
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, Flat(acc, kc), w, u, k, c, flipped ? 1 : 0);
    }

    /// <summary>v (16·C·Pc floats) ← the transformed input tiles [P0, P0 + Pc) of x [N, C, H, W].</summary>
    public static void TransformInput(Accelerator acc, AcceleratorStream? stream, ArrayView<float> x, ArrayView<float> v, Shape s)
    {
        ArgumentNullException.ThrowIfNull(acc);
        Check(s, x.Length, (long)s.N * s.C * s.H * s.W, v.Length, 16L * s.C * s.Pc, "input");
        if ((long)s.C * s.Pc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, Shape> kern;
        lock (l) kern = l.Input ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, Shape>(InputKernel);
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, Flat(acc, (long)s.C * s.Pc), x, v, s);
    }

    /// <summary>The chunk's outputs of y [N, K, H, W] ← Aᵀ m A (+ bias) from m (16·K·Pc floats).</summary>
    public static void TransformOutput(Accelerator acc, AcceleratorStream? stream, ArrayView<float> m, ArrayView<float> y, ArrayView<float> bias, Shape s)
    {
        ArgumentNullException.ThrowIfNull(acc);
        Check(s, y.Length, (long)s.N * s.K * s.H * s.W, m.Length, 16L * s.K * s.Pc, "output");
        if (bias.Length > 0 && bias.Length < s.K) throw new ArgumentException($"winograd: bias has {bias.Length} elements for {s.K} channels");
        if ((long)s.K * s.Pc == 0) return;
        var l = Cache.GetValue(acc, _ => new Loaded());
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int> kern;
        lock (l) kern = l.Output ??= acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, Shape, int>(OutputKernel);
        CudaRuntime.CountLaunch();
        kern(stream ?? acc.DefaultStream, Flat(acc, (long)s.K * s.Pc), m, y, bias.Length > 0 ? bias : m, s, bias.Length > 0 ? 1 : 0);
    }

    private static void Check(Shape s, long planeLen, long planeNeed, long workLen, long workNeed, string what)
    {
        var (th, tw) = Tiles(s.H, s.W);
        if (s.TilesH != th || s.TilesW != tw)
            throw new ArgumentException($"winograd: {s.H}×{s.W} planes have {th}×{tw} tiles, not {s.TilesH}×{s.TilesW}");
        long tiles = (long)s.N * th * tw;
        if (s.P0 < 0 || s.Pc < 0 || s.P0 + (long)s.Pc > tiles)
            throw new ArgumentException($"winograd: tiles [{s.P0}, {s.P0 + (long)s.Pc}) outside the {tiles} tiles of the batch");
        if (16L * s.C * s.Pc > int.MaxValue || 16L * s.K * s.Pc > int.MaxValue)
            throw new ArgumentException($"winograd: a chunk of {s.Pc} tiles with {s.C} → {s.K} channels is over 2³¹ transformed values; use smaller chunks");
        if (planeLen < planeNeed || workLen < workNeed)
            throw new ArgumentException($"winograd {what}: needs {planeNeed} and {workNeed} floats, got {planeLen} and {workLen}");
    }
}
