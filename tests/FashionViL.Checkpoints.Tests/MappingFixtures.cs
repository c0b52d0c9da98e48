using System.Text.Json;

namespace FashionViL.Checkpoints.Tests;

/// <summary>tests/fixtures/mapping (tools/fixtures/make_mapping_fixtures.py): small files with real key layouts and
/// expected.json, the hand-stated source → target key table written by the fixture script.</summary>
internal static class MappingFixtures
{
    public static string Dir
    {
        get
        {
            for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, "tests", "fixtures", "mapping");
                if (Directory.Exists(p)) return p;
            }
            throw new DirectoryNotFoundException($"tests/fixtures/mapping not found above {TestContext.CurrentContext.TestDirectory}");
        }
    }

    public static string F(string name) => Path.Combine(Dir, name);

    /// <summary>source key → target key (null = dropped) for <paramref name="column"/> ("ours", "mmf" or "finetune").</summary>
    public static Dictionary<string, string?> Expected(string file, string column)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(F("expected.json")));
        var d = new Dictionary<string, string?>();
        foreach (var p in doc.RootElement.GetProperty(file).EnumerateObject())
        {
            var v = p.Value.GetProperty(column);
            d[p.Name] = v.ValueKind == JsonValueKind.Null ? null : v.GetString();
        }
        return d;
    }

    public static List<string> ExpectedList(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(F("expected.json")));
        return doc.RootElement.GetProperty(name).EnumerateArray().Select(e => e.GetString()!).ToList();
    }
}
