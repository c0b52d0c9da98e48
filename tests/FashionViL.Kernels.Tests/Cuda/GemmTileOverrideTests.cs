using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <c>FVL_TC_TILE</c> (<see cref="CudaBackend.GemmTileOverride"/>): every tensor-core GEMM of a linear's forward and both
/// gradients runs the named tile instead of the rule's — seen in <see cref="TensorCoreGemm.LaunchCounts"/> — with every
/// output and gradient bit the rule's; the 128×128 tile is TF32 only, so bf16 keeps the rule; bad values are refused by name.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class GemmTileOverrideTests : CudaTestBase
{
    [TearDown]
    public void Restore() => CudaBackend.GemmTileOverride = null;

    private static (List<int[]> Bits, long[] Tiles) Run(TensorCoreTile? tile, Precision p, Tensor[] cpu)
    {
        CudaBackend.GemmTileOverride = tile;
        var before = TensorCoreGemm.LaunchCounts.ToArray();
        var (bits, _) = OutputAndGradientBits(t => Ops.Linear(t[0], t[1], t[2]), cpu, p);
        return (bits, TensorCoreGemm.LaunchCounts.Select((n, i) => n - before[i]).ToArray());
    }

    [TestCase(Precision.Tf32, TensorCoreTile.Tile128x64)]
    [TestCase(Precision.Tf32, TensorCoreTile.Tile64x32)]
    [TestCase(Precision.Bf16, TensorCoreTile.Tile64x32)]
    public void TheNamedTileRunsEveryGemmWithTheRulesBits(Precision p, TensorCoreTile tile)
    {
        // [2, 70, 48] x [130, 48]^T + bias: forward 140 × 130 × 48, input gradient 140 × 48 × 130, weight gradient 130 × 48 × 140
        var cpu = new[] { Rand([2, 70, 48], 31), Rand([130, 48], 32), Rand([130], 33) };
        var rule = Run(null, p, cpu);
        var forced = Run(tile, p, cpu);
        Assert.That(forced.Tiles[(int)tile], Is.EqualTo(3), $"{tile} ran the forward and both gradient GEMMs");
        Assert.That(forced.Tiles.Sum(), Is.EqualTo(3), "and no other tensor-core GEMM ran");
        var ruleTile = p == Precision.Tf32 ? TensorCoreTile.Tile128x128 : TensorCoreTile.Tile128x64;
        Assert.That(rule.Tiles[(int)ruleTile], Is.EqualTo(3), $"the rule runs {ruleTile} under {p}");
        Assert.That(rule.Tiles.Sum(), Is.EqualTo(3));
        for (int i = 0; i < rule.Bits.Count; i++)
            Assert.That(forced.Bits[i], Is.EqualTo(rule.Bits[i]), $"{p} on {tile}: {(i == 0 ? "output" : $"gradient of input {i - 1}")}");
    }

    [Test]
    public void Bf16KeepsTheRuleUnderThe128x128Override()
    {
        var cpu = new[] { Rand([2, 70, 48], 34), Rand([130, 48], 35), Rand([130], 36) };
        var rule = Run(null, Precision.Bf16, cpu);
        var forced = Run(TensorCoreTile.Tile128x128, Precision.Bf16, cpu);
        Assert.That(forced.Tiles, Is.EqualTo(rule.Tiles));
        Assert.That(forced.Tiles[(int)TensorCoreTile.Tile128x128], Is.Zero);
    }

    [TestCase(null, null)]
    [TestCase("", null)]
    [TestCase("rule", null)]
    [TestCase(" 128X128 ", TensorCoreTile.Tile128x128)]
    [TestCase("128x64", TensorCoreTile.Tile128x64)]
    [TestCase("64x32", TensorCoreTile.Tile64x32)]
    public void ParsesTheSwitch(string? value, TensorCoreTile? want) => Assert.That(CudaBackend.ParseGemmTile(value), Is.EqualTo(want));

    [Test]
    public void RefusesAnUnknownTileByName()
    {
        var e = Assert.Throws<ArgumentException>(() => CudaBackend.ParseGemmTile("256x128"))!;
        Assert.That(e.Message, Does.Contain("FVL_TC_TILE").And.Contain("256x128").And.Contain("128x128"));
    }
}

/// <summary>
/// <c>FVL_TC_CONV_TILE</c> (<see cref="ConvKernels.ConvTileOverride"/>): a convolution's forward and both gradients run their
/// tensor-core GEMMs on the named tile — seen in <see cref="ConvKernels.ConvTileLaunches"/> — with every output and gradient
/// bit the rule's, also where the weight was rounded once before the launch; bf16 keeps the rule under the 128×128 override.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class ConvTileOverrideTests : CudaTestBase
{
    [TearDown]
    public void Restore() => ConvKernels.ConvTileOverride = null;

    private static (List<int[]> Bits, long[] Tiles) Run(TensorCoreTile? tile, Precision p, Tensor[] cpu)
    {
        ConvKernels.ConvTileOverride = tile;
        var before = ConvKernels.ConvTileLaunches.ToArray();
        var (bits, _) = OutputAndGradientBits(t => Ops.Conv2d(t[0], t[1], null, 1, 1), cpu, p);
        return (bits, ConvKernels.ConvTileLaunches.Select((n, i) => n - before[i]).ToArray());
    }

    [TestCase(Precision.Tf32, TensorCoreTile.Tile64x32)]
    [TestCase(Precision.Tf32, TensorCoreTile.Tile128x64)]
    [TestCase(Precision.Bf16, TensorCoreTile.Tile128x64)]
    public void TheNamedTileRunsEveryConvolutionGemmWithTheRulesBits(Precision p, TensorCoreTile tile)
    {
        // 3×3 pad 1, [2, 6, 9, 8] → 70 channels: forward M 70, input gradient M 6, weight gradient M 70 (the last may run
        // fp32 under Tf32 where the rule would take the 64×32 tile: WeightGradientPrecision, unchanged by the override)
        var cpu = new[] { Rand([2, 6, 9, 8], 41), Rand([70, 6, 3, 3], 42) };
        var rule = Run(null, p, cpu);
        var forced = Run(tile, p, cpu);
        Assert.That(forced.Tiles[(int)tile], Is.EqualTo(rule.Tiles.Sum()), $"{tile} ran every tensor-core conv GEMM the rule ran");
        Assert.That(forced.Tiles[(int)tile], Is.GreaterThanOrEqualTo(2), "forward and input gradient at least");
        Assert.That(forced.Tiles.Sum(), Is.EqualTo(rule.Tiles.Sum()));
        if (p == Precision.Tf32) Assert.That(rule.Tiles[(int)TensorCoreTile.Tile128x128], Is.EqualTo(rule.Tiles.Sum()), "the Tf32 rule runs 128×128");
        for (int i = 0; i < rule.Bits.Count; i++)
            Assert.That(forced.Bits[i], Is.EqualTo(rule.Bits[i]), $"{p} on {tile}: {(i == 0 ? "output" : $"gradient of input {i - 1}")}");
    }

    [Test]
    public void Bf16KeepsTheRuleUnderThe128x128Override()
    {
        var cpu = new[] { Rand([2, 6, 9, 8], 43), Rand([70, 6, 3, 3], 44) };
        var rule = Run(null, Precision.Bf16, cpu);
        var forced = Run(TensorCoreTile.Tile128x128, Precision.Bf16, cpu);
        Assert.That(forced.Tiles, Is.EqualTo(rule.Tiles));
        Assert.That(forced.Tiles[(int)TensorCoreTile.Tile128x128], Is.Zero);
    }

    [Test]
    public void RefusesAnUnknownTileByName()
    {
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.ParseTile("FVL_TC_CONV_TILE", "huge"))!;
        Assert.That(e.Message, Does.Contain("FVL_TC_CONV_TILE").And.Contain("huge").And.Contain("128x128"));
    }
}

/// <summary>
/// <c>FVL_SGEMM</c> (<see cref="CudaBackend.SgemmOverride"/>): an fp32 linear's forward and both gradient GEMMs on v5 or v4
/// instead of the rule's v6, with every output and gradient bit the rule's; bad values are refused by name.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class SgemmOverrideTests : CudaTestBase
{
    [TearDown]
    public void Restore() => CudaBackend.SgemmOverride = null;

    [TestCase(GemmVersion.Reg128x8Prefetch)]
    [TestCase(GemmVersion.Reg128x8Vec)]
    public void TheNamedVersionGivesTheRulesBits(GemmVersion v)
    {
        // [2, 130, 48] x [136, 48]^T + bias: 260 × 136 × 48 forward, both gradients: interior 128-tiles and edges
        var cpu = new[] { Rand([2, 130, 48], 51), Rand([136, 48], 52), Rand([136], 53) };
        CudaBackend.SgemmOverride = null;
        long v6 = GemmKernels.LaunchCounts[(int)GemmVersion.Reg128x8Layout];
        var rule = OutputAndGradientBits(t => Ops.Linear(t[0], t[1], t[2]), cpu, Precision.Fp32).Bits;
        Assert.That(GemmKernels.LaunchCounts[(int)GemmVersion.Reg128x8Layout] - v6, Is.GreaterThanOrEqualTo(3), "the rule runs v6");
        CudaBackend.SgemmOverride = v;
        long before = GemmKernels.LaunchCounts[(int)v];
        var forced = OutputAndGradientBits(t => Ops.Linear(t[0], t[1], t[2]), cpu, Precision.Fp32).Bits;
        Assert.That(GemmKernels.LaunchCounts[(int)v] - before, Is.GreaterThanOrEqualTo(3), $"{v} ran the forward and both gradient GEMMs");
        for (int i = 0; i < rule.Count; i++)
            Assert.That(forced[i], Is.EqualTo(rule[i]), $"{v}: {(i == 0 ? "output" : $"gradient of input {i - 1}")}");
    }

    [TestCase(null, null)]
    [TestCase("rule", null)]
    [TestCase(" V6 ", GemmVersion.Reg128x8Layout)]
    [TestCase("v5", GemmVersion.Reg128x8Prefetch)]
    [TestCase("v4", GemmVersion.Reg128x8Vec)]
    [TestCase("v3", GemmVersion.Reg64x4)]
    public void ParsesTheSwitch(string? value, GemmVersion? want) => Assert.That(CudaBackend.ParseSgemm(value), Is.EqualTo(want));

    [Test]
    public void RefusesAnUnknownVersionByName()
    {
        var e = Assert.Throws<ArgumentException>(() => CudaBackend.ParseSgemm("v7"))!;
        Assert.That(e.Message, Does.Contain("FVL_SGEMM").And.Contain("v7").And.Contain("v6"));
    }
}
