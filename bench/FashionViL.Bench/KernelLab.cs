using System.Globalization;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Bench;

/// <summary>
/// GPU kernel lab (issue 3): every version of a kernel, checked against the CPU backend and timed (median of warm runs,
/// each ended by Synchronize), against the measured ceilings in shared/docs/gpu.md.
/// <c>lab gemm|rows|attention|conv|all [--device cpu|cuda] [--size N] [--reps R]</c>.
/// </summary>
public static class KernelLab
{
    /// <summary>cuBLAS SGEMM 4096³ fp32, TF32 off, through PyTorch on the H100 (gpu.md, 2026-11-27).</summary>
    private const double CublasFp32TflopsH100 = 51.5;

    public static int Run(string[] args)
    {
        string what = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal) ? args[0] : "gemm";
        string device = Option(args, "--device") ?? "cuda";
        if (what == "rows") return Lab.RowLab.Run(device);          // layernorm, softmax, cross-entropy
        if (what == "attention") return Lab.AttentionLab.Run(device); // fused attention fwd/bwd, dropout
        if (what == "conv") return Lab.ConvLab.Run(device);            // implicit-GEMM conv fwd/bwd, pooling
        if (what == "all")
        {
            int rc = Run(["gemm", .. args.Where(a => a != "all")]);
            rc = Math.Max(rc, Lab.RowLab.Run(device));
            rc = Math.Max(rc, Lab.AttentionLab.Run(device));
            return Math.Max(rc, Lab.ConvLab.Run(device));
        }
        if (what != "gemm")
        {
            Console.Error.WriteLine($"lab: unknown kernel family '{what}' (have: gemm, rows, attention, conv, all)");
            return 2;
        }
        bool cuda = device is "cuda" or "gpu";   // Lab.LabHarness.Run rejects any kind but cuda/gpu/cpu
        int size = int.Parse(Option(args, "--size") ?? (cuda ? "4096" : "128"), CultureInfo.InvariantCulture);
        int reps = int.Parse(Option(args, "--reps") ?? (cuda ? "20" : "5"), CultureInfo.InvariantCulture);

        return Lab.LabHarness.Run("lab gemm", device, (acc, _) =>
        {
            Console.WriteLine(cuda
                ? $"ceiling: cuBLAS fp32 (TF32 off) {CublasFp32TflopsH100} TFLOP/s at 4096³ on an H100 (shared/docs/gpu.md); median of {reps} warm runs"
                : $"CPU emulator (correctness and relative cost only; no ceiling); median of {reps} warm runs");

            var rows = new List<string[]>();
            var shapes = new List<(string Name, int M, int N, int K, bool TA, bool TB, bool BiasGelu, GemmVersion[] Versions)>
            {
                ($"{size}³ NN", size, size, size, false, false, false, [.. GemmKernels.Versions]),
            };
            if (cuda)
            {
                shapes.Add(($"{size}³ NT", size, size, size, false, true, false, [GemmKernels.Best]));
                shapes.Add(($"{size}³ TN", size, size, size, true, false, false, [GemmKernels.Best]));
                shapes.Add(("BERT FFN 7936×3072×768", 7936, 3072, 768, false, false, false, [.. GemmKernels.Versions]));
                shapes.Add(("FFN +bias+GELU", 7936, 3072, 768, false, false, true, [GemmKernels.Best]));
            }
            else shapes.Add(("33×17×65 TN +bias+GELU", 33, 17, 65, true, false, true, [.. GemmKernels.Versions]));

            foreach (var (name, M, N, K, ta, tb, biasGelu, versions) in shapes)
            {
                var rng = new Random(1234);
                float[] Rand(long n) { var x = new float[n]; for (long i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1); return x; }
                var a = Rand((long)M * K);
                var b = Rand((long)K * N);
                var bias = biasGelu ? Rand(N) : null;
                var want = Reference(a, b, bias, M, N, K, ta, tb);
                using var aBuf = acc.Allocate1D(a);
                using var bBuf = acc.Allocate1D(b);
                using var cBuf = acc.Allocate1D<float>((long)M * N);
                using var biasBuf = acc.Allocate1D(bias ?? new float[1]);
                var g = GemmArgs.Dense(aBuf.View, bBuf.View, cBuf.View, 1, M, N, K, ta, tb);
                if (biasGelu) { g.Bias = biasBuf.View; g.Gelu = true; }
                foreach (var v in versions)
                {
                    cBuf.MemSet(0xFF);   // NaN poison: an unwritten element fails the check
                    GemmKernels.Launch(acc, acc.DefaultStream, g, v);   // compiles on first use
                    acc.Synchronize();
                    var got = cBuf.GetAsArray1D();
                    var (err, ok) = Compare(got, want, K);
                    double med = Lab.LabHarness.MedianUs(acc, _ => GemmKernels.Launch(acc, acc.DefaultStream, g, v), 1, reps) / 1e6;   // s
                    double gflops = 2.0 * M * N * K / med / 1e9;
                    rows.Add([name, $"v{(int)v} {v}", ok ? "ok" : "FAIL", err.ToString("E1", CultureInfo.InvariantCulture),
                        (med * 1e3).ToString("F3", CultureInfo.InvariantCulture), gflops.ToString(gflops < 10 ? "G3" : "F1", CultureInfo.InvariantCulture),
                        cuda ? (gflops / 1e3 / CublasFp32TflopsH100 * 100).ToString("F1", CultureInfo.InvariantCulture) + "%" : "-"]);
                    Console.WriteLine($"  {name,-24} v{(int)v} {v,-17} {(ok ? "ok" : "FAIL"),-4} err {err:E1}  {med * 1e3,10:F3} ms  {gflops,10:G4} GFLOP/s");
                }
            }
            Console.WriteLine();
            Print(["shape", "version", "check", "max err / max abs C", "median ms", "GFLOP/s", "% cuBLAS fp32"], rows);
            return rows.Any(r => r[2] != "ok") ? 1 : 0;
        });
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>The CPU backend (all cores) on the same data, then GELU with its scalar formula.</summary>
    private static float[] Reference(float[] a, float[] b, float[]? bias, int M, int N, int K, bool ta, bool tb)
    {
        Parallelism.MaxThreads = Environment.ProcessorCount;
        using var at = Tensor.FromArray(a, ta ? [K, M] : [M, K]);
        using var bt = Tensor.FromArray(b, tb ? [N, K] : [K, N]);
        using var ct = Tensor.Zeros([M, N]);
        using var biasT = bias is null ? null : Tensor.FromArray(bias, N);
        CpuBackend.Instance.MatMul(at, bt, ct, ta, tb, 1, 0, biasT);
        var c = ct.ToArray<float>();
        if (bias is not null) for (int i = 0; i < c.Length; i++) c[i] = ScalarMath.GeluF(c[i]);
        return c;
    }

    /// <summary>Max |got − want| over max |want|, and whether every element is within 1e-5·|want| + 2e-7·K (inputs in [-1, 1)).</summary>
    private static (double Err, bool Ok) Compare(float[] got, float[] want, int K)
    {
        double maxDiff = 0, maxAbs = 0;
        bool ok = got.Length == want.Length;
        for (int i = 0; i < want.Length && ok; i++)
        {
            double d = Math.Abs((double)got[i] - want[i]);
            if (!(d <= 1e-5 * Math.Abs(want[i]) + 2e-7 * K + 1e-6)) ok = false;   // NaN fails
            maxDiff = Math.Max(maxDiff, double.IsNaN(d) ? double.PositiveInfinity : d);
            maxAbs = Math.Max(maxAbs, Math.Abs(want[i]));
        }
        return (maxDiff / Math.Max(maxAbs, 1e-30), ok);
    }

    private static void Print(string[] header, List<string[]> rows)
    {
        var w = header.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        Console.WriteLine("| " + string.Join(" | ", header.Select((h, i) => h.PadRight(w[i]))) + " |");
        Console.WriteLine("|" + string.Join("|", w.Select(x => new string('-', x + 2))) + "|");
        foreach (var r in rows) Console.WriteLine("| " + string.Join(" | ", r.Select((c, i) => c.PadRight(w[i]))) + " |");
    }
}
