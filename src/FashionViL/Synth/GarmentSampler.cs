namespace FashionViL.Synth;

/// <summary>Draws random, valid <see cref="Garment"/>s and the attribute edits behind FashionIQ triplets.</summary>
public static class GarmentSampler
{
    private static readonly double[] PatternWeights = [0.45, 0.2, 0.15, 0.2];

    /// <summary>A random garment of <paramref name="category"/>; <paramref name="colour"/> forces the main colour.</summary>
    public static Garment Sample(SynthRandom rng, GarmentCategory category, int? colour = null)
    {
        int main = colour ?? rng.Next(Palette.Count);
        var pattern = (GarmentPattern)rng.PickWeighted(PatternWeights);
        int patternColour = OtherColour(rng, main);
        SleeveLength? sleeves = category switch
        {
            GarmentCategory.Dress or GarmentCategory.Top => (SleeveLength)rng.Next(3),
            GarmentCategory.Shirt => rng.Chance(0.5) ? SleeveLength.Short : SleeveLength.Long,
            GarmentCategory.Jacket => SleeveLength.Long,
            _ => null,
        };
        Neckline? neck = category is GarmentCategory.Dress or GarmentCategory.Top ? (Neckline)rng.Next(2) : null;
        GarmentLength? length = category is GarmentCategory.Dress or GarmentCategory.Jacket or GarmentCategory.Skirt
            ? (GarmentLength)rng.Next(2) : null;
        int style = category is GarmentCategory.Bag or GarmentCategory.Shoes or GarmentCategory.Hat ? rng.Next(2) : 0;
        int? trim = null;
        if (category == GarmentCategory.Shoes)
            trim = main == Palette.IndexOf("white") ? Palette.IndexOf("black") : rng.Chance(0.7) ? Palette.IndexOf("white") : OtherColour(rng, main);
        else if (rng.Chance(0.35))
            trim = OtherColour(rng, main);
        var g = new Garment(category, main, pattern, patternColour, sleeves, neck, length, style, trim);
        g.Validate();
        return g;
    }

    /// <summary>A random colour index different from <paramref name="exclude"/>.</summary>
    public static int OtherColour(SynthRandom rng, int exclude)
    {
        int c = rng.Next(Palette.Count - 1);
        return c >= exclude ? c + 1 : c;
    }

    /// <summary>An attribute a FashionIQ relative caption can talk about.</summary>
    public enum EditKind { Colour, Pattern, Sleeves, Neck, Length }

    /// <summary>The attributes that may change for a garment of this category.</summary>
    public static IReadOnlyList<EditKind> EditableKinds(GarmentCategory category) => category switch
    {
        GarmentCategory.Dress => [EditKind.Colour, EditKind.Pattern, EditKind.Sleeves, EditKind.Neck, EditKind.Length],
        GarmentCategory.Top => [EditKind.Colour, EditKind.Pattern, EditKind.Sleeves, EditKind.Neck],
        GarmentCategory.Shirt => [EditKind.Colour, EditKind.Pattern, EditKind.Sleeves],
        _ => [EditKind.Colour, EditKind.Pattern],
    };

    /// <summary>Changes one attribute of <paramref name="g"/> to a different valid value.</summary>
    public static Garment Edit(SynthRandom rng, Garment g, EditKind kind)
    {
        Garment edited = kind switch
        {
            EditKind.Colour => ChangeColour(rng, g),
            EditKind.Pattern => g with { Pattern = Different(rng, g.Pattern, 4) },
            EditKind.Sleeves when g.Category == GarmentCategory.Shirt =>
                g with { Sleeves = g.Sleeves == SleeveLength.Long ? SleeveLength.Short : SleeveLength.Long },
            EditKind.Sleeves => g with { Sleeves = Different(rng, g.Sleeves!.Value, 3) },
            EditKind.Neck => g with { Neck = g.Neck == Neckline.Round ? Neckline.V : Neckline.Round },
            EditKind.Length => g with { Length = g.Length == GarmentLength.Long ? GarmentLength.Short : GarmentLength.Long },
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown edit"),
        };
        edited.Validate();
        return edited;
    }

    private static Garment ChangeColour(SynthRandom rng, Garment g)
    {
        var allowed = Enumerable.Range(0, Palette.Count)
            .Where(c => c != g.Colour && c != g.PatternColour && c != g.TrimColour).ToArray();
        return g with { Colour = rng.Pick(allowed) };
    }

    private static T Different<T>(SynthRandom rng, T current, int count) where T : struct, Enum
    {
        int cur = Convert.ToInt32(current);
        int v = rng.Next(count - 1);
        return (T)Enum.ToObject(typeof(T), v >= cur ? v + 1 : v);
    }
}
