using FashionViL.Kernels.Cpu;
using FashionViL.Testing;
using static FashionViL.Testing.Coords;

namespace FashionViL.Kernels.Tests;

/// <summary>CPU index kernels against float64 scalar references written here (unravel / ravel loops).</summary>
public class IndexKernelTests
{
    private static IBackend Cpu => Backends.Get(Device.Cpu);

    // ------------------------------------------------------------------ reference helpers

    private static double[] RefIndexSelect(double[] x, int[] xs, int dim, long[] idx)
    {
        var ys = (int[])xs.Clone(); ys[dim] = idx.Length;
        var y = new double[Numel(ys)];
        for (int p = 0; p < y.Length; p++) { var c = Unravel(p, ys); c[dim] = (int)idx[c[dim]]; y[p] = x[Ravel(c, xs)]; }
        return y;
    }

    private static double[] RefIndexAdd(double[] dst, int[] ds, int dim, long[] idx, double[] src, int[] ss)
    {
        var y = (double[])dst.Clone();
        for (int p = 0; p < src.Length; p++) { var c = Unravel(p, ss); c[dim] = (int)idx[c[dim]]; y[Ravel(c, ds)] += src[p]; }
        return y;
    }

    private static double[] RefGather(double[] x, int[] xs, int dim, long[] idx, int[] ishape)
    {
        var y = new double[idx.Length];
        for (int p = 0; p < idx.Length; p++) { var c = Unravel(p, ishape); c[dim] = (int)idx[p]; y[p] = x[Ravel(c, xs)]; }
        return y;
    }

    private static double[] RefScatter(double[] dst, int[] ds, int dim, long[] idx, int[] ishape, double[] src, int[] ss, bool add)
    {
        var y = (double[])dst.Clone();
        for (int p = 0; p < idx.Length; p++)
        {
            var c = Unravel(p, ishape);
            double v = src[Ravel(c, ss)];
            c[dim] = (int)idx[p];
            int q = Ravel(c, ds);
            y[q] = add ? y[q] + v : v;
        }
        return y;
    }

    private static Tensor Ints(long[] v, int[] shape, DType dtype) { using var t = Tensor.FromArray(v, shape); return t.To(dtype); }

    private static long[] RandIdx(int n, int high, ulong seed) { using var t = new Generator(seed).RandInt([n], 0, high); return t.ToArray<long>(); }

    private static DType[] Floats => [DType.Float32, DType.Float64];

    // ------------------------------------------------------------------ index_select

    [TestCase(DType.Float32, 0), TestCase(DType.Float64, 1), TestCase(DType.Float64, 2), TestCase(DType.Float32, -1)]
    public void IndexSelectMatchesReferenceWithDuplicates(DType dtype, int dim)
    {
        int[] xs = [3, 4, 5];
        int d = dim < 0 ? dim + 3 : dim;
        using var x64 = OpCheck.Rand(xs, 1);
        using var x = x64.To(dtype);
        long[] idx = [xs[d] - 1, 0, 1, 0, xs[d] - 1];
        using var index = Tensor.FromArray(idx);
        var ys = (int[])xs.Clone(); ys[d] = idx.Length;
        using var y = Tensor.Empty(ys, dtype);
        Cpu.IndexSelect(x, dim, index, y);
        OpCheck.AssertClose(y.ToArray<double>(), RefIndexSelect(x.ToArray<double>(), xs, d, idx), 0, 0, "index_select");
    }

    [Test]
    public void IndexSelectNonContiguousInputAndInt32Index()
    {
        using var x64 = OpCheck.Rand([4, 6], 2);
        using var xt = x64.AsStrided([6, 4], [1, 6], 0); // transpose view
        using var index = Ints([5, 5, 2, 0], [4], DType.Int32);
        using var y = Tensor.Empty([4, 4], DType.Float64);
        Cpu.IndexSelect(xt, 0, index, y);
        using var xc = xt.ContiguousRaw();
        OpCheck.AssertClose(y.ToArray<double>(), RefIndexSelect(xc.ToArray<double>(), [6, 4], 0, [5, 5, 2, 0]), 0, 0);
    }

    [TestCase(DType.Int64), TestCase(DType.Int32)]
    public void IndexSelectGathersIntegerLabels(DType dtype)
    {
        using var labels = Ints([7, -100, 3, 9, 0], [5], dtype);
        using var index = Tensor.FromArray(new long[] { 4, 2, 2, 0 });
        using var y = Tensor.Empty([4], dtype);
        Cpu.IndexSelect(labels, 0, index, y);
        Assert.That(y.ToArray<long>(), Is.EqualTo(new long[] { 0, 3, 3, 7 }));
    }

    [Test]
    public void IndexSelectEmptyIndex()
    {
        using var x = OpCheck.Rand([3, 4], 3);
        using var index = Tensor.Empty([0], DType.Int64);
        using var y = Tensor.Empty([3, 0], DType.Float64);
        Cpu.IndexSelect(x, 1, index, y);
        Assert.That(y.Shape, Is.EqualTo(new[] { 3, 0 }));
    }

    [TestCase(4L), TestCase(-1L), TestCase(100L)]
    public void IndexSelectOutOfRangeThrowsNamingValueAndSize(long bad)
    {
        using var x = OpCheck.Rand([3, 4], 3);
        using var index = Tensor.FromArray(new long[] { 0, bad });
        using var y = Tensor.Empty([3, 2], DType.Float64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.IndexSelect(x, 1, index, y));
        Assert.That(e!.Message, Does.Contain("index_select").And.Contain($"index {bad}").And.Contain("size 4"));
    }

    [Test]
    public void IndexSelectRejectsFloatIndexAndWrongOutput()
    {
        using var x = OpCheck.Rand([3, 4], 3);
        using var findex = Tensor.FromArray(new double[] { 0, 1 });
        using var y = Tensor.Empty([3, 2], DType.Float64);
        var e = Assert.Throws<ArgumentException>(() => Cpu.IndexSelect(x, 1, findex, y));
        Assert.That(e!.Message, Does.Contain("index_select").And.Contain("float64"));
        using var index = Tensor.FromArray(new long[] { 0, 1 });
        using var bad = Tensor.Empty([2, 2], DType.Float64);
        e = Assert.Throws<ArgumentException>(() => Cpu.IndexSelect(x, 1, index, bad));
        Assert.That(e!.Message, Does.Contain("[2, 2]").And.Contain("[3, 4]"));
    }

    // ------------------------------------------------------------------ index_add

    [TestCase(DType.Float32, 0, DType.Int64), TestCase(DType.Float64, 1, DType.Int32), TestCase(DType.Float64, 2, DType.Int64)]
    public void IndexAddAccumulatesDuplicates(DType dtype, int dim, DType idxType)
    {
        int[] ds = [4, 3, 5];
        long[] idx = [1, 0, 1, 1, ds[dim] - 1, 0];
        var ss = (int[])ds.Clone(); ss[dim] = idx.Length;
        using var dst64 = OpCheck.Rand(ds, 10);
        using var src64 = OpCheck.Rand(ss, 11);
        using var dst = dst64.To(dtype);
        using var src = src64.To(dtype);
        using var index = Ints(idx, [idx.Length], idxType);
        var want = RefIndexAdd(dst.ToArray<double>(), ds, dim, idx, src.ToArray<double>(), ss);
        Cpu.IndexAdd(dst, dim, index, src);
        OpCheck.AssertClose(dst.ToArray<double>(), want, dtype == DType.Float32 ? 1e-6 : 1e-14, 1e-6, "index_add");
    }

    [Test]
    public void IndexAddNonContiguousDestination()
    {
        using var dst64 = OpCheck.Rand([5, 4], 12);
        using var dstT = OpCheck.NonContiguous(dst64);
        using var src = OpCheck.Rand([5, 3], 13);
        long[] idx = [3, 3, 0];
        using var index = Tensor.FromArray(idx);
        var want = RefIndexAdd(dst64.ToArray<double>(), [5, 4], 1, idx, src.ToArray<double>(), [5, 3]);
        Cpu.IndexAdd(dstT, 1, index, src);
        Assert.That(dstT.IsContiguous, Is.False);
        OpCheck.AssertClose(dstT.ToArray<double>(), want, 1e-14, 1e-14);
    }

    [Test]
    public void IndexAddEmptyIndexLeavesDestination()
    {
        using var dst = OpCheck.Rand([3, 4], 14);
        var before = dst.ToArray<double>();
        using var index = Tensor.Empty([0], DType.Int64);
        using var src = Tensor.Empty([3, 0], DType.Float64);
        Cpu.IndexAdd(dst, 1, index, src);
        Assert.That(dst.ToArray<double>(), Is.EqualTo(before));
    }

    [Test]
    public void IndexAddOutOfRangeThrowsBeforeWriting()
    {
        using var dst = OpCheck.Rand([3, 4], 15);
        var before = dst.ToArray<double>();
        using var index = Tensor.FromArray(new long[] { 0, 1, 3 });
        using var src = OpCheck.Rand([3, 4], 16);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.IndexAdd(dst, 0, index, src));
        Assert.That(e!.Message, Does.Contain("index_add").And.Contain("index 3").And.Contain("size 3"));
        Assert.That(dst.ToArray<double>(), Is.EqualTo(before));
    }

    [Test]
    public void IndexAddLargeIsDeterministicAcrossThreadCounts()
    {
        // Big enough to split over threads; heavy duplicates (200 rows into 7).
        int n = 200, size = 7, outer = 3, inner = 300;
        var idx = RandIdx(n, size, 17);
        using var index = Tensor.FromArray(idx);
        using var src = OpCheck.Rand([outer, n, inner], 18, DType.Float32, -10, 10);
        using var d1 = Tensor.Zeros([outer, size, inner]);
        using var d2 = Tensor.Zeros([outer, size, inner]);
        int saved = Parallelism.MaxThreads;
        try
        {
            Parallelism.MaxThreads = 1;
            Cpu.IndexAdd(d1, 1, index, src);
            Parallelism.MaxThreads = Math.Max(2, saved);
            Cpu.IndexAdd(d2, 1, index, src);
        }
        finally { Parallelism.MaxThreads = saved; }
        Assert.That(d2.ToArray<float>(), Is.EqualTo(d1.ToArray<float>()), "bitwise equal");
        var want = RefIndexAdd(new double[outer * size * inner], [outer, size, inner], 1, idx, src.ToArray<double>(), [outer, n, inner]);
        OpCheck.AssertClose(d1.ToArray<double>(), want, 1e-5, 1e-4);
    }

    // ------------------------------------------------------------------ gather / scatter

    [TestCase(DType.Float32, 0), TestCase(DType.Float64, 1), TestCase(DType.Float64, 2)]
    public void GatherMatchesReference(DType dtype, int dim)
    {
        int[] xs = [4, 5, 6];
        int[] ishape = [3, 4, 5]; // smaller than x in every dim
        ishape[dim] = 7;          // and longer along dim (duplicates)
        var idx = RandIdx(Numel(ishape), xs[dim], (ulong)(20 + dim));
        using var x64 = OpCheck.Rand(xs, 21);
        using var x = x64.To(dtype);
        using var index = Ints(idx, ishape, DType.Int64);
        using var y = Tensor.Empty(ishape, dtype);
        Cpu.Gather(x, dim, index, y);
        OpCheck.AssertClose(y.ToArray<double>(), RefGather(x.ToArray<double>(), xs, dim, idx, ishape), 0, 0, "gather");
    }

    [Test]
    public void GatherNonContiguousInputInt32IndexAndInt64Data()
    {
        using var x64 = OpCheck.Rand([5, 4], 22, DType.Float64, -50, 50);
        using var xl = x64.To(DType.Int64);
        using var xt = OpCheck.NonContiguous(xl);
        long[] idx = [3, 0, 0, 4, 1, 2, 2, 2];
        using var index = Ints(idx, [2, 4], DType.Int32);
        using var y = Tensor.Empty([2, 4], DType.Int64);
        Cpu.Gather(xt, 0, index, y);
        OpCheck.AssertClose(y.ToArray<double>(), RefGather(xl.ToArray<double>(), [5, 4], 0, idx, [2, 4]), 0, 0);
    }

    [Test]
    public void GatherOutOfRangeAndShapeErrors()
    {
        using var x = OpCheck.Rand([3, 4], 23);
        using var index = Tensor.FromArray(new long[] { 0, 4, 1 }, [3, 1]);
        using var y = Tensor.Empty([3, 1], DType.Float64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.Gather(x, 1, index, y));
        Assert.That(e!.Message, Does.Contain("gather").And.Contain("index 4").And.Contain("size 4"));
        using var big = Tensor.Zeros([5, 1], DType.Int64);
        using var y5 = Tensor.Empty([5, 1], DType.Float64);
        var e2 = Assert.Throws<ArgumentException>(() => Cpu.Gather(x, 1, big, y5));
        Assert.That(e2!.Message, Does.Contain("[5, 1]").And.Contain("[3, 4]"));
    }

    [TestCase(DType.Float32, 0, true), TestCase(DType.Float64, 1, true), TestCase(DType.Float64, 2, true), TestCase(DType.Float32, 1, false)]
    public void ScatterMatchesReference(DType dtype, int dim, bool add)
    {
        int[] ds = [4, 5, 6];
        int[] ishape = [3, 4, 5];
        int[] ss = [4, 5, 6]; // source larger than index: only the index's extent is read
        long[] idx;
        if (add)
        {
            ishape[dim] = 9;
            ss[dim] = 10;
            idx = RandIdx(Numel(ishape), ds[dim], (ulong)(30 + dim)); // many duplicates
        }
        else
        {
            // No duplicates along dim within a column: a permutation prefix per column.
            ishape[dim] = 3;
            idx = new long[Numel(ishape)];
            for (int p = 0; p < idx.Length; p++) { var c = Unravel(p, ishape); idx[p] = (c[dim] * 2 + c.Sum()) % ds[dim]; }
            // (3·c[dim] + rest) mod 5 is injective for c[dim] < 3.
        }
        using var dst64 = OpCheck.Rand(ds, 31);
        using var src64 = OpCheck.Rand(ss, 32);
        using var dst = dst64.To(dtype);
        using var src = src64.To(dtype);
        using var index = Ints(idx, ishape, DType.Int64);
        var want = RefScatter(dst.ToArray<double>(), ds, dim, idx, ishape, src.ToArray<double>(), ss, add);
        Cpu.Scatter(dst, dim, index, src, add);
        OpCheck.AssertClose(dst.ToArray<double>(), want, dtype == DType.Float32 ? 1e-6 : 1e-14, 1e-6, add ? "scatter_add" : "scatter");
    }

    [Test]
    public void ScatterAddNonContiguousDestinationInt32Index()
    {
        using var dst64 = OpCheck.Rand([3, 4], 33);
        using var dst = OpCheck.NonContiguous(dst64);
        using var src = OpCheck.Rand([3, 4], 34);
        long[] idx = [1, 1, 0, 1, 2, 2, 2, 2, 0, 0, 0, 0];
        using var index = Ints(idx, [3, 4], DType.Int32);
        var want = RefScatter(dst64.ToArray<double>(), [3, 4], 1, idx, [3, 4], src.ToArray<double>(), [3, 4], true);
        Cpu.Scatter(dst, 1, index, src, add: true);
        OpCheck.AssertClose(dst.ToArray<double>(), want, 1e-14, 1e-14);
    }

    [Test]
    public void ScatterOutOfRangeThrowsBeforeWriting()
    {
        using var dst = OpCheck.Rand([3, 4], 35);
        var before = dst.ToArray<double>();
        using var src = OpCheck.Rand([3, 4], 36);
        using var index = Tensor.FromArray(new long[] { 0, 1, 2, -3 }, [1, 4]);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.Scatter(dst, 0, index, src, add: true));
        Assert.That(e!.Message, Does.Contain("scatter_add").And.Contain("index -3").And.Contain("size 3"));
        Assert.That(dst.ToArray<double>(), Is.EqualTo(before));
    }

    [Test]
    public void ScatterEmptyIndexIsNoOp()
    {
        using var dst = OpCheck.Rand([3, 4], 37);
        var before = dst.ToArray<double>();
        using var src = OpCheck.Rand([3, 4], 38);
        using var index = Tensor.Empty([3, 0], DType.Int64);
        Cpu.Scatter(dst, 1, index, src, add: true);
        Assert.That(dst.ToArray<double>(), Is.EqualTo(before));
    }

    // ------------------------------------------------------------------ masked select / scatter

    [TestCase(DType.Float32, 5), TestCase(DType.Float64, 40000)]
    public void MaskedSelectMatchesReference(DType dtype, int n)
    {
        using var x64 = OpCheck.Rand([n, 3], 40);
        using var x = x64.To(dtype);
        using var mask = new Generator(41).Bernoulli([n, 3], 0.4, DType.Bool);
        var xv = x.ToArray<double>(); var mv = mask.ToArray<bool>();
        var want = xv.Where((_, i) => mv[i]).ToArray();
        using var y = Tensor.Empty([want.Length], dtype);
        Cpu.MaskedSelect(x, mask, y);
        OpCheck.AssertClose(y.ToArray<double>(), want, 0, 0, "masked_select");
    }

    [Test]
    public void MaskedSelectBroadcastMaskAndNonContiguousInput()
    {
        using var x64 = OpCheck.Rand([4, 3], 42);
        using var x = OpCheck.NonContiguous(x64);
        using var row = Tensor.FromArray(new[] { true, false, true }, [1, 3]);
        using var mask = row.AsStrided([4, 3], [0, 1], 0);
        var xv = x64.ToArray<double>();
        var want = xv.Where((_, i) => i % 3 != 1).ToArray();
        using var y = Tensor.Empty([8], DType.Float64);
        Cpu.MaskedSelect(x, mask, y);
        OpCheck.AssertClose(y.ToArray<double>(), want, 0, 0);
    }

    [Test]
    public void MaskedSelectCountMismatchAndDTypeErrors()
    {
        using var x = OpCheck.Rand([2, 3], 43);
        using var mask = Tensor.FromArray(new[] { true, true, false, false, false, true }, [2, 3]);
        using var y = Tensor.Empty([2], DType.Float64);
        var e = Assert.Throws<ArgumentException>(() => Cpu.MaskedSelect(x, mask, y));
        Assert.That(e!.Message, Does.Contain("masked_select").And.Contain("3"));
        using var fm = Tensor.Zeros([2, 3], DType.Float64);
        using var y3 = Tensor.Empty([3], DType.Float64);
        e = Assert.Throws<ArgumentException>(() => Cpu.MaskedSelect(x, fm, y3));
        Assert.That(e!.Message, Does.Contain("bool"));
    }

    [TestCase(DType.Float32, 7), TestCase(DType.Float64, 30000)]
    public void MaskedScatterMatchesReference(DType dtype, int n)
    {
        using var dst64 = OpCheck.Rand([n, 2], 44);
        using var dst = dst64.To(dtype);
        using var mask = new Generator(45).Bernoulli([n, 2], 0.5, DType.Bool);
        var mv = mask.ToArray<bool>();
        int count = mv.Count(b => b);
        using var src64 = OpCheck.Rand([count + 3], 46); // extra source elements are ignored
        using var src = src64.To(dtype);
        var want = dst.ToArray<double>(); var sv = src.ToArray<double>();
        for (int i = 0, k = 0; i < want.Length; i++) if (mv[i]) want[i] = sv[k++];
        Cpu.MaskedScatter(dst, mask, src);
        OpCheck.AssertClose(dst.ToArray<double>(), want, 0, 0, "masked_scatter");
    }

    [Test]
    public void MaskedScatterTooFewSourceElementsThrowsBeforeWriting()
    {
        using var dst = OpCheck.Rand([2, 3], 47);
        var before = dst.ToArray<double>();
        using var mask = Tensor.FromArray(new[] { true, true, false, false, true, true }, [2, 3]);
        using var src = OpCheck.Rand([3], 48);
        var e = Assert.Throws<ArgumentException>(() => Cpu.MaskedScatter(dst, mask, src));
        Assert.That(e!.Message, Does.Contain("masked_scatter").And.Contain("4").And.Contain("[3]"));
        Assert.That(dst.ToArray<double>(), Is.EqualTo(before));
    }

    // ------------------------------------------------------------------ embedding backward

    [TestCase(DType.Float32, DType.Int64, -1), TestCase(DType.Float64, DType.Int32, 2), TestCase(DType.Float64, DType.Int64, 0)]
    public void EmbeddingBackwardSumsRowsAndSkipsPadding(DType dtype, DType idType, int pad)
    {
        int v = 6, dm = 5;
        long[] ids = [2, 0, 5, 2, 2, 1, 0, 3];
        using var gy64 = OpCheck.Rand([2, 4, dm], 50);
        using var gy = gy64.To(dtype);
        using var idt = Ints(ids, [2, 4], idType);
        using var gw = Tensor.Zeros([v, dm], dtype);
        Cpu.EmbeddingBackward(idt, gy, gw, pad);
        var g = gy.ToArray<double>();
        var want = new double[v * dm];
        for (int i = 0; i < ids.Length; i++)
        {
            if (ids[i] == pad) continue;
            for (int k = 0; k < dm; k++) want[ids[i] * dm + k] += g[i * dm + k];
        }
        OpCheck.AssertClose(gw.ToArray<double>(), want, 1e-6, 1e-6, "embedding_backward");
        if (pad >= 0) Assert.That(gw.ToArray<double>().Skip(pad * dm).Take(dm), Is.All.EqualTo(0.0), "padding row stays zero");
    }

    [Test]
    public void EmbeddingBackwardOutOfRangeId()
    {
        using var gy = OpCheck.Rand([3, 4], 51);
        using var ids = Tensor.FromArray(new long[] { 0, 6, 1 });
        using var gw = Tensor.Zeros([6, 4], DType.Float64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Cpu.EmbeddingBackward(ids, gy, gw, -1));
        Assert.That(e!.Message, Does.Contain("embedding_backward").And.Contain("index 6").And.Contain("size 6"));
        Assert.That(gw.ToArray<double>(), Is.All.EqualTo(0.0));
        using var gyBad = OpCheck.Rand([3, 5], 52);
        var e2 = Assert.Throws<ArgumentException>(() => Cpu.EmbeddingBackward(ids, gyBad, gw, -1));
        Assert.That(e2!.Message, Does.Contain("[3, 5]").And.Contain("[6, 4]"));
    }
}
