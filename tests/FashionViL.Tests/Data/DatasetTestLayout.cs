namespace FashionViL.Tests.Data;

/// <summary>Writes a tiny copy of the real layout (spec §5): data_dir/datasets/&lt;Name&gt;/... with JSON and small images.</summary>
internal static class DatasetTestLayout
{
    public static string Write(string file, string json)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, json);
        return file;
    }

    /// <summary>Returns data_dir with the four product train files, FashionGen val, and their images.</summary>
    public static string Products()
    {
        var dataDir = ImageTestData.NewTempDir();
        var ds = Path.Combine(dataDir, "datasets");
        Write(Path.Combine(ds, "BigFACAD", "train_info.json"), """
            [{"images": ["b1_0.jpg", "b1_1.jpg"], "id": 11, "color": "red", "title": "Silk scarf", "description": "A light scarf", "attributes_id": [1, 2231]},
             {"images": ["b2_0.jpg"], "id": 12, "color": "blue", "title": "Jeans", "description": "Straight leg", "attributes_id": []}]
            """);
        Write(Path.Combine(ds, "Fashion200k", "train_info.json"), """
            [{"images": ["f1.jpg"], "id": 21, "title": "black dress", "attributes_id": [5]}]
            """);
        Write(Path.Combine(ds, "FashionGen", "train_info.json"), """
            [{"images": ["g1_0.png", "g1_1.png"], "id": 31, "title": "Wool coat", "description": "Long coat in grey", "attributes_id": [7, 8], "category_id": 3, "subcategory_id": 120},
             {"images": ["g2_0.png"], "id": 32, "title": "Sneakers", "description": "Low-top", "attributes_id": [9], "category_id": 4, "subcategory_id": 0}]
            """);
        Write(Path.Combine(ds, "FashionGen", "val_info.json"), """
            [{"images": ["v1_0.png"], "id": 41, "title": "Shirt", "description": "Oxford shirt", "attributes_id": [], "category_id": 1, "subcategory_id": 5}]
            """);
        Write(Path.Combine(ds, "PolyvoreOutfits", "train_info.json"), """
            [{"images": "p1.jpg", "id": 51, "title": "Tote", "description": "Canvas bag", "attributes_id": [100]}]
            """);
        foreach (var (dir, names) in new[]
        {
            ("BigFACAD/images", new[] { "b1_0.jpg", "b1_1.jpg", "b2_0.jpg" }), ("Fashion200k/images", ["f1.jpg"]),
            ("FashionGen/train", ["g1_0.png", "g1_1.png", "g2_0.png"]), ("FashionGen/val", ["v1_0.png"]), ("PolyvoreOutfits/images", ["p1.jpg"]),
        })
            foreach (var n in names) ImageTestData.WriteImage(Path.Combine(ds, dir, n), 12, 10);
        return dataDir;
    }
}
