using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// CudaBackend.MaxPool2dBackward with the forward's geometry runs the parallel gather (one thread per input element), without
/// it the plane-serial scatter; both equal the CPU backend bit for bit on indices from the forward.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class CudaMaxPoolBackwardTests : CudaTestBase
{
    [TestCase(3, 2, 1)]   // the ResNet stem's pool: overlapping windows, so an input can be the max of several outputs
    [TestCase(2, 2, 0)]
    [TestCase(3, 1, 1)]
    public void BothFormsEqualTheCpuBackendBitForBit(int k, int s, int pad)
    {
        using var scope = Tensor.Scope();
        var p = new Pool2dParams(k, k, s, s, pad, pad);
        // few distinct values: ties and inputs that win several windows are common
        var x = Rand([2, 3, 9, 8], 21, lo: -2, hi: 2);
        x = Tensor.FromArray(x.ToArray<float>().Select(v => MathF.Round(v * 2) / 2).ToArray(), 2, 3, 9, 8);
        int ho = p.OutH(9), wo = p.OutW(8);
        var y = Tensor.Empty([2, 3, ho, wo]); var idx = Tensor.Empty([2, 3, ho, wo], DType.Int64);
        Cpu.MaxPool2dForward(x, y, idx, p);
        var gy = Rand([2, 3, ho, wo], 22);
        var want = Tensor.Empty([2, 3, 9, 8]);
        Cpu.MaxPool2dBackward(gy, idx, want);
        var counts = idx.ToArray<long>().GroupBy(v => v).Max(g => g.Count());
        if (s < k) Assert.That(counts, Is.GreaterThan(1), "some input is the max of several windows");
        foreach (var geometry in new Pool2dParams?[] { p, null })
        {
            var got = Tensor.Full([2, 3, 9, 8], double.NaN, DType.Float32, Gpu);
            Dev.MaxPool2dBackward(Up(gy), Up(idx), got, geometry);
            AssertBitEqual<float>(got.To(Device.Cpu), want, $"{(geometry is null ? "scatter" : "gather")} {p}");
        }
    }

    [Test]
    public void TheGeometryChoosesTheGather()
    {
        using var scope = Tensor.Scope();
        // 2×2 windows, stride 2 on a 4×4 plane; output 0's index names input 15 (outside its window): the scatter adds it
        // there, the gather only looks inside each input's own windows and ignores it. (The autograd op always passes
        // indices from the forward, where both agree; this only tells the two kernels apart.)
        var p = new Pool2dParams(2, 2, 2, 2, 0, 0);
        var gy = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, 1, 1, 2, 2);
        var idx = Tensor.FromArray(new long[] { 15, 2, 8, 10 }, 1, 1, 2, 2);
        float At(Tensor g, int i) => g.To(Device.Cpu).ToArray<float>()[i];
        var scatter = Tensor.Empty([1, 1, 4, 4], DType.Float32, Gpu);
        Dev.MaxPool2dBackward(Up(gy), Up(idx), scatter);
        var gather = Tensor.Empty([1, 1, 4, 4], DType.Float32, Gpu);
        Dev.MaxPool2dBackward(Up(gy), Up(idx), gather, p);
        Assert.That(At(scatter, 15), Is.EqualTo(1f), "scatter");
        Assert.That(At(gather, 15), Is.EqualTo(0f), "gather");
        Assert.That(At(gather, 2), Is.EqualTo(2f));
    }

    [Test]
    public void AGeometryThatDoesNotFitTheShapesIsRefused()
    {
        using var scope = Tensor.Scope();
        var gy = Tensor.Zeros([1, 1, 2, 2]); var idx = Tensor.Zeros([1, 1, 2, 2], DType.Int64); var gx = Tensor.Empty([1, 1, 4, 4]);
        var fits = new Pool2dParams(3, 3, 1, 1, 0, 0);   // 4×4 → 2×2 with 3×3 stride 1: accepted; stride 2 would give 1×1
        Cpu.MaxPool2dBackward(gy, idx, gx, fits);
        var wrong = new Pool2dParams(3, 3, 2, 2, 0, 0);
        var e = Assert.Throws<ArgumentException>(() => Cpu.MaxPool2dBackward(gy, idx, gx, wrong))!;
        Assert.That(e.Message, Does.Contain("1×1 outputs"));
        Assert.Throws<ArgumentException>(() => Dev.MaxPool2dBackward(Up(gy), Up(idx), Tensor.Empty([1, 1, 4, 4], DType.Float32, Gpu), wrong));
    }
}
