using System.Globalization;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace FashionViL.Config;

/// <summary>A configuration error: names the file or the key that is wrong and, where it can, the nearest valid key.</summary>
public sealed class ConfigException(string message) : Exception(message);

/// <summary>
/// An MMF-style configuration (spec §6; BrandonHanx/mmf configs): the embedded schema <c>defaults.yaml</c>, then a
/// user file (with <c>includes:</c> merged first), then command-line overrides <c>a.b.c=value</c>. Mappings merge
/// key by key, lists and scalars replace. Every key must exist in the schema; <c>${a.b}</c> inside a string is
/// replaced by that key's value. Values are read with typed getters whose errors name the key.
/// </summary>
public sealed partial class FvConfig
{
    private readonly Dictionary<string, object?> _root;

    private FvConfig(Dictionary<string, object?> root) => _root = root;

    /// <summary>The schema and defaults (every valid key).</summary>
    public static FvConfig Defaults() => new(LoadSchema());

    /// <summary>Loads <paramref name="path"/> (may be null: defaults only) and applies <paramref name="overrides"/> ("a.b=value").</summary>
    public static FvConfig Load(string? path, IEnumerable<string>? overrides = null)
    {
        var schema = LoadSchema();
        var root = DeepCopy(schema);
        if (path is not null)
        {
            var user = LoadWithIncludes(path, new HashSet<string>(StringComparer.Ordinal));
            Validate(user, schema, "", path);
            Merge(root, user);
        }
        foreach (var o in overrides ?? [])
            ApplyOverride(root, schema, o);
        var config = new FvConfig(root);
        config.Interpolate();
        return config;
    }

    /// <summary>Parses a YAML text as a config (for tests and for configs stored inside checkpoints).</summary>
    public static FvConfig FromYaml(string yaml, string sourceName = "<text>", IEnumerable<string>? overrides = null)
    {
        var schema = LoadSchema();
        var root = DeepCopy(schema);
        var user = ParseMapping(yaml, sourceName);
        if (user.Remove("includes", out var inc) && inc is List<object?> { Count: > 0 })
            throw new ConfigException($"{sourceName}: 'includes' is only allowed in config files");
        Validate(user, schema, "", sourceName);
        Merge(root, user);
        foreach (var o in overrides ?? []) ApplyOverride(root, schema, o);
        var config = new FvConfig(root);
        config.Interpolate();
        return config;
    }

    // ----------------------------------------------------------------------------------------------------------
    // typed access

    /// <summary>True when the key exists and is not null.</summary>
    public bool Has(string key) => TryGet(key, out var v) && v is not null;

    public object? GetRaw(string key) =>
        TryGet(key, out var v) ? v : throw new ConfigException($"config key '{key}' does not exist{Suggest(key, AllKeys(LoadSchema(), ""))}");

    public string GetString(string key) =>
        GetRaw(key) switch
        {
            string s => s,
            null => throw new ConfigException($"config key '{key}' is null but a value is required"),
            _ => throw new ConfigException($"config key '{key}' must be a single value, not a list or mapping"),
        };

    public string? GetStringOrNull(string key) => GetRaw(key) is null ? null : GetString(key);

    public int GetInt(string key)
    {
        var s = GetString(key);
        if (long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) && l is >= int.MinValue and <= int.MaxValue) return (int)l;
        if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
        throw new ConfigException($"config key '{key}' = '{s}' is not an integer");
    }

    public double GetDouble(string key)
    {
        var s = GetString(key);
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d)
            ? d : throw new ConfigException($"config key '{key}' = '{s}' is not a finite number");
    }

    public bool GetBool(string key)
    {
        var s = GetString(key);
        return s.ToLowerInvariant() switch
        {
            "true" or "yes" or "on" => true,
            "false" or "no" or "off" => false,
            _ => throw new ConfigException($"config key '{key}' = '{s}' is not true/false"),
        };
    }

    public IReadOnlyList<string> GetStringList(string key) =>
        GetRaw(key) switch
        {
            List<object?> list => list.Select((v, i) => v as string ?? throw new ConfigException($"config key '{key}[{i}]' must be a single value")).ToList(),
            null => [],
            _ => throw new ConfigException($"config key '{key}' must be a list, e.g. {key}=[a,b]"),
        };

    public IReadOnlyList<int> GetIntList(string key) => GetStringList(key).Select((s, i) =>
        int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new ConfigException($"config key '{key}[{i}]' = '{s}' is not an integer")).ToList();

    public IReadOnlyList<double> GetDoubleList(string key) => GetStringList(key).Select((s, i) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v) ? v
            : throw new ConfigException($"config key '{key}[{i}]' = '{s}' is not a finite number")).ToList();

    /// <summary>Entries of a list of mappings (e.g. <c>evaluation.metrics</c>), each as a dictionary of scalars.</summary>
    /// <summary>An open map of single values (e.g. <c>checkpoint.pretrained_state_mapping</c>).</summary>
    public IReadOnlyDictionary<string, string?> GetStringMap(string key) =>
        GetRaw(key) switch
        {
            Dictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => kv.Value switch
            {
                null => null,
                string v => v,
                _ => throw new ConfigException($"config key '{key}.{kv.Key}' must be a single value"),
            }, StringComparer.Ordinal),
            null => new Dictionary<string, string?>(),
            _ => throw new ConfigException($"config key '{key}' must be a mapping"),
        };

    public IReadOnlyList<IReadOnlyDictionary<string, object?>> GetMappingList(string key) =>
        GetRaw(key) switch
        {
            List<object?> list => list.Select((v, i) => v as Dictionary<string, object?> as IReadOnlyDictionary<string, object?>
                ?? throw new ConfigException($"config key '{key}[{i}]' must be a mapping")).ToList(),
            null => [],
            _ => throw new ConfigException($"config key '{key}' must be a list"),
        };

    /// <summary>Every leaf key and its value as text, sorted (for logs and the checkpoint).</summary>
    public IEnumerable<(string Key, string Value)> Flatten() => AllLeaves(_root, "");

    /// <summary>The full resolved configuration as YAML (written next to checkpoints; <see cref="FromYaml"/> reads it back).</summary>
    public string ToYaml()
    {
        var sb = new StringBuilder();
        WriteYaml(sb, _root, 0);
        return sb.ToString();
    }

    // ----------------------------------------------------------------------------------------------------------
    // loading

    /// <summary>The schema: <c>Config/defaults.yaml</c> merged with every <c>Config/schema/*.yaml</c> (one per downstream
    /// task, so that each task declares its own keys), all embedded in the assembly.</summary>
    private static Dictionary<string, object?> LoadSchema()
    {
        var asm = typeof(FvConfig).Assembly;
        var names = asm.GetManifestResourceNames().Where(n => n.StartsWith("FashionViL.Config.", StringComparison.Ordinal) && n.EndsWith(".yaml", StringComparison.Ordinal))
            .OrderBy(n => n.EndsWith("Config.defaults.yaml", StringComparison.Ordinal) ? 0 : 1).ThenBy(n => n, StringComparer.Ordinal).ToList();
        var root = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var name in names)
        {
            using var stream = asm.GetManifestResourceStream(name)!;
            using var reader = new StreamReader(stream);
            var part = ParseMapping(reader.ReadToEnd(), name);
            part.Remove("includes");
            Merge(root, part);
        }
        return root;
    }

    private static Dictionary<string, object?> LoadWithIncludes(string path, HashSet<string> stack)
    {
        var full = Path.GetFullPath(path);
        if (!File.Exists(full)) throw new ConfigException($"config file not found: {path}");
        if (!stack.Add(full)) throw new ConfigException($"{path}: includes form a cycle");
        string text;
        try { text = File.ReadAllText(full); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ConfigException($"cannot read config file {path}: {e.Message}"); }
        var mine = ParseMapping(text, path);
        var merged = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (mine.Remove("includes", out var inc) && inc is not null)
        {
            if (inc is not List<object?> list) throw new ConfigException($"{path}: 'includes' must be a list of files");
            foreach (var item in list)
            {
                if (item is not string rel) throw new ConfigException($"{path}: each entry of 'includes' must be a file name");
                var candidates = new[] { Path.Combine(Path.GetDirectoryName(full)!, rel), Path.GetFullPath(rel) };
                var found = candidates.FirstOrDefault(File.Exists)
                    ?? throw new ConfigException($"{path}: included file '{rel}' not found (looked in {string.Join(" and ", candidates.Distinct())})");
                Merge(merged, LoadWithIncludes(found, stack));
            }
        }
        stack.Remove(full);
        Merge(merged, mine);
        return merged;
    }

    private static Dictionary<string, object?> ParseMapping(string text, string source)
    {
        var stream = new YamlStream();
        try { stream.Load(new StringReader(text)); }
        catch (YamlException e) { throw new ConfigException($"{source}: invalid YAML at line {e.Start.Line}, column {e.Start.Column}: {e.Message}"); }
        if (stream.Documents.Count == 0) return new(StringComparer.Ordinal);
        var node = Convert(stream.Documents[0].RootNode, source, "");
        return node switch
        {
            Dictionary<string, object?> d => d,
            null => new(StringComparer.Ordinal),
            _ => throw new ConfigException($"{source}: the top level must be a mapping of keys"),
        };
    }

    private static object? Convert(YamlNode node, string source, string path)
    {
        switch (node)
        {
            case YamlMappingNode map:
                var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var (k, v) in map.Children)
                {
                    var key = (k as YamlScalarNode)?.Value ?? throw new ConfigException($"{source}: keys must be plain names (at '{path}')");
                    var full = path.Length == 0 ? key : path + "." + key;
                    if (!d.TryAdd(key, Convert(v, source, full))) throw new ConfigException($"{source}: key '{full}' appears twice");
                }
                return d;
            case YamlSequenceNode seq:
                return seq.Children.Select((c, i) => Convert(c, source, $"{path}[{i}]")).ToList();
            case YamlScalarNode s:
                if (s.Style == ScalarStyle.Plain && (s.Value is null or "" or "~" or "null" or "Null" or "NULL")) return null;
                return s.Value;
            default:
                throw new ConfigException($"{source}: unsupported YAML node at '{path}'");
        }
    }

    private static void Merge(Dictionary<string, object?> into, Dictionary<string, object?> from)
    {
        foreach (var (k, v) in from)
        {
            if (v is Dictionary<string, object?> fd && into.TryGetValue(k, out var existing) && existing is Dictionary<string, object?> ed)
                Merge(ed, fd);
            else
                into[k] = DeepCopy(v);
        }
    }

    private static T DeepCopy<T>(T value) => (T)DeepCopyObj(value)!;

    private static object? DeepCopyObj(object? value) => value switch
    {
        Dictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => DeepCopyObj(kv.Value), StringComparer.Ordinal),
        List<object?> l => l.Select(DeepCopyObj).ToList(),
        _ => value,
    };

    private static void Validate(Dictionary<string, object?> user, Dictionary<string, object?> schema, string prefix, string source,
        Dictionary<string, object?>? schemaRoot = null)
    {
        foreach (var (k, v) in user)
        {
            var full = prefix.Length == 0 ? k : prefix + "." + k;
            if (!schema.TryGetValue(k, out var s))
                throw new ConfigException($"{source}: unknown config key '{full}'{Suggest(full, AllKeys(schemaRoot ?? schema, ""))}");
            if (s is Dictionary<string, object?> sd)
            {
                if (sd.Count == 0) continue;   // an empty mapping in the schema is an open map: any keys
                if (v is Dictionary<string, object?> ud) Validate(ud, sd, full, source, schemaRoot ?? schema);
                else if (v is not null) throw new ConfigException($"{source}: config key '{full}' is a section (keys: {string.Join(", ", sd.Keys)}), not a value");
            }
            else if (v is Dictionary<string, object?> && s is not null)
                throw new ConfigException($"{source}: config key '{full}' takes a value, not a section");
        }
    }

    private static void ApplyOverride(Dictionary<string, object?> root, Dictionary<string, object?> schema, string text)
    {
        var eq = text.IndexOf('=');
        if (eq <= 0) throw new ConfigException($"override '{text}' must look like key.path=value");
        var key = text[..eq].Trim();
        var valueText = text[(eq + 1)..];
        var parts = key.Split('.');
        object? s = schema;
        foreach (var p in parts)
        {
            if (s is Dictionary<string, object?> { Count: 0 }) { s = null; break; }   // inside an open map: any key
            if (s is not Dictionary<string, object?> sd || !sd.TryGetValue(p, out s))
                throw new ConfigException($"override '{text}': unknown config key '{key}'{Suggest(key, AllKeys(schema, ""))}");
        }
        object? value;
        if (valueText.Length == 0) value = null;
        else
        {
            // The value is YAML (numbers, null, [lists], {maps}); text that YAML cannot read is taken literally.
            try { value = ParseMapping("v: " + valueText, $"override '{text}'")["v"]; }
            catch (ConfigException) { value = valueText; }
        }
        if (s is Dictionary<string, object?> && value is not (Dictionary<string, object?> or null))
            throw new ConfigException($"override '{text}': '{key}' is a section, not a value");
        var node = root;
        for (int i = 0; i < parts.Length - 1; i++)
        {
            if (node[parts[i]] is not Dictionary<string, object?> next) { next = new(StringComparer.Ordinal); node[parts[i]] = next; }
            node = next;
        }
        if (value is Dictionary<string, object?> vd && node.TryGetValue(parts[^1], out var cur) && cur is Dictionary<string, object?> cd)
        {
            Validate(vd, (Dictionary<string, object?>)s!, key, $"override '{text}'", schema);
            Merge(cd, vd);
        }
        else node[parts[^1]] = value;
    }

    private bool TryGet(string key, out object? value)
    {
        object? node = _root;
        foreach (var p in key.Split('.'))
        {
            if (node is not Dictionary<string, object?> d || !d.TryGetValue(p, out node)) { value = null; return false; }
        }
        value = node;
        return true;
    }

    // ----------------------------------------------------------------------------------------------------------
    // interpolation

    [GeneratedRegex(@"\$\{([A-Za-z0-9_.]+)\}")]
    private static partial Regex Reference();

    private void Interpolate() => InterpolateIn(_root, "");

    // Walks the tree itself (not dotted paths), so open-map keys that contain dots are fine.
    private void InterpolateIn(Dictionary<string, object?> d, string prefix)
    {
        foreach (var k in d.Keys.ToList())
        {
            var full = prefix.Length == 0 ? k : prefix + "." + k;
            switch (d[k])
            {
                case Dictionary<string, object?> sub:
                    InterpolateIn(sub, full);
                    break;
                case List<object?> list:
                    for (int i = 0; i < list.Count; i++)
                        if (list[i] is string item && item.Contains("${", StringComparison.Ordinal))
                            list[i] = Substitute(item, full, new HashSet<string>(StringComparer.Ordinal) { full });
                    break;
                case string s when s.Contains("${", StringComparison.Ordinal):
                    d[k] = Substitute(s, full, new HashSet<string>(StringComparer.Ordinal) { full });
                    break;
            }
        }
    }

    private string? Resolve(string key, HashSet<string> visiting)
    {
        if (!TryGet(key, out var v)) throw new ConfigException($"interpolation refers to unknown key '{key}'");
        if (v is List<object?> list)
        {
            for (int i = 0; i < list.Count; i++)
                if (list[i] is string item && item.Contains("${", StringComparison.Ordinal))
                    list[i] = Substitute(item, key, visiting);
            return null;
        }
        if (v is not string s || !s.Contains("${", StringComparison.Ordinal)) return v as string;
        if (!visiting.Add(key)) throw new ConfigException($"config key '{key}' refers to itself through ${{...}}");
        var resolved = Substitute(s, key, visiting);
        visiting.Remove(key);
        Set(key, resolved);
        return resolved;
    }

    private string Substitute(string s, string key, HashSet<string> visiting) =>
        Reference().Replace(s, m =>
        {
            var target = m.Groups[1].Value;
            if (!TryGet(target, out var tv)) throw new ConfigException($"config key '{key}' refers to unknown key '{target}'{Suggest(target, AllKeys(_root, ""))}");
            if (tv is string ts && ts.Contains("${", StringComparison.Ordinal)) tv = Resolve(target, visiting);
            return tv switch
            {
                string str => str,
                null => throw new ConfigException($"config key '{key}' refers to '{target}', which is null"),
                _ => throw new ConfigException($"config key '{key}' refers to '{target}', which is not a single value"),
            };
        });

    private void Set(string key, object? value)
    {
        var parts = key.Split('.');
        var node = _root;
        for (int i = 0; i < parts.Length - 1; i++) node = (Dictionary<string, object?>)node[parts[i]]!;
        node[parts[^1]] = value;
    }

    // ----------------------------------------------------------------------------------------------------------
    // helpers

    private static IEnumerable<string> AllKeys(Dictionary<string, object?> d, string prefix)
    {
        foreach (var (k, v) in d)
        {
            var full = prefix.Length == 0 ? k : prefix + "." + k;
            yield return full;
            if (v is Dictionary<string, object?> sub)
                foreach (var s in AllKeys(sub, full)) yield return s;
        }
    }

    private static IEnumerable<(string, string)> AllLeaves(Dictionary<string, object?> d, string prefix)
    {
        foreach (var (k, v) in d.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var full = prefix.Length == 0 ? k : prefix + "." + k;
            if (v is Dictionary<string, object?> sub)
                foreach (var leaf in AllLeaves(sub, full)) yield return leaf;
            else yield return (full, FormatValue(v));
        }
    }

    private static string FormatValue(object? v) => v switch
    {
        null => "null",
        string s => s,
        List<object?> l => "[" + string.Join(", ", l.Select(FormatValue)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => kv.Key + ": " + FormatValue(kv.Value))) + "}",
        _ => v.ToString() ?? "",
    };

    /// <summary>" — did you mean 'x'?" for the valid key nearest to <paramref name="wrong"/>, or "" when none is close.</summary>
    internal static string Suggest(string wrong, IEnumerable<string> valid)
    {
        var last = wrong.Split('.')[^1];
        string? best = null;
        double bestScore = double.MaxValue;
        foreach (var v in valid)
        {
            var vLast = v.Split('.')[^1];
            double score = Math.Min(Levenshtein(wrong, v), Levenshtein(last, vLast) + 0.5);
            if (score < bestScore || (score == bestScore && best is not null && v.Length < best.Length)) { bestScore = score; best = v; }
        }
        return best is not null && bestScore <= Math.Max(2, last.Length / 2.0) ? $" — did you mean '{best}'?" : "";
    }

    internal static int Levenshtein(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    private static void WriteYaml(StringBuilder sb, Dictionary<string, object?> d, int indent)
    {
        foreach (var (k, v) in d)
        {
            sb.Append(' ', indent).Append(k).Append(':');
            switch (v)
            {
                case Dictionary<string, object?> sub when sub.Count > 0:
                    sb.Append('\n');
                    WriteYaml(sb, sub, indent + 2);
                    break;
                case Dictionary<string, object?>:
                    sb.Append(" {}\n");
                    break;
                case List<object?> list:
                    sb.Append(' ').Append(YamlFlow(list)).Append('\n');
                    break;
                default:
                    sb.Append(' ').Append(YamlScalar(v)).Append('\n');
                    break;
            }
        }
    }

    private static string YamlFlow(object? v) => v switch
    {
        List<object?> l => "[" + string.Join(", ", l.Select(YamlFlow)) + "]",
        Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => kv.Key + ": " + YamlFlow(kv.Value))) + "}",
        _ => YamlScalar(v),
    };

    private static string YamlScalar(object? v)
    {
        if (v is null) return "null";
        var s = (string)v;
        bool plainSafe = s.Length > 0 && !s.Any(c => ":#{}[],&*!|>'\"%@`".Contains(c) || char.IsWhiteSpace(c))
                         && s is not ("null" or "~" or "Null" or "NULL");
        return plainSafe ? s : "'" + s.Replace("'", "''") + "'";
    }
}
