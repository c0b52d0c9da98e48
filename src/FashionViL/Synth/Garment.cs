namespace FashionViL.Synth;

/// <summary>The silhouettes the generator can draw. Each has its own outline in <see cref="GarmentShapes"/>.</summary>
public enum GarmentCategory { Dress, Shirt, Top, Jacket, Trousers, Shorts, Skirt, Bag, Shoes, Hat }

/// <summary>Surface pattern of the garment body, drawn in the garment's own coordinates (it moves with the garment).</summary>
public enum GarmentPattern { Plain, Striped, Checked, Dotted }

public enum SleeveLength { None, Short, Long }

public enum Neckline { Round, V }

public enum GarmentLength { Short, Long }

/// <summary>A colour the captions can name, with the RGB value the renderer paints it in.</summary>
public readonly record struct NamedColour(string Name, byte R, byte G, byte B);

/// <summary>The 13 colours of the generator. Values stay close to the usual meaning of the name.</summary>
public static class Palette
{
    public static readonly IReadOnlyList<NamedColour> Colours =
    [
        new("red", 235, 25, 30),
        new("blue", 20, 60, 235),
        new("green", 35, 130, 55),
        new("yellow", 250, 228, 40),
        new("black", 28, 28, 30),
        new("white", 248, 248, 246),
        new("grey", 130, 130, 135),
        new("pink", 245, 165, 190),
        new("purple", 125, 45, 140),
        new("orange", 245, 135, 30),
        new("brown", 130, 72, 40),
        new("beige", 240, 232, 200),
        new("navy", 22, 32, 95),
    ];

    public static int Count => Colours.Count;

    /// <summary>Index of a colour by name; throws naming the unknown colour.</summary>
    public static int IndexOf(string name)
    {
        for (int i = 0; i < Colours.Count; i++)
            if (Colours[i].Name == name) return i;
        throw new ArgumentException($"unknown colour '{name}' (known: {string.Join(", ", Colours.Select(c => c.Name))})", nameof(name));
    }

    /// <summary>Colours that suit trousers, shorts and skirts in an outfit.</summary>
    public static readonly IReadOnlyList<int> Neutrals =
        new[] { "black", "white", "grey", "navy", "beige", "blue", "brown" }.Select(IndexOf).ToArray();
}

/// <summary>
/// One synthetic product: everything the renderer draws and the captions say. Attributes that do not apply to the
/// category are null (<see cref="Sleeves"/> only for dresses, shirts, tops and jackets; <see cref="Neck"/> for
/// dresses and tops; <see cref="Length"/> for dresses, jackets (jacket vs coat) and skirts).
/// </summary>
/// <param name="Colour">Main colour, index into <see cref="Palette.Colours"/>.</param>
/// <param name="PatternColour">Second colour of stripes/checks/dots; differs from <paramref name="Colour"/>; unused when plain.</param>
/// <param name="Style">Bag: 0 shoulder bag, 1 clutch. Shoes: 0 sneakers, 1 boots. Hat: 0 cap, 1 sun hat. Otherwise 0.</param>
/// <param name="TrimColour">Colour of cuffs, collars, bands, belts, straps, soles; null means "same as the body". Shoes always have one (the sole).</param>
public sealed record Garment(
    GarmentCategory Category,
    int Colour,
    GarmentPattern Pattern,
    int PatternColour,
    SleeveLength? Sleeves,
    Neckline? Neck,
    GarmentLength? Length,
    int Style,
    int? TrimColour)
{
    /// <summary>Sub-category id in [0, <see cref="GarmentCatalog.SubcategoryCount"/>), always below FashionGen's 121.</summary>
    public int Subcategory => GarmentCatalog.SubcategoryOf(this);

    public string ColourName => Palette.Colours[Colour].Name;
    public string PatternColourName => Palette.Colours[PatternColour].Name;
    public string? TrimColourName => TrimColour is int t ? Palette.Colours[t].Name : null;

    /// <summary>Throws if the attributes do not fit the category (used by the sampler, the FashionIQ editor and tests).</summary>
    public void Validate()
    {
        bool sleeved = Category is GarmentCategory.Dress or GarmentCategory.Shirt or GarmentCategory.Top or GarmentCategory.Jacket;
        bool necked = Category is GarmentCategory.Dress or GarmentCategory.Top;
        bool lengthed = Category is GarmentCategory.Dress or GarmentCategory.Jacket or GarmentCategory.Skirt;
        bool styled = Category is GarmentCategory.Bag or GarmentCategory.Shoes or GarmentCategory.Hat;
        string what = $"garment {this}";
        if ((uint)Colour >= (uint)Palette.Count || (uint)PatternColour >= (uint)Palette.Count)
            throw new InvalidOperationException($"{what}: colour index out of range");
        if (PatternColour == Colour) throw new InvalidOperationException($"{what}: pattern colour equals the main colour");
        if (TrimColour is int t && ((uint)t >= (uint)Palette.Count || t == Colour))
            throw new InvalidOperationException($"{what}: trim colour out of range or equal to the main colour");
        if (sleeved != Sleeves.HasValue) throw new InvalidOperationException($"{what}: sleeves must be set exactly for dress/shirt/top/jacket");
        if (necked != Neck.HasValue) throw new InvalidOperationException($"{what}: neck must be set exactly for dress/top");
        if (lengthed != Length.HasValue) throw new InvalidOperationException($"{what}: length must be set exactly for dress/jacket/skirt");
        if (!styled && Style != 0 || styled && Style is not (0 or 1)) throw new InvalidOperationException($"{what}: bad style");
        if (Category == GarmentCategory.Shirt && Sleeves == SleeveLength.None) throw new InvalidOperationException($"{what}: shirts have sleeves");
        if (Category == GarmentCategory.Jacket && Sleeves != SleeveLength.Long) throw new InvalidOperationException($"{what}: jackets have long sleeves");
        if (Category == GarmentCategory.Shoes && TrimColour is null) throw new InvalidOperationException($"{what}: shoes need a sole colour");
    }
}

/// <summary>
/// Fixed tables: category and sub-category ids and names, Polyvore category ids, and the pseudo-attribute ids.
/// <para>Pseudo-attribute ids (the <c>attributes_id</c> field, 2,232 classes in the reference) — one id per attribute
/// value, a product lists the ids of all its attribute values:</para>
/// <list type="table">
/// <item><term>0–9</term><description>category (<see cref="GarmentCategory"/> order)</description></item>
/// <item><term>20–38</term><description>sub-category (20 + <see cref="Garment.Subcategory"/>)</description></item>
/// <item><term>100–112</term><description>main colour (100 + palette index)</description></item>
/// <item><term>130–133</term><description>pattern: plain, striped, checked, dotted</description></item>
/// <item><term>140–152</term><description>pattern colour (140 + palette index), only for patterned products</description></item>
/// <item><term>160–162</term><description>sleeves: none, short, long</description></item>
/// <item><term>170–171</term><description>neck: round, v</description></item>
/// <item><term>180–181</term><description>length: short, long</description></item>
/// <item><term>200–212</term><description>trim colour (200 + palette index)</description></item>
/// <item><term>220–228</term><description>details: collar, buttons, zip, belt, laces, sole, strap, flap, peak</description></item>
/// </list>
/// </summary>
public static class GarmentCatalog
{
    public const int AttributeVocabulary = 2232;
    public const int CategoryBase = 0, SubcategoryBase = 20, ColourBase = 100, PatternBase = 130, PatternColourBase = 140;
    public const int SleeveBase = 160, NeckBase = 170, LengthBase = 180, TrimColourBase = 200;
    public const int Collar = 220, Buttons = 221, Zip = 222, Belt = 223, Laces = 224, Sole = 225, Strap = 226, Flap = 227, Peak = 228;

    /// <summary>Sub-category names in id order (nouns used in titles).</summary>
    public static readonly IReadOnlyList<string> SubcategoryNames =
    [
        "short dress", "long dress", "short sleeve shirt", "long sleeve shirt", "tank top", "t-shirt",
        "long sleeve top", "jacket", "coat", "trousers", "shorts", "short skirt", "long skirt", "shoulder bag",
        "clutch", "sneakers", "boots", "cap", "sun hat",
    ];

    public static int SubcategoryCount => SubcategoryNames.Count;

    /// <summary>FashionGen-style category names, indexed by <see cref="GarmentCategory"/>.</summary>
    public static readonly IReadOnlyList<string> CategoryNames =
        ["dresses", "shirts", "tops", "jackets and coats", "trousers", "shorts", "skirts", "bags", "shoes", "hats"];

    public static int SubcategoryOf(Garment g) => g.Category switch
    {
        GarmentCategory.Dress => g.Length == GarmentLength.Long ? 1 : 0,
        GarmentCategory.Shirt => g.Sleeves == SleeveLength.Long ? 3 : 2,
        GarmentCategory.Top => g.Sleeves switch { SleeveLength.None => 4, SleeveLength.Short => 5, _ => 6 },
        GarmentCategory.Jacket => g.Length == GarmentLength.Long ? 8 : 7,
        GarmentCategory.Trousers => 9,
        GarmentCategory.Shorts => 10,
        GarmentCategory.Skirt => g.Length == GarmentLength.Long ? 12 : 11,
        GarmentCategory.Bag => g.Style == 1 ? 14 : 13,
        GarmentCategory.Shoes => g.Style == 1 ? 16 : 15,
        GarmentCategory.Hat => g.Style == 1 ? 18 : 17,
        _ => throw new ArgumentOutOfRangeException(nameof(g), g.Category, "unknown category"),
    };

    /// <summary>
    /// Polyvore Outfits category id (a key of the reference's CAT_DICT, BrandonHanx/mmf polyvore_ocir/database.py)
    /// per sub-category. The id→name correspondence (3 dress, 7 skirt, 10 long skirt, 11 top/shirt, 17 long-sleeve
    /// shirt, 21 t-shirt, 24 coat, 25 jacket, 28 pants, 29 shorts, 37 bag, 38 clutch, 42 boots, 49 sneakers, 55 hat,
    /// 104 tank) is taken from a public third-party grouping of Polyvore's categories.csv, not from the dataset itself.
    /// </summary>
    public static readonly IReadOnlyList<int> PolyvoreCategoryIds =
        [3, 3, 11, 17, 104, 21, 11, 25, 24, 28, 29, 7, 10, 37, 38, 49, 42, 55, 55];

    /// <summary>Polyvore's <c>semantic_category</c> per <see cref="GarmentCategory"/>.</summary>
    public static readonly IReadOnlyList<string> PolyvoreSemanticCategories =
        ["all-body", "tops", "tops", "outerwear", "bottoms", "bottoms", "bottoms", "bags", "shoes", "hats"];

    /// <summary>The pseudo-attribute ids of a product, ascending and distinct, all in [0, 2232).</summary>
    public static int[] AttributeIds(Garment g)
    {
        var ids = new SortedSet<int>
        {
            CategoryBase + (int)g.Category,
            SubcategoryBase + g.Subcategory,
            ColourBase + g.Colour,
            PatternBase + (int)g.Pattern,
        };
        if (g.Pattern != GarmentPattern.Plain) ids.Add(PatternColourBase + g.PatternColour);
        if (g.Sleeves is SleeveLength s) ids.Add(SleeveBase + (int)s);
        if (g.Neck is Neckline n) ids.Add(NeckBase + (int)n);
        if (g.Length is GarmentLength l) ids.Add(LengthBase + (int)l);
        if (g.TrimColour is int t) ids.Add(TrimColourBase + t);
        switch (g.Category)
        {
            case GarmentCategory.Shirt: ids.Add(Collar); ids.Add(Buttons); break;
            case GarmentCategory.Jacket: ids.Add(Collar); ids.Add(g.Length == GarmentLength.Long ? Buttons : Zip); break;
            case GarmentCategory.Dress when g.TrimColour is not null: ids.Add(Belt); break;
            case GarmentCategory.Bag: ids.Add(g.Style == 0 ? Strap : Flap); break;
            case GarmentCategory.Shoes: ids.Add(Sole); if (g.Style == 0) ids.Add(Laces); break;
            case GarmentCategory.Hat when g.Style == 0: ids.Add(Peak); break;
        }
        return [.. ids];
    }
}
