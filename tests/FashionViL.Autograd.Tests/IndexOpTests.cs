using FashionViL.Autograd;
using FashionViL.Testing;
using static FashionViL.Testing.Coords;

namespace FashionViL.Autograd.Tests;

/// <summary>Joining / indexing ops: forward against float64 loop references, backward by finite differences.</summary>
public class IndexOpTests
{
    // ------------------------------------------------------------------ reference helpers

    private static double At(Tensor t, params int[] c) => t.ToArray<double>()[Ravel(c, t.Shape)];

    private static Tensor Longs(long[] v, params int[] shape) => Tensor.FromArray(v, shape);

    private static Tensor Int32s(long[] v, params int[] shape) { using var t = Tensor.FromArray(v, shape); return t.To(DType.Int32); }

    private static Tensor Mask(bool[] v, params int[] shape) => Tensor.FromArray(v, shape);

    /// <summary>Reference concatenation of float64 tensors along d.</summary>
    private static Tensor RefCat(Tensor[] xs, int d)
    {
        var shape = xs[0].Shape; shape[d] = xs.Sum(t => t.Sizes[d]);
        var vals = xs.Select(t => t.ToArray<double>()).ToArray();
        return FromFunction(shape, c =>
        {
            int k = 0, at = c[d];
            while (at >= xs[k].Sizes[d]) { at -= xs[k].Sizes[d]; k++; }
            var cc = (int[])c.Clone(); cc[d] = at;
            return vals[k][Ravel(cc, xs[k].Shape)];
        });
    }

    // ------------------------------------------------------------------ cat / stack / split

    [TestCase(0), TestCase(1), TestCase(-1)]
    public void CatForwardNonContiguous(int dim)
    {
        int d = dim < 0 ? dim + 2 : dim;
        int[][] shapes = d == 0 ? [[2, 3], [1, 3], [4, 3]] : [[2, 1], [2, 4], [2, 2]];
        var inputs = shapes.Select((s, i) => OpCheck.Rand(s, (ulong)(100 + i))).ToArray();
        OpCheck.Forward(t => Ops.Cat(t.Select(OpCheck.NonContiguous).ToArray(), dim), t => RefCat(t, d), inputs, what: $"cat dim {dim}");
    }

    [Test]
    public void CatWithEmptyPieceAndSingleInput()
    {
        using var a = OpCheck.Rand([2, 3], 1);
        using var e = Tensor.Empty([0, 3], DType.Float64);
        using var b = OpCheck.Rand([1, 3], 2);
        using var y = Ops.Cat([a, e, b], 0);
        OpCheck.AssertClose(y, RefCat([a, b], 0), 0, 0);
        using var one = Ops.Cat([a], 1);
        OpCheck.AssertClose(one, a, 0, 0);
    }

    [Test]
    public void CatGradCheckDim0AndLast()
    {
        // a is used through a transpose: a non-contiguous input. c needs no gradient.
        var a = OpCheck.Rand([3, 2], 3, requiresGrad: true);
        var b = OpCheck.Rand([1, 3], 4, requiresGrad: true);
        var c = OpCheck.Rand([2, 3], 5);
        OpCheck.GradCheck(t => Ops.Cat([t[0].T, t[1], t[2]], 0), [a, b, c], what: "cat dim 0");
        var p = OpCheck.Rand([2, 2, 1], 6, requiresGrad: true);
        var q = OpCheck.Rand([2, 2, 3], 7, requiresGrad: true);
        OpCheck.GradCheck(t => Ops.Cat([t[1], t[0], t[1]], -1), [p, q], what: "cat dim -1, repeated input");
    }

    [Test]
    public void CatErrorsNameTheOffendingTensor()
    {
        using var a = OpCheck.Rand([2, 3], 1);
        using var b = OpCheck.Rand([2, 3], 2, DType.Float32);
        using var c = OpCheck.Rand([2, 4], 3);
        var e = Assert.Throws<ArgumentException>(() => Ops.Cat([a, a, b], 0));
        Assert.That(e!.Message, Does.Contain("cat").And.Contain("tensor 2 [2, 3]").And.Contain("float32").And.Contain("float64"));
        e = Assert.Throws<ArgumentException>(() => Ops.Cat([a, c], 0));
        Assert.That(e!.Message, Does.Contain("tensor 1 [2, 4]").And.Contain("tensor 0 [2, 3]").And.Contain("dim 1"));
        using var r = OpCheck.Rand([2, 3, 1], 4);
        e = Assert.Throws<ArgumentException>(() => Ops.Cat([a, r], 0));
        Assert.That(e!.Message, Does.Contain("tensor 1 [2, 3, 1]").And.Contain("rank"));
        Assert.Throws<ArgumentException>(() => Ops.Cat([], 0));
    }

    [TestCase(0), TestCase(1), TestCase(2), TestCase(-1)]
    public void StackForwardAndGrad(int dim)
    {
        int d = dim < 0 ? dim + 3 : dim;
        var xs = Enumerable.Range(0, 3).Select(i => OpCheck.Rand([2, 3], (ulong)(10 + i), requiresGrad: true)).ToArray();
        OpCheck.Forward(t => Ops.Stack(t, dim), t =>
        {
            var shape = new List<int> { 2, 3 }; shape.Insert(d, 3);
            var vals = t.Select(v => v.ToArray<double>()).ToArray();
            return FromFunction(shape.ToArray(), c => { var l = c.ToList(); int k = l[d]; l.RemoveAt(d); return vals[k][Ravel(l.ToArray(), [2, 3])]; });
        }, xs, what: $"stack dim {dim}");
        OpCheck.GradCheck(t => Ops.Stack(t, dim), xs, what: $"stack dim {dim}");
    }

    [Test]
    public void StackShapeMismatchNamesTensor()
    {
        using var a = OpCheck.Rand([2, 3], 1);
        using var b = OpCheck.Rand([3, 2], 2);
        var e = Assert.Throws<ArgumentException>(() => Ops.Stack([a, a, b], 0));
        Assert.That(e!.Message, Does.Contain("stack").And.Contain("tensor 2 [3, 2]").And.Contain("[2, 3]"));
    }

    [Test]
    public void ChunkAndSplitShapesValuesAndGrad()
    {
        using var x = OpCheck.Rand([7, 2], 20);
        var chunks = x.Chunk(3, 0);
        Assert.That(chunks.Select(c => c.Sizes[0]), Is.EqualTo(new[] { 3, 3, 1 }));
        for (int k = 0; k < 3; k++)
            OpCheck.AssertClose(chunks[k], FromFunction(chunks[k].Shape, c => At(x, c[0] + 3 * k, c[1])), 0, 0, $"chunk {k}");
        var small = x.Chunk(10, 1);
        Assert.That(small.Length, Is.EqualTo(2), "fewer chunks than asked when the dim is short");
        var split = x.Split(2, 1);
        Assert.That(split.Length, Is.EqualTo(1));
        var parts = x.Split([2, 0, 5], 0);
        Assert.That(parts.Select(c => c.Sizes[0]), Is.EqualTo(new[] { 2, 0, 5 }));
        OpCheck.AssertClose(parts[2], FromFunction([5, 2], c => At(x, c[0] + 2, c[1])), 0, 0);
        Assert.Throws<ArgumentException>(() => x.Split([2, 2], 0));
        Assert.Throws<ArgumentException>(() => x.Chunk(0, 0));

        var g = OpCheck.Rand([2, 7], 21, requiresGrad: true);
        OpCheck.GradCheck(t => { var p = t[0].Split(3, 1); return Ops.Cat([p[2], p[0], p[0]], 1); }, [g], what: "split");
        OpCheck.GradCheck(t => { var p = t[0].T.Chunk(2, 0); return p[1].Mul(p[1]); }, [g], what: "chunk of a transpose");
    }

    // ------------------------------------------------------------------ index_select / gather / scatter

    [TestCase(0, DType.Int64), TestCase(1, DType.Int32), TestCase(-1, DType.Int64)]
    public void IndexSelectForwardAndGrad(int dim, DType idxType)
    {
        int[] xs = [4, 3, 5];
        int d = dim < 0 ? dim + 3 : dim;
        long[] idx = [xs[d] - 1, 0, 2, 0, 0];
        using var i64 = Longs(idx, idx.Length);
        using var index = i64.To(idxType);
        var x = OpCheck.Rand(xs, 30, requiresGrad: true);
        OpCheck.Forward(t => t[0].IndexSelect(dim, t[1]), t =>
        {
            var ys = (int[])xs.Clone(); ys[d] = idx.Length;
            return FromFunction(ys, c => { var cc = (int[])c.Clone(); cc[d] = (int)idx[c[d]]; return At(t[0], cc); });
        }, [x, index], what: "index_select");
        OpCheck.GradCheck(t => t[0].IndexSelect(dim, t[1]), [x, index], what: "index_select (duplicates)");
    }

    [Test]
    public void IndexSelectNonContiguousEmptyAndErrors()
    {
        var x = OpCheck.Rand([3, 4], 31, requiresGrad: true);
        using var index = Int32s([3, 1, 3], 3);
        // x.T is [4, 3] with strides [1, 4].
        OpCheck.Forward(t => t[0].T.IndexSelect(0, t[1]), t => FromFunction([3, 3], c => At(t[0], c[1], (int)new long[] { 3, 1, 3 }[c[0]])), [x, index]);
        OpCheck.GradCheck(t => t[0].T.IndexSelect(0, t[1]), [x, index], what: "index_select of a transpose");
        using var empty = Tensor.Empty([0], DType.Int64);
        using (var y = x.IndexSelect(1, empty)) Assert.That(y.Shape, Is.EqualTo(new[] { 3, 0 }));
        using var f = Tensor.FromArray(new double[] { 0, 1 });
        var e = Assert.Throws<ArgumentException>(() => x.IndexSelect(0, f));
        Assert.That(e!.Message, Does.Contain("index_select").And.Contain("int64 or int32").And.Contain("float64"));
        using var i2 = Longs([0, 1], 1, 2);
        e = Assert.Throws<ArgumentException>(() => x.IndexSelect(0, i2));
        Assert.That(e!.Message, Does.Contain("[1, 2]").And.Contain("[3, 4]"));
        using var bad = Longs([0, 3], 2);
        var oe = Assert.Throws<ArgumentOutOfRangeException>(() => x.IndexSelect(0, bad));
        Assert.That(oe!.Message, Does.Contain("index 3").And.Contain("size 3"));
    }

    [TestCase(0), TestCase(1)]
    public void GatherForwardAndGrad(int dim)
    {
        int[] xs = [3, 4];
        // index smaller than x in the other dim and with duplicates along dim.
        // Longer than x along dim (duplicates), shorter than x in the other dim.
        int[] ishape = dim == 0 ? [5, 2] : [2, 6];
        var idx = Enumerable.Range(0, 10 + 2 * dim).Select(p => (long)((p * 5 + 2) % xs[dim])).ToArray();
        using var index = Longs(idx, ishape);
        var x = OpCheck.Rand(xs, 40, requiresGrad: true);
        OpCheck.Forward(t => t[0].Gather(dim, t[1]), t => FromFunction(ishape, c =>
        {
            var cc = (int[])c.Clone(); cc[dim] = (int)idx[Ravel(c, ishape)]; return At(t[0], cc);
        }), [x, index], what: $"gather dim {dim}");
        OpCheck.GradCheck(t => t[0].Gather(dim, t[1]), [x, index], what: $"gather dim {dim}");
        // Non-contiguous input through a transpose.
        OpCheck.GradCheck(t => t[0].T.Gather(1 - dim, t[1]), [x, index.T], what: "gather of a transpose");
    }

    [Test]
    public void GatherErrors()
    {
        using var x = OpCheck.Rand([3, 4], 41);
        using var i1 = Longs([0, 1], 2);
        var e = Assert.Throws<ArgumentException>(() => x.Gather(1, i1));
        Assert.That(e!.Message, Does.Contain("gather").And.Contain("[2]").And.Contain("[3, 4]"));
        using var f = Tensor.Zeros([3, 1], DType.Float32);
        e = Assert.Throws<ArgumentException>(() => x.Gather(1, f));
        Assert.That(e!.Message, Does.Contain("int64 or int32"));
        using var neg = Longs([0, -1, 0], 3, 1);
        var oe = Assert.Throws<ArgumentOutOfRangeException>(() => x.Gather(1, neg));
        Assert.That(oe!.Message, Does.Contain("index -1").And.Contain("size 4"));
    }

    private static Tensor RefScatter(Tensor x, int dim, long[] idx, int[] ishape, Tensor src, bool add)
    {
        var y = x.ToArray<double>(); var s = src.ToArray<double>();
        for (int p = 0; p < idx.Length; p++)
        {
            var c = Unravel(p, ishape);
            double v = s[Ravel(c, src.Shape)];
            c[dim] = (int)idx[p];
            int q = Ravel(c, x.Shape);
            y[q] = add ? y[q] + v : v;
        }
        return Tensor.FromArray(y, x.Shape);
    }

    [TestCase(0), TestCase(1)]
    public void ScatterAddForwardAndGrad(int dim)
    {
        int[] xs = [3, 4];
        int[] ishape = dim == 0 ? [5, 3] : [2, 6];
        int[] ss = dim == 0 ? [6, 4] : [3, 6]; // source larger than the index
        var idx = Enumerable.Range(0, ishape[0] * ishape[1]).Select(p => (long)((p * 7 + 1) % xs[dim])).ToArray();
        using var index = Longs(idx, ishape);
        var x = OpCheck.Rand(xs, 50, requiresGrad: true);
        var src = OpCheck.Rand(ss, 51, requiresGrad: true);
        OpCheck.Forward(t => t[0].ScatterAdd(dim, t[1], t[2]), t => RefScatter(t[0], dim, idx, ishape, t[2], true), [x, index, src], what: "scatter_add");
        OpCheck.GradCheck(t => t[0].ScatterAdd(dim, t[1], t[2]), [x, index, src], what: "scatter_add");
        using var x0 = x.Detach();
        OpCheck.GradCheck(t => t[0].ScatterAdd(dim, t[1], t[2]), [x0, index, src], what: "scatter_add, only src requires grad");
    }

    [TestCase(0), TestCase(1)]
    public void ScatterForwardAndGrad(int dim)
    {
        int[] xs = [4, 5];
        int[] ishape = dim == 0 ? [3, 4] : [3, 2];
        int[] ss = dim == 0 ? [3, 5] : [4, 3];
        // No duplicates along dim within a column (overwrite order would be unspecified).
        var idx = new long[ishape[0] * ishape[1]];
        for (int p = 0; p < idx.Length; p++) { var c = Unravel(p, ishape); idx[p] = (3 * c[dim] + c[1 - dim]) % xs[dim]; }
        using var index = Longs(idx, ishape);
        var x = OpCheck.Rand(xs, 52, requiresGrad: true);
        var src = OpCheck.Rand(ss, 53, requiresGrad: true);
        OpCheck.Forward(t => t[0].Scatter(dim, t[1], t[2]), t => RefScatter(t[0], dim, idx, ishape, t[2], false), [x, index, src], what: "scatter");
        OpCheck.GradCheck(t => t[0].Scatter(dim, t[1], t[2]), [x, index, src], what: "scatter");
        // x through a transpose (non-contiguous); the out-of-place result leaves x untouched.
        var xt = OpCheck.Rand([xs[1], xs[0]], 54, requiresGrad: true);
        var before = xt.ToArray<double>();
        OpCheck.GradCheck(t => t[0].T.Scatter(dim, t[1], t[2]), [xt, index, src], what: "scatter into a transpose");
        Assert.That(xt.ToArray<double>(), Is.EqualTo(before));
    }

    [Test]
    public void ScatterErrors()
    {
        using var x = OpCheck.Rand([3, 4], 55);
        using var src = OpCheck.Rand([3, 4], 56);
        using var src32 = OpCheck.Rand([3, 4], 56, DType.Float32);
        using var index = Longs([0, 1, 2], 3, 1);
        var e = Assert.Throws<ArgumentException>(() => x.ScatterAdd(1, index, src32));
        Assert.That(e!.Message, Does.Contain("scatter_add").And.Contain("float32"));
        using var i1 = Longs([0, 1], 2);
        e = Assert.Throws<ArgumentException>(() => x.Scatter(0, i1, src));
        Assert.That(e!.Message, Does.Contain("scatter").And.Contain("[2]").And.Contain("[3, 4]"));
        using var bad = Longs([0, 4, 2], 3, 1);
        var oe = Assert.Throws<ArgumentOutOfRangeException>(() => x.ScatterAdd(1, bad, src));
        Assert.That(oe!.Message, Does.Contain("index 4").And.Contain("size 4"));
    }

    // ------------------------------------------------------------------ masked ops and where

    [Test]
    public void MaskedSelectForwardAndGradWithBroadcasting()
    {
        var x = OpCheck.Rand([3, 4], 60, requiresGrad: true);
        using var rowMask = Mask([true, false, true, true], 1, 4);
        bool[] mv = [true, false, true, true];
        OpCheck.Forward(t => t[0].MaskedSelect(t[1]), t =>
        {
            var v = t[0].ToArray<double>();
            var sel = v.Where((_, i) => mv[i % 4]).ToArray();
            return Tensor.FromArray(sel, sel.Length);
        }, [x, rowMask], what: "masked_select, broadcast mask");
        OpCheck.GradCheck(t => t[0].MaskedSelect(t[1]), [x, rowMask], what: "masked_select");

        // x is broadcast against a larger mask: its gradient sums over the broadcast dim.
        var xr = OpCheck.Rand([1, 4], 61, requiresGrad: true);
        using var full = new Generator(62).Bernoulli([3, 4], 0.5, DType.Bool);
        var fm = full.ToArray<bool>();
        OpCheck.Forward(t => t[0].MaskedSelect(t[1]), t =>
        {
            var v = t[0].ToArray<double>();
            var sel = Enumerable.Range(0, 12).Where(i => fm[i]).Select(i => v[i % 4]).ToArray();
            return Tensor.FromArray(sel, sel.Length);
        }, [xr, full], what: "masked_select, broadcast input");
        OpCheck.GradCheck(t => t[0].MaskedSelect(t[1]), [xr, full], what: "masked_select, broadcast input");

        using var none = Tensor.Zeros([3, 4], DType.Bool);
        using var y = x.MaskedSelect(none);
        Assert.That(y.Shape, Is.EqualTo(new[] { 0 }));
        using var fmask = Tensor.Zeros([3, 4]);
        var e = Assert.Throws<ArgumentException>(() => x.MaskedSelect(fmask));
        Assert.That(e!.Message, Does.Contain("masked_select").And.Contain("bool"));
        using var wrong = Tensor.Zeros([2, 4], DType.Bool);
        e = Assert.Throws<ArgumentException>(() => x.MaskedSelect(wrong));
        Assert.That(e!.Message, Does.Contain("[3, 4]").And.Contain("[2, 4]"));
    }

    [Test]
    public void MaskedFillForwardAndGrad()
    {
        var x = OpCheck.Rand([2, 3, 4], 63, requiresGrad: true);
        using var mask = new Generator(64).Bernoulli([3, 1], 0.5, DType.Bool);
        var mv = mask.ToArray<bool>();
        OpCheck.Forward(t => t[0].MaskedFill(t[1], -7.5), t => FromFunction([2, 3, 4], c => mv[c[1]] ? -7.5 : At(t[0], c)), [x, mask], what: "masked_fill");
        OpCheck.GradCheck(t => t[0].MaskedFill(t[1], -1e4), [x, mask], what: "masked_fill");
        OpCheck.GradCheck(t => t[0].Permute(0, 2, 1).MaskedFill(t[1], 3), [x, Mask([true, false, false, true], 4, 1)], what: "masked_fill of a permute");
        // Gradient is exactly zero where filled.
        using (Tensor.Scope())
        {
            var x2 = OpCheck.Rand([3, 4], 65, requiresGrad: true);
            using var m2 = Mask([false, true, false, false], 4);
            x2.MaskedFill(m2, 0).Sum().Backward();
            var g = x2.Grad!.ToArray<double>();
            for (int i = 0; i < 12; i++) Assert.That(g[i], Is.EqualTo(i % 4 == 1 ? 0.0 : 1.0));
        }
        // Integer tensors (labels) can be filled too.
        using var labels = Longs([1, 2, 3, 4], 4);
        using var lm = Mask([false, true, true, false], 4);
        using var filled = labels.MaskedFill(lm, -100);
        Assert.That(filled.ToArray<long>(), Is.EqualTo(new long[] { 1, -100, -100, 4 }));
        using var big = Tensor.Zeros([5, 3, 4], DType.Bool);
        var e = Assert.Throws<ArgumentException>(() => x.MaskedFill(big, 0));
        Assert.That(e!.Message, Does.Contain("masked_fill").And.Contain("[5, 3, 4]").And.Contain("[2, 3, 4]"));
    }

    [Test]
    public void WhereForwardWithBroadcastingAndGrad()
    {
        using var cond = new Generator(70).Bernoulli([3, 1], 0.5, DType.Bool);
        var cv = cond.ToArray<bool>();
        var a = OpCheck.Rand([1, 4], 71, requiresGrad: true);
        var b = OpCheck.Rand([2, 3, 4], 72, requiresGrad: true);
        OpCheck.Forward(t => Ops.Where(t[0], t[1], t[2]), t => FromFunction([2, 3, 4], c => cv[c[1]] ? At(t[1], 0, c[2]) : At(t[2], c)), [cond, a, b], what: "where");
        OpCheck.GradCheck(t => Ops.Where(t[0], t[1], t[2]), [cond, a, b], what: "where");
        var bt = OpCheck.Rand([4, 3], 73, requiresGrad: true);
        OpCheck.GradCheck(t => Ops.Where(t[0], t[1], t[2].T), [cond, a, bt], what: "where, transposed b");
        using var fc = Tensor.Zeros([3, 1]);
        var e = Assert.Throws<ArgumentException>(() => Ops.Where(fc, a, b));
        Assert.That(e!.Message, Does.Contain("where").And.Contain("bool"));
        using var bad = OpCheck.Rand([2, 5], 74);
        e = Assert.Throws<ArgumentException>(() => Ops.Where(cond, a, bad));
        Assert.That(e!.Message, Does.Contain("where").And.Contain("[2, 5]"));
    }

    // ------------------------------------------------------------------ embedding / one_hot

    [TestCase(DType.Int64), TestCase(DType.Int32)]
    public void EmbeddingForwardAndGrad(DType idType)
    {
        long[] ids = [3, 0, 3, 4, 1, 3];
        using var id64 = Longs(ids, 2, 3);
        using var idt = id64.To(idType);
        var w = OpCheck.Rand([5, 4], 80, requiresGrad: true);
        OpCheck.Forward(t => Ops.Embedding(t[0], t[1]), t => FromFunction([2, 3, 4], c => At(t[1], (int)ids[c[0] * 3 + c[1]], c[2])), [idt, w], what: "embedding");
        OpCheck.GradCheck(t => Ops.Embedding(t[0], t[1]), [idt, w], what: "embedding (repeated ids)");
        // Non-contiguous ids.
        OpCheck.GradCheck(t => Ops.Embedding(t[0].T, t[1]), [idt, w], what: "embedding, transposed ids");
    }

    [Test]
    public void EmbeddingPaddingRowGetsNoGradient()
    {
        long[] ids = [2, 0, 2, 1, 2, 3];
        using var idt = Longs(ids, 3, 2);
        using var scope = Tensor.Scope();
        var w = OpCheck.Rand([4, 3], 81, requiresGrad: true);
        var y = Ops.Embedding(idt, w, paddingIdx: 2);
        OpCheck.AssertClose(y, FromFunction([3, 2, 3], c => At(w, (int)ids[c[0] * 2 + c[1]], c[2])), 0, 0, "forward still looks up the padding row");
        var gy = OpCheck.Rand([3, 2, 3], 82);
        y.Backward(gy);
        var g = gy.ToArray<double>();
        var want = new double[12];
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] != 2) for (int k = 0; k < 3; k++) want[ids[i] * 3 + k] += g[i * 3 + k];
        OpCheck.AssertClose(w.Grad!, want, 1e-12, 1e-12, "embedding grad");
        Assert.That(w.Grad!.ToArray<double>().Skip(6).Take(3), Is.All.EqualTo(0.0), "padding row");
    }

    [Test]
    public void EmbeddingErrors()
    {
        using var w = OpCheck.Rand([4, 3], 83);
        using var bad = Longs([0, 4], 2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Embedding(bad, w));
        Assert.That(e!.Message, Does.Contain("index 4").And.Contain("size 4"));
        using var f = Tensor.Zeros([2]);
        var e2 = Assert.Throws<ArgumentException>(() => Ops.Embedding(f, w));
        Assert.That(e2!.Message, Does.Contain("embedding").And.Contain("int64 or int32"));
        using var ok = Longs([0, 1], 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => Ops.Embedding(ok, w, paddingIdx: 4));
        using var w1 = OpCheck.Rand([4], 84);
        e2 = Assert.Throws<ArgumentException>(() => Ops.Embedding(ok, w1));
        Assert.That(e2!.Message, Does.Contain("[4]"));
    }

    [Test]
    public void OneHot()
    {
        long[] labels = [2, 0, 3, 3, 1, 0];
        using var l = Longs(labels, 2, 3);
        using var y = l.OneHot(5);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, 5 }));
        Assert.That(y.DType, Is.EqualTo(DType.Int64));
        using var want = FromFunction([2, 3, 5], c => labels[c[0] * 3 + c[1]] == c[2] ? 1 : 0);
        OpCheck.AssertClose(y, want, 0, 0);
        using var l32 = Int32s(labels, 6);
        using var yf = l32.OneHot(dtype: DType.Float32);
        Assert.That(yf.Shape, Is.EqualTo(new[] { 6, 4 }), "classes inferred from the largest label");
        Assert.That(yf.DType, Is.EqualTo(DType.Float32));
        using var wantF = FromFunction([6, 4], c => labels[c[0]] == c[1] ? 1 : 0);
        OpCheck.AssertClose(yf, wantF, 0, 0);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => l.OneHot(3));
        Assert.That(e!.Message, Does.Contain("one_hot").And.Contain("label 3"));
        using var f = Tensor.Zeros([3]);
        Assert.Throws<ArgumentException>(() => f.OneHot(2));
    }
}
