using System.Text.Json;
using FashionViL.Eval;

namespace FashionViL.Tests.Downstream.FashionIq;

/// <summary>
/// r@k_fashioniq on hand-computed cases (spec §4.2; reference RecallAtK_fashioniq): per class, real queries only, gallery =
/// distinct target ids over all entries (fake included) represented by their first entry, ascending id order, dot product.
/// Every expected value below is worked out by hand in the comments.
/// </summary>
public class FashionIqMetricTests
{
    private const float NaN = float.NaN;

    private static float[] Rows(params float[][] rows) => rows.SelectMany(r => r).ToArray();

    [Test]
    public void OneClassRanksByDotProductAndAveragesOverQueries()
    {
        // dress only, 2-d. Gallery ids 0,1,2 with targets (1,0), (0,1), (-1,0) from entries 0,1,2.
        // Query 0 (id 0) = (0.9, 0.1): scores 0.9, 0.1, -0.9 → own rank 0 → hit@1.
        // Query 1 (id 1) = (1, 0.5): scores 1, 0.5, -1 → own rank 1 → miss@1, hit@2.
        // Query 2 (id 2) = (0, 1): scores 0, 1, 0 → own (id 2, score 0) behind id 1 (1) and id 0 (tie 0, lower id) → rank 2 → miss@2.
        var comp = Rows([0.9f, 0.1f], [1f, 0.5f], [0f, 1f]);
        var tar = Rows([1f, 0f], [0f, 1f], [-1f, 0f]);
        var r = FashionIqMetric.Compute(comp, tar, 2, [0, 1, 2], [false, false, false], [0, 0, 0], k1: 1, k2: 2);
        Assert.That(r.Keys, Is.EquivalentTo(new[] { "dress_r@1", "dress_r@2", "avg" }));
        Assert.That(r["dress_r@1"], Is.EqualTo(1.0 / 3).Within(1e-12));
        Assert.That(r["dress_r@2"], Is.EqualTo(2.0 / 3).Within(1e-12));
        Assert.That(r["avg"], Is.EqualTo(0.5).Within(1e-12));
    }

    [Test]
    public void FakeEntriesAreGalleryItemsButNeverQueries()
    {
        // Entry 1 is fake (its composed row is NaN: reading it would throw). Its target id 5 = (1,0) joins the gallery.
        // Real query entry 0 (id 3, target (0,1)), composed (1, 0.2): scores id3 0.2, id5 1 → own rank 1 → R@1 = 0, R@2 = 1.
        // Without the fake gallery item R@1 would be 1, so the fake entry demonstrably counts.
        var comp = Rows([1f, 0.2f], [NaN, NaN]);
        var tar = Rows([0f, 1f], [1f, 0f]);
        var r = FashionIqMetric.Compute(comp, tar, 2, [3, 5], [false, true], [1, 1], k1: 1, k2: 2);
        Assert.That(r["shirt_r@1"], Is.EqualTo(0.0));
        Assert.That(r["shirt_r@2"], Is.EqualTo(1.0));
        Assert.That(r.ContainsKey("dress_r@1"), Is.False, "classes without entries are left out");
    }

    [Test]
    public void DuplicateTargetIdsUseTheFirstEntrysEmbedding()
    {
        // Entries 0 and 2 share id 7; entry 0's target (1,0) is the gallery item, entry 2's target row is NaN (never read).
        // Entry 1: id 4, target (0,1). Queries: entry 0 composed (1,0): id4 0, id7 1 → hit@1.
        // entry 2 composed (0.6,0.4): id4 0.4, id7 0.6 → hit@1. entry 1 composed (0.5,0.6): id4 0.6, id7 0.5 → hit@1.
        // Had the second id-7 entry's embedding been used, NaN scores would have raised.
        var comp = Rows([1f, 0f], [0.5f, 0.6f], [0.6f, 0.4f]);
        var tar = Rows([1f, 0f], [0f, 1f], [NaN, NaN]);
        var r = FashionIqMetric.Compute(comp, tar, 2, [7, 4, 7], [false, false, false], [2, 2, 2], k1: 1, k2: 2);
        Assert.That(r["toptee_r@1"], Is.EqualTo(1.0));
        // A different first entry changes the answer: swap which id-7 entry comes first (its target (-1,0) is now the item).
        // Queries: (1,0): id4 0, id7 -1 → miss@1; (0.6,0.4): id4 0.4, id7 -0.6 → miss@1; (0.5,0.6) id 4: 0.6 vs -0.5 → hit@1.
        var tar2 = Rows([-1f, 0f], [0f, 1f], [NaN, NaN]);
        var r2 = FashionIqMetric.Compute(comp, tar2, 2, [7, 4, 7], [false, false, false], [2, 2, 2], k1: 1, k2: 2);
        Assert.That(r2["toptee_r@1"], Is.EqualTo(1.0 / 3).Within(1e-12));
    }

    [Test]
    public void TiesRankTheSmallerTargetIdFirstWhateverTheEntryOrder()
    {
        // Gallery ids 9 (entry 0) and 2 (entry 1) have the same target (1,0); the gallery order is ascending id: 2, 9.
        // Query entry 0 (id 9) composed (1,0): both score 1; id 2 ranks first → id 9 at rank 1 → miss@1.
        // Query entry 1 (id 2): tie, own id is the smaller → rank 0 → hit@1. R@1 = 1/2, R@2 = 1.
        var comp = Rows([1f, 0f], [1f, 0f]);
        var tar = Rows([1f, 0f], [1f, 0f]);
        var r = FashionIqMetric.Compute(comp, tar, 2, [9, 2], [false, false], [0, 0], k1: 1, k2: 2);
        Assert.That(r["dress_r@1"], Is.EqualTo(0.5));
        Assert.That(r["dress_r@2"], Is.EqualTo(1.0));
    }

    [Test]
    public void ThreeClassesAreSeparateGalleriesAndAvgIsTheMeanOfSix()
    {
        // 1-d embeddings. dress (class 0): ids 0 (t=1), 1 (t=2); shirt (1): ids 0 (t=-1), 1 (t=5); toptee (2): id 0 (t=1), id 1 (t=3) fake.
        // Same ids in different classes are different gallery items (per-class galleries).
        // dress: q id0 c=-1: scores -1, -2 → own (id0) rank 0 → hit@1; q id1 c=1: 1, 2 → own rank 0 → hit@1. R@1 = 1.
        // shirt: q id0 c=1: scores id0 -1, id1 5 → own rank 1 → miss@1; q id1 c=1 → hit. R@1 = 0.5.
        //   (With dress's id-0 target (1) instead, q id0 would hit: classes do not mix.)
        // toptee: q id0 c=1: id0 1, id1 3 (from the fake entry) → rank 1 → miss@1. R@1 = 0.
        // k2 = 2 covers every gallery: all 1. avg = (1 + 1 + 0.5 + 1 + 0 + 1) / 6 = 4.5 / 6 = 0.75.
        float[] comp = [-1f, 1f, 1f, 1f, 1f, NaN];
        float[] tar = [1f, 2f, -1f, 5f, 1f, 3f];
        var r = FashionIqMetric.Compute(comp, tar, 1, [0, 1, 0, 1, 0, 1], [false, false, false, false, false, true], [0, 0, 1, 1, 2, 2], k1: 1, k2: 2);
        Assert.That(r.Keys, Is.EquivalentTo(new[] { "dress_r@1", "dress_r@2", "shirt_r@1", "shirt_r@2", "toptee_r@1", "toptee_r@2", "avg" }));
        Assert.That(r["dress_r@1"], Is.EqualTo(1.0));
        Assert.That(r["shirt_r@1"], Is.EqualTo(0.5));
        Assert.That(r["toptee_r@1"], Is.EqualTo(0.0));
        Assert.That(r["dress_r@2"] + r["shirt_r@2"] + r["toptee_r@2"], Is.EqualTo(3.0));
        Assert.That(r["avg"], Is.EqualTo(0.75).Within(1e-12));
    }

    [Test]
    public void DefaultKeysAreR10AndR50AndAGalleryUnder50CountsAsWhole()
    {
        // dress: 12 gallery items, 1-d targets t_id = id (ids 0..11), every entry real, composed c = -1 for all:
        // score = -id, so the ranking is 0,1,...,11 and query id i has rank i. R@10 = 10/12 (ids 0..9), R@50 = 1 (all 12
        // items fit in fewer than 50). No other class present → avg = (10/12 + 1) / 2.
        int n = 12;
        var ids = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        var r = FashionIqMetric.Compute(Enumerable.Repeat(-1f, n).ToArray(), ids.Select(i => (float)i).ToArray(), 1, ids, new bool[n], new long[n]);
        Assert.That(r.Keys, Is.EquivalentTo(new[] { "dress_r@10", "dress_r@50", "avg" }));
        Assert.That(r["dress_r@10"], Is.EqualTo(10.0 / 12).Within(1e-12));
        Assert.That(r["dress_r@50"], Is.EqualTo(1.0));
        Assert.That(r["avg"], Is.EqualTo((10.0 / 12 + 1) / 2).Within(1e-12));
    }

    [Test]
    public void MatchesTheReferenceProtocolRunInTorchOnRandomData()
    {
        // tools/fixtures/make_fashioniq_metric_fixture.py: ~400 interleaved entries of three classes, ~30% fake, repeated ids,
        // galleries of more than 50 items, no ties; expected values from np.unique + torch.topk as the reference computes them.
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
        var file = Path.Combine(dir?.FullName ?? throw new DirectoryNotFoundException("repository root"), "tests", "fixtures", "fashioniq", "metric.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var root = doc.RootElement;
        float[] F(string k) => root.GetProperty(k).EnumerateArray().Select(v => v.GetSingle()).ToArray();
        long[] L(string k) => root.GetProperty(k).EnumerateArray().Select(v => v.GetInt64()).ToArray();
        var fake = root.GetProperty("fake_data").EnumerateArray().Select(v => v.GetBoolean()).ToArray();
        var r = FashionIqMetric.Compute(F("composed"), F("targets"), root.GetProperty("dim").GetInt32(), L("target_id"), fake, L("garment_class"));
        var expected = root.GetProperty("expected").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
        Assert.That(r.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (k, v) in expected) Assert.That(r[k], Is.EqualTo(v).Within(1e-6), k);
        Assert.That(expected["dress_r@10"], Is.InRange(0.2, 0.9), "a discriminating case (neither chance nor perfect)");
    }

    [Test]
    public void RowsNeededMarksRealQueriesAndFirstTargetOfEachClassAndId()
    {
        var (q, t) = FashionIqMetric.RowsNeeded([4, 4, 4, 2], [false, true, false, true], [0, 0, 1, 0]);
        Assert.That(q, Is.EqualTo(new[] { true, false, true, false }));
        Assert.That(t, Is.EqualTo(new[] { true, false, true, true }), "id 4 is first in class 0 at entry 0 and in class 1 at entry 2");
    }

    [Test]
    public void BadInputsNameTheProblem()
    {
        var e1 = Assert.Throws<ArgumentException>(() => FashionIqMetric.Compute([1f], [1f], 1, [0], [false], [3]));
        Assert.That(e1!.Message, Does.Contain("garment_class 3"));
        var e2 = Assert.Throws<ArgumentException>(() => FashionIqMetric.Compute([1f, 1f], [1f, 1f], 1, [0, 1], [true, true], [1, 1]));
        Assert.That(e2!.Message, Does.Contain("shirt").And.Contain("fake"));
        var e3 = Assert.Throws<ArgumentException>(() => FashionIqMetric.Compute([1f], [1f, 2f], 1, [0], [false], [0]));
        Assert.That(e3!.Message, Does.Contain("expected 1×1"));
        var e4 = Assert.Throws<ArgumentException>(() => FashionIqMetric.Compute([NaN], [1f], 1, [0], [false], [0]));
        Assert.That(e4!.Message, Does.Contain("NaN"));
    }
}
