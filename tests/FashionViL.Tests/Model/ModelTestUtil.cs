using FashionViL.Data;
using FashionViL.Model;
using FashionViL.Nn;
using FashionViL.Nn.Models;

namespace FashionViL.Tests.Model;

internal static class ModelTestUtil
{
    /// <summary>The tiny config with dropout 0 (the PyTorch twin has none).</summary>
    public static FashionViLConfig TinyNoDropout => FashionViLConfig.Tiny with
    {
        Bert = FashionViLConfig.Tiny.Bert with { HiddenDropoutProb = 0, AttentionProbsDropoutProb = 0 },
    };

    public static string FixtureDir()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "fashionvil");
            if (Directory.Exists(p)) return p;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/fashionvil not found above {TestContext.CurrentContext.TestDirectory}");
    }

    public static double Seed(string name)
    {
        double seed = 0;
        for (int k = 0; k < name.Length; k++) seed += (k + 1) * (int)name[k];
        return seed * 0.001;
    }

    /// <summary>The closed form of tools/fixtures/make_fashionvil_fixture.py (= make_bert_fixture.py), norm_s = 4.</summary>
    public static void FillClosedForm(Module m)
    {
        foreach (var (name, t) in m.NamedParameters())
        {
            double seed = Seed(name);
            double scale = name.EndsWith("LayerNorm.weight", StringComparison.Ordinal) ? 0.1 : name.EndsWith("bias", StringComparison.Ordinal) ? 0.02 : 0.05;
            double offset = name.EndsWith("LayerNorm.weight", StringComparison.Ordinal) ? 1 : 0;
            if (name == "model.contrastive_norm.norm_s") { scale = 0; offset = 4; }
            var v = new float[t.Numel];
            Parallel.For(0, v.Length, i => v[i] = (float)(offset + scale * Math.Sin(i * 0.37 + seed)));
            using var src = Tensor.FromArray(v, t.Shape);
            using var cast = src.To(t.DType);
            Backends.Get(t.Device).Copy(cast, t);
        }
    }

    /// <summary>The twin's images: sin(0.37 i + seed(name)) rounded to float32.</summary>
    public static Tensor Image(string name, int b, int size, DType dtype = DType.Float32)
    {
        double seed = Seed(name);
        var v = new float[b * 3 * size * size];
        for (int i = 0; i < v.Length; i++) v[i] = (float)Math.Sin(i * 0.37 + seed);
        using var t = Tensor.FromArray(v, b, 3, size, size);
        return t.To(dtype);
    }

    /// <summary>A synthetic batch of B samples with T tokens on the CPU (for unit tests; values arbitrary but valid).</summary>
    public static PretrainBatch RandomBatch(FashionViLConfig c, int b, int t, Generator g)
    {
        var ids = new long[b * t]; var mask = new long[b * t]; var labels = new long[b * t]; var masked = new long[b * t];
        var rnd = new Random(1234 + b * 31 + t);
        for (int i = 0; i < b; i++)
        {
            int len = rnd.Next(4, t + 1);
            for (int j = 0; j < t; j++)
            {
                int k = i * t + j;
                ids[k] = j == 0 ? 101 : j == len - 1 ? 102 : j < len ? rnd.Next(1000, 30000) : 0;
                mask[k] = j < len ? 1 : 0;
                labels[k] = -1; masked[k] = ids[k];
                if (j > 0 && j < len - 1 && rnd.NextDouble() < 0.2) { labels[k] = ids[k]; masked[k] = 103; }
            }
            labels[i * t + 1] = ids[i * t + 1]; masked[i * t + 1] = 103;
        }
        var attrs = new float[b * c.NumAttributes];
        for (int i = 0; i < b; i++) { attrs[i * c.NumAttributes + rnd.Next(c.NumAttributes)] = 0.5f; attrs[i * c.NumAttributes + rnd.Next(c.NumAttributes)] += 0.5f; }
        var im = new long[b * c.GridSize];
        for (int i = 0; i < b; i++) { im[i * c.GridSize + rnd.Next(c.GridSize)] = 1; im[i * c.GridSize + rnd.Next(c.GridSize)] = 1; }
        return new PretrainBatch
        {
            Image = g.Normal([b, 3, c.ImageSize, c.ImageSize]),
            DvImage = g.Normal([b, 3, c.ImageSize, c.ImageSize]),
            InputIds = Tensor.FromArray(ids, b, t),
            InputIdsMasked = Tensor.FromArray(masked, b, t),
            InputMask = Tensor.FromArray(mask, b, t),
            SegmentIds = Tensor.Zeros([b, t], DType.Int64),
            LmLabelIds = Tensor.FromArray(labels, b, t),
            AttributeLabels = Tensor.FromArray(attrs, b, c.NumAttributes),
            ImageMasks = Tensor.FromArray(im, b, c.GridSize),
            Ids = Enumerable.Range(0, b).Select(i => (long)i).ToArray(),
        };
    }

    /// <summary>‖a − e‖₂ / ‖e‖₂ in float64.</summary>
    public static double RelL2(Tensor actual, Tensor expected)
    {
        Assert.That(actual.Shape, Is.EqualTo(expected.Shape));
        var a = actual.ToArray<double>(); var e = expected.ToArray<double>();
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - e[i]) * (a[i] - e[i]); den += e[i] * e[i]; }
        return den == 0 ? Math.Sqrt(num) : Math.Sqrt(num / den);
    }
}
