using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <see cref="Ops.DropoutAddLayerNorm"/> (one backend call forward, one backward) equals Ops.Dropout, an add and LayerNorm bit for
/// bit — output, the gradients of h, residual, weight and bias, and the generator's offset afterwards — on the CPU backend
/// (float32 and float64) and on the CUDA backend (emulated), for awkward shapes and every dropout mode; plus a float64
/// gradcheck and the emulator's launch counts.
/// </summary>
[Category("Cuda"), NonParallelizable]
public class DropoutAddLayerNormTests : CudaTestBase
{
    private sealed record Result(Tensor[] Tensors, ulong OffsetAfter);

    private static Result Run(Device dev, DType dt, int[] shape, double p, bool training, bool affine, bool fused)
    {
        int d = shape[^1];
        var h = Rand(shape, 11, dt, -3, 3).To(dev);
        var r = Rand(shape, 12, dt, -1, 2).To(dev);
        var w = affine ? Rand([d], 13, dt, 0.5, 1.5).To(dev) : null;
        var b = affine ? Rand([d], 14, dt, -1, 1).To(dev) : null;
        foreach (var t in new[] { h, r, w, b }) if (t is not null) t.RequiresGrad = true;
        var gen = new Generator(77);
        gen.Reserve(5);   // a non-zero starting offset
        Tensor y;
        if (fused) y = Ops.DropoutAddLayerNorm(h, r, p, training, gen, w, b, 1e-5);
        else
        {
            using var dr = Ops.Dropout(h, p, training, gen);
            using var s = dr + r;
            y = s.LayerNorm(w, b, 1e-5);
        }
        using var gy = Rand(shape, 15, dt, 0.5, 1.5).To(dev);
        using (var prod = y * gy) using (var loss = prod.Sum()) loss.Backward();
        var outs = new List<Tensor> { y.To(Device.Cpu), h.Grad!.To(Device.Cpu), r.Grad!.To(Device.Cpu) };
        if (affine) { outs.Add(w!.Grad!.To(Device.Cpu)); outs.Add(b!.Grad!.To(Device.Cpu)); }
        return new([.. outs], gen.Offset);
    }

    private static IEnumerable<(string, Device, DType)> Backends(bool withF64)
    {
        yield return ("cpu f32", Device.Cpu, DType.Float32);
        if (withF64) yield return ("cpu f64", Device.Cpu, DType.Float64);
        yield return ("cuda", Gpu, DType.Float32);
    }

    // D odd / not a multiple of the group or of 4 (Philox blocks straddle rows), one row, > 64 rows (two gw/gb partial blocks).
    [TestCase(new[] { 1, 37 }, 0.1, true, true)]
    [TestCase(new[] { 5, 33 }, 0.5, true, true)]
    [TestCase(new[] { 70, 13 }, 0.1, true, true)]
    [TestCase(new[] { 2, 3, 33 }, 0.1, true, false)]
    [TestCase(new[] { 5, 33 }, 0.0, true, true)]
    [TestCase(new[] { 5, 33 }, 0.1, false, true)]
    [TestCase(new[] { 4, 9 }, 1.0, true, true)]
    public void FusedIsBitIdenticalToComposed(int[] shape, double p, bool training, bool affine)
    {
        using var scope = Tensor.Scope();
        foreach (var (name, dev, dt) in Backends(withF64: true))
        {
            var f = Run(dev, dt, shape, p, training, affine, fused: true);
            var c = Run(dev, dt, shape, p, training, affine, fused: false);
            string[] what = ["y", "grad h", "grad residual", "grad weight", "grad bias"];
            for (int i = 0; i < f.Tensors.Length; i++)
                if (dt == DType.Float32) AssertBitEqual<float>(f.Tensors[i], c.Tensors[i], $"{name} {what[i]}");
                else AssertBitEqual<double>(f.Tensors[i], c.Tensors[i], $"{name} {what[i]}");
            Assert.That(f.OffsetAfter, Is.EqualTo(c.OffsetAfter), $"{name}: the generator advances as Ops.Dropout's does");
            bool draws = training && p > 0;
            Assert.That(f.OffsetAfter, draws ? Is.GreaterThan(2UL) : Is.EqualTo(2UL), $"{name}: draws only in training with p > 0");
            if (draws && p < 1)
            {
                // the dropout really acts: some of h's gradient is exactly zero (dropped) and some is not
                var gh = f.Tensors[1].ToArray<double>();
                Assert.That(gh.Count(v => v == 0), Is.GreaterThan(0), $"{name}: dropped elements");
                Assert.That(gh.Count(v => v != 0), Is.GreaterThan(0), $"{name}: kept elements");
            }
        }
    }

    [Test]
    public void DeviceMatchesCpu()
    {
        using var scope = Tensor.Scope();
        var cpu = Run(Device.Cpu, DType.Float32, [6, 50], 0.1, true, true, fused: true);
        var dev = Run(Gpu, DType.Float32, [6, 50], 0.1, true, true, fused: true);
        // the same dropout mask: exactly the same zeros in h's gradient
        var gc = cpu.Tensors[1].ToArray<float>(); var gd = dev.Tensors[1].ToArray<float>();
        for (int i = 0; i < gc.Length; i++) Assert.That(gd[i] == 0, Is.EqualTo(gc[i] == 0), $"mask element {i}");
        for (int i = 0; i < cpu.Tensors.Length; i++) OpCheck.AssertClose(dev.Tensors[i], cpu.Tensors[i], 1e-4, 1e-5, $"tensor {i}");
    }

    [Test]
    public void GradCheckFloat64()
    {
        using var scope = Tensor.Scope();
        var h = Rand([3, 7], 21, DType.Float64); var r = Rand([3, 7], 22, DType.Float64);
        var w = Rand([7], 23, DType.Float64, 0.5, 1.5); var b = Rand([7], 24, DType.Float64);
        foreach (var t in new[] { h, r, w, b }) t.RequiresGrad = true;
        // a fresh generator per call: the same mask every evaluation
        OpCheck.GradCheck(t => Ops.DropoutAddLayerNorm(t[0], t[1], 0.3, true, new Generator(5), t[2], t[3], 1e-5), [h, r, w, b], what: "dropout_add_layer_norm");
    }

    [Test]
    public void OneLaunchForwardAndThreeBackward()
    {
        using var scope = Tensor.Scope();
        var rt = CudaRuntime.Get(0);
        var h = Rand([7, 33], 31).To(Gpu); var r = Rand([7, 33], 32).To(Gpu);
        var w = Rand([33], 33).To(Gpu); var b = Rand([33], 34).To(Gpu);
        foreach (var t in new[] { h, r, w, b }) t.RequiresGrad = true;
        var c0 = rt.Counters;
        var y = Ops.DropoutAddLayerNorm(h, r, 0.1, true, new Generator(3), w, b, 1e-12);
        Assert.That((rt.Counters - c0).KernelLaunches, Is.EqualTo(1), "forward: dropout, add and layer norm in one kernel");
        var gy = Rand([7, 33], 35).To(Gpu);
        var c1 = rt.Counters;
        y.Backward(gy);
        // the fused row kernel (gs and gh) + the two deterministic gw/gb kernels; composed it is 3 + the dropout backward
        Assert.That((rt.Counters - c1).KernelLaunches, Is.EqualTo(3), "backward");
    }

    [Test]
    public void BadInputsNameTheShapes()
    {
        using var scope = Tensor.Scope();
        var h = Rand([3, 8], 1); var r = Rand([3, 9], 2);
        var ex = Assert.Throws<ArgumentException>(() => Ops.DropoutAddLayerNorm(h, r, 0.1, true, null, null, null))!;
        Assert.That(ex.Message, Does.Contain("[3, 8]").And.Contain("[3, 9]"));
        Assert.Throws<ArgumentException>(() => Ops.DropoutAddLayerNorm(h, h, 1.5, true, null, null, null));
    }
}
