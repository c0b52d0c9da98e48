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
