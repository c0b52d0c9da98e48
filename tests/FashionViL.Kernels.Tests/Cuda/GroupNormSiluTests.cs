namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// GroupNormForward with the fused silu epilogue equals the norm followed by the unary Silu bit for bit on the CPU backend
/// (float32 and float64) and on the CUDA backend (emulated), with and without the affine parameters.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class GroupNormSiluTests : CudaTestBase
{
    private static Tensor[] Run(IBackend be, Device dev, Tensor x, Tensor? w, Tensor? b, int groups, bool fused)
    {
        var xs = x.To(dev);
        var ws = w?.To(dev); var bs = b?.To(dev);
        int n = x.Size(0);
        var y = Tensor.Empty(x.Shape, x.DType, dev);
        var mean = Tensor.Empty([n, groups], x.DType, dev); var rstd = Tensor.Empty([n, groups], x.DType, dev);
        if (fused) be.GroupNormForward(xs, ws, bs, groups, 1e-6, y, mean, rstd, silu: true);
        else
        {
            var normed = Tensor.Empty(x.Shape, x.DType, dev);
            be.GroupNormForward(xs, ws, bs, groups, 1e-6, normed, mean, rstd);
            be.Unary(UnaryOp.Silu, normed, y);
        }
        return [y.To(Device.Cpu), mean.To(Device.Cpu), rstd.To(Device.Cpu)];
    }

    [TestCase(DType.Float32, true)]
    [TestCase(DType.Float32, false)]
    [TestCase(DType.Float64, true)]
    public void FusedSiluIsBitIdenticalToNormThenSilu(DType dt, bool affine)
    {
        using var scope = Tensor.Scope();
        var x = Rand([3, 8, 5, 7], 61, dt, -3, 4);
        var w = affine ? Rand([8], 62, dt, 0.5, 1.5) : null;
        var b = affine ? Rand([8], 63, dt, -1, 1) : null;
        var backends = new List<(string, IBackend, Device)> { ("cpu", Cpu, Device.Cpu) };
        if (dt == DType.Float32) backends.Add(("cuda", Dev, Gpu));
        foreach (var (name, be, dev) in backends)
        {
            var fused = Run(be, dev, x, w, b, 4, fused: true);
            var composed = Run(be, dev, x, w, b, 4, fused: false);
            string[] what = ["y", "mean", "rstd"];
            for (int i = 0; i < 3; i++)
                if (dt == DType.Float32) AssertBitEqual<float>(fused[i], composed[i], $"{name} {what[i]}");
                else AssertBitEqual<double>(fused[i], composed[i], $"{name} {what[i]}");
            var y = fused[0].ToArray<double>();
            Assert.That(y.Count(v => v < 0), Is.GreaterThan(0), "silu's negative lobe is exercised");
        }
    }
}
