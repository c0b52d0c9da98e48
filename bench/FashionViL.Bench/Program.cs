using System.Runtime.Intrinsics;
using BenchmarkDotNet.Running;
using FashionViL.Kernels.Cpu;

namespace FashionViL.Bench;

/// <summary>
/// Entry point. <c>-- --filter '*Sgemm*'</c> runs BenchmarkDotNet; <c>-- quick [sizes…]</c> runs a short
/// Stopwatch loop over SGEMM (median of repeats, GFLOP/s) for tuning without the full harness, and
/// <c>-- quick-conv</c> the same over the ResNet-50 conv layers of <see cref="ConvBenchmarks"/>.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine($"Vector512.IsHardwareAccelerated={Vector512.IsHardwareAccelerated} Vector256.IsHardwareAccelerated={Vector256.IsHardwareAccelerated} "
            + $"Fma={System.Runtime.Intrinsics.X86.Fma.IsSupported} cores={Environment.ProcessorCount}");
        if (args.Length > 0 && args[0] == "lab") return KernelLab.Run(args[1..]);   // GPU kernel lab (ILGPU), see bench/README.md
        if (args.Length > 0 && args[0] == "quick")
        {
            var sizes = args.Length > 1 ? args[1..].Select(int.Parse).ToArray() : [256, 1024, 2048];
            int threads = int.TryParse(Environment.GetEnvironmentVariable("FVL_THREADS"), out var t) ? t : 2;
            foreach (var n in sizes) SgemmBenchmarks.Quick(n, threads);
            return 0;
        }
        if (args.Length > 0 && args[0] == "quick-conv")
        {
            ConvBenchmarks.Quick();
            return 0;
        }
        if (args.Length > 0 && args[0] == "serve")
        {
            // Line protocol for tools/bench/compare_sgemm.py: each input line is a size N; the reply is the median seconds.
            Parallelism.MaxThreads = int.TryParse(Environment.GetEnvironmentVariable("FVL_THREADS"), out var st) ? st : 2;
            Console.WriteLine("ready");
            string? line;
            while ((line = Console.ReadLine()) is not null && line.Length > 0)
                Console.WriteLine(SgemmBenchmarks.MedianSeconds(int.Parse(line)).ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            return 0;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
