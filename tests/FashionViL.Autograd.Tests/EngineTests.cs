using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>The backward engine's rules: accumulation, leaf/non-leaf, no-grad, retain, clear errors, memory release.</summary>
public class EngineTests
{
    [Test]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(new double[] { 1, 2, 3 }, 3); x.RequiresGrad = true;
        (x * x).Sum().Backward();
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 2, 4, 6 }));
        (x * 3.0).Sum().Backward();
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 5, 7, 9 }));
    }

    [Test]
    public void ATensorUsedTwiceGetsTheSumOfBothPaths()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(new double[] { 0.5, -1 }, 2); x.RequiresGrad = true;
        var y = x.Exp();
        var z = (y * y + y).Sum();   // d/dx = 2e^{2x} + e^x
        z.Backward();
        var want = new[] { 0.5, -1 }.Select(v => 2 * Math.Exp(2 * v) + Math.Exp(v)).ToArray();
        OpCheck.AssertClose(x.Grad!, want, 1e-12, 1e-12);
    }

    [Test]
    public void LeafAndNonLeafRules()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Ones([2]); x.RequiresGrad = true;
        var y = x * 2.0;
        Assert.That(x.IsLeaf, Is.True);
        Assert.That(y.IsLeaf, Is.False);
        Assert.That(y.RequiresGrad, Is.True);
        Assert.That(y.GradFn!.Name, Is.EqualTo("mul"));
        Assert.Throws<InvalidOperationException>(() => y.RequiresGrad = false);
        var d = y.Detach();
        Assert.That(d.RequiresGrad || !d.IsLeaf, Is.False);
        Assert.Throws<InvalidOperationException>(() => Tensor.Zeros([2], DType.Int64).RequiresGrad = true);
        y.Sum().Backward();
        Assert.That(y.Grad, Is.Null, "non-leaf tensors do not keep a gradient");
        Assert.That(x.Grad!.ToArray<float>(), Is.EqualTo(new float[] { 2, 2 }));
    }

    [Test]
    public void NoGradScopeRecordsNothing()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Ones([2]); x.RequiresGrad = true;
        Tensor y;
        using (GradMode.NoGrad()) y = (x * 3.0).Exp();
        Assert.That(y.RequiresGrad, Is.False);
        Assert.That(y.GradFn, Is.Null);
        Assert.That(GradMode.IsEnabled, Is.True);
        var ex = Assert.Throws<InvalidOperationException>(() => y.Sum().Backward())!;
        Assert.That(ex.Message, Does.Contain("does not require grad"));
    }

    [Test]
    public void BackwardTwiceWithoutRetainIsAClearError()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Ones([3]); x.RequiresGrad = true;
        var l = (x.Exp() * x).Sum();
        l.Backward(retainGraph: true);
        l.Backward();
        Assert.That(x.Grad!.ToArray<float>()[0], Is.EqualTo(2 * 2 * MathF.E).Within(1e-5));
        var ex = Assert.Throws<InvalidOperationException>(() => l.Backward())!;
        Assert.That(ex.Message, Does.Contain("already freed").And.Contain("retainGraph"));
    }

    [Test]
    public void NonScalarBackwardNeedsAGradientOfTheSameShape()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Ones([2, 3]); x.RequiresGrad = true;
        var y = x * 2.0;
        Assert.That(Assert.Throws<InvalidOperationException>(() => y.Backward())!.Message, Does.Contain("not a scalar").And.Contain("[2, 3]"));
        var ex = Assert.Throws<ArgumentException>(() => y.Backward(Tensor.Ones([3, 2])))!;
        Assert.That(ex.Message, Does.Contain("[3, 2]").And.Contain("[2, 3]"));
        y.Backward(Tensor.Full([2, 3], 0.5));
        Assert.That(x.Grad!.ToArray<float>(), Is.All.EqualTo(1f));
    }

    [Test]
    public void SavedActivationsAreReleasedRightAfterTheirRuleRuns()
    {
        var x = Tensor.Ones([1000], DType.Float64); x.RequiresGrad = true;
        var stats0 = Backends.MemoryStats(Device.Cpu).Live;
        using (var scope = Tensor.Scope())
        {
            var y = x.Exp();          // saves y
            var z = y.Sin();          // saves y (as input)
            var l = z.Sum();
            var node = z.GradFn!;
            Assert.That(node.IsReleased, Is.False);
            y.Dispose(); z.Dispose(); // the user's handles may go; the graph keeps what it needs
            l.Backward();
            Assert.That(node.IsReleased, Is.True);
        }
        Assert.That(Backends.MemoryStats(Device.Cpu).Live - stats0, Is.EqualTo(CachingAllocator.RoundSize(8000)), "only x.Grad remains");
        x.Grad!.Dispose(); x.Dispose();
    }

    [Test]
    public void ClosedScopeFreesTheGraphAndBackwardSaysSo()
    {
        var x = Tensor.Ones([4]); x.RequiresGrad = true;
        Tensor kept;
        using (var scope = Tensor.Scope())
        {
            kept = (x.Exp() * 2.0).Sum().Keep();
        }
        Assert.That(kept.IsDisposed, Is.False);
        var ex = Assert.Throws<InvalidOperationException>(() => kept.Backward())!;
        Assert.That(ex.Message, Does.Contain("already freed"));
        kept.Dispose(); x.Dispose();
    }
}

public class GradOwnershipTests
{
    [Test]
    public void ReplacingABackwardGradientFreesItButACallerGradientIsLeftAlone()
    {
        var x = Tensor.Ones([256]); x.RequiresGrad = true;
        using (Tensor.Scope()) (x * 2.0).Sum().Backward();
        var g = x.Grad!;
        x.Grad = null;
        Assert.That(g.IsDisposed, Is.True, "the engine's buffer belongs to the leaf");

        var mine = Tensor.Full([256], 5.0);
        x.Grad = mine;
        using (Tensor.Scope()) (x * 2.0).Sum().Backward();
        Assert.That(mine.ToArray<float>()[0], Is.EqualTo(5f), "a caller's tensor is not updated in place");
        Assert.That(x.Grad!.ToArray<float>()[0], Is.EqualTo(7f));
        x.Grad = null;
        Assert.That(mine.IsDisposed, Is.False);
        mine.Dispose(); x.Dispose();
    }
}
