using FashionViL.Downstream.Ocir;

namespace FashionViL.Tests.Downstream.Ocir;

/// <summary>
/// r@k_ocir on hand-built cases (spec §4.4, mmf RecallAtK_ocir). Embeddings are 1-d: the query is [1], so a gallery
/// item's similarity is its own value, and the rank of the positive is the number of same-category items above it.
/// </summary>
public class OcirRecallTests
{
    /// <summary>A test-file entry.</summary>
    private sealed record E(long Blank, int Cat, float Value, bool Fake, float? Query = 1f);

    private static Dictionary<string, double> Run(IReadOnlyList<E> es) =>
        OcirRecall.Compute(es.Select(e => e.Fake || e.Query is null ? null : new[] { e.Query.Value }).ToArray(),
            es.Select(e => new[] { e.Value }).ToArray(), es.Select(e => e.Blank).ToArray(), es.Select(e => e.Cat).ToArray(),
            es.Select(e => e.Fake).ToArray());

    /// <summary>Category 0: 60 items, ids 1000..1059, value = id − 1000 (1059 is the most similar to [1]).</summary>
    private static IEnumerable<E> Cat0Fakes(params long[] except) =>
        Enumerable.Range(1000, 60).Where(id => !except.Contains(id)).Select(id => new E(id, 0, id - 1000, Fake: true));

    [Test]
    public void HitsAreWeightedByOneOverTheQueriesOfTheirCategoryAndDividedByTheCategoryCount()
    {
        var es = new List<E>
        {
            new(1059, 0, 59, false),    // rank 0: hit at 10, 30, 50
            new(1040, 0, 40, false),    // 19 items above (1041..1059): miss at 10, hit at 30 and 50
            new(2000, 1, 3, false),     // alone in category 1 (category-0 items are masked to −1): hit
        };
        es.AddRange(Cat0Fakes(1059, 1040));
        var r = Run(es);
        // R@10 = (½·1 + ½·0 + 1·1) / 2 categories = 0.75 (an unweighted mean over queries would give 2/3).
        Assert.That(r["r@10"], Is.EqualTo(0.75).Within(1e-12));
        Assert.That(r["r@30"], Is.EqualTo(1.0).Within(1e-12));
        Assert.That(r["r@50"], Is.EqualTo(1.0).Within(1e-12));
        Assert.That(r["avg"], Is.EqualTo(2.75 / 3).Within(1e-12));
        Assert.That(r.Keys, Is.EquivalentTo(new[] { "r@10", "r@30", "r@50", "avg" }));
    }

    [Test]
    public void RanksBetweenTheCutoffsGiveTheExpectedRecalls()
    {
        // One query in category 0 whose positive has 35 items above it: miss at 10 and 30, hit at 50.
        var es = new List<E> { new(1024, 0, 24, false) };
        es.AddRange(Cat0Fakes(1024));
        var r = Run(es);
        Assert.That((r["r@10"], r["r@30"], r["r@50"]), Is.EqualTo((0.0, 0.0, 1.0)));
        Assert.That(r["avg"], Is.EqualTo(1.0 / 3).Within(1e-12));
    }

    [Test]
    public void OtherCategoriesAreMaskedToMinusOne()
    {
        // Category 1's positive has similarity 3; the 60 category-0 items (up to 59) would bury it without the mask.
        var es = new List<E> { new(2000, 1, 3, false) };
        es.AddRange(Cat0Fakes());
        Assert.That(Run(es)["r@10"], Is.EqualTo(1.0));

        // The mask is the value −1, not "excluded": a positive at −5 falls behind all 60 masked items (the reference's
        // behaviour), so it is missed even at 50; at −0.5 it is ahead of them again.
        es[0] = new E(2000, 1, -5, false);
        var low = Run(es);
        Assert.That((low["r@10"], low["r@30"], low["r@50"]), Is.EqualTo((0.0, 0.0, 0.0)));
        es[0] = new E(2000, 1, -0.5f, false);
        Assert.That(Run(es)["r@10"], Is.EqualTo(1.0));
    }

    [Test]
    public void FakeEntriesAreGalleryOnlyAndRepeatedBlanksCountOnce()
    {
        // A fake entry whose "query" would be a miss is not a query: the result stays 1.
        var es = new List<E> { new(1059, 0, 59, false), new(1000, 0, 0, true) };
        es.AddRange(Cat0Fakes(1059, 1000));
        Assert.That(Run(es)["r@10"], Is.EqualTo(1.0));

        // 12 further entries with blank 1058 (value 58) and 1057: still one gallery item each. A query on 1048 has exactly
        // 11 distinct items above it (1049..1059) → miss at 10; if repeats counted, it would have 33 above (→ miss at 30 too).
        var rep = new List<E> { new(1048, 0, 48, false) };
        rep.AddRange(Cat0Fakes(1048));
        for (int i = 0; i < 12; i++) { rep.Add(new E(1058, 0, 58, true)); rep.Add(new E(1057, 0, 57, true)); }
        var r = Run(rep);
        Assert.That((r["r@10"], r["r@30"]), Is.EqualTo((0.0, 1.0)));
    }

    [Test]
    public void TheGalleryUsesTheFirstEntryOfEachBlankId()
    {
        // Blank 1059 first appears (fake) with value −50, later as a query entry with 59: the gallery keeps −50, so the
        // query's positive is far down (59 items above it in category 0 → miss even at 50).
        var es = new List<E> { new(1059, 0, -50, true) };
        es.AddRange(Cat0Fakes(1059));
        es.Add(new E(1059, 0, 59, false));
        Assert.That(Run(es)["r@50"], Is.EqualTo(0.0));
    }

    [Test]
    public void TiesRankTheSmallerIdFirst()
    {
        // Ten items with value 100 and ids below the positive (also 100): it lands at place 11 → miss at 10.
        var es = new List<E> { new(1500, 0, 100, false) };
        es.AddRange(Enumerable.Range(1400, 10).Select(id => new E(id, 0, 100, true)));
        Assert.That(Run(es)["r@10"], Is.EqualTo(0.0));
        // The same items with larger ids: the positive comes first.
        var es2 = new List<E> { new(1300, 0, 100, false) };
        es2.AddRange(Enumerable.Range(1400, 10).Select(id => new E(id, 0, 100, true)));
        Assert.That(Run(es2)["r@10"], Is.EqualTo(1.0));
    }

    [Test]
    public void ChanceIsMinKOverCategorySizeClassBalanced()
    {
        // Category 0: 60 gallery items, 2 queries → 10/60, 30/60, 50/60; category 1: 1 item, 1 query → 1.
        var es = new List<E> { new(1059, 0, 0, false), new(1040, 0, 0, false), new(2000, 1, 0, false) };
        es.AddRange(Cat0Fakes(1059, 1040));
        var c = OcirRecall.Chance(es.Select(e => e.Blank).ToArray(), es.Select(e => e.Cat).ToArray(), es.Select(e => e.Fake).ToArray());
        Assert.That(c["r@10"], Is.EqualTo((10.0 / 60 + 1) / 2).Within(1e-12));
        Assert.That(c["r@30"], Is.EqualTo((30.0 / 60 + 1) / 2).Within(1e-12));
        Assert.That(c["r@50"], Is.EqualTo((50.0 / 60 + 1) / 2).Within(1e-12));
    }

    [Test]
    public void BadInputsNameTheProblem()
    {
        Assert.That(() => OcirRecall.Compute([null], [[1f]], [1L], [0], [true]), Throws.ArgumentException.With.Message.Contains("every entry is fake_data"));
        Assert.That(() => OcirRecall.Compute([null], [[1f]], [1L], [0], [false]), Throws.ArgumentException.With.Message.Contains("entry 0"));
        Assert.That(() => OcirRecall.Compute([[1f]], [[1f]], [1L, 2L], [0], [false]), Throws.ArgumentException.With.Message.Contains("differ in length"));
    }
}
