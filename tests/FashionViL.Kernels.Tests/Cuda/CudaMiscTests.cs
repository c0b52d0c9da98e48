using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>SGD, sort / top-k and masked select / scatter on the device vs the CPU backend.</summary>
[Category("Cuda")]
public class CudaMiscTests : CudaTestBase
{
    private static Tensor CopyOf(Tensor t) => Tensor.FromArray(t.ToArray<float>(), t.Shape);

    // ------------------------------------------------------------------ SGD

    private static IEnumerable<TestCaseData> SgdCases()
    {
        yield return new TestCaseData(0.1, 0.0, 0.0, 0.0, false, 7).SetName("Sgd_Plain");
        yield return new TestCaseData(0.05, 0.9, 0.0, 1e-2, false, 33).SetName("Sgd_MomentumWd");
        yield return new TestCaseData(0.05, 0.9, 0.25, 0.0, false, 300).SetName("Sgd_Dampening");
        yield return new TestCaseData(0.02, 0.8, 0.0, 5e-4, true, 1).SetName("Sgd_Nesterov");
    }

    [TestCaseSource(nameof(SgdCases))]
    public void SgdMatchesCpuOverSteps(double lr, double mom, double damp, double wd, bool nesterov, int n)
    {
        var hp = new SgdParams(lr, mom, damp, wd, nesterov);
        using var p0 = Rand([3, n], 1);
        using var pc = CopyOf(p0); using var pd = Up(p0);
        using var bc = Tensor.Zeros([3, n]); using var bd = Up(bc);
        for (int step = 0; step < 3; step++)
        {
            using var g = Rand([3, n], 10 + (ulong)step);
            using var gd = Up(g);
            Cpu.SgdStep(pc, g, mom != 0 ? bc : null, hp, step == 0);
            Dev.SgdStep(pd, gd, mom != 0 ? bd : null, hp, step == 0);
        }
        AssertSame(pd, pc, 1e-6, 1e-6, "sgd param");
        AssertSame(bd, bc, 1e-6, 1e-6, "sgd momentum buffer");
    }

    [Test]
    public void SgdRejectsFloat64AndMissingBuffer()
    {
        using var p = Tensor.Zeros([4], DType.Float64, Gpu);
        var ex = Assert.Throws<NotSupportedException>(() => Dev.SgdStep(p, p, null, new SgdParams(0.1, 0, 0, 0, false), true))!;
        Assert.That(ex.Message, Does.Contain("cuda: sgd of float64"));
        using var q = Tensor.Zeros([4], DType.Float32, Gpu);
        Assert.Throws<ArgumentException>(() => Dev.SgdStep(q, q, null, new SgdParams(0.1, 0.9, 0, 0, false), true));
    }

    // ------------------------------------------------------------------ sort / top-k

    /// <summary>Values with ties (rounded to a few levels), some NaN and ±inf.</summary>
    private static Tensor Awkward(int rows, int c, ulong seed)
    {
        using var r = Rand([rows, c], seed, DType.Float32, -3, 3);
        var v = r.ToArray<float>();
        for (int i = 0; i < v.Length; i++)
        {
            v[i] = MathF.Round(v[i]);
            if (i % 11 == 5) v[i] = float.NaN;
            if (i % 17 == 3) v[i] = float.NegativeInfinity;
            if (i % 19 == 7) v[i] = float.PositiveInfinity;
        }
        return Tensor.FromArray(v, [rows, c]);
    }

    private static void AssertRowsEqual(Tensor vd, Tensor id, Tensor vc, Tensor ic, string what)
    {
        Assert.That(vd.Device, Is.EqualTo(Gpu));
        Assert.That(id.ToArray<long>(), Is.EqualTo(ic.ToArray<long>()), what + " indices");
        Assert.That(vd.ToArray<float>(), Is.EqualTo(vc.ToArray<float>()), what + " values"); // NUnit equates NaN with NaN
    }

    [Test]
    public void SortMatchesCpu([Values(1, 3)] int rows, [Values(1, 7, 33, 300, 2500)] int c, [Values(false, true)] bool desc)
    {
        using var x = Awkward(rows, c, (ulong)(rows * 1000 + c));
        using var vc = Tensor.Empty([rows, c]); using var ic = Tensor.Empty([rows, c], DType.Int64);
        Cpu.Sort(x, desc, vc, ic);
        using var xd = Up(x);
        using var vd = Tensor.Empty([rows, c], DType.Float32, Gpu); using var id = Tensor.Empty([rows, c], DType.Int64, Gpu);
        Dev.Sort(xd, desc, vd, id);
        AssertRowsEqual(vd, id, vc, ic, $"sort [{rows},{c}] desc={desc}");
    }

    [Test]
    public void TopKMatchesCpu([Values(1, 3)] int rows, [Values(1, 7, 33, 300)] int c, [Values(false, true)] bool largest)
    {
        foreach (int k in new[] { 1, Math.Max(1, c / 3), c }.Distinct())
        {
            using var x = Awkward(rows, c, (ulong)(rows * 77 + c));
            using var vc = Tensor.Empty([rows, k]); using var ic = Tensor.Empty([rows, k], DType.Int64);
            Cpu.TopK(x, k, largest, vc, ic);
            using var xd = Up(x);
            using var vd = Tensor.Empty([rows, k], DType.Float32, Gpu); using var id = Tensor.Empty([rows, k], DType.Int64, Gpu);
            Dev.TopK(xd, k, largest, vd, id);
            AssertRowsEqual(vd, id, vc, ic, $"topk [{rows},{c}] k={k} largest={largest}");
        }
    }

    /// <summary>
    /// −0 and +0 are ties (by index, as on the CPU), NaNs of any payload are equal and largest, and the values come back with
    /// their own bits (the kernel sorts integer order keys and reads the values back by index).
    /// </summary>
    [Test]
    public void SortKeepsSignedZerosAsTiesAndValueBits([Values(false, true)] bool desc)
    {
        float negNaN = BitConverter.Int32BitsToSingle(unchecked((int)0xFFC00001u)), nan2 = BitConverter.Int32BitsToSingle(0x7FA00000);
        var v = new[] { 0f, -0f, 1f, negNaN, -0f, float.Epsilon, -float.Epsilon, float.NaN, 0f, float.NegativeInfinity, nan2, -1f, float.MaxValue, -float.MaxValue };
        using var x = Tensor.FromArray(v, [1, v.Length]);
        using var vc = Tensor.Empty([1, v.Length]); using var ic = Tensor.Empty([1, v.Length], DType.Int64);
        Cpu.Sort(x, desc, vc, ic);
        using var xd = Up(x);
        using var vd = Tensor.Empty([1, v.Length], DType.Float32, Gpu); using var id = Tensor.Empty([1, v.Length], DType.Int64, Gpu);
        Dev.Sort(xd, desc, vd, id);
        Assert.That(id.ToArray<long>(), Is.EqualTo(ic.ToArray<long>()), "indices");
        Assert.That(vd.ToArray<float>().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(vc.ToArray<float>().Select(BitConverter.SingleToInt32Bits)), "value bits");
        // the zeros keep their index order: 0 (+0), 1 (−0), 4 (−0), 8 (+0)
        var zeros = id.ToArray<long>().Where(i => v[i] == 0f).ToArray();
        Assert.That(zeros, Is.EqualTo(new long[] { 0, 1, 4, 8 }));
    }

    [Test]
    public void TopKOnNonContiguousRank3Input()
    {
        using var x = Rand([2, 5, 9], 5);
        using var xs = Strided(Up(x));
        using var vc = Tensor.Empty([2, 5, 4]); using var ic = Tensor.Empty([2, 5, 4], DType.Int64);
        Cpu.TopK(x, 4, true, vc, ic);
        using var vd = Tensor.Empty([2, 5, 4], DType.Float32, Gpu); using var id = Tensor.Empty([2, 5, 4], DType.Int64, Gpu);
        Dev.TopK(xs, 4, true, vd, id);
        AssertRowsEqual(vd, id, vc, ic, "topk strided");
    }

    [Test]
    public void SortErrors()
    {
        using var x = Tensor.Zeros([2, 3], DType.Float64, Gpu);
        using var v = Tensor.Zeros([2, 3], DType.Float64, Gpu); using var i = Tensor.Zeros([2, 3], DType.Int64, Gpu);
        var ex = Assert.Throws<NotSupportedException>(() => Dev.Sort(x, false, v, i))!;
        Assert.That(ex.Message, Does.Contain("cuda: sort of float64"));
        using var xf = Tensor.Zeros([2, 3], DType.Float32, Gpu);
        using var vf = Tensor.Zeros([2, 2], DType.Float32, Gpu); using var i2 = Tensor.Zeros([2, 2], DType.Int64, Gpu);
        Assert.Throws<ArgumentException>(() => Dev.TopK(xf, 4, true, vf, i2));
        var bad = Assert.Throws<ArgumentException>(() => Dev.TopK(xf, 1, true, vf, i2))!;
        Assert.That(bad.Message, Does.Contain("topk").And.Contain(vf.ShapeString));
    }

    // ------------------------------------------------------------------ masked select / scatter

    private static Tensor Mask(int rows, int c, string kind, ulong seed) => kind switch
    {
        "none" => Tensor.Zeros([rows, c], DType.Bool),
        "all" => Tensor.Ones([rows, c], DType.Bool),
        _ => new Generator(seed).Bernoulli([rows, c], 0.4, DType.Bool),
    };

    [Test]
    public void MaskedSelectMatchesCpu([Values(1, 3)] int rows, [Values(1, 7, 33, 300)] int c, [Values("none", "all", "random")] string kind)
    {
        using var x = Rand([rows, c], 21);
        using var m = Mask(rows, c, kind, (ulong)(rows + c));
        int count = m.ToArray<bool>().Count(b => b);
        using var yc = Tensor.Empty([count]);
        Cpu.MaskedSelect(x, m, yc);
        using var xd = Up(x); using var md = Up(m);
        using var yd = Tensor.Empty([count], DType.Float32, Gpu);
        Dev.MaskedSelect(xd, md, yd);
        AssertBitEqual<float>(yd, yc, $"masked_select [{rows},{c}] {kind}");
    }

    [Test]
    public void MaskedSelectBroadcastMaskAndStridedInput()
    {
        using var x = Rand([300, 3], 22);
        using var row = Tensor.FromArray(new[] { true, false, true }, [1, 3]);
        using var m = row.AsStrided([300, 3], [0, 1], 0);
        using var yc = Tensor.Empty([600]);
        Cpu.MaskedSelect(x, m, yc);
        using var rowD = Up(row);
        using var md = rowD.AsStrided([300, 3], [0, 1], 0);
        using var xd = Strided(Up(x));
        using var yd = Tensor.Empty([600], DType.Float32, Gpu);
        Dev.MaskedSelect(xd, md, yd);
        AssertBitEqual<float>(yd, yc, "masked_select broadcast");
    }

    [Test]
    public void MaskedScatterMatchesCpu([Values(1, 3)] int rows, [Values(1, 7, 33, 300)] int c, [Values("none", "all", "random")] string kind)
    {
        using var dst = Rand([rows, c], 31);
        using var src = Rand([rows * c + 2], 32);
        using var m = Mask(rows, c, kind, (ulong)(7 * rows + c));
        using var dc = CopyOf(dst);
        Cpu.MaskedScatter(dc, m, src);
        using var dd = Up(dst); using var md = Up(m); using var sd = Up(src);
        Dev.MaskedScatter(dd, md, sd);
        AssertBitEqual<float>(dd, dc, $"masked_scatter [{rows},{c}] {kind}");
    }

    [Test]
    public void MaskedScatterBroadcastMaskAndStridedSource()
    {
        using var dst = Rand([5, 4], 33);
        using var src = Rand([4, 5], 34);
        using var col = Tensor.FromArray(new[] { false, true, true, false, true }, [5, 1]);
        using var m = col.AsStrided([5, 4], [1, 0], 0);
        using var dc = CopyOf(dst);
        Cpu.MaskedScatter(dc, m, src);
        using var dd = Up(dst);
        using var colD = Up(col);
        using var md = colD.AsStrided([5, 4], [1, 0], 0);
        using var sd = Strided(Up(src));
        Dev.MaskedScatter(dd, md, sd);
        AssertBitEqual<float>(dd, dc, "masked_scatter broadcast");
    }

    [Test]
    public void MaskErrors()
    {
        using var x = Tensor.Zeros([2, 3], DType.Float32, Gpu);
        using var y = Tensor.Zeros([2], DType.Float32, Gpu);
        using var wrong = Tensor.Zeros([3, 2], DType.Bool, Gpu);
        var ex = Assert.Throws<ArgumentException>(() => Dev.MaskedSelect(x, wrong, y))!;
        Assert.That(ex.Message, Does.Contain("masked_select").And.Contain(wrong.ShapeString));
        using var notBool = Tensor.Zeros([2, 3], DType.Float32, Gpu);
        Assert.Throws<ArgumentException>(() => Dev.MaskedScatter(x, notBool, y));
        using var xi = Tensor.Zeros([2, 3], DType.Int64, Gpu);
        using var ok = Tensor.Zeros([2, 3], DType.Bool, Gpu);
        var nse = Assert.Throws<NotSupportedException>(() => Dev.MaskedSelect(xi, ok, y))!;
        Assert.That(nse.Message, Does.Contain("cuda: masked_select of int64"));
    }
}
