using FashionViL.Kernels.Cpu;

namespace FashionViL.TensorTests;

public class PhiloxTests
{
    private static uint[] Block(ulong seed, ulong lo, ulong hi)
    {
        Philox.Block(seed, lo, hi, out var a, out var b, out var c, out var d);
        return [a, b, c, d];
    }

    // Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    [Test]
    public void KnownAnswer_ZeroCounterZeroKey()
    {
        Assert.That(Block(0, 0, 0), Is.EqualTo(new uint[] { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 }));
        Philox.Block(0, 0, out var a, out var b, out var c, out var d); // the 64-bit counter form
        Assert.That(new[] { a, b, c, d }, Is.EqualTo(new uint[] { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 }));
    }

    [Test]
    public void KnownAnswer_AllOnes()
        => Assert.That(Block(ulong.MaxValue, ulong.MaxValue, ulong.MaxValue), Is.EqualTo(new uint[] { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd }));

    [Test]
    public void KnownAnswer_PiDigits()
    {
        // counter (243f6a88 85a308d3 13198a2e 03707344), key (a4093822 299f31d0): word 0 is the low half.
        ulong lo = 0x85a308d3_243f6a88UL, hi = 0x03707344_13198a2eUL, key = 0x299f31d0_a4093822UL;
        Assert.That(Block(key, lo, hi), Is.EqualTo(new uint[] { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 }));
    }

    [Test]
    public void Block64_IsBlock128_WithZeroHighWords()
    {
        foreach (var (seed, ctr) in new[] { (42UL, 0UL), (7UL, 123456789012345UL), (ulong.MaxValue, ulong.MaxValue) })
        {
            Philox.Block(seed, ctr, out var a, out var b, out var c, out var d);
            Assert.That(new[] { a, b, c, d }, Is.EqualTo(Block(seed, ctr, 0)));
        }
    }

    [Test]
    public void Word_And_Uniform_FollowTheDocumentedLayout()
    {
        // element i uses counter offset + i/4, word i%4; Uniform is the top 24 bits / 2^24
        for (long i = 0; i < 12; i++)
        {
            var blk = Block(9, 5 + (ulong)(i / 4), 0);
            Assert.That(Philox.Word(9, 5, i), Is.EqualTo(blk[i % 4]));
            Assert.That(Philox.Uniform(9, 5, i), Is.EqualTo((blk[i % 4] >> 8) / 16777216.0f));
        }
    }

    private static (double mean, double var, double skew, double kurt) Moments(double[] v)
    {
        double m = v.Average();
        double m2 = 0, m3 = 0, m4 = 0;
        foreach (var x in v) { double d = x - m; m2 += d * d; m3 += d * d * d; m4 += d * d * d * d; }
        m2 /= v.Length; m3 /= v.Length; m4 /= v.Length;
        return (m, m2, m3 / Math.Pow(m2, 1.5), m4 / (m2 * m2));
    }

    [Test]
    public void Uniform_Moments_100k()
    {
        const int n = 100_000;
        using var t = new Generator(123).Uniform([n]);
        var v = t.ToArray<double>();
        Assert.That(v.Min(), Is.GreaterThanOrEqualTo(0.0));
        Assert.That(v.Max(), Is.LessThan(1.0));
        var (mean, var, skew, kurt) = Moments(v);
        // standard errors: mean sqrt(1/12/n) = 9.1e-4; variance ~ 2.7e-4; allow ~5 sigma
        Assert.That(mean, Is.EqualTo(0.5).Within(0.0046));
        Assert.That(var, Is.EqualTo(1.0 / 12).Within(0.0014));
        Assert.That(skew, Is.EqualTo(0).Within(0.04));
        Assert.That(kurt, Is.EqualTo(1.8).Within(0.04));
        // 10 equal bins: each within 5 sigma of n/10 (sigma = sqrt(n * 0.1 * 0.9) = 95)
        var bins = new int[10];
        foreach (var x in v) bins[(int)(x * 10)]++;
        Assert.That(bins, Has.All.InRange(n / 10 - 475, n / 10 + 475));
    }

    [Test]
    public void Normal_Moments_100k()
    {
        const int n = 100_000;
        using var t = new Generator(321).Normal([n], 2.0, 3.0, DType.Float64);
        var v = t.ToArray<double>().Select(x => (x - 2.0) / 3.0).ToArray();
        var (mean, var, skew, kurt) = Moments(v);
        // standard errors: mean 1/sqrt(n) = 3.2e-3; variance sqrt(2/n) = 4.5e-3; skew sqrt(6/n) = 7.7e-3; kurtosis sqrt(24/n) = 1.5e-2
        Assert.That(mean, Is.EqualTo(0).Within(0.016));
        Assert.That(var, Is.EqualTo(1).Within(0.023));
        Assert.That(skew, Is.EqualTo(0).Within(0.04));
        Assert.That(kurt, Is.EqualTo(3).Within(0.08));
        Assert.That(v.All(double.IsFinite));
        // tail mass beyond 2 sigma: 4.55 %
        double tail = v.Count(x => Math.Abs(x) > 2) / (double)n;
        Assert.That(tail, Is.EqualTo(0.0455).Within(0.0035));
    }

    [Test]
    public void Generator_Offset_Advances_By_CeilNOver4()
    {
        var g = new Generator(5);
        Assert.That(g.Offset, Is.Zero);
        (int[] shape, ulong adv)[] steps = [([10], 3), ([3], 1), ([0], 0), ([2, 2], 1), ([1], 1), ([5, 1, 3], 4)];
        ulong expect = 0;
        foreach (var (shape, adv) in steps)
        {
            using var t = g.Uniform(shape);
            expect += adv;
            Assert.That(g.Offset, Is.EqualTo(expect), Shape.Format(shape));
        }
        using (g.Normal([7])) expect += 2;
        Assert.That(g.Offset, Is.EqualTo(expect));
        using (g.RandPerm(9)) expect += 3;
        Assert.That(g.Offset, Is.EqualTo(expect));
        using (g.RandInt([4], 0, 3)) expect += 1;
        Assert.That(g.Offset, Is.EqualTo(expect));
        using (g.Bernoulli([13], 0.5)) expect += 4;
        Assert.That(g.Offset, Is.EqualTo(expect));
    }

    [Test]
    public void Generator_DrawsContinue_FromSavedState()
    {
        var g = new Generator(11);
        using var first = g.Uniform([6]);
        ulong off = g.Offset;
        using var next = g.Uniform([10]);
        var h = new Generator(0);
        h.SetState(11, off);
        using var again = h.Uniform([10]);
        Assert.That(again.ToArray<float>(), Is.EqualTo(next.ToArray<float>()));
        // Element i of a draw at offset o is Philox.Uniform(seed, o, i).
        var vals = next.ToArray<float>();
        for (int i = 0; i < vals.Length; i++) Assert.That(vals[i], Is.EqualTo(Philox.Uniform(11, off, i)));
    }

    [Test]
    public void Draws_DoNotDependOn_ThreadCount()
    {
        const int n = 100_003; // large enough to split across threads, not a multiple of 4
        int saved = Parallelism.MaxThreads;
        try
        {
            var results = new List<(float[] u, double[] z, long[] r, float[] b)>();
            foreach (int threads in new[] { 1, 2 })
            {
                Parallelism.MaxThreads = threads;
                var g = new Generator(77);
                using var u = g.Uniform([n]);
                using var z = g.Normal([n], dtype: DType.Float64);
                using var r = g.RandInt([n], -5, 1000);
                using var b = g.Bernoulli([n], 0.3);
                results.Add((u.ToArray<float>(), z.ToArray<double>(), r.ToArray<long>(), b.ToArray<float>()));
            }
            Assert.That(results[1].u, Is.EqualTo(results[0].u));
            Assert.That(results[1].z, Is.EqualTo(results[0].z));
            Assert.That(results[1].r, Is.EqualTo(results[0].r));
            Assert.That(results[1].b, Is.EqualTo(results[0].b));
        }
        finally { Parallelism.MaxThreads = saved; }
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(1000)]
    public void RandPerm_IsAPermutation(int n)
    {
        using var p = new Generator(3).RandPerm(n);
        Assert.That(p.DType, Is.EqualTo(DType.Int64));
        Assert.That(p.Shape, Is.EqualTo(new[] { n }));
        var v = p.ToArray<long>();
        Assert.That(v.OrderBy(x => x), Is.EqualTo(Enumerable.Range(0, n).Select(i => (long)i)));
        if (n == 1000)
        {
            Assert.That(v, Is.Not.EqualTo(Enumerable.Range(0, n).Select(i => (long)i)), "shuffled");
            using var q = new Generator(4).RandPerm(n);
            Assert.That(q.ToArray<long>(), Is.Not.EqualTo(v), "seed matters");
        }
    }

    [Test]
    public void RandInt_StaysInRange_AndHitsEveryValue()
    {
        const int n = 40_000;
        using var t = new Generator(8).RandInt([n], -3, 5);
        var v = t.ToArray<long>();
        Assert.That(v, Has.All.InRange(-3L, 4L));
        var counts = v.GroupBy(x => x).ToDictionary(x => x.Key, x => x.Count());
        Assert.That(counts.Keys.Order(), Is.EqualTo(Enumerable.Range(-3, 8).Select(i => (long)i)));
        // n/8 = 5000, sigma = sqrt(n * 1/8 * 7/8) = 66
        Assert.That(counts.Values, Has.All.InRange(5000 - 330, 5000 + 330));
        using var one = new Generator(8).RandInt([100], 7, 8, DType.Int32);
        Assert.That(one.ToArray<int>(), Has.All.EqualTo(7));
        Assert.Throws<ArgumentException>(() => new Generator(1).RandInt([1], 3, 3));
    }
}
