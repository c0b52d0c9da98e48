using FashionViL.Tensors;

namespace FashionViL.Nn.Optim;

/// <summary>
/// One optimizer parameter group: its parameters (with their names), the group's base lr
/// (= optimizer base lr × <see cref="LrMultiplier"/>), the current lr set by a schedule, and its weight decay.
/// </summary>
public sealed class ParamGroup
{
    public string Name { get; }
    public IReadOnlyList<string> Names { get; }
    public IReadOnlyList<Tensor> Params { get; }
    public double LrMultiplier { get; }
    /// <summary>The lr a schedule factor multiplies (base lr × multiplier).</summary>
    public double BaseLr { get; set; }
    /// <summary>The lr used by the next step.</summary>
    public double Lr { get; set; }
    public double WeightDecay { get; set; }

    public ParamGroup(string name, IEnumerable<(string Name, Tensor Param)> parameters, double baseLr, double weightDecay, double lrMultiplier = 1.0)
    {
        var list = parameters.ToList();
        Name = name;
        Names = list.Select(p => p.Name).ToArray();
        Params = list.Select(p => p.Param).ToArray();
        LrMultiplier = lrMultiplier;
        BaseLr = baseLr * lrMultiplier;
        Lr = BaseLr;
        WeightDecay = weightDecay;
    }
}

/// <summary>
/// A grouping rule: parameters whose name matches go to the group <see cref="Group"/> with the given lr multiplier
/// and weight decay (null = the optimizer's default). Rules are tried in order; the first match wins.
/// </summary>
public sealed record ParamRule(string Group, Func<string, bool> Match, double LrMultiplier = 1.0, double? WeightDecay = null)
{
    /// <summary>Matches names containing any of the substrings.</summary>
    public static ParamRule Contains(string group, double lrMultiplier, double? weightDecay, params string[] substrings)
        => new(group, n => substrings.Any(s => n.Contains(s, StringComparison.Ordinal)), lrMultiplier, weightDecay);

    /// <summary>Matches names starting with any of the prefixes.</summary>
    public static ParamRule Prefix(string group, double lrMultiplier, double? weightDecay, params string[] prefixes)
        => new(group, n => prefixes.Any(s => n.StartsWith(s, StringComparison.Ordinal)), lrMultiplier, weightDecay);
}

public static class ParamGroups
{
    /// <summary>The substrings of spec §6 that get weight decay 0 (BERT side).</summary>
    public static readonly string[] NoDecay = ["bias", "LayerNorm.bias", "LayerNorm.weight"];

    /// <summary>
    /// Splits named parameters into groups by <paramref name="rules"/> (first match wins); unmatched parameters go to
    /// the group <paramref name="defaultGroup"/> (multiplier 1, weight decay <paramref name="weightDecay"/>).
    /// Every parameter lands in exactly one group; a repeated name or the same tensor under two names is an error.
    /// Groups come out in rule order (default group last); empty groups are dropped.
    /// </summary>
    public static List<ParamGroup> Build(IEnumerable<(string Name, Tensor Param)> named, double baseLr, double weightDecay,
        IReadOnlyList<ParamRule> rules, string defaultGroup = "default")
    {
        var seenNames = new Dictionary<string, int>();
        var seenTensors = new Dictionary<Tensor, string>(ReferenceEqualityComparer.Instance);
        var dups = new List<string>();
        var buckets = new List<(string Name, Tensor Param)>[rules.Count + 1];
        for (int i = 0; i < buckets.Length; i++) buckets[i] = [];
        foreach (var (name, p) in named)
        {
            if (!seenNames.TryAdd(name, 1)) { dups.Add($"name '{name}' appears twice"); continue; }
            if (!seenTensors.TryAdd(p, name)) { dups.Add($"'{name}' is the same tensor as '{seenTensors[p]}'"); continue; }
            int r = 0;
            while (r < rules.Count && !rules[r].Match(name)) r++;
            buckets[r].Add((name, p));
        }
        if (dups.Count > 0) throw new ArgumentException($"param groups: every parameter must land in exactly one group; duplicates: {string.Join("; ", dups)}");
        var groups = new List<ParamGroup>();
        var byName = new Dictionary<string, int>();
        for (int r = 0; r <= rules.Count; r++)
        {
            if (buckets[r].Count == 0) continue;
            string g = r < rules.Count ? rules[r].Group : defaultGroup;
            double mult = r < rules.Count ? rules[r].LrMultiplier : 1.0;
            double wd = r < rules.Count ? rules[r].WeightDecay ?? weightDecay : weightDecay;
            if (byName.ContainsKey(g)) throw new ArgumentException($"param groups: group name '{g}' is used by two rules");
            byName[g] = groups.Count;
            groups.Add(new ParamGroup(g, buckets[r], baseLr, wd, mult));
        }
        return groups;
    }
}
