using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using FashionViL.Kernels.Cpu;

namespace FashionViL.Bench;

/// <summary>Square float32 C = A·B through IBackend.MatMul on 2 threads.</summary>
[Config(typeof(GflopsConfig<SgemmBenchmarks>))]
// Fewer, fixed iterations than the default job: each 2048³ call is ~0.1 s, and the default runs ~8 minutes.
[SimpleJob(warmupCount: 3, iterationCount: 15, id: "Gemm15")]
public class SgemmBenchmarks : IFlopCount
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
    public void Sgemm() => CpuBackend.Instance.MatMul(_a, _b, _c, TransA, TransB);

    /// <summary>Transpose flags for the quick mode (FVL_TRANS=NT etc.); the BenchmarkDotNet run uses NN.</summary>
    internal static bool TransA, TransB;

    /// <summary>Floating-point operations of one call: 2·N³.</summary>
    public static double Flops(int n) => 2.0 * n * n * n;

    public static double? Flops(BenchmarkCase c) => GflopsColumn.Param<int?>(c, nameof(N)) is int n ? Flops(n) : null;

    public static string FlopsFormula => "2·N³";

    /// <summary>Median seconds of one N³ SGEMM over about half a second of repeats (after warm-up), on the current thread count.</summary>
    public static double MedianSeconds(int n)
    {
        var b = new SgemmBenchmarks { N = n };
        int threads = Parallelism.MaxThreads;
        b.Setup();
        Parallelism.MaxThreads = threads;
        try
        {
            for (int i = 0; i < 3; i++) b.Sgemm();
            var times = new List<double>();
            long start = Stopwatch.GetTimestamp();
            while (times.Count < 5 || (Stopwatch.GetElapsedTime(start).TotalSeconds < 0.5 && times.Count < 2000))
            {
                long t0 = Stopwatch.GetTimestamp();
                b.Sgemm();
                times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
            times.Sort();
            return times[times.Count / 2];
        }
        finally { b.Cleanup(); }
    }

    /// <summary>Stopwatch median over repeats (warm-up first), printed as GFLOP/s.</summary>
    public static void Quick(int n, int threads)
    {
        Parallelism.MaxThreads = threads;
        var b = new SgemmBenchmarks { N = n };
        b.Setup();
        Parallelism.MaxThreads = threads;
        var trans = Environment.GetEnvironmentVariable("FVL_TRANS") ?? "NN";
        TransA = trans[0] == 'T'; TransB = trans[1] == 'T';
        int reps = n <= 256 ? 200 : n <= 1024 ? 15 : 5;
        for (int i = 0; i < 3; i++) b.Sgemm();
        var times = new double[reps];
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            b.Sgemm();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        Array.Sort(times);
        double med = times[reps / 2];
        Console.WriteLine($"sgemm {trans} {n}^3 threads={threads}: median {med * 1e3:F3} ms, {Flops(n) / med / 1e9:F1} GFLOP/s (best {Flops(n) / times[0] / 1e9:F1}); {Flops(n) * reps / cpu / 1e9:F1} GFLOP per CPU-second");
        b.Cleanup();
    }
}
