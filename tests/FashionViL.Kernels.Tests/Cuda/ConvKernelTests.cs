using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The implicit-GEMM convolution kernels (forward, backward-input, backward-weight + bias gradient) and the pooling
/// kernels on ILGPU's CPU accelerator (2-thread groups, bounds-checked views) against CpuBackend.Instance on the same
/// data: awkward shapes (batch 1, odd sizes, channel counts off the 64 tile, asymmetric padding, stride 2, dilation 2).
/// Outputs are poisoned with NaN first, so an element the kernel forgets fails the comparison.
/// </summary>
[TestFixture, Category("Cuda")]
public class ConvKernelTests() : EmulatorKernelTestBase(assertions: true)
{
    private static float[] Host(Tensor t) => t.ToArray<float>();


    private void CheckConv(int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p, bool bias, ulong seed)
    {
        foreach (var v in Versions) CheckConv(Acc, batch, cin, h, w, cout, kh, kw, p, bias, seed, v);
    }

    private static readonly ConvVersion[] Versions = [ConvVersion.Tile64, ConvVersion.Tile128];

    private static void CheckConv(Accelerator acc, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams p, bool bias, ulong seed, ConvVersion v)
    {
        string what = $"{v} conv x [{batch},{cin},{h},{w}] w [{cout},{cin},{kh},{kw}] {p} bias {bias}";
        var (ho, wo) = ConvKernels.OutputSize(h, w, kh, kw, p);
        using var x = OpCheck.Rand([batch, cin, h, w], seed, DType.Float32);
        using var wt = OpCheck.Rand([cout, cin, kh, kw], seed + 1, DType.Float32);
        using var b = bias ? OpCheck.Rand([cout], seed + 2, DType.Float32) : null;
        using var gy = OpCheck.Rand([batch, cout, ho, wo], seed + 3, DType.Float32);
        using var y = Tensor.Empty([batch, cout, ho, wo]);
        using var gx = Tensor.Empty([batch, cin, h, w]);
        using var gw = Tensor.Empty([cout, cin, kh, kw]);
        using var gb = Tensor.Empty([cout]);
        CpuBackend.Instance.Conv2dForward(x, wt, b, y, p);
        CpuBackend.Instance.Conv2dBackwardInput(gy, wt, gx, p);
        CpuBackend.Instance.Conv2dBackwardWeight(x, gy, gw, gb, p);

        using var dx = acc.Allocate1D(Host(x));
        using var dw = acc.Allocate1D(Host(wt));
        using var db = acc.Allocate1D(bias ? Host(b!) : new float[1]);
        using var dgy = acc.Allocate1D(Host(gy));
        using var dy = Poisoned(acc, y.Numel);
        using var dgx = Poisoned(acc, gx.Numel);
        using var dgw = Poisoned(acc, gw.Numel);
        using var dgb = Poisoned(acc, cout);
        ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, bias ? db.View : default, dy.View, batch, cin, h, w, cout, kh, kw, p, v);
        ConvKernels.Conv2dBackwardInput(acc, null, dgy.View, dw.View, dgx.View, batch, cin, h, w, cout, kh, kw, p, v);
        ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, dgw.View, dgb.View, batch, cin, h, w, cout, kh, kw, p, v);
        acc.Synchronize();

        // float32 sums of K (or batch·positions) products of values in [-1, 1]: absolute error grows with the length
        int kFwd = cin * kh * kw, kBi = cout * kh * kw, kBw = batch * ho * wo;
        OpCheck.AssertClose(D(dy.GetAsArray1D()[..(int)y.Numel]), D(Host(y)), 1e-5, 1e-6 + 2e-7 * kFwd, what + " forward");
        OpCheck.AssertClose(D(dgx.GetAsArray1D()[..(int)gx.Numel]), D(Host(gx)), 1e-5, 1e-6 + 2e-7 * kBi, what + " backward input");
        OpCheck.AssertClose(D(dgw.GetAsArray1D()[..(int)gw.Numel]), D(Host(gw)), 1e-5, 1e-6 + 2e-7 * kBw, what + " backward weight");
        OpCheck.AssertClose(D(dgb.GetAsArray1D()), D(Host(gb)), 1e-5, 1e-6 + 2e-7 * kBw, what + " bias gradient");
    }

    [Test]
    public void Stem7x7Stride2Pad3On3Channels() => CheckConv(1, 3, 16, 15, 4, 7, 7, Conv2dParams.Symmetric(2, 3), bias: true, seed: 10);

    [Test]
    public void Stride2WithAsymmetricPadding0101() => CheckConv(1, 4, 9, 8, 6, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1), bias: false, seed: 20);

    [Test]
    public void Pointwise1x1Stride2AndStride1()
    {
        CheckConv(1, 5, 7, 7, 3, 1, 1, Conv2dParams.Symmetric(2, 0), bias: true, seed: 30);
        CheckConv(2, 6, 3, 5, 4, 1, 1, Conv2dParams.Symmetric(1, 0), bias: false, seed: 31);
    }

    [Test]
    public void Dilation2() => CheckConv(1, 3, 11, 10, 4, 3, 3, Conv2dParams.Symmetric(1, 2, 2), bias: true, seed: 40);

    [Test]
    public void ChannelsOffTheTileAndSeveralMTiles()
    {
        // Cout 67 > one 64-row tile; K = 66·4 of backward-input spans many K tiles; 1 image, 5×6 plane, 2×2 taps, pads (1,0,0,1)
        CheckConv(1, 5, 5, 6, 67, 2, 2, new Conv2dParams(1, 1, 1, 0, 0, 1), bias: true, seed: 50);
    }

    [Test]
    public void SeveralTilesOf128InBothDirections()
        // Cout 130 > one 128-row tile (v2), N = 2·11·12 = 264 > two 128-column tiles
        => CheckConv(Acc, 2, 2, 11, 12, 130, 1, 1, Conv2dParams.Symmetric(1, 0), true, 51, ConvVersion.Tile128);

    [Test]
    public void RectangularKernelMixedStridesAndPadding()
    {
        CheckConv(3, 2, 6, 9, 3, 2, 3, new Conv2dParams(2, 1, 1, 2, 0, 1), bias: true, seed: 60);
        CheckConv(1, 1, 1, 1, 1, 1, 1, Conv2dParams.Symmetric(1, 0), bias: true, seed: 61);           // all sizes 1
        CheckConv(1, 2, 5, 4, 3, 3, 3, new Conv2dParams(3, 2, 2, 0, 1, 2, 2, 1), bias: false, seed: 62); // stride 3, dilation (2,1)
    }

    [Test]
    public void SplitKBackwardWeight([Values(ConvVersion.Tile64, ConvVersion.Tile128)] ConvVersion v, [Values(0, 3)] int splits)
    {
        // K = 2·12·10 = 240 (explicit: 3 chunks of 80) or 2·18·16 = 576 (auto: 2 chunks of 288 on the CPU device's 2 MPs)
        int batch = 2, cin = 3, cout = 5, h = splits == 0 ? 18 : 12, w = splits == 0 ? 17 : 11;
        var p = new Conv2dParams(1, 1, 1, 1, 0, 1);
        var (ho, wo) = ConvKernels.OutputSize(h, w, 3, 3, p);
        using var x = OpCheck.Rand([batch, cin, h, w], 90, DType.Float32);
        using var gy = OpCheck.Rand([batch, cout, ho, wo], 91, DType.Float32);
        using var gw = Tensor.Empty([cout, cin, 3, 3]);
        CpuBackend.Instance.Conv2dBackwardWeight(x, gy, gw, null, p);
        using var dx = Acc.Allocate1D(Host(x));
        using var dgy = Acc.Allocate1D(Host(gy));
        using var dgw = Poisoned(Acc, gw.Numel);
        using var ws = Poisoned(Acc, 4 * gw.Numel);
        ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, dgw.View, default, batch, cin, h, w, cout, 3, 3, p, v, ws.View, splits);
        Acc.Synchronize();
        OpCheck.AssertClose(D(dgw.GetAsArray1D()), D(Host(gw)), 1e-5, 1e-6 + 2e-7 * batch * ho * wo, $"{v} split-K ({splits}) backward weight");
        // the workspace was used: its first slice holds a partial sum, not the poison
        Assert.That(float.IsNaN(ws.GetAsArray1D()[0]), Is.False, "split-K did not run");
        using var tiny = Acc.Allocate1D<float>(gw.Numel);
        var e = Assert.Throws<ArgumentException>(() => ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, dgw.View, default,
            batch, cin, h, w, cout, 3, 3, p, v, tiny.View, 4))!;
        Assert.That(e.Message, Does.Contain("4 splits need a workspace"));
    }

    [Test]
    public void EmptyBatchZeroesTheWeightGradient()
    {
        using var dx = Acc.Allocate1D<float>(1);
        using var dgy = Acc.Allocate1D<float>(1);
        using var dgw = Poisoned(Acc, 2 * 3 * 3 * 3);
        using var dgb = Poisoned(Acc, 2);
        ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, dgw.View, dgb.View, 0, 3, 4, 4, 2, 3, 3, Conv2dParams.Symmetric(1, 1));
        Acc.Synchronize();
        Assert.That(dgw.GetAsArray1D(), Is.All.EqualTo(0f));
        Assert.That(dgb.GetAsArray1D(), Is.All.EqualTo(0f));
    }

    [Test]
    public void ResultsAreDeterministic()
    {
        var p = Conv2dParams.Symmetric(2, 1);
        using var x = OpCheck.Rand([2, 3, 7, 7], 70, DType.Float32);
        using var gy = OpCheck.Rand([2, 4, 4, 4], 71, DType.Float32);
        using var wt = OpCheck.Rand([4, 3, 3, 3], 72, DType.Float32);
        using var dx = Acc.Allocate1D(Host(x));
        using var dgy = Acc.Allocate1D(Host(gy));
        using var dw = Acc.Allocate1D(Host(wt));
        using var gx1 = Acc.Allocate1D<float>(x.Numel);
        using var gx2 = Acc.Allocate1D<float>(x.Numel);
        using var gw1 = Acc.Allocate1D<float>(wt.Numel);
        using var gw2 = Acc.Allocate1D<float>(wt.Numel);
        foreach (var (gx, gw) in new[] { (gx1, gw1), (gx2, gw2) })
        {
            ConvKernels.Conv2dBackwardInput(Acc, null, dgy.View, dw.View, gx.View, 2, 3, 7, 7, 4, 3, 3, p);
            ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, gw.View, default, 2, 3, 7, 7, 4, 3, 3, p);
        }
        Acc.Synchronize();
        Assert.That(gx2.GetAsArray1D(), Is.EqualTo(gx1.GetAsArray1D()));
        Assert.That(gw2.GetAsArray1D(), Is.EqualTo(gw1.GetAsArray1D()));
    }

    [Test]
    public void GpuGroupShapeOf256ThreadsGivesTheSameResults()
    {
        // On a GPU the launcher gives 256-thread groups: one pass per tile. A 256-thread CPU device runs that path (slow
        // barriers: keep it tiny).
        using var ctx = Context.Create(b => b.CPU(new CPUDevice(32, 8, 1)).EnableAlgorithms().Assertions());
        using var acc = ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        Assert.That(acc.MaxNumThreadsPerGroup, Is.EqualTo(ConvKernels.GpuGroupSize));
        foreach (var v in Versions) CheckConv(acc, 1, 3, 6, 5, 4, 3, 3, new Conv2dParams(2, 1, 0, 1, 1, 1), bias: true, seed: 80, v);
    }

    [Test]
    public void BadViewsAndGeometryThrowNamingTheOp()
    {
        using var small = Acc.Allocate1D<float>(10);
        var p = Conv2dParams.Symmetric(1, 1);
        var e = Assert.Throws<ArgumentException>(() =>
            ConvKernels.Conv2dForward(Acc, null, small.View, small.View, default, small.View, 1, 3, 8, 8, 4, 3, 3, p))!;
        Assert.That(e.Message, Does.Contain("conv2d").And.Contain("[1,3,8,8]"));
        e = Assert.Throws<ArgumentException>(() =>
            ConvKernels.Conv2dBackwardInput(Acc, null, small.View, small.View, small.View, 1, 1, 2, 2, 1, 5, 5, Conv2dParams.Symmetric(1, 0)))!;
        Assert.That(e.Message, Does.Contain("conv2d backward (input)").And.Contain("too small"));
        e = Assert.Throws<ArgumentException>(() =>
            ConvKernels.Conv2dBackwardWeight(Acc, null, small.View, small.View, small.View, small.View, 1, 1, 2, 2, 1, 1, 1, Conv2dParams.Symmetric(1, 0)))!;
        Assert.That(e.Message, Does.Contain("bias gradient has 10 elements"));
        using var idx = Acc.Allocate1D<long>(10);
        e = Assert.Throws<ArgumentException>(() =>
            ConvKernels.MaxPool2dForward(Acc, null, small.View, small.View, idx.View, 1, 4, 4, new Pool2dParams(3, 3, 1, 1, 2, 2)))!;
        Assert.That(e.Message, Does.Contain("max_pool2d").And.Contain("half the kernel"));
        e = Assert.Throws<ArgumentException>(() =>
            ConvKernels.AdaptiveAvgPool2dForward(Acc, null, small.View, small.View, 2, 4, 4, 2, 2))!;
        Assert.That(e.Message, Does.Contain("adaptive_avg_pool2d").And.Contain("input view has 10 elements"));
    }

    // ------------------------------------------------------------------ pooling

    private void CheckMaxPool(int n, int c, int h, int w, Pool2dParams p, ulong seed, Func<int, float, float>? edit = null)
    {
        string what = $"max_pool2d x [{n},{c},{h},{w}] {p}";
        int ho = p.OutH(h), wo = p.OutW(w), planes = n * c;
        using var xr = OpCheck.Rand([n, c, h, w], seed, DType.Float32);
        var xh = Host(xr);
        if (edit is not null) for (int i = 0; i < xh.Length; i++) xh[i] = edit(i, xh[i]);
        using var x = Tensor.FromArray(xh, n, c, h, w);
        using var y = Tensor.Empty([n, c, ho, wo]);
        using var ids = Tensor.Empty([n, c, ho, wo], DType.Int64);
        CpuBackend.Instance.MaxPool2dForward(x, y, ids, p);
        using var gy = OpCheck.Rand([n, c, ho, wo], seed + 1, DType.Float32);
        using var gx = Tensor.Empty([n, c, h, w]);
        CpuBackend.Instance.MaxPool2dBackward(gy, ids, gx);

        using var dx = Acc.Allocate1D(xh);
        using var dy = Poisoned(Acc, y.Numel);
        using var di = Acc.Allocate1D(Enumerable.Repeat(-5L, (int)Math.Max(1, y.Numel)).ToArray());
        ConvKernels.MaxPool2dForward(Acc, null, dx.View, dy.View, di.View, planes, h, w, p);
        Acc.Synchronize();
        var gotY = dy.GetAsArray1D()[..(int)y.Numel];
        var gotI = di.GetAsArray1D()[..(int)y.Numel];
        Assert.That(gotI, Is.EqualTo(ids.ToArray<long>()), what + " indices");
        // bit-exact values (NaN included)
        Assert.That(gotY.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(Host(y).Select(BitConverter.SingleToInt32Bits)), what + " values");

        using var dgy = Acc.Allocate1D(Host(gy));
        foreach (var geometry in new Pool2dParams?[] { p, null })
        {
            using var dgx = Poisoned(Acc, gx.Numel);
            ConvKernels.MaxPool2dBackward(Acc, null, dgy.View, di.View, dgx.View, planes, h, w, ho, wo, geometry);
            Acc.Synchronize();
            // the same float sums in the same order: bit-exact
            Assert.That(dgx.GetAsArray1D()[..(int)gx.Numel], Is.EqualTo(Host(gx)), $"{what} backward ({(geometry is null ? "scatter" : "gather")})");
        }
    }

    [Test]
    public void MaxPoolResNetStemAndAwkwardShapes()
    {
        CheckMaxPool(2, 3, 9, 11, new Pool2dParams(3, 3, 2, 2, 1, 1), 100);   // ResNet's 3×3 s2 p1 on odd planes
        CheckMaxPool(1, 1, 1, 1, new Pool2dParams(1, 1, 1, 1, 0, 0), 101);
        CheckMaxPool(1, 2, 7, 5, new Pool2dParams(2, 3, 1, 2, 1, 1), 102);   // overlapping, rectangular
        CheckMaxPool(1, 2, 6, 6, new Pool2dParams(2, 2, 2, 2, 0, 0), 103);
    }

    [Test]
    public void MaxPoolTiesTakeTheFirstAndNaNWins()
    {
        // ties: a plane of equal values; NaN: a few NaNs (the last NaN of a window in window order wins, as on the CPU)
        CheckMaxPool(1, 2, 6, 7, new Pool2dParams(3, 3, 2, 2, 1, 1), 110, (i, v) => 0.5f);
        CheckMaxPool(1, 2, 6, 7, new Pool2dParams(3, 3, 2, 2, 1, 1), 111, (i, v) => i % 5 == 0 ? float.NaN : v);
        CheckMaxPool(1, 1, 5, 5, new Pool2dParams(3, 3, 1, 1, 1, 1), 112, (i, v) => float.NegativeInfinity);
        CheckMaxPool(1, 1, 5, 6, new Pool2dParams(3, 2, 1, 1, 1, 1), 113, (i, v) => i % 3 == 0 ? -0f : (i % 3 == 1 ? 0f : -1f));
    }

    private void CheckAdaptive(int n, int c, int h, int w, int ho, int wo, ulong seed)
    {
        string what = $"adaptive_avg_pool2d [{n},{c},{h},{w}] → {ho}×{wo}";
        int planes = n * c;
        using var x = OpCheck.Rand([n, c, h, w], seed, DType.Float32);
        using var y = Tensor.Empty([n, c, ho, wo]);
        CpuBackend.Instance.AdaptiveAvgPool2dForward(x, y);
        using var gy = OpCheck.Rand([n, c, ho, wo], seed + 1, DType.Float32);
        using var gx = Tensor.Empty([n, c, h, w]);
        CpuBackend.Instance.AdaptiveAvgPool2dBackward(gy, gx);

        using var dx = Acc.Allocate1D(Host(x));
        using var dy = Poisoned(Acc, y.Numel);
        using var dgy = Acc.Allocate1D(Host(gy));
        using var dgx = Poisoned(Acc, gx.Numel);
        ConvKernels.AdaptiveAvgPool2dForward(Acc, null, dx.View, dy.View, planes, h, w, ho, wo);
        ConvKernels.AdaptiveAvgPool2dBackward(Acc, null, dgy.View, dgx.View, planes, h, w, ho, wo);
        Acc.Synchronize();
        // float64 sums in the CPU backend's order, and the same float adds for the gradient: bit-exact
        Assert.That(dy.GetAsArray1D()[..(int)y.Numel], Is.EqualTo(Host(y)), what + " forward");
        Assert.That(dgx.GetAsArray1D()[..(int)gx.Numel], Is.EqualTo(Host(gx)), what + " backward");
    }

    [Test]
    public void AdaptiveAvgPoolGlobalDividingAndOverlapping()
    {
        CheckAdaptive(2, 3, 7, 7, 1, 1, 200);    // ResNet's global pool
        CheckAdaptive(1, 2, 10, 9, 5, 3, 201);   // windows tile the plane
        CheckAdaptive(1, 2, 5, 7, 3, 4, 202);    // overlapping windows
        CheckAdaptive(1, 1, 3, 2, 7, 5, 203);    // upsampling: output larger than input
        CheckAdaptive(1, 1, 1, 1, 1, 1, 204);
    }

    [Test]
    public void EveryKernelCompilesToPtxForSm90WithoutAGpu()
    {
        using var ptxc = new Sm90Ptx();
        foreach (var (name, method) in ConvKernels.KernelMethods)
        {
            var ptx = ptxc.Compile(method, $"conv_{name}");
            Assert.That(ptx, Does.Contain(".entry"), $"{name}: no PTX entry");
            if (name == "conv_gemm128") Assert.That(ptx, Does.Match(@"ld\.shared\.v4\.f32"), "v2: no 128-bit shared load");
        }
    }
}
