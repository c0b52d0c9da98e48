using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Under Tf32/Bf16 the CUDA backend rounds some tensor-core operands once before the launch (a convolution's weight, a GEMM
/// operand with many tiles on the other side; <see cref="CudaBackend.PreRoundOperands"/>) and the kernels store them without
/// rounding again. That must change nothing but the work: outputs and every gradient bit for bit equal to the same ops with
/// the switch off, and the extra launches exactly the roundings. The tile threshold is lowered to 1 so small shapes take the
/// path on the emulator (at the default 32, a batch-64 ResNet or BERT step takes it; the nano steps mostly do not).
/// </summary>
[Category("Cuda"), NonParallelizable]
public class PreRoundedOperandsTests : CudaTestBase
{
    private int _savedTiles;
    private bool _savedSwitch;

    [SetUp]
    public void LowerTheThreshold()
    {
        _savedTiles = CudaBackend.MinTilesToPreRound;
        _savedSwitch = CudaBackend.PreRoundOperands;
        CudaBackend.MinTilesToPreRound = 1;
    }

    [TearDown]
    public void Restore()
    {
        CudaBackend.MinTilesToPreRound = _savedTiles;
        CudaBackend.PreRoundOperands = _savedSwitch;
    }

    private static (List<int[]> Bits, long Launches) Run(Func<Tensor[], Tensor> f, Tensor[] cpu, Precision p, bool preRound)
    {
        CudaBackend.PreRoundOperands = preRound;
        return OutputAndGradientBits(f, cpu, p);
    }

    private static void SameBits(Func<Tensor[], Tensor> f, Tensor[] cpu, Precision p, int extraLaunches, string what)
    {
        var off = Run(f, cpu, p, preRound: false);
        var on = Run(f, cpu, p, preRound: true);
        Assert.That(on.Bits, Has.Count.EqualTo(off.Bits.Count));
        for (int i = 0; i < off.Bits.Count; i++)
            Assert.That(on.Bits[i], Is.EqualTo(off.Bits[i]), $"{what} {p}: {(i == 0 ? "output" : $"gradient of input {i - 1}")} changed bits");
        Assert.That(on.Launches - off.Launches, Is.EqualTo(extraLaunches), $"{what} {p}: one rounding launch per pre-rounded operand");
    }

    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void ConvolutionsRoundTheirWeightOnceWithTheSameBits(Precision p)
    {
        // forward and input gradient take the rounded weight when their GEMM has ≥ 64 · threshold columns (here 64): 3×3
        // pad 1 on [2, 5, 9, 7]: 126 columns each, 2 launches; the weight gradient rounds in the kernel
        SameBits(t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), [Rand([2, 5, 9, 7], 1), Rand([6, 5, 3, 3], 2), Rand([6], 3)], p, 2, "conv 3x3");
        // 1×1 stride 2 on [1, 4, 8, 8]: the forward has 16 columns (kept in the kernel), the input gradient 64 (pre-rounded)
        SameBits(t => Ops.Conv2d(t[0], t[1], null, new Conv2dParams(2, 2, 0, 0, 0, 0)), [Rand([1, 4, 8, 8], 4), Rand([130, 4, 1, 1], 5)], p, 1,
            "conv 1x1 stride 2, 130 output channels");
    }

    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void MatmulsRoundOperandsWithManyTilesOnTheOtherSideWithTheSameBits(Precision p)
    {
        // with the threshold at 1, each GEMM on a large tile (128×128 under Tf32, 128×64 under Bf16: Choose) rounds both
        // operands first: the forward and the two gradient GEMMs
        var cpu = new[] { Rand([130, 40], 6), Rand([40, 70], 7) };
        var tiles = new[] { (130, 70), (130, 40), (40, 70) }.Count(mn => TensorCoreGemm.Choose(CudaRuntime.Get(0).Accelerator, mn.Item1, mn.Item2, p) != TensorCoreTile.Tile64x32);
        Assert.That(tiles, Is.EqualTo(3), "every GEMM runs on a large tile");
        SameBits(t => t[0].Matmul(t[1]), cpu, p, 2 * tiles, "matmul 130x40x70");
        SameBits(t => Ops.Linear(t[0], t[1], t[2]), [Rand([3, 50, 33], 8), Rand([65, 33], 9), Rand([65], 10)], p,
            2 * new[] { (150, 65), (150, 33), (65, 33) }.Count(mn => TensorCoreGemm.Choose(CudaRuntime.Get(0).Accelerator, mn.Item1, mn.Item2, p) != TensorCoreTile.Tile64x32),
            "linear [3,50,33] x [65,33]^T");
    }

    [Test]
    public void AtTheDefaultThresholdSmallShapesAreNotPreRounded()
    {
        CudaBackend.MinTilesToPreRound = _savedTiles;
        Assert.That(CudaBackend.MinTilesToPreRound, Is.EqualTo(32));
        SameBits(t => Ops.Conv2d(t[0], t[1], null, 1, 1), [Rand([2, 5, 9, 7], 1), Rand([6, 5, 3, 3], 2)], Precision.Tf32, 0, "small conv");
        SameBits(t => t[0].Matmul(t[1]), [Rand([130, 40], 6), Rand([40, 70], 7)], Precision.Tf32, 0, "small matmul");
    }
}
