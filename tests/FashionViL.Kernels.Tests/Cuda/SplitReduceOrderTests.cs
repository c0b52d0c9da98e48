using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The split-K reductions (the GEMM's <see cref="GemmSplitK.ReduceKernel"/>, the convolution weight gradient's
/// <see cref="ConvKernels.SplitReduceKernel"/>) load four partials before adding them (issue 7) but must still add them
/// in split order from +0, since that order is what makes a split GEMM deterministic and equal to its digests. Partials
/// spread over sixteen decades make almost any other order, or a dropped or repeated term, change the float sum: every
/// output must equal the sequential float sum bit for bit, for 1 to 11 splits (whole groups of four and every tail).
/// </summary>
[TestFixture, Category("Cuda")]
public class SplitReduceOrderTests() : EmulatorKernelTestBase(assertions: true)
{
    private const int Count = 37;

    private static float[] Partials(int splits, int seed)
    {
        var r = new Random(seed);
        var ws = new float[splits * Count];
        for (int i = 0; i < ws.Length; i++) ws[i] = (float)((r.NextDouble() - 0.5) * Math.Pow(10, r.NextDouble() * 16 - 8));
        return ws;
    }

    private static float[] InOrder(float[] ws, int splits)
    {
        var want = new float[Count];
        for (int i = 0; i < Count; i++)
        {
            float acc = 0f;
            for (int z = 0; z < splits; z++) acc += ws[z * Count + i];
            want[i] = acc;
        }
        return want;
    }

    private static void AssertBits(float[] got, float[] want, string what)
    {
        for (int i = 0; i < Count; i++)
            Assert.That(BitConverter.SingleToInt32Bits(got[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(want[i])),
                $"{what}: output {i} is {got[i]}, the in-order sum is {want[i]}");
    }

    [Test]
    public void ConvolutionSplitSumsAddThePartialsInOrder([Range(1, 11)] int splits)
    {
        var ws = Partials(splits, 100 + splits);
        using var dws = Up(Acc, ws);
        using var o = Poisoned(Acc, Count);
        var k = Acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(ConvKernels.SplitReduceKernel);
        k(Acc.DefaultStream, new KernelConfig(3, 2), dws.View, o.View, Count, splits);
        Acc.Synchronize();
        AssertBits(o.GetAsArray1D(), InOrder(ws, splits), $"conv split reduce, {splits} splits");
    }

    [Test]
    public void GemmSplitSumsAddThePartialsInOrder([Range(1, 11)] int splits)
    {
        var ws = Partials(splits, 200 + splits);
        using var dws = Up(Acc, ws);
        using var c = Poisoned(Acc, Count);
        var s = new GemmShape { M = 1, N = Count, K = splits, Ldc = Count, Alpha = 1f, Beta = 0f };
        var k = Acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmShape>(GemmSplitK.ReduceKernel);
        k(Acc.DefaultStream, new KernelConfig(3, 2), dws.View, c.View, c.View, s);
        Acc.Synchronize();
        AssertBits(c.GetAsArray1D(), InOrder(ws, splits), $"gemm split reduce, {splits} splits");
    }
}
