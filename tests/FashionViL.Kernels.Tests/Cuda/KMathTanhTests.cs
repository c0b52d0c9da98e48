using FashionViL.Kernels.Cuda;
using NUnit.Framework;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>The CUDA kernels' own float tanh (the device's was off by ~5e-6 near ±1 on an H200) against float64 tanh.</summary>
public class KMathTanhTests
{
    private static double UlpErr(float x)
    {
        double r = Math.Tanh(x);
        float got = KMath.TanhF(x);
        float rf = (float)r;
        float ulp = MathF.BitIncrement(MathF.Abs(rf)) - MathF.Abs(rf);
        if (ulp == 0 || float.IsInfinity(ulp)) ulp = float.Epsilon;
        return Math.Abs(got - r) / ulp;
    }

    [Test]
    public void WithinTwoUlpOverTheRange()
    {
        double worst = 0; float at = 0;
        for (int i = -240000; i <= 240000; i++)
        {
            float x = i * 5e-5f;   // −12 … 12, through the 0.625 switch
            double e = UlpErr(x);
            if (e > worst) { worst = e; at = x; }
        }
        foreach (float x in new[] { 1e-30f, 1e-10f, 3e-4f, 0.6249999f, 0.625f, 0.6250001f, 8.9f, 9.1f, 20f, 1e30f, float.Epsilon })
        {
            foreach (float sx in new[] { x, -x })
            {
                double e = UlpErr(sx);
                if (e > worst) { worst = e; at = sx; }
            }
        }
        Assert.That(worst, Is.LessThanOrEqualTo(2.0), $"worst {worst:F2} ulp at x = {at:R}");
    }

    [Test]
    public void EdgesAndOddness()
    {
        Assert.That(KMath.TanhF(float.PositiveInfinity), Is.EqualTo(1f));
        Assert.That(KMath.TanhF(float.NegativeInfinity), Is.EqualTo(-1f));
        Assert.That(float.IsNaN(KMath.TanhF(float.NaN)), Is.True);
        Assert.That(BitConverter.SingleToInt32Bits(KMath.TanhF(-0f)), Is.EqualTo(BitConverter.SingleToInt32Bits(-0f)));
        for (float x = 0.01f; x < 10; x *= 1.37f) Assert.That(KMath.TanhF(-x), Is.EqualTo(-KMath.TanhF(x)), $"x = {x}");
    }
}
