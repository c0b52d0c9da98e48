using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using FashionViL.Kernels.Cpu;

namespace FashionViL.Bench;

/// <summary>Square float32 C = A·B through IBackend.MatMul on 2 threads.</summary>
[Config(typeof(GflopsConfig))]
public class SgemmBenchmarks
{
    [Params(256, 1024, 2048)]
    public int N;

    private Tensor _a = null!, _b = null!, _c = null!;

    [GlobalSetup]
    public void Setup()
    {
        Parallelism.MaxThreads = 2;
        var g = new Generator(7);
        _a = g.Uniform([1, N, N], -1, 1, DType.Float32);
        _b = g.Uniform([1, N, N], -1, 1, DType.Float32);
        _c = Tensor.Empty([1, N, N], DType.Float32);
    }

    [GlobalCleanup]
    public void Cleanup() { _a.Dispose(); _b.Dispose(); _c.Dispose(); }

    [Benchmark(Description = "Sgemm")]
    public void Sgemm() => CpuBackend.Instance.MatMul(_a, _b, _c, false, false);

    /// <summary>Floating-point operations of one call: 2·N³.</summary>
    public static double Flops(int n) => 2.0 * n * n * n;

    /// <summary>Stopwatch median over repeats (warm-up first), printed as GFLOP/s.</summary>
    public static void Quick(int n, int threads)
    {
        Parallelism.MaxThreads = threads;
        var b = new SgemmBenchmarks { N = n };
        b.Setup();
        int reps = n <= 256 ? 200 : n <= 1024 ? 15 : 5;
        for (int i = 0; i < 3; i++) b.Sgemm();
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            b.Sgemm();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        Array.Sort(times);
        double med = times[reps / 2];
        Console.WriteLine($"sgemm {n}^3 threads={threads}: median {med * 1e3:F3} ms, {Flops(n) / med / 1e9:F1} GFLOP/s (best {Flops(n) / times[0] / 1e9:F1})");
        b.Cleanup();
    }
}

/// <summary>Adds a GFLOP/s column computed from the median time and the benchmark's N parameter (2·N³ flops).</summary>
public sealed class GflopsConfig : ManualConfig
{
    public GflopsConfig() => AddColumn(new GflopsColumn());
}

public sealed class GflopsColumn : IColumn
{
    public string Id => "GFLOPs";
    public string ColumnName => "GFLOP/s (median)";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "2·N³ / median time, in 10⁹ floating-point operations per second";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        var stats = report?.ResultStatistics;
        var n = benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "N")?.Value;
        if (stats is null || n is not int size) return "-";
        double seconds = stats.Median * 1e-9;
        return (SgemmBenchmarks.Flops(size) / seconds / 1e9).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
    }
}
