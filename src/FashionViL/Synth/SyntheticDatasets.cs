using System.Diagnostics;
using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;

namespace FashionViL.Synth;

/// <summary>What <c>fashionvil synth</c> makes.</summary>
/// <param name="OutputDirectory">DIR; the datasets go to DIR/datasets/&lt;Name&gt;/ (the reference's <c>env.data_dir</c> layout).</param>
/// <param name="Products">N, the number of FashionGen products; the other datasets are sized from it (see README).</param>
/// <param name="Seed">Same seed, same options → byte-identical files.</param>
/// <param name="ImageSize">Side of the square images in pixels (FashionGen's are 256-px PNGs).</param>
/// <param name="Threads">Rendering threads; 0 = all processors. The output does not depend on it.</param>
public sealed record SynthOptions(string OutputDirectory, int Products, ulong Seed = 42, int ImageSize = 256, int Threads = 0)
{
    public const int MaxProducts = 1_000_000, MinImageSize = 32, MaxImageSize = 1024;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad option.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(OutputDirectory)) throw new ArgumentException("synth: --out must name a directory", nameof(OutputDirectory));
        if (Products <= 0 || Products > MaxProducts)
            throw new ArgumentException($"synth: --products must be in [1, {MaxProducts}], got {Products}", nameof(Products));
        if (ImageSize < MinImageSize || ImageSize > MaxImageSize)
            throw new ArgumentException($"synth: --image-size must be in [{MinImageSize}, {MaxImageSize}] pixels, got {ImageSize}", nameof(ImageSize));
        if (Threads < 0) throw new ArgumentException($"synth: threads must be >= 0, got {Threads}", nameof(Threads));
    }
}

/// <summary>What was written: files per dataset split, the number of images and the wall time.</summary>
public sealed record SynthSummary(string DatasetsDirectory, IReadOnlyList<KeyValuePair<string, int>> Counts, int Images, TimeSpan Elapsed);

/// <summary>
/// Writes FashionGen, Fashion200k, BigFACAD, FashionIQ and PolyvoreOutfits in their real on-disk layouts and JSON
/// formats (spec §5) with procedurally drawn product images whose texts and attribute ids describe them.
/// </summary>
public static class SyntheticDatasets
{
    /// <summary>FashionIQ's garment classes in <c>garment_class</c> order (0 dress, 1 shirt, 2 toptee, spec §4.2).</summary>
    public static readonly IReadOnlyList<string> FashionIqClasses = ["dress", "shirt", "toptee"];

    private static readonly GarmentCategory[] FashionIqCategories = [GarmentCategory.Dress, GarmentCategory.Shirt, GarmentCategory.Top];

    private sealed record ImageJob(string Path, Garment Garment, ViewParams View, bool Png);

    private sealed record Product(int Id, Garment Garment, int ViewCount, int Variant)
    {
        public readonly List<string> Images = [];
    }

    private sealed class Plan(string datasets, int imageSize)
    {
        public readonly string Datasets = datasets;
        public readonly int ImageSize = imageSize;
        public readonly List<ImageJob> Images = [];
        public readonly List<(string Path, byte[] Bytes)> Json = [];
        public readonly List<KeyValuePair<string, int>> Counts = [];

        public void AddImage(string relativePath, Garment g, ViewParams view, bool png) =>
            Images.Add(new ImageJob(System.IO.Path.Combine(Datasets, relativePath), g, view, png));

        public void AddJson(string relativePath, Action<Utf8JsonWriter> write)
        {
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms)) write(w);
            Json.Add((System.IO.Path.Combine(Datasets, relativePath), ms.ToArray()));
        }
    }

    /// <summary>Generates everything under <c>options.OutputDirectory/datasets</c>. Existing files of the same names are replaced.</summary>
    public static SynthSummary Generate(SynthOptions options, TextWriter? log = null)
    {
        options.Validate();
        var clock = Stopwatch.StartNew();
        string root = Path.GetFullPath(options.OutputDirectory);
        string datasets = Path.Combine(root, "datasets");
        var plan = new Plan(datasets, options.ImageSize);
        var rng = new SynthRandom(options.Seed);
        // Each dataset draws from its own stream, so changing one dataset's recipe leaves the others unchanged.
        var fgRng = rng.Fork(1);
        var f200Rng = rng.Fork(2);
        var bigRng = rng.Fork(3);
        var polyRng = rng.Fork(4);
        var fiqRng = rng.Fork(5);
        int n = options.Products;
        // At least two products per product dataset, so that no split file is empty (the reference refuses those).
        PlanFashionGen(plan, fgRng, Math.Max(2, n));
        PlanFashion200k(plan, f200Rng, Math.Max(2, n / 2));
        PlanBigFacad(plan, bigRng, Math.Max(2, n / 2));
        PlanPolyvore(plan, polyRng, Math.Max(4, n / 4));
        PlanFashionIq(plan, fiqRng, Math.Max(2, n / 8), Math.Max(2, n / 16));

        PrepareDirectories(root, plan);
        log?.WriteLine($"synth: rendering {plan.Images.Count} images ({options.ImageSize} px) into {datasets}");
        RenderAll(plan, options.Threads <= 0 ? Environment.ProcessorCount : options.Threads);
        foreach (var (path, bytes) in plan.Json) AtomicFile.WriteAllBytes(path, bytes);
        WriteManifest(root, options, plan);
        clock.Stop();
        return new SynthSummary(datasets, plan.Counts, plan.Images.Count, clock.Elapsed);
    }

    private static void PrepareDirectories(string root, Plan plan)
    {
        var dirs = new SortedSet<string>(StringComparer.Ordinal) { plan.Datasets };
        foreach (var job in plan.Images) dirs.Add(Path.GetDirectoryName(job.Path)!);
        foreach (var (path, _) in plan.Json) dirs.Add(Path.GetDirectoryName(path)!);
        string probe = Path.Combine(plan.Datasets, $".synth-probe-{Environment.ProcessId}");
        try
        {
            foreach (var d in dirs) Directory.CreateDirectory(d);
            File.WriteAllBytes(probe, [0]);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new IOException($"synth: cannot write the output directory '{root}': {e.Message}", e);
        }
    }

    private static void RenderAll(Plan plan, int threads)
    {
        var jpeg = new JpegEncoder { Quality = 90 };
        // Fastest deflate level: on these noisy pictures it is ~3x faster than the default and only ~2% larger.
        var png = new PngEncoder { CompressionLevel = PngCompressionLevel.BestSpeed };
        try
        {
            Parallel.ForEach(plan.Images, new ParallelOptions { MaxDegreeOfParallelism = threads }, job =>
            {
                using var image = GarmentRenderer.Render(job.Garment, job.View, plan.ImageSize);
                using var ms = new MemoryStream();
                if (job.Png) image.SaveAsPng(ms, png); else image.SaveAsJpeg(ms, jpeg);
                AtomicFile.WriteAllBytes(job.Path, ms.ToArray());
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            throw e.InnerExceptions[0] is IOException or UnauthorizedAccessException
                ? new IOException($"synth: writing images failed: {e.InnerExceptions[0].Message}", e.InnerExceptions[0])
                : e.InnerExceptions[0];
        }
    }

    private static void WriteManifest(string root, SynthOptions options, Plan plan)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("generator", "fashionvil synth");
            w.WriteNumber("seed", options.Seed);
            w.WriteNumber("products", options.Products);
            w.WriteNumber("image_size", options.ImageSize);
            w.WriteNumber("images", plan.Images.Count);
            w.WriteStartObject("counts");
            foreach (var (k, v) in plan.Counts) w.WriteNumber(k, v);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        AtomicFile.WriteAllBytes(Path.Combine(root, "synth.json"), ms.ToArray());
    }

    // ---------------------------------------------------------------------------------------------------------
    // Product datasets (spec §5.1)

    private static GarmentCategory RandomCategory(SynthRandom rng) => (GarmentCategory)rng.Next(Enum.GetValues<GarmentCategory>().Length);

    private static List<Product> SampleProducts(SynthRandom rng, int count, int firstId, int minViews, int maxViews)
    {
        var products = new List<Product>(count);
        for (int i = 0; i < count; i++)
        {
            var g = GarmentSampler.Sample(rng, RandomCategory(rng));
            products.Add(new Product(firstId + i, g, rng.Between(minViews, maxViews), rng.Next(2)));
        }
        return products;
    }

    /// <summary>Product-level split: per sub-category, ⌈fraction·m⌉ of its m products (none when m = 1) go to the held-out side.</summary>
    private static (List<Product> Train, List<Product> Held) SplitBySubcategory(SynthRandom rng, List<Product> products, double fraction)
    {
        var held = new HashSet<int>();
        foreach (var group in products.GroupBy(p => p.Garment.Subcategory).OrderBy(gr => gr.Key))
        {
            var members = group.ToList();
            if (members.Count < 2) continue;
            rng.Shuffle(members);
            int k = Math.Max(1, (int)Math.Ceiling(fraction * members.Count));
            foreach (var p in members.Take(Math.Min(k, members.Count - 1))) held.Add(p.Id);
        }
        // Tiny sets where every sub-category is a singleton still get one held-out product (the reference refuses empty splits).
        if (held.Count == 0 && products.Count >= 2) held.Add(products[rng.Next(products.Count)].Id);
        return (products.Where(p => !held.Contains(p.Id)).ToList(), products.Where(p => held.Contains(p.Id)).ToList());
    }

    private static (List<Product> Train, List<Product> Held) SplitRandom(SynthRandom rng, List<Product> products, double fraction)
    {
        var order = products.ToList();
        rng.Shuffle(order);
        int k = products.Count < 2 ? 0 : Math.Clamp((int)Math.Round(fraction * products.Count), 1, products.Count - 1);
        var held = order.Take(k).Select(p => p.Id).ToHashSet();
        return (products.Where(p => !held.Contains(p.Id)).ToList(), products.Where(p => held.Contains(p.Id)).ToList());
    }

    private static void WriteIntArray(Utf8JsonWriter w, string name, IEnumerable<int> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteNumberValue(v);
        w.WriteEndArray();
    }

    private static void WriteStringArray(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteStringValue(v);
        w.WriteEndArray();
    }

    /// <summary>FashionGen: N products, 2–4 views each as 256-px-style PNGs in train/ or val/, ~20% of every sub-category in val.</summary>
    private static void PlanFashionGen(Plan plan, SynthRandom rng, int count)
    {
        var products = SampleProducts(rng, count, 100_000, 2, 4);
        var (train, val) = SplitBySubcategory(rng, products, 0.2);
        foreach (var (split, list) in new[] { ("train", train), ("val", val) })
        {
            foreach (var p in list)
            {
                for (int k = 0; k < p.ViewCount; k++)
                {
                    string file = $"{p.Id}_{k}.png";
                    p.Images.Add(file);
                    plan.AddImage(Path.Combine("FashionGen", split, file), p.Garment, ViewParams.Sample(rng, k), png: true);
                }
            }
            plan.AddJson(Path.Combine("FashionGen", $"{split}_info.json"), w =>
            {
                w.WriteStartArray();
                foreach (var p in list)
                {
                    w.WriteStartObject();
                    WriteStringArray(w, "images", p.Images);
                    w.WriteNumber("id", p.Id);
                    w.WriteString("title", Captions.TitleCase(Captions.Title(p.Garment)));
                    w.WriteString("description", Captions.Description(p.Garment, p.Variant));
                    WriteIntArray(w, "attributes_id", GarmentCatalog.AttributeIds(p.Garment));
                    w.WriteNumber("category_id", (int)p.Garment.Category);
                    w.WriteNumber("subcategory_id", p.Garment.Subcategory);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            plan.Counts.Add(new($"FashionGen/{split}", list.Count));
        }
    }

    /// <summary>Fashion200k: N/2 products, 1–3 JPEG views under images/women/&lt;category&gt;/&lt;id&gt;/, title only, 80/20 train/test.</summary>
    private static void PlanFashion200k(Plan plan, SynthRandom rng, int count)
    {
        var products = SampleProducts(rng, count, 200_000, 1, 3);
        var (train, test) = SplitRandom(rng, products, 0.2);
        foreach (var (split, list) in new[] { ("train", train), ("test", test) })
        {
            foreach (var p in list)
            {
                string folder = $"women/{GarmentCatalog.CategoryNames[(int)p.Garment.Category].Replace(' ', '_')}/{p.Id}";
                for (int k = 0; k < p.ViewCount; k++)
                {
                    string file = $"{folder}/{p.Id}_{k}.jpg";
                    p.Images.Add(file);
                    plan.AddImage(Path.Combine("Fashion200k", "images", file), p.Garment, ViewParams.Sample(rng, k), png: false);
                }
            }
            plan.AddJson(Path.Combine("Fashion200k", $"{split}_info.json"), w =>
            {
                w.WriteStartArray();
                foreach (var p in list)
                {
                    w.WriteStartObject();
                    WriteStringArray(w, "images", p.Images);
                    w.WriteNumber("id", p.Id);
                    w.WriteString("title", Captions.Title(p.Garment));
                    WriteIntArray(w, "attributes_id", GarmentCatalog.AttributeIds(p.Garment));
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            plan.Counts.Add(new($"Fashion200k/{split}", list.Count));
        }
    }

    /// <summary>BigFACAD: N/2 products, 1–2 JPEG views in images/, colour in its own field, 85/15 train/val.</summary>
    private static void PlanBigFacad(Plan plan, SynthRandom rng, int count)
    {
        var products = SampleProducts(rng, count, 300_000, 1, 2);
        var (train, val) = SplitRandom(rng, products, 0.15);
        foreach (var (split, list) in new[] { ("train", train), ("val", val) })
        {
            foreach (var p in list)
            {
                for (int k = 0; k < p.ViewCount; k++)
                {
                    string file = $"{p.Id}_{k}.jpg";
                    p.Images.Add(file);
                    plan.AddImage(Path.Combine("BigFACAD", "images", file), p.Garment, ViewParams.Sample(rng, k), png: false);
                }
            }
            plan.AddJson(Path.Combine("BigFACAD", $"{split}_info.json"), w =>
            {
                w.WriteStartArray();
                foreach (var p in list)
                {
                    w.WriteStartObject();
                    WriteStringArray(w, "images", p.Images);
                    w.WriteNumber("id", p.Id);
                    w.WriteString("color", p.Garment.ColourName);
                    w.WriteString("title", Captions.TitleCase(Captions.TitleWithoutColour(p.Garment)));
                    w.WriteString("description", Captions.Description(p.Garment, p.Variant));
                    WriteIntArray(w, "attributes_id", GarmentCatalog.AttributeIds(p.Garment));
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            plan.Counts.Add(new($"BigFACAD/{split}", list.Count));
        }
    }

    // ---------------------------------------------------------------------------------------------------------
    // Polyvore Outfits (spec §5.1 train_info.json, §5.2 OCIR files)

    private sealed record Item(string Id, Garment Garment, int Variant);

    private sealed record Outfit(List<Item> Items, int Blank);

    private sealed class ItemFactory(SynthRandom rng)
    {
        private readonly HashSet<string> _ids = [];
        public readonly List<Item> All = [];

        public Item Make(Garment g)
        {
            string id;
            do id = rng.Between(100_000_000, 999_999_999).ToString(System.Globalization.CultureInfo.InvariantCulture);
            while (!_ids.Add(id));
            var item = new Item(id, g, rng.Next(2));
            All.Add(item);
            return item;
        }
    }

    /// <summary>
    /// The look every item of an outfit shares: two colours and one print. <see cref="Main"/> is the body colour of the
    /// clothes above the waist (dress, top, jacket) and of the hat; the bottom, shoes and bag invert the palette (body
    /// <see cref="Accent"/>, print in <see cref="Main"/>). 13 × 12 × 3 = 468 styles.
    /// </summary>
    internal readonly record struct OutfitStyle(int Main, int Accent, GarmentPattern Pattern)
    {
        public static readonly GarmentPattern[] Prints = [GarmentPattern.Striped, GarmentPattern.Checked, GarmentPattern.Dotted];

        public static OutfitStyle Sample(SynthRandom rng)
        {
            int main = rng.Next(Palette.Count);
            return new OutfitStyle(main, GarmentSampler.OtherColour(rng, main), rng.Pick(Prints));
        }

        /// <summary>Whether garments of this category take <see cref="Accent"/> as their body colour.</summary>
        public static bool Inverted(GarmentCategory c) =>
            c is GarmentCategory.Trousers or GarmentCategory.Shorts or GarmentCategory.Skirt or GarmentCategory.Shoes or GarmentCategory.Bag;

        /// <summary>A garment of <paramref name="category"/> (shape, trim and style drawn at random) dressed in this style:
        /// body and print colours from the palette, the style's print; a trim, when drawn, is the print colour.</summary>
        public Garment Apply(SynthRandom rng, GarmentCategory category)
        {
            var (body, print) = Inverted(category) ? (Accent, Main) : (Main, Accent);
            var g = GarmentSampler.Sample(rng, category, body);
            g = g with { Pattern = Pattern, PatternColour = print, TrimColour = g.TrimColour is null ? null : print };
            g.Validate();
            return g;
        }
    }

    /// <summary>
    /// An outfit: a dress, or a top (shirt or top) with a bottom (trousers, shorts or skirt); sometimes a jacket; shoes and a
    /// bag; sometimes a hat — every item in the outfit's <see cref="OutfitStyle"/>.
    /// </summary>
    private static List<Garment> OutfitGarments(SynthRandom rng, OutfitStyle style)
    {
        var categories = new List<GarmentCategory>();
        if (rng.Chance(0.3)) categories.Add(GarmentCategory.Dress);
        else
        {
            categories.Add(rng.Chance(0.5) ? GarmentCategory.Shirt : GarmentCategory.Top);
            categories.Add(rng.Pick([GarmentCategory.Trousers, GarmentCategory.Shorts, GarmentCategory.Skirt]));
        }
        if (rng.Chance(0.25)) categories.Add(GarmentCategory.Jacket);
        categories.Add(GarmentCategory.Shoes);
        categories.Add(GarmentCategory.Bag);
        if (rng.Chance(0.2)) categories.Add(GarmentCategory.Hat);
        return categories.Select(c => style.Apply(rng, c)).ToList();
    }

    /// <summary>The style of an outfit, read back from its first item.</summary>
    private static OutfitStyle StyleOf(Outfit o)
    {
        var g = o.Items[0].Garment;
        return OutfitStyle.Inverted(g.Category) ? new(g.PatternColour, g.Colour, g.Pattern) : new(g.Colour, g.PatternColour, g.Pattern);
    }

    private static bool IsAccessory(Item i) => i.Garment.Category is GarmentCategory.Shoes or GarmentCategory.Bag;

    private static void PlanPolyvore(Plan plan, SynthRandom rng, int outfitCount)
    {
        var factory = new ItemFactory(rng);
        int testCount = Math.Max(1, outfitCount / 4), trainCount = outfitCount - testCount;
        List<Outfit> MakeOutfits(int k) => Enumerable.Range(0, k).Select(_ =>
        {
            var items = OutfitGarments(rng, OutfitStyle.Sample(rng)).Select(factory.Make).ToList();
            return new Outfit(items, rng.Next(items.Count));
        }).ToList();
        var train = MakeOutfits(trainCount);
        int trainItemCount = factory.All.Count;
        var testDisjoint = MakeOutfits(testCount);
        // Non-disjoint test outfits share items with training outfits: the shoes and bag of a training outfit worn with new
        // clothes in that outfit's style (the clothes appear in this split only).
        var testNondisjoint = new List<Outfit>();
        for (int i = 0; i < testCount; i++)
        {
            var source = rng.Pick(train);
            var style = StyleOf(source);
            var clothes = OutfitGarments(rng, style).Where(g => g.Category is not (GarmentCategory.Shoes or GarmentCategory.Bag)).Select(factory.Make);
            var items = clothes.Concat(source.Items.Where(IsAccessory)).ToList();
            testNondisjoint.Add(new Outfit(items, rng.Next(items.Count)));
        }

        foreach (var item in factory.All)
            plan.AddImage(Path.Combine("PolyvoreOutfits", "images", $"{item.Id}.jpg"), item.Garment, ViewParams.Sample(rng, 0), png: false);

        foreach (var (kind, test) in new[] { ("disjoint", testDisjoint), ("nondisjoint", testNondisjoint) })
        {
            plan.AddJson(Path.Combine("PolyvoreOutfits", $"ocir_{kind}_train.json"), w => WriteOcir(w, train, fakes: false));
            plan.AddJson(Path.Combine("PolyvoreOutfits", $"ocir_{kind}_test.json"), w => WriteOcir(w, test, fakes: true));
            plan.Counts.Add(new($"PolyvoreOutfits/ocir_{kind}_train", train.Count));
            plan.Counts.Add(new($"PolyvoreOutfits/ocir_{kind}_test", test.Count));
        }

        plan.AddJson(Path.Combine("PolyvoreOutfits", "polyvore_item_metadata.json"), w =>
        {
            w.WriteStartObject();
            foreach (var item in factory.All)
            {
                w.WriteStartObject(item.Id);
                w.WriteString("title", Captions.TitleCase(Captions.Title(item.Garment)));
                w.WriteString("description", Captions.Description(item.Garment, item.Variant));
                // Polyvore stores category ids as strings; the reference parses them with int().
                w.WriteString("category_id", GarmentCatalog.PolyvoreCategoryIds[item.Garment.Subcategory].ToString(System.Globalization.CultureInfo.InvariantCulture));
                w.WriteString("semantic_category", GarmentCatalog.PolyvoreSemanticCategories[(int)item.Garment.Category]);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        });

        // Pre-training sees only the items of training outfits, so OCIR test items stay unseen (disjoint split).
        var trainItems = factory.All.Take(trainItemCount).ToList();
        plan.AddJson(Path.Combine("PolyvoreOutfits", "train_info.json"), w =>
        {
            w.WriteStartArray();
            foreach (var item in trainItems)
            {
                w.WriteStartObject();
                w.WriteString("images", $"{item.Id}.jpg");
                w.WriteNumber("id", int.Parse(item.Id, System.Globalization.CultureInfo.InvariantCulture));
                w.WriteString("title", Captions.TitleCase(Captions.Title(item.Garment)));
                w.WriteString("description", Captions.Description(item.Garment, item.Variant));
                WriteIntArray(w, "attributes_id", GarmentCatalog.AttributeIds(item.Garment));
                w.WriteEndObject();
            }
            w.WriteEndArray();
        });
        plan.Counts.Add(new("PolyvoreOutfits/train_info", trainItems.Count));
        plan.Counts.Add(new("PolyvoreOutfits/items", factory.All.Count));
    }

    /// <summary>
    /// One entry per outfit (question = the other items, blank = the held-out one). Test files add, for every item of a
    /// test outfit that is no real blank, a <c>fake_data</c> entry with that item as blank, so the gallery (distinct
    /// blanks over all entries) holds every test item.
    /// </summary>
    private static void WriteOcir(Utf8JsonWriter w, List<Outfit> outfits, bool fakes)
    {
        w.WriteStartArray();
        var blanks = new HashSet<string>(outfits.Select(o => o.Items[o.Blank].Id));
        void Entry(Outfit o, int blank, bool fake)
        {
            w.WriteStartObject();
            WriteStringArray(w, "question", o.Items.Where((_, i) => i != blank).Select(x => x.Id));
            w.WriteString("blank", o.Items[blank].Id);
            if (fakes) w.WriteBoolean("fake_data", fake);
            w.WriteEndObject();
        }
        foreach (var o in outfits) Entry(o, o.Blank, fake: false);
        if (fakes)
        {
            foreach (var o in outfits)
                for (int i = 0; i < o.Items.Count; i++)
                    if (blanks.Add(o.Items[i].Id)) Entry(o, i, fake: true);
        }
        w.WriteEndArray();
    }

    // ---------------------------------------------------------------------------------------------------------
    // FashionIQ (spec §5.2, gallery semantics §4.2)

    private sealed record Triplet(string Candidate, string Target, string[] Captions);

    private static void PlanFashionIq(Plan plan, SynthRandom rng, int trainPerClass, int valPerClass)
    {
        var asins = new HashSet<string>();
        string NewAsin()
        {
            const string alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
            string a;
            do a = "B0" + new string(Enumerable.Range(0, 8).Select(_ => alphabet[rng.Next(alphabet.Length)]).ToArray());
            while (!asins.Add(a));
            return a;
        }

        for (int cls = 0; cls < FashionIqClasses.Count; cls++)
        {
            string name = FashionIqClasses[cls];
            var category = FashionIqCategories[cls];
            foreach (var (split, count) in new[] { ("train", trainPerClass), ("val", valPerClass) })
            {
                var triplets = new List<Triplet>();
                var images = new List<string>();
                for (int t = 0; t < count; t++)
                {
                    var candidate = GarmentSampler.Sample(rng, category);
                    var kinds = GarmentSampler.EditableKinds(category).ToList();
                    rng.Shuffle(kinds);
                    var edits = kinds.Take(rng.Chance(0.5) ? 1 : 2).ToList();
                    var target = candidate;
                    foreach (var e in edits) target = GarmentSampler.Edit(rng, target, e);
                    string c = NewAsin(), tg = NewAsin();
                    plan.AddImage(Path.Combine("FashionIQ", "images", $"{c}.jpg"), candidate, ViewParams.Sample(rng, rng.Next(2)), png: false);
                    plan.AddImage(Path.Combine("FashionIQ", "images", $"{tg}.jpg"), target, ViewParams.Sample(rng, rng.Next(2)), png: false);
                    images.Add(c);
                    images.Add(tg);
                    triplets.Add(new Triplet(c, tg, Captions.RelativeCaptions(candidate, target, edits)));
                }
                int garmentClass = cls;
                plan.AddJson(Path.Combine("FashionIQ", "captions", $"cap.{name}.{split}.json"), w => WriteFashionIq(w, triplets, split == "val", garmentClass));
                plan.AddJson(Path.Combine("FashionIQ", "image_splits", $"split.{name}.{split}.json"), w =>
                {
                    w.WriteStartArray();
                    foreach (var a in images) w.WriteStringValue(a);
                    w.WriteEndArray();
                });
                plan.Counts.Add(new($"FashionIQ/{name}.{split}", triplets.Count));
            }
        }
    }

    /// <summary>
    /// Train: candidate/target/captions. Val adds <c>target_id</c> (the image's index in the class gallery),
    /// <c>fake_data</c> and <c>garment_class</c>; every val image that is no real target (the candidates) gets a fake
    /// entry with itself as target, so the gallery (distinct target ids over all entries) is every val image.
    /// </summary>
    private static void WriteFashionIq(Utf8JsonWriter w, List<Triplet> triplets, bool val, int garmentClass)
    {
        var gallery = new Dictionary<string, int>();
        int IdOf(string asin) => gallery.TryGetValue(asin, out int id) ? id : gallery[asin] = gallery.Count;
        w.WriteStartArray();
        void Entry(string candidate, string target, string[] captions, bool fake)
        {
            w.WriteStartObject();
            w.WriteString("candidate", candidate);
            w.WriteString("target", target);
            WriteStringArray(w, "captions", captions);
            if (val)
            {
                w.WriteNumber("target_id", IdOf(target));
                w.WriteBoolean("fake_data", fake);
                w.WriteNumber("garment_class", garmentClass);
            }
            w.WriteEndObject();
        }
        foreach (var t in triplets) Entry(t.Candidate, t.Target, t.Captions, fake: false);
        if (val)
        {
            foreach (var t in triplets)
                if (!gallery.ContainsKey(t.Candidate)) Entry(t.Candidate, t.Candidate, ["is the same", "is the same"], fake: true);
        }
        w.WriteEndArray();
    }
}

/// <summary>Writes a file through a temporary sibling and a rename, so readers never see half a file.</summary>
internal static class AtomicFile
{
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        string tmp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}.tmp");
        try
        {
            File.WriteAllBytes(tmp, bytes);
            File.Move(tmp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
