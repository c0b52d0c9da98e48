using FashionViL.Testing;
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

    /// <summary>Records which outputs each AttentionForward call asked for (o given, probs given).</summary>
    public class AttentionSpy : System.Reflection.DispatchProxy
    {
        public IBackend Inner = null!;
        public readonly List<(bool O, bool Probs)> Calls = [];

        protected override object? Invoke(System.Reflection.MethodInfo? m, object?[]? args)
        {
            if (m!.Name == nameof(IBackend.AttentionForward)) Calls.Add((args![8] is not null, args[9] is not null));
            try { return m.Invoke(Inner, args); }
            catch (System.Reflection.TargetInvocationException e) when (e.InnerException is not null)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }
    }

    [Test]
    public void AttentionOutputAndGradientsAreBitwiseThoseOfTheFullPasses([Values(DType.Float32, DType.Float64)] DType dt,
        [Values(0.0, 0.2)] double p, [Values(7, 13)] int s)
        // the forward asks for the output only and the backward for the probabilities only; the full passes (both outputs,
        // both times) are what the op did before: every bit must agree
        => AttentionPasses.AssertSame(Device.Cpu, dt, p, s);

    [Test, NonParallelizable]   // intercepts the process-wide CPU backend and reads its allocator's peak
    public void AttentionForwardPeakIsLowerByTheProbabilitiesAndTheRecomputeAllocatesNoOutput()
    {
        var g = new Generator(5);
        using var q = g.Normal([2, 2, 64, 4]);
        using var k = g.Normal([2, 2, 64, 4]);
        using var v = g.Normal([2, 2, 64, 4]);
        q.RequiresGrad = k.RequiresGrad = v.RequiresGrad = true;
        long probsBytes = CachingAllocator.RoundSize(2L * 2 * 64 * 64 * 4);   // 64 KiB
        long outBytes = CachingAllocator.RoundSize(2L * 2 * 64 * 4 * 4);      // 4 KiB
        var cpu = Backends.Get(Device.Cpu).Allocator;
        (long ForwardPeak, long BackwardAllocs, List<(bool, bool)> Calls) Run(bool full)
        {
            bool was = Ops.AttentionFullPasses;
            Ops.AttentionFullPasses = full;
            AttentionSpy? spy = null;
            q.Grad = k.Grad = v.Grad = null;   // the same gradient bookkeeping in both runs
            try
            {
                using (Backends.Intercept(Device.Cpu, inner =>
                {
                    var proxy = System.Reflection.DispatchProxy.Create<IBackend, AttentionSpy>();
                    spy = (AttentionSpy)(object)proxy;
                    spy.Inner = inner;
                    return proxy;
                }))
                using (Tensor.Scope())
                {
                    var go = Tensor.Full(q.Shape, 0.5f);
                    long before = cpu.Stats.Live;
                    cpu.ResetPeak();
                    var o = Ops.Attention(q, k, v, null, 0.5, 0.1, true, new Generator(9));
                    long peak = cpu.Stats.Peak - before;
                    long allocs = cpu.Stats.Allocations;
                    o.Backward(go);
                    return (peak, cpu.Stats.Allocations - allocs, spy!.Calls);
                }
            }
            finally { Ops.AttentionFullPasses = was; }
        }
        var full = Run(true);
        var now = Run(false);
        Assert.That(full.Calls, Is.EqualTo(new[] { (true, true), (true, true) }), "full passes: both outputs, twice");
        Assert.That(now.Calls, Is.EqualTo(new[] { (true, false), (false, true) }), "forward: output only; recompute: probabilities only");
        Assert.That(now.ForwardPeak, Is.EqualTo(outBytes), "the forward allocates the output and nothing else");
        Assert.That(full.ForwardPeak - now.ForwardPeak, Is.EqualTo(probsBytes), "the forward's peak is lower by the probabilities");
        Assert.That(full.BackwardAllocs - now.BackwardAllocs, Is.EqualTo(1), "the recompute allocates no output tensor");
    }
}
