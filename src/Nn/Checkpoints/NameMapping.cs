using System.Text.RegularExpressions;
using FashionViL.Tensors;

namespace FashionViL.Nn.Checkpoints;

/// <summary>
/// An ordered list of state-dict key rules. Each key of a source dict runs through the rules in order: a rename
/// rewrites the current name (later rules see the new name), a drop removes the key (with a reason), a tie removes a
/// key after checking that its tensor equals the one that ends up under another (final) name, a keep-only filter drops
/// every key outside its prefixes. Keys no rule touches pass through unchanged. Build one with the fluent methods;
/// apply it with <see cref="CheckpointMapping.Apply"/>. Ready-made mappings: <see cref="CheckpointMappings"/>.
/// </summary>
public sealed class NameMapping
{
    internal abstract record Rule;
    internal sealed record RenameRule(string Description, Func<string, string?> Rewrite) : Rule;
    internal sealed record DropRule(Func<string, bool> Match, string Reason) : Rule;
    internal sealed record TieRule(string Key, string TiedTo) : Rule;
    internal sealed record KeepOnlyRule(string[] Prefixes) : Rule;

    private readonly List<Rule> _rules = [];
    private readonly List<(string Key, string? CopyFrom)> _toInitialise = [];
    private readonly List<string[]> _required = [];

    public NameMapping(string name) { Name = name; }

    /// <summary>A short name for messages and reports (e.g. "hf-bert → ours").</summary>
    public string Name { get; }

    internal IReadOnlyList<Rule> Rules => _rules;

    /// <summary>Target keys the source never has (reported as "to initialise"; CopyFrom names a target key to copy from, if any).</summary>
    public IReadOnlyList<(string Key, string? CopyFrom)> ToInitialise => _toInitialise;

    /// <summary>Groups of alternative source keys; a source must hold at least one key of every group.</summary>
    public IReadOnlyList<string[]> RequiredKeys => _required;

    /// <summary>Names starting with <paramref name="from"/> get <paramref name="to"/> instead of that prefix.</summary>
    public NameMapping RenamePrefix(string from, string to)
    {
        _rules.Add(new RenameRule($"prefix '{from}' → '{to}'", k => k.StartsWith(from, StringComparison.Ordinal) ? to + k[from.Length..] : null));
        return this;
    }

    /// <summary>Names ending with <paramref name="from"/> get <paramref name="to"/> instead of that suffix.</summary>
    public NameMapping RenameSuffix(string from, string to)
    {
        _rules.Add(new RenameRule($"suffix '{from}' → '{to}'", k => k.EndsWith(from, StringComparison.Ordinal) ? k[..^from.Length] + to : null));
        return this;
    }

    /// <summary>Names matching <paramref name="pattern"/> are rewritten with <paramref name="replacement"/> (.NET regex, $1 groups).</summary>
    public NameMapping RenameRegex(string pattern, string replacement)
    {
        var re = new Regex(pattern, RegexOptions.CultureInvariant);
        _rules.Add(new RenameRule($"regex '{pattern}' → '{replacement}'", k => re.IsMatch(k) ? re.Replace(k, replacement) : null));
        return this;
    }

    /// <summary>Drops names (as renamed so far) starting with <paramref name="prefix"/>.</summary>
    public NameMapping DropPrefix(string prefix, string reason)
    {
        _rules.Add(new DropRule(k => k.StartsWith(prefix, StringComparison.Ordinal), reason));
        return this;
    }

    /// <summary>Drops the exact name <paramref name="key"/> (as renamed so far).</summary>
    public NameMapping DropKey(string key, string reason)
    {
        _rules.Add(new DropRule(k => k == key, reason));
        return this;
    }

    /// <summary>Drops names (as renamed so far) matching <paramref name="pattern"/>.</summary>
    public NameMapping DropRegex(string pattern, string reason)
    {
        var re = new Regex(pattern, RegexOptions.CultureInvariant);
        _rules.Add(new DropRule(re.IsMatch, reason));
        return this;
    }

    /// <summary>
    /// The key <paramref name="key"/> (as renamed so far) is a tied copy of the final key <paramref name="tiedTo"/>: it
    /// is dropped after checking that both tensors have the same shape, dtype and values (else the mapping fails).
    /// </summary>
    public NameMapping Tie(string key, string tiedTo)
    {
        _rules.Add(new TieRule(key, tiedTo));
        return this;
    }

    /// <summary>Drops every name (as renamed so far) that starts with none of <paramref name="prefixes"/>.</summary>
    public NameMapping KeepOnly(params string[] prefixes)
    {
        _rules.Add(new KeepOnlyRule(prefixes));
        return this;
    }

    /// <summary>Declares a target key the source does not hold (reported; the caller initialises it, optionally copying <paramref name="copyFrom"/>).</summary>
    public NameMapping Initialise(string key, string? copyFrom = null)
    {
        _toInitialise.Add((key, copyFrom));
        return this;
    }

    /// <summary>The source must hold at least one of <paramref name="alternatives"/> (a signature check: "is this the right kind of file").</summary>
    public NameMapping Require(params string[] alternatives)
    {
        _required.Add(alternatives);
        return this;
    }
}

/// <summary>What a mapping did: renamed keys (source → target), dropped keys with the reason, tied keys checked and
/// dropped, keys passed through unchanged, and target keys the caller must initialise.</summary>
public sealed record MappingReport(
    string Mapping,
    IReadOnlyList<(string From, string To)> Renamed,
    IReadOnlyList<(string Key, string Reason)> Dropped,
    IReadOnlyList<(string Key, string TiedTo)> Tied,
    IReadOnlyList<string> Unchanged,
    IReadOnlyList<(string Key, string? CopyFrom)> ToInitialise)
{
    /// <summary>One line: counts, the drop reasons with counts, and the keys to initialise.</summary>
    public string Summary()
    {
        var parts = new List<string> { $"{Mapping}: {Renamed.Count} renamed, {Unchanged.Count} unchanged, {Dropped.Count} dropped, {Tied.Count} tied" };
        foreach (var g in Dropped.GroupBy(d => d.Reason)) parts.Add($"dropped {g.Count()} ({g.Key})");
        if (Tied.Count > 0) parts.Add("tied: " + string.Join(", ", Tied.Select(t => $"{t.Key} = {t.TiedTo}")));
        if (ToInitialise.Count > 0)
            parts.Add("to initialise: " + string.Join(", ", ToInitialise.Select(t => t.CopyFrom is null ? t.Key : $"{t.Key} (copy of {t.CopyFrom})")));
        return string.Join("; ", parts);
    }

    public override string ToString() => Summary();
}

/// <summary>The renamed state dict (the same tensor objects as the source; dropped ones stay owned by the caller) and the report.</summary>
public sealed record MappingResult(Dictionary<string, Tensor> Tensors, MappingReport Report);

/// <summary>Applies a <see cref="NameMapping"/> to a state dict.</summary>
public static class CheckpointMapping
{
    /// <summary>
    /// Runs every key of <paramref name="dict"/> through <paramref name="mapping"/>. Errors (a missing required key,
    /// two keys mapped to one name, a tie whose tensors differ or whose partner is missing) throw
    /// <see cref="InvalidDataException"/> naming <paramref name="source"/> (the file) and the key. Tensors are not
    /// copied: the result holds the same objects as <paramref name="dict"/>.
    /// </summary>
    public static MappingResult Apply(IReadOnlyDictionary<string, Tensor> dict, NameMapping mapping, string source = "<memory>")
    {
        ArgumentNullException.ThrowIfNull(dict);
        ArgumentNullException.ThrowIfNull(mapping);
        string Err(string msg) => $"checkpoint '{source}' ({mapping.Name}): {msg}";

        foreach (var group in mapping.RequiredKeys)
            if (!group.Any(dict.ContainsKey))
                throw new InvalidDataException(Err(group.Length == 1
                    ? $"has no key '{group[0]}'; it does not look like a {mapping.Name.Split(' ')[0]} checkpoint (first keys: {FirstKeys(dict)})"
                    : $"has none of the keys {string.Join(", ", group.Select(g => $"'{g}'"))}; it does not look like a {mapping.Name.Split(' ')[0]} checkpoint (first keys: {FirstKeys(dict)})"));

        var outDict = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var origin = new Dictionary<string, string>(StringComparer.Ordinal);
        var renamed = new List<(string, string)>();
        var dropped = new List<(string, string)>();
        var unchanged = new List<string>();
        var ties = new List<(string Source, string Key, string TiedTo, Tensor Tensor)>();

        foreach (var (key, tensor) in dict)
        {
            string name = key;
            bool gone = false;
            foreach (var rule in mapping.Rules)
            {
                switch (rule)
                {
                    case NameMapping.RenameRule r:
                        if (r.Rewrite(name) is { } n) name = n;
                        break;
                    case NameMapping.DropRule d when d.Match(name):
                        dropped.Add((key, d.Reason));
                        gone = true;
                        break;
                    case NameMapping.TieRule t when t.Key == name:
                        ties.Add((key, name, t.TiedTo, tensor));
                        gone = true;
                        break;
                    case NameMapping.KeepOnlyRule k when !k.Prefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal)):
                        dropped.Add((key, $"not under {string.Join(" or ", k.Prefixes.Select(p => $"'{p}'"))}"));
                        gone = true;
                        break;
                }
                if (gone) break;
            }
            if (gone) continue;
            if (origin.TryGetValue(name, out var other))
                throw new InvalidDataException(Err($"keys '{other}' and '{key}' both map to '{name}'"));
            origin[name] = key;
            outDict[name] = tensor;
            if (name == key) unchanged.Add(key); else renamed.Add((key, name));
        }

        var tied = new List<(string, string)>();
        foreach (var (src, key, tiedTo, tensor) in ties)
        {
            if (!outDict.TryGetValue(tiedTo, out var partner))
                throw new InvalidDataException(Err($"key '{src}' is tied to '{tiedTo}', which the checkpoint does not hold"));
            if (!SameValues(tensor, partner))
                throw new InvalidDataException(Err($"key '{src}' {tensor.ShapeString} {tensor.DType.Name()} should be tied to (equal) '{origin[tiedTo]}' " +
                                                   $"{partner.ShapeString} {partner.DType.Name()}, but the values differ; our model ties them, so this file cannot be loaded without losing one"));
            tied.Add((src, tiedTo));
        }

        var init = mapping.ToInitialise.Where(t => !outDict.ContainsKey(t.Key)).ToList();
        return new MappingResult(outDict, new MappingReport(mapping.Name, renamed, dropped, tied, unchanged, init));
    }

    /// <summary>
    /// For every "to initialise" entry of <paramref name="report"/> that names a key to copy from (e.g. the visual
    /// position / token-type tables of FashionViL, spec §1.4), adds an independent copy of that tensor under the new
    /// key (the caller owns it). Entries without a source (e.g. the projection) are left to the model's own init.
    /// Returns the keys added.
    /// </summary>
    public static IReadOnlyList<string> AddCopies(Dictionary<string, Tensor> tensors, MappingReport report)
    {
        var added = new List<string>();
        foreach (var (key, from) in report.ToInitialise)
        {
            if (from is null || tensors.ContainsKey(key)) continue;
            if (!tensors.TryGetValue(from, out var src))
                throw new KeyNotFoundException($"checkpoint ({report.Mapping}): '{key}' is to be copied from '{from}', which the mapped dict does not hold");
            tensors[key] = src.To(src.DType);
            added.Add(key);
        }
        return added;
    }

    private static string FirstKeys(IReadOnlyDictionary<string, Tensor> dict)
    {
        var keys = dict.Keys.Take(4).Select(k => $"'{k}'").ToList();
        return keys.Count == 0 ? "none, the dict is empty" : string.Join(", ", keys) + (dict.Count > 4 ? ", ..." : "");
    }

    /// <summary>Same shape, dtype and bytes (bitwise; tied tensors are one tensor in the writer).</summary>
    internal static unsafe bool SameValues(Tensor a, Tensor b)
    {
        if (ReferenceEquals(a, b)) return true;
        if (a.DType != b.DType || !a.Sizes.SequenceEqual(b.Sizes)) return false;
        using var ha = a.Device.IsCpu ? a.ContiguousRaw() : a.To(Device.Cpu);
        using var hb = b.Device.IsCpu ? b.ContiguousRaw() : b.To(Device.Cpu);
        long bytes = (long)a.Numel * a.DType.Size();
        return new ReadOnlySpan<byte>((void*)ha.DataPtrRaw(), checked((int)bytes)).SequenceEqual(new ReadOnlySpan<byte>((void*)hb.DataPtrRaw(), (int)bytes));
    }
}
