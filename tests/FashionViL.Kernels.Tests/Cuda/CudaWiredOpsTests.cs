using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The contract members backed by the GEMM and row kernels, called through the differentiable ops on
/// Device.Cuda(0) (emulated), against the same ops on the CPU; and a small model trained on both backends.
/// </summary>
[Category("Cuda")]
public class CudaWiredOpsTests : CudaTestBase
{
    /// <summary>f on CPU inputs and on device copies; values and the gradients of every input must agree.</summary>
    private static void SameOnBoth(Func<Tensor[], Tensor> f, Tensor[] cpuInputs, double rtol, double atol, string what)
    {
        using var scope = Tensor.Scope();
        var dev = cpuInputs.Select(t => { var d = Up(t); d.RequiresGrad = t.RequiresGrad; return d; }).ToArray();
        var want = f(cpuInputs); var got = f(dev);
        AssertSame(got, want, rtol, atol, what);
        using var w = Rand(want.Shape, 77, DType.Float32, 0.5, 1.5);
        using var wd = Up(w);
        (want * w).Sum().Backward();
        (got * wd).Sum().Backward();
        for (int i = 0; i < cpuInputs.Length; i++)
        {
            if (!cpuInputs[i].RequiresGrad) continue;
            AssertSame(dev[i].Grad!, cpuInputs[i].Grad!, rtol, atol, $"{what}: grad of input {i}");
            cpuInputs[i].Grad = null;
        }
    }

    private static Tensor P(int[] shape, ulong seed, double lo = -1, double hi = 1)
    {
        var t = Rand(shape, seed, DType.Float32, lo, hi);
        t.RequiresGrad = true;
        return t;
    }

    [TestCase(1, 1, 1)]
    [TestCase(5, 7, 3)]
    [TestCase(33, 17, 65)]
    public void MatmulAndLinear(int m, int k, int n)
    {
        SameOnBoth(t => t[0].Matmul(t[1]), [P([m, k], 1), P([k, n], 2)], 1e-5, 1e-5, $"matmul {m}x{k}x{n}");
        SameOnBoth(t => Ops.Linear(t[0], t[1], t[2]), [P([2, m, k], 3), P([n, k], 4), P([n], 5)], 1e-5, 1e-5, "linear");
        SameOnBoth(t => t[0].T.Matmul(t[1].T), [P([k, m], 6), P([n, k], 7)], 1e-5, 1e-5, "transposed views");
        SameOnBoth(t => Ops.Bmm(t[0], t[1]), [P([3, m, k], 8), P([3, k, n], 9)], 1e-5, 1e-5, "bmm");
    }

    [Test]
    public void LayerNormSoftmaxAndCrossEntropy()
    {
        SameOnBoth(t => t[0].LayerNorm(t[1], t[2], 1e-12), [P([4, 3, 33], 10), P([33], 11, 0.5, 1.5), P([33], 12)], 1e-4, 1e-5, "layer_norm");
        SameOnBoth(t => t[0].Softmax(-1), [P([5, 17], 13, -3, 3)], 1e-5, 1e-6, "softmax");
        SameOnBoth(t => t[0].LogSoftmax(1), [P([2, 9, 4], 14, -3, 3)], 1e-5, 1e-5, "log_softmax over a middle dim");
        using var labels = Tensor.FromArray(new long[] { 3, -100, 0, 6, 6 }, 5);
        using var dl = Up(labels);
        var x = P([5, 7], 15, -3, 3);
        using var scope = Tensor.Scope();
        var want = Ops.CrossEntropy(x, labels);
        var xd = Up(x); xd.RequiresGrad = true;
        var got = Ops.CrossEntropy(xd, dl);
        AssertSame(got, want, 1e-5, 1e-6, "cross_entropy with ignore_index");
        want.Backward(); got.Backward();
        AssertSame(xd.Grad!, x.Grad!, 1e-5, 1e-6, "cross_entropy grad");
    }

    [TestCase(0.0)]
    [TestCase(0.2)]
    public void AttentionWithPaddingMaskAndDropout(double p)
    {
        var m = new float[2 * 7];
        for (int j = 4; j < 7; j++) m[7 + j] = -10000f;    // second sample: last three keys are padding
        using var mask = Tensor.FromArray(m, 2, 1, 1, 7);
        using var md = Up(mask);
        // A fresh generator with the same seed inside f: both backends draw the same dropout stream.
        SameOnBoth(t => Ops.Attention(t[0], t[1], t[2], t[0].Device.IsCpu ? mask : md, 0.125, p, true, new Generator(3)),
            [P([2, 3, 5, 64], 20), P([2, 3, 7, 64], 21), P([2, 3, 7, 64], 22)], 1e-4, 1e-5, $"attention p={p}");
    }

    /// <summary>
    /// Heads wider than the fused kernel's <see cref="FashionViL.Kernels.Cuda.AttentionKernels.DMax"/> (the VQ-VAE's single
    /// 512-wide head on a GPU) take the composed path (GEMM, mask add, softmax, Philox dropout, GEMM) and must agree with the
    /// CPU's fused attention: contiguous heads, and the strided heads of a [B, L, H·D] projection (H = 2: copied; H = 1: read
    /// in place), with a padding mask and dropout.
    /// </summary>
    [TestCase(0.0)]
    [TestCase(0.2)]
    public void AttentionWithHeadsWiderThanTheFusedKernel(double p)
    {
        int d = FashionViL.Kernels.Cuda.AttentionKernels.DMax + 8;
        var m = new float[2 * 7];
        for (int j = 4; j < 7; j++) m[7 + j] = -10000f;
        using var mask = Tensor.FromArray(m, 2, 1, 1, 7);
        using var md = Up(mask);
        Tensor M(Tensor t) => t.Device.IsCpu ? mask : md;
        SameOnBoth(t => Ops.Attention(t[0], t[1], t[2], M(t[0]), 0.09, p, true, new Generator(3)),
            [P([2, 3, 5, d], 30), P([2, 3, 7, d], 31), P([2, 3, 7, d], 32)], 1e-4, 1e-5, $"attention D={d} p={p}");
        foreach (int h in new[] { 2, 1 })
        {
            Tensor Heads(Tensor x, int rows) => x.Reshape(2, rows, h, d).Permute(0, 2, 1, 3);
            SameOnBoth(t => Ops.Attention(Heads(t[0], 5), Heads(t[1], 7), Heads(t[2], 7), M(t[0]), 0.09, p, true, new Generator(4)),
                [P([2, 5, h * d], 33), P([2, 7, h * d], 34), P([2, 7, h * d], 35)], 1e-4, 1e-5, $"attention strided heads H={h} D={d} p={p}");
        }
    }

    /// <summary>The composed path checks what the fused kernel checks: a probs buffer of the wrong shape and a dropout
    /// probability outside [0, 1] are errors naming them, not an overrun or a silent no-dropout.</summary>
    [Test]
    public void WideHeadAttentionRejectsAWrongProbsShapeAndABadProbability()
    {
        int d = FashionViL.Kernels.Cuda.AttentionKernels.DMax + 8;
        using var scope = Tensor.Scope();
        var q = Up(Rand([1, 2, 5, d], 50)); var k = Up(Rand([1, 2, 7, d], 51)); var v = Up(Rand([1, 2, 7, d], 52));
        var o = Tensor.Empty([1, 2, 5, d], DType.Float32, Gpu);
        var small = Tensor.Empty([1, 2, 5, 6], DType.Float32, Gpu);
        var e = Assert.Throws<ArgumentException>(() => Dev.AttentionForward(q, k, v, null, 0.1, 0, 1, 0, o, small))!;
        Assert.That(e.Message, Does.Contain("probs [1, 2, 5, 6]").And.Contain("[1,2,5,7]"));
        e = Assert.Throws<ArgumentException>(() => Dev.AttentionForward(q, k, v, null, 0.1, double.NaN, 1, 0, o, null))!;
        Assert.That(e.Message, Does.Contain("dropout probability NaN"));
        var probs = Tensor.Empty([1, 2, 5, 7], DType.Float32, Gpu);
        Dev.AttentionForward(q, k, v, null, 0.1, 0, 1, 0, o, probs);
        var g = new[] { Tensor.Empty([1, 2, 5, d], DType.Float32, Gpu), Tensor.Empty([1, 2, 7, d], DType.Float32, Gpu), Tensor.Empty([1, 2, 7, d], DType.Float32, Gpu) };
        e = Assert.Throws<ArgumentException>(() => Dev.AttentionBackward(q, k, v, probs, 0.1, 1.5, 1, 0, o, g[0], g[1], g[2]))!;
        Assert.That(e.Message, Does.Contain("dropout probability 1.5"));
    }

    /// <summary>FVL_ATTENTION=composed (<see cref="FashionViL.Kernels.Cuda.CudaBackend.ComposedAttention"/>) sends BERT's
    /// 64-wide heads down the composed path too: it must agree with the CPU, and must not be the fused kernel's bits.</summary>
    [Test, NonParallelizable]
    public void ComposedAttentionSwitchTakesTheComposedPathForNarrowHeads()
    {
        Tensor[] In() => [P([2, 3, 5, 64], 40), P([2, 3, 7, 64], 41), P([2, 3, 7, 64], 42)];
        Func<Tensor[], Tensor> f = t => Ops.Attention(t[0], t[1], t[2], null, 0.125, 0.1, true, new Generator(5));
        var fused = OutputAndGradientBits(f, In(), Precision.Fp32).Bits;
        try
        {
            FashionViL.Kernels.Cuda.CudaBackend.ComposedAttention = true;
            SameOnBoth(f, In(), 1e-4, 1e-5, "composed attention, D = 64");
            var composed = OutputAndGradientBits(f, In(), Precision.Fp32).Bits;
            Assert.That(composed.Zip(fused).Any(p => !p.First.SequenceEqual(p.Second)), Is.True, "the composed path ran (other sum orders)");
        }
        finally { FashionViL.Kernels.Cuda.CudaBackend.ComposedAttention = false; }
        Assert.Throws<ArgumentException>(() => FashionViL.Kernels.Cuda.CudaBackend.ParseAttentionPath("flash"));
        Assert.That(FashionViL.Kernels.Cuda.CudaBackend.ParseAttentionPath(" Composed "), Is.True);
        Assert.That(FashionViL.Kernels.Cuda.CudaBackend.ParseAttentionPath(null), Is.False);
    }

    [Test]
    public void GpuCheckPassesEveryOpTheDeviceHasOnTheEmulator()
    {
        var results = FashionViL.GpuCheck.Checks.Run(Gpu);
        Assert.That(results.Where(r => r.Failed).Select(r => $"{r.Op}: {r.Detail}"), Is.Empty);
        Assert.That(results.Count(r => r.Status == "PASS"), Is.GreaterThanOrEqualTo(35));
        // The metric itself: NaN where the reference has none, or a shape mismatch, is an infinite error.
        using var a = Tensor.FromArray(new float[] { 1, float.NaN }, 2);
        using var b = Tensor.FromArray(new float[] { 1, 2 }, 2);
        Assert.That(FashionViL.GpuCheck.Checks.RelError(a, b), Is.EqualTo(double.PositiveInfinity));
        Assert.That(FashionViL.GpuCheck.Checks.RelError(b, Tensor.FromArray(new float[] { 1, 2.5f }, 2)), Is.EqualTo(0.2).Within(1e-7));
    }

    [Test]
    public void FloatSixtyFourIsRefusedWithAClearMessage()
    {
        using var a = Up(Rand([2, 2], 1, DType.Float64));
        var ex = Assert.Throws<NotSupportedException>(() => a.Matmul(a))!;
        Assert.That(ex.Message, Does.Contain("matmul").And.Contain("float64"));
    }

    /// <summary>Issue 3: a two-layer MLP trains 50 steps (AdamW) on both backends from the same seed and ends within 1e-4.</summary>
    [Test]
    public void TwoLayerMlpTrainsTheSameOnBothBackends()
    {
        (double Loss, float[][] Params) Train(Device dev)
        {
            var g = new Generator(5);
            var ps = new[] { g.Normal([16, 12], 0, 0.3), Tensor.Zeros([16]), g.Normal([5, 16], 0, 0.3), Tensor.Zeros([5]) }
                .Select(p => { var d = p.To(dev); p.Dispose(); d.RequiresGrad = true; return d; }).ToArray();
            var m = ps.Select(p => Tensor.ZerosLike(p)).ToArray();
            var v = ps.Select(p => Tensor.ZerosLike(p)).ToArray();
            using var x0 = g.Normal([32, 12]);
            using var x = x0.To(dev);
            using var y0 = x0.Matmul(g.Normal([12, 5])).ArgMax(1);
            using var y = y0.To(dev);
            var backend = Backends.Get(dev);
            double loss = 0;
            for (int step = 1; step <= 50; step++)
            {
                using var scope = Tensor.Scope();
                var h = Ops.Linear(x, ps[0], ps[1]).Relu();
                var l = Ops.CrossEntropy(Ops.Linear(h, ps[2], ps[3]), y);
                foreach (var p in ps) p.Grad = null;
                l.Backward();
                for (int i = 0; i < ps.Length; i++)
                    backend.AdamWStep(ps[i], ps[i].Grad!, m[i], v[i], new AdamWParams(1e-2, 0.9, 0.999, 1e-8, 1e-4, step));
                loss = l.Item();
            }
            var result = (loss, ps.Select(p => p.ToArray<float>()).ToArray());
            foreach (var t in ps.Concat(m).Concat(v)) { t.Grad = null; t.Dispose(); }
            return result;
        }
        var cpu = Train(Device.Cpu);
        var gpu = Train(Gpu);
        Assert.That(cpu.Loss, Is.LessThan(1.0), "the model should learn");
        Assert.That(Math.Abs(gpu.Loss - cpu.Loss), Is.LessThanOrEqualTo(1e-4 * Math.Abs(cpu.Loss)), $"final loss cpu {cpu.Loss} vs cuda {gpu.Loss}");
        for (int i = 0; i < cpu.Params.Length; i++)
            OpCheck.AssertClose(gpu.Params[i].Select(f => (double)f).ToArray(), cpu.Params[i].Select(f => (double)f).ToArray(), 1e-4, 1e-5, $"parameter {i} after 50 steps");
    }

    /// <summary>Issue 7: batch norm with the residual add and relu fused, through Ops on the device, against the CPU
    /// (training: values and gradients of x, gamma, beta, residual; eval with frozen gamma/beta).</summary>
    [Test]
    public void FusedBatchNormAddRelu()
    {
        var rm = Rand([5], 20, DType.Float32, -0.5, 0.5); var rv = Rand([5], 21, DType.Float32, 0.5, 2);
        using var drm = Up(rm); using var drv = Up(rv);
        SameOnBoth(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, residual: t[3], relu: true),
            [P([3, 5, 3, 7], 16), P([5], 17, 0.5, 1.5), P([5], 18), P([3, 5, 3, 7], 19)], 1e-4, 1e-5, "batch_norm_add_relu train");
        SameOnBoth(t => Ops.BatchNorm2d(t[0], t[1], t[2], null, null, true, relu: true),
            [P([2, 5, 1, 3], 22), P([5], 23, 0.5, 1.5), P([5], 24)], 1e-4, 1e-5, "batch_norm_relu train");
        using var w = Rand([5], 25, DType.Float32, 0.5, 1.5); using var b = Rand([5], 26, DType.Float32);
        using var dw = Up(w); using var db = Up(b);
        SameOnBoth(t => t[0].Device.IsCpu ? Ops.BatchNorm2d(t[0], w, b, rm, rv, false, residual: t[1], relu: true)
                : Ops.BatchNorm2d(t[0], dw, db, drm, drv, false, residual: t[1], relu: true),
            [P([3, 5, 2, 2], 27), P([3, 5, 2, 2], 28)], 1e-4, 1e-5, "batch_norm_add_relu eval, frozen affine");
        rm.Dispose(); rv.Dispose();
    }

    /// <summary>Issue 3: a conv + BN + ReLU block (then pool and a linear head) trains 50 steps on both backends and ends within 1e-4.</summary>
    [Test]
    public void ConvBnReluBlockTrainsTheSameOnBothBackends()
    {
        (double Loss, float[][] State) Train(Device dev)
        {
            var g = new Generator(8);
            Tensor On(Tensor t) { var d = t.To(dev); t.Dispose(); return d; }
            var ps = new[] { g.Normal([8, 3, 3, 3], 0, 0.3), Tensor.Ones([8]), Tensor.Zeros([8]), g.Normal([3, 8], 0, 0.3), Tensor.Zeros([3]) }
                .Select(p => { var d = On(p); d.RequiresGrad = true; return d; }).ToArray();
            var runMean = On(Tensor.Zeros([8])); var runVar = On(Tensor.Ones([8]));
            var m = ps.Select(p => Tensor.ZerosLike(p)).ToArray();
            var v = ps.Select(p => Tensor.ZerosLike(p)).ToArray();
            using var x0 = g.Normal([6, 3, 9, 7]);
            using var x = x0.To(dev);
            using var y0 = Tensor.FromArray(new long[] { 0, 1, 2, 2, 1, 0 }, 6);
            using var y = y0.To(dev);
            var backend = Backends.Get(dev);
            double loss = 0;
            for (int step = 1; step <= 50; step++)
            {
                using var scope = Tensor.Scope();
                var h = Ops.Conv2d(x, ps[0], null, 1, 1);
                h = Ops.BatchNorm2d(h, ps[1], ps[2], runMean, runVar, training: true).Relu();
                var pooled = Ops.AdaptiveAvgPool2d(h, 1, 1).Flatten(1);
                var l = Ops.CrossEntropy(Ops.Linear(pooled, ps[3], ps[4]), y);
                foreach (var p in ps) p.Grad = null;
                l.Backward();
                for (int i = 0; i < ps.Length; i++)
                    backend.AdamWStep(ps[i], ps[i].Grad!, m[i], v[i], new AdamWParams(1e-2, 0.9, 0.999, 1e-8, 1e-4, step));
                loss = l.Item();
            }
            var state = ps.Append(runMean).Append(runVar).Select(p => p.ToArray<float>()).ToArray();
            foreach (var t in ps.Concat(m).Concat(v).Append(runMean).Append(runVar)) { t.Grad = null; t.Dispose(); }
            return (loss, state);
        }
        var cpu = Train(Device.Cpu);
        var gpu = Train(Gpu);
        Assert.That(cpu.Loss, Is.LessThan(Math.Log(3) * 0.8), "the block should learn");
        Assert.That(Math.Abs(gpu.Loss - cpu.Loss), Is.LessThanOrEqualTo(1e-4 * Math.Abs(cpu.Loss)), $"final loss cpu {cpu.Loss} vs cuda {gpu.Loss}");
        for (int i = 0; i < cpu.State.Length; i++)
            OpCheck.AssertClose(gpu.State[i].Select(f => (double)f).ToArray(), cpu.State[i].Select(f => (double)f).ToArray(), 1e-4, 1e-5, $"parameter/buffer {i} after 50 steps");
    }
}
