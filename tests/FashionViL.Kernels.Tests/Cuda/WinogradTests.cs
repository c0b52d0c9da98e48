using FashionViL.Autograd;
using ILGPU;
using ILGPU.Runtime;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <c>FVL_WINOGRAD=on|f4</c> (<see cref="CudaBackend.Winograd"/>): 3×3 stride-1 padding-1 convolutions with ≥ 32 channels
/// each side run their forward and input gradient as Winograd F(2×2, 3×3) or F(4×4, 3×3) (<see cref="WinogradKernels"/>). Checked against
/// float64 direct convolutions within a forward error bound (odd planes: partial tiles; bias; fp32 and TF32), chunked runs
/// bit for bit equal to unchunked ones, weight gradients unchanged (the direct kernel), other geometries untouched, bad
/// switch values refused.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class WinogradTests : CudaTestBase
{
    private long _savedChunk;

    [SetUp]
    public void Save() => _savedChunk = CudaBackend.WinogradChunkFloats;

    [TearDown]
    public void Restore()
    {
        CudaBackend.Winograd = WinogradMode.Off;
        CudaBackend.WinogradChunkFloats = _savedChunk;
    }

    private static Tensor DevConv(Tensor x, Tensor w, Tensor? b, WinogradMode mode, Precision p)
    {
        CudaBackend.Winograd = mode;
        var y = Tensor.Empty([x.Sizes[0], w.Sizes[0], x.Sizes[2], x.Sizes[3]], DType.Float32, Gpu);
        using var dx = Up(x); using var dw = Up(w); using var db = b is null ? null : Up(b);
        using (MatMulPrecision.Use(p)) Dev.Conv2dForward(dx, dw, db, y, Conv2dParams.Symmetric(1, 1));
        return y;
    }

    private static void AssertWithinBound(float[] got, Tensor exact, Tensor mag, Precision p, WinogradMode mode, string what)
    {
        double[] e = exact.ToArray<double>(), s = mag.ToArray<double>();
        double factor = p != Precision.Fp32 ? 8192 : mode == WinogradMode.F4x4 ? 512 : 32;
        int bad = 0; double worst = 0;
        for (int i = 0; i < e.Length; i++)
        {
            double err = Math.Abs(got[i] - e[i]), bound = factor * Math.Pow(2, -24) * s[i] + 1e-30;
            if (err > bound) bad++;
            worst = Math.Max(worst, err / bound);
        }
        TestContext.Out.WriteLine($"{what} {p} {mode}: worst error {worst:F4}× the bound");
        Assert.That(bad, Is.Zero, $"{what} {p} {mode}: outputs outside the bound (worst {worst:F2}× it)");
    }

    /// <summary>
    /// |Winograd − exact| ≤ factor · 2⁻²⁴ · S per output, S = Σ|w||x| over its 9·C products (a float64 convolution of |x|
    /// and |w|): factor 32 for F(2×2) in fp32 (about twice √n at n = 9·C = 297 products, the typical growth of a dot
    /// product's rounding error; the transforms add a few sums of their own), 512 for F(4×4) in fp32 (its transforms'
    /// factors up to 8 and 1/24 grow the rounding about tenfold — Lavin and Gray 2016 — so 16 times F(2×2)'s), 2¹³
    /// (16·2⁻¹¹ relative) for TF32's rounded transformed operands. A wrong transform coefficient or tile offset is off by a
    /// sizeable fraction of S (hundreds to thousands of times the bound).
    /// </summary>
    [TestCase(Precision.Fp32, WinogradMode.F2x2, true)]
    [TestCase(Precision.Fp32, WinogradMode.F2x2, false)]
    [TestCase(Precision.Tf32, WinogradMode.F2x2, true)]
    [TestCase(Precision.Fp32, WinogradMode.F4x4, true)]
    [TestCase(Precision.Fp32, WinogradMode.F4x4, false)]
    public void ForwardIsTheConvolutionWithinTheErrorBound(Precision p, WinogradMode mode, bool withBias)
    {
        using var scope = Tensor.Scope();
        int n = 2, c = 33, k = 34, h = 11, wd = 13;   // partial last tiles of 2×2 and of 4×4 in both directions
        var x = Rand([n, c, h, wd], 501);
        var w = Rand([k, c, 3, 3], 502, lo: -0.5, hi: 0.5);
        var b = withBias ? Rand([k], 503) : null;
        var cp = Conv2dParams.Symmetric(1, 1);
        // exact (float64) and the magnitude sum S
        var x64 = x.To(DType.Float64); var w64 = w.To(DType.Float64);
        var exact = Tensor.Empty([n, k, h, wd], DType.Float64);
        Cpu.Conv2dForward(x64, w64, b?.To(DType.Float64), exact, cp);
        var mag = Tensor.Empty([n, k, h, wd], DType.Float64);
        Cpu.Conv2dForward(x64.Abs(), w64.Abs(), null, mag, cp);
        var got = DevConv(x, w, b, mode, p).ToArray<float>();
        var direct = DevConv(x, w, b, WinogradMode.Off, p).ToArray<float>();
        AssertWithinBound(got, exact, mag, p, mode, "forward");
        Assert.That(got, Is.Not.EqualTo(direct), "the switch routed the convolution through Winograd (other rounding than the direct kernel)");
    }

    /// <summary>The input gradient (a padding-1 convolution of the output gradient with the kernel transposed and rotated by
    /// 180°) within the same bound, S = Σ|w||gy| by the float64 input gradient of |gy| and |w|.</summary>
    [TestCase(Precision.Fp32, WinogradMode.F2x2)]
    [TestCase(Precision.Tf32, WinogradMode.F2x2)]
    [TestCase(Precision.Fp32, WinogradMode.F4x4)]
    public void InputGradientIsTheTransposedConvolutionWithinTheErrorBound(Precision p, WinogradMode mode)
    {
        using var scope = Tensor.Scope();
        int n = 2, cin = 33, cout = 34, h = 11, wd = 13;
        var gy = Rand([n, cout, h, wd], 541);
        var w = Rand([cout, cin, 3, 3], 542, lo: -0.5, hi: 0.5);
        var cp = Conv2dParams.Symmetric(1, 1);
        var gy64 = gy.To(DType.Float64); var w64 = w.To(DType.Float64);
        var exact = Tensor.Empty([n, cin, h, wd], DType.Float64);
        Cpu.Conv2dBackwardInput(gy64, w64, exact, cp);
        var mag = Tensor.Empty([n, cin, h, wd], DType.Float64);
        Cpu.Conv2dBackwardInput(gy64.Abs(), w64.Abs(), mag, cp);
        float[] Gx(WinogradMode on)
        {
            CudaBackend.Winograd = on;
            var gx = Tensor.Empty([n, cin, h, wd], DType.Float32, Gpu);
            using var dgy = Up(gy); using var dw = Up(w);
            using (MatMulPrecision.Use(p)) Dev.Conv2dBackwardInput(dgy, dw, gx, cp);
            return gx.ToArray<float>();
        }
        var got = Gx(mode);
        AssertWithinBound(got, exact, mag, p, mode, "input gradient");
        Assert.That(got, Is.Not.EqualTo(Gx(WinogradMode.Off)), "the switch routed the input gradient through Winograd");
    }

    /// <summary>Under Tf32 the transforms write U and V already rounded and the GEMM takes them as rounded
    /// (<see cref="CudaBackend.WinogradRoundsInTransforms"/>): forward and input gradient keep the bits of the GEMM rounding
    /// them itself (rounding is idempotent), without the GEMM's rounded copies of the operands.</summary>
    [Test]
    public void UnderTf32TheTransformsRoundingGivesTheGemmsBits()
    {
        using var scope = Tensor.Scope();
        var x = Rand([2, 40, 19, 17], 561);
        var w = Rand([36, 40, 3, 3], 562, lo: -0.5, hi: 0.5);
        var b = Rand([36], 563);
        var gy = Rand([2, 36, 19, 17], 564);
        int savedMin = CudaBackend.MinTilesToPreRound;
        try
        {
            CudaBackend.MinTilesToPreRound = 1;   // the GEMM would round its operands in copies first (at full size: U)
            (int[] Y, int[] Gx, long Launches) Run(bool inTransforms)
            {
                CudaBackend.WinogradRoundsInTransforms = inTransforms;
                var rt = CudaRuntime.Get(0);
                Dev.Synchronize();
                var c0 = rt.Counters;
                var y = DevConv(x, w, b, WinogradMode.F2x2, Precision.Tf32);
                var gx = Tensor.Empty([2, 40, 19, 17], DType.Float32, Gpu);
                using (var dgy = Up(gy)) using (var dw = Up(w))
                using (MatMulPrecision.Use(Precision.Tf32)) Dev.Conv2dBackwardInput(dgy, dw, gx, Conv2dParams.Symmetric(1, 1));
                Dev.Synchronize();
                return (Bits(y), Bits(gx), (rt.Counters - c0).KernelLaunches);
            }
            var gemm = Run(false);
            var transforms = Run(true);
            Assert.That(transforms.Y, Is.EqualTo(gemm.Y), "forward");
            Assert.That(transforms.Gx, Is.EqualTo(gemm.Gx), "input gradient");
            // with the threshold at 1 the GEMM would copy both U and V rounded (at full size: U only): 2 launches fewer per GEMM
            Assert.That(transforms.Launches, Is.EqualTo(gemm.Launches - 4), "no rounded copies of U and V, forward and input gradient");
        }
        finally
        {
            CudaBackend.WinogradRoundsInTransforms = true;
            CudaBackend.MinTilesToPreRound = savedMin;
        }
    }

    /// <summary>The transforms' TF32 rounding itself: every U and V value is <see cref="TensorCoreGemm.Tf32Word"/> of the
    /// unrounded transform's value (F(2×2); F(4×4), fp32 only, refuses it).</summary>
    [Test]
    public void TheTransformsRoundToTf32Words()
    {
        var acc = CudaRuntime.Get(0).Accelerator;
        var r = new Random(57);
        int k = 5, c = 6, n = 1, h = 7, wd = 6;
        var w = Enumerable.Range(0, k * c * 9).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        var x = Enumerable.Range(0, n * c * h * wd).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        using var wb = acc.Allocate1D(w); using var xb = acc.Allocate1D(x);
        using var u0 = acc.Allocate1D<float>(16 * k * c); using var u1 = acc.Allocate1D<float>(16 * k * c);
        var (th, tw) = WinogradKernels.Tiles(h, wd, 2);
        var s = new WinogradKernels.Shape { N = n, C = c, K = k, H = h, W = wd, Tile = 2, TilesH = th, TilesW = tw, P0 = 0, Pc = n * th * tw };
        using var v0 = acc.Allocate1D<float>(16L * c * s.Pc); using var v1 = acc.Allocate1D<float>(16L * c * s.Pc);
        WinogradKernels.TransformWeight(acc, null, wb.View, u0.View, k, c);
        WinogradKernels.TransformWeight(acc, null, wb.View, u1.View, k, c, roundTf32: true);
        WinogradKernels.TransformInput(acc, null, xb.View, v0.View, s);
        s.Round = 1;
        WinogradKernels.TransformInput(acc, null, xb.View, v1.View, s);
        acc.Synchronize();
        foreach (var (raw, rounded, what) in new[] { (u0.GetAsArray1D(), u1.GetAsArray1D(), "U"), (v0.GetAsArray1D(), v1.GetAsArray1D(), "V") })
        {
            for (int i = 0; i < raw.Length; i++)
                Assert.That(BitConverter.SingleToUInt32Bits(rounded[i]), Is.EqualTo(TensorCoreGemm.Tf32Word(raw[i])), $"{what}[{i}]");
            Assert.That(raw.Select(BitConverter.SingleToUInt32Bits).Count(u => (u & 0x1FFF) != 0), Is.GreaterThan(raw.Length / 2), $"{what}: the test needs unrounded values");
        }
        Assert.Throws<ArgumentException>(() => WinogradKernels.TransformWeight(acc, null, wb.View, u0.View, k, c, tile: 4, roundTf32: true));
    }

    /// <summary>The F(2×2) input and output transforms bit for bit against a host transcription of their arithmetic (the same
    /// additions in the same order: no products to contract), on a chunk that starts inside an image and crosses into the
    /// next, odd planes (partial edge tiles), several channel counts: what any rewrite of their indexing must keep.</summary>
    [TestCase(3, 5, 9, 7, 0)]
    [TestCase(3, 5, 9, 7, 2)]
    [TestCase(2, 11, 6, 13, 1)]
    [TestCase(2, 11, 6, 13, 3)]
    [TestCase(2, 1, 4, 4, 0)]
    public void F2x2TransformsMatchTheirArithmeticBitForBit(int n, int c, int h, int wd, int groupsTarget)
    {
        var acc = CudaRuntime.Get(0).Accelerator;
        long savedTarget = WinogradKernels.TransformWorkTarget;
        var r = new Random(71 + c);
        int k = c + 2;
        var (th, tw) = WinogradKernels.Tiles(h, wd, 2);
        int tiles = n * th * tw, p0 = tw + 1, pc = tiles - p0 - 1;   // from inside image 0 to the last image's last-but-one tile
        var x = Enumerable.Range(0, n * c * h * wd).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        var m = Enumerable.Range(0, 16 * k * pc).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        var bias = Enumerable.Range(0, k).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var y0 = Enumerable.Range(0, n * k * h * wd).Select(_ => -7f).ToArray();
        using var xb = acc.Allocate1D(x); using var mb = acc.Allocate1D(m); using var bb = acc.Allocate1D(bias); using var yb = acc.Allocate1D(y0);
        using var vb = acc.Allocate1D<float>(16L * c * pc);
        var s = new WinogradKernels.Shape { N = n, C = c, K = k, H = h, W = wd, Tile = 2, TilesH = th, TilesW = tw, P0 = p0, Pc = pc };
        try
        {
            // groupsTarget > 0: that many channel groups (each work item loops over several channels); 0: the default target
            if (groupsTarget > 0) WinogradKernels.TransformWorkTarget = (long)groupsTarget * pc;
            Assert.That(WinogradKernels.ChannelGroups(c, pc), Is.EqualTo(groupsTarget > 0 ? Math.Min(groupsTarget, c) : c));
            WinogradKernels.TransformInput(acc, null, xb.View, vb.View, s);
            WinogradKernels.TransformOutput(acc, null, mb.View, yb.View, bb.View, s);
            acc.Synchronize();
        }
        finally { WinogradKernels.TransformWorkTarget = savedTarget; }
        var v = vb.GetAsArray1D();
        var y = yb.GetAsArray1D();
        float X(int nn, int cc, int hh, int ww) => hh < 0 || ww < 0 || hh >= h || ww >= wd ? 0f : x[((nn * c + cc) * h + hh) * wd + ww];
        var wantY = (float[])y0.Clone();
        for (int local = 0; local < pc; local++)
        {
            int p = p0 + local, nn = p / (th * tw), ty = p % (th * tw) / tw, tx = p % tw;
            for (int cc = 0; cc < c; cc++)
            {
                var d = new float[4, 4];
                for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) d[i, j] = X(nn, cc, 2 * ty - 1 + i, 2 * tx - 1 + j);
                for (int row = 0; row < 4; row++)
                {
                    var q = new float[4];
                    for (int j = 0; j < 4; j++)
                        q[j] = row switch { 0 => d[0, j] - d[2, j], 1 => d[1, j] + d[2, j], 2 => d[2, j] - d[1, j], _ => d[1, j] - d[3, j] };
                    float[] want = [q[0] - q[2], q[1] + q[2], q[2] - q[1], q[1] - q[3]];
                    for (int j = 0; j < 4; j++)
                    {
                        long at = (4L * row + j) * c * pc + (long)cc * pc + local;
                        Assert.That(BitConverter.SingleToInt32Bits(v[at]), Is.EqualTo(BitConverter.SingleToInt32Bits(want[j])), $"V[{4 * row + j}] channel {cc} tile {p}");
                    }
                }
            }
            for (int kk = 0; kk < k; kk++)
            {
                long o = (long)kk * pc + local, plane = (long)k * pc;
                float M(int xi) => m[o + xi * plane];
                float s00 = M(0) + M(4) + M(8), s01 = M(1) + M(5) + M(9), s02 = M(2) + M(6) + M(10), s03 = M(3) + M(7) + M(11);
                float s10 = M(4) - M(8) - M(12), s11 = M(5) - M(9) - M(13), s12 = M(6) - M(10) - M(14), s13 = M(7) - M(11) - M(15);
                int oh = 2 * ty, ow = 2 * tx;
                long yb0 = ((long)(nn * k + kk) * h + oh) * wd + ow;
                wantY[yb0] = s00 + s01 + s02 + bias[kk];
                if (ow + 1 < wd) wantY[yb0 + 1] = s01 - s02 - s03 + bias[kk];
                if (oh + 1 < h)
                {
                    wantY[yb0 + wd] = s10 + s11 + s12 + bias[kk];
                    if (ow + 1 < wd) wantY[yb0 + wd + 1] = s11 - s12 - s13 + bias[kk];
                }
            }
        }
        Assert.That(y.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(wantY.Select(BitConverter.SingleToInt32Bits)), "outputs (and the untouched rest)");
    }

    /// <summary>The F(4×4) input and output transforms bit for bit against a host transcription of their indexing (the row and
    /// column algebra through WinogradKernels.Bt6 / At6, the kernels' own expressions), on a chunk starting inside an image,
    /// odd planes (partial edge tiles) and 1–3 channel groups.</summary>
    [TestCase(2, 5, 11, 9, 0)]
    [TestCase(2, 5, 11, 9, 2)]
    [TestCase(3, 7, 6, 14, 3)]
    public void F4x4TransformsMatchTheirIndexingBitForBit(int n, int c, int h, int wd, int groupsTarget)
    {
        var acc = CudaRuntime.Get(0).Accelerator;
        long savedTarget = WinogradKernels.TransformWorkTarget;
        var r = new Random(91 + c);
        int k = c + 1;
        var (th, tw) = WinogradKernels.Tiles(h, wd, 4);
        int tiles = n * th * tw, p0 = tw + 1, pc = tiles - p0 - 1;
        var x = Enumerable.Range(0, n * c * h * wd).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        var m = Enumerable.Range(0, 36 * k * pc).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray();
        var bias = Enumerable.Range(0, k).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var y0 = Enumerable.Range(0, n * k * h * wd).Select(_ => -7f).ToArray();
        using var xb = acc.Allocate1D(x); using var mb = acc.Allocate1D(m); using var bb = acc.Allocate1D(bias); using var yb = acc.Allocate1D(y0);
        using var vb = acc.Allocate1D<float>(36L * c * pc);
        var s = new WinogradKernels.Shape { N = n, C = c, K = k, H = h, W = wd, Tile = 4, TilesH = th, TilesW = tw, P0 = p0, Pc = pc };
        try
        {
            if (groupsTarget > 0) WinogradKernels.TransformWorkTarget = (long)groupsTarget * pc;
            WinogradKernels.TransformInput(acc, null, xb.View, vb.View, s);
            WinogradKernels.TransformOutput(acc, null, mb.View, yb.View, bb.View, s);
            acc.Synchronize();
        }
        finally { WinogradKernels.TransformWorkTarget = savedTarget; }
        var v = vb.GetAsArray1D();
        var y = yb.GetAsArray1D();
        float X(int nn, int cc, int hh, int ww) => hh < 0 || ww < 0 || hh >= h || ww >= wd ? 0f : x[((nn * c + cc) * h + hh) * wd + ww];
        static float F(WinogradKernels.F6 f, int i) => i switch { 0 => f.A, 1 => f.B, 2 => f.C, 3 => f.D, 4 => f.E, _ => f.F };
        static float G(F4 f, int i) => i switch { 0 => f.X, 1 => f.Y, 2 => f.Z, _ => f.W };
        var wantY = (float[])y0.Clone();
        for (int local = 0; local < pc; local++)
        {
            int p = p0 + local, nn = p / (th * tw), ty = p % (th * tw) / tw, tx = p % tw;
            for (int cc = 0; cc < c; cc++)
            {
                // Bᵀ d column by column, then each row of that times B
                var cols = Enumerable.Range(0, 6).Select(j => WinogradKernels.Bt6(X(nn, cc, 4 * ty - 1, 4 * tx - 1 + j), X(nn, cc, 4 * ty, 4 * tx - 1 + j),
                    X(nn, cc, 4 * ty + 1, 4 * tx - 1 + j), X(nn, cc, 4 * ty + 2, 4 * tx - 1 + j), X(nn, cc, 4 * ty + 3, 4 * tx - 1 + j), X(nn, cc, 4 * ty + 4, 4 * tx - 1 + j))).ToArray();
                for (int row = 0; row < 6; row++)
                {
                    var want = WinogradKernels.Bt6(F(cols[0], row), F(cols[1], row), F(cols[2], row), F(cols[3], row), F(cols[4], row), F(cols[5], row));
                    for (int j = 0; j < 6; j++)
                    {
                        long at = (6L * row + j) * c * pc + (long)cc * pc + local;
                        Assert.That(BitConverter.SingleToInt32Bits(v[at]), Is.EqualTo(BitConverter.SingleToInt32Bits(F(want, j))), $"V[{6 * row + j}] channel {cc} tile {p}");
                    }
                }
            }
            for (int kk = 0; kk < k; kk++)
            {
                long o = (long)kk * pc + local, plane = (long)k * pc;
                float M(int xi) => m[o + xi * plane];
                var a = Enumerable.Range(0, 6).Select(j => WinogradKernels.At6(M(j), M(6 + j), M(12 + j), M(18 + j), M(24 + j), M(30 + j))).ToArray();
                for (int row = 0; row < 4; row++)
                {
                    var vrow = WinogradKernels.At6(G(a[0], row), G(a[1], row), G(a[2], row), G(a[3], row), G(a[4], row), G(a[5], row));
                    int oh = 4 * ty + row;
                    if (oh >= h) continue;
                    for (int j = 0; j < 4; j++)
                        if (4 * tx + j < wd) wantY[((long)(nn * k + kk) * h + oh) * wd + 4 * tx + j] = G(vrow, j) + bias[kk];
                }
            }
        }
        Assert.That(y.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(wantY.Select(BitConverter.SingleToInt32Bits)), "outputs (and the untouched rest)");
    }

    /// <summary>F(4×4) under Tf32 runs F(2×2) (the larger transforms would magnify TF32's rounding): the same bits.</summary>
    [Test]
    public void F4x4UnderTf32IsF2x2()
    {
        using var scope = Tensor.Scope();
        var x = Rand([2, 32, 9, 10], 551);
        var w = Rand([32, 32, 3, 3], 552, lo: -0.5, hi: 0.5);
        Assert.That(Bits(DevConv(x, w, null, WinogradMode.F4x4, Precision.Tf32)), Is.EqualTo(Bits(DevConv(x, w, null, WinogradMode.F2x2, Precision.Tf32))));
        Assert.That(Bits(DevConv(x, w, null, WinogradMode.F4x4, Precision.Fp32)), Is.Not.EqualTo(Bits(DevConv(x, w, null, WinogradMode.F2x2, Precision.Fp32))),
            "in fp32 the two are different algorithms");
    }

    [TestCase(WinogradMode.F2x2, 20, 22, 330)]
    [TestCase(WinogradMode.F4x4, 40, 42, 330)]
    public void ChunksOfTilesGiveTheUnchunkedBits(WinogradMode mode, int h, int wd, int tiles)
    {
        using var scope = Tensor.Scope();
        // 330 tiles (3 images): with a workspace of 128 tiles, chunks of 128, 128 and 74
        var x = Rand([3, 32, h, wd], 511);
        var w = Rand([32, 32, 3, 3], 512, lo: -0.5, hi: 0.5);
        var b = Rand([32], 513);
        int tile = mode == WinogradMode.F4x4 ? 4 : 2;
        Assert.That(3L * WinogradKernels.Tiles(h, wd, tile).H * WinogradKernels.Tiles(h, wd, tile).W, Is.EqualTo(tiles));
        var whole = Bits(DevConv(x, w, b, mode, Precision.Fp32));
        CudaBackend.WinogradChunkFloats = (long)WinogradKernels.Points(tile) * 32 * 128;
        var rt = CudaRuntime.Get(0);
        Dev.Synchronize();
        var c0 = rt.Counters;
        var chunked = Bits(DevConv(x, w, b, mode, Precision.Fp32));
        Dev.Synchronize();
        long launches = (rt.Counters - c0).KernelLaunches;
        Assert.That(chunked, Is.EqualTo(whole));
        Assert.That(launches, Is.GreaterThanOrEqualTo(1 + 3 * 3), "the weight transform, then input transform, GEMM and output transform per chunk");
    }

    [Test]
    public void WeightGradientsAreTheDirectKernelsAndOtherGeometriesAreUntouched()
    {
        var cpu = new[] { Rand([2, 32, 6, 5], 521), Rand([32, 32, 3, 3], 522, lo: -0.5, hi: 0.5), Rand([32], 523) };
        Func<Tensor[], Tensor> conv = t => Ops.Conv2d(t[0], t[1], t[2], 1, 1);
        CudaBackend.Winograd = WinogradMode.Off;
        var off = OutputAndGradientBits(conv, cpu, Precision.Fp32).Bits;
        CudaBackend.Winograd = WinogradMode.F2x2;
        var on = OutputAndGradientBits(conv, cpu, Precision.Fp32).Bits;
        Assert.That(on[0], Is.Not.EqualTo(off[0]), "the forward took Winograd");
        Assert.That(on[1], Is.Not.EqualTo(off[1]), "the input gradient took Winograd");
        Assert.That(on[2], Is.EqualTo(off[2]), "the weight gradient (the direct kernel, from the same input and output gradient)");
        Assert.That(on[3], Is.EqualTo(off[3]), "the bias gradient");

        // stride 2, a 1×1 kernel, fewer than 32 channels: the direct kernels' bits with the switch on
        foreach (var (xs, ws, pr) in new (int[], int[], Conv2dParams)[]
        {
            ([2, 32, 8, 8], [32, 32, 3, 3], Conv2dParams.Symmetric(2, 1)),
            ([2, 32, 8, 8], [32, 32, 1, 1], Conv2dParams.Symmetric(1, 0)),
            ([2, 16, 8, 8], [32, 16, 3, 3], Conv2dParams.Symmetric(1, 1)),
        })
        {
            var f = new[] { Rand(xs, 531), Rand(ws, 532) };
            Func<Tensor[], Tensor> g = t => Ops.Conv2d(t[0], t[1], null, pr);
            CudaBackend.Winograd = WinogradMode.Off;
            var a = OutputAndGradientBits(g, f, Precision.Fp32).Bits;
            CudaBackend.Winograd = WinogradMode.F2x2;
            var z = OutputAndGradientBits(g, f, Precision.Fp32).Bits;
            for (int i = 0; i < a.Count; i++) Assert.That(z[i], Is.EqualTo(a[i]), $"x {string.Join("x", xs)}, w {string.Join("x", ws)}: output/gradient {i}");
        }
    }

    [TestCase(null, WinogradMode.Off)]
    [TestCase("off", WinogradMode.Off)]
    [TestCase(" ON ", WinogradMode.F2x2)]
    [TestCase("1", WinogradMode.F2x2)]
    [TestCase("f2", WinogradMode.F2x2)]
    [TestCase("F4", WinogradMode.F4x4)]
    public void ParsesTheSwitch(string? value, WinogradMode want) => Assert.That(CudaBackend.ParseWinograd(value), Is.EqualTo(want));

    [Test]
    public void RefusesABadValueByName()
    {
        var e = Assert.Throws<ArgumentException>(() => CudaBackend.ParseWinograd("maybe"))!;
        Assert.That(e.Message, Does.Contain("FVL_WINOGRAD").And.Contain("maybe"));
    }
}
