using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Which tensor-core tile the CUDA backend runs: for GEMMs (<see cref="TensorCoreGemm.Choose"/>) 128×128 under Tf32 and
/// 128×64 under Bf16; for convolutions (<see cref="TensorCoreGemm.ChooseConv"/>) 128×128 under Tf32 and, under Bf16, the
/// sizing rule's tile (<see cref="TensorCoreGemm.ConvSizingTile"/>: 64×32 when M ≤ 64, else 128×64 once its tiles give
/// every multiprocessor a group, else 64×32), which also sizes split-K under Tf32; the wired matmul and convolution follow
/// it (counted per tile) and match the CPU backend under the same precision.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class CudaTensorCoreTileTests : CudaTestBase
{
    [Test]
    public void Tf32TakesThe128x128TileBf16TheSizingRulesTile()
    {
        var acc = Dev.Runtime.Accelerator;
        int sms = acc.NumMultiprocessors;
        foreach (var (m, n) in new[] { (1, 1), (64, 64), (768, 768), (128 * sms - 128, 64), (4800, 30528) })
        {
            Assert.That(TensorCoreGemm.Choose(acc, m, n, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128), $"GEMM {m} x {n} tf32");
            Assert.That(TensorCoreGemm.Choose(acc, m, n, Precision.Bf16), Is.EqualTo(TensorCoreTile.Tile128x64), $"GEMM {m} x {n} bf16");
            Assert.That(TensorCoreGemm.ChooseConv(acc, m, n, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128), $"conv {m} x {n} tf32");
            Assert.That(TensorCoreGemm.ChooseConv(acc, m, n, Precision.Bf16), Is.EqualTo(TensorCoreGemm.ConvSizingTile(acc, m, n)), $"conv {m} x {n} bf16");
        }
        Assert.That(TensorCoreGemm.SplitSizingTile, Is.EqualTo(TensorCoreTile.Tile128x64));
        Assert.That(TensorCoreGemm.ConvSizingTile(acc, 128 * sms, 64), Is.EqualTo(TensorCoreTile.Tile128x64), "exactly one 128×64 tile per multiprocessor");
        Assert.That(TensorCoreGemm.ConvSizingTile(acc, 128 * sms - 128, 64), Is.EqualTo(TensorCoreTile.Tile64x32), "one short");
        Assert.That(TensorCoreGemm.ConvSizingTile(acc, 64, 64 * 64 * sms), Is.EqualTo(TensorCoreTile.Tile64x32), "64 rows: half a 128-row tile would idle");
        Assert.That(TensorCoreGemm.ConvSizingTile(acc, 65, 64 * 64 * sms), Is.EqualTo(TensorCoreTile.Tile128x64), "65 rows, many tiles");
        Assert.That(TensorCoreGemm.ConvSizingTile(acc, 1, 1), Is.EqualTo(TensorCoreTile.Tile64x32));
    }

    [TestCase(Precision.Tf32, TensorCoreTile.Tile128x128)]
    [TestCase(Precision.Bf16, TensorCoreTile.Tile128x64)]
    public void TheWiredMatMulRunsTheChosenTile(Precision p, TensorCoreTile tile)
    {
        using var scope = Tensor.Scope();
        int sms = Dev.Runtime.Accelerator.NumMultiprocessors;
        // M = 128·SMs + 3 rows: 128-row tiles enough for every multiprocessor (and a partial row tile), so no split-K
        int m = 128 * sms + 3, n = 70, k = 33;
        var a = Rand([m, k], 81, lo: -1, hi: 1);
        var b = Rand([k, n], 82, lo: -1, hi: 1);
        var want = Tensor.Empty([m, n]);
        var got = Tensor.Empty([m, n], DType.Float32, Gpu);
        var before = TensorCoreGemm.LaunchCounts.ToArray();
        using (MatMulPrecision.Use(p))
        {
            Cpu.MatMul(a, b, want, false, false);
            Dev.MatMul(Up(a), Up(b), got, false, false);
        }
        var ran = TensorCoreGemm.LaunchCounts.Select((c, i) => c - before[i]).ToArray();
        Assert.That(ran[(int)tile], Is.EqualTo(1), $"the {tile} kernel ran");
        Assert.That(ran.Sum(), Is.EqualTo(1), "and no other tensor-core GEMM");
        // operands in [-1, 1], rounded alike on both sides: (K + 3)·2⁻²⁴·K per backend, 3× between them (as TensorCoreGemmTests)
        AssertSame(got, want, 0, 3 * (k + 3) * Math.Pow(2, -24) * k, $"{p} matmul, {tile}");
    }

    [TestCase(Precision.Tf32, TensorCoreTile.Tile128x128)]
    [TestCase(Precision.Bf16, TensorCoreTile.Tile128x64)]
    public void TheWiredConvolutionRunsTheChosenTile(Precision p, TensorCoreTile tile)
    {
        using var scope = Tensor.Scope();
        int sms = Dev.Runtime.Accelerator.NumMultiprocessors;
        // forward GEMM: M = cout = 72 (> 64), N = batch·Ho·Wo = 2·16·(8·sms) ≥ 64·sms: 128×64 tiles ≥ SMs
        int cout = 72, cin = 3, h = 16, w = 8 * sms;
        var cp = Conv2dParams.Symmetric(1, 1);
        var x = Rand([2, cin, h, w], 83, lo: -1, hi: 1);
        var wt = Rand([cout, cin, 3, 3], 84, lo: -1, hi: 1);
        Assert.That(TensorCoreGemm.ConvSizingTile(Dev.Runtime.Accelerator, cout, 2 * h * w), Is.EqualTo(TensorCoreTile.Tile128x64));
        var want = Tensor.Empty([2, cout, h, w]);
        var got = Tensor.Empty([2, cout, h, w], DType.Float32, Gpu);
        var before = ConvKernels.ConvTileLaunches.ToArray();
        using (MatMulPrecision.Use(p))
        {
            Cpu.Conv2dForward(x, wt, null, want, cp);
            Dev.Conv2dForward(Up(x), Up(wt), null, got, cp);
        }
        var ran = ConvKernels.ConvTileLaunches.Select((c, i) => c - before[i]).ToArray();
        Assert.That(ran[(int)tile], Is.EqualTo(1), $"the {tile} conv kernel ran");
        Assert.That(ran.Sum(), Is.EqualTo(1), "and no other tensor-core conv kernel");
        int terms = cin * 9;
        AssertSame(got, want, 0, 3 * (terms + 3) * Math.Pow(2, -24) * terms, $"{p} conv, {tile}");
    }

    /// <summary>
    /// Under Tf32 a weight gradient whose tensor-core tile would be 64×32 with M &gt; 64 runs the exact fp32 kernel
    /// (<see cref="ConvKernels.WeightGradientPrecision"/>, measured faster there on an H200): its bits are the fp32 ones,
    /// while M = 64 keeps the tensor cores (operands rounded: other bits).
    /// </summary>
    [Test]
    public void Tf32WeightGradientsTakeTheExactKernelWhereTheSmallTileWouldRun()
    {
        var acc = Dev.Runtime.Accelerator;
        int sms = acc.NumMultiprocessors;
        Assert.That(ConvKernels.WeightGradientPrecision(acc, 72, 63, Precision.Tf32), Is.EqualTo(Precision.Fp32), "one 128×64 tile: the 64×32 tile's shape");
        Assert.That(ConvKernels.WeightGradientPrecision(acc, 64, 63, Precision.Tf32), Is.EqualTo(Precision.Tf32), "M ≤ 64 keeps the tensor cores");
        Assert.That(ConvKernels.WeightGradientPrecision(acc, 72, 63, Precision.Bf16), Is.EqualTo(Precision.Bf16), "bf16 unchanged (not measured)");
        Assert.That(ConvKernels.WeightGradientPrecision(acc, 72, 63, Precision.Fp32), Is.EqualTo(Precision.Fp32));
        Assert.That(ConvKernels.WeightGradientPrecision(acc, 128 * sms, 64, Precision.Tf32), Is.EqualTo(Precision.Tf32), "128×64 tiles fill the SMs");

        int[] Bits(int cout, Precision p)
        {
            using var scope = Tensor.Scope();
            var cp = Conv2dParams.Symmetric(1, 1);
            var x = Up(Rand([2, 7, 8, 8], 90, lo: -1, hi: 1));
            var gy = Up(Rand([2, cout, 8, 8], 91, lo: -1, hi: 1));
            var gw = Tensor.Empty([cout, 7, 3, 3], DType.Float32, Gpu);
            using (MatMulPrecision.Use(p)) Dev.Conv2dBackwardWeight(x, gy, gw, null, cp);
            return gw.ToArray<float>().Select(BitConverter.SingleToInt32Bits).ToArray();
        }
        Assert.That(Bits(72, Precision.Tf32), Is.EqualTo(Bits(72, Precision.Fp32)), "M 72, N 63 under Tf32: the fp32 kernel's bits");
        Assert.That(Bits(64, Precision.Tf32), Is.Not.EqualTo(Bits(64, Precision.Fp32)), "M 64 under Tf32: the tensor cores (rounded operands)");

        // FVL_TF32_WGRAD=tc: every TF32 weight gradient on the tensor cores, here the CPU backend's TF32 emulation
        try
        {
            ConvKernels.Tf32WeightGradientsOnTensorCores = true;
            Assert.That(ConvKernels.WeightGradientPrecision(acc, 72, 63, Precision.Tf32), Is.EqualTo(Precision.Tf32));
            Assert.That(Bits(72, Precision.Tf32), Is.Not.EqualTo(Bits(72, Precision.Fp32)), "M 72 under Tf32 with the switch: rounded operands");
            using var scope = Tensor.Scope();
            var cp = Conv2dParams.Symmetric(1, 1);
            var x = Rand([2, 7, 8, 8], 90, lo: -1, hi: 1);
            var gy = Rand([2, 72, 8, 8], 91, lo: -1, hi: 1);
            var want = Tensor.Empty([72, 7, 3, 3]);
            var got = Tensor.Empty([72, 7, 3, 3], DType.Float32, Gpu);
            using (MatMulPrecision.Use(Precision.Tf32))
            {
                Cpu.Conv2dBackwardWeight(x, gy, want, null, cp);
                Dev.Conv2dBackwardWeight(Up(x), Up(gy), got, null, cp);
            }
            int terms = 2 * 8 * 8;   // K = batch·Ho·Wo, operands in [-1, 1], rounded alike on both sides
            AssertSame(got, want, 0, 3 * (terms + 3) * Math.Pow(2, -24) * terms, "tf32 weight gradient on the tensor cores");
        }
        finally { ConvKernels.Tf32WeightGradientsOnTensorCores = false; }
        Assert.That(ConvKernels.ParseTf32Wgrad(" TC "), Is.True);
        Assert.That(ConvKernels.ParseTf32Wgrad("rule"), Is.False);
        Assert.That(ConvKernels.ParseTf32Wgrad(null), Is.False);
        Assert.That(Assert.Throws<ArgumentException>(() => ConvKernels.ParseTf32Wgrad("fast"))!.Message, Does.Contain("FVL_TF32_WGRAD").And.Contain("fast"));
    }
}
