using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>Differentiable CNN ops: forward against float64 loops, backward by finite differences.</summary>
public class ConvOpTests
{
    // ------------------------------------------------------------------ references (float64 loops)

    private static Tensor RefConv(Tensor xt, Tensor wt, Tensor? bt, Conv2dParams p)
    {
        double[] x = xt.ToArray<double>(), w = wt.ToArray<double>();
        double[]? b = bt?.ToArray<double>();
        int N = xt.Size(0), Cin = xt.Size(1), H = xt.Size(2), W = xt.Size(3), Cout = wt.Size(0), Kh = wt.Size(2), Kw = wt.Size(3);
        int Ho = (H + p.PadTop + p.PadBottom - p.DilationH * (Kh - 1) - 1) / p.StrideH + 1;
        int Wo = (W + p.PadLeft + p.PadRight - p.DilationW * (Kw - 1) - 1) / p.StrideW + 1;
        var y = new double[N * Cout * Ho * Wo];
        for (int n = 0; n < N; n++)
            for (int co = 0; co < Cout; co++)
                for (int oh = 0; oh < Ho; oh++)
                    for (int ow = 0; ow < Wo; ow++)
                    {
                        double s = b?[co] ?? 0;
                        for (int ci = 0; ci < Cin; ci++)
                            for (int kh = 0; kh < Kh; kh++)
                                for (int kw = 0; kw < Kw; kw++)
                                {
                                    int ih = oh * p.StrideH - p.PadTop + kh * p.DilationH, iw = ow * p.StrideW - p.PadLeft + kw * p.DilationW;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    s += x[((n * Cin + ci) * H + ih) * W + iw] * w[((co * Cin + ci) * Kh + kh) * Kw + kw];
                                }
                        y[((n * Cout + co) * Ho + oh) * Wo + ow] = s;
                    }
        return Tensor.FromArray(y, [N, Cout, Ho, Wo]);
    }

    private static Tensor RefMaxPool(Tensor xt, int k, int s, int pad)
    {
        var x = xt.ToArray<double>();
        int N = xt.Size(0), C = xt.Size(1), H = xt.Size(2), W = xt.Size(3), Ho = (H + 2 * pad - k) / s + 1, Wo = (W + 2 * pad - k) / s + 1;
        var y = new double[N * C * Ho * Wo];
        for (int pl = 0; pl < N * C; pl++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++)
                {
                    double m = double.NegativeInfinity;
                    for (int kh = 0; kh < k; kh++)
                        for (int kw = 0; kw < k; kw++)
                        {
                            int ih = oh * s - pad + kh, iw = ow * s - pad + kw;
                            if (ih >= 0 && ih < H && iw >= 0 && iw < W) m = Math.Max(m, x[(pl * H + ih) * W + iw]);
                        }
                    y[(pl * Ho + oh) * Wo + ow] = m;
                }
        return Tensor.FromArray(y, [N, C, Ho, Wo]);
    }

    private static Tensor RefAdaptive(Tensor xt, int Ho, int Wo)
    {
        var x = xt.ToArray<double>();
        int N = xt.Size(0), C = xt.Size(1), H = xt.Size(2), W = xt.Size(3);
        var y = new double[N * C * Ho * Wo];
        for (int pl = 0; pl < N * C; pl++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++)
                {
                    int h0 = oh * H / Ho, h1 = (int)Math.Ceiling((oh + 1) * (double)H / Ho), w0 = ow * W / Wo, w1 = (int)Math.Ceiling((ow + 1) * (double)W / Wo);
                    double s = 0;
                    for (int ih = h0; ih < h1; ih++) for (int iw = w0; iw < w1; iw++) s += x[(pl * H + ih) * W + iw];
                    y[(pl * Ho + oh) * Wo + ow] = s / ((h1 - h0) * (w1 - w0));
                }
        return Tensor.FromArray(y, [N, C, Ho, Wo]);
    }

    /// <summary>Normalises x [N,C,S...] over the element sets given by <paramref name="key"/> (flat index → stat slot), then affine per channel.</summary>
    private static Tensor RefNorm(Tensor xt, Tensor? wt, Tensor? bt, Func<int, int> key, int slots, double eps, double[]? fixedMean = null, double[]? fixedVar = null)
    {
        var x = xt.ToArray<double>();
        int C = xt.Size(1), S = xt.Numel / (xt.Size(0) * C);
        double[] w = wt?.ToArray<double>() ?? Enumerable.Repeat(1.0, C).ToArray(), b = bt?.ToArray<double>() ?? new double[C];
        var sum = new double[slots]; var cnt = new double[slots];
        for (int i = 0; i < x.Length; i++) { sum[key(i)] += x[i]; cnt[key(i)]++; }
        var mean = fixedMean ?? sum.Select((s, j) => s / cnt[j]).ToArray();
        var ss = new double[slots];
        for (int i = 0; i < x.Length; i++) ss[key(i)] += (x[i] - mean[key(i)]) * (x[i] - mean[key(i)]);
        var var = fixedVar ?? ss.Select((s, j) => s / cnt[j]).ToArray();
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            int c = i / S % C;
            y[i] = (x[i] - mean[key(i)]) / Math.Sqrt(var[key(i)] + eps) * w[c] + b[c];
        }
        return Tensor.FromArray(y, xt.Shape);
    }

    private static Tensor RefBatchNorm(Tensor x, Tensor? w, Tensor? b, double eps)
    {
        int C = x.Size(1), S = x.Numel / (x.Size(0) * C);
        return RefNorm(x, w, b, i => i / S % C, C, eps);
    }

    private static Tensor RefGroupNorm(Tensor x, int G, Tensor? w, Tensor? b, double eps)
    {
        int N = x.Size(0), per = x.Numel / N / G;
        return RefNorm(x, w, b, i => i / per, N * G, eps);
    }

    // ------------------------------------------------------------------ conv2d

    public static IEnumerable<TestCaseData> ConvCases()
    {
        // x shape, w shape, params
        yield return new TestCaseData(new[] { 2, 2, 5, 4 }, new[] { 3, 2, 3, 3 }, Conv2dParams.Symmetric(1, 1)).SetName("Conv2d 3x3 s1 p1");
        yield return new TestCaseData(new[] { 1, 2, 7, 5 }, new[] { 2, 2, 3, 3 }, Conv2dParams.Symmetric(2, 1)).SetName("Conv2d 3x3 s2 odd input batch1");
        yield return new TestCaseData(new[] { 1, 2, 6, 6 }, new[] { 2, 2, 3, 3 }, new Conv2dParams(2, 2, 0, 1, 0, 1)).SetName("Conv2d VQ-VAE downsample pad (0,1,0,1)");
        yield return new TestCaseData(new[] { 1, 1, 7, 6 }, new[] { 2, 1, 3, 2 }, Conv2dParams.Symmetric(1, 2, 2)).SetName("Conv2d dilation 2");
        yield return new TestCaseData(new[] { 1, 1, 9, 8 }, new[] { 2, 1, 7, 7 }, Conv2dParams.Symmetric(2, 3)).SetName("Conv2d 7x7 s2 p3");
        yield return new TestCaseData(new[] { 2, 3, 5, 5 }, new[] { 2, 3, 1, 1 }, Conv2dParams.Symmetric(2, 0)).SetName("Conv2d 1x1 s2");
        yield return new TestCaseData(new[] { 2, 3, 3, 2 }, new[] { 4, 3, 1, 1 }, Conv2dParams.Symmetric(1, 0)).SetName("Conv2d 1x1 s1");
    }

    [TestCaseSource(nameof(ConvCases))]
    public void Conv2dForwardAndGrad(int[] xs, int[] ws, Conv2dParams p)
    {
        var x = OpCheck.Rand(xs, 1, requiresGrad: true);
        var w = OpCheck.Rand(ws, 2, requiresGrad: true);
        var b = OpCheck.Rand([ws[0]], 3, requiresGrad: true);
        OpCheck.Forward(t => Ops.Conv2d(t[0], t[1], t[2], p), t => RefConv(t[0], t[1], t[2], p), [x, w, b], what: "with bias");
        OpCheck.Forward(t => Ops.Conv2d(t[0], t[1], null, p), t => RefConv(t[0], t[1], null, p), [x, w], what: "no bias");
        OpCheck.GradCheck(t => Ops.Conv2d(t[0], t[1], t[2], p), [x, w, b], what: "conv2d");
    }

    [Test]
    public void Conv2dSymmetricOverloadAndNonContiguousInput()
    {
        var x = OpCheck.Rand([2, 3, 6, 5], 4);
        var w = OpCheck.Rand([2, 3, 3, 3], 5);
        using var scope = Tensor.Scope();
        var xn = OpCheck.NonContiguous(x);
        Assert.That(xn.IsContiguous, Is.False);
        OpCheck.Forward(t => Ops.Conv2d(t[0], t[1], stride: 2, padding: 1), t => RefConv(t[0], t[1], null, Conv2dParams.Symmetric(2, 1)), [xn, w]);
        // Gradient through a permuted (non-contiguous) view of a leaf.
        var leaf = OpCheck.Rand([2, 6, 5, 3], 6, requiresGrad: true);
        OpCheck.GradCheck(t => Ops.Conv2d(t[0].Permute(0, 3, 1, 2), t[1], null, 1, 1, 1), [leaf, w], what: "permuted input");
    }

    [Test]
    public void Conv2dBiasOnlyAndWeightOnlyGradients()
    {
        var x = OpCheck.Rand([1, 2, 4, 4], 7);
        var w = OpCheck.Rand([3, 2, 3, 3], 8);
        var b = OpCheck.Rand([3], 9, requiresGrad: true);
        OpCheck.GradCheck(t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), [x, w, b], what: "bias only");
        var w2 = OpCheck.Rand([3, 2, 3, 3], 10, requiresGrad: true);
        OpCheck.GradCheck(t => Ops.Conv2d(t[0], t[1], null, 2, 0), [x, w2], what: "weight only");
    }

    [Test]
    public void EmptyBatchGivesEmptyOutputsAndZeroParameterGradients()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([0, 2, 5, 5], DType.Float64); x.RequiresGrad = true;
        var w = OpCheck.Rand([3, 2, 3, 3], 14, requiresGrad: true);
        var b = OpCheck.Rand([3], 15, requiresGrad: true);
        var y = Ops.Conv2d(x, w, b, 2, 1);
        Assert.That(y.Shape, Is.EqualTo(new[] { 0, 3, 3, 3 }));
        var p = Ops.MaxPool2d(y, 3, 2, 1);
        Assert.That(p.Shape, Is.EqualTo(new[] { 0, 3, 2, 2 }));
        var g = Ops.GroupNorm(p, 3);
        Assert.That(g.Shape, Is.EqualTo(new[] { 0, 3, 2, 2 }));
        g.Sum().Backward();
        Assert.That(x.Grad!.Shape, Is.EqualTo(new[] { 0, 2, 5, 5 }));
        Assert.That(w.Grad!.ToArray<double>(), Is.All.EqualTo(0.0));
        Assert.That(b.Grad!.ToArray<double>(), Is.All.EqualTo(0.0));
    }

    [Test]
    public void Conv2dRejectsBadInputs()
    {
        using var scope = Tensor.Scope();
        var ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([8, 3, 224, 224]), Tensor.Zeros([64, 4, 7, 7]), null, 2, 3));
        Assert.That(ex!.Message, Is.EqualTo("conv2d: input [8, 3, 224, 224] has 3 channels, weight [64, 4, 7, 7] expects 4"));
        ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([3, 224, 224]), Tensor.Zeros([64, 3, 7, 7])));
        Assert.That(ex!.Message, Does.Contain("conv2d: input [3, 224, 224] must be [N,C,H,W]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([1, 3, 4, 4]), Tensor.Zeros([2, 3, 3, 3]), Tensor.Zeros([3])));
        Assert.That(ex!.Message, Does.Contain("conv2d: bias [3] should be [2]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([1, 3, 2, 2]), Tensor.Zeros([2, 3, 3, 3]), null, 2));
        Assert.That(ex!.Message, Does.Contain("conv2d: input [1, 3, 2, 2] is too small for weight [2, 3, 3, 3]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([1, 3, 4, 4]), Tensor.Zeros([2, 3, 3, 3], DType.Float64)));
        Assert.That(ex!.Message, Does.Contain("conv2d: dtypes differ"));
        ex = Assert.Throws<ArgumentException>(() => Ops.Conv2d(Tensor.Zeros([1, 3, 4, 4]), Tensor.Zeros([2, 3, 3, 3]), null, 0));
        Assert.That(ex!.Message, Does.Contain("conv2d: invalid geometry"));
    }

    // ------------------------------------------------------------------ pooling

    [TestCase(new[] { 2, 2, 7, 6 }, 3, 2, 1, TestName = "MaxPool2d 3x3 s2 p1 (ResNet stem)")]
    [TestCase(new[] { 1, 1, 4, 5 }, 2, 2, 0, TestName = "MaxPool2d 2x2 s2 batch1")]
    [TestCase(new[] { 1, 2, 4, 4 }, 3, 1, 1, TestName = "MaxPool2d 3x3 s1 overlapping")]
    public void MaxPool2dForwardAndGrad(int[] xs, int k, int s, int pad)
    {
        // Negative inputs so that a padding value of 0 instead of −∞ would show.
        var x = OpCheck.Rand(xs, 11, DType.Float64, -2, -0.5, requiresGrad: true);
        OpCheck.Forward(t => Ops.MaxPool2d(t[0], k, s, pad), t => RefMaxPool(t[0], k, s, pad), [x]);
        OpCheck.GradCheck(t => Ops.MaxPool2d(t[0], k, s, pad), [x], what: "max_pool2d");
    }

    /// <summary>Forwards every backend call and records the geometry each MaxPool2dBackward call was given.</summary>
    public class PoolSpy : System.Reflection.DispatchProxy
    {
        public IBackend Inner = null!;
        public readonly List<Pool2dParams?> Seen = [];

        protected override object? Invoke(System.Reflection.MethodInfo? m, object?[]? args)
        {
            if (m!.Name == nameof(IBackend.MaxPool2dBackward)) Seen.Add((Pool2dParams?)args![3]);
            try { return m.Invoke(Inner, args); }
            catch (System.Reflection.TargetInvocationException e) when (e.InnerException is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }
    }

    [Test, NonParallelizable]   // intercepts the process-wide CPU backend
    public void MaxPool2dBackwardGivesTheBackendTheForwardsGeometry()
    {
        // The CUDA backend gathers in parallel only when it has the geometry (else one thread scatters each plane).
        PoolSpy? spy = null;
        using (Backends.Intercept(Device.Cpu, inner =>
        {
            var proxy = System.Reflection.DispatchProxy.Create<IBackend, PoolSpy>();
            spy = (PoolSpy)(object)proxy;
            spy.Inner = inner;
            return proxy;
        }))
        using (var scope = Tensor.Scope())
        {
            var x = OpCheck.Rand([1, 2, 7, 6], 13, requiresGrad: true);
            Ops.MaxPool2d(x, 3, 2, 1).Sum().Backward();
        }
        Assert.That(spy, Is.Not.Null);
        Assert.That(spy!.Seen, Is.EqualTo(new Pool2dParams?[] { new Pool2dParams(3, 3, 2, 2, 1, 1) }));
    }

    [Test]
    public void MaxPool2dDefaultStrideIsTheKernelAndBadInputsThrow()
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([1, 2, 6, 4], 12);
        OpCheck.Forward(t => Ops.MaxPool2d(t[0], 2), t => RefMaxPool(t[0], 2, 2, 0), [OpCheck.NonContiguous(x)]);
        var ex = Assert.Throws<ArgumentException>(() => Ops.MaxPool2d(Tensor.Zeros([1, 1, 5, 5]), 3, 2, 2));
        Assert.That(ex!.Message, Does.Contain("max_pool2d").And.Contain("[1, 1, 5, 5]").And.Contain("half the kernel"));
        ex = Assert.Throws<ArgumentException>(() => Ops.MaxPool2d(Tensor.Zeros([1, 5, 5]), 3));
        Assert.That(ex!.Message, Does.Contain("max_pool2d: input [1, 5, 5] must be [N,C,H,W]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.MaxPool2d(Tensor.Zeros([1, 1, 2, 2]), 3));
        Assert.That(ex!.Message, Does.Contain("max_pool2d: input [1, 1, 2, 2] is too small"));
    }

    [TestCase(new[] { 2, 2, 7, 5 }, 3, 2)]
    [TestCase(new[] { 1, 3, 4, 4 }, 1, 1)]
    [TestCase(new[] { 1, 1, 3, 2 }, 5, 4)]
    public void AdaptiveAvgPool2dForwardAndGrad(int[] xs, int ho, int wo)
    {
        var x = OpCheck.Rand(xs, 13, requiresGrad: true);
        OpCheck.Forward(t => Ops.AdaptiveAvgPool2d(t[0], ho, wo), t => RefAdaptive(t[0], ho, wo), [x]);
        OpCheck.GradCheck(t => Ops.AdaptiveAvgPool2d(t[0], ho, wo), [x], what: "adaptive_avg_pool2d");
    }

    [Test]
    public void AdaptiveAvgPool2dRejectsBadInputs()
    {
        using var scope = Tensor.Scope();
        var ex = Assert.Throws<ArgumentException>(() => Ops.AdaptiveAvgPool2d(Tensor.Zeros([2, 3, 4, 4]), 0, 1));
        Assert.That(ex!.Message, Does.Contain("adaptive_avg_pool2d").And.Contain("[2, 3, 4, 4]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.AdaptiveAvgPool2d(Tensor.Zeros([2, 3]), 1, 1));
        Assert.That(ex!.Message, Does.Contain("adaptive_avg_pool2d: input [2, 3] must be [N,C,H,W]"));
    }

    // ------------------------------------------------------------------ batch norm

    [TestCase(new[] { 2, 3, 3, 2 }, TestName = "BatchNorm2d train NCHW")]
    [TestCase(new[] { 1, 2, 2, 3 }, TestName = "BatchNorm2d train batch1")]
    [TestCase(new[] { 4, 3 }, TestName = "BatchNorm2d train NC")]
    public void BatchNormTrainForwardAndGrad(int[] xs)
    {
        int c = xs[1];
        var x = OpCheck.Rand(xs, 21, DType.Float64, -1, 2, requiresGrad: true);
        var w = OpCheck.Rand([c], 22, DType.Float64, 0.5, 1.5, requiresGrad: true);
        var b = OpCheck.Rand([c], 23, requiresGrad: true);
        OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, training: true), t => RefBatchNorm(t[0], t[1], t[2], 1e-5), [x, w, b]);
        OpCheck.Forward(t => Ops.BatchNorm2d(t[0], null, null, null, null, training: true, eps: 0.1), t => RefBatchNorm(t[0], null, null, 0.1), [x], what: "no affine");
        OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, training: true), [x, w, b], what: "batch_norm train");
        // With running statistics given (updated on every call), the gradient is unchanged.
        var rm = Tensor.Zeros([c], DType.Float64); var rv = Tensor.Ones([c], DType.Float64);
        OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], null, null, t[1], t[2], training: true), [x, rm, rv], what: "batch_norm train with running stats");
    }

    [Test]
    public void BatchNormEvalUsesRunningStats()
    {
        var x = OpCheck.Rand([2, 3, 2, 2], 24, requiresGrad: true);
        var w = OpCheck.Rand([3], 25, DType.Float64, 0.5, 1.5, requiresGrad: true);
        var b = OpCheck.Rand([3], 26, requiresGrad: true);
        var rm = OpCheck.Rand([3], 27); var rv = OpCheck.Rand([3], 28, DType.Float64, 0.5, 2);
        double[] rmd = rm.ToArray<double>(), rvd = rv.ToArray<double>();
        OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], t[3], t[4], training: false),
            t => RefNorm(t[0], t[1], t[2], i => i / 4 % 3, 3, 1e-5, rmd, rvd), [x, w, b, rm, rv]);
        OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], t[1], t[2], t[3], t[4], training: false), [x, w, b, rm, rv], what: "batch_norm eval");
        Assert.That(rm.ToArray<double>(), Is.EqualTo(rmd), "eval leaves running mean alone");
        Assert.That(rv.ToArray<double>(), Is.EqualTo(rvd), "eval leaves running var alone");
    }

    [Test]
    public void BatchNormRunningStatsFollowTheHandComputation()
    {
        using var scope = Tensor.Scope();
        // channel 0: {1, 2, 3, 6} → mean 3, biased var 3.5, unbiased 14/3
        // channel 1: {0, 0, 4, 4} → mean 2, biased var 4, unbiased 16/3
        var x = Tensor.FromArray(new double[] { 1, 2, 0, 0, 3, 6, 4, 4 }, [2, 2, 1, 2]);
        var rm = Tensor.FromArray(new double[] { 0.5, -1 }, [2]);
        var rv = Tensor.FromArray(new double[] { 2, 1 }, [2]);
        var y = Ops.BatchNorm2d(x, null, null, rm, rv, training: true, momentum: 0.1, eps: 0);
        OpCheck.AssertClose(rm, [0.9 * 0.5 + 0.1 * 3, 0.9 * -1 + 0.1 * 2], 1e-14, 1e-14, "running mean");
        OpCheck.AssertClose(rv, [0.9 * 2 + 0.1 * 14.0 / 3, 0.9 * 1 + 0.1 * 16.0 / 3], 1e-14, 1e-14, "running var");
        double s0 = Math.Sqrt(3.5), s1 = 2;
        OpCheck.AssertClose(y, [(1 - 3) / s0, (2 - 3) / s0, -2 / s1, -2 / s1, 0, (6 - 3) / s0, 2 / s1, 2 / s1], 1e-12, 1e-12, "normalised with biased var");
        // momentum 1 replaces the running stats by the batch's
        var y2 = Ops.BatchNorm2d(x, null, null, rm, rv, training: true, momentum: 1, eps: 0);
        OpCheck.AssertClose(rm, [3.0, 2.0], 1e-14, 1e-14, "running mean, momentum 1");
        OpCheck.AssertClose(rv, [14.0 / 3, 16.0 / 3], 1e-14, 1e-14, "running var, momentum 1");
        // float32 running stats with float32 input
        var x32 = x.To(DType.Float32); var rm32 = Tensor.Zeros([2]); var rv32 = Tensor.Ones([2]);
        Ops.BatchNorm2d(x32, null, null, rm32, rv32, training: true, momentum: 0.5);
        OpCheck.AssertClose(rm32, [1.5, 1.0], 1e-6, 1e-6, "float32 running mean");
        OpCheck.AssertClose(rv32, [0.5 + 0.5 * 14.0 / 3, 0.5 + 0.5 * 16.0 / 3], 1e-6, 1e-6, "float32 running var");
    }

    [Test]
    public void BatchNormRejectsBadInputs()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([2, 3, 4, 4]);
        var ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(x, Tensor.Ones([4]), null, null, null, true));
        Assert.That(ex!.Message, Does.Contain("batch_norm: weight [4] should be [3] for input [2, 3, 4, 4]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(x, null, null, null, null, false));
        Assert.That(ex!.Message, Does.Contain("batch_norm").And.Contain("running mean"));
        ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(Tensor.Zeros([1, 3, 1, 1]), null, null, null, null, true));
        Assert.That(ex!.Message, Does.Contain("more than 1 value per channel").And.Contain("[1, 3, 1, 1]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(Tensor.Zeros([2, 3, 4]), null, null, null, null, true));
        Assert.That(ex!.Message, Does.Contain("batch_norm: input [2, 3, 4] must be"));
        ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(x, null, null, Tensor.Zeros([3], DType.Float64), Tensor.Ones([3], DType.Float64), true));
        Assert.That(ex!.Message, Does.Contain("batch_norm: dtypes differ"));
    }

    // ------------------------------------------------------------------ fused batch norm (+ residual) (+ relu)

    /// <summary>relu?(ref_bn(x) [+ r]) in float64.</summary>
    private static Tensor RefBnAct(Tensor bn, Tensor? r, bool relu)
    {
        var y = bn.ToArray<double>();
        var rr = r?.ToArray<double>();
        for (int i = 0; i < y.Length; i++)
        {
            double v = y[i] + (rr is null ? 0 : rr[i]);
            y[i] = relu ? Math.Max(v, 0) : v;
        }
        return Tensor.FromArray(y, bn.Shape);
    }

    [TestCase(new[] { 2, 3, 3, 2 }, true, true, TestName = "BatchNorm2d fused add+relu train NCHW")]
    [TestCase(new[] { 3, 2, 5, 3 }, false, true, TestName = "BatchNorm2d fused relu train odd")]
    [TestCase(new[] { 2, 3, 2, 3 }, true, false, TestName = "BatchNorm2d fused add train")]
    [TestCase(new[] { 5, 3 }, true, true, TestName = "BatchNorm2d fused add+relu train NC")]
    public void BatchNormFusedTrainForwardAndGrad(int[] xs, bool residual, bool relu)
    {
        int c = xs[1];
        var x = OpCheck.Rand(xs, 41, DType.Float64, -1, 2, requiresGrad: true);
        var w = OpCheck.Rand([c], 42, DType.Float64, 0.5, 1.5, requiresGrad: true);
        var b = OpCheck.Rand([c], 43, requiresGrad: true);
        var r = OpCheck.Rand(xs, 44, requiresGrad: true);
        if (residual)
        {
            OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, residual: t[3], relu: relu),
                t => RefBnAct(RefBatchNorm(t[0], t[1], t[2], 1e-5), t[3], relu), [x, w, b, r]);
            OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, residual: OpCheck.NonContiguous(t[3]), relu: relu),
                t => RefBnAct(RefBatchNorm(t[0], t[1], t[2], 1e-5), t[3], relu), [x, w, b, r], what: "non-contiguous residual");
            OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, residual: t[3], relu: relu), [x, w, b, r], what: "fused batch_norm train");
            var rm = Tensor.Zeros([c], DType.Float64); var rv = Tensor.Ones([c], DType.Float64);
            OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], null, null, t[1], t[2], true, residual: t[3], relu: relu), [x, rm, rv, r], what: "fused, no affine, running stats");
        }
        else
        {
            OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, relu: relu),
                t => RefBnAct(RefBatchNorm(t[0], t[1], t[2], 1e-5), null, relu), [x, w, b]);
            OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, relu: relu), [x, w, b], what: "fused batch_norm train");
        }
    }

    [Test]
    public void BatchNormFusedEvalUsesRunningStatsAndFrozenParams()
    {
        var x = OpCheck.Rand([2, 3, 2, 3], 45, requiresGrad: true);
        var w = OpCheck.Rand([3], 46, DType.Float64, 0.5, 1.5);   // frozen (CSA-Net): no gradient for weight/bias
        var b = OpCheck.Rand([3], 47);
        var r = OpCheck.Rand([2, 3, 2, 3], 48, requiresGrad: true);
        var rm = OpCheck.Rand([3], 49); var rv = OpCheck.Rand([3], 50, DType.Float64, 0.5, 2);
        double[] rmd = rm.ToArray<double>(), rvd = rv.ToArray<double>();
        OpCheck.Forward(t => Ops.BatchNorm2d(t[0], t[1], t[2], t[3], t[4], false, residual: t[5], relu: true),
            t => RefBnAct(RefNorm(t[0], t[1], t[2], i => i / 6 % 3, 3, 1e-5, rmd, rvd), t[5], true), [x, w, b, rm, rv, r]);
        OpCheck.GradCheck(t => Ops.BatchNorm2d(t[0], w, b, rm, rv, false, residual: t[1], relu: true), [x, r], what: "fused batch_norm eval");
        Assert.That(rm.ToArray<double>(), Is.EqualTo(rmd), "eval leaves running mean alone");
        Assert.That(rv.ToArray<double>(), Is.EqualTo(rvd), "eval leaves running var alone");
    }

    /// <summary>
    /// float32 on the CPU backend: the fused op against the composition it replaces (batch_norm, +, relu), bit for bit —
    /// output, running statistics and every gradient — since each step is rounded in the same order. Shapes with S not a
    /// multiple of 8 exercise the scalar tails; an input with a NaN checks that relu keeps it and masks its gradient.
    /// </summary>
    [TestCase(new[] { 3, 5, 7, 3 }, true, true, true)]
    [TestCase(new[] { 2, 4, 4, 4 }, true, true, false)]
    [TestCase(new[] { 3, 5, 7, 3 }, false, true, true)]
    [TestCase(new[] { 2, 3, 5, 5 }, true, false, true)]
    [TestCase(new[] { 3, 5, 7, 3 }, true, true, true, true)]
    public void BatchNormFusedMatchesTheComposedOpsBitForBit(int[] xs, bool residual, bool relu, bool training, bool nan = false)
    {
        using var scope = Tensor.Scope();
        int c = xs[1];
        var x0 = OpCheck.Rand(xs, 51, DType.Float32, -1, 2);
        if (nan) { var xa = x0.ToArray<float>(); xa[7] = float.NaN; x0 = Tensor.FromArray(xa, xs); }
        var w0 = OpCheck.Rand([c], 52, DType.Float32, 0.5, 1.5);
        var b0 = OpCheck.Rand([c], 53, DType.Float32);
        var r0 = OpCheck.Rand(xs, 54, DType.Float32);
        var gy = OpCheck.Rand(xs, 55, DType.Float32);
        var rmInit = OpCheck.Rand([c], 56, DType.Float32); var rvInit = OpCheck.Rand([c], 57, DType.Float32, 0.5, 2);

        (float[] Y, float[] Rm, float[] Rv, float[] Gx, float[] Gw, float[] Gb, float[]? Gr) Run(bool fused)
        {
            static Tensor Leaf(Tensor t) { var l = t.Clone(); l.RequiresGrad = true; return l; }
            var x = Leaf(x0); var w = Leaf(w0); var b = Leaf(b0);
            var r = residual ? Leaf(r0) : null;
            var rm = rmInit.Clone(); var rv = rvInit.Clone();
            Tensor y;
            if (fused) y = Ops.BatchNorm2d(x, w, b, rm, rv, training, residual: r, relu: relu);
            else
            {
                y = Ops.BatchNorm2d(x, w, b, rm, rv, training);
                if (r is not null) y = y + r;
                if (relu) y = y.Relu();
            }
            y.Backward(gy);
            return (y.ToArray<float>(), rm.ToArray<float>(), rv.ToArray<float>(), x.Grad!.ToArray<float>(), w.Grad!.ToArray<float>(),
                b.Grad!.ToArray<float>(), r?.Grad!.ToArray<float>());
        }

        var f = Run(true); var u = Run(false);
        Assert.Multiple(() =>
        {
            Assert.That(f.Y, Is.EqualTo(u.Y), "y");
            Assert.That(f.Rm, Is.EqualTo(u.Rm), "running mean");
            Assert.That(f.Rv, Is.EqualTo(u.Rv), "running var");
            Assert.That(f.Gx, Is.EqualTo(u.Gx), "dx");
            Assert.That(f.Gw, Is.EqualTo(u.Gw), "dgamma");
            Assert.That(f.Gb, Is.EqualTo(u.Gb), "dbeta");
            Assert.That(f.Gr, Is.EqualTo(u.Gr), "d residual");
        });
        if (nan) Assert.That(float.IsNaN(f.Y[7]) || !relu, "relu keeps a NaN");
    }

    [Test]
    public void BatchNormFusedRejectsABadResidual()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([2, 3, 4, 4]);
        var ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(x, null, null, null, null, true, residual: Tensor.Zeros([2, 3, 4, 5]), relu: true));
        Assert.That(ex!.Message, Does.Contain("batch_norm_add_relu: residual [2, 3, 4, 5] must have the input's shape [2, 3, 4, 4]"));
        ex = Assert.Throws<ArgumentException>(() => Ops.BatchNorm2d(x, null, null, null, null, true, residual: Tensor.Zeros([2, 3, 4, 4], DType.Float64)));
        Assert.That(ex!.Message, Does.Contain("batch_norm_add: residual is float64, input float32"));
    }

    // ------------------------------------------------------------------ group norm

    [TestCase(new[] { 2, 4, 3, 2 }, 2, TestName = "GroupNorm NCHW 2 groups")]
    [TestCase(new[] { 1, 3, 2, 2 }, 3, TestName = "GroupNorm one channel per group batch1")]
    [TestCase(new[] { 2, 4, 5 }, 1, TestName = "GroupNorm NCL 1 group")]
    public void GroupNormForwardAndGrad(int[] xs, int g)
    {
        int c = xs[1];
        var x = OpCheck.Rand(xs, 31, DType.Float64, -1, 2, requiresGrad: true);
        var w = OpCheck.Rand([c], 32, DType.Float64, 0.5, 1.5, requiresGrad: true);
        var b = OpCheck.Rand([c], 33, requiresGrad: true);
        OpCheck.Forward(t => Ops.GroupNorm(t[0], g, t[1], t[2]), t => RefGroupNorm(t[0], g, t[1], t[2], 1e-5), [x, w, b]);
        OpCheck.Forward(t => Ops.GroupNorm(OpCheck.NonContiguous(t[0]), g, eps: 1e-3), t => RefGroupNorm(t[0], g, null, null, 1e-3), [x], what: "no affine, non-contiguous");
        OpCheck.GradCheck(t => Ops.GroupNorm(t[0], g, t[1], t[2]), [x, w, b], what: "group_norm");
        OpCheck.GradCheck(t => Ops.GroupNorm(t[0], g), [x], what: "group_norm no affine");
    }

    [Test]
    public void GroupNormRejectsBadInputs()
    {
        using var scope = Tensor.Scope();
        var ex = Assert.Throws<ArgumentException>(() => Ops.GroupNorm(Tensor.Zeros([2, 6, 3, 3]), 4));
        Assert.That(ex!.Message, Is.EqualTo("group_norm: 6 channels of input [2, 6, 3, 3] do not split into 4 groups"));
        ex = Assert.Throws<ArgumentException>(() => Ops.GroupNorm(Tensor.Zeros([2, 6, 3, 3]), 3, Tensor.Ones([3])));
        Assert.That(ex!.Message, Does.Contain("group_norm: weight [3] should be [6]"));
    }
}
