using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using FashionViL.Kernels.Cuda;
using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Bench;

/// <summary>Options of <see cref="TileDissect.Run"/>.</summary>
public sealed record DissectOptions
{
    /// <summary>Timed launches per kernel and part (median).</summary>
    public int Reps { get; init; } = 7;

    /// <summary>Emulator-sized shapes (the default on the CPU emulator: its launches are ~10⁴× slower).</summary>
    public bool? Small { get; init; }
}

/// <summary>One kernel and shape: median ms of the production kernel and of its two dissected parts (<see cref="TcPart"/>).</summary>
public sealed record DissectRow(string Kernel, string Shape, double Gflop, double FullMs, double NoLoadsMs, double NoMathMs)
{
    public double FullTflops => Gflop / FullMs;
}

/// <summary>What <c>bench dissect</c> measured.</summary>
public sealed record DissectReport(string Device, bool Emulated, int Reps, double? PeakTflops, double PeakMs, double PeakGflop, IReadOnlyList<DissectRow> Rows);

/// <summary>
/// <c>fashionvil bench dissect</c> (issue 7): the 128×128 TF32 tiles that run the tf32 steps' GEMMs and convolutions,
/// timed whole and with a part of their stage loop taken out (<see cref="TcPart"/>: no global loads / no mma), on the
/// shapes that dominate the steps, plus the mma.sync peak of the device (16 independent mma chains per warp on
/// registers). Where the time follows "no math" the tile waits on memory; where it follows "no global loads" on its
/// shared-memory fragments, mma and barriers; where neither part alone comes near the whole, on their overlap (latency).
/// A profiler would say this directly; the lent GPU machines have none.
/// </summary>
public static class TileDissect
{
    private sealed record GemmCase(string Name, int M, int N, int K, bool TransA, bool TransB, bool Rounded = false);

    private sealed record ConvCase(string Name, int Batch, int Cin, int H, int W, int Cout, int Kh, int Kw, int Stride, int Pad, bool InputGradient = false,
        bool WeightGradient = false);

    private static readonly GemmCase[] FullGemms =
    [
        new("BERT QKV / out-proj, NT", 7936, 768, 768, false, true),
        new("BERT FFN up, NT", 7936, 3072, 768, false, true),
        new("BERT FFN up, NT, pre-rounded", 7936, 3072, 768, false, true, Rounded: true),
        new("FFN input gradient, NN", 7936, 768, 3072, false, false),
        new("FFN weight gradient, TN", 3072, 768, 7936, true, false),
    ];

    private static readonly ConvCase[] FullConvs =
    [
        new("VQ-VAE 3×3 128→128 @224², batch 8", 8, 128, 224, 224, 128, 3, 3, 1, 1),
        new("ResNet layer1 3×3 64→64 @56², batch 64", 64, 64, 56, 56, 64, 3, 3, 1, 1),
        new("ResNet layer3 3×3 256→256 @14², batch 64", 64, 256, 14, 14, 256, 3, 3, 1, 1),
        new("ResNet layer3 3×3 input gradient, batch 64", 64, 256, 14, 14, 256, 3, 3, 1, 1, InputGradient: true),
        new("ResNet layer3 3×3 weight gradient (split-K), batch 64", 64, 256, 14, 14, 256, 3, 3, 1, 1, WeightGradient: true),
        new("ResNet layer2 1×1 128→512 @28², batch 64", 64, 128, 28, 28, 512, 1, 1, 1, 0),
    ];

    private static readonly GemmCase[] SmallGemms =
    [
        new("small, NT", 160, 136, 40, false, true),
        new("small, TN", 136, 132, 48, true, false),
    ];

    private static readonly ConvCase[] SmallConvs =
    [
        new("small 3×3", 2, 6, 10, 10, 8, 3, 3, 1, 1),
        new("small 3×3 input gradient", 2, 6, 10, 10, 8, 3, 3, 1, 1, InputGradient: true),
        new("small 3×3 weight gradient", 2, 6, 10, 10, 8, 3, 3, 1, 1, WeightGradient: true),
    ];

    public static DissectReport Run(DissectOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (o.Reps < 1) throw new ArgumentException($"bench dissect: --reps must be ≥ 1, got {o.Reps}");
        var rt = CudaRuntime.Get(0);
        var acc = rt.Accelerator;
        var stream = rt.Stream;
        bool small = o.Small ?? rt.IsEmulated;
        var rows = new List<DissectRow>();
        var rng = new Random(7);

        // mma.sync peak: four waves of two 256-thread groups per multiprocessor
        int groups = small ? 2 : acc.NumMultiprocessors * 2 * 4, iters = small ? 4 : 2048;
        double peakMs, peakGflop = TensorCoreGemm.MmaPeakFlop(groups, iters) / 1e9;
        using (var sink = acc.Allocate1D<float>((long)groups * TensorCoreGemm.GpuGroupSize2))
            peakMs = Median(acc, stream, o.Reps, () => TensorCoreGemm.LaunchMmaPeak(acc, stream, sink.View, groups, iters));
        double? peak = rt.IsEmulated ? null : peakGflop / peakMs;

        foreach (var g in small ? SmallGemms : FullGemms)
        {
            int aLen = g.M * g.K, bLen = g.K * g.N;
            using var a = Upload(acc, rng, aLen, g.Rounded);
            using var b = Upload(acc, rng, bLen, g.Rounded);
            using var c = acc.Allocate1D<float>((long)g.M * g.N);
            var args = GemmArgs.Dense(a.View, b.View, c.View, 1, g.M, g.N, g.K, g.TransA, g.TransB);
            args.ARounded = args.BRounded = g.Rounded;
            double gflop = 2.0 * g.M * g.N * g.K / 1e9;
            foreach (var tile in new[] { TensorCoreTile.Tile128x128, TensorCoreTile.Tile128x128Async })
            {
                long before = TensorCoreGemm.AsyncLaunches;
                var ms = Parts(acc, stream, o.Reps, () => TensorCoreGemm.Launch(acc, stream, args, Precision.Tf32, tile));
                // the cp.async tile hands operands without 16-byte rows to the register-prefetch kernel: say so
                string kernel = tile == TensorCoreTile.Tile128x128 ? "GEMM 128×128"
                    : TensorCoreGemm.AsyncLaunches > before ? "GEMM 128×128 cp.async" : "GEMM 128×128 cp.async (ran register-prefetch)";
                rows.Add(new DissectRow(kernel, $"{g.Name} {g.M}×{g.N}×{g.K}", gflop, ms[0], ms[1], ms[2]));
            }
        }
        foreach (var cv in small ? SmallConvs : FullConvs)
        {
            var p = Conv2dParams.Symmetric(cv.Stride, cv.Pad);
            var (ho, wo) = ConvKernels.OutputSize(cv.H, cv.W, cv.Kh, cv.Kw, p);
            using var x = Upload(acc, rng, (long)cv.Batch * cv.Cin * cv.H * cv.W, false);
            using var w = Upload(acc, rng, (long)cv.Cout * cv.Cin * cv.Kh * cv.Kw, false);
            using var y = Upload(acc, rng, (long)cv.Batch * cv.Cout * ho * wo, false);
            using var ws = acc.Allocate1D<float>(cv.WeightGradient ? 2L * cv.Cout * cv.Cin * cv.Kh * cv.Kw : 1);
            double gflop = 2.0 * cv.Cout * cv.Batch * ho * wo * cv.Cin * cv.Kh * cv.Kw / 1e9;
            Action run = cv.InputGradient
                ? () => ConvKernels.Conv2dBackwardInput(acc, stream, y.View, w.View, x.View, cv.Batch, cv.Cin, cv.H, cv.W, cv.Cout, cv.Kh, cv.Kw, p,
                    precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128)
                : cv.WeightGradient
                ? () => ConvKernels.Conv2dBackwardWeight(acc, stream, x.View, y.View, w.View, default, cv.Batch, cv.Cin, cv.H, cv.W, cv.Cout, cv.Kh, cv.Kw, p,
                    workspace: ws.View, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128)
                : () => ConvKernels.Conv2dForward(acc, stream, x.View, w.View, default, y.View, cv.Batch, cv.Cin, cv.H, cv.W, cv.Cout, cv.Kh, cv.Kw, p,
                    precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
            // forward convolutions: the forward path (FVL_TC_CONV_FWD=vec, the default) and the coordinate tables (table)
            bool forward = !cv.InputGradient && !cv.WeightGradient;
            foreach (bool vec in forward ? new[] { true, false } : [true])
            {
                bool was = ConvKernels.Tc3ForwardPath;
                ConvKernels.Tc3ForwardPath = vec;
                try
                {
                    var ms = Parts(acc, stream, o.Reps, run);
                    rows.Add(new DissectRow(!forward ? "conv 128×128" : vec ? "conv 128×128 fwd vec" : "conv 128×128 fwd table", cv.Name, gflop, ms[0], ms[1], ms[2]));
                }
                finally
                {
                    ConvKernels.Tc3ForwardPath = was;
                }
            }
        }
        return new DissectReport(acc.Name, rt.IsEmulated, o.Reps, peak, peakMs, peakGflop, rows);
    }

    private static MemoryBuffer1D<float, Stride1D.Dense> Upload(Accelerator acc, Random rng, long n, bool rounded)
    {
        var h = new float[n];
        for (long i = 0; i < n; i++)
        {
            float v = (float)(rng.NextDouble() * 2 - 1);
            h[i] = rounded ? PrecisionRounding.ToTf32(v) : v;
        }
        var buf = acc.Allocate1D<float>(n);
        buf.CopyFromCPU(h);
        return buf;
    }

    /// <summary>Median ms of the launch under each part (Full, NoGlobalLoads, NoMath): one untimed launch each (compiles), then
    /// <paramref name="reps"/> rounds in rotated order.</summary>
    private static double[] Parts(Accelerator acc, AcceleratorStream stream, int reps, Action run)
    {
        var parts = new[] { TcPart.Full, TcPart.NoGlobalLoads, TcPart.NoMath };
        var samples = new double[parts.Length][];
        for (int i = 0; i < parts.Length; i++)
        {
            samples[i] = new double[reps];
            using (TensorCoreGemm.UsePart(parts[i])) run();
        }
        stream.Synchronize();
        for (int r = 0; r < reps; r++)
            for (int j = 0; j < parts.Length; j++)
            {
                int i = (j + r) % parts.Length;
                using (TensorCoreGemm.UsePart(parts[i])) samples[i][r] = Once(acc, stream, run);
            }
        return samples.Select(MedianOf).ToArray();
    }

    private static double Median(Accelerator acc, AcceleratorStream stream, int reps, Action run)
    {
        run();
        stream.Synchronize();
        var s = new double[reps];
        for (int r = 0; r < reps; r++) s[r] = Once(acc, stream, run);
        return MedianOf(s);
    }

    /// <summary>One launch's milliseconds: device markers when the context profiles, else host time around synchronisations.</summary>
    private static double Once(Accelerator acc, AcceleratorStream stream, Action run)
    {
        if (acc.Context.Properties.EnableProfiling)
        {
            using var b = stream.AddProfilingMarker();
            run();
            using var e = stream.AddProfilingMarker();
            stream.Synchronize();
            return e.MeasureFrom(b).TotalMilliseconds;
        }
        stream.Synchronize();
        long t0 = Stopwatch.GetTimestamp();
        run();
        stream.Synchronize();
        return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
    }

    private static double MedianOf(double[] x)
    {
        var s = x.OrderBy(v => v).ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    public static string Format(DissectReport r)
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine(ci, $"bench dissect on {r.Device}{(r.Emulated ? " (CPU emulator: relative cost only, no mma)" : "")}; median of {r.Reps} launches, TF32");
        sb.AppendLine(r.PeakTflops is { } p
            ? string.Create(ci, $"mma.sync TF32 peak: {p:F1} TFLOP/s ({r.PeakGflop:F0} GFLOP in {r.PeakMs:F3} ms; registers only, 16 chains per warp)")
            : string.Create(ci, $"mma.sync TF32 peak: n/a off CUDA ({r.PeakMs:F3} ms for the launch)"));
        sb.AppendLine("| kernel | shape | GFLOP | full ms | TFLOP/s | no global loads ms | no math ms | no loads / full | no math / full |");
        sb.AppendLine("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        foreach (var x in r.Rows)
            sb.AppendLine(ci, $"| {x.Kernel} | {x.Shape} | {x.Gflop:G4} | {x.FullMs:F3} | {x.FullTflops:G4} | {x.NoLoadsMs:F3} | {x.NoMathMs:F3} | {x.NoLoadsMs / x.FullMs:F2} | {x.NoMathMs / x.FullMs:F2} |");
        return sb.ToString();
    }

    /// <summary>Writes the report as JSON (atomically: a temporary file, then a rename).</summary>
    public static void WriteJson(string path, DissectReport r)
    {
        var doc = new
        {
            device = r.Device, emulated = r.Emulated, reps = r.Reps,
            mma_peak_tflops = r.PeakTflops, mma_peak_ms = r.PeakMs, mma_peak_gflop = r.PeakGflop,
            rows = r.Rows.Select(x => new
            {
                kernel = x.Kernel, shape = x.Shape, gflop = x.Gflop, full_ms = x.FullMs, full_tflops = x.FullTflops,
                no_global_loads_ms = x.NoLoadsMs, no_math_ms = x.NoMathMs,
            }),
        };
        BenchFiles.WriteAtomically("bench dissect", path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }
}
