namespace FashionViL.Kernels.Cpu;

/// <summary>Scalar special functions the BCL lacks.</summary>
public static class ScalarMath
{
    private const double TwoOverSqrtPi = 1.1283791670955126;
    private const double InvSqrt2 = 0.7071067811865476;
    private const double InvSqrt2Pi = 0.3989422804014327;

    /// <summary>erf to about 1e-15 relative: Maclaurin series below |x| = 3, continued fraction for erfc above.</summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        double ax = Math.Abs(x);
        if (ax < 3.0)
        {
            // erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            double x2 = x * x, term = x, sum = x;
            for (int n = 1; n < 80; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            return TwoOverSqrtPi * sum;
        }
        if (ax > 6.5) return Math.Sign(x);
        // erfc x = exp(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))), evaluated bottom-up.
        double f = ax;
        for (int k = 60; k >= 1; k--) f = ax + k * 0.5 / f;
        double erfc = Math.Exp(-ax * ax) / (f * 1.7724538509055159);
        return Math.Sign(x) * (1.0 - erfc);
    }

    /// <summary>erf for float32 data: Abramowitz &amp; Stegun 7.1.26 (|error| ≤ 1.5e-7, below float32 resolution near 1).</summary>
    public static float ErfF(float x)
    {
        float ax = MathF.Abs(x);
        float t = 1f / (1f + 0.3275911f * ax);
        float y = 1f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * MathF.Exp(-ax * ax);
        return x < 0 ? -y : y;
    }

    public static double Gelu(double x) => 0.5 * x * (1.0 + Erf(x * InvSqrt2));
    public static float GeluF(float x) => 0.5f * x * (1f + ErfF(x * (float)InvSqrt2));

    /// <summary>d/dx [x·Φ(x)] = Φ(x) + x·φ(x).</summary>
    public static double GeluGrad(double x) => 0.5 * (1.0 + Erf(x * InvSqrt2)) + x * InvSqrt2Pi * Math.Exp(-0.5 * x * x);
    public static float GeluGradF(float x) => 0.5f * (1f + ErfF(x * (float)InvSqrt2)) + x * (float)InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    public static double Sigmoid(double x) => x >= 0 ? 1.0 / (1.0 + Math.Exp(-x)) : Math.Exp(x) / (1.0 + Math.Exp(x));
}
