using FashionViL.Autograd;

namespace FashionViL.Testing;

/// <summary>
/// The one helper every op test uses:
/// <list type="bullet">
/// <item><see cref="Forward"/>: the op on float32 inputs against a float64 reference (usually scalar loops in the test).</item>
/// <item><see cref="GradCheck"/>: analytic gradients (float64) against central finite differences of
/// L = Σ f(x)·w with a fixed random w, for every input that requires grad.</item>
/// </list>
/// Tolerance: |got − want| ≤ atol + rtol·|want|; NaN never passes (unless both are NaN and allowNaN).
/// </summary>
public static class OpCheck
{
    /// <summary>Deterministic uniform data on [lo, hi) (Philox, so identical on every machine).</summary>
    public static Tensor Rand(int[] shape, ulong seed, DType dtype = DType.Float64, double lo = -1, double hi = 1, bool requiresGrad = false)
    {
        var g = new Generator(seed);
        var t = g.Uniform(shape, lo, hi, dtype);
        t.RequiresGrad = requiresGrad;
        return t;
    }

    /// <summary>Values from an array (float64).</summary>
    public static Tensor From(double[] v, params int[] shape) => Tensor.FromArray(v, shape);

    /// <summary>A non-contiguous tensor with the same values as <paramref name="t"/> (storage laid out in reverse dim order).</summary>
    public static Tensor NonContiguous(Tensor t)
    {
        if (t.Rank < 2) { using var wide = Tensor.Zeros([t.Numel * 2 + 1], t.DType); var v = wide.AsStrided(t.Shape, t.Rank == 1 ? [2] : [], 1); Backends.Get(t.Device).Copy(t, v); return v; }
        var rev = Enumerable.Range(0, t.Rank).Reverse().ToArray();
        var revShape = rev.Select(i => t.Sizes[i]).ToArray();
        using var store = Tensor.Empty(revShape, t.DType, t.Device);
        using var view = store.AsStrided(t.Shape, Enumerable.Range(0, t.Rank).Select(i => store.Strides[Array.IndexOf(rev, i)]).ToArray(), 0);
        Backends.Get(t.Device).Copy(t, view);
        return view.Alias();
    }

    public static void AssertClose(Tensor actual, Tensor expected, double rtol = 1e-5, double atol = 1e-6, string what = "", bool allowNaN = false)
    {
        Assert.That(actual.Shape, Is.EqualTo(expected.Shape), $"{what}: shape");
        AssertClose(actual.ToArray<double>(), expected.ToArray<double>(), rtol, atol, what, allowNaN);
    }

    public static void AssertClose(Tensor actual, double[] expected, double rtol = 1e-5, double atol = 1e-6, string what = "", bool allowNaN = false)
        => AssertClose(actual.ToArray<double>(), expected, rtol, atol, what, allowNaN);

    public static void AssertClose(double[] got, double[] want, double rtol, double atol, string what = "", bool allowNaN = false)
    {
        Assert.That(got.Length, Is.EqualTo(want.Length), $"{what}: element count");
        int bad = 0; string first = "";
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
        {
            double g = got[i], w = want[i];
            bool ok = (allowNaN && double.IsNaN(g) && double.IsNaN(w))
                || (double.IsInfinity(w) && g == w)
                || (!double.IsNaN(g) && !double.IsNaN(w) && Math.Abs(g - w) <= atol + rtol * Math.Abs(w));
            if (!ok)
            {
                if (bad++ == 0) first = $"[{i}] got {g:R}, want {w:R}";
                worst = Math.Max(worst, Math.Abs(g - w) / (atol + rtol * Math.Abs(w)));
            }
        }
        Assert.That(bad, Is.Zero, $"{what}: {bad} of {got.Length} elements outside atol {atol} + rtol {rtol}; first {first}; worst {worst:G3}× tolerance");
    }

    /// <summary>
    /// Runs <paramref name="op"/> on float32 copies of <paramref name="inputs"/> and <paramref name="reference"/>
    /// on the float64 originals, and compares.
    /// </summary>
    public static void Forward(Func<Tensor[], Tensor> op, Func<Tensor[], Tensor> reference, Tensor[] inputs, double rtol = 1e-4, double atol = 1e-5, string what = "")
    {
        using var scope = Tensor.Scope();
        var f32 = inputs.Select(t => t.DType == DType.Float64 ? t.To(DType.Float32) : t.Alias()).ToArray();
        var got = op(f32);
        var want = reference(inputs);
        Assert.That(got.DType, Is.EqualTo(DType.Float32).Or.Not.EqualTo(DType.Float64), $"{what}: float32 inputs gave {got.DType.Name()}");
        AssertClose(got, want, rtol, atol, what);
    }

    /// <summary>
    /// Finite-difference gradient check in float64. Every input with RequiresGrad must be a contiguous
    /// float64 leaf. <paramref name="f"/> may return any shape.
    /// </summary>
    public static void GradCheck(Func<Tensor[], Tensor> f, Tensor[] inputs, double eps = 1e-6, double rtol = 1e-4, double atol = 1e-7, string what = "")
    {
        foreach (var t in inputs)
            if (t.RequiresGrad && (t.DType != DType.Float64 || !t.IsContiguous))
                throw new ArgumentException("GradCheck inputs that require grad must be contiguous float64");
        Assert.That(inputs.Any(t => t.RequiresGrad), Is.True, "GradCheck: no input requires grad");

        double[] w;
        using (var scope = Tensor.Scope())
        {
            foreach (var t in inputs) t.Grad = null;
            var y = f(inputs);
            Assert.That(y.DType, Is.EqualTo(DType.Float64), $"{what}: output dtype");
            Assert.That(y.RequiresGrad, Is.True, $"{what}: output does not require grad");
            using var wt = Rand(y.Shape, 1234, DType.Float64, 0.5, 1.5);
            w = wt.ToArray<double>();
            var l = (y * wt).Sum();
            l.Backward();
        }

        double Loss()
        {
            using var scope = Tensor.Scope();
            using var _ = GradMode.NoGrad();
            var y = f(inputs).ToArray<double>();
            double s = 0;
            for (int i = 0; i < y.Length; i++) s += y[i] * w[i];
            return s;
        }

        for (int k = 0; k < inputs.Length; k++)
        {
            var t = inputs[k];
            if (!t.RequiresGrad) continue;
            Assert.That(t.Grad, Is.Not.Null, $"{what}: input {k} {t.ShapeString} got no gradient");
            var analytic = t.Grad!.ToArray<double>();
            var numeric = new double[t.Numel];
            var data = t.AsSpan<double>();
            for (int i = 0; i < t.Numel; i++)
            {
                double orig = data[i];
                data[i] = orig + eps; double lp = Loss();
                data[i] = orig - eps; double lm = Loss();
                data[i] = orig;
                numeric[i] = (lp - lm) / (2 * eps);
            }
            AssertClose(analytic, numeric, rtol, atol, $"{what}: d/d(input {k} {t.ShapeString})");
        }
    }
}
