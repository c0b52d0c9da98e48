using System.Text.Json;
using System.Text.RegularExpressions;
using FashionViL.Synth;

namespace FashionViL.Tests.Synth;

/// <summary>
/// The Polyvore outfit rule: every item of an outfit wears the outfit's style — two colours (body and print) and one print
/// (stripes, checks or dots); dresses, tops, jackets and hats have the first colour as body, bottoms, shoes and bags the
/// second. So the look of the blank follows from the question items, and the galleries mix many styles. Checked on the
/// metadata texts (which other tests tie to the drawing) and on the images themselves.
/// </summary>
public class SynthOutfitStyleTests
{
    private static string D => SynthFixture.Datasets;

    // The shared fixture's 64-px JPEGs are too small for the prints to survive JPEG's 2×2 colour subsampling (a 64-px polka
    // dot is 3 px across), so the image check uses its own 160-px set (N = 24: 6 outfits, about 27 items).
    private static readonly Lazy<string> Large = new(() =>
    {
        string dir = SynthFixture.TempDir("style160");
        SyntheticDatasets.Generate(new SynthOptions(dir, 24, Seed: 5, ImageSize: 160));
        return Path.Combine(dir, "datasets");
    });

    [OneTimeTearDown]
    public void RemoveLargeSet()
    {
        if (Large.IsValueCreated) Directory.Delete(Path.GetDirectoryName(Large.Value)!, recursive: true);
    }

    private sealed record Look(string Body, string Print, string Pattern, string Semantic);

    private static readonly Regex PrintClause = new(@"with (\w+) (stripes|checks|polka dots)");

    private static Dictionary<string, Look> Looks(string? datasets = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(datasets ?? D, "PolyvoreOutfits/polyvore_item_metadata.json")));
        var looks = new Dictionary<string, Look>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            var title = p.Value.GetProperty("title").GetString()!.ToLowerInvariant().Split(' ');
            var m = PrintClause.Match(p.Value.GetProperty("description").GetString()!);
            Assert.That(m.Success, Is.True, $"item {p.Name}: every outfit item carries a print, description '{p.Value.GetProperty("description")}'");
            string pattern = title[1] switch { "striped" => "stripes", "checked" => "checks", "polka" => "polka dots", _ => "plain" };
            Assert.That(pattern, Is.EqualTo(m.Groups[2].Value), $"item {p.Name}: title '{string.Join(' ', title)}' vs description");
            looks[p.Name] = new Look(title[0], m.Groups[1].Value, pattern, p.Value.GetProperty("semantic_category").GetString()!);
        }
        return looks;
    }

    private static List<(string[] Question, string Blank, bool Fake)> Entries(string file)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(D, "PolyvoreOutfits", file)));
        return doc.RootElement.EnumerateArray().Select(e => (
            e.GetProperty("question").EnumerateArray().Select(x => x.GetString()!).ToArray(),
            e.GetProperty("blank").GetString()!,
            e.TryGetProperty("fake_data", out var f) && f.GetBoolean())).ToList();
    }

    private static readonly string[] Files =
        ["ocir_disjoint_train.json", "ocir_disjoint_test.json", "ocir_nondisjoint_train.json", "ocir_nondisjoint_test.json"];

    private static bool Inverted(string semantic) => semantic is "bottoms" or "shoes" or "bags";

    /// <summary>(first colour, second colour, print) of an item, undoing the inversion of bottoms, shoes and bags.</summary>
    private static (string, string, string) StyleOf(Look l) => Inverted(l.Semantic) ? (l.Print, l.Body, l.Pattern) : (l.Body, l.Print, l.Pattern);

    [Test]
    public void EveryItemOfAnOutfitWearsTheOutfitsColoursAndPrint()
    {
        var looks = Looks();
        int outfits = 0;
        foreach (var file in Files)
        {
            foreach (var (question, blank, _) in Entries(file))
            {
                var items = question.Append(blank).ToArray();
                var styles = items.Select(i => StyleOf(looks[i])).Distinct().ToArray();
                Assert.That(styles, Has.Length.EqualTo(1),
                    $"{file}: outfit {string.Join(",", items)} mixes styles {string.Join(" | ", items.Select(i => looks[i]))}");
                var (first, second, _) = styles[0];
                Assert.That(first, Is.Not.EqualTo(second), $"{file}: a style has two different colours");
                // The blank's look follows from any one question item: same print, the two colours swapped or not by category.
                var b = looks[blank];
                foreach (var q in question)
                {
                    var l = looks[q];
                    Assert.That(l.Pattern, Is.EqualTo(b.Pattern));
                    bool sameRole = Inverted(l.Semantic) == Inverted(b.Semantic);
                    Assert.That((l.Body, l.Print), Is.EqualTo(sameRole ? (b.Body, b.Print) : (b.Print, b.Body)), $"{file}: {q} vs blank {blank}");
                }
                outfits++;
            }
        }
        Assert.That(outfits, Is.GreaterThan(10));
    }

    [Test]
    public void GalleriesMixManyStyles()
    {
        var looks = Looks();
        var train = Entries("ocir_disjoint_train.json");
        var styles = train.Select(e => StyleOf(looks[e.Blank])).ToList();
        Assert.That(styles.Distinct().Count(), Is.GreaterThanOrEqualTo(styles.Count * 8 / 10), "outfits draw their styles from 468");
        Assert.That(styles.Select(s => s.Item3).Distinct().Count(), Is.EqualTo(3), "all three prints occur");
        // In the test gallery (every test item), items of one category come from different outfits with different styles.
        var test = Entries("ocir_disjoint_test.json");
        var gallery = test.Select(e => e.Blank).Distinct().ToList();
        foreach (var group in gallery.GroupBy(i => looks[i].Semantic).Where(g => g.Count() >= 2))
            Assert.That(group.Select(i => StyleOf(looks[i])).Distinct().Count(), Is.GreaterThan(1), $"gallery of {group.Key}");
    }

    [Test]
    public void EveryOutfitItemImageShowsBothColoursOfItsStyle()
    {
        var looks = Looks(Large.Value);
        int seen = 0;
        foreach (var (id, l) in looks)
        {
            string path = Path.Combine(Large.Value, "PolyvoreOutfits/images", $"{id}.jpg");
            var names = SynthContentTests.CentreWindow(path, 0.1).Select(SynthContentTests.Nearest).ToList();
            double fBody = names.Count(n => n == l.Body) / (double)names.Count, fPrint = names.Count(n => n == l.Print) / (double)names.Count;
            // The body fills the centre; the print takes half of it (stripes, checks) or about 30 % (dots, radius 0.022 on a
            // 0.07 grid). The bounds are far below those shares because JPEG blurs the colours at every print edge (yellow
            // dots on white turn much of the white beige); an item without the print, or in other colours, scores ~0.
            Assert.That(fBody, Is.GreaterThan(0.15), $"{path} ({l}): {l.Body} share {fBody:F2}");
            Assert.That(fPrint, Is.GreaterThan(0.04), $"{path} ({l}): {l.Print} share {fPrint:F2}");
            seen++;
        }
        Assert.That(seen, Is.GreaterThan(20));
    }
}
