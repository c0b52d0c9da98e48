using FashionViL.Autograd;

namespace FashionViL.Autograd.Tests;

/// <summary>A training loop written without a single Dispose keeps device memory flat.</summary>
public class MemoryTests
{
    [Test]
    public void ThousandMlpTrainingStepsKeepLiveBytesFlat()
    {
        // Other tests' undisposed tensors are released by finalizers; let that happen before measuring, so the
        // samples below see only this loop. (No collection happens during the loop: a leak would show.)
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        var gen = new Generator(7);
        // Parameters live outside any scope; the user never disposes anything in the loop.
        var w1 = gen.Normal([32, 16], 0, 0.3); var b1 = Tensor.Zeros([32]);
        var w2 = gen.Normal([4, 32], 0, 0.3); var b2 = Tensor.Zeros([4]);
        var ps = new[] { w1, b1, w2, b2 };
        foreach (var p in ps) p.RequiresGrad = true;
        var x = gen.Normal([64, 16]);
        // Labels a small MLP can learn: the argmax of a fixed random projection.
        var labels = x.Matmul(gen.Normal([16, 4])).ArgMax(1);
        var momentum = ps.Select(p => Tensor.ZerosLike(p)).ToArray();
        var cpu = Backends.Get(Device.Cpu);

        long liveAfterWarmup = 0;
        var liveSamples = new List<long>();
        double firstLoss = 0, lastLoss = 0;
        for (int step = 0; step < 1000; step++)
        {
            using (Tensor.Scope())
            {
                var h = Ops.Linear(x, w1, b1).Relu();
                var logits = Ops.Linear(h, w2, b2);
                var loss = Ops.CrossEntropy(logits, labels);
                foreach (var p in ps) p.Grad = null;   // zero_grad: frees last step's gradient buffers
                loss.Backward();
                for (int i = 0; i < ps.Length; i++)
                    cpu.SgdStep(ps[i], ps[i].Grad!, momentum[i], new SgdParams(0.1, 0.9, 0, 0, false), step == 0);
                if (step == 0) firstLoss = loss.Item();
                lastLoss = loss.Item();
            }
            long live = Backends.MemoryStats(Device.Cpu).Live;
            if (step == 9) liveAfterWarmup = live;
            if (step >= 9 && step % 50 == 49) liveSamples.Add(live);
        }
        Assert.That(liveSamples, Has.Count.EqualTo(20));
        Assert.That(liveSamples, Is.All.EqualTo(liveAfterWarmup), "live bytes must not grow over 1,000 steps");
        Assert.That(lastLoss, Is.LessThan(firstLoss * 0.5), $"the MLP should learn (loss {firstLoss:F3} → {lastLoss:F3})");
    }

    /// <summary>Attention keeps q, k, v (and the mask) for backward, not the [B,H,L,S] probabilities: backward recomputes
    /// them, with the same dropout, so the gradients equal those of a fresh forward's recorded probabilities.</summary>
    [Test]
    public void AttentionDoesNotKeepItsProbabilitiesForBackward()
    {
        var g = new Generator(5);
        using var q = g.Normal([2, 2, 64, 4]);
        using var k = g.Normal([2, 2, 64, 4]);
        using var v = g.Normal([2, 2, 64, 4]);
        q.RequiresGrad = k.RequiresGrad = v.RequiresGrad = true;
        long probsBytes = CachingAllocator.RoundSize(2L * 2 * 64 * 64 * 4);   // 64 KiB, vs 2 KiB per q/k/v
        using (Tensor.Scope())
        {
            long before = Backends.MemoryStats(Device.Cpu).Live;
            var o = Ops.Attention(q, k, v, null, 0.5, 0.1, true, new Generator(9));
            long held = Backends.MemoryStats(Device.Cpu).Live - before;
            Assert.That(held, Is.LessThan(probsBytes), $"after forward the op holds {held} bytes; the probabilities alone are {probsBytes}");
            o.Sum().Backward();
        }
        // the recomputed probabilities give the gradient of an independent float64 evaluation of the same op
        var grads = new[] { q.Grad!.ToArray<float>(), k.Grad!.ToArray<float>(), v.Grad!.ToArray<float>() };
        using var q64 = q.Detach().To(DType.Float64);
        using var k64 = k.Detach().To(DType.Float64);
        using var v64 = v.Detach().To(DType.Float64);
        q64.RequiresGrad = k64.RequiresGrad = v64.RequiresGrad = true;
        using (Tensor.Scope()) Ops.Attention(q64, k64, v64, null, 0.5, 0.1, true, new Generator(9)).Sum().Backward();
        var want = new[] { q64.Grad!.ToArray<double>(), k64.Grad!.ToArray<double>(), v64.Grad!.ToArray<double>() };
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < want[t].Length; i++)
                Assert.That(grads[t][i], Is.EqualTo(want[t][i]).Within(1e-4 + 1e-4 * Math.Abs(want[t][i])), $"input {t} element {i}");
    }
}
