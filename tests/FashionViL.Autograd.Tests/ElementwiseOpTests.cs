using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>Unary and binary elementwise ops: forward against float64 scalar maths, backward by gradcheck.</summary>
public class ElementwiseOpTests
{
    private static double Erf(double x)
    {
        // Independent reference: high-order numeric integration of 2/√π e^{-t²} (Simpson, 2000 panels).
        int n = 2000; double h = x / n, s = 0;
        for (int i = 0; i <= n; i++) { double t = i * h, f = Math.Exp(-t * t); s += (i == 0 || i == n) ? f : (i % 2 == 1 ? 4 * f : 2 * f); }
        return s * h / 3 * 2 / Math.Sqrt(Math.PI);
    }

    private static double Sig(double x) => 1 / (1 + Math.Exp(-x));

    public static IEnumerable<TestCaseData> Unary()
    {
        yield return Case("neg", x => x.Neg(), v => -v);
        yield return Case("abs", x => x.Abs(), Math.Abs);
        yield return Case("exp", x => x.Exp(), Math.Exp);
        yield return Case("log", x => x.Log(), Math.Log, positive: true);
        yield return Case("sqrt", x => x.Sqrt(), Math.Sqrt, positive: true);
        yield return Case("rsqrt", x => x.Rsqrt(), v => 1 / Math.Sqrt(v), positive: true);
        yield return Case("sin", x => x.Sin(), Math.Sin);
        yield return Case("cos", x => x.Cos(), Math.Cos);
        yield return Case("tanh", x => x.Tanh(), Math.Tanh);
        yield return Case("sigmoid", x => x.Sigmoid(), Sig);
        yield return Case("relu", x => x.Relu(), v => Math.Max(v, 0));
        yield return Case("gelu", x => x.Gelu(), v => 0.5 * v * (1 + Erf(v / Math.Sqrt(2))));
        yield return Case("silu", x => x.Silu(), v => v * Sig(v));
        yield return Case("erf", x => x.Erf(), Erf);
        yield return Case("square", x => x.Square(), v => v * v);
        yield return Case("reciprocal", x => x.Reciprocal(), v => 1 / v, positive: true);
        yield return Case("pow 2.5", x => x.Pow(2.5), v => Math.Pow(v, 2.5), positive: true);
        yield return Case("clamp", x => x.Clamp(-0.5, 0.7), v => Math.Clamp(v, -0.5, 0.7));
        yield return Case("add scalar", x => x + 3.0, v => v + 3);
        yield return Case("rsub scalar", x => 2.0 - x, v => 2 - v);
        yield return Case("mul scalar", x => x * -1.5, v => v * -1.5);
        yield return Case("div scalar", x => x / 4.0, v => v / 4);
        yield return Case("scalar div", x => 2.0 / x, v => 2 / v, positive: true);
    }

    private static TestCaseData Case(string name, Func<Tensor, Tensor> f, Func<double, double> r, bool positive = false)
        => new TestCaseData(f, r, positive) { TestName = "Unary " + name };

    [TestCaseSource(nameof(Unary))]
    public void UnaryMatchesReferenceAndGradcheck(Func<Tensor, Tensor> f, Func<double, double> r, bool positive)
    {
        double lo = positive ? 0.3 : -2.5, hi = 2.5;
        using var scope = Tensor.Scope();
        foreach (var shape in new[] { new[] { 3, 5 }, new[] { 1 }, new[] { 2, 1, 4 }, Array.Empty<int>() })
        {
            var x = OpCheck.Rand(shape, 7, DType.Float64, lo, hi);
            // Keep away from kinks (relu, abs, clamp at 0, -0.5, 0.7) so finite differences are meaningful.
            var v = x.ToArray<double>().Select(a => Math.Abs(a) < 0.05 || Math.Abs(a + 0.5) < 0.05 || Math.Abs(a - 0.7) < 0.05 ? a + 0.11 : a).ToArray();
            x = Tensor.FromArray(v, shape);
            OpCheck.Forward(t => f(t[0]), t => Tensor.FromArray(t[0].ToArray<double>().Select(r).ToArray(), t[0].Shape), [x], rtol: 2e-6, atol: 2e-6);
            // float64 forward too, exactly through the same kernel family
            OpCheck.AssertClose(f(x), x.ToArray<double>().Select(r).ToArray(), 1e-12, 1e-12, "float64 forward");
            x.RequiresGrad = true;
            OpCheck.GradCheck(t => f(t[0]), [x]);
            // non-contiguous input gives the same values
            if (shape.Length >= 2)
            {
                using var nc = OpCheck.NonContiguous(x.Detach());
                Assert.That(nc.IsContiguous, Is.False);
                OpCheck.AssertClose(f(nc), x.ToArray<double>().Select(r).ToArray(), 1e-12, 1e-12, "non-contiguous");
            }
        }
    }

    public static IEnumerable<TestCaseData> Binary()
    {
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a + b), (Func<double, double, double>)((a, b) => a + b), false) { TestName = "Binary add" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a - b), (Func<double, double, double>)((a, b) => a - b), false) { TestName = "Binary sub" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a * b), (Func<double, double, double>)((a, b) => a * b), false) { TestName = "Binary mul" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a / b), (Func<double, double, double>)((a, b) => a / b), true) { TestName = "Binary div" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a.Pow(b)), (Func<double, double, double>)Math.Pow, true) { TestName = "Binary pow" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a.Maximum(b)), (Func<double, double, double>)Math.Max, false) { TestName = "Binary maximum" };
        yield return new TestCaseData((Func<Tensor, Tensor, Tensor>)((a, b) => a.Minimum(b)), (Func<double, double, double>)Math.Min, false) { TestName = "Binary minimum" };
    }

    [TestCaseSource(nameof(Binary))]
    public void BinaryBroadcastsMatchesReferenceAndGradcheck(Func<Tensor, Tensor, Tensor> f, Func<double, double, double> r, bool positive)
    {
        using var scope = Tensor.Scope();
        double lo = positive ? 0.4 : -2, hi = 2;
        (int[] a, int[] b)[] shapes = [([3, 4], [3, 4]), ([3, 4], [4]), ([2, 1, 4], [3, 1]), ([1], [2, 3]), ([], [2, 2]), ([5, 1], [1, 1])];
        foreach (var (sa, sb) in shapes)
        {
            var a = OpCheck.Rand(sa, 1, DType.Float64, lo, hi);
            var b = OpCheck.Rand(sb, 2, DType.Float64, lo, hi);
            var outShape = Shape.Broadcast(sa, sb);
            Tensor Reference(Tensor[] t)
            {
                var va = t[0].ToArray<double>(); var vb = t[1].ToArray<double>();
                int n = Shape.Numel(outShape);
                var o = new double[n];
                for (int i = 0; i < n; i++) o[i] = r(va[BroadcastIndex(i, outShape, sa)], vb[BroadcastIndex(i, outShape, sb)]);
                return Tensor.FromArray(o, outShape);
            }
            OpCheck.Forward(t => f(t[0], t[1]), Reference, [a, b], 1e-6, 1e-6, $"{Shape.Format(sa)} op {Shape.Format(sb)}");
            a.RequiresGrad = true; b.RequiresGrad = true;
            OpCheck.GradCheck(t => f(t[0], t[1]), [a, b], what: $"{Shape.Format(sa)} op {Shape.Format(sb)}");
        }
    }

    /// <summary>
    /// Random shapes (seeded): rank 0–4, sizes 0–4, each operand dropping leading dims or setting dims to 1 at
    /// random (broadcast), and each input possibly a non-contiguous view. Checks values against the scalar reference.
    /// </summary>
    [Test]
    public void RandomBroadcastShapesAndLayouts([Range(0, 39)] int trial)
    {
        using var scope = Tensor.Scope();
        var rng = new Random(1000 + trial);
        int rank = rng.Next(0, 5);
        var outShape = Enumerable.Range(0, rank).Select(_ => rng.Next(0, 5)).ToArray();
        int[] Operand()
        {
            int drop = rng.Next(0, rank + 1);
            return outShape.Skip(drop).Select(d => rng.Next(3) == 0 ? 1 : d).ToArray();
        }
        var sa = Operand(); var sb = Operand();
        var full = Shape.Broadcast(sa, sb);
        var a = OpCheck.Rand(sa, (ulong)trial, DType.Float32, 0.5, 2);
        var b = OpCheck.Rand(sb, (ulong)trial + 100, DType.Float32, 0.5, 2);
        if (rng.Next(2) == 0) a = OpCheck.NonContiguous(a);
        if (rng.Next(2) == 0) b = OpCheck.NonContiguous(b);
        var va = a.ToArray<double>(); var vb = b.ToArray<double>();
        int n = Shape.Numel(full);
        var want = new double[n];
        for (int i = 0; i < n; i++) want[i] = (float)((float)va[BroadcastIndex(i, full, sa)] * (float)vb[BroadcastIndex(i, full, sb)]) - (float)va[BroadcastIndex(i, full, sa)];
        var got = a * b - a;
        Assert.That(got.Shape, Is.EqualTo(full), $"{Shape.Format(sa)} ⊗ {Shape.Format(sb)}");
        OpCheck.AssertClose(got, want, 1e-6, 1e-6, $"{Shape.Format(sa)} ⊗ {Shape.Format(sb)}");

        // The same expression's gradients (float64), summed back over the broadcast dims.
        var a64 = a.To(DType.Float64); var b64 = b.To(DType.Float64);
        a64.RequiresGrad = true; b64.RequiresGrad = true;
        OpCheck.GradCheck(t => t[0] * t[1] - t[0], [a64, b64], what: $"{Shape.Format(sa)} ⊗ {Shape.Format(sb)}");
    }

    /// <summary>Flat index into an operand of shape <paramref name="s"/> for flat output index i (numpy broadcasting).</summary>
    internal static int BroadcastIndex(int i, int[] outShape, int[] s)
    {
        int idx = 0, mul = 1;
        for (int d = outShape.Length - 1; d >= 0; d--)
        {
            int c = i % outShape[d]; i /= outShape[d];
            int sd = d - (outShape.Length - s.Length);
            if (sd < 0) continue;
            if (s[sd] != 1) idx += c * mul;
            mul *= s[sd];
        }
        return idx;
    }

    [Test]
    public void ComparisonsGiveBoolAndNoGrad()
    {
        using var scope = Tensor.Scope();
        var a = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, 4);
        var b = Tensor.FromArray(new float[] { 2 }, 1);
        a.RequiresGrad = true;
        Assert.That(a.Gt(b).ToArray<bool>(), Is.EqualTo(new[] { false, false, true, true }));
        Assert.That(a.Le(b).ToArray<bool>(), Is.EqualTo(new[] { true, true, false, false }));
        Assert.That(a.Eq(b).ToArray<bool>(), Is.EqualTo(new[] { false, true, false, false }));
        Assert.That(a.Ne(b).ToArray<bool>(), Is.EqualTo(new[] { true, false, true, true }));
        var c = a.Lt(b);
        Assert.That(c.DType, Is.EqualTo(DType.Bool));
        Assert.That(c.RequiresGrad, Is.False);
        Assert.That(c.LogicalNot().ToArray<bool>(), Is.EqualTo(new[] { false, true, true, true }));
        var l = Tensor.FromArray(new long[] { 3, 1, 3 }, 3);
        Assert.That(l.Eq(Tensor.FromArray(new long[] { 3 }, 1)).ToArray<bool>(), Is.EqualTo(new[] { true, false, true }));
    }

    [Test]
    public void MismatchedShapesNameBothShapes()
    {
        using var scope = Tensor.Scope();
        var a = Tensor.Zeros([2, 3]); var b = Tensor.Zeros([4]);
        var ex = Assert.Throws<ArgumentException>(() => _ = a + b)!;
        Assert.That(ex.Message, Does.Contain("add").And.Contain("[2, 3]").And.Contain("[4]"));
        var d = Tensor.Zeros([2, 3], DType.Float64);
        var ex2 = Assert.Throws<ArgumentException>(() => _ = a * d)!;
        Assert.That(ex2.Message, Does.Contain("mul").And.Contain("float32").And.Contain("float64"));
    }

    [Test]
    public void NaNPropagatesThroughMaximumAndRelu()
    {
        using var scope = Tensor.Scope();
        var a = Tensor.FromArray(new float[] { float.NaN, 1, -1 }, 3);
        var b = Tensor.FromArray(new float[] { 0, float.NaN, 0 }, 3);
        var m = a.Maximum(b).ToArray<float>();
        Assert.That(float.IsNaN(m[0]) && float.IsNaN(m[1]) && m[2] == 0, Is.True);
        Assert.That(float.IsNaN(a.Relu().ToArray<float>()[0]), Is.True);
    }
}
