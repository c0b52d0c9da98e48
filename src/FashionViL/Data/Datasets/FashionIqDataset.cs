namespace FashionViL.Data.Datasets;

/// <summary>
/// One FashionIQ triplet (spec §5.2): reference image, target image, the two captions. <see cref="Text"/> is the captions
/// joined with ", " (what the reference tokenises). Val files carry <c>target_id</c>, <c>fake_data</c>, <c>garment_class</c>.
/// </summary>
public sealed record FashionIqTriplet(
    string Candidate, string Target, IReadOnlyList<string> Captions, string Text,
    string CandidateImage, string TargetImage, string GarmentFile,
    long? TargetId, bool? FakeData, long? GarmentClass);

/// <summary>Reader for <c>FashionIQ/captions/cap.&lt;class&gt;.&lt;split&gt;.json</c> (mmf <c>fashioniq/database.py</c>).</summary>
public static class FashionIqDataset
{
    public static readonly string[] GarmentClasses = ["shirt", "dress", "toptee"];

    /// <summary>
    /// Reads the triplets of <paramref name="split"/> ("train", "val"; "test" reads val) for one garment class or "all"
    /// (shirt, dress, toptee concatenated in that order). Images are FashionIQ/images/&lt;ASIN&gt;.jpg; image_splits/ is not read.
    /// </summary>
    public static List<FashionIqTriplet> Read(string dataDir, string split, string garmentClass = "all")
    {
        string root = Path.Combine(dataDir, "datasets", "FashionIQ");
        return Read(Path.Combine(root, "captions"), Path.Combine(root, "images"), split, garmentClass);
    }

    /// <summary>As <see cref="Read(string, string, string)"/> with explicit folders: <paramref name="captionsDir"/> holds
    /// cap.&lt;class&gt;.&lt;split&gt;.json, <paramref name="imageDir"/> the &lt;ASIN&gt;.jpg files.</summary>
    public static List<FashionIqTriplet> Read(string captionsDir, string imageDir, string split, string garmentClass)
    {
        string s = split switch
        {
            "train" => "train", "val" or "test" => "val",
            _ => throw new ArgumentException($"FashionIQ split '{split}': expected train, val or test", nameof(split)),
        };
        string[] classes = garmentClass == "all" ? GarmentClasses
            : GarmentClasses.Contains(garmentClass) ? [garmentClass]
            : throw new ArgumentException($"FashionIQ garment_class '{garmentClass}': expected all, shirt, dress or toptee", nameof(garmentClass));
        var list = new List<FashionIqTriplet>();
        foreach (var cls in classes)
        {
            string file = Path.Combine(captionsDir, $"cap.{cls}.{s}.json");
            using var doc = Json.Open(file);
            int i = 0;
            foreach (var item in Json.Array(doc, file))
            {
                string where = $"item {i}";
                string cand = Json.String(item, file, where, "candidate");
                string tgt = Json.String(item, file, where, "target");
                var caps = Json.Strings(item, file, where, "captions");
                long? targetId = null; bool? fake = null; long? gclass = null;
                if (s == "val")
                {
                    targetId = Json.Long(item, file, where, "target_id");
                    fake = Json.Bool(item, file, where, "fake_data");
                    gclass = Json.Long(item, file, where, "garment_class");
                }
                list.Add(new FashionIqTriplet(cand, tgt, caps, string.Join(", ", caps),
                    Path.Combine(imageDir, cand + ".jpg"), Path.Combine(imageDir, tgt + ".jpg"), cls, targetId, fake, gclass));
                i++;
            }
        }
        if (list.Count == 0) throw new DatasetFormatException(captionsDir, $"dataset is empty (split {s}, garment_class {garmentClass})");
        return list;
    }
}
