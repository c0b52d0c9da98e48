using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>The per-sample counter-based <see cref="Random"/> used by the masking code.</summary>
public class TextPhiloxRandomTests
{
    [Test]
    public void SameSeedAndStreamRepeatOthersDiffer()
    {
        double[] Draw(ulong seed, long idx, PhiloxRandom.Purpose p)
        {
            var r = PhiloxRandom.ForSample(seed, idx, p);
            return Enumerable.Range(0, 16).Select(_ => r.NextDouble()).ToArray();
        }
        var a = Draw(1, 5, PhiloxRandom.Purpose.TextMask);
        Assert.That(Draw(1, 5, PhiloxRandom.Purpose.TextMask), Is.EqualTo(a));
        Assert.That(Draw(2, 5, PhiloxRandom.Purpose.TextMask), Is.Not.EqualTo(a));
        Assert.That(Draw(1, 6, PhiloxRandom.Purpose.TextMask), Is.Not.EqualTo(a));
        Assert.That(Draw(1, 5, PhiloxRandom.Purpose.ImageMask), Is.Not.EqualTo(a));
    }

    [Test]
    public void DoublesAreUniformOnTheUnitInterval()
    {
        var r = new PhiloxRandom(7, 0);
        const int N = 100_000;
        long below = 0;
        double sum = 0;
        for (int i = 0; i < N; i++)
        {
            double u = r.NextDouble();
            Assert.That(u, Is.GreaterThanOrEqualTo(0).And.LessThan(1));
            sum += u;
            if (u < 0.15) below++;
        }
        Binomial.AssertFraction(below, N, 0.15, "P(u < 0.15)");
        Assert.That(Math.Abs(sum / N - 0.5), Is.LessThanOrEqualTo(5 * Math.Sqrt(1.0 / 12 / N)), "mean");
    }

    [Test]
    public void IntsAreUniformOverTheRange()
    {
        var r = new PhiloxRandom(9, 3);
        const int N = 70_000, K = 7;
        var counts = new long[K];
        for (int i = 0; i < N; i++) counts[r.Next(K)]++;
        for (int k = 0; k < K; k++) Binomial.AssertFraction(counts[k], N, 1.0 / K, $"value {k}");
        for (int i = 0; i < 1000; i++) Assert.That(r.Next(-3, 2), Is.InRange(-3, 1));
        for (int i = 0; i < 1000; i++) Assert.That(r.Next(30522), Is.InRange(0, 30521));
        Assert.That(r.Next(5, 5), Is.EqualTo(5));
    }
}
