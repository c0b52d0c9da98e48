using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;

namespace FashionViL.Tests.Synth;

/// <summary>
/// `fashionvil synth` writes the reference's on-disk layout and JSON fields with the exact types of spec §5.1/§5.2,
/// parsed back with System.Text.Json.
/// </summary>
public class SynthLayoutTests
{
    private static string D => SynthFixture.Datasets;

    private static JsonElement[] Array(string relative)
    {
        string path = Path.Combine(D, relative);
        Assert.That(File.Exists(path), Is.True, path);
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        Assert.That(doc.RootElement.ValueKind, Is.EqualTo(JsonValueKind.Array), path);
        return doc.RootElement.EnumerateArray().Select(e => e.Clone()).ToArray();
    }

    private static void AssertKeys(JsonElement e, string file, params string[] keys)
    {
        Assert.That(e.ValueKind, Is.EqualTo(JsonValueKind.Object), file);
        Assert.That(e.EnumerateObject().Select(p => p.Name).Order(), Is.EqualTo(keys.Order()), $"{file}: fields of {e}");
    }

    private static int Int(JsonElement e, string name)
    {
        var v = e.GetProperty(name);
        Assert.That(v.ValueKind, Is.EqualTo(JsonValueKind.Number), name);
        Assert.That(v.TryGetInt32(out int i), Is.True, $"{name} must be an integer: {v}");
        return i;
    }

    private static string Str(JsonElement e, string name)
    {
        var v = e.GetProperty(name);
        Assert.That(v.ValueKind, Is.EqualTo(JsonValueKind.String), name);
        Assert.That(v.GetString(), Is.Not.Empty, name);
        return v.GetString()!;
    }

    private static string[] StrList(JsonElement e, string name)
    {
        var v = e.GetProperty(name);
        Assert.That(v.ValueKind, Is.EqualTo(JsonValueKind.Array), name);
        return v.EnumerateArray().Select(x =>
        {
            Assert.That(x.ValueKind, Is.EqualTo(JsonValueKind.String), name);
            return x.GetString()!;
        }).ToArray();
    }

    private static void AssertAttributes(JsonElement e)
    {
        var v = e.GetProperty("attributes_id");
        Assert.That(v.ValueKind, Is.EqualTo(JsonValueKind.Array));
        var ids = v.EnumerateArray().Select(x => x.GetInt32()).ToArray();
        Assert.That(ids, Is.Not.Empty);
        Assert.That(ids, Is.All.InRange(0, 2231));
        Assert.That(ids, Is.Unique);
    }

    private static void AssertImage(string path, bool png)
    {
        Assert.That(File.Exists(path), Is.True, path);
        var info = Image.Identify(path, out var format);
        Assert.That(format, png ? Is.EqualTo(PngFormat.Instance) : Is.EqualTo(JpegFormat.Instance), path);
        Assert.That((info.Width, info.Height), Is.EqualTo((SynthFixture.ImageSize, SynthFixture.ImageSize)), path);
    }

    [Test]
    public void TopLevelLayoutMatchesTheReadme()
    {
        foreach (var rel in new[]
        {
            "BigFACAD/images", "Fashion200k/images", "FashionGen/train", "FashionGen/val", "FashionIQ/captions",
            "FashionIQ/images", "FashionIQ/image_splits", "PolyvoreOutfits/images",
        })
            Assert.That(Directory.Exists(Path.Combine(D, rel)), Is.True, rel);
        foreach (var rel in new[]
        {
            "BigFACAD/train_info.json", "BigFACAD/val_info.json", "Fashion200k/train_info.json", "Fashion200k/test_info.json",
            "FashionGen/train_info.json", "FashionGen/val_info.json", "PolyvoreOutfits/ocir_disjoint_train.json",
            "PolyvoreOutfits/ocir_disjoint_test.json", "PolyvoreOutfits/ocir_nondisjoint_train.json",
            "PolyvoreOutfits/ocir_nondisjoint_test.json", "PolyvoreOutfits/polyvore_item_metadata.json",
            "PolyvoreOutfits/train_info.json",
        })
            Assert.That(File.Exists(Path.Combine(D, rel)), Is.True, rel);
        foreach (var c in new[] { "dress", "shirt", "toptee" })
            foreach (var s in new[] { "train", "val" })
            {
                Assert.That(File.Exists(Path.Combine(D, "FashionIQ/captions", $"cap.{c}.{s}.json")), Is.True);
                Assert.That(File.Exists(Path.Combine(D, "FashionIQ/image_splits", $"split.{c}.{s}.json")), Is.True);
            }
        Assert.That(Directory.EnumerateFiles(D, "*.tmp", SearchOption.AllDirectories), Is.Empty, "temporary files left behind");
    }

    [Test]
    public void FashionGenProductsHaveTheReferenceFieldsAndPngImages()
    {
        var ids = new Dictionary<string, HashSet<int>>();
        var subcats = new Dictionary<string, HashSet<int>>();
        foreach (var split in new[] { "train", "val" })
        {
            var items = Array($"FashionGen/{split}_info.json");
            Assert.That(items, Is.Not.Empty, split);
            ids[split] = [];
            subcats[split] = [];
            foreach (var e in items)
            {
                AssertKeys(e, split, "images", "id", "title", "description", "attributes_id", "category_id", "subcategory_id");
                Assert.That(ids[split].Add(Int(e, "id")), Is.True, "duplicate id");
                Str(e, "title");
                Str(e, "description");
                AssertAttributes(e);
                Assert.That(Int(e, "category_id"), Is.GreaterThanOrEqualTo(0));
                int sub = Int(e, "subcategory_id");
                Assert.That(sub, Is.InRange(0, 120));
                subcats[split].Add(sub);
                var images = StrList(e, "images");
                Assert.That(images, Is.Not.Empty);
                foreach (var im in images) AssertImage(Path.Combine(D, "FashionGen", split, im), png: true);
            }
        }
        Assert.That(ids["train"].Overlaps(ids["val"]), Is.False, "train and val share product ids");
        Assert.That(ids["val"].Count, Is.GreaterThanOrEqualTo(SynthFixture.Products / 5));
        // Held-out products spread over the sub-categories (kaleido negatives come from the same sub-category).
        Assert.That(subcats["val"].Count, Is.GreaterThanOrEqualTo(8));
        Assert.That(subcats["val"].IsSubsetOf(subcats["train"]), Is.True);
    }

    [Test]
    public void Fashion200kAndBigFacadHaveTheirFields()
    {
        var f200 = new HashSet<int>();
        foreach (var split in new[] { "train", "test" })
        {
            foreach (var e in Array($"Fashion200k/{split}_info.json"))
            {
                AssertKeys(e, split, "images", "id", "title", "attributes_id");
                Assert.That(f200.Add(Int(e, "id")), Is.True, "Fashion200k id repeats across splits");
                Str(e, "title");
                AssertAttributes(e);
                foreach (var im in StrList(e, "images")) AssertImage(Path.Combine(D, "Fashion200k/images", im), png: false);
            }
        }
        var big = new HashSet<int>();
        foreach (var split in new[] { "train", "val" })
        {
            foreach (var e in Array($"BigFACAD/{split}_info.json"))
            {
                AssertKeys(e, split, "images", "id", "color", "title", "description", "attributes_id");
                Assert.That(big.Add(Int(e, "id")), Is.True, "BigFACAD id repeats across splits");
                Str(e, "color");
                Str(e, "title");
                Str(e, "description");
                AssertAttributes(e);
                foreach (var im in StrList(e, "images")) AssertImage(Path.Combine(D, "BigFACAD/images", im), png: false);
            }
        }
    }

    // The 153 keys of CAT_DICT in BrandonHanx/mmf mmf/datasets/builders/polyvore_ocir/database.py.
    private static readonly HashSet<int> CatDict =
    [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 17, 18, 19, 21, 23, 24, 25, 26, 27, 28, 29, 30, 31, 35, 36, 37, 38, 39, 40, 41, 42,
        43, 46, 47, 48, 49, 50, 51, 52, 53, 55, 56, 57, 58, 59, 61, 62, 64, 65, 68, 69, 1606, 1607, 1605, 104, 105, 106,
        107, 231, 236, 237, 238, 239, 240, 241, 243, 244, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260,
        261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 272, 273, 275, 277, 278, 279, 280, 281, 282, 284, 286, 287, 288,
        289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307, 309, 310, 315, 318,
        332, 341, 342, 343, 4452, 4454, 4455, 4456, 4457, 4458, 4459, 4460, 4461, 4462, 4463, 4464, 4465, 4466, 4467, 4468,
        4470, 4472, 4473, 4495, 4496, 4517, 4518,
    ];

    private static Dictionary<string, JsonElement> Metadata()
    {
        string path = Path.Combine(D, "PolyvoreOutfits/polyvore_item_metadata.json");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        Assert.That(doc.RootElement.ValueKind, Is.EqualTo(JsonValueKind.Object));
        return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.Clone());
    }

    [Test]
    public void PolyvoreMetadataAndTrainInfoFollowTheReference()
    {
        Assert.That(CatDict, Has.Count.EqualTo(153));
        var meta = Metadata();
        foreach (var (id, v) in meta)
        {
            Assert.That(long.TryParse(id, out _), Is.True, $"item id '{id}' must be numeric (the reference calls int() on it)");
            var cat = v.GetProperty("category_id");
            int c = cat.ValueKind == JsonValueKind.String ? int.Parse(cat.GetString()!) : cat.GetInt32();
            Assert.That(CatDict, Does.Contain(c), $"item {id}");
            AssertImage(Path.Combine(D, "PolyvoreOutfits/images", $"{id}.jpg"), png: false);
        }
        var trainIds = new HashSet<string>();
        foreach (var e in Array("PolyvoreOutfits/train_info.json"))
        {
            AssertKeys(e, "train_info", "images", "id", "title", "description", "attributes_id");
            Assert.That(e.GetProperty("images").ValueKind, Is.EqualTo(JsonValueKind.String), "Polyvore images is a single string");
            string image = Str(e, "images");
            int id = Int(e, "id");
            Assert.That(image, Is.EqualTo($"{id}.jpg"));
            Assert.That(meta.ContainsKey(id.ToString()), Is.True);
            Str(e, "title");
            Str(e, "description");
            AssertAttributes(e);
            trainIds.Add(id.ToString());
        }
        var outfitItems = OcirEntries("disjoint", "train").SelectMany(x => x.Question.Append(x.Blank)).ToHashSet();
        Assert.That(trainIds, Is.EquivalentTo(outfitItems), "train_info lists the items of the training outfits");
    }

    private sealed record Ocir(string[] Question, string Blank, bool? Fake);

    private static List<Ocir> OcirEntries(string kind, string split)
    {
        var list = new List<Ocir>();
        foreach (var e in Array($"PolyvoreOutfits/ocir_{kind}_{split}.json"))
        {
            if (split == "train") AssertKeys(e, split, "question", "blank");
            else AssertKeys(e, split, "question", "blank", "fake_data");
            bool? fake = null;
            if (split == "test")
            {
                var f = e.GetProperty("fake_data");
                Assert.That(f.ValueKind, Is.AnyOf(JsonValueKind.True, JsonValueKind.False));
                fake = f.GetBoolean();
            }
            list.Add(new Ocir(StrList(e, "question"), Str(e, "blank"), fake));
        }
        return list;
    }

    [Test]
    public void PolyvoreOutfitsAreCompleteAndTestGalleriesCoverEveryTestItem()
    {
        var meta = Metadata();
        string Semantic(string id) => meta[id].GetProperty("semantic_category").GetString()!;
        var trainItems = OcirEntries("disjoint", "train").SelectMany(x => x.Question.Append(x.Blank)).ToHashSet();
        foreach (var kind in new[] { "disjoint", "nondisjoint" })
        {
            foreach (var split in new[] { "train", "test" })
            {
                var entries = OcirEntries(kind, split);
                Assert.That(entries.Where(x => x.Fake != true), Is.Not.Empty, $"{kind} {split}");
                foreach (var x in entries)
                {
                    var items = x.Question.Append(x.Blank).ToArray();
                    Assert.That(items, Is.Unique);
                    Assert.That(x.Question, Is.Not.Empty);
                    Assert.That(items.All(meta.ContainsKey), Is.True, "outfit item missing from the metadata");
                    var sem = items.Select(Semantic).ToArray();
                    Assert.That(sem, Is.Unique, $"one item per kind in {string.Join(",", sem)}");
                    Assert.That(sem, Does.Contain("shoes").And.Contain("bags"));
                    bool dress = sem.Contains("all-body");
                    Assert.That(dress || sem.Contains("tops") && sem.Contains("bottoms"), Is.True, string.Join(",", sem));
                    Assert.That(dress && (sem.Contains("tops") || sem.Contains("bottoms")), Is.False);
                }
                if (split == "test")
                {
                    var gallery = entries.Select(x => x.Blank).ToHashSet();
                    var all = entries.SelectMany(x => x.Question.Append(x.Blank)).ToHashSet();
                    Assert.That(gallery, Is.EquivalentTo(all), "fake entries put every test item in the gallery");
                    Assert.That(entries.Where(x => x.Fake == true).Select(x => x.Blank), Is.Unique);
                    bool shares = all.Overlaps(trainItems);
                    Assert.That(shares, Is.EqualTo(kind == "nondisjoint"), $"{kind}: test items shared with training outfits");
                }
            }
        }
    }

    [Test]
    public void FashionIqTripletsAndValGallerySemantics()
    {
        string[] classes = ["dress", "shirt", "toptee"];
        var trainImages = new HashSet<string>();
        var valImages = new HashSet<string>();
        for (int cls = 0; cls < 3; cls++)
        {
            foreach (var split in new[] { "train", "val" })
            {
                string file = $"FashionIQ/captions/cap.{classes[cls]}.{split}.json";
                var entries = Array(file);
                var used = new HashSet<string>();
                var idOf = new Dictionary<string, int>();
                var targetOf = new Dictionary<int, string>();
                int real = 0;
                foreach (var e in entries)
                {
                    if (split == "train") AssertKeys(e, file, "candidate", "target", "captions");
                    else AssertKeys(e, file, "candidate", "target", "captions", "target_id", "fake_data", "garment_class");
                    string c = Str(e, "candidate"), t = Str(e, "target");
                    var caps = StrList(e, "captions");
                    Assert.That(caps, Has.Length.EqualTo(2));
                    Assert.That(caps, Has.All.Not.Empty);
                    used.Add(c);
                    used.Add(t);
                    AssertImage(Path.Combine(D, "FashionIQ/images", $"{c}.jpg"), png: false);
                    AssertImage(Path.Combine(D, "FashionIQ/images", $"{t}.jpg"), png: false);
                    bool fake = false;
                    if (split == "val")
                    {
                        var f = e.GetProperty("fake_data");
                        Assert.That(f.ValueKind, Is.AnyOf(JsonValueKind.True, JsonValueKind.False));
                        fake = f.GetBoolean();
                        Assert.That(Int(e, "garment_class"), Is.EqualTo(cls), "0 dress, 1 shirt, 2 toptee");
                        int id = Int(e, "target_id");
                        // target_id names the target image: one id per image, one image per id.
                        Assert.That(idOf.TryAdd(t, id) || idOf[t] == id, Is.True, $"{t} has two ids");
                        Assert.That(targetOf.TryAdd(id, t) || targetOf[id] == t, Is.True, $"id {id} names two images");
                    }
                    if (!fake)
                    {
                        real++;
                        Assert.That(c, Is.Not.EqualTo(t));
                    }
                }
                Assert.That(real, Is.GreaterThan(0), file);
                if (split == "val")
                    Assert.That(idOf.Keys, Is.EquivalentTo(used), "the val gallery (targets over all entries) holds every val image");
                (split == "train" ? trainImages : valImages).UnionWith(used);
                string splitFile = Path.Combine(D, $"FashionIQ/image_splits/split.{classes[cls]}.{split}.json");
                using var doc = JsonDocument.Parse(File.ReadAllBytes(splitFile));
                Assert.That(doc.RootElement.EnumerateArray().Select(x => x.GetString()!), Is.EquivalentTo(used), splitFile);
            }
        }
        Assert.That(trainImages.Overlaps(valImages), Is.False, "train and val FashionIQ images are disjoint");
    }
}
