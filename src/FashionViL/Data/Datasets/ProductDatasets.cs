using System.Text.Json;

namespace FashionViL.Data.Datasets;

/// <summary>The four product-JSON formats of spec §5.1.</summary>
public enum ProductSource { BigFACAD, Fashion200k, FashionGen, PolyvoreOutfits }

/// <summary>
/// Readers for the product JSONs (spec §5.1, mmf <c>fashionall/database.py</c>) and the concatenated <c>fashionall</c> set.
/// Every reader validates the fields the reference reads and fails with the file, item index and field name.
/// </summary>
public static class ProductDatasets
{
    /// <summary>Number of pseudo-attribute ids (PAC classes).</summary>
    public const int NumAttributes = 2232;
    /// <summary>Number of FashionGen sub-categories (SCR classes).</summary>
    public const int NumSubcategories = 121;

    /// <summary>The fashionall training files in the reference's order (defaults.yaml): annotation file and image folder, relative to data_dir/datasets.</summary>
    public static readonly (ProductSource Source, string Annotations, string Images)[] FashionAllTrain =
    [
        (ProductSource.BigFACAD, "BigFACAD/train_info.json", "BigFACAD/images"),
        (ProductSource.Fashion200k, "Fashion200k/train_info.json", "Fashion200k/images"),
        (ProductSource.FashionGen, "FashionGen/train_info.json", "FashionGen/train"),
        (ProductSource.PolyvoreOutfits, "PolyvoreOutfits/train_info.json", "PolyvoreOutfits/images"),
    ];

    /// <summary>The dataset type from a substring of the annotation path, checked in the reference's order
    /// (BigFACAD, Fashion200k, FashionGen, PolyvoreOutfits).</summary>
    public static ProductSource DetectSource(string annotationPath)
    {
        foreach (var s in new[] { ProductSource.BigFACAD, ProductSource.Fashion200k, ProductSource.FashionGen, ProductSource.PolyvoreOutfits })
            if (annotationPath.Contains(s.ToString(), StringComparison.Ordinal)) return s;
        throw new DatasetFormatException(annotationPath,
            "cannot tell the dataset type: the path must contain one of BigFACAD, Fashion200k, FashionGen, PolyvoreOutfits");
    }

    /// <summary>Reads one product JSON. <paramref name="imageDir"/> is joined to each image name.</summary>
    public static List<ProductRecord> Read(string annotationPath, string imageDir, ProductSource? source = null)
    {
        var src = source ?? DetectSource(annotationPath);
        using var doc = Json.Open(annotationPath);
        var list = new List<ProductRecord>();
        int i = 0;
        foreach (var item in Json.Array(doc, annotationPath))
        {
            list.Add(ReadItem(item, annotationPath, $"item {i}", imageDir, src));
            i++;
        }
        if (list.Count == 0) throw new DatasetFormatException(annotationPath, "dataset is empty (no items)");
        return list;
    }

    static ProductRecord ReadItem(JsonElement item, string file, string where, string imageDir, ProductSource src)
    {
        long id = Json.Long(item, file, where, "id");
        List<string> images;
        if (src == ProductSource.PolyvoreOutfits)
            images = [Json.String(item, file, where, "images")]; // a single string in Polyvore, wrapped as the reference does
        else
        {
            images = Json.Strings(item, file, where, "images");
            if (images.Count == 0) throw new DatasetFormatException(file, $"{where}: field 'images' is an empty list");
        }
        string text = src switch
        {
            ProductSource.FashionGen or ProductSource.PolyvoreOutfits =>
                Json.String(item, file, where, "title") + "." + Json.String(item, file, where, "description"),
            ProductSource.BigFACAD =>
                Json.String(item, file, where, "color") + "." + Json.String(item, file, where, "title") + "." + Json.String(item, file, where, "description"),
            _ => Json.String(item, file, where, "title"),
        };
        var attrs = Json.Longs(item, file, where, "attributes_id");
        var attributeIds = new List<int>(attrs.Count);
        for (int k = 0; k < attrs.Count; k++)
        {
            if (attrs[k] < 0 || attrs[k] >= NumAttributes)
                throw new DatasetFormatException(file, $"{where}: field 'attributes_id'[{k}] = {attrs[k]} is outside [0, {NumAttributes})");
            attributeIds.Add((int)attrs[k]);
        }
        int? category = null, subcategory = null;
        if (src == ProductSource.FashionGen)
        {
            long c = Json.Long(item, file, where, "category_id");
            long s = Json.Long(item, file, where, "subcategory_id");
            if (c < 0 || c > int.MaxValue) throw new DatasetFormatException(file, $"{where}: field 'category_id' = {c} must be a non-negative integer");
            if (s < 0 || s >= NumSubcategories)
                throw new DatasetFormatException(file, $"{where}: field 'subcategory_id' = {s} is outside [0, {NumSubcategories})");
            category = (int)c; subcategory = (int)s;
        }
        var paths = images.Select(n => Path.Combine(imageDir, n)).ToList();
        return new ProductRecord(id, paths, text, attributeIds, category, subcategory, src.ToString());
    }

    /// <summary>FashionGen <c>train_info.json</c> (split "train") or <c>val_info.json</c> ("val"; "test" reads val as the
    /// reference does), images under FashionGen/train or FashionGen/val. <paramref name="dataDir"/> is <c>env.data_dir</c>.</summary>
    public static List<ProductRecord> ReadFashionGen(string dataDir, string split)
    {
        string s = split switch
        {
            "train" => "train", "val" or "test" => "val",
            _ => throw new ArgumentException($"FashionGen split '{split}': expected train, val or test", nameof(split)),
        };
        string root = Path.Combine(dataDir, "datasets", "FashionGen");
        return Read(Path.Combine(root, $"{s}_info.json"), Path.Combine(root, s), ProductSource.FashionGen);
    }

    /// <summary>
    /// The pre-training set (<c>fashionall</c>): for "train" the concatenation of the BigFACAD, Fashion200k, FashionGen and
    /// PolyvoreOutfits train files in that order; for "val"/"test" FashionGen val (spec §5.1). <paramref name="dataDir"/>
    /// is <c>env.data_dir</c> (files under dataDir/datasets/&lt;Name&gt;/).
    /// </summary>
    public static List<ProductRecord> ReadFashionAll(string dataDir, string split = "train")
    {
        if (split is "val" or "test") return ReadFashionGen(dataDir, "val");
        if (split != "train") throw new ArgumentException($"fashionall split '{split}': expected train, val or test", nameof(split));
        string root = Path.Combine(dataDir, "datasets");
        var all = new List<ProductRecord>();
        foreach (var (src, ann, img) in FashionAllTrain)
            all.AddRange(Read(Path.Combine(root, ann), Path.Combine(root, img), src));
        return all;
    }
}
