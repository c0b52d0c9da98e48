using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using FashionViL.Kernels.Cpu;

namespace FashionViL.Bench;

/// <summary>
/// float32 Conv2dForward (im2col + GEMM) at ResNet-50 layer shapes, batch 4, 2 threads.
/// Run: <c>dotnet run -c Release --project bench/FashionViL.Bench -- --filter '*ConvBenchmarks*' --job short</c>.
/// </summary>
[Config(typeof(GflopsConfig<ConvBenchmarks>))]
public class ConvBenchmarks : IFlopCount
{
    /// <summary>Layer geometry: (Cin, H, W, Cout, K, stride, pad).</summary>
    public static readonly Dictionary<string, (int Cin, int H, int W, int Cout, int K, int Stride, int Pad)> Layers = new()
    {
        ["stem 7x7 s2 3->64"] = (3, 224, 224, 64, 7, 2, 3),
        ["56x56 64->64 3x3"] = (64, 56, 56, 64, 3, 1, 1),
        ["56x56 64->256 1x1"] = (64, 56, 56, 256, 1, 1, 0),
        ["28x28 128->128 3x3"] = (128, 28, 28, 128, 3, 1, 1),
        ["14x14 256->256 3x3"] = (256, 14, 14, 256, 3, 1, 1),
        ["7x7 512->512 3x3"] = (512, 7, 7, 512, 3, 1, 1),
    };

    public const int Batch = 4;

    [ParamsSource(nameof(LayerNames))]
    public string Layer = "";

    public static IEnumerable<string> LayerNames => Layers.Keys;

    private Tensor _x = null!, _w = null!, _y = null!;
    private Conv2dParams _p;

    [GlobalSetup]
    public void Setup()
    {
        Parallelism.MaxThreads = 2;
        var (cin, h, w, cout, k, s, pad) = Layers[Layer];
        var g = new Generator(11);
        _x = g.Uniform([Batch, cin, h, w], -1, 1, DType.Float32);
        _w = g.Uniform([cout, cin, k, k], -1, 1, DType.Float32);
        _p = Conv2dParams.Symmetric(s, pad);
        _y = Tensor.Empty([Batch, cout, _p.OutH(h, k), _p.OutW(w, k)], DType.Float32);
    }

    [GlobalCleanup]
    public void Cleanup() { _x.Dispose(); _w.Dispose(); _y.Dispose(); }

    [Benchmark(Description = "Conv2dForward")]
    public void Forward() => CpuBackend.Instance.Conv2dForward(_x, _w, null, _y, _p);

    /// <summary>Multiply-adds ×2 of one forward call.</summary>
    public static double Flops(string layer)
    {
        var (cin, h, w, cout, k, s, pad) = Layers[layer];
        var p = Conv2dParams.Symmetric(s, pad);
        return 2.0 * Batch * cout * p.OutH(h, k) * p.OutW(w, k) * cin * k * k;
    }

    public static double? Flops(BenchmarkCase c) =>
        GflopsColumn.Param<string>(c, nameof(Layer)) is { } layer && Layers.ContainsKey(layer) ? Flops(layer) : null;

    public static string FlopsFormula => "2·N·Cout·Ho·Wo·Cin·Kh·Kw";

    /// <summary>Stopwatch median over repeats after warm-up, printed as GFLOP/s (a quick check without the harness).</summary>
    public static void Quick()
    {
        foreach (var name in LayerNames)
        {
            var b = new ConvBenchmarks { Layer = name };
            b.Setup();
            for (int i = 0; i < 3; i++) b.Forward();
            var times = new double[9];
            for (int i = 0; i < times.Length; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                b.Forward();
                times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            }
            Array.Sort(times);
            Console.WriteLine($"conv2d {name,-24} batch {Batch}: median {times[4] * 1e3:F2} ms, {Flops(name) / times[4] / 1e9:F1} GFLOP/s");
            b.Cleanup();
        }
    }
}
