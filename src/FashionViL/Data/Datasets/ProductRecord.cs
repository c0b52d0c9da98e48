using FashionViL.Data.Loading;

namespace FashionViL.Data.Datasets;

/// <summary>
/// One product of a pre-training / FashionGen JSON (spec §5.1): its id (the retrieval ground truth), its image files (full
/// paths as written in the JSON joined to the dataset's image folder; resolved with the extension fallback when loaded),
/// the text built as the reference builds it, and its attribute ids in [0, 2232).
/// </summary>
public sealed record ProductRecord(
    long Id,
    IReadOnlyList<string> Images,
    string Text,
    IReadOnlyList<int> AttributeIds,
    int? CategoryId,
    int? SubcategoryId,
    string Dataset);

public static class ProductViews
{
    /// <summary>
    /// The two views of a pre-training sample (spec §2.0, <c>random.choices(images, k=2)</c>): two independent uniform draws
    /// with replacement, so both are the same image for single-image products.
    /// </summary>
    public static (string Image, string DvImage) DrawTwo(ProductRecord product, DataRandom random)
    {
        var imgs = product.Images;
        return (imgs[random.NextInt(imgs.Count)], imgs[random.NextInt(imgs.Count)]);
    }

    /// <summary>One view (<c>random.choices(images)[0]</c>), used when double_view is off.</summary>
    public static string DrawOne(ProductRecord product, DataRandom random) => product.Images[random.NextInt(product.Images.Count)];
}
