using System.Reflection;
using System.Runtime.ExceptionServices;
using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>
/// A leaf's first gradient adopts the buffer backward produced (no copy) only where that buffer is nobody else's:
/// values must equal the copy path's bit for bit, and no later in-place accumulation may show through another tensor.
/// </summary>
[NonParallelizable]   // counts calls through Backends.Intercept and reads the CPU allocator's process-wide statistics
public class GradAdoptionTests
{
    private bool _saved;

    [SetUp] public void Save() => _saved = Engine.AdoptGradients;
    [TearDown] public void Restore() => Engine.AdoptGradients = _saved;

    private static double[] D(Tensor t) => t.ToArray<double>();

    [Test]
    public void ALeafUsedTwiceInOneOpGetsTheSumAndASecondBackwardDoublesIt()
    {
        Engine.AdoptGradients = true;
        double[] v = [0.5, -1.5, 2];
        using var x = Tensor.FromArray(v, 3); x.RequiresGrad = true;
        using var y = Tensor.FromArray(v, 3); y.RequiresGrad = true;
        for (int pass = 1; pass <= 2; pass++)
        {
            using (Tensor.Scope()) (x * x).Sum().Backward();   // mul returns two fresh buffers: the first is adopted
            using (Tensor.Scope()) (y + y).Sum().Backward();   // add returns two aliases of one buffer: neither is adopted
            Assert.That(D(x.Grad!), Is.EqualTo(v.Select(a => pass * 2 * a).ToArray()), $"d(x·x)/dx after {pass} backward(s)");
            Assert.That(D(y.Grad!), Is.EqualTo(v.Select(_ => pass * 2.0).ToArray()), $"d(y+y)/dy after {pass} backward(s)");
        }
        Assert.That(x.Grad!.Storage.RefCount, Is.EqualTo(1), "the adopted buffer has one handle: the leaf's");
        Assert.That(y.Grad!.Storage.RefCount, Is.EqualTo(1));
    }

    [Test]
    public void ALeafUsedInTwoOpsGetsTheSumOfBothPaths()
    {
        Engine.AdoptGradients = true;
        double[] v = [0.25, -0.75];
        using var x = Tensor.FromArray(v, 2); x.RequiresGrad = true;
        using (Tensor.Scope()) (x * 3.0 + x.Exp()).Sum().Backward();
        Assert.That(D(x.Grad!), Is.EqualTo(v.Select(a => 3 + Math.Exp(a)).ToArray()).Within(1e-15));
        using (Tensor.Scope()) (x * 3.0 + x.Exp()).Sum().Backward();
        Assert.That(D(x.Grad!), Is.EqualTo(v.Select(a => 2 * (3 + Math.Exp(a))).ToArray()).Within(1e-15));
    }

    /// <summary>Add's backward hands both inputs a view of the same buffer: each leaf must end with its own gradient,
    /// so that a second backward accumulating into one does not change the other.</summary>
    [Test]
    public void TwoLeavesWhoseGradientsAliasOneBufferGetSeparateBuffers()
    {
        Engine.AdoptGradients = true;
        using var a = Tensor.FromArray(new double[] { 1, 2, 3 }, 3); a.RequiresGrad = true;
        using var b = Tensor.FromArray(new double[] { 4, 5, 6 }, 3); b.RequiresGrad = true;
        using (Tensor.Scope()) (a + b).Sum().Backward();
        Assert.That(a.Grad!.Storage, Is.Not.SameAs(b.Grad!.Storage));
        Assert.That(D(a.Grad!), Is.EqualTo(new double[] { 1, 1, 1 }));
        Assert.That(D(b.Grad!), Is.EqualTo(new double[] { 1, 1, 1 }));
        // the second backward reaches only a: b's gradient must not move
        using (Tensor.Scope()) (a * a).Sum().Backward();
        Assert.That(D(a.Grad!), Is.EqualTo(new double[] { 3, 5, 7 }), "1 + 2a");
        Assert.That(D(b.Grad!), Is.EqualTo(new double[] { 1, 1, 1 }), "b is untouched by a's accumulation");
        using (Tensor.Scope()) (a + b).Sum().Backward();
        Assert.That(D(a.Grad!), Is.EqualTo(new double[] { 4, 6, 8 }));
        Assert.That(D(b.Grad!), Is.EqualTo(new double[] { 2, 2, 2 }));
    }

    /// <summary>y = a + h with a node that returns the same handle for both inputs (a leaf first, then a node); a later
    /// in-place accumulation into a's gradient must not reach the gradient still pending for h.</summary>
    [Test]
    public void OneHandleReturnedForALeafAndANodeIsNotAdopted()
    {
        Engine.AdoptGradients = true;
        double[] av = [0.5, -1, 2], cv = [0.1, 0.2, -0.3];
        using var a = Tensor.FromArray(av, 3); a.RequiresGrad = true;
        using var c = Tensor.FromArray(cv, 3); c.RequiresGrad = true;
        using (Tensor.Scope())
        {
            var h = c.Exp();
            var y = SharedGradAdd(a, h);
            var z = a * h;
            // the add's rule pushes z's node, then y's: y's node runs first (leaving a gradient pending for h), then z's,
            // which accumulates into a's gradient before adding its share to h's pending one; h's node runs last
            (z + y).Sum().Backward();
        }
        // L = Σ (h·a + a + h), h = exp(c): dL/da = h + 1, dL/dc = (a + 1)·exp(c)
        OpCheck.AssertClose(a.Grad!, av.Select((_, i) => Math.Exp(cv[i]) + 1).ToArray(), 1e-14, 1e-14, "a");
        OpCheck.AssertClose(c.Grad!, av.Select((x, i) => (x + 1) * Math.Exp(cv[i])).ToArray(), 1e-14, 1e-14, "c");
    }

    /// <summary>a + b computed outside the engine's ops, with a node whose backward returns ONE handle for both inputs.</summary>
    private static Tensor SharedGradAdd(Tensor a, Tensor b)
    {
        Tensor y;
        using (GradMode.NoGrad()) y = a + b;
        return y.AttachGradFn(new SharedGradNode(a, b));
    }

    private sealed class SharedGradNode(Tensor a, Tensor b) : GradNode("shared_add", a, b)
    {
        public override Tensor?[] Backward(Tensor gradOutput)
        {
            using var t = gradOutput.ContiguousRaw();
            var own = Tensor.Empty(t.Shape, t.DType, t.Device);
            Backends.Get(t.Device).Copy(t, own);
            return [own, own];
        }
    }

    [Test]
    public void GradientsThatAreViewsOrExpandSumsAreCorrect()
    {
        Engine.AdoptGradients = true;
        var g = new Generator(3);
        using var x = g.Normal([1, 4], dtype: DType.Float64); x.RequiresGrad = true;   // expand: the sum-back is a view of a fresh buffer
        using var w = g.Normal([4, 3], dtype: DType.Float64); w.RequiresGrad = true;   // transpose: the gradient is a transposed view
        using var m = g.Normal([3, 4], dtype: DType.Float64);
        double[] mv = D(m);
        for (int pass = 1; pass <= 2; pass++)
        {
            using (Tensor.Scope())
            {
                var e = x.Expand(3, 4);          // [3, 4]
                var wt = w.Transpose(0, 1);      // [3, 4]
                (e * m + wt * m).Sum().Backward();
            }
            // dL/dx[0, j] = Σ_i m[i, j];  dL/dw[j, i] = m[i, j]
            var gx = Enumerable.Range(0, 4).Select(j => pass * (mv[j] + mv[4 + j] + mv[8 + j])).ToArray();
            var gw = new double[12];
            for (int j = 0; j < 4; j++) for (int i = 0; i < 3; i++) gw[j * 3 + i] = pass * mv[i * 4 + j];
            OpCheck.AssertClose(x.Grad!, gx, 1e-14, 1e-14, $"expand, pass {pass}");
            OpCheck.AssertClose(w.Grad!, gw, 0, 0, $"transpose, pass {pass}");
            Assert.That(x.Grad!.IsContiguous && w.Grad!.IsContiguous, Is.True);
        }
    }

    /// <summary>Cat's backward hands each input a view into one [total] buffer: a leaf keeps a buffer of its own size,
    /// never the whole block, and the slice at offset 0 and the one after it stay correct.</summary>
    [Test]
    public void ASliceOfALargerGradientBufferIsCopiedNotKept()
    {
        Engine.AdoptGradients = true;
        using var a = Tensor.FromArray(new double[] { 1, 2 }, 2); a.RequiresGrad = true;
        using var b = Tensor.FromArray(new double[] { 3, 4, 5 }, 3);
        using var w = Tensor.FromArray(new double[] { 10, 20, 30, 40, 50 }, 5);
        using (Tensor.Scope()) (Ops.Cat([a, b]) * w).Sum().Backward();   // only a needs a gradient: its view starts at 0
        Assert.That(D(a.Grad!), Is.EqualTo(new double[] { 10, 20 }));
        Assert.That(a.Grad!.Storage.Bytes, Is.EqualTo(2 * sizeof(double)), "a's gradient holds 2 doubles, not the 5-element block");
        b.RequiresGrad = true;
        a.RequiresGrad = false;
        using (Tensor.Scope()) (Ops.Cat([a, b]) * w).Sum().Backward();   // b's view starts at element 2
        Assert.That(D(b.Grad!), Is.EqualTo(new double[] { 30, 40, 50 }));
        Assert.That(b.Grad!.Storage.Bytes, Is.EqualTo(3 * sizeof(double)));
        Assert.That(b.Grad!.Offset, Is.Zero);
    }

    /// <summary>backward(gradient) on a leaf: the caller's gradient tensor is never taken over (a second backward
    /// accumulates in place into the leaf's buffer, which must not be the caller's).</summary>
    [Test]
    public void TheCallersGradientTensorIsNeverAdopted()
    {
        Engine.AdoptGradients = true;
        using var x = Tensor.FromArray(new double[] { 1, 2 }, 2); x.RequiresGrad = true;
        using var ug = Tensor.FromArray(new double[] { 0.5, -2 }, 2);
        x.Backward(ug);
        x.Backward(ug);
        Assert.That(D(ug), Is.EqualTo(new double[] { 0.5, -2 }), "the caller's tensor is unchanged");
        Assert.That(D(x.Grad!), Is.EqualTo(new double[] { 1, -4 }));
    }

    /// <summary>A gradient the caller assigned stays the caller's: the sum goes to a new buffer (unchanged path).</summary>
    [Test]
    public void AnAssignedGradientIsSummedIntoANewBuffer()
    {
        Engine.AdoptGradients = true;
        using var x = Tensor.FromArray(new double[] { 1, 2 }, 2); x.RequiresGrad = true;
        using var mine = Tensor.FromArray(new double[] { 100, 200 }, 2);
        x.Grad = mine;
        using (Tensor.Scope()) (x * x).Sum().Backward();
        Assert.That(D(x.Grad!), Is.EqualTo(new double[] { 102, 204 }));
        Assert.That(D(mine), Is.EqualTo(new double[] { 100, 200 }), "the assigned tensor is not written");
        Assert.That(x.Grad, Is.Not.SameAs(mine));
    }

    /// <summary>A float64 leaf given a float32 gradient (by a custom node): the converted copy is the gradient.</summary>
    [Test]
    public void AGradientOfAnotherDTypeIsConverted()
    {
        Engine.AdoptGradients = true;
        using var x = Tensor.FromArray(new double[] { 1, 2, 3 }, 3); x.RequiresGrad = true;
        for (int pass = 1; pass <= 2; pass++)
        {
            using (Tensor.Scope())
            {
                Tensor y;
                using (GradMode.NoGrad()) y = x * 1.0;
                y.AttachGradFn(new Float32GradNode(x));
                y.Sum().Backward();
            }
            Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float64));
            // the node hands back 1/3 in float32: the leaf holds exactly that float, widened (and summed per pass)
            double third = (float)(1.0 / 3);
            Assert.That(D(x.Grad!), Is.EqualTo(new[] { pass * third, pass * third, pass * third }));
            Assert.That(x.Grad!.Storage.RefCount, Is.EqualTo(1));
        }
    }

    private sealed class Float32GradNode(Tensor x) : GradNode("to_f32", x)
    {
        public override Tensor?[] Backward(Tensor gradOutput) => [Tensor.Full(gradOutput.Shape, 1.0 / 3, DType.Float32)];
    }

    /// <summary>A decorator counting the backend's Copy calls.</summary>
    public class CopyCounter : DispatchProxy
    {
        public IBackend Inner = null!;
        public int Copies;

        public static CopyCounter Around(IBackend inner)
        {
            var counter = (CopyCounter)(object)Create<IBackend, CopyCounter>();
            counter.Inner = inner;
            return counter;
        }

        protected override object? Invoke(MethodInfo? m, object?[]? args)
        {
            if (m!.Name == nameof(IBackend.Copy)) Copies++;
            try { return m.Invoke(Inner, args); }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }
    }

    private sealed record MlpRun(int[] CopiesPerStep, float[][] Grads, float[][] Params, long PeakDuringStep);

    /// <summary>Two AdamW steps of a 2-layer MLP (4 parameters) from the same start, with adoption on or off.</summary>
    private static MlpRun RunMlp(bool adopt)
    {
        Engine.AdoptGradients = adopt;
        var g = new Generator(11);
        var ps = new[] { g.Normal([16, 8], 0, 0.3), Tensor.Zeros([16]), g.Normal([4, 16], 0, 0.3), g.Normal([4], 0, 0.1) };
        foreach (var p in ps) p.RequiresGrad = true;
        using var x = g.Normal([32, 8]);
        using var labels = Tensor.FromArray(Enumerable.Range(0, 32).Select(i => (long)(i * 7 % 4)).ToArray(), 32);
        var m = ps.Select(Tensor.ZerosLike).ToArray();
        var v = ps.Select(Tensor.ZerosLike).ToArray();
        var copies = new int[2];
        float[][] grads = [];
        long peak = 0;
        for (int step = 0; step < 2; step++)
        {
            foreach (var p in ps) p.Grad = null;
            using (Tensor.Scope())
            {
                Backends.Get(Device.Cpu).Allocator.ResetPeak();
                long before = Backends.MemoryStats(Device.Cpu).Live;
                CopyCounter? counter = null;
                using (Backends.Intercept(Device.Cpu, inner => (IBackend)(counter = CopyCounter.Around(inner))))
                {
                    var h = Ops.Linear(x, ps[0], ps[1]).Relu();
                    Ops.CrossEntropy(Ops.Linear(h, ps[2], ps[3]), labels).Backward();
                    copies[step] = counter!.Copies;
                }
                peak = Math.Max(peak, Backends.MemoryStats(Device.Cpu).Peak - before);
                grads = ps.Select(p => p.Grad!.ToArray<float>()).ToArray();
                var cpu = Backends.Get(Device.Cpu);
                for (int i = 0; i < ps.Length; i++)
                    cpu.AdamWStep(ps[i], ps[i].Grad!, m[i], v[i], new AdamWParams(1e-2, 0.9, 0.999, 1e-8, 0.01, step + 1));
            }
        }
        var run = new MlpRun(copies, grads, ps.Select(p => p.ToArray<float>()).ToArray(), peak);
        foreach (var t in ps.Concat(m).Concat(v)) { t.Grad = null; t.Dispose(); }
        return run;
    }

    [Test]
    public void AnMlpStepMakesOneCopyFewerPerParameterWithBitIdenticalResults()
    {
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        var copy = RunMlp(adopt: false);
        var adopt = RunMlp(adopt: true);
        Assert.That(copy.CopiesPerStep[0], Is.GreaterThanOrEqualTo(4), "the copy path copies each of the 4 first gradients");
        for (int s = 0; s < 2; s++)
            Assert.That(adopt.CopiesPerStep[s], Is.EqualTo(copy.CopiesPerStep[s] - 4), $"step {s}: every parameter's gradient is adopted");
        for (int i = 0; i < 4; i++)
        {
            Assert.That(adopt.Grads[i], Is.EqualTo(copy.Grads[i]), $"gradient {i} bit for bit");
            Assert.That(adopt.Params[i], Is.EqualTo(copy.Params[i]), $"parameter {i} after two AdamW steps, bit for bit");
        }
        Assert.That(adopt.PeakDuringStep, Is.LessThanOrEqualTo(copy.PeakDuringStep), "adoption never raises the peak");
    }

    /// <summary>In a step scope, the adopted gradients outlive the scope and everything else is freed; p.Grad = null frees them.</summary>
    [Test]
    public void AdoptedGradientsSurviveTheStepScopeAndAreFreedByZeroGrad()
    {
        Engine.AdoptGradients = true;
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        var g = new Generator(5);
        using var w = g.Normal([8, 6]); w.RequiresGrad = true;
        using var bias = g.Normal([8]); bias.RequiresGrad = true;
        using var x = g.Normal([5, 6]);
        long gradBytes = CachingAllocator.RoundSize(8 * 6 * 4) + CachingAllocator.RoundSize(8 * 4);
        long before = Backends.MemoryStats(Device.Cpu).Live;
        using (Tensor.Scope()) Ops.Linear(x, w, bias).Square().Sum().Backward();
        Assert.That(Backends.MemoryStats(Device.Cpu).Live, Is.EqualTo(before + gradBytes), "after the scope only the two gradients are live");
        // the values: L = Σ (x·wᵀ + b)², dL/dw = 2·yᵀ·x, dL/db = 2·Σ_rows y (float64 loops)
        double[] xv = x.ToArray<float>().Select(f => (double)f).ToArray(), wv = w.ToArray<float>().Select(f => (double)f).ToArray(), bv = bias.ToArray<float>().Select(f => (double)f).ToArray();
        var gw = new double[48]; var gb = new double[8];
        for (int r = 0; r < 5; r++)
            for (int o = 0; o < 8; o++)
            {
                double y = bv[o];
                for (int k = 0; k < 6; k++) y += xv[r * 6 + k] * wv[o * 6 + k];
                gb[o] += 2 * y;
                for (int k = 0; k < 6; k++) gw[o * 6 + k] += 2 * y * xv[r * 6 + k];
            }
        OpCheck.AssertClose(w.Grad!, gw, 1e-5, 1e-5, "w");
        OpCheck.AssertClose(bias.Grad!, gb, 1e-5, 1e-5, "b");
        w.Grad = null; bias.Grad = null;
        Assert.That(Backends.MemoryStats(Device.Cpu).Live, Is.EqualTo(before), "dropping the gradients frees them");
    }
}
