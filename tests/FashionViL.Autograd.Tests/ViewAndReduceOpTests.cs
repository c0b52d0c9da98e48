using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>Views (reshape, permute, narrow, expand, ...) and reductions: values against index arithmetic, gradients by gradcheck.</summary>
public class ViewAndReduceOpTests
{
    private static double[] Vals(Tensor t) => t.ToArray<double>();

    [Test]
    public void PermuteTransposeAndNarrowAreViewsWithTheRightValues()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (double)i).ToArray(), 2, 3, 4);
        var p = x.Permute(2, 0, 1);
        Assert.That(p.Shape, Is.EqualTo(new[] { 4, 2, 3 }));
        Assert.That(p.Storage, Is.SameAs(x.Storage));
        var v = Vals(p);
        for (int a = 0; a < 4; a++) for (int b = 0; b < 2; b++) for (int c = 0; c < 3; c++)
            Assert.That(v[a * 6 + b * 3 + c], Is.EqualTo(b * 12 + c * 4 + a));
        var n = x.Narrow(2, 1, 2);
        Assert.That(Vals(n), Is.EqualTo(new double[] { 1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22 }));
        Assert.That(Vals(x.Select(1, -1)), Is.EqualTo(new double[] { 8, 9, 10, 11, 20, 21, 22, 23 }));
        Assert.That(Vals(x.Slice(0, -1, 2)), Is.EqualTo(Enumerable.Range(12, 12).Select(i => (double)i).ToArray()));
        Assert.That(x.Transpose(0, 2).Shape, Is.EqualTo(new[] { 4, 3, 2 }));
        Assert.That(x.Unsqueeze(1).Shape, Is.EqualTo(new[] { 2, 1, 3, 4 }));
        Assert.That(x.Unsqueeze(-1).Shape, Is.EqualTo(new[] { 2, 3, 4, 1 }));
        Assert.That(x.Unsqueeze(1).Squeeze().Shape, Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(x.Flatten(1).Shape, Is.EqualTo(new[] { 2, 12 }));
    }

    [Test]
    public void ReshapeViewsWhenPossibleAndCopiesOtherwise()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (double)i).ToArray(), 2, 3, 4);
        var r = x.Reshape(6, -1);
        Assert.That(r.Storage, Is.SameAs(x.Storage));
        Assert.That(r.Shape, Is.EqualTo(new[] { 6, 4 }));
        var t = x.Transpose(1, 2);                       // [2,4,3], non-contiguous
        var merged = t.Reshape(2, 12);                   // needs a copy
        Assert.That(merged.Storage, Is.Not.SameAs(x.Storage));
        Assert.That(Vals(merged).Take(6), Is.EqualTo(new double[] { 0, 4, 8, 1, 5, 9 }));
        var split = t.Reshape(2, 2, 2, 3);               // splitting a dim of a permuted tensor is still a view
        Assert.That(split.Storage, Is.SameAs(x.Storage));
        Assert.That(Vals(split), Is.EqualTo(Vals(t)));
        Assert.Throws<InvalidOperationException>(() => t.View(2, 12));
        var ex = Assert.Throws<ArgumentException>(() => x.Reshape(5, -1))!;
        Assert.That(ex.Message, Does.Contain("[2, 3, 4]").And.Contain("[5, -1]"));
    }

    [Test]
    public void ExpandBroadcastsWithZeroStrides()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(new double[] { 1, 2, 3 }, 3, 1);
        var e = x.Expand(2, 3, 4);
        Assert.That(e.Strides.ToArray(), Is.EqualTo(new[] { 0, 1, 0 }));
        Assert.That(Vals(e.Contiguous()).Take(8), Is.EqualTo(new double[] { 1, 1, 1, 1, 2, 2, 2, 2 }));
        Assert.Throws<ArgumentException>(() => x.Expand(2, 4, 4));
    }

    public static IEnumerable<TestCaseData> Grads()
    {
        TestCaseData C(string n, Func<Tensor, Tensor> f, params int[] shape) => new(f, shape) { TestName = "Grad " + n };
        yield return C("reshape", x => x.Reshape(4, -1), 2, 3, 2);
        yield return C("reshape of transposed", x => x.Transpose(0, 1).Reshape(-1), 2, 3);
        yield return C("permute", x => x.Permute(2, 0, 1), 2, 3, 4);
        yield return C("narrow", x => x.Narrow(1, 1, 2), 2, 4);
        yield return C("select", x => x.Select(0, 1), 3, 2);
        yield return C("unsqueeze+squeeze", x => x.Unsqueeze(0).Squeeze(0), 3);
        yield return C("expand", x => x.Expand(3, 2, 4), 2, 1);
        yield return C("contiguous", x => x.T.Contiguous(), 3, 2);
        yield return C("clone", x => x.Clone(), 3, 2);
        yield return C("sum all", x => x.Sum(), 3, 4);
        yield return C("sum dim0", x => x.Sum(0), 3, 4);
        yield return C("sum dims keep", x => x.Sum([0, 2], keepDim: true), 2, 3, 2);
        yield return C("sum of non-contiguous", x => x.T.Sum(1), 3, 4);
        yield return C("mean", x => x.Mean(-1), 3, 4);
        yield return C("mean all", x => x.Mean(), 2, 5);
        yield return C("var unbiased", x => x.Var([1]), 3, 4);
        yield return C("var biased all", x => x.Var(null, 0), 3, 4);
        yield return C("max dim", x => x.Max(1).Values, 3, 4);
        yield return C("min dim keep", x => x.Min(0, true).Values, 3, 4);
        yield return C("max all", x => x.Max(), 3, 4);
        yield return C("sum of rank0", x => x.Sum(), []);
        yield return C("chain", x => (x.Exp() * x.Sin()).Sum(1).Sqrt(), 2, 3);
    }

    [TestCaseSource(nameof(Grads))]
    public void Gradcheck(Func<Tensor, Tensor> f, int[] shape)
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand(shape, 11, DType.Float64, 0.1, 2, requiresGrad: true);
        OpCheck.GradCheck(t => f(t[0]), [x]);
    }

    [Test]
    public void ReductionsMatchScalarReference()
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([3, 4, 5], 3);
        var v = Vals(x);
        double At(int a, int b, int c) => v[a * 20 + b * 5 + c];
        var sum1 = new double[15]; var mean2 = new double[12]; var var02 = new double[4]; var max1 = new double[15]; var arg1 = new double[15];
        for (int a = 0; a < 3; a++) for (int c = 0; c < 5; c++)
        {
            double s = 0, m = double.NegativeInfinity; int am = 0;
            for (int b = 0; b < 4; b++) { s += At(a, b, c); if (At(a, b, c) > m) { m = At(a, b, c); am = b; } }
            sum1[a * 5 + c] = s; max1[a * 5 + c] = m; arg1[a * 5 + c] = am;
        }
        for (int a = 0; a < 3; a++) for (int b = 0; b < 4; b++) { double s = 0; for (int c = 0; c < 5; c++) s += At(a, b, c); mean2[a * 4 + b] = s / 5; }
        for (int b = 0; b < 4; b++)
        {
            double s = 0; for (int a = 0; a < 3; a++) for (int c = 0; c < 5; c++) s += At(a, b, c);
            double m = s / 15, ss = 0; for (int a = 0; a < 3; a++) for (int c = 0; c < 5; c++) ss += (At(a, b, c) - m) * (At(a, b, c) - m);
            var02[b] = ss / 14;
        }
        OpCheck.Forward(t => t[0].Sum(1), _ => Tensor.FromArray(sum1, 3, 5), [x]);
        OpCheck.Forward(t => t[0].Mean(2), _ => Tensor.FromArray(mean2, 3, 4), [x]);
        OpCheck.Forward(t => t[0].Var([0, 2]), _ => Tensor.FromArray(var02, 4), [x]);
        OpCheck.Forward(t => t[0].Max(1).Values, _ => Tensor.FromArray(max1, 3, 5), [x]);
        Assert.That(x.ArgMax(1).ToArray<long>(), Is.EqualTo(arg1.Select(d => (long)d).ToArray()));
        Assert.That(x.Sum().Item(), Is.EqualTo(v.Sum()).Within(1e-12));
        // Non-contiguous input gives the same result.
        using var nc = OpCheck.NonContiguous(x);
        OpCheck.AssertClose(nc.Sum(1), sum1, 1e-12, 1e-12);
        OpCheck.AssertClose(nc.Var([0, 2]), var02, 1e-12, 1e-12);
    }

    [TestCase(7, 5)]
    [TestCase(300, 2500)]   // more columns than one block of the leading-dims fast path
    public void SumAndMeanOverLeadingDimsMatchScalarReference(int rows, int cols)
    {
        using var scope = Tensor.Scope();
        var x = OpCheck.Rand([rows, cols], 5);
        var v = Vals(x);
        var sum = new double[cols];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) sum[c] += v[r * cols + c];
        OpCheck.Forward(t => t[0].Sum(0), _ => Tensor.FromArray(sum, cols), [x], 1e-5, 1e-5);
        OpCheck.Forward(t => t[0].Mean(0), _ => Tensor.FromArray(sum.Select(s => s / rows).ToArray(), cols), [x], 1e-5, 1e-6);
        OpCheck.Forward(t => t[0].Reshape(rows, 1, cols).Sum([0, 1]), _ => Tensor.FromArray(sum, cols), [x], 1e-5, 1e-5);
    }

    [Test]
    public void ArgMaxTakesTheFirstOfTies()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.FromArray(new float[] { 1, 3, 3, 0, 2, 2, 2, 1 }, 2, 4);
        Assert.That(x.ArgMax(1).ToArray<long>(), Is.EqualTo(new long[] { 1, 0 }));
        Assert.That(x.ArgMin(1).ToArray<long>(), Is.EqualTo(new long[] { 3, 3 }));
    }

    [Test]
    public void EmptyTensorsReduceToIdentity()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([0, 3]);
        Assert.That(x.Sum(0).ToArray<float>(), Is.EqualTo(new float[] { 0, 0, 0 }));
        Assert.That(x.Sum().Item(), Is.EqualTo(0));
        Assert.That((x + 1.0).Shape, Is.EqualTo(new[] { 0, 3 }));
        Assert.Throws<ArgumentException>(() => x.Max());
    }

    [Test]
    public void OutOfRangeDimsAndIndicesNameTheOp()
    {
        using var scope = Tensor.Scope();
        var x = Tensor.Zeros([2, 3]);
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => x.Sum(2))!.Message, Does.Contain("sum").And.Contain("rank 2"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => x.Narrow(1, 2, 2))!.Message, Does.Contain("narrow").And.Contain("[2, 3]"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => x.Select(0, 5))!.Message, Does.Contain("select"));
        Assert.That(Assert.Throws<ArgumentException>(() => x.Permute(0))!.Message, Does.Contain("permute"));
    }
}
