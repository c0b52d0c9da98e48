using System.Text.Json;
using System.Text.RegularExpressions;
using FashionViL.Synth;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FashionViL.Tests.Synth;

/// <summary>The texts and attribute ids describe what is drawn: colours at the garment centre, patterns, silhouettes.</summary>
public class SynthContentTests
{
    // Reference colours: the CSS/X11 named colours (an independent standard, not the generator's palette).
    private static readonly Dictionary<string, (int R, int G, int B)> Css = new()
    {
        ["red"] = (255, 0, 0), ["blue"] = (0, 0, 255), ["green"] = (0, 128, 0), ["yellow"] = (255, 255, 0),
        ["black"] = (0, 0, 0), ["white"] = (255, 255, 255), ["grey"] = (128, 128, 128), ["pink"] = (255, 192, 203),
        ["purple"] = (128, 0, 128), ["orange"] = (255, 165, 0), ["brown"] = (165, 42, 42), ["beige"] = (245, 245, 220),
        ["navy"] = (0, 0, 128),
    };

    internal static string Nearest(Rgb24 p) => Css.MinBy(kv =>
        (kv.Value.R - p.R) * (kv.Value.R - p.R) + (kv.Value.G - p.G) * (kv.Value.G - p.G) + (kv.Value.B - p.B) * (kv.Value.B - p.B)).Key;

    /// <summary>Pixels within ±<paramref name="fraction"/> of the image size around the image centre.</summary>
    internal static List<Rgb24> CentreWindow(string path, double fraction = 0.06)
    {
        using var image = Image.Load<Rgb24>(path);
        int r = Math.Max(2, (int)Math.Round(image.Width * fraction)), cx = image.Width / 2, cy = image.Height / 2;
        var list = new List<Rgb24>();
        for (int y = cy - r; y < cy + r; y++)
            for (int x = cx - r; x < cx + r; x++)
                list.Add(image[x, y]);
        return list;
    }

    private static Rgb24 Median(List<Rgb24> px) => new(
        px.Select(p => p.R).Order().ElementAt(px.Count / 2),
        px.Select(p => p.G).Order().ElementAt(px.Count / 2),
        px.Select(p => p.B).Order().ElementAt(px.Count / 2));

    private static IEnumerable<(JsonElement Item, string Split)> FashionGen()
    {
        foreach (var split in new[] { "train", "val" })
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(SynthFixture.Datasets, $"FashionGen/{split}_info.json")));
            foreach (var e in doc.RootElement.EnumerateArray().Select(x => x.Clone()).ToList()) yield return (e, split);
        }
    }

    private static readonly string[] PatternWords = ["striped", "checked", "polka"];

    [Test]
    public void CentreOfEveryViewOfPlainProductsShowsTheColourNamedFirstInTheTitle()
    {
        int checkedImages = 0;
        var colours = new HashSet<string>();
        foreach (var (e, split) in FashionGen())
        {
            var title = e.GetProperty("title").GetString()!.ToLowerInvariant().Split(' ');
            if (title.Any(PatternWords.Contains)) continue;
            foreach (var im in e.GetProperty("images").EnumerateArray())
            {
                string path = Path.Combine(SynthFixture.Datasets, "FashionGen", split, im.GetString()!);
                var median = Median(CentreWindow(path));
                Assert.That(Nearest(median), Is.EqualTo(title[0]), $"{path}: centre {median} for title '{string.Join(' ', title)}'");
                checkedImages++;
            }
            colours.Add(title[0]);
        }
        Assert.That(checkedImages, Is.GreaterThan(40));
        Assert.That(colours.Count, Is.GreaterThanOrEqualTo(8));
    }

    [Test]
    public void PatternedProductsShowBothNamedColoursAtTheCentre()
    {
        int seen = 0;
        var rx = new Regex(@"with (\w+) (stripes|checks|polka dots)");
        foreach (var (e, split) in FashionGen())
        {
            string title = e.GetProperty("title").GetString()!.ToLowerInvariant();
            var m = rx.Match(e.GetProperty("description").GetString()!);
            bool patterned = title.Split(' ').Any(PatternWords.Contains);
            Assert.That(m.Success, Is.EqualTo(patterned), $"title '{title}' vs description");
            if (!patterned) continue;
            string main = title.Split(' ')[0], second = m.Groups[1].Value;
            string path = Path.Combine(SynthFixture.Datasets, "FashionGen", split, e.GetProperty("images")[0].GetString()!);
            var names = CentreWindow(path, 0.1).Select(Nearest).ToList();
            double fMain = names.Count(n => n == main) / (double)names.Count, fSecond = names.Count(n => n == second) / (double)names.Count;
            // Stripes and checks cover half the fabric, dots about 30%; a zip, buttons and outlines take a few pixels.
            Assert.That(fMain, Is.GreaterThan(0.2), $"{path}: {main} share");
            Assert.That(fSecond, Is.GreaterThan(0.1), $"{path}: {second} share");
            seen++;
        }
        Assert.That(seen, Is.GreaterThan(10));
    }

    private static Garment Representative(int subcategory) => subcategory switch
    {
        0 => new(GarmentCategory.Dress, 0, GarmentPattern.Plain, 1, SleeveLength.Short, Neckline.Round, GarmentLength.Short, 0, null),
        1 => new(GarmentCategory.Dress, 0, GarmentPattern.Plain, 1, SleeveLength.None, Neckline.V, GarmentLength.Long, 0, null),
        2 => new(GarmentCategory.Shirt, 0, GarmentPattern.Plain, 1, SleeveLength.Short, null, null, 0, null),
        3 => new(GarmentCategory.Shirt, 0, GarmentPattern.Plain, 1, SleeveLength.Long, null, null, 0, null),
        4 => new(GarmentCategory.Top, 0, GarmentPattern.Plain, 1, SleeveLength.None, Neckline.Round, null, 0, null),
        5 => new(GarmentCategory.Top, 0, GarmentPattern.Plain, 1, SleeveLength.Short, Neckline.Round, null, 0, null),
        6 => new(GarmentCategory.Top, 0, GarmentPattern.Plain, 1, SleeveLength.Long, Neckline.V, null, 0, null),
        7 => new(GarmentCategory.Jacket, 0, GarmentPattern.Plain, 1, SleeveLength.Long, null, GarmentLength.Short, 0, null),
        8 => new(GarmentCategory.Jacket, 0, GarmentPattern.Plain, 1, SleeveLength.Long, null, GarmentLength.Long, 0, null),
        9 => new(GarmentCategory.Trousers, 0, GarmentPattern.Plain, 1, null, null, null, 0, null),
        10 => new(GarmentCategory.Shorts, 0, GarmentPattern.Plain, 1, null, null, null, 0, null),
        11 => new(GarmentCategory.Skirt, 0, GarmentPattern.Plain, 1, null, null, GarmentLength.Short, 0, null),
        12 => new(GarmentCategory.Skirt, 0, GarmentPattern.Plain, 1, null, null, GarmentLength.Long, 0, null),
        13 => new(GarmentCategory.Bag, 0, GarmentPattern.Plain, 1, null, null, null, 0, null),
        14 => new(GarmentCategory.Bag, 0, GarmentPattern.Plain, 1, null, null, null, 1, null),
        15 => new(GarmentCategory.Shoes, 0, GarmentPattern.Plain, 1, null, null, null, 0, 5),
        16 => new(GarmentCategory.Shoes, 0, GarmentPattern.Plain, 1, null, null, null, 1, 5),
        17 => new(GarmentCategory.Hat, 0, GarmentPattern.Plain, 1, null, null, null, 0, null),
        _ => new(GarmentCategory.Hat, 0, GarmentPattern.Plain, 1, null, null, null, 1, null),
    };

    [Test]
    public void SilhouettesDifferBetweenSubcategories()
    {
        int n = GarmentCatalog.SubcategoryCount;
        Assert.That(n, Is.GreaterThanOrEqualTo(8));
        var masks = Enumerable.Range(0, n).Select(s =>
        {
            var g = Representative(s);
            Assert.That(g.Subcategory, Is.EqualTo(s));
            return GarmentRenderer.Regions(g, ViewParams.Canonical, 64).Select(r => r != ShapeRegion.Background).ToArray();
        }).ToArray();
        for (int a = 0; a < n; a++)
        {
            Assert.That(masks[a].Count(m => m), Is.GreaterThan(64 * 64 / 10), $"sub-category {a} draws something");
            for (int b = a + 1; b < n; b++)
            {
                int inter = masks[a].Zip(masks[b]).Count(p => p.First && p.Second);
                int union = masks[a].Zip(masks[b]).Count(p => p.First || p.Second);
                Assert.That(inter / (double)union, Is.LessThan(0.9),
                    $"{GarmentCatalog.SubcategoryNames[a]} vs {GarmentCatalog.SubcategoryNames[b]}: masks overlap too much");
            }
        }
    }

    [Test]
    public void SleevesNecklineAndLengthChangeTheDrawing()
    {
        static bool[] Mask(Garment g) => GarmentRenderer.Regions(g, ViewParams.Canonical, 64).Select(r => r != ShapeRegion.Background).ToArray();
        var top = Representative(5);
        int Diff(Garment a, Garment b) => Mask(a).Zip(Mask(b)).Count(p => p.First != p.Second);
        Assert.That(Diff(top, top with { Sleeves = SleeveLength.Long }), Is.GreaterThan(100), "long vs short sleeves");
        Assert.That(Diff(top, top with { Sleeves = SleeveLength.None }), Is.GreaterThan(50), "short vs no sleeves");
        Assert.That(Diff(top, top with { Neck = Neckline.V }), Is.GreaterThan(10), "round vs v neck");
        var dress = Representative(0);
        Assert.That(Diff(dress, dress with { Length = GarmentLength.Long }), Is.GreaterThan(100), "short vs long dress");
        Assert.That(Diff(top, top), Is.EqualTo(0));
    }

    [Test]
    public void AttributeIdsAgreeWithTheTexts()
    {
        var items = FashionGen().Select(x => x.Item).ToList();
        // The colour id (100–112) is a one-to-one function of the title's colour word; sub-category determines category.
        var colourIdOf = new Dictionary<string, int>();
        var categoryOf = new Dictionary<int, int>();
        var nounOf = new Dictionary<int, string>();
        foreach (var e in items)
        {
            string title = e.GetProperty("title").GetString()!.ToLowerInvariant();
            var ids = e.GetProperty("attributes_id").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var colourIds = ids.Where(i => i is >= 100 and < 113).ToArray();
            Assert.That(colourIds, Has.Length.EqualTo(1), title);
            string word = title.Split(' ')[0];
            Assert.That(colourIdOf.TryAdd(word, colourIds[0]) || colourIdOf[word] == colourIds[0], Is.True, $"{word} has two ids");
            int sub = e.GetProperty("subcategory_id").GetInt32(), cat = e.GetProperty("category_id").GetInt32();
            Assert.That(categoryOf.TryAdd(sub, cat) || categoryOf[sub] == cat, Is.True, $"sub-category {sub} in two categories");
            string noun = title.Split(' ')[^1];
            Assert.That(nounOf.TryAdd(sub, noun) || nounOf[sub] == noun, Is.True, $"sub-category {sub}: '{nounOf.GetValueOrDefault(sub)}' vs '{noun}'");
            Assert.That(ids, Does.Contain(20 + sub), "the sub-category's attribute id");
            Assert.That(ids.Contains(130) == !title.Split(' ').Any(PatternWords.Contains), Is.True, $"plain id vs '{title}'");
        }
        Assert.That(colourIdOf.Values, Is.Unique, "different colours have different ids");
    }

    /// <summary>Every word the generator writes, each checked once against bert-base-uncased's vocab.txt.</summary>
    private static readonly HashSet<string> KnownWords =
    [
        "a", "above", "and", "at", "band", "baseball", "below", "belt", "button", "cap", "checked", "checks", "classic",
        "clutch", "coat", "collar", "contrast", "cuffs", "curved", "dot", "dots", "dress", "edge", "flap", "flat", "front",
        "full", "has", "hat", "hem", "instead", "is", "jacket", "knee", "lace", "legs", "length", "long", "longer", "neck",
        "no", "not", "of", "pattern", "peak", "plain", "polka", "round", "rubber", "same", "shaft", "shirt", "short",
        "shorter", "shorts", "shoulder", "skirt", "sleeve", "sleeves", "sneakers", "sole", "straight", "strap", "stripes",
        "striped", "sun", "t", "tall", "tank", "the", "top", "trousers", "up", "v", "waist", "waistband", "wide", "with",
        "without", "zip", "bag", "boots", "in", "legs", "red", "blue", "green", "yellow", "black", "white", "grey", "pink",
        "purple", "orange", "brown", "beige", "navy",
    ];

    private static IEnumerable<string> AllTexts()
    {
        string d = SynthFixture.Datasets;
        foreach (var file in Directory.EnumerateFiles(d, "*.json", SearchOption.AllDirectories).Where(f => !f.Contains("image_splits")))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            var stack = new Stack<(JsonElement, string?)>();
            stack.Push((doc.RootElement, null));
            while (stack.Count > 0)
            {
                var (e, key) = stack.Pop();
                switch (e.ValueKind)
                {
                    case JsonValueKind.Object: foreach (var p in e.EnumerateObject()) stack.Push((p.Value, p.Name)); break;
                    case JsonValueKind.Array: foreach (var x in e.EnumerateArray()) stack.Push((x, key)); break;
                    case JsonValueKind.String when key is "title" or "description" or "color" or "captions":
                        yield return e.GetString()!;
                        break;
                }
            }
        }
    }

    [Test]
    public void TextsUseOnlyKnownWords()
    {
        var words = AllTexts().SelectMany(t => Regex.Split(t.ToLowerInvariant(), "[^a-z]+")).Where(w => w.Length > 0).ToHashSet();
        Assert.That(words.Except(KnownWords), Is.Empty, "words outside the checked list");
        Assert.That(words.Count, Is.GreaterThan(40));
    }

    [Test]
    public void KnownWordsAreWholeWordsOfTheBertVocabulary()
    {
        string? path = Environment.GetEnvironmentVariable("FASHIONVIL_VOCAB");
        if (path is null)
        {
            var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
            if (dir is not null) path = Path.Combine(dir.FullName, "src/FashionViL/Data/Text/vocab/bert-base-uncased-vocab.txt");
        }
        if (path is null || !File.Exists(path)) Assert.Ignore($"bert-base-uncased vocab not found ({path}); set FASHIONVIL_VOCAB");
        var vocab = File.ReadAllLines(path).ToHashSet();
        Assert.That(vocab, Has.Count.EqualTo(30522));
        Assert.That(KnownWords.Where(w => !vocab.Contains(w)), Is.Empty);
    }

    [Test]
    public void FashionIqCaptionsNameTheChange()
    {
        // For colour edits ("is X instead of Y") the target's centre shows X and the candidate's shows Y.
        var rx = new Regex(@"^is (\w+) instead of (\w+)");
        int seen = 0;
        foreach (var cls in new[] { "dress", "shirt", "toptee" })
        {
            foreach (var split in new[] { "train", "val" })
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(SynthFixture.Datasets, $"FashionIQ/captions/cap.{cls}.{split}.json")));
                foreach (var e in doc.RootElement.EnumerateArray())
                {
                    var caps = e.GetProperty("captions").EnumerateArray().Select(x => x.GetString()!).ToArray();
                    var m = rx.Match(caps[0]);
                    if (!m.Success) continue;
                    string c = Path.Combine(SynthFixture.Datasets, "FashionIQ/images", e.GetProperty("candidate").GetString() + ".jpg");
                    string t = Path.Combine(SynthFixture.Datasets, "FashionIQ/images", e.GetProperty("target").GetString() + ".jpg");
                    // The main colour covers about half of the fabric (stripes, checks) or more (dots, plain).
                    double Share(string path, string colour) { var n = CentreWindow(path, 0.1).Select(Nearest).ToList(); return n.Count(x => x == colour) / (double)n.Count; }
                    Assert.That(Share(t, m.Groups[1].Value), Is.GreaterThan(0.2), $"{caps[0]}: target {t}");
                    Assert.That(Share(c, m.Groups[2].Value), Is.GreaterThan(0.2), $"{caps[0]}: candidate {c}");
                    seen++;
                }
            }
        }
        Assert.That(seen, Is.GreaterThan(3));
    }
}
