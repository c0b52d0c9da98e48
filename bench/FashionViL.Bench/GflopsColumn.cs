using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace FashionViL.Bench;

/// <summary>A benchmark class that knows how many floating-point operations one call of a benchmark case performs.</summary>
public interface IFlopCount
{
    /// <summary>Floating-point operations of one invocation of <paramref name="benchmarkCase"/>; null when unknown.</summary>
    static abstract double? Flops(BenchmarkCase benchmarkCase);

    /// <summary>How the flop count is computed, for the column legend (e.g. "2·N³").</summary>
    static abstract string FlopsFormula { get; }
}

/// <summary>
/// Adds a GFLOP/s column (flops of <typeparamref name="T"/>'s case / median time) next to the median.
/// Use as <c>[Config(typeof(GflopsConfig&lt;MyBenchmarks&gt;))]</c>; job settings go on the class as attributes.
/// </summary>
public sealed class GflopsConfig<T> : ManualConfig where T : IFlopCount
{
    public GflopsConfig() => AddColumn(new GflopsColumn(T.Flops, T.FlopsFormula), StatisticColumn.Median);
}

/// <summary>GFLOP/s from the median time and a flop count taken from the benchmark case.</summary>
public sealed class GflopsColumn(Func<BenchmarkCase, double?> flops, string formula) : IColumn
{
    public string Id => "GFLOPs";
    public string ColumnName => "GFLOP/s (median)";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"{formula} / median time, in 10⁹ floating-point operations per second";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        if (stats is null || flops(benchmarkCase) is not double f) return "-";
        return (f / (stats.Median * 1e-9) / 1e9).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>The value of parameter <paramref name="name"/> of a benchmark case, when it has type <typeparamref name="TValue"/>.</summary>
    public static TValue? Param<TValue>(BenchmarkCase benchmarkCase, string name) =>
        benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == name)?.Value is TValue v ? v : default;
}
