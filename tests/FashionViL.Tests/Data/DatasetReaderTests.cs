using FashionViL.Data.Datasets;
using FashionViL.Data.Images;

namespace FashionViL.Tests.Data;

/// <summary>The product, FashionIQ and Polyvore OCIR readers (spec §5.1, §5.2): fields, text, paths, errors.</summary>
public class DatasetReaderTests
{
    [Test]
    public void FashionAllConcatenatesTheFourTrainFilesInReferenceOrder()
    {
        var dataDir = DatasetTestLayout.Products();
        var all = ProductDatasets.ReadFashionAll(dataDir);
        Assert.That(all.Select(r => r.Id), Is.EqualTo(new long[] { 11, 12, 21, 31, 32, 51 }));
        Assert.That(all.Select(r => r.Dataset), Is.EqualTo(new[] { "BigFACAD", "BigFACAD", "Fashion200k", "FashionGen", "FashionGen", "PolyvoreOutfits" }));
        // Texts as the reference builds them.
        Assert.That(all[0].Text, Is.EqualTo("red.Silk scarf.A light scarf"));
        Assert.That(all[2].Text, Is.EqualTo("black dress"));
        Assert.That(all[3].Text, Is.EqualTo("Wool coat.Long coat in grey"));
        Assert.That(all[5].Text, Is.EqualTo("Tote.Canvas bag"));
        // Image paths: joined to the dataset's image folder; Polyvore's single string wrapped.
        var ds = Path.Combine(dataDir, "datasets");
        Assert.That(all[0].Images, Is.EqualTo(new[] { Path.Combine(ds, "BigFACAD/images", "b1_0.jpg"), Path.Combine(ds, "BigFACAD/images", "b1_1.jpg") }));
        Assert.That(all[3].Images[1], Is.EqualTo(Path.Combine(ds, "FashionGen/train", "g1_1.png")));
        Assert.That(all[5].Images, Is.EqualTo(new[] { Path.Combine(ds, "PolyvoreOutfits/images", "p1.jpg") }));
        foreach (var r in all) foreach (var p in r.Images) Assert.That(File.Exists(ImagePaths.Resolve(p)), p);
        // Attributes and FashionGen-only categories.
        Assert.That(all[0].AttributeIds, Is.EqualTo(new[] { 1, 2231 }));
        Assert.That(all[1].AttributeIds, Is.Empty);
        Assert.That((all[3].CategoryId, all[3].SubcategoryId), Is.EqualTo(((int?)3, (int?)120)));
        Assert.That((all[0].CategoryId, all[0].SubcategoryId), Is.EqualTo(((int?)null, (int?)null)));

        var val = ProductDatasets.ReadFashionAll(dataDir, "val");
        Assert.That(val.Select(r => r.Id), Is.EqualTo(new long[] { 41 }));
        Assert.That(val[0].Images[0], Is.EqualTo(Path.Combine(ds, "FashionGen", "val", "v1_0.png")));
        Assert.That(ProductDatasets.ReadFashionGen(dataDir, "test")[0].Id, Is.EqualTo(41));
    }

    [TestCase("x/datasets/BigFACAD/train_info.json", ProductSource.BigFACAD)]
    [TestCase("x/datasets/Fashion200k/train_info.json", ProductSource.Fashion200k)]
    [TestCase("x/datasets/FashionGen/val_info.json", ProductSource.FashionGen)]
    [TestCase("x/datasets/PolyvoreOutfits/train_info.json", ProductSource.PolyvoreOutfits)]
    public void SourceChosenByPathSubstring(string path, ProductSource expected) =>
        Assert.That(ProductDatasets.DetectSource(path), Is.EqualTo(expected));

    [Test]
    public void UnknownSourceIsAnError()
    {
        var e = Assert.Throws<DatasetFormatException>(() => ProductDatasets.DetectSource("data/Other/train_info.json"))!;
        Assert.That(e.Message, Does.Contain("data/Other/train_info.json").And.Contain("FashionGen"));
    }

    static string BadFashionGen(string itemJson)
    {
        var dir = ImageTestData.NewTempDir();
        return DatasetTestLayout.Write(Path.Combine(dir, "FashionGen", "train_info.json"),
            "[{\"images\": [\"a.png\"], \"id\": 1, \"title\": \"t\", \"description\": \"d\", \"attributes_id\": [], \"category_id\": 1, \"subcategory_id\": 2},\n" + itemJson + "]");
    }

    [TestCase("""{"images": ["a.png"], "id": "7", "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'id' must be an integer, found a string")]
    [TestCase("""{"images": ["a.png"], "id": 7.5, "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'id' must be an integer, found the number 7.5")]
    [TestCase("""{"images": ["a.png"], "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: missing field 'id'")]
    [TestCase("""{"images": "a.png", "id": 7, "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'images' must be a list of strings, found a string")]
    [TestCase("""{"images": ["a.png"], "id": 7, "title": null, "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'title' must be a string, found null")]
    [TestCase("""{"images": ["a.png"], "id": 7, "title": "t", "description": "d", "attributes_id": [3, 2232], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'attributes_id'[1] = 2232 is outside [0, 2232)")]
    [TestCase("""{"images": ["a.png"], "id": 7, "title": "t", "description": "d", "attributes_id": [3, "x"], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'attributes_id'[1] must be an integer, found a string")]
    [TestCase("""{"images": ["a.png"], "id": 7, "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 121}""", "item 1: field 'subcategory_id' = 121 is outside [0, 121)")]
    [TestCase("""{"images": [], "id": 7, "title": "t", "description": "d", "attributes_id": [], "category_id": 1, "subcategory_id": 2}""", "item 1: field 'images' is an empty list")]
    [TestCase("[1]", "item 1: expected an object, found an array")]
    public void BadFieldsAreNamedWithFileAndItem(string item, string message)
    {
        var file = BadFashionGen(item);
        var e = Assert.Throws<DatasetFormatException>(() => ProductDatasets.Read(file, "imgs"))!;
        Assert.That(e.Message, Is.EqualTo($"{file}: {message}"));
    }

    [Test]
    public void StructuralErrorsNameTheFile()
    {
        var dir = ImageTestData.NewTempDir();
        var missing = Path.Combine(dir, "FashionGen", "train_info.json");
        Assert.That(Assert.Throws<DatasetFormatException>(() => ProductDatasets.Read(missing, "i"))!.Message, Is.EqualTo($"{missing}: file not found"));
        var obj = DatasetTestLayout.Write(Path.Combine(dir, "BigFACAD", "train_info.json"), "{\"a\": 1}");
        Assert.That(Assert.Throws<DatasetFormatException>(() => ProductDatasets.Read(obj, "i"))!.Message, Does.StartWith($"{obj}: expected a JSON array"));
        var broken = DatasetTestLayout.Write(Path.Combine(dir, "Fashion200k", "train_info.json"), "[{\"id\": 1,\n \"images\": [}]");
        Assert.That(Assert.Throws<DatasetFormatException>(() => ProductDatasets.Read(broken, "i"))!.Message, Does.StartWith($"{broken}: invalid JSON at line 2"));
        var empty = DatasetTestLayout.Write(Path.Combine(dir, "PolyvoreOutfits", "train_info.json"), "[]");
        Assert.That(Assert.Throws<DatasetFormatException>(() => ProductDatasets.Read(empty, "i"))!.Message, Does.Contain(empty).And.Contain("empty"));
    }

    static string FashionIq()
    {
        var dataDir = ImageTestData.NewTempDir();
        var cap = Path.Combine(dataDir, "datasets", "FashionIQ", "captions");
        foreach (var c in new[] { "shirt", "dress", "toptee" })
        {
            DatasetTestLayout.Write(Path.Combine(cap, $"cap.{c}.train.json"),
                $$"""[{"candidate": "{{c}}A", "target": "{{c}}B", "captions": ["is darker", "has long sleeves"]}]""");
            DatasetTestLayout.Write(Path.Combine(cap, $"cap.{c}.val.json"),
                $$"""[{"candidate": "{{c}}C", "target": "{{c}}D", "captions": ["is red", "more casual"], "target_id": 17, "fake_data": false, "garment_class": 2}]""");
        }
        return dataDir;
    }

    [Test]
    public void FashionIqTripletsAndValFields()
    {
        var dataDir = FashionIq();
        var train = FashionIqDataset.Read(dataDir, "train");
        Assert.That(train.Select(t => t.Candidate), Is.EqualTo(new[] { "shirtA", "dressA", "topteeA" }));
        Assert.That(train[0].Text, Is.EqualTo("is darker, has long sleeves"));
        Assert.That(train[0].TargetImage, Is.EqualTo(Path.Combine(dataDir, "datasets", "FashionIQ", "images", "shirtB.jpg")));
        Assert.That(train[0].TargetId, Is.Null);
        var val = FashionIqDataset.Read(dataDir, "test", "dress");
        Assert.That(val.Count, Is.EqualTo(1));
        Assert.That((val[0].Candidate, val[0].TargetId, val[0].FakeData, val[0].GarmentClass), Is.EqualTo(("dressC", (long?)17, (bool?)false, (long?)2)));

        var bad = Path.Combine(dataDir, "datasets", "FashionIQ", "captions", "cap.toptee.val.json");
        File.WriteAllText(bad, """[{"candidate": "a", "target": "b", "captions": ["x", "y"], "target_id": 3, "garment_class": 2}]""");
        var e = Assert.Throws<DatasetFormatException>(() => FashionIqDataset.Read(dataDir, "val"))!;
        Assert.That(e.Message, Is.EqualTo($"{bad}: item 0: missing field 'fake_data'"));
    }

    static string Polyvore(string metaCat103 = "\"4518\"")
    {
        var dataDir = ImageTestData.NewTempDir();
        var root = Path.Combine(dataDir, "datasets", "PolyvoreOutfits");
        DatasetTestLayout.Write(Path.Combine(root, "polyvore_item_metadata.json"), $$$"""
            {"101": {"category_id": "3"}, "102": {"category_id": 11}, "103": {"category_id": {{{metaCat103}}}},
             "104": {"category_id": "3"}, "105": {"category_id": "1605"}}
            """);
        DatasetTestLayout.Write(Path.Combine(root, "ocir_disjoint_train.json"), """
            [{"question": ["101", "102"], "blank": "103"}, {"question": ["104"], "blank": "105"}]
            """);
        DatasetTestLayout.Write(Path.Combine(root, "ocir_disjoint_test.json"), """
            [{"question": ["101", "105"], "blank": "102", "fake_data": true}]
            """);
        return dataDir;
    }

    [Test]
    public void PolyvoreOcirCategoriesAndNegativePool()
    {
        // CAT_DICT of the reference: 153 ids, 3 → 0, 11 → 8, 1605 → 53 (listed after 1606, 1607), 4518 → 152.
        Assert.That(PolyvoreOcirDataset.CategoryIds.Length, Is.EqualTo(153));
        Assert.That(PolyvoreOcirDataset.CategoryIds.Distinct().Count(), Is.EqualTo(153));
        var dataDir = Polyvore();
        var train = PolyvoreOcirDataset.Read(dataDir, "disjoint", "train");
        Assert.That(train.Outfits[0].QuestionCategories, Is.EqualTo(new[] { 0, 8 }));
        Assert.That((train.Outfits[0].BlankCategory, train.Outfits[0].BlankRawCategory), Is.EqualTo((152, 4518)));
        Assert.That(train.Outfits[1].BlankCategory, Is.EqualTo(53));
        Assert.That(train.NegativePool[3], Is.EquivalentTo(new[] { "101", "104" }));
        Assert.That(train.ImagePath("101"), Is.EqualTo(Path.Combine(dataDir, "datasets", "PolyvoreOutfits", "images", "101.jpg")));
        var rng = new FashionViL.Data.Loading.DataRandom(3);
        for (int i = 0; i < 50; i++)
        {
            var p = train.SampleTrainPair(0, rng);
            Assert.That(new[] { "101", "102", "103" }, Does.Contain(p.QuestionId).And.Contain(p.BlankId));
            Assert.That(train.RawCategory[p.NegativeId], Is.EqualTo(train.RawCategory[p.BlankId]), "negative shares the blank's category");
        }
        var test = PolyvoreOcirDataset.Read(dataDir, "disjoint", "val");
        Assert.That((test.Outfits[0].FakeData, test.Outfits[0].BlankCategory), Is.EqualTo(((bool?)true, 8)));
        Assert.That(test.NegativePool, Is.Empty);
    }

    [Test]
    public void PolyvoreOcirUnknownCategoryIsNamed()
    {
        var dataDir = Polyvore("\"2\"");
        var meta = Path.Combine(dataDir, "datasets", "PolyvoreOutfits", "polyvore_item_metadata.json");
        var e = Assert.Throws<DatasetFormatException>(() => PolyvoreOcirDataset.Read(dataDir, "disjoint", "train"))!;
        Assert.That(e.Message, Is.EqualTo($"{meta}: item '103': category_id 2 is not one of the 153 OCIR categories"));
        var train = Path.Combine(dataDir, "datasets", "PolyvoreOutfits", "ocir_disjoint_train.json");
        File.WriteAllText(train, """[{"question": ["101"], "blank": "999"}]""");
        e = Assert.Throws<DatasetFormatException>(() => PolyvoreOcirDataset.Read(dataDir, "disjoint", "train"))!;
        Assert.That(e.Message, Does.StartWith(meta).And.Contain("'999'").And.Contain("item 0"));
    }
}

/// <summary>Two views per product, drawn with replacement (spec §2.0).</summary>
public class DatasetViewTests
{
    [Test]
    public void TwoViewsAreIndependentDrawsWithReplacement()
    {
        var p = new ProductRecord(1, ["a", "b", "c"], "t", [], null, null, "FashionGen");
        var rng = new FashionViL.Data.Loading.DataRandom(11);
        int same = 0; const int n = 9000;
        var firstCounts = new Dictionary<string, int>();
        for (int i = 0; i < n; i++)
        {
            var (x, y) = ProductViews.DrawTwo(p, rng);
            if (x == y) same++;
            firstCounts[x] = firstCounts.GetValueOrDefault(x) + 1;
        }
        // P(same) = 1/3 for independent uniform draws; sd = √(n·(1/3)(2/3)) ≈ 44.7 → ±6 sd = ±270.
        Assert.That(same, Is.InRange(3000 - 270, 3000 + 270));
        foreach (var c in firstCounts.Values) Assert.That(c, Is.InRange(3000 - 270, 3000 + 270));
        var single = p with { Images = ["only"] };
        Assert.That(ProductViews.DrawTwo(single, rng), Is.EqualTo(("only", "only")));
    }
}
