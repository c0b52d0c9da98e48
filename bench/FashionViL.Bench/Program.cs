using System.Runtime.Intrinsics;
using BenchmarkDotNet.Running;

namespace FashionViL.Bench;

/// <summary>
/// Entry point. <c>-- --filter '*Sgemm*'</c> runs BenchmarkDotNet; <c>-- quick [sizes…]</c> runs a short
/// Stopwatch loop over SGEMM (median of repeats, GFLOP/s) for tuning without the full harness.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine($"Vector512.IsHardwareAccelerated={Vector512.IsHardwareAccelerated} Vector256.IsHardwareAccelerated={Vector256.IsHardwareAccelerated} "
            + $"Fma={System.Runtime.Intrinsics.X86.Fma.IsSupported} cores={Environment.ProcessorCount}");
        if (args.Length > 0 && args[0] == "quick")
        {
            var sizes = args.Length > 1 ? args[1..].Select(int.Parse).ToArray() : [256, 1024, 2048];
            foreach (var n in sizes) SgemmBenchmarks.Quick(n, threads: 2);
            return 0;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
