using System.Text.Json;

namespace FashionViL.Data.Datasets;

/// <summary>A dataset file that is missing or does not have the expected structure. The message names the file and the JSON path.</summary>
public sealed class DatasetFormatException(string file, string message, Exception? inner = null)
    : Exception($"{file}: {message}", inner)
{
    public string File { get; } = file;
}

/// <summary>Typed access to JSON fields with errors that name the file, the item and the field.</summary>
internal static class Json
{
    public static JsonDocument Open(string file)
    {
        if (!System.IO.File.Exists(file)) throw new DatasetFormatException(file, "file not found");
        try
        {
            using var s = System.IO.File.OpenRead(file);
            return JsonDocument.Parse(s, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e) { throw new DatasetFormatException(file, $"invalid JSON at line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}: {e.Message}", e); }
        catch (IOException e) { throw new DatasetFormatException(file, $"cannot read: {e.Message}", e); }
    }

    public static JsonElement.ArrayEnumerator Array(JsonDocument doc, string file)
    {
        if (doc.RootElement.ValueKind != JsonValueKind.Array)
            throw new DatasetFormatException(file, $"expected a JSON array of objects at the top level, found {Kind(doc.RootElement)}");
        return doc.RootElement.EnumerateArray();
    }

    public static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object", JsonValueKind.Array => "an array", JsonValueKind.String => "a string",
        JsonValueKind.Number => $"the number {e.GetRawText()}", JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null", _ => e.ValueKind.ToString(),
    };

    public static JsonElement Field(JsonElement item, string file, string where, string name)
    {
        if (item.ValueKind != JsonValueKind.Object) throw new DatasetFormatException(file, $"{where}: expected an object, found {Kind(item)}");
        if (!item.TryGetProperty(name, out var v)) throw new DatasetFormatException(file, $"{where}: missing field '{name}'");
        return v;
    }

    public static bool Has(JsonElement item, string name) => item.ValueKind == JsonValueKind.Object && item.TryGetProperty(name, out _);

    public static long Long(JsonElement item, string file, string where, string name) => AsLong(Field(item, file, where, name), file, $"{where}: field '{name}'");

    public static long AsLong(JsonElement v, string file, string what)
    {
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long x)) return x;
        throw new DatasetFormatException(file, $"{what} must be an integer, found {Kind(v)}");
    }

    public static string String(JsonElement item, string file, string where, string name)
    {
        var v = Field(item, file, where, name);
        if (v.ValueKind != JsonValueKind.String) throw new DatasetFormatException(file, $"{where}: field '{name}' must be a string, found {Kind(v)}");
        return v.GetString()!;
    }

    public static bool Bool(JsonElement item, string file, string where, string name)
    {
        var v = Field(item, file, where, name);
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        throw new DatasetFormatException(file, $"{where}: field '{name}' must be a boolean, found {Kind(v)}");
    }

    public static List<string> Strings(JsonElement item, string file, string where, string name)
    {
        var v = Field(item, file, where, name);
        if (v.ValueKind != JsonValueKind.Array) throw new DatasetFormatException(file, $"{where}: field '{name}' must be a list of strings, found {Kind(v)}");
        var r = new List<string>();
        int i = 0;
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw new DatasetFormatException(file, $"{where}: field '{name}'[{i}] must be a string, found {Kind(e)}");
            r.Add(e.GetString()!); i++;
        }
        return r;
    }

    public static List<long> Longs(JsonElement item, string file, string where, string name)
    {
        var v = Field(item, file, where, name);
        if (v.ValueKind != JsonValueKind.Array) throw new DatasetFormatException(file, $"{where}: field '{name}' must be a list of integers, found {Kind(v)}");
        var r = new List<long>();
        int i = 0;
        foreach (var e in v.EnumerateArray()) { r.Add(AsLong(e, file, $"{where}: field '{name}'[{i}]")); i++; }
        return r;
    }
}
