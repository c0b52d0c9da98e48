using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FashionViL.Inference;

/// <summary>One embedded item: its name (an image file name, or "line N" of a text file) and, for texts, the text.</summary>
public sealed record EmbeddingItem(string Name, string? Text = null);

/// <summary>A set of embeddings with the items they belong to (what <c>fashionvil encode</c> writes).</summary>
/// <param name="Kind">"image" or "text"</param>
public sealed record EmbeddingSet(float[][] Vectors, IReadOnlyList<EmbeddingItem> Items, string Kind, string? Checkpoint)
{
    public int Count => Vectors.Length;
    public int Dimension => Vectors.Length == 0 ? 0 : Vectors[0].Length;
}

/// <summary>
/// The embeddings file: safetensors with one float32 tensor <c>embeddings</c> [N,D] and <c>__metadata__</c>
/// <c>format</c> = <see cref="Format"/>, <c>kind</c> (image | text), <c>count</c>, <c>dimension</c>, <c>checkpoint</c> (the
/// model file) and <c>items</c> (JSON array of {"name", "text"?} in row order). Written atomically.
/// </summary>
public static class EmbeddingFile
{
    public const string Format = "fashionvil-embeddings";
    public const string TensorName = "embeddings";

    /// <summary>Writes <paramref name="set"/> to <paramref name="path"/> (temp file + rename).</summary>
    public static void Save(string path, EmbeddingSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        int d = EmbeddingSearch.Dimension(set.Vectors, $"embeddings for '{path}'");
        if (set.Items.Count != set.Vectors.Length)
            throw new ArgumentException($"embeddings for '{path}': {set.Vectors.Length} vectors but {set.Items.Count} items");
        if (set.Kind is not ("image" or "text")) throw new ArgumentException($"embeddings for '{path}': kind '{set.Kind}' must be image or text");
        var items = new JsonArray();
        foreach (var it in set.Items)
        {
            var o = new JsonObject { ["name"] = it.Name };
            if (it.Text is not null) o["text"] = it.Text;
            items.Add(o);
        }
        var meta = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = Format, ["kind"] = set.Kind,
            ["count"] = set.Count.ToString(CultureInfo.InvariantCulture), ["dimension"] = d.ToString(CultureInfo.InvariantCulture),
            ["items"] = items.ToJsonString(),
        };
        if (set.Checkpoint is not null) meta["checkpoint"] = set.Checkpoint;
        using var t = EmbeddingSearch.ToTensor(set.Vectors, 0, set.Count, d, Device.Cpu);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { [TensorName] = t }, meta);
    }

    /// <summary>Reads a file written by <see cref="Save"/>; any deviation throws <see cref="InvalidDataException"/> naming the file.</summary>
    public static EmbeddingSet Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"embeddings file '{path}': file not found", path);
        SafeTensorsFile file;
        try { file = SafeTensors.Read(path); }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException)
        {
            throw new InvalidDataException($"embeddings file '{path}' is not a readable safetensors file ({e.Message})", e);
        }
        using (file)
        {
            string Err(string m) => $"embeddings file '{path}': {m}";
            var meta = file.Metadata;
            if (!meta.TryGetValue("format", out var fmt) || fmt != Format)
                throw new InvalidDataException(Err($"not an embeddings file (metadata 'format' is {(fmt is null ? "missing" : $"'{fmt}'")}, expected '{Format}'; write one with `fashionvil encode`)"));
            if (!file.Tensors.TryGetValue(TensorName, out var t)) throw new InvalidDataException(Err($"no tensor '{TensorName}'"));
            if (t.Rank != 2 || t.DType != DType.Float32 || t.Size(0) == 0 || t.Size(1) == 0)
                throw new InvalidDataException(Err($"tensor '{TensorName}' is {t.ShapeString} {t.DType.Name()}, expected non-empty float32 [N,D]"));
            var kind = meta.TryGetValue("kind", out var k) && k is "image" or "text" ? k! : throw new InvalidDataException(Err("metadata 'kind' must be image or text"));
            List<EmbeddingItem> items;
            try
            {
                items = (JsonNode.Parse(meta.TryGetValue("items", out var ij) ? ij : throw new InvalidDataException(Err("metadata 'items' is missing")))?.AsArray()
                         ?? throw new InvalidDataException(Err("metadata 'items' is null")))
                    .Select((n, i) => new EmbeddingItem(n?["name"]?.GetValue<string>() ?? throw new InvalidDataException(Err($"item {i} has no name")), n["text"]?.GetValue<string>()))
                    .ToList();
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException(Err($"metadata 'items' is malformed ({e.Message})"), e);
            }
            int n0 = t.Size(0), d = t.Size(1);
            if (items.Count != n0) throw new InvalidDataException(Err($"{n0} vectors but {items.Count} items"));
            var flat = t.ToArray<float>();
            var vectors = new float[n0][];
            for (int i = 0; i < n0; i++) vectors[i] = flat.AsSpan(i * d, d).ToArray();
            return new EmbeddingSet(vectors, items, kind, meta.TryGetValue("checkpoint", out var c) ? c : null);
        }
    }
}
