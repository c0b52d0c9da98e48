using System.Text.Json;
using FashionViL.Data;

namespace FashionViL.Tests.Data;

/// <summary>BEiT block mask for MPFC (spec §2.4, reference BlockWiseMaskedPatchProcessor).</summary>
public class TextBlockMaskTests
{
    [Test]
    public void HandComputedDrawsOnA3x3Grid()
    {
        var g = new BlockMaskGenerator(3, 3, numMaskingPatches: 2, minNumPatches: 1, maxNumPatches: 2);
        var rng = new ScriptedRandom(
            0.99, 0.999,        // round 1, attempt 1: area 1.99, aspect 3.32 → h = round(2.57) = 3 = H: rejected, no position drawn
            0.99, 0.5, 2, 0,    // attempt 2: area 1.99, aspect 1 → 1×1 at (2,0): 1 new cell ≤ budget 2
            0.3, 0.5, 2, 0,     // round 2 (budget 1), attempt 1: 1×1 at (2,0) again: 0 new cells → retry
            0.3, 0.5, 0, 1);    // attempt 2: 1×1 at (0,1)
        Assert.That(g.Generate(rng), Is.EqualTo(new long[] { 0, 1, 0, 0, 0, 0, 1, 0, 0 }));
        Assert.That(rng.IntRanges, Is.All.EqualTo((0, 3)), "top/left ~ randint[0, 3 − 1] inclusive");
        Assert.That(rng.Exhausted, Is.True);
    }

    [Test]
    public void AreaIsDrawnBetweenMinAndBudgetEvenWhenTheBudgetIsSmaller()
    {
        // 7×7, 2 cells, blocks 4..8: budget 2 < min 4, so area = 4 + (2 − 4)·u (Python random.uniform).
        var g = new BlockMaskGenerator(numMaskingPatches: 2);
        var rng = new ScriptedRandom(
            0.9, 0.5, 3, 3,     // area 2.2, aspect 1 → 1×1 at (3,3)
            0.9, 0.5, 0, 6);    // budget 1: area 1.3 → 1×1 at (0,6)
        var m = g.Generate(rng);
        var expected = new long[49];
        expected[3 * 7 + 3] = 1;
        expected[0 * 7 + 6] = 1;
        Assert.That(m, Is.EqualTo(expected));
        Assert.That(rng.IntRanges, Is.All.EqualTo((0, 7)));
    }

    [Test]
    public void EveryMaskIsAUnionOfInBoundsRectangles()
    {
        var g = new BlockMaskGenerator();
        for (int s = 0; s < 2000; s++)
        {
            var blocks = new List<BlockMaskGenerator.Block>();
            var m = g.Generate(PhiloxRandom.ForSample(5, s, PhiloxRandom.Purpose.ImageMask), blocks);
            var union = new long[49];
            int added = 0;
            foreach (var b in blocks)
            {
                Assert.That(b.H, Is.InRange(1, 6), $"sample {s}: block height < grid height");
                Assert.That(b.W, Is.InRange(1, 6), $"sample {s}: block width < grid width");
                Assert.That(b.Top + b.H, Is.LessThanOrEqualTo(7));
                Assert.That(b.Left + b.W, Is.LessThanOrEqualTo(7));
                Assert.That(b.Top, Is.GreaterThanOrEqualTo(0));
                Assert.That(b.Left, Is.GreaterThanOrEqualTo(0));
                Assert.That(b.Added, Is.InRange(1, b.Budget), $"sample {s}: a block adds 1..budget new cells");
                Assert.That(b.Budget, Is.InRange(1, 8));
                for (int i = b.Top; i < b.Top + b.H; i++)
                    for (int j = b.Left; j < b.Left + b.W; j++) union[i * 7 + j] = 1;
                added += b.Added;
            }
            Assert.That(m, Is.EqualTo(union), $"sample {s}: mask = union of its rectangles");
            Assert.That(m.Sum(), Is.EqualTo(added));
            Assert.That(added, Is.LessThanOrEqualTo(8));
        }
    }

    [Test]
    public void StatisticsMatchAnIndependentPythonSampler()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(FixtureDir(), "block_mask_stats.json")));
        long refDraws = doc.RootElement.GetProperty("draws").GetInt64();
        foreach (var cfg in doc.RootElement.GetProperty("configs").EnumerateObject())
        {
            var c = cfg.Value;
            int h = c.GetProperty("height").GetInt32(), w = c.GetProperty("width").GetInt32();
            var g = new BlockMaskGenerator(h, w, c.GetProperty("num_masking_patches").GetInt32(),
                c.GetProperty("min_num_patches").GetInt32(), c.GetProperty("max_num_patches").GetInt32(),
                c.GetProperty("min_aspect").GetDouble());
            var refHist = c.GetProperty("count_histogram").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var refCells = c.GetProperty("cell_counts").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            const int N = 20000;
            var hist = new long[h * w + 1];
            var cells = new long[h * w];
            for (int s = 0; s < N; s++)
            {
                var m = g.Generate(PhiloxRandom.ForSample(99, s, PhiloxRandom.Purpose.ImageMask));
                hist[m.Sum()]++;
                for (int i = 0; i < m.Length; i++) cells[i] += m[i];
            }
            int n = g.NumMaskingPatches;
            TestContext.Out.WriteLine($"{cfg.Name}: exactly {n} masked in {(double)hist[n] / N:P2} of {N} draws " +
                $"(Python: {(double)refHist[n] / refDraws:P2} of {refDraws}); histogram " +
                string.Join(", ", hist.Select((v, k) => (v, k)).Where(t => t.v > 0).Select(t => $"{t.k}:{t.v}")));
            Assert.That(hist.Skip(n + 1).Sum(), Is.Zero, $"{cfg.Name}: never more than {n} cells");
            // Two-sample binomial comparisons at 5σ: sd = √(p(1 − p)(1/N + 1/N_ref)), p from the reference sample.
            for (int k = 0; k <= n; k++)
                AssertSameRate(hist[k], N, refHist[k], refDraws, $"{cfg.Name}: P(count = {k})");
            for (int i = 0; i < cells.Length; i++)
                AssertSameRate(cells[i], N, refCells[i], refDraws, $"{cfg.Name}: P(cell {i} masked)");
        }
    }

    private static void AssertSameRate(long k, long n, long kRef, long nRef, string what)
    {
        double p = (double)kRef / nRef;
        double sd = Math.Sqrt(Math.Max(p * (1 - p), 1.0 / nRef) * (1.0 / n + 1.0 / nRef));
        Assert.That(Math.Abs((double)k / n - p), Is.LessThanOrEqualTo(5 * sd), $"{what}: {(double)k / n:F5} vs Python {p:F5} (5σ = {5 * sd:F5})");
    }

    [Test]
    public void SmallGridParametersWork()
    {
        var g = new BlockMaskGenerator(3, 3, numMaskingPatches: 2, minNumPatches: 1, maxNumPatches: 2);
        int exact = 0;
        for (int s = 0; s < 2000; s++)
        {
            var blocks = new List<BlockMaskGenerator.Block>();
            var m = g.Generate(PhiloxRandom.ForSample(3, s, PhiloxRandom.Purpose.ImageMask), blocks);
            Assert.That(m, Has.Length.EqualTo(9));
            Assert.That(m, Is.All.InRange(0L, 1L));
            Assert.That(m.Sum(), Is.InRange(1, 2));
            Assert.That(blocks.All(b => b.H < 3 && b.W < 3), Is.True);
            if (m.Sum() == 2) exact++;
        }
        // The Python sampler had 1 short mask in 200,000: expect all but a handful here.
        Assert.That(exact, Is.GreaterThanOrEqualTo(1995));
    }

    [Test]
    public void DeterministicPerSeedAndSample()
    {
        var g = new BlockMaskGenerator();
        var a = Enumerable.Range(0, 100).Select(i => g.Generate(PhiloxRandom.ForSample(8, i, PhiloxRandom.Purpose.ImageMask))).ToArray();
        var b = new long[100][];
        Parallel.For(0, 100, i => b[i] = g.Generate(PhiloxRandom.ForSample(8, i, PhiloxRandom.Purpose.ImageMask)));
        for (int i = 0; i < 100; i++) Assert.That(b[i], Is.EqualTo(a[i]), $"sample {i}");
        int distinct = a.Select(m => string.Concat(m)).Distinct().Count();
        Assert.That(distinct, Is.GreaterThan(90), "different samples get different masks");
        var other = g.Generate(PhiloxRandom.ForSample(9, 0, PhiloxRandom.Purpose.ImageMask));
        var sameSeedOtherPurpose = g.Generate(PhiloxRandom.ForSample(8, 0, PhiloxRandom.Purpose.TextMask));
        Assert.That(other, Is.Not.EqualTo(a[0]), "another seed");
        Assert.That(sameSeedOtherPurpose, Is.Not.EqualTo(a[0]), "another purpose stream");
    }

    [Test]
    public void BadParametersAreNamed()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new BlockMaskGenerator(3, 3, numMaskingPatches: 10));
        Assert.That(ex!.ParamName, Is.EqualTo("numMaskingPatches"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlockMaskGenerator(minAspect: 0));
    }

    internal static string FixtureDir()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "text");
            if (Directory.Exists(p)) return p;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/text not found above {TestContext.CurrentContext.TestDirectory}");
    }
}
