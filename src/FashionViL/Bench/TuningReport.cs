using System.Globalization;
using System.Text;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Bench;

/// <summary>
/// `fashionvil bench tuning`: what a kernel tuning cache (<see cref="KernelTuner"/>) says — how many shapes of each kind
/// were timed, how many picks differ from the built-in rules, and those picks with the time they save per call.
/// </summary>
public static class TuningReport
{
    /// <summary>The decision a key belongs to: "gemm Fp32", "gemm Tf32", "conv Forward Fp32", …</summary>
    public static string KindOf(string key)
    {
        var parts = key.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int n = parts.Length > 0 && parts[0] == "conv" ? 3 : 2;
        return string.Join(' ', parts.Take(n));
    }

    /// <summary>Milliseconds a pick saves per call against the rule's pick (null when either median is missing).</summary>
    public static double? Gain(TuneEntry e)
        => e.Ms.TryGetValue(e.Rule, out var r) && e.Ms.TryGetValue(e.Choice, out var c) ? r - c : null;

    public static string Format(TuneCache cache, int top = 20)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        var away = cache.Entries.Where(e => e.Value.Rule.Length > 0 && e.Value.Choice != e.Value.Rule).ToList();
        sb.AppendLine(ci, $"kernel tuning cache {cache.Path}");
        sb.AppendLine(ci, $"  device {cache.Device}; written {cache.Written ?? "?"}; {cache.Entries.Count} shapes, {away.Count} picks away from the rule");
        sb.AppendLine("  kind                          shapes  away from rule  picks");
        foreach (var g in cache.Entries.GroupBy(e => KindOf(e.Key)).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var picks = string.Join(", ", g.GroupBy(e => e.Value.Choice).OrderByDescending(p => p.Count()).ThenBy(p => p.Key, StringComparer.Ordinal)
                .Select(p => $"{p.Key} {p.Count()}"));
            sb.AppendLine(ci, $"  {g.Key,-29} {g.Count(),6} {g.Count(e => e.Value.Rule.Length > 0 && e.Value.Choice != e.Value.Rule),15}  {picks}");
        }
        if (away.Count > 0)
        {
            sb.AppendLine(ci, $"  picks away from the rule, largest saving per call first{(away.Count > top ? $" (top {top} of {away.Count})" : "")}:");
            sb.AppendLine("    rule ms   pick ms    saved  rule → pick  shape");
            foreach (var (key, e) in away.OrderByDescending(p => Gain(p.Value) ?? double.NegativeInfinity).ThenBy(p => p.Key, StringComparer.Ordinal).Take(top))
            {
                string Ms(string c) => e.Ms.TryGetValue(c, out var v) ? v.ToString("F4", ci) : "-";
                string saved = Gain(e) is { } gain ? gain.ToString("F4", ci) : "-";
                sb.AppendLine(ci, $"    {Ms(e.Rule),7} {Ms(e.Choice),9} {saved,8}  {e.Rule} → {e.Choice}  {key}");
            }
        }
        return sb.ToString();
    }
}
