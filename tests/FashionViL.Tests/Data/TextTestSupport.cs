using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>
/// A <see cref="Random"/> that returns a scripted sequence, so a test can hand-compute what the masking code
/// must produce. Asking for more draws than scripted, or a draw of the wrong kind or range, fails the test.
/// </summary>
internal sealed class ScriptedRandom(params object[] script) : Random
{
    private int _pos;
    public List<(int Min, int Max)> IntRanges { get; } = [];
    public bool Exhausted => _pos == script.Length;

    public override double NextDouble()
    {
        var v = Take();
        if (v is not double d) throw new AssertionException($"draw {_pos - 1}: code asked for a double, script has {v}");
        return d;
    }

    protected override double Sample() => NextDouble();

    public override int Next(int maxValue) => Next(0, maxValue);

    public override int Next(int minValue, int maxValue)
    {
        var v = Take();
        if (v is not int i) throw new AssertionException($"draw {_pos - 1}: code asked for an int in [{minValue},{maxValue}), script has {v}");
        if (i < minValue || i >= maxValue) throw new AssertionException($"draw {_pos - 1}: scripted {i} outside [{minValue},{maxValue})");
        IntRanges.Add((minValue, maxValue));
        return i;
    }

    public override int Next() => throw new AssertionException("unexpected Next()");

    private object Take()
    {
        if (_pos >= script.Length) throw new AssertionException($"code made more than the {script.Length} scripted draws");
        return script[_pos++];
    }
}

internal static class Binomial
{
    /// <summary>Asserts count/n is within <paramref name="sigmas"/> binomial standard deviations of p.</summary>
    public static void AssertFraction(long count, long n, double p, string what, double sigmas = 5)
    {
        double sd = Math.Sqrt(p * (1 - p) / n);
        double f = (double)count / n;
        Assert.That(Math.Abs(f - p), Is.LessThanOrEqualTo(sigmas * sd),
            $"{what}: observed {f:F5} ({count}/{n}), expected {p:F5} ± {sigmas}σ = ±{sigmas * sd:F5}");
    }
}
