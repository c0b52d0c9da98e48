using System.Globalization;

namespace FashionViL.Synth;

/// <summary>
/// Product texts that say exactly what <see cref="GarmentRenderer"/> draws. Every word is a whole word of the
/// bert-base-uncased vocabulary (checked by a test), so tokenisation never falls back to word pieces or [UNK].
/// </summary>
public static class Captions
{
    /// <summary>The product noun, e.g. "long sleeve shirt", "sneakers" (the sub-category name without the length of dresses/skirts).</summary>
    public static string Noun(Garment g) => g.Category switch
    {
        GarmentCategory.Dress => "dress",
        GarmentCategory.Skirt => "skirt",
        _ => GarmentCatalog.SubcategoryNames[g.Subcategory],
    };

    /// <summary>Adjective for the pattern ("" when plain).</summary>
    public static string PatternAdjective(GarmentPattern p) => p switch
    {
        GarmentPattern.Striped => "striped",
        GarmentPattern.Checked => "checked",
        GarmentPattern.Dotted => "polka dot",
        _ => "",
    };

    /// <summary>Lower-case title: colour, pattern, length (dresses, skirts), noun — "red striped long sleeve shirt".</summary>
    public static string Title(Garment g)
    {
        var words = new List<string> { g.ColourName };
        if (g.Pattern != GarmentPattern.Plain) words.Add(PatternAdjective(g.Pattern));
        words.AddRange(TitleWithoutColourWords(g));
        return string.Join(' ', words);
    }

    /// <summary>The title without its colour (BigFACAD keeps the colour in its own field).</summary>
    public static string TitleWithoutColour(Garment g)
    {
        var words = new List<string>();
        if (g.Pattern != GarmentPattern.Plain) words.Add(PatternAdjective(g.Pattern));
        words.AddRange(TitleWithoutColourWords(g));
        return string.Join(' ', words);
    }

    private static IEnumerable<string> TitleWithoutColourWords(Garment g)
    {
        if (g.Category is GarmentCategory.Dress or GarmentCategory.Skirt)
            yield return g.Length == GarmentLength.Long ? "long" : "short";
        yield return Noun(g);
    }

    /// <summary>Title Case as in FashionGen and Polyvore product names: "Red Striped Long Sleeve Shirt", "Navy T-Shirt".</summary>
    public static string TitleCase(string text) =>
        string.Join(' ', text.Split(' ').Select(w => string.Join('-', w.Split('-').Select(Capitalise))));

    private static string Capitalise(string w) => w.Length == 0 ? w : char.ToUpper(w[0], CultureInfo.InvariantCulture) + w[1..];

    /// <summary>
    /// Two or three sentences: what it is and its colours/pattern; the shape (sleeves, neck, length, closure); the trim.
    /// <paramref name="variant"/> (any int) picks one of two phrasings of the first sentence.
    /// </summary>
    public static string Description(Garment g, int variant)
    {
        string noun = Noun(g);
        string what = g.Category switch
        {
            GarmentCategory.Dress or GarmentCategory.Skirt => (g.Length == GarmentLength.Long ? "long " : "short ") + noun,
            _ => noun,
        };
        string patternClause = g.Pattern switch
        {
            GarmentPattern.Striped => $" with {g.PatternColourName} stripes",
            GarmentPattern.Checked => $" with {g.PatternColourName} checks",
            GarmentPattern.Dotted => $" with {g.PatternColourName} polka dots",
            _ => "",
        };
        var sentences = new List<string>
        {
            (variant & 1) == 0
                ? $"{Capitalise(what)} in {g.ColourName}{patternClause}."
                : $"{Capitalise(g.ColourName)} {what}{patternClause}.",
        };
        string? shape = ShapeSentence(g);
        if (shape is not null) sentences.Add(shape);
        string? trim = TrimSentence(g);
        if (trim is not null) sentences.Add(trim);
        return string.Join(' ', sentences);
    }

    private static string SleevePhrase(SleeveLength s) => s switch
    {
        SleeveLength.None => "no sleeves",
        SleeveLength.Short => "short sleeves",
        _ => "long sleeves",
    };

    private static string NeckPhrase(Neckline n) => n == Neckline.Round ? "round neck" : "v neck";

    private static string? ShapeSentence(Garment g) => g.Category switch
    {
        GarmentCategory.Dress => $"{Capitalise(NeckPhrase(g.Neck!.Value))} and {SleevePhrase(g.Sleeves!.Value)}.",
        GarmentCategory.Top => $"{Capitalise(NeckPhrase(g.Neck!.Value))} and {SleevePhrase(g.Sleeves!.Value)}.",
        GarmentCategory.Shirt => $"Classic collar, button front and {SleevePhrase(g.Sleeves!.Value)}.",
        GarmentCategory.Jacket => g.Length == GarmentLength.Long
            ? "Long coat with a collar, long sleeves and a button front."
            : "Short jacket with a collar, long sleeves and a zip front.",
        GarmentCategory.Trousers => "Full length with straight legs.",
        GarmentCategory.Shorts => "Short legs above the knee.",
        GarmentCategory.Skirt => g.Length == GarmentLength.Long ? "Long length, below the knee." : "Short length, above the knee.",
        GarmentCategory.Bag => g.Style == 0 ? "Long shoulder strap." : "Flap front with a button.",
        GarmentCategory.Shoes => g.Style == 0 ? "Lace up front and a rubber sole." : "Tall shaft and a flat sole.",
        GarmentCategory.Hat => g.Style == 0 ? "Baseball cap with a curved peak." : "Sun hat with a wide edge.",
        _ => null,
    };

    private static string? TrimSentence(Garment g)
    {
        if (g.TrimColourName is not string t) return null;
        string part = g.Category switch
        {
            GarmentCategory.Dress => "belt at the waist",
            GarmentCategory.Shirt => "collar and cuffs",
            GarmentCategory.Top => "neck band and hem",
            GarmentCategory.Jacket => "collar and cuffs",
            GarmentCategory.Trousers or GarmentCategory.Shorts or GarmentCategory.Skirt => "waistband",
            GarmentCategory.Bag => g.Style == 0 ? "strap" : "flap",
            GarmentCategory.Shoes => "sole",
            GarmentCategory.Hat => "band",
            _ => "trim",
        };
        // Shoes always have a sole colour, often plain white: name it without calling it a contrast.
        return g.Category == GarmentCategory.Shoes ? $"{Capitalise(t)} sole." : $"Contrast {t} {part}.";
    }

    /// <summary>
    /// The two FashionIQ-style relative captions for a candidate → target change (lower case, no final period, as in
    /// FashionIQ): each edited attribute gets a phrase, and the two captions use different phrasings.
    /// </summary>
    public static string[] RelativeCaptions(Garment candidate, Garment target, IReadOnlyList<GarmentSampler.EditKind> edits)
    {
        var first = new List<string>();
        var second = new List<string>();
        foreach (var e in edits)
        {
            var (a, b) = EditPhrases(candidate, target, e);
            first.Add(a);
            second.Add(b);
        }
        second.Reverse();
        return [string.Join(" and ", first), string.Join(" and ", second)];
    }

    private static (string, string) EditPhrases(Garment from, Garment to, GarmentSampler.EditKind kind) => kind switch
    {
        GarmentSampler.EditKind.Colour => ($"is {to.ColourName} instead of {from.ColourName}", $"is {to.ColourName}"),
        GarmentSampler.EditKind.Pattern => to.Pattern switch
        {
            GarmentPattern.Plain => ($"is plain instead of {PatternAdjective(from.Pattern)}", "has no pattern"),
            GarmentPattern.Striped => ("is striped", $"has {to.PatternColourName} stripes"),
            GarmentPattern.Checked => ("is checked", $"has {to.PatternColourName} checks"),
            _ => ("has polka dots", $"has {to.PatternColourName} dots"),
        },
        GarmentSampler.EditKind.Sleeves => to.Sleeves switch
        {
            SleeveLength.None => ("has no sleeves", "is without sleeves"),
            SleeveLength.Short => ("has short sleeves", $"has short sleeves instead of {SleevePhrase(from.Sleeves!.Value)}"),
            _ => ("has long sleeves", $"has long sleeves instead of {SleevePhrase(from.Sleeves!.Value)}"),
        },
        GarmentSampler.EditKind.Neck => to.Neck == Neckline.V
            ? ("has a v neck", "has a v neck instead of a round neck")
            : ("has a round neck", "has a round neck instead of a v neck"),
        GarmentSampler.EditKind.Length => to.Length == GarmentLength.Long ? ("is longer", "is a long dress") : ("is shorter", "is a short dress"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown edit"),
    };
}
