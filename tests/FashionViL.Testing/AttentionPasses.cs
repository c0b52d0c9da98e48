using FashionViL.Autograd;

namespace FashionViL.Testing;

/// <summary>
/// Ops.Attention run once with the output-only forward and probabilities-only recompute (the default) or with the full
/// passes (both outputs, both times: what the op did before those modes), for bitwise comparisons on any device.
/// </summary>
public static class AttentionPasses
{
    /// <summary>
    /// The bits of o, gq, gk, gv (widened to long) for q [2,3,13,8], k and v [2,3,S,8], a padding mask on the last batch
    /// row's last 3 keys, scale 0.35, dropout <paramref name="p"/> from a fixed generator, and L = Σ o·w.
    /// </summary>
    public static List<long[]> OutputAndGradientBits(Device device, DType dtype, double p, int s, bool fullPasses)
    {
        bool was = Ops.AttentionFullPasses;
        Ops.AttentionFullPasses = fullPasses;
        try
        {
            using var q = OpCheck.Rand([2, 3, 13, 8], 61, dtype, -2, 2).To(device);
            using var k = OpCheck.Rand([2, 3, s, 8], 62, dtype, -2, 2).To(device);
            using var v = OpCheck.Rand([2, 3, s, 8], 63, dtype).To(device);
            using var w = OpCheck.Rand([2, 3, 13, 8], 64, dtype).To(device);
            var m = new double[2 * s];
            for (int j = s - 3; j < s; j++) m[s + j] = -10000;
            using var m64 = Tensor.FromArray(m, 2, 1, 1, s);
            using var mask = m64.To(dtype).To(device);
            q.RequiresGrad = k.RequiresGrad = v.RequiresGrad = true;
            var res = new List<long[]>();
            using (Tensor.Scope())
            {
                var o = Ops.Attention(q, k, v, mask, 0.35, p, true, new Generator(77));
                res.Add(Bits(o));
                (o * w).Sum().Backward();
            }
            res.Add(Bits(q.Grad!)); res.Add(Bits(k.Grad!)); res.Add(Bits(v.Grad!));
            return res;
        }
        finally { Ops.AttentionFullPasses = was; }
    }

    private static long[] Bits(Tensor t)
    {
        using var c = t.To(Device.Cpu);
        return c.DType == DType.Float64
            ? c.ToArray<double>().Select(BitConverter.DoubleToInt64Bits).ToArray()
            : c.ToArray<float>().Select(x => (long)BitConverter.SingleToInt32Bits(x)).ToArray();
    }

    /// <summary>Asserts both runs agree bit for bit (and that the gradients are not degenerate).</summary>
    public static void AssertSame(Device device, DType dtype, double p, int s)
    {
        var now = OutputAndGradientBits(device, dtype, p, s, false);
        var full = OutputAndGradientBits(device, dtype, p, s, true);
        string[] names = ["o", "gq", "gk", "gv"];
        for (int i = 0; i < names.Length; i++)
            Assert.That(now[i], Is.EqualTo(full[i]), $"{names[i]} on {device} ({dtype}, p {p}, S {s})");
        Assert.That(now[2].Distinct().Count(), Is.GreaterThan(now[2].Length / 2), "gk is not degenerate");
    }
}
