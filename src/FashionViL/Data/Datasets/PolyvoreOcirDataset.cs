using System.Text.Json;
using FashionViL.Data.Loading;

namespace FashionViL.Data.Datasets;

/// <summary>
/// One Polyvore OCIR outfit question (spec §5.2): the item ids of the partial outfit, the blank (answer) item, their
/// category classes (raw metadata <c>category_id</c> mapped through <see cref="PolyvoreOcirDataset.CategoryIds"/> to 0..152),
/// the raw blank category, and in test files <c>fake_data</c>. Images are PolyvoreOutfits/images/&lt;item_id&gt;.jpg.
/// </summary>
public sealed record OcirOutfit(
    IReadOnlyList<string> Question, string Blank,
    IReadOnlyList<int> QuestionCategories, int BlankCategory, int BlankRawCategory, bool? FakeData);

/// <summary>A training draw as the reference makes it at load time: two items of the outfit (with replacement) and a
/// negative of the second item's raw category.</summary>
public sealed record OcirTrainPair(string QuestionId, string BlankId, int QuestionCategory, int BlankCategory, string NegativeId);

/// <summary>The outfits of one OCIR file plus what sampling needs.</summary>
public sealed class OcirData
{
    public required List<OcirOutfit> Outfits { get; init; }
    /// <summary>Item id → raw category id, for every item used by the file.</summary>
    public required IReadOnlyDictionary<string, int> RawCategory { get; init; }
    /// <summary>Raw category id → distinct item ids of the file in that category (the reference's negative pool, train only).</summary>
    public required IReadOnlyDictionary<int, IReadOnlyList<string>> NegativePool { get; init; }
    public required string ImageDir { get; init; }

    public string ImagePath(string itemId) => Path.Combine(ImageDir, itemId + ".jpg");

    /// <summary>
    /// The reference's train sample: (question, blank) = random.choices(question + [blank], k=2), negative drawn uniformly
    /// from the pool of the blank's raw category. The reference draws once when loading; callers may draw per epoch.
    /// </summary>
    public OcirTrainPair SampleTrainPair(int outfitIndex, DataRandom random)
    {
        var o = Outfits[outfitIndex];
        var items = o.Question.Append(o.Blank).ToArray();
        string q = items[random.NextInt(items.Length)], b = items[random.NextInt(items.Length)];
        var pool = NegativePool[RawCategory[b]];
        return new OcirTrainPair(q, b, PolyvoreOcirDataset.MapCategory(RawCategory[q], "?", q),
            PolyvoreOcirDataset.MapCategory(RawCategory[b], "?", b), pool[random.NextInt(pool.Count)]);
    }
}

/// <summary>Reader for <c>PolyvoreOutfits/ocir_{disjoint,nondisjoint}_{train,test}.json</c> with <c>polyvore_item_metadata.json</c>
/// (mmf <c>polyvore_ocir/database.py</c>).</summary>
public static class PolyvoreOcirDataset
{
    /// <summary>The reference's CAT_DICT keys: the 153 valid raw category ids; class index = position in this list.</summary>
    public static readonly int[] CategoryIds =
    [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 15, 17, 18, 19, 21, 23, 24, 25, 26, 27, 28,
        29, 30, 31, 35, 36, 37, 38, 39, 40, 41, 42, 43, 46, 47, 48, 49, 50, 51, 52, 53,
        55, 56, 57, 58, 59, 61, 62, 64, 65, 68, 69, 1606, 1607, 1605, 104, 105, 106, 107, 231, 236,
        237, 238, 239, 240, 241, 243, 244, 248, 249, 250, 251, 252, 253, 254, 255, 256, 257, 258, 259, 260,
        261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 272, 273, 275, 277, 278, 279, 280, 281, 282, 284,
        286, 287, 288, 289, 290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
        306, 307, 309, 310, 315, 318, 332, 341, 342, 343, 4452, 4454, 4455, 4456, 4457, 4458, 4459, 4460, 4461, 4462,
        4463, 4464, 4465, 4466, 4467, 4468, 4470, 4472, 4473, 4495, 4496, 4517, 4518,
    ];

    static readonly Dictionary<int, int> CatDict = CategoryIds.Select((k, i) => (k, i)).ToDictionary(p => p.k, p => p.i);

    public static int MapCategory(int raw, string file, string itemId) =>
        CatDict.TryGetValue(raw, out int c) ? c
        : throw new DatasetFormatException(file, $"item '{itemId}': category_id {raw} is not one of the {CategoryIds.Length} OCIR categories");

    /// <summary>Reads <c>ocir_&lt;variant&gt;_&lt;split&gt;.json</c>; variant "disjoint" or "nondisjoint"; split "train", "test" ("val" reads test).</summary>
    public static OcirData Read(string dataDir, string variant, string split)
    {
        if (variant is not ("disjoint" or "nondisjoint"))
            throw new ArgumentException($"Polyvore OCIR variant '{variant}': expected disjoint or nondisjoint", nameof(variant));
        string s = split switch
        {
            "train" => "train", "val" or "test" => "test",
            _ => throw new ArgumentException($"Polyvore OCIR split '{split}': expected train, val or test", nameof(split)),
        };
        string root = Path.Combine(dataDir, "datasets", "PolyvoreOutfits");
        return ReadFile(Path.Combine(root, $"ocir_{variant}_{s}.json"), s == "test");
    }

    /// <summary>Reads one OCIR file; the metadata is polyvore_item_metadata.json in the same folder.</summary>
    public static OcirData ReadFile(string file, bool isTest)
    {
        string folder = Path.GetDirectoryName(Path.GetFullPath(file))!;
        string metaFile = Path.Combine(folder, "polyvore_item_metadata.json");
        var rawCat = new Dictionary<string, int>();
        using (var meta = Json.Open(metaFile))
        {
            if (meta.RootElement.ValueKind != JsonValueKind.Object)
                throw new DatasetFormatException(metaFile, $"expected an object keyed by item id, found {Json.Kind(meta.RootElement)}");
            foreach (var p in meta.RootElement.EnumerateObject())
            {
                if (!Json.Has(p.Value, "category_id")) continue; // only items used by the file are required (checked below)
                var v = p.Value.GetProperty("category_id");
                // Python int() accepts an integer or a decimal string.
                int c = v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) ? n
                    : v.ValueKind == JsonValueKind.String && int.TryParse(v.GetString()!.Trim(), out int m) ? m
                    : throw new DatasetFormatException(metaFile, $"item '{p.Name}': field 'category_id' must be an integer or an integer string, found {Json.Kind(v)}");
                rawCat[p.Name] = c;
            }
        }

        using var doc = Json.Open(file);
        var outfits = new List<OcirOutfit>();
        var used = new Dictionary<string, int>();
        var pool = new Dictionary<int, List<string>>();
        var seen = new HashSet<string>();
        int i = 0;
        foreach (var item in Json.Array(doc, file))
        {
            string where = $"item {i}";
            var question = Json.Strings(item, file, where, "question");
            string blank = Json.String(item, file, where, "blank");
            int Raw(string id, string field)
            {
                if (!long.TryParse(id, out _)) throw new DatasetFormatException(file, $"{where}: {field} item id '{id}' is not an integer");
                if (!rawCat.TryGetValue(id, out int c))
                    throw new DatasetFormatException(metaFile, $"item '{id}' (used by {Path.GetFileName(file)} {where}) is missing or has no 'category_id'");
                used[id] = c;
                if (!isTest && seen.Add(id))
                {
                    if (!pool.TryGetValue(c, out var l)) pool[c] = l = [];
                    l.Add(id);
                }
                return c;
            }
            var qc = new List<int>();
            for (int k = 0; k < question.Count; k++) qc.Add(MapCategory(Raw(question[k], $"question[{k}]"), metaFile, question[k]));
            int braw = Raw(blank, "blank");
            int bc = MapCategory(braw, metaFile, blank);
            bool? fake = isTest ? Json.Bool(item, file, where, "fake_data") : null;
            outfits.Add(new OcirOutfit(question, blank, qc, bc, braw, fake));
            i++;
        }
        if (outfits.Count == 0) throw new DatasetFormatException(file, "dataset is empty (no items)");
        return new OcirData
        {
            Outfits = outfits, RawCategory = used,
            NegativePool = pool.ToDictionary(p => p.Key, p => (IReadOnlyList<string>)p.Value),
            ImageDir = Path.Combine(folder, "images"),
        };
    }
}
