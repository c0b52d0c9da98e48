using FashionViL.Kernels.Cpu;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests;

/// <summary>CNN kernels of the CPU backend against float64 nested-loop references.</summary>
public class ConvKernelTests
{
    private static IBackend Cpu => CpuBackend.Instance;

    // ------------------------------------------------------------------ references

    internal static (int Ho, int Wo) OutSize(int h, int w, int kh, int kw, Conv2dParams p) =>
        ((h + p.PadTop + p.PadBottom - p.DilationH * (kh - 1) - 1) / p.StrideH + 1,
         (w + p.PadLeft + p.PadRight - p.DilationW * (kw - 1) - 1) / p.StrideW + 1);

    /// <summary>Calls body(n, co, oh, ow, ci, ih, iw, kh, kw) for every in-image tap of the convolution.</summary>
    private static void ForTaps(int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams p, Action<int, int, int, int, int, int, int, int, int> body)
    {
        var (Ho, Wo) = OutSize(H, W, Kh, Kw, p);
        for (int n = 0; n < N; n++)
            for (int co = 0; co < Cout; co++)
                for (int oh = 0; oh < Ho; oh++)
                    for (int ow = 0; ow < Wo; ow++)
                        for (int ci = 0; ci < Cin; ci++)
                            for (int kh = 0; kh < Kh; kh++)
                                for (int kw = 0; kw < Kw; kw++)
                                {
                                    int ih = oh * p.StrideH - p.PadTop + kh * p.DilationH;
                                    int iw = ow * p.StrideW - p.PadLeft + kw * p.DilationW;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    body(n, co, oh, ow, ci, ih, iw, kh, kw);
                                }
    }

    internal static double[] RefConv(double[] x, double[] w, double[]? b, int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams p)
    {
        var (Ho, Wo) = OutSize(H, W, Kh, Kw, p);
        var y = new double[N * Cout * Ho * Wo];
        for (int n = 0; n < N; n++) for (int co = 0; co < Cout; co++) for (int i = 0; i < Ho * Wo; i++) y[(n * Cout + co) * Ho * Wo + i] = b?[co] ?? 0;
        ForTaps(N, Cin, H, W, Cout, Kh, Kw, p, (n, co, oh, ow, ci, ih, iw, kh, kw) =>
            y[((n * Cout + co) * Ho + oh) * Wo + ow] += x[((n * Cin + ci) * H + ih) * W + iw] * w[((co * Cin + ci) * Kh + kh) * Kw + kw]);
        return y;
    }

    internal static double[] RefConvGradInput(double[] gy, double[] w, int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams p)
    {
        var (Ho, Wo) = OutSize(H, W, Kh, Kw, p);
        var gx = new double[N * Cin * H * W];
        ForTaps(N, Cin, H, W, Cout, Kh, Kw, p, (n, co, oh, ow, ci, ih, iw, kh, kw) =>
            gx[((n * Cin + ci) * H + ih) * W + iw] += gy[((n * Cout + co) * Ho + oh) * Wo + ow] * w[((co * Cin + ci) * Kh + kh) * Kw + kw]);
        return gx;
    }

    internal static (double[] Gw, double[] Gb) RefConvGradWeight(double[] x, double[] gy, int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams p)
    {
        var (Ho, Wo) = OutSize(H, W, Kh, Kw, p);
        var gw = new double[Cout * Cin * Kh * Kw];
        var gb = new double[Cout];
        ForTaps(N, Cin, H, W, Cout, Kh, Kw, p, (n, co, oh, ow, ci, ih, iw, kh, kw) =>
            gw[((co * Cin + ci) * Kh + kh) * Kw + kw] += gy[((n * Cout + co) * Ho + oh) * Wo + ow] * x[((n * Cin + ci) * H + ih) * W + iw]);
        for (int n = 0; n < N; n++) for (int co = 0; co < Cout; co++) for (int i = 0; i < Ho * Wo; i++) gb[co] += gy[(n * Cout + co) * Ho * Wo + i];
        return (gw, gb);
    }

    // ------------------------------------------------------------------ conv2d

    public static IEnumerable<TestCaseData> ConvCases()
    {
        // N, Cin, H, W, Cout, Kh, Kw, params
        yield return new TestCaseData(1, 3, 5, 7, 4, 3, 3, Conv2dParams.Symmetric(1, 1)).SetName("Conv 3x3 s1 p1 batch1");
        yield return new TestCaseData(2, 3, 9, 7, 5, 3, 3, Conv2dParams.Symmetric(2, 1)).SetName("Conv 3x3 s2 p1 odd input");
        yield return new TestCaseData(2, 4, 8, 8, 3, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1)).SetName("Conv 3x3 s2 asymmetric pad (0,1,0,1)");
        yield return new TestCaseData(1, 2, 7, 9, 3, 4, 4, new Conv2dParams(2, 2, 0, 1, 0, 1)).SetName("Conv 4x4 s2 asymmetric pad odd input");
        yield return new TestCaseData(1, 2, 9, 10, 3, 3, 3, Conv2dParams.Symmetric(1, 2, 2)).SetName("Conv 3x3 dilation 2 p2");
        yield return new TestCaseData(2, 2, 8, 9, 2, 3, 2, new Conv2dParams(1, 2, 0, 0, 1, 0, 2, 1)).SetName("Conv mixed stride/dilation/pad");
        yield return new TestCaseData(1, 3, 15, 13, 4, 7, 7, Conv2dParams.Symmetric(2, 3)).SetName("Conv 7x7 s2 p3 stem");
        yield return new TestCaseData(2, 6, 7, 7, 5, 1, 1, Conv2dParams.Symmetric(2, 0)).SetName("Conv 1x1 s2");
        yield return new TestCaseData(3, 6, 5, 4, 7, 1, 1, Conv2dParams.Symmetric(1, 0)).SetName("Conv 1x1 s1 pointwise");
        yield return new TestCaseData(2, 3, 3, 3, 2, 3, 3, Conv2dParams.Symmetric(1, 0)).SetName("Conv kernel equals input");
    }

    [TestCaseSource(nameof(ConvCases))]
    public void Conv2dMatchesReference(int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams p)
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([N, Cin, H, W], 1);
        var w = OpCheck.Rand([Cout, Cin, Kh, Kw], 2);
        var b = OpCheck.Rand([Cout], 3);
        var (Ho, Wo) = OutSize(H, W, Kh, Kw, p);
        var gy = OpCheck.Rand([N, Cout, Ho, Wo], 4);
        double[] xd = x.ToArray<double>(), wd = w.ToArray<double>(), bd = b.ToArray<double>(), gyd = gy.ToArray<double>();
        var yRef = RefConv(xd, wd, bd, N, Cin, H, W, Cout, Kh, Kw, p);
        var yRefNoBias = RefConv(xd, wd, null, N, Cin, H, W, Cout, Kh, Kw, p);
        var gxRef = RefConvGradInput(gyd, wd, N, Cin, H, W, Cout, Kh, Kw, p);
        var (gwRef, gbRef) = RefConvGradWeight(xd, gyd, N, Cin, H, W, Cout, Kh, Kw, p);

        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            double rtol = dt == DType.Float64 ? 1e-12 : 1e-4, atol = dt == DType.Float64 ? 1e-12 : 1e-5;
            var xt = x.To(dt); var wt = w.To(dt); var bt = b.To(dt); var gyt = gy.To(dt);
            var y = Tensor.Empty([N, Cout, Ho, Wo], dt);
            Cpu.Conv2dForward(xt, wt, bt, y, p);
            OpCheck.AssertClose(y, yRef, rtol, atol, $"forward {dt.Name()}");
            Cpu.Conv2dForward(xt, wt, null, y, p);
            OpCheck.AssertClose(y, yRefNoBias, rtol, atol, $"forward no bias {dt.Name()}");
            var gx = Tensor.Full([N, Cin, H, W], 7, dt); // overwritten, not accumulated
            Cpu.Conv2dBackwardInput(gyt, wt, gx, p);
            OpCheck.AssertClose(gx, gxRef, rtol, atol, $"grad input {dt.Name()}");
            var gw = Tensor.Full([Cout, Cin, Kh, Kw], 7, dt); var gb = Tensor.Full([Cout], 7, dt);
            Cpu.Conv2dBackwardWeight(xt, gyt, gw, gb, p);
            OpCheck.AssertClose(gw, gwRef, rtol, atol, $"grad weight {dt.Name()}");
            OpCheck.AssertClose(gb, gbRef, rtol, atol, $"grad bias {dt.Name()}");
        }
    }

    // K = 18, P = 15 here: 270 = one image per chunk, 540 = chunks of 2 and 1,
    // 180 = bands of 2 output rows (and a last band of 1), 1 = bands of one row.
    [TestCase(270L)]
    [TestCase(540L)]
    [TestCase(180L)]
    [TestCase(1L)]
    public void Conv2dChunksWhenTheColumnBufferIsCapped(long budget)
    {
        using var scope = Tensor.Scope();
        int N = 3, Cin = 2, H = 6, W = 5, Cout = 3;
        var p = new Conv2dParams(2, 1, 1, 0, 1, 1);
        var x = OpCheck.Rand([N, Cin, H, W], 11); var w = OpCheck.Rand([Cout, Cin, 3, 3], 12);
        var b = OpCheck.Rand([Cout], 14);
        var (Ho, Wo) = OutSize(H, W, 3, 3, p);
        Assert.That((Ho, Wo), Is.EqualTo((3, 5)), "geometry the budgets above were chosen for");
        var gy = OpCheck.Rand([N, Cout, Ho, Wo], 13);
        double[] xd = x.ToArray<double>(), wd = w.ToArray<double>(), gyd = gy.ToArray<double>();
        long saved = CpuBackend.ConvColumnBudget;
        try
        {
            CpuBackend.ConvColumnBudget = budget;
            var y = Tensor.Empty([N, Cout, Ho, Wo], DType.Float64);
            Cpu.Conv2dForward(x, w, b, y, p);
            OpCheck.AssertClose(y, RefConv(xd, wd, b.ToArray<double>(), N, Cin, H, W, Cout, 3, 3, p), 1e-12, 1e-12, "forward");
            var gx = Tensor.Empty([N, Cin, H, W], DType.Float64);
            Cpu.Conv2dBackwardInput(gy, w, gx, p);
            OpCheck.AssertClose(gx, RefConvGradInput(gyd, wd, N, Cin, H, W, Cout, 3, 3, p), 1e-12, 1e-12, "grad input");
            var gw = Tensor.Empty([Cout, Cin, 3, 3], DType.Float64);
            Cpu.Conv2dBackwardWeight(x, gy, gw, null, p);
            OpCheck.AssertClose(gw, RefConvGradWeight(xd, gyd, N, Cin, H, W, Cout, 3, 3, p).Gw, 1e-12, 1e-12, "grad weight");
        }
        finally { CpuBackend.ConvColumnBudget = saved; }
    }

    [Test]
    public void Conv2dRejectsMismatchedShapes()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([8, 3, 224, 224]);
        var w = Tensor.Zeros([64, 4, 7, 7]);
        var y = Tensor.Zeros([8, 64, 112, 112]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(x, w, null, y, Conv2dParams.Symmetric(2, 3)));
        Assert.That(ex!.Message, Does.Contain("conv2d: input [8, 3, 224, 224] has 3 channels, weight [64, 4, 7, 7] expects 4"));
        var w3 = Tensor.Zeros([64, 3, 7, 7]);
        var yBad = Tensor.Zeros([8, 64, 111, 112]);
        ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(x, w3, null, yBad, Conv2dParams.Symmetric(2, 3)));
        Assert.That(ex!.Message, Does.Contain("conv2d").And.Contain("[8, 64, 111, 112]").And.Contain("[8, 64, 112, 112]"));
        var small = Tensor.Zeros([1, 3, 4, 4]);
        ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(small, w3, null, y, Conv2dParams.Symmetric(1, 0)));
        Assert.That(ex!.Message, Does.Contain("conv2d").And.Contain("[1, 3, 4, 4]").And.Contain("too small"));
        // (6 − 7)/2 truncates to 0 in integer division: the kernel does not fit even though OutH says 1.
        ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(Tensor.Zeros([1, 3, 6, 6]), w3, null, Tensor.Zeros([1, 64, 1, 1]), Conv2dParams.Symmetric(2, 0)));
        Assert.That(ex!.Message, Does.Contain("conv2d").And.Contain("[1, 3, 6, 6]").And.Contain("too small"));
        var bias = Tensor.Zeros([63]);
        ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(x, w3, bias, y, Conv2dParams.Symmetric(2, 3)));
        Assert.That(ex!.Message, Does.Contain("conv2d: bias [63]"));
        var wd = Tensor.Zeros([64, 3, 7, 7], DType.Float64);
        ex = Assert.Throws<ArgumentException>(() => Cpu.Conv2dForward(x, wd, null, y, Conv2dParams.Symmetric(2, 3)));
        Assert.That(ex!.Message, Does.Contain("conv2d: dtypes differ"));
    }

    // ------------------------------------------------------------------ max pool

    private static (double[] Y, long[] I) RefMaxPool(double[] x, int planes, int H, int W, Pool2dParams p)
    {
        int Ho = p.OutH(H), Wo = p.OutW(W);
        var y = new double[planes * Ho * Wo]; var idx = new long[y.Length];
        for (int pl = 0; pl < planes; pl++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++)
                {
                    double best = double.NegativeInfinity; long bi = -1;
                    for (int kh = 0; kh < p.KernelH; kh++)
                        for (int kw = 0; kw < p.KernelW; kw++)
                        {
                            int ih = oh * p.StrideH - p.PadH + kh, iw = ow * p.StrideW - p.PadW + kw;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            double v = x[(pl * H + ih) * W + iw];
                            if (bi < 0 || v > best) { best = v; bi = ih * W + iw; }
                        }
                    y[(pl * Ho + oh) * Wo + ow] = best; idx[(pl * Ho + oh) * Wo + ow] = bi;
                }
        return (y, idx);
    }

    [TestCase(1, 1, 5, 5, 3, 3, 2, 2, 1, 1, TestName = "MaxPool 3x3 s2 p1 (ResNet) odd input")]
    [TestCase(2, 3, 8, 7, 3, 3, 2, 2, 1, 1, TestName = "MaxPool 3x3 s2 p1 even/odd")]
    [TestCase(1, 2, 6, 6, 2, 2, 2, 2, 0, 0, TestName = "MaxPool 2x2 s2")]
    [TestCase(1, 2, 5, 6, 3, 3, 1, 1, 1, 1, TestName = "MaxPool 3x3 s1 p1 overlapping")]
    [TestCase(2, 1, 7, 9, 2, 5, 1, 3, 1, 2, TestName = "MaxPool 2x5 s(1,3) p(1,2) non-square")]
    public void MaxPoolMatchesReference(int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw)
    {
        using var scope = Tensor.Scope();
        var p = new Pool2dParams(kh, kw, sh, sw, ph, pw);
        // Negative values: a zero-padded implementation would wrongly return 0 at the borders.
        var x = OpCheck.Rand([N, C, H, W], 21, DType.Float64, -3, -1);
        var (yRef, iRef) = RefMaxPool(x.ToArray<double>(), N * C, H, W, p);
        int Ho = p.OutH(H), Wo = p.OutW(W);
        var gy = OpCheck.Rand([N, C, Ho, Wo], 22);
        var gyd = gy.ToArray<double>();
        var gxRef = new double[N * C * H * W];
        for (int i = 0; i < gyd.Length; i++) gxRef[i / (Ho * Wo) * H * W + iRef[i]] += gyd[i];
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            var xt = x.To(dt);
            var y = Tensor.Empty([N, C, Ho, Wo], dt); var idx = Tensor.Empty([N, C, Ho, Wo], DType.Int64);
            Cpu.MaxPool2dForward(xt, y, idx, p);
            OpCheck.AssertClose(y, yRef, 1e-7, 0, $"values {dt.Name()}");
            Assert.That(idx.ToArray<long>(), Is.EqualTo(iRef), $"indices {dt.Name()}");
            var gx = Tensor.Full([N, C, H, W], 5, dt);
            Cpu.MaxPool2dBackward(gy.To(dt), idx, gx);
            OpCheck.AssertClose(gx, gxRef, 1e-6, 1e-7, $"grad {dt.Name()}");
        }
    }

    [Test]
    public void MaxPoolTakesTheFirstMaxOnTiesAndPropagatesNaN()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Full([1, 1, 4, 4], 2.0, DType.Float64);
        var p = new Pool2dParams(2, 2, 2, 2, 0, 0);
        var y = Tensor.Empty([1, 1, 2, 2], DType.Float64); var idx = Tensor.Empty([1, 1, 2, 2], DType.Int64);
        Cpu.MaxPool2dForward(x, y, idx, p);
        Assert.That(idx.ToArray<long>(), Is.EqualTo(new long[] { 0, 2, 8, 10 }));
        var v = new double[16]; v[5] = double.NaN; v[4] = 100;
        var xn = Tensor.FromArray(v, [1, 1, 4, 4]);
        Cpu.MaxPool2dForward(xn, y, idx, p);
        var yv = y.ToArray<double>();
        Assert.That(double.IsNaN(yv[0]), Is.True, "NaN propagates");
        Assert.That(idx.ToArray<long>()[0], Is.EqualTo(5));
    }

    [Test]
    public void MaxPoolBackwardRejectsOutOfRangeIndices()
    {
        using var scope = Tensor.Scope();
        var gy = Tensor.Ones([1, 1, 2, 2]);
        var idx = Tensor.FromArray(new long[] { 0, 1, 16, 3 }, [1, 1, 2, 2]);
        var gx = Tensor.Zeros([1, 1, 4, 4]);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.MaxPool2dBackward(gy, idx, gx));
        Assert.That(ex!.Message, Does.Contain("max_pool2d backward").And.Contain("16"));
        var bad = Tensor.Zeros([1, 1, 3, 3]);
        var ex2 = Assert.Throws<ArgumentException>(() => Cpu.MaxPool2dForward(Tensor.Zeros([1, 1, 4, 4]), bad, Tensor.Zeros([1, 1, 3, 3], DType.Int64), new Pool2dParams(2, 2, 2, 2, 0, 0)));
        Assert.That(ex2!.Message, Does.Contain("max_pool2d").And.Contain("[1, 1, 3, 3]").And.Contain("[1, 1, 2, 2]"));
    }

    // ------------------------------------------------------------------ adaptive average pool

    [TestCase(2, 3, 7, 5, 3, 2)]
    [TestCase(1, 2, 7, 7, 1, 1)]
    [TestCase(1, 1, 3, 5, 7, 6)]
    [TestCase(1, 2, 6, 4, 6, 4)]
    public void AdaptiveAvgPoolMatchesReference(int N, int C, int H, int W, int Ho, int Wo)
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([N, C, H, W], 31);
        var gy = OpCheck.Rand([N, C, Ho, Wo], 32);
        double[] xd = x.ToArray<double>(), gyd = gy.ToArray<double>();
        var yRef = new double[N * C * Ho * Wo]; var gxRef = new double[xd.Length];
        for (int pl = 0; pl < N * C; pl++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++)
                {
                    int h0 = (int)Math.Floor(oh * (double)H / Ho), h1 = (int)Math.Ceiling((oh + 1) * (double)H / Ho);
                    int w0 = (int)Math.Floor(ow * (double)W / Wo), w1 = (int)Math.Ceiling((ow + 1) * (double)W / Wo);
                    int cnt = (h1 - h0) * (w1 - w0);
                    double s = 0;
                    for (int ih = h0; ih < h1; ih++) for (int iw = w0; iw < w1; iw++) s += xd[(pl * H + ih) * W + iw];
                    int o = (pl * Ho + oh) * Wo + ow;
                    yRef[o] = s / cnt;
                    for (int ih = h0; ih < h1; ih++) for (int iw = w0; iw < w1; iw++) gxRef[(pl * H + ih) * W + iw] += gyd[o] / cnt;
                }
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            double rtol = dt == DType.Float64 ? 1e-12 : 1e-5;
            var y = Tensor.Empty([N, C, Ho, Wo], dt);
            Cpu.AdaptiveAvgPool2dForward(x.To(dt), y);
            OpCheck.AssertClose(y, yRef, rtol, rtol, $"forward {dt.Name()}");
            var gx = Tensor.Full([N, C, H, W], 3, dt);
            Cpu.AdaptiveAvgPool2dBackward(gy.To(dt), gx);
            OpCheck.AssertClose(gx, gxRef, rtol, rtol, $"backward {dt.Name()}");
        }
    }

    // ------------------------------------------------------------------ batch norm

    /// <summary>Per-channel (mean, biased var) of x [N,C,S].</summary>
    private static (double[] Mean, double[] Var) ChannelStats(double[] x, int N, int C, int S)
    {
        var mean = new double[C]; var var = new double[C];
        for (int c = 0; c < C; c++)
        {
            double s = 0;
            for (int n = 0; n < N; n++) for (int i = 0; i < S; i++) s += x[(n * C + c) * S + i];
            mean[c] = s / (N * S);
            double ss = 0;
            for (int n = 0; n < N; n++) for (int i = 0; i < S; i++) { double d = x[(n * C + c) * S + i] - mean[c]; ss += d * d; }
            var[c] = ss / (N * S);
        }
        return (mean, var);
    }

    [TestCase(new[] { 2, 3, 4, 5 }, true)]
    [TestCase(new[] { 1, 2, 3, 3 }, true)]
    [TestCase(new[] { 5, 4 }, true)]
    [TestCase(new[] { 2, 3, 4, 5 }, false)]
    [TestCase(new[] { 3, 2 }, false)]
    public void BatchNormMatchesReference(int[] shape, bool training)
    {
        using var scope = Tensor.Scope();
        int N = shape[0], C = shape[1], S = shape.Length == 4 ? shape[2] * shape[3] : 1;
        const double eps = 1e-5, mom = 0.1;
        var x = OpCheck.Rand(shape, 41, DType.Float64, -2, 3);
        var w = OpCheck.Rand([C], 42, DType.Float64, 0.5, 1.5);
        var b = OpCheck.Rand([C], 43);
        var rm0 = OpCheck.Rand([C], 44); var rv0 = OpCheck.Rand([C], 45, DType.Float64, 0.5, 2);
        var gy = OpCheck.Rand(shape, 46);
        double[] xd = x.ToArray<double>(), wd = w.ToArray<double>(), bd = b.ToArray<double>(), rmd = rm0.ToArray<double>(), rvd = rv0.ToArray<double>(), gyd = gy.ToArray<double>();
        var (bm, bv) = ChannelStats(xd, N, C, S);
        double[] mean = training ? bm : rmd, var = training ? bv : rvd;
        var yRef = new double[xd.Length]; var gxRef = new double[xd.Length]; var gwRef = new double[C]; var gbRef = new double[C];
        double M = N * S;
        for (int c = 0; c < C; c++)
        {
            double inv = 1 / Math.Sqrt(var[c] + eps), sg = 0, sgx = 0;
            for (int n = 0; n < N; n++) for (int i = 0; i < S; i++)
            {
                int k = (n * C + c) * S + i; double xh = (xd[k] - mean[c]) * inv;
                yRef[k] = xh * wd[c] + bd[c]; sg += gyd[k]; sgx += gyd[k] * xh;
            }
            gwRef[c] = sgx; gbRef[c] = sg;
            for (int n = 0; n < N; n++) for (int i = 0; i < S; i++)
            {
                int k = (n * C + c) * S + i; double xh = (xd[k] - mean[c]) * inv;
                gxRef[k] = training ? wd[c] * inv * (gyd[k] - sg / M - xh * sgx / M) : wd[c] * inv * gyd[k];
            }
        }
        // running update by hand: (1 − m)·old + m·batch, variance unbiased
        var rmRef = new double[C]; var rvRef = new double[C];
        for (int c = 0; c < C; c++)
        {
            rmRef[c] = training ? (1 - mom) * rmd[c] + mom * bm[c] : rmd[c];
            rvRef[c] = training ? (1 - mom) * rvd[c] + mom * bv[c] * M / (M - 1) : rvd[c];
        }
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            double rtol = dt == DType.Float64 ? 1e-10 : 1e-4, atol = dt == DType.Float64 ? 1e-10 : 1e-5;
            var xt = x.To(dt); var rm = rm0.To(dt); var rv = rv0.To(dt);
            var y = Tensor.Empty(shape, dt); var sm = Tensor.Empty([C], dt); var sis = Tensor.Empty([C], dt);
            Cpu.BatchNormForward(xt, w.To(dt), b.To(dt), rm, rv, training, mom, eps, y, sm, sis);
            OpCheck.AssertClose(y, yRef, rtol, atol, $"forward {dt.Name()}");
            OpCheck.AssertClose(sm, mean, rtol, atol, $"saved mean {dt.Name()}");
            OpCheck.AssertClose(sis, var.Select(v => 1 / Math.Sqrt(v + eps)).ToArray(), rtol, atol, $"saved inv std {dt.Name()}");
            OpCheck.AssertClose(rm, rmRef, rtol, atol, $"running mean {dt.Name()}");
            OpCheck.AssertClose(rv, rvRef, rtol, atol, $"running var {dt.Name()}");
            var gx = Tensor.Empty(shape, dt); var gw = Tensor.Empty([C], dt); var gb = Tensor.Empty([C], dt);
            Cpu.BatchNormBackward(xt, gy.To(dt), w.To(dt), sm, sis, training, gx, gw, gb);
            OpCheck.AssertClose(gx, gxRef, rtol, atol, $"grad input {dt.Name()}");
            OpCheck.AssertClose(gw, gwRef, rtol, atol, $"grad weight {dt.Name()}");
            OpCheck.AssertClose(gb, gbRef, rtol, atol, $"grad bias {dt.Name()}");
        }
    }

    [Test]
    public void BatchNormWithoutAffineOrRunningStats()
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([3, 2, 2, 2], 51);
        var (m, v) = ChannelStats(x.ToArray<double>(), 3, 2, 4);
        var y = Tensor.Empty([3, 2, 2, 2], DType.Float64); var sm = Tensor.Empty([2], DType.Float64); var sis = Tensor.Empty([2], DType.Float64);
        Cpu.BatchNormForward(x, null, null, null, null, true, 0.1, 1e-5, y, sm, sis);
        var xd = x.ToArray<double>();
        var want = xd.Select((xv, k) => { int c = k / 4 % 2; return (xv - m[c]) / Math.Sqrt(v[c] + 1e-5); }).ToArray();
        OpCheck.AssertClose(y, want, 1e-10, 1e-10);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.BatchNormForward(x, null, null, null, null, false, 0.1, 1e-5, y, sm, sis));
        Assert.That(ex!.Message, Does.Contain("batch_norm").And.Contain("[3, 2, 2, 2]"));
        var one = Tensor.Zeros([1, 2, 1, 1], DType.Float64);
        ex = Assert.Throws<ArgumentException>(() => Cpu.BatchNormForward(one, null, null, null, null, true, 0.1, 1e-5, Tensor.Zeros([1, 2, 1, 1], DType.Float64), sm, sis));
        Assert.That(ex!.Message, Does.Contain("more than 1 value per channel").And.Contain("[1, 2, 1, 1]"));
    }

    // ------------------------------------------------------------------ group norm

    [TestCase(new[] { 2, 6, 3, 2 }, 3, true)]
    [TestCase(new[] { 1, 4, 5, 1 }, 1, true)]
    [TestCase(new[] { 2, 4, 3 }, 4, false)]
    [TestCase(new[] { 3, 4 }, 2, true)]
    public void GroupNormMatchesReference(int[] shape, int G, bool affine)
    {
        using var scope = Tensor.Scope();
        int N = shape[0], C = shape[1], S = shape.Skip(2).Aggregate(1, (a, b) => a * b), cg = C / G;
        const double eps = 1e-5;
        var x = OpCheck.Rand(shape, 61, DType.Float64, -1, 2);
        var w = OpCheck.Rand([C], 62, DType.Float64, 0.5, 1.5); var b = OpCheck.Rand([C], 63);
        var gy = OpCheck.Rand(shape, 64);
        double[] xd = x.ToArray<double>(), wd = affine ? w.ToArray<double>() : Enumerable.Repeat(1.0, C).ToArray(), bd = affine ? b.ToArray<double>() : new double[C], gyd = gy.ToArray<double>();
        var yRef = new double[xd.Length]; var gxRef = new double[xd.Length]; var mRef = new double[N * G]; var rRef = new double[N * G];
        var gwRef = new double[C]; var gbRef = new double[C];
        double M = cg * S;
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G; g++)
            {
                int start = (n * C + g * cg) * S, len = cg * S;
                double mu = 0; for (int k = 0; k < len; k++) mu += xd[start + k]; mu /= len;
                double vv = 0; for (int k = 0; k < len; k++) vv += (xd[start + k] - mu) * (xd[start + k] - mu); vv /= len;
                double r = 1 / Math.Sqrt(vv + eps);
                mRef[n * G + g] = mu; rRef[n * G + g] = r;
                double sg = 0, sgx = 0;
                for (int k = 0; k < len; k++)
                {
                    int c = g * cg + k / S; double xh = (xd[start + k] - mu) * r;
                    yRef[start + k] = xh * wd[c] + bd[c];
                    double gh = gyd[start + k] * wd[c]; sg += gh; sgx += gh * xh;
                    gwRef[c] += gyd[start + k] * xh; gbRef[c] += gyd[start + k];
                }
                for (int k = 0; k < len; k++)
                {
                    int c = g * cg + k / S; double xh = (xd[start + k] - mu) * r;
                    gxRef[start + k] = r * (gyd[start + k] * wd[c] - sg / M - xh * sgx / M);
                }
            }
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            double rtol = dt == DType.Float64 ? 1e-10 : 1e-4, atol = dt == DType.Float64 ? 1e-10 : 1e-5;
            var xt = x.To(dt); var wt = affine ? w.To(dt) : null; var bt = affine ? b.To(dt) : null;
            var y = Tensor.Empty(shape, dt); var mean = Tensor.Empty([N, G], dt); var rstd = Tensor.Empty([N, G], dt);
            Cpu.GroupNormForward(xt, wt, bt, G, eps, y, mean, rstd);
            OpCheck.AssertClose(y, yRef, rtol, atol, $"forward {dt.Name()}");
            OpCheck.AssertClose(mean, mRef, rtol, atol, $"mean {dt.Name()}");
            OpCheck.AssertClose(rstd, rRef, rtol, atol, $"rstd {dt.Name()}");
            var gx = Tensor.Empty(shape, dt); var gw = Tensor.Empty([C], dt); var gb = Tensor.Empty([C], dt);
            Cpu.GroupNormBackward(xt, gy.To(dt), wt, G, mean, rstd, gx, gw, gb);
            OpCheck.AssertClose(gx, gxRef, rtol, atol, $"grad input {dt.Name()}");
            OpCheck.AssertClose(gw, gwRef, rtol, atol, $"grad weight {dt.Name()}");
            OpCheck.AssertClose(gb, gbRef, rtol, atol, $"grad bias {dt.Name()}");
        }
    }

    [Test]
    public void GroupNormRejectsIndivisibleChannels()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([2, 6, 3, 3]);
        var ex = Assert.Throws<ArgumentException>(() => Cpu.GroupNormForward(x, null, null, 4, 1e-5, Tensor.Zeros([2, 6, 3, 3]), Tensor.Zeros([2, 4]), Tensor.Zeros([2, 4])));
        Assert.That(ex!.Message, Does.Contain("group_norm").And.Contain("[2, 6, 3, 3]").And.Contain("4 groups"));
    }
}
