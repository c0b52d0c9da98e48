using ILGPU;
namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Scalar maths that compiles inside ILGPU kernels (no exceptions, no BCL intrinsics): the same formulas
/// as <see cref="Cpu.ScalarMath"/>, so the device matches the CPU reference.
/// </summary>
public static class KMath
{
    private const double TwoOverSqrtPi = 1.1283791670955126;
    private const double InvSqrt2 = 0.7071067811865476;
    private const double InvSqrt2Pi = 0.3989422804014327;

    /// <summary>
    /// The next index of a grid-stride loop over [0, n), computed in 64 bits so that a loop near
    /// int.MaxValue ends instead of wrapping (only valid inside an explicitly grouped kernel).
    /// </summary>
    public static int NextGridStride(int i, int n)
    {
        long j = (long)i + (long)ILGPU.Grid.DimX * ILGPU.Group.DimX;
        return j < n ? (int)j : n;
    }

    /// <summary>
    /// Σ_z v[i + z·stride] for z = 0 .. count − 1, added in that order to a float that starts at +0 — the bits of the
    /// one-at-a-time loop — with four loads issued before their four adds. (A loop that adds each load as it arrives issues
    /// the next load only after the add, so it keeps one load in flight and pays one memory latency per term: the split-K
    /// reductions.)
    /// </summary>
    public static float SumStrided(ArrayView<float> v, long i, long stride, int count)
    {
        float acc = 0f;
        int z = 0;
        for (; z + 4 <= count; z += 4)
        {
            long p = i + z * stride;
            float a = v[p], b = v[p + stride], c = v[p + 2 * stride], d = v[p + 3 * stride];
            acc += a; acc += b; acc += c; acc += d;
        }
        for (; z < count; z++) acc += v[i + z * stride];
        return acc;
    }

    public static bool IsNaN(float v) => float.IsNaN(v);
    public static bool IsNaN(double v) => double.IsNaN(v);

    public static float SignF(float v) => v > 0f ? 1f : (v < 0f ? -1f : (KMath.IsNaN(v) ? v : 0f));
    public static double Sign(double v) => v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : (KMath.IsNaN(v) ? v : 0.0));

    /// <summary>
    /// tanh in float without the device's own tanh (whose error near ±1 showed in the gradient 1 − y² on an H200, gpu-check
    /// 2026-11-28): |x| &lt; 0.625 the odd polynomial x + x³·P(x²) with Cephes' tanhf coefficients, else 1 − 2/(e^{2|x|} + 1)
    /// with x's sign (NaN stays NaN, ±∞ gives ±1, −0 stays −0). Within 2 ulp of float64 tanh over −12…12 with the host's
    /// exp (KMathTanhTests); on a device the exp's own error ε adds at most ε/2 to the result (gpu-check's tanh and its
    /// gradient pass at 1e-5 relative on the H200).
    /// </summary>
    public static float TanhF(float x)
    {
        float a = MathF.Abs(x);
        if (a < 0.625f)
        {
            if (a == 0f) return x;   // keeps −0
            float s = x * x;
            return ((((-5.70498872745E-3f * s + 2.06390887954E-2f) * s - 5.37397155531E-2f) * s + 1.33314422036E-1f) * s - 3.33332819422E-1f) * s * x + x;
        }
        float r = 1f - 2f / (MathF.Exp(2f * a) + 1f);
        return x < 0f ? -r : r;
    }

    public static float SigmoidF(float x) => x >= 0f ? 1f / (1f + MathF.Exp(-x)) : MathF.Exp(x) / (1f + MathF.Exp(x));
    public static double Sigmoid(double x) => x >= 0.0 ? 1.0 / (1.0 + Math.Exp(-x)) : Math.Exp(x) / (1.0 + Math.Exp(x));

    /// <summary>Abramowitz &amp; Stegun 7.1.26, as the CPU's float32 path.</summary>
    public static float ErfF(float x)
    {
        float ax = MathF.Abs(x);
        float t = 1f / (1f + 0.3275911f * ax);
        float y = 1f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * MathF.Exp(-ax * ax);
        return x < 0 ? -y : y;
    }

    /// <summary>erf to about 1e-15: Maclaurin series below 3, continued fraction for erfc above (as the CPU's float64 path).</summary>
    public static double Erf(double x)
    {
        if (KMath.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        double sgn = x < 0 ? -1.0 : 1.0;
        if (ax < 3.0)
        {
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
        if (ax > 6.5) return sgn;
        double f = ax;
        for (int k = 60; k >= 1; k--) f = ax + k * 0.5 / f;
        double erfc = Math.Exp(-ax * ax) / (f * 1.7724538509055159);
        return sgn * (1.0 - erfc);
    }

    public static float GeluF(float x) => 0.5f * x * (1f + ErfF(x * (float)InvSqrt2));
    public static double Gelu(double x) => 0.5 * x * (1.0 + Erf(x * InvSqrt2));
    public static float GeluGradF(float x) => 0.5f * (1f + ErfF(x * (float)InvSqrt2)) + x * (float)InvSqrt2Pi * MathF.Exp(-0.5f * x * x);
    public static double GeluGrad(double x) => 0.5 * (1.0 + Erf(x * InvSqrt2)) + x * InvSqrt2Pi * Math.Exp(-0.5 * x * x);

    public static float SiluGradF(float x) { float s = (float)Sigmoid(x); return s + x * s * (1f - s); }
    public static double SiluGrad(double x) { double s = Sigmoid(x); return s + x * s * (1.0 - s); }
}
