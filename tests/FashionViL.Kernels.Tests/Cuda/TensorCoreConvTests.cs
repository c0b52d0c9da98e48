using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The tensor-core convolution (<see cref="ConvKernels"/> with <see cref="Precision.Tf32"/> / <see cref="Precision.Bf16"/>) on
/// ILGPU's CPU accelerator (its portable path: 2-thread groups, bounds-checked views): forward, backward-input and
/// backward-weight against the CPU backend under the same <see cref="MatMulPrecision"/> (its im2col GEMMs round the same
/// operands), both checked per element against a float64 reference on the rounded operands. Bound: the two results are
/// float32 sums of the same exact products (a product of two TF32 or bf16 values is exact in float32) in different orders,
/// so each lies within (K+3)·2⁻²⁴·Σ|terms| of the float64 sum (K = terms per output; +3 covers the bias, the split-K and
/// col2im partial sums); a GPU's tensor cores may truncate inside their sums (unit roundoff 2⁻²³), hence 2× for the device
/// and 3× between the two. Each case also checks that the rounding happened: some device element is further from the
/// float64 result on the unrounded operands than 10× the fp32 convolution tolerance (<see cref="Fp32Tolerance"/>). FVL_KERNEL_TESTS_CUDA=1 runs it on a GPU (the mma path; owed).
/// </summary>
[TestFixture, Category("Cuda")]
public class TensorCoreConvTests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    private static float[] RandF(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>float64 sums over the taps of one convolution: rounded (r), |rounded| (abs) and unrounded (exact) terms, all three GEMMs.</summary>
    private sealed class Reference
    {
        public double[] Y = [], YAbs = [], YExact = [], Gx = [], GxAbs = [], GxExact = [], Gw = [], GwAbs = [], GwExact = [];
    }

    private static Reference Conv64(Precision p, float[] x, float[] w, float[]? bias, float[] gy,
        int batch, int cin, int h, int wd, int cout, int kh, int kw, Conv2dParams cp, int ho, int wo)
    {
        var R = new Reference
        {
            Y = new double[batch * cout * ho * wo], YAbs = new double[batch * cout * ho * wo], YExact = new double[batch * cout * ho * wo],
            Gx = new double[batch * cin * h * wd], GxAbs = new double[batch * cin * h * wd], GxExact = new double[batch * cin * h * wd],
            Gw = new double[cout * cin * kh * kw], GwAbs = new double[cout * cin * kh * kw], GwExact = new double[cout * cin * kh * kw],
        };
        for (int n = 0; n < batch; n++)
            for (int co = 0; co < cout; co++)
                for (int oh = 0; oh < ho; oh++)
                    for (int ow = 0; ow < wo; ow++)
                    {
                        int yi = ((n * cout + co) * ho + oh) * wo + ow;
                        for (int ci = 0; ci < cin; ci++)
                            for (int i = 0; i < kh; i++)
                                for (int j = 0; j < kw; j++)
                                {
                                    int ih = oh * cp.StrideH - cp.PadTop + i * cp.DilationH, iw = ow * cp.StrideW - cp.PadLeft + j * cp.DilationW;
                                    if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                                    int xi = ((n * cin + ci) * h + ih) * wd + iw, wi = ((co * cin + ci) * kh + i) * kw + j;
                                    double xr = PrecisionRounding.Round(x[xi], p), wr = PrecisionRounding.Round(w[wi], p), gr = PrecisionRounding.Round(gy[yi], p);
                                    R.Y[yi] += wr * xr; R.YAbs[yi] += Math.Abs(wr * xr); R.YExact[yi] += (double)w[wi] * x[xi];
                                    R.Gx[xi] += wr * gr; R.GxAbs[xi] += Math.Abs(wr * gr); R.GxExact[xi] += (double)w[wi] * gy[yi];
                                    R.Gw[wi] += gr * xr; R.GwAbs[wi] += Math.Abs(gr * xr); R.GwExact[wi] += (double)gy[yi] * x[xi];
                                }
                        if (bias is not null)
                        {
                            R.Y[yi] += bias[co]; R.YAbs[yi] += Math.Abs(bias[co]); R.YExact[yi] += bias[co];
                        }
                    }
        return R;
    }

    /// <summary>The tolerance the fp32 convolution tests (<see cref="ConvKernelTests"/>) allow between device and CPU for a sum of
    /// <paramref name="terms"/> products of values in [-1, 1]: 1e-6 + 2e-7·terms absolute, 1e-5 relative.</summary>
    internal static double Fp32Tolerance(int terms, double v) => 1e-6 + 2e-7 * terms + 1e-5 * Math.Abs(v);

    private static void Compare(string what, float[] dev, float[] cpu, double[] want, double[] abs, double[] exact, int terms)
    {
        double moved = 0, worst = 0;
        for (int o = 0; o < want.Length; o++)
        {
            double tol = (terms + 3) * Math.Pow(2, -24) * abs[o] + 1e-30;
            Assert.That(Math.Abs(dev[o] - want[o]), Is.LessThanOrEqualTo(2 * tol), $"{what}: device element {o} = {dev[o]:R}, want {want[o]:R}");
            Assert.That(Math.Abs(cpu[o] - want[o]), Is.LessThanOrEqualTo(tol), $"{what}: cpu element {o} = {cpu[o]:R}, want {want[o]:R}");
            Assert.That(Math.Abs(dev[o] - cpu[o]), Is.LessThanOrEqualTo(3 * tol), $"{what}: device vs cpu at {o}");
            worst = Math.Max(worst, Math.Abs(dev[o] - want[o]));
            // how far the device is from the fp32-operand result, in units of the fp32 convolution tolerance
            moved = Math.Max(moved, Math.Abs(dev[o] - exact[o]) / Fp32Tolerance(terms, exact[o]));
        }
        TestContext.Out.WriteLine($"{what}: max |device − float64 on rounded operands| = {worst:G3}; max |device − fp32 operands| / fp32 tolerance = {moved:G3}");
        Assert.That(moved, Is.GreaterThan(10), $"{what}: the device result does not show the operand rounding");
    }

    private void Check(Precision p, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams cp, bool bias, int seed, int splits = 1,
        TensorCoreTile tile = TensorCoreTile.Tile64x32)
    {
        string what = $"{p} x [{batch},{cin},{h},{w}] w [{cout},{cin},{kh},{kw}] {cp} bias {bias} splits {splits} {tile}";
        var (ho, wo) = ConvKernels.OutputSize(h, w, kh, kw, cp);
        var x = RandF(batch * cin * h * w, seed);
        var wt = RandF(cout * cin * kh * kw, seed + 1);
        var b = bias ? RandF(cout, seed + 2) : null;
        var gy = RandF(batch * cout * ho * wo, seed + 3);

        // CPU backend (im2col + packed GEMM), same precision
        float[] cy, cgx, cgw;
        using (var xt = Tensor.FromArray(x, batch, cin, h, w))
        using (var wtt = Tensor.FromArray(wt, cout, cin, kh, kw))
        using (var bt = b is null ? null : Tensor.FromArray(b, cout))
        using (var gyt = Tensor.FromArray(gy, batch, cout, ho, wo))
        using (var y = Tensor.Empty([batch, cout, ho, wo]))
        using (var gx = Tensor.Empty([batch, cin, h, w]))
        using (var gw = Tensor.Empty([cout, cin, kh, kw]))
        using (MatMulPrecision.Use(p))
        {
            Cpu.Conv2dForward(xt, wtt, bt, y, cp);
            Cpu.Conv2dBackwardInput(gyt, wtt, gx, cp);
            Cpu.Conv2dBackwardWeight(xt, gyt, gw, null, cp);
            cy = y.ToArray<float>(); cgx = gx.ToArray<float>(); cgw = gw.ToArray<float>();
        }

        // device: outputs poisoned with NaN, so a forgotten element fails
        using var dx = Up(Acc, x);
        using var dw = Up(Acc, wt);
        using var db = Up(Acc, b ?? new float[1]);
        using var dgy = Up(Acc, gy);
        using var dy = Poisoned(Acc, cy.Length);
        using var dgx = Poisoned(Acc, cgx.Length);
        using var dgw = Poisoned(Acc, cgw.Length);
        using var ws = Acc.Allocate1D<float>(Math.Max(1, splits * cgw.Length));
        (float[] Y, float[] Gx, float[] Gw) Run(TensorCoreTile tl)
        {
            ConvKernels.Conv2dForward(Acc, null, dx.View, dw.View, b is null ? default : db.View, dy.View, batch, cin, h, w, cout, kh, kw, cp, precision: p, tcTile: tl);
            ConvKernels.Conv2dBackwardInput(Acc, null, dgy.View, dw.View, dgx.View, batch, cin, h, w, cout, kh, kw, cp, precision: p, tcTile: tl);
            ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, dgw.View, default, batch, cin, h, w, cout, kh, kw, cp,
                workspace: splits > 1 ? ws.View : default, splits: splits, precision: p, tcTile: tl);
            Acc.Synchronize();
            return (dy.GetAsArray1D()[..cy.Length], dgx.GetAsArray1D()[..cgx.Length], dgw.GetAsArray1D()[..cgw.Length]);
        }
        var (ry, rgx, rgw) = Run(tile);
        if (tile != TensorCoreTile.Tile64x32)
        {
            // every output sees the same mma instructions in the same order on both tiles: the same bits
            var (y64, gx64, gw64) = Run(TensorCoreTile.Tile64x32);
            Assert.That(ry.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(y64.Select(BitConverter.SingleToInt32Bits)), $"{what} forward: {tile} vs 64x32");
            Assert.That(rgx.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(gx64.Select(BitConverter.SingleToInt32Bits)), $"{what} backward input: {tile} vs 64x32");
            Assert.That(rgw.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(gw64.Select(BitConverter.SingleToInt32Bits)), $"{what} backward weight: {tile} vs 64x32");
        }

        var R = Conv64(p, x, wt, b, gy, batch, cin, h, w, cout, kh, kw, cp, ho, wo);
        Compare(what + " forward", ry, cy, R.Y, R.YAbs, R.YExact, cin * kh * kw);
        Compare(what + " backward input", rgx, cgx, R.Gx, R.GxAbs, R.GxExact, cout * kh * kw);
        Compare(what + " backward weight", rgw, cgw, R.Gw, R.GwAbs, R.GwExact, batch * ho * wo);
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            yield return new TestCaseData(p, 2, 5, 7, 6, 9, 3, 3, Conv2dParams.Symmetric(1, 1), true, 10, 1).SetName($"{p} 3x3 pad 1 batch 2 bias");
            yield return new TestCaseData(p, 1, 6, 9, 8, 7, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1), false, 20, 1).SetName($"{p} 3x3 stride 2 asymmetric pad");
            yield return new TestCaseData(p, 2, 7, 5, 5, 5, 1, 1, Conv2dParams.Symmetric(2, 0), true, 30, 1).SetName($"{p} 1x1 stride 2 bias");
            yield return new TestCaseData(p, 1, 3, 9, 7, 4, 1, 1, Conv2dParams.Symmetric(1, 0), false, 40, 1).SetName($"{p} 1x1 stride 1");
            yield return new TestCaseData(p, 2, 3, 11, 10, 70, 3, 3, Conv2dParams.Symmetric(1, 1), false, 50, 2).SetName($"{p} 3x3 Cout 70 (two row tiles) split-K 2");
        }
    }

    /// <summary>The 128×64 tile (<see cref="TensorCoreTile.Tile128x64"/>): against the CPU backend and the float64 reference as
    /// above, and bitwise against the 64×32 tile on the same data (the launches write the same NaN-poisoned outputs).</summary>
    public static IEnumerable<TestCaseData> Tile128Cases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
            yield return new TestCaseData(p, 2, 5, 7, 6, 9, 3, 3, Conv2dParams.Symmetric(1, 1), true, 10, 1).SetName($"{p} 128x64 tile 3x3 pad 1 batch 2 bias");
        yield return new TestCaseData(Precision.Tf32, 2, 3, 5, 4, 130, 1, 1, Conv2dParams.Symmetric(1, 0), true, 60, 1).SetName("Tf32 128x64 tile 1x1 Cout 130 (two row tiles) bias");
        yield return new TestCaseData(Precision.Bf16, 1, 6, 9, 8, 7, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1), false, 20, 2).SetName("Bf16 128x64 tile 3x3 stride 2 asymmetric pad split-K 2");
    }

    /// <summary>The 128×128 tile (<see cref="TensorCoreTile.Tile128x128"/>, TF32 only): forward, input and weight gradient
    /// against the CPU backend, the float64 reference and bitwise the 64×32 tile, on shapes with several row and column
    /// tiles, K tails, folded (1×1 stride 1) and gathered B, split-K.</summary>
    public static IEnumerable<TestCaseData> Tile128x128Cases()
    {
        var p = Precision.Tf32;
        yield return new TestCaseData(p, 2, 5, 7, 6, 9, 3, 3, Conv2dParams.Symmetric(1, 1), true, 10, 1).SetName("Tf32 128x128 tile 3x3 pad 1 batch 2 bias");
        yield return new TestCaseData(p, 2, 3, 9, 9, 130, 1, 1, Conv2dParams.Symmetric(1, 0), true, 60, 1).SetName("Tf32 128x128 tile 1x1 Cout 130 (two row tiles, two column tiles) bias");
        yield return new TestCaseData(p, 1, 20, 13, 12, 140, 3, 3, new Conv2dParams(2, 2, 0, 1, 0, 1), false, 70, 2).SetName("Tf32 128x128 tile 3x3 stride 2 Cin 20 Cout 140 split-K 2");
    }

    [TestCaseSource(nameof(Tile128x128Cases))]
    public void The128x128TileMatchesTheCpuBackendAndThe64x32TileBitwise(Precision p, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams cp, bool bias, int seed, int splits)
        => Check(p, batch, cin, h, w, cout, kh, kw, cp, bias, seed, splits, TensorCoreTile.Tile128x128);

    [Test]
    public void The128x128TileRefusesBf16ByName()
    {
        using var buf = Acc.Allocate1D<float>(64);
        var e = Assert.Throws<ArgumentException>(() => ConvKernels.Conv2dForward(Acc, null, buf.View, buf.View, default, buf.View, 1, 1, 2, 2, 1, 1, 1,
            Conv2dParams.Symmetric(1, 0), precision: Precision.Bf16, tcTile: TensorCoreTile.Tile128x128))!;
        Assert.That(e.Message, Does.Contain("128×128").And.Contain("Tf32"));
    }

    [TestCaseSource(nameof(Tile128Cases))]
    public void The128x64TileMatchesTheCpuBackendAndThe64x32TileBitwise(Precision p, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams cp, bool bias, int seed, int splits)
        => Check(p, batch, cin, h, w, cout, kh, kw, cp, bias, seed, splits, TensorCoreTile.Tile128x64);

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheCpuBackendAtTheSamePrecision(Precision p, int batch, int cin, int h, int w, int cout, int kh, int kw, Conv2dParams cp, bool bias, int seed, int splits)
        => Check(p, batch, cin, h, w, cout, kh, kw, cp, bias, seed, splits);

    [Test]
    public void Fp32IsTheImplicitGemmKernelBitForBit()
    {
        // Fp32 (explicit, or by default) must run exactly the v1/v2 kernels: bitwise equal to the explicitly chosen version.
        int batch = 1, cin = 5, h = 7, w = 6, cout = 9, kh = 3, kw = 3;
        var cp = Conv2dParams.Symmetric(2, 1);
        var (ho, wo) = ConvKernels.OutputSize(h, w, kh, kw, cp);
        using var dx = Up(Acc, RandF(batch * cin * h * w, 1));
        using var dw = Up(Acc, RandF(cout * cin * kh * kw, 2));
        using var db = Up(Acc, RandF(cout, 3));
        using var dgy = Up(Acc, RandF(batch * cout * ho * wo, 4));
        float[] Run(int mode, Precision? p)
        {
            int n = mode switch { 0 => batch * cout * ho * wo, 1 => batch * cin * h * w, _ => cout * cin * kh * kw };
            using var o = Poisoned(Acc, n);
            var v = ConvKernels.Choose(Acc, mode == 1 ? cin : cout, mode switch { 0 => batch * ho * wo, 1 => batch * h * w, _ => cin * kh * kw });
            switch (mode)
            {
                case 0:
                    if (p is { } p0) ConvKernels.Conv2dForward(Acc, null, dx.View, dw.View, db.View, o.View, batch, cin, h, w, cout, kh, kw, cp, precision: p0);
                    else ConvKernels.Conv2dForward(Acc, null, dx.View, dw.View, db.View, o.View, batch, cin, h, w, cout, kh, kw, cp, v);
                    break;
                case 1:
                    if (p is { } p1) ConvKernels.Conv2dBackwardInput(Acc, null, dgy.View, dw.View, o.View, batch, cin, h, w, cout, kh, kw, cp, precision: p1);
                    else ConvKernels.Conv2dBackwardInput(Acc, null, dgy.View, dw.View, o.View, batch, cin, h, w, cout, kh, kw, cp, v);
                    break;
                default:
                    if (p is { } p2) ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, o.View, default, batch, cin, h, w, cout, kh, kw, cp, precision: p2);
                    else ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dgy.View, o.View, default, batch, cin, h, w, cout, kh, kw, cp, v);
                    break;
            }
            Acc.Synchronize();
            return o.GetAsArray1D()[..n];
        }
        foreach (var (mode, name) in new[] { (0, "forward"), (1, "backward input"), (2, "backward weight") })
        {
            var reference = Run(mode, null);
            Assert.That(Run(mode, Precision.Fp32), Is.EqualTo(reference), $"{name}: Fp32 is the exact kernel, bitwise");
            Assert.That(Run(mode, Precision.Tf32), Is.Not.EqualTo(reference), $"{name}: Tf32 takes the other path");
        }
    }

    [Test]
    public void CompilesToPtxForSm90WithBothMmaForms()
    {
        using var ptxc = new Sm90Ptx();
        var ptx = ptxc.Compile(ConvKernels.TensorCoreKernelMethod, "conv_gemm_tc");
        Assert.That(ptx, Does.Contain(".entry"));
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"), "the TF32 tensor-core instruction");
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"), "the bf16 tensor-core instruction");
        Assert.That(ptx, Does.Contain("bar.sync"));
        // The accumulators are PTX registers named by the asm, never C# locals passed by ref (ILGPU routes those through
        // .local memory around every mma; ptxas did not promote them back: 320-byte stack frame in the first version).
        Assert.That(ptx, Does.Not.Contain(".local"), "no local memory in the tensor-core kernel");
        Assert.That(ptx, Does.Contain(".reg .f32 fvlc<16>;"));
        Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync"), Is.EqualTo(12), "one mma per n8 tile and k step: 4 bf16, and 2 × 4 TF32 (both k8 steps unrolled)");
        // double-buffered stages: A 2·64·20 and B 2·16·40 words, the C tile 64·32 floats, 8 tables of 32 ints (its K-row refill
        // still divides: carried digits cost it 16 registers under ptxas 12.4, 76 → 92)
        Assert.That(StaticSharedBytes(ptx), Is.EqualTo(4 * (2 * 64 * 20 + 2 * 16 * 40 + 64 * 32 + 8 * 32)), "static shared memory per group");
        Assert.That(ptx, Does.Not.Contain("__dyn_shared_alloca"), "the 64×32 tile requests no dynamic shared memory");
    }

    /// <summary>Bytes of the PTX's static shared arrays (ILGPU declares each as `.shared .align 4 .b8 __shared_allocaN[bytes]`).</summary>
    internal static int StaticSharedBytes(string ptx)
        => System.Text.RegularExpressions.Regex.Matches(ptx, @"^\s*\.shared\s+\.align\s+\d+\s+\.b8\s+\w+\[(\d+)\];", System.Text.RegularExpressions.RegexOptions.Multiline)
            .Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));

    [Test]
    public void The128x64TileCompilesToPtxWithLaunchBoundsAndNoLocalMemory()
    {
        using var c = new KernelAudit.PtxCompiler(7, 8);
        var ptx = c.Compile(KernelAudit.Entry(ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x64)));
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32").And.Contain("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
        Assert.That(ptx, Does.Contain(".reg .f32 fvld<32>;"));
        Assert.That(ptx, Does.Not.Contain(".local"), "no local memory");
        Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync"), Is.EqualTo(24), "8 bf16 mma, and 2 × 8 TF32 (both k8 steps unrolled)");
        Assert.That(ptx, Does.Contain(".maxntid 256, 1, 1").And.Contain(".minnctapersm 2"), "launch bounds (256, 2)");
        // one buffer for both stages' A (2·128·20 words) and B (2·16·72) or, after the k loop, the 128×72 C tile (the larger),
        // plus 8 tables (4 of 64 column ints, 4 of 2·16 K-row ints) and the K-row refill's digits (17 × 4 ints): within the
        // 48 KiB a group may have statically
        Assert.That(StaticSharedBytes(ptx), Is.EqualTo(4 * (Math.Max(2 * 128 * 20 + 2 * 16 * 72, 128 * 72) + 4 * 64 + 4 * 32 + 17 * 4)), "static shared memory per group");
        Assert.That(StaticSharedBytes(ptx), Is.LessThanOrEqualTo(48 * 1024));
    }
}

/// <summary>CudaBackend's convolutions (emulated device) follow <see cref="MatMulPrecision"/>: Fp32 stays the exact kernels bit for
/// bit, Tf32/Bf16 match the CPU backend at the same precision and differ from fp32.</summary>
[Category("Cuda"), NonParallelizable]
public class CudaConvPrecisionTests : CudaTestBase
{
    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void WiredConvFollowsTheSwitch(Precision p)
    {
        using var scope = Tensor.Scope();
        var cp = Conv2dParams.Symmetric(2, 1);
        var x = Rand([2, 4, 7, 6], 1, lo: -1, hi: 1);
        var w = Rand([5, 4, 3, 3], 2, lo: -1, hi: 1);
        var b = Rand([5], 3, lo: -1, hi: 1);
        var gy = Rand([2, 5, 4, 3], 4, lo: -1, hi: 1);
        Tensor[] RunDev()
        {
            var y = Tensor.Empty([2, 5, 4, 3], DType.Float32, Gpu);
            var gx = Tensor.Empty([2, 4, 7, 6], DType.Float32, Gpu);
            var gw = Tensor.Empty([5, 4, 3, 3], DType.Float32, Gpu);
            Dev.Conv2dForward(Up(x), Up(w), Up(b), y, cp);
            Dev.Conv2dBackwardInput(Up(gy), Up(w), gx, cp);
            Dev.Conv2dBackwardWeight(Up(x), Up(gy), gw, null, cp);
            return [y, gx, gw];
        }
        var fp32 = RunDev();
        Tensor[] got;
        var want = new[] { Tensor.Empty([2, 5, 4, 3]), Tensor.Empty([2, 4, 7, 6]), Tensor.Empty([5, 4, 3, 3]) };
        using (MatMulPrecision.Use(p))
        {
            got = RunDev();
            Cpu.Conv2dForward(x, w, b, want[0], cp);
            Cpu.Conv2dBackwardInput(gy, w, want[1], cp);
            Cpu.Conv2dBackwardWeight(x, gy, want[2], null, cp);
        }
        // terms per output: forward 4·9 (+ bias), backward input 5·9, backward weight 2·4·3 = 24; values in [-1, 1], so
        // Σ|terms| ≤ K + 1 and the fp32 accumulation bound (K+3)·2⁻²⁴·(K+1) per backend (×2 on a truncating device), 3× between them.
        string[] names = ["forward", "backward input", "backward weight"];
        int[] terms = [36, 45, 24];
        for (int i = 0; i < 3; i++)
        {
            double tol = 3 * (terms[i] + 3) * (terms[i] + 1) * Math.Pow(2, -24);
            AssertSame(got[i], want[i], 0, tol, $"{p} {names[i]}: device vs cpu");
            var g = got[i].To(FashionViL.Tensors.Device.Cpu).ToArray<float>();
            var f = fp32[i].To(FashionViL.Tensors.Device.Cpu).ToArray<float>();
            // rounding reached the device: some element further from the device fp32 result than 10× the fp32 conv tolerance
            double moved = g.Zip(f, (u, v) => Math.Abs(u - v) / TensorCoreConvTests.Fp32Tolerance(terms[i], v)).Max();
            TestContext.Out.WriteLine($"{p} {names[i]}: max |device − device fp32| / fp32 tolerance = {moved:G3}");
            if (p == Precision.Fp32) Assert.That(g, Is.EqualTo(f), $"{names[i]}: Fp32 in a scope is the default kernel, bitwise");
            else Assert.That(moved, Is.GreaterThan(10), $"{p} {names[i]} did not reach the device convolution");
        }
    }
}
