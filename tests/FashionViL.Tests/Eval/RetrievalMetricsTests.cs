using FashionViL.Eval;

namespace FashionViL.Tests.Eval;

public class RetrievalMetricsTests
{
    // Rows [s, 0] against a query [1, 0] have similarity exactly s.
    private static Tensor Column(params float[] s)
    {
        var data = new float[s.Length * 2];
        for (int i = 0; i < s.Length; i++) data[2 * i] = s[i];
        return Tensor.FromArray(data, s.Length, 2);
    }

    [Test]
    public void GeneralHandComputed()
    {
        // 2 images, 3 texts. sim(i,t) = <img_i, txt_t>.
        using var img = Tensor.FromArray(new float[] { 1, 0, 0, 1 }, 2, 2);
        using var txt = Tensor.FromArray(new float[] { 0.9f, 0.1f, 0.2f, 0.8f, 0.95f, 0f }, 3, 2);
        long[] imgIds = [7, 8], txtIds = [7, 8, 9];
        var r = RetrievalMetrics.General(img, imgIds, txt, txtIds);
        // image 0 (id 7): sims 0.9, 0.2, 0.95 → ranking 2,0,1 → id 7 at rank 2 → miss@1, hit@5.
        // image 1 (id 8): sims 0.1, 0.8, 0   → ranking 1,0,2 → hit@1.
        Assert.That(r["i2t_r@1"], Is.EqualTo(0.5));
        Assert.That(r["i2t_r@5"], Is.EqualTo(1.0));
        // text 0 (id 7): sims 0.9, 0.1 → image 0 first → hit. text 1 (id 8): 0.2, 0.8 → hit. text 2 (id 9): no image has id 9 → miss.
        Assert.That(r["t2i_r@1"], Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(r["t2i_r@10"], Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(r["avg"], Is.EqualTo((0.5 + 1 + 1 + 2.0 / 3 * 3) / 6).Within(1e-12));
    }

    [Test]
    public void GeneralTiesRankLowerIndexFirst()
    {
        using var q = Column(1f);
        using var g = Column(0.5f, 0.5f, 0.5f);
        Assert.That(RetrievalMetrics.General(q, [2], g, [1, 2, 3])["i2t_r@1"], Is.EqualTo(0.0), "index 0 wins the tie");
        Assert.That(RetrievalMetrics.General(q, [1], g, [1, 2, 3])["i2t_r@1"], Is.EqualTo(1.0));
    }

    [Test]
    public void KaleidoEqualsGeneralWhenEveryRowIsACandidate()
    {
        var rng = new Random(3);
        int n = 40;
        var img = new float[n * 8]; var txt = new float[n * 8];
        for (int i = 0; i < img.Length; i++) { img[i] = (float)rng.NextDouble() - 0.5f; txt[i] = img[i] + 0.3f * ((float)rng.NextDouble() - 0.5f); }
        long[] ids = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        long[] sub = ids.Select(i => i % 3).ToArray();
        using var ti = Tensor.FromArray(img, n, 8);
        using var tt = Tensor.FromArray(txt, n, 8);
        var general = RetrievalMetrics.General(ti, ids, tt, ids);
        var kaleido = RetrievalMetrics.Kaleido(ti, ids, sub, tt, ids, sub, seed: 1);
        foreach (var key in general.Keys) Assert.That(kaleido[key], Is.EqualTo(general[key]).Within(1e-12), key);
        Assert.That(general["i2t_r@1"], Is.GreaterThan(0.2), "the test data must be non-trivial");
        Assert.That(general["i2t_r@1"], Is.LessThan(1.0), "the test data must be non-trivial");
    }

    [Test]
    public void KaleidoPrefersSameSubcategoryNegatives()
    {
        // Query id 0, sub-category 1. Gallery: the positive (0.5), 100 same-sub-category rows (0.1), 50 other rows (0.9).
        var sims = new List<float> { 0.5f }; var ids = new List<long> { 0 }; var subs = new List<long> { 1 };
        for (int i = 0; i < 100; i++) { sims.Add(0.1f); ids.Add(100 + i); subs.Add(1); }
        for (int i = 0; i < 50; i++) { sims.Add(0.9f); ids.Add(500 + i); subs.Add(2); }
        using var q = Column(1f);
        using var g = Column(sims.ToArray());
        var k = RetrievalMetrics.Kaleido(q, [0], [1], g, ids.ToArray(), subs.ToArray(), seed: 5, repeats: 3);
        Assert.That(k["i2t_r@1"], Is.EqualTo(1.0), "the other-sub-category rows are not candidates");
        Assert.That(RetrievalMetrics.General(q, [0], g, ids.ToArray())["i2t_r@10"], Is.EqualTo(0.0));
    }

    [Test]
    public void KaleidoMasksNonCandidatesWithMinusOneLikeTheReference()
    {
        // Positive at −2 beats every candidate negative (−3), but the 49 non-candidates are set to −1 and outrank it.
        var sims = new List<float> { -2f }; var ids = new List<long> { 0 }; var subs = new List<long> { 0 };
        for (int i = 0; i < 149; i++) { sims.Add(-3f); ids.Add(1 + i); subs.Add(0); }
        using var q = Column(1f);
        using var g = Column(sims.ToArray());
        Assert.That(RetrievalMetrics.General(q, [0], g, ids.ToArray())["i2t_r@1"], Is.EqualTo(1.0));
        Assert.That(RetrievalMetrics.Kaleido(q, [0], [0], g, ids.ToArray(), subs.ToArray(), seed: 2)["i2t_r@10"], Is.EqualTo(0.0));
    }

    [Test]
    public void ChanceLevelOfKaleidoIsAboutOneIn101()
    {
        // Random embeddings: R@1 should be near 1/101 (300 queries × 5 repeats; binomial sd ≈ 0.0026, allow 5 sd).
        var rng = new Random(11);
        int n = 400, d = 16;
        var a = new float[n * d]; var b = new float[n * d];
        for (int i = 0; i < a.Length; i++) { a[i] = (float)rng.NextDouble() - 0.5f; b[i] = (float)rng.NextDouble() - 0.5f; }
        long[] ids = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        long[] sub = ids.Select(i => i % 2).ToArray();
        using var ta = Tensor.FromArray(a, n, d);
        using var tb = Tensor.FromArray(b, n, d);
        var k = RetrievalMetrics.Kaleido(ta, ids, sub, tb, ids, sub, seed: 4, queries: 300);
        Assert.That(k["i2t_r@1"], Is.EqualTo(1.0 / 101).Within(5 * 0.0026));
    }

    [Test]
    public void BadShapesNameBoth()
    {
        using var a = Tensor.Zeros([3, 4]);
        using var b = Tensor.Zeros([3, 5]);
        Assert.That(Assert.Throws<ArgumentException>(() => RetrievalMetrics.General(a, [1, 2, 3], b, [1, 2, 3]))!.Message, Does.Contain("[3, 4]").Or.Contain("[3,4]"));
        using var c = Tensor.Zeros([3, 4]);
        Assert.Throws<ArgumentException>(() => RetrievalMetrics.General(a, [1, 2], c, [1, 2, 3]));
    }
}
