using FashionViL.Autograd;
using FashionViL.Testing;

namespace FashionViL.Autograd.Tests;

/// <summary>Differentiable nn ops: forward against float64 scalar references, backward by finite differences.</summary>
[TestFixture]
public class NnOpTests
{
    private static Tensor R(int[] shape, ulong seed, double lo = -1, double hi = 1, bool grad = true) => OpCheck.Rand(shape, seed, DType.Float64, lo, hi, grad);

    // ------------------------------------------------------------------ references (row-major, float64)

    private static Tensor LayerNormRef(Tensor x, Tensor? w, Tensor? b, double eps)
    {
        var xa = x.ToArray<double>(); var wa = w?.ToArray<double>(); var ba = b?.ToArray<double>();
        int d = x.Sizes[^1], rows = x.Numel / d;
        var y = new double[xa.Length];
        for (int r = 0; r < rows; r++)
        {
            double m = 0, v = 0;
            for (int i = 0; i < d; i++) m += xa[r * d + i];
            m /= d;
            for (int i = 0; i < d; i++) v += (xa[r * d + i] - m) * (xa[r * d + i] - m);
            v /= d;
            for (int i = 0; i < d; i++) y[r * d + i] = (xa[r * d + i] - m) / Math.Sqrt(v + eps) * (wa?[i] ?? 1) + (ba?[i] ?? 0);
        }
        return Tensor.FromArray(y, x.Shape);
    }

    /// <summary>Softmax along any dim by explicit index arithmetic over (outer, dim, inner).</summary>
    private static Tensor SoftmaxRef(Tensor x, int dim, bool log)
    {
        var xa = x.ToArray<double>(); var s = x.Shape;
        if (dim < 0) dim += s.Length;
        int outer = 1, inner = 1, n = s[dim];
        for (int i = 0; i < dim; i++) outer *= s[i];
        for (int i = dim + 1; i < s.Length; i++) inner *= s[i];
        var y = new double[xa.Length];
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < inner; j++)
            {
                int At(int c) => (o * n + c) * inner + j;
                double m = double.NegativeInfinity, sum = 0;
                for (int c = 0; c < n; c++) m = Math.Max(m, xa[At(c)]);
                for (int c = 0; c < n; c++) sum += Math.Exp(xa[At(c)] - m);
                for (int c = 0; c < n; c++) y[At(c)] = log ? xa[At(c)] - m - Math.Log(sum) : Math.Exp(xa[At(c)] - m) / sum;
            }
        return Tensor.FromArray(y, s);
    }

    private static double[] RowLogSoftmax(double[] xa, int r, int c)
    {
        double m = double.NegativeInfinity, s = 0;
        for (int j = 0; j < c; j++) m = Math.Max(m, xa[r * c + j]);
        for (int j = 0; j < c; j++) s += Math.Exp(xa[r * c + j] - m);
        return Enumerable.Range(0, c).Select(j => xa[r * c + j] - m - Math.Log(s)).ToArray();
    }

    private static Tensor CrossEntropyRef(Tensor logits, long[] target, int ignore, Reduction red)
    {
        var xa = logits.ToArray<double>(); int n = logits.Sizes[0], c = logits.Sizes[1];
        var loss = new double[n]; int count = 0;
        for (int r = 0; r < n; r++)
        {
            if (target[r] == ignore) continue;
            loss[r] = -RowLogSoftmax(xa, r, c)[target[r]];
            count++;
        }
        return red switch
        {
            Reduction.None => Tensor.FromArray(loss, n),
            Reduction.Sum => Tensor.FromArray(new[] { loss.Sum() }, []),
            _ => Tensor.FromArray(new[] { loss.Sum() / count }, []),
        };
    }

    private static Tensor AttentionRef(Tensor q, Tensor k, Tensor v, double[]? keyMask, double scale, double p, ulong seed, ulong offset)
    {
        int bsz = q.Sizes[0], h = q.Sizes[1], l = q.Sizes[2], d = q.Sizes[3], s = k.Sizes[2];
        var qa = q.ToArray<double>(); var ka = k.ToArray<double>(); var va = v.ToArray<double>();
        var o = new double[q.Numel];
        for (int b = 0; b < bsz; b++)
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < l; i++)
                {
                    int bh = b * h + hh;
                    var sc = new double[s]; double m = double.NegativeInfinity, sum = 0;
                    for (int j = 0; j < s; j++)
                    {
                        for (int e = 0; e < d; e++) sc[j] += qa[(bh * l + i) * d + e] * ka[(bh * s + j) * d + e];
                        sc[j] = sc[j] * scale + (keyMask?[b * s + j] ?? 0);
                        m = Math.Max(m, sc[j]);
                    }
                    for (int j = 0; j < s; j++) { sc[j] = Math.Exp(sc[j] - m); sum += sc[j]; }
                    for (int j = 0; j < s; j++)
                    {
                        long flat = ((long)bh * l + i) * s + j;
                        double w = p > 0 && Philox.Uniform(seed, offset, flat) < p ? 0 : sc[j] / sum / (1 - p);
                        for (int e = 0; e < d; e++) o[(bh * l + i) * d + e] += w * va[(bh * s + j) * d + e];
                    }
                }
        return Tensor.FromArray(o, q.Shape);
    }

    // ------------------------------------------------------------------ layer norm

    [TestCase(new[] { 3, 5 }, true)]
    [TestCase(new[] { 1, 1, 7 }, true)]
    [TestCase(new[] { 2, 3, 4 }, false)]
    public void LayerNorm(int[] shape, bool affine)
    {
        int d = shape[^1];
        using var x = R(shape, 1, -2, 3);
        using var w = affine ? R([d], 2, 0.5, 1.5) : null;
        using var b = affine ? R([d], 3) : null;
        Tensor[] inputs = affine ? [x, w!, b!] : [x];
        OpCheck.Forward(t => t[0].LayerNorm(affine ? t[1] : null, affine ? t[2] : null, 1e-12),
            t => LayerNormRef(t[0], affine ? t[1] : null, affine ? t[2] : null, 1e-12), inputs, what: "layer_norm");
        OpCheck.GradCheck(t => t[0].LayerNorm(affine ? t[1] : null, affine ? t[2] : null, 1e-5), inputs, what: "layer_norm");
    }

    [Test]
    public void LayerNormOfNonContiguousInput()
    {
        using var x = R([5, 3], 4);
        using var w = R([5], 5, 0.5, 1.5);
        using var b = R([5], 6);
        OpCheck.Forward(t => { using var xt = t[0].Transpose(0, 1); return xt.LayerNorm(t[1], t[2]); },
            t => { using var xt = t[0].Transpose(0, 1).Contiguous(); return LayerNormRef(xt, t[1], t[2], 1e-12); }, [x, w, b]);
        OpCheck.GradCheck(t => { using var xt = t[0].Transpose(0, 1); return xt.LayerNorm(t[1], t[2], 1e-5); }, [x, w, b]);
    }

    [Test]
    public void LayerNormOnlyBiasRequiresGrad()
    {
        using var x = R([2, 3], 7, grad: false);
        using var b = R([3], 8);
        OpCheck.GradCheck(t => t[0].LayerNorm(null, t[1], 1e-5), [x, b]);
    }

    [Test]
    public void LayerNormRejectsWrongWeight()
    {
        using var x = Tensor.Zeros([2, 4]);
        using var w = Tensor.Ones([3]);
        var ex = Assert.Throws<ArgumentException>(() => x.LayerNorm(w, null))!;
        Assert.That(ex.Message, Does.Contain("layer_norm").And.Contain("[3]").And.Contain("[2, 4]"));
    }

    // ------------------------------------------------------------------ softmax

    [TestCase(new[] { 3, 5 }, -1)]
    [TestCase(new[] { 1, 7 }, 1)]
    [TestCase(new[] { 3, 4, 5 }, 1)]
    [TestCase(new[] { 3, 4, 5 }, 0)]
    [TestCase(new[] { 1, 3, 1 }, 1)]
    public void Softmax(int[] shape, int dim)
    {
        using var x = R(shape, 10, -3, 3);
        OpCheck.Forward(t => t[0].Softmax(dim), t => SoftmaxRef(t[0], dim, false), [x], what: "softmax");
        OpCheck.GradCheck(t => t[0].Softmax(dim), [x], what: "softmax");
    }

    [TestCase(new[] { 3, 5 }, -1)]
    [TestCase(new[] { 3, 4, 5 }, 1)]
    [TestCase(new[] { 3, 4, 5 }, 0)]
    public void LogSoftmax(int[] shape, int dim)
    {
        using var x = R(shape, 11, -3, 3);
        OpCheck.Forward(t => t[0].LogSoftmax(dim), t => SoftmaxRef(t[0], dim, true), [x], what: "log_softmax");
        OpCheck.GradCheck(t => t[0].LogSoftmax(dim), [x], what: "log_softmax");
    }

    [Test]
    public void SoftmaxOfNonContiguousInput()
    {
        using var x = R([4, 3], 12);
        OpCheck.Forward(t => { using var xt = t[0].Transpose(0, 1); return xt.Softmax(-1); },
            t => { using var xt = t[0].Transpose(0, 1).Contiguous(); return SoftmaxRef(xt, -1, false); }, [x]);
        OpCheck.GradCheck(t => { using var xt = t[0].Transpose(0, 1); return xt.LogSoftmax(-1); }, [x]);
    }

    // ------------------------------------------------------------------ cross-entropy

    [Test]
    public void CrossEntropyWithIgnoredRows([Values(Reduction.Mean, Reduction.Sum, Reduction.None)] Reduction red)
    {
        long[] t = [2, -1, 0, 4, -1];
        using var target = Tensor.FromArray(t, 5);
        using var x = R([5, 5], 20, -3, 3);
        OpCheck.Forward(a => Ops.CrossEntropy(a[0], target, -1, red), a => CrossEntropyRef(a[0], t, -1, red), [x], what: "cross_entropy");
        OpCheck.GradCheck(a => Ops.CrossEntropy(a[0], target, -1, red), [x], what: "cross_entropy");
    }

    [Test]
    public void CrossEntropyDefaultIgnoreIndexAndBatchOne()
    {
        long[] t = [3];
        using var target = Tensor.FromArray(t, 1);
        using var x = R([1, 7], 21, -3, 3);
        OpCheck.Forward(a => Ops.CrossEntropy(a[0], target), a => CrossEntropyRef(a[0], t, -100, Reduction.Mean), [x]);
        OpCheck.GradCheck(a => Ops.CrossEntropy(a[0], target), [x]);
    }

    [Test]
    public void CrossEntropyMeanOverNoRowsIsNaN()
    {
        using var target = Tensor.FromArray(new long[] { -100, -100 }, 2);
        using var x = R([2, 3], 22, grad: false);
        using var l = Ops.CrossEntropy(x, target);
        Assert.That(double.IsNaN(l.Item()), Is.True);
    }

    [Test]
    public void CrossEntropySoftTargets([Values(Reduction.Mean, Reduction.Sum)] Reduction red)
    {
        using var x = R([3, 5], 23, -3, 3);
        using var soft = R([3, 5], 24, 0, 1, grad: false);
        var sa = soft.ToArray<double>();
        Tensor Ref(Tensor logits)
        {
            var xa = logits.ToArray<double>(); double total = 0;
            for (int r = 0; r < 3; r++)
            {
                var ls = RowLogSoftmax(xa, r, 5);
                for (int j = 0; j < 5; j++) total -= sa[r * 5 + j] * ls[j];
            }
            return Tensor.FromArray(new[] { red == Reduction.Mean ? total / 3 : total }, []);
        }
        OpCheck.Forward(a => { using var s32 = soft.To(DType.Float32); return Ops.CrossEntropy(a[0], s32, reduction: red); }, a => Ref(a[0]), [x], what: "soft cross_entropy");
        OpCheck.GradCheck(a => Ops.CrossEntropy(a[0], soft, reduction: red), [x], what: "soft cross_entropy");
    }

    [Test]
    public void CrossEntropyRejectsBadTargets()
    {
        using var x = Tensor.Zeros([2, 3]);
        using var t = Tensor.FromArray(new long[] { 0, 3 }, 2);
        var ex = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(x, t))!;
        Assert.That(ex.Message, Does.Contain("cross_entropy").And.Contain("3").And.Contain("[2, 3]"));
        using var t2 = Tensor.FromArray(new long[] { 0, 1, 2 }, 3);
        ex = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(x, t2))!;
        Assert.That(ex.Message, Does.Contain("cross_entropy").And.Contain("[3]").And.Contain("[2, 3]"));
    }

    // ------------------------------------------------------------------ dropout

    [Test]
    public void DropoutForwardFollowsTheGeneratorStream()
    {
        const double p = 0.4;
        using var x = R([3, 7], 30);
        var gen = new Generator(99);
        gen.Reserve(10); // start somewhere other than offset 0
        ulong offset = gen.Offset;
        OpCheck.Forward(t => Ops.Dropout(t[0], p, true, gen), t =>
        {
            var xa = t[0].ToArray<double>();
            var y = xa.Select((v, i) => Philox.Uniform(99, offset, i) >= p ? v / (1 - p) : 0).ToArray();
            return Tensor.FromArray(y, t[0].Shape);
        }, [x]);
        Assert.That(gen.Offset, Is.EqualTo(offset + Philox.Counters(21)), "the draw reserves ⌈n/4⌉ counters");
    }

    [Test]
    public void DropoutGradient()
    {
        using var x = R([5, 3], 31);
        OpCheck.GradCheck(t => Ops.Dropout(t[0], 0.3, true, new Generator(5)), [x]);
    }

    [Test]
    public void DropoutInEvalModeIsTheIdentity()
    {
        using var x = R([4], 32);
        using var y = Ops.Dropout(x, 0.5, training: false);
        OpCheck.AssertClose(y, x, 0, 0);
        OpCheck.GradCheck(t => Ops.Dropout(t[0], 0.5, false), [x]);
    }

    [Test]
    public void DropoutWithoutGeneratorUsesTheDefault()
    {
        using var x = R([13], 33, grad: false);
        ulong before = Generator.Default.Offset;
        using var y = Ops.Dropout(x, 0.1, true);
        Assert.That(Generator.Default.Offset, Is.GreaterThanOrEqualTo(before + Philox.Counters(13)));
    }

    // ------------------------------------------------------------------ attention

    [TestCase(0.0)]
    [TestCase(0.3)]
    public void AttentionWithPaddingMask(double p)
    {
        const int b = 2, h = 2, l = 3, s = 5, d = 3;
        const double scale = 0.577;
        // sample 0: last two keys are padding; sample 1: last key
        double[] km = [0, 0, 0, -10000, -10000, 0, 0, 0, 0, -10000];
        using var mask64 = Tensor.FromArray(km, b, 1, 1, s);
        using var mask32 = mask64.To(DType.Float32);
        using var q = R([b, h, l, d], 40); using var k = R([b, h, s, d], 41); using var v = R([b, h, s, d], 42);
        OpCheck.Forward(t => Ops.Attention(t[0], t[1], t[2], mask32, scale, p, true, new Generator(8)),
            t => AttentionRef(t[0], t[1], t[2], km, scale, p, 8, 0), [q, k, v], what: "attention");
        OpCheck.GradCheck(t => Ops.Attention(t[0], t[1], t[2], mask64, scale, p, true, new Generator(8)), [q, k, v], what: "attention");
    }

    [Test]
    public void AttentionBatchOneOddLengthsNoMask()
    {
        const double scale = 0.5;
        using var q = R([1, 1, 1, 5], 43); using var k = R([1, 1, 3, 5], 44); using var v = R([1, 1, 3, 5], 45);
        OpCheck.Forward(t => Ops.Attention(t[0], t[1], t[2], null, scale), t => AttentionRef(t[0], t[1], t[2], null, scale, 0, 0, 0), [q, k, v]);
        OpCheck.GradCheck(t => Ops.Attention(t[0], t[1], t[2], null, scale), [q, k, v]);
    }

    [Test]
    public void AttentionOnSplitHeads()
    {
        // q/k/v as produced by a Linear and a head split: [B,L,H·D] → view [B,L,H,D] → permute to [B,H,L,D]
        const int b = 1, l = 3, hh = 2, d = 2;
        using var x = R([b, l, hh * d], 46);
        OpCheck.GradCheck(t =>
        {
            using var v4 = t[0].Reshape(b, l, hh, d);
            using var heads = v4.Permute(0, 2, 1, 3);
            return Ops.Attention(heads, heads, heads, null, 0.7, 0.2, true, new Generator(3));
        }, [x]);
    }

    [Test]
    public void AttentionOnSplitHeadsOfThreeProjectionsWithMaskAndDropout()
    {
        // BERT's layout: three [B,L,H·D] projections split into heads as views (no copy), the output merged back as a view;
        // gradients through the strided inputs, the [B,L,H,D]-ordered output and the strided output gradient.
        const int b = 2, l = 3, hh = 2, d = 2;
        double[] km = [0, 0, 0, 0, 0, -10000];
        using var mask = Tensor.FromArray(km, b, 1, 1, l);
        using var yq = R([b, l, hh * d], 55); using var yk = R([b, l, hh * d], 56); using var yv = R([b, l, hh * d], 57);
        static Tensor Heads(Tensor y) { using var r = y.Reshape(b, l, hh, d); return r.Permute(0, 2, 1, 3); }
        OpCheck.GradCheck(t =>
        {
            using var q = Heads(t[0]); using var k = Heads(t[1]); using var v = Heads(t[2]);
            using var o = Ops.Attention(q, k, v, mask, 0.6, 0.25, true, new Generator(9));
            using var merged = o.Permute(0, 2, 1, 3);
            Assert.That(merged.IsContiguous, Is.True, "the output is laid out [B,L,H,D]: the merge is a view");
            return merged.Reshape(b, l, hh * d);
        }, [yq, yk, yv], what: "attention on split heads");
    }

    [Test]
    public void AttentionInEvalModeIgnoresDropout()
    {
        using var q = R([1, 2, 3, 4], 47, grad: false); using var k = R([1, 2, 5, 4], 48, grad: false); using var v = R([1, 2, 5, 4], 49, grad: false);
        using var a = Ops.Attention(q, k, v, null, 0.5, 0.9, training: false);
        using var c = Ops.Attention(q, k, v, null, 0.5, 0.0);
        OpCheck.AssertClose(a, c, 0, 0);
    }

    [Test]
    public void AttentionRejectsABadMask()
    {
        using var q = Tensor.Zeros([1, 2, 3, 4]); using var k = Tensor.Zeros([1, 2, 5, 4]);
        using var m = Tensor.Zeros([1, 1, 1, 4]);
        var ex = Assert.Throws<ArgumentException>(() => Ops.Attention(q, k, k, m, 1))!;
        Assert.That(ex.Message, Does.Contain("attention").And.Contain("[1, 1, 1, 4]").And.Contain("[1, 2, 3, 5]"));
    }

    [Test]
    public void EmptyInputs()
    {
        using var a = R([0, 4], 60);
        using var sa = a.Softmax();
        Assert.That(sa.Shape, Is.EqualTo(new[] { 0, 4 }));
        using var b = R([2, 0], 61);
        using var lb = b.LogSoftmax(0);
        Assert.That(lb.Shape, Is.EqualTo(new[] { 2, 0 }));
        using var ln = a.LayerNorm(null, null);
        Assert.That(ln.Shape, Is.EqualTo(new[] { 0, 4 }));
        using var t = Tensor.Empty([0], DType.Int64);
        using var ce = Ops.CrossEntropy(a, t, reduction: Reduction.Sum);
        Assert.That(ce.Item(), Is.EqualTo(0));
        using var dr = Ops.Dropout(a, 0.5, true, new Generator(1));
        Assert.That(dr.Shape, Is.EqualTo(new[] { 0, 4 }));
        using var q = R([1, 1, 0, 3], 62); using var k = R([1, 1, 2, 3], 63);
        using var o = Ops.Attention(q, k, k, null, 1.0);
        Assert.That(o.Shape, Is.EqualTo(new[] { 1, 1, 0, 3 }));
    }

    // ------------------------------------------------------------------ VQ, top-k, sort

    [Test]
    public void VqLookupReturnsNearestCodes()
    {
        using var z = R([6, 4], 50, grad: false); using var e = R([9, 4], 51, grad: false);
        using var ids = Ops.VqLookup(z, e);
        var za = z.ToArray<double>(); var ea = e.ToArray<double>();
        var want = Enumerable.Range(0, 6).Select(i => (long)Enumerable.Range(0, 9)
            .OrderBy(j => Enumerable.Range(0, 4).Sum(c => Math.Pow(za[i * 4 + c] - ea[j * 4 + c], 2))).First()).ToArray();
        Assert.That(ids.DType, Is.EqualTo(DType.Int64));
        Assert.That(ids.ToArray<long>(), Is.EqualTo(want));
    }

    [Test]
    public void TopKAndSortForward()
    {
        using var x = Tensor.FromArray(new double[] { 4, 1, 4, 2, 0, 7, 7, 7 }, 2, 4);
        var (v, i) = x.TopK(2);
        using (v) using (i)
        {
            Assert.That(v.ToArray<double>(), Is.EqualTo(new double[] { 4, 4, 7, 7 }));
            Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 0, 2, 1, 2 }));
        }
        var (sv, si) = x.Sort();
        using (sv) using (si)
        {
            Assert.That(sv.ToArray<double>(), Is.EqualTo(new double[] { 1, 2, 4, 4, 0, 7, 7, 7 }));
            Assert.That(si.ToArray<long>(), Is.EqualTo(new long[] { 1, 3, 0, 2, 0, 1, 2, 3 }));
        }
    }

    [Test]
    public void TopKValuesGradient()
    {
        using var x = R([3, 5], 52);
        OpCheck.GradCheck(t => { var (v, i) = t[0].TopK(2, largest: false); i.Dispose(); return v; }, [x]);
        OpCheck.GradCheck(t => { var (v, i) = t[0].Sort(descending: true); i.Dispose(); return v; }, [x]);
    }
}
