using System.Diagnostics;
using System.Globalization;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Bench.Lab;

/// <summary>
/// Kernel lab for convolution and pooling (<see cref="ConvKernels"/>): each case is checked against CpuBackend.Instance on
/// the same data, then timed (median of batches of warm launches, each batch ended by Synchronize) and printed as GFLOP/s
/// (convolutions: 2·N·Cout·Ho·Wo·Cin·Kh·Kw per pass, the same count for all three passes) or GB/s (pooling: inputs read
/// once, outputs written once). <c>Run("cuda")</c> uses the first CUDA device at ResNet-50 shapes, the headline being the
/// layer3 3×3 conv [64,256,14,14] 256→256; <c>Run("cpu")</c> runs ILGPU's CPU accelerator on tiny shapes (timings there
/// mean nothing; it shows the lab works).
/// Each convolution pass runs every fp32 implicit-GEMM version (<see cref="ConvKernels.Versions"/>); a trailing * marks the one
/// <see cref="ConvKernels.Choose"/> picks for that shape, so the table shows whether the rule is right.
/// <para>
/// Predictions, written before any GPU run (none yet: the numbers are owed). The kernel is the 64×64-tile, 4×4-per-thread
/// scheme that reached 13.3 TFLOP/s as a plain SGEMM on the H100 (gpu.md), plus the implicit-GEMM loader (two shared
/// table loads, two adds and a bounds test per B element; backward-input adds the stride test). Layer3 forward is a GEMM of
/// M 256 × N 12544 × K 2304 = 14.8 GFLOP in 784 tiles (6 waves of 132 SMs): expect 8–12 TFLOP/s (1.2–1.8 ms), against
/// the 66.9 TFLOP/s fp32 datasheet peak and ~51.5 TFLOP/s cuBLAS SGEMM. Backward-input wastes nothing at stride 1, the
/// same figure; backward-weight is M 256 × N 2304 × K 12544 in only 144 tiles (about one wave), so expect it lower,
/// 5–8 TFLOP/s without split-K; with the workspace (split-K, chunks ≥ 256 deep, ≥ 2 groups per SM) it should approach
/// the forward figure less the partial-sum traffic (16 × 2.4 MB written and read: ~15 µs at 3 TB/s). Tile128 (8×8 per thread, float4 shared loads, like GemmKernels v4) should gain
/// 1.3–1.8× where it has enough tiles (layer1/layer3 forward and backward-input: 196–1568 tiles) and lose on backward-weight
/// at layer3 (36 tiles for 132 SMs). If a measurement misses by more than 20%, explain it (SASS, occupancy) first.
/// </para>
/// <para>
/// Issue 7 (bench/convpf.md, predictions before any GPU run): Tile128Prefetch (v3: v2 plus double-buffered shared tiles and
/// register prefetch, one barrier per K tile) should beat v2 by 1.2–1.4× wherever v2 ran, the gain being the global-load
/// latency v2 exposes before each tile's FMAs; Tile64Prefetch (v4: 64 threads of 8×8, prefetch) should beat v1 by 1.5–2×
/// (FFMA share of the k loop 64/~75 vs v1's 16/~40). All four versions give the same bits (the lab checks each against the
/// CPU backend; the tests check bitwise equality). The splitK rows mark with * the version Auto runs when a workspace lets
/// it split (the 128 tile whenever M ≥ 96).
/// </para>
/// </summary>
public static class ConvLab
{
    private const double Rtol = 1e-4;
    private const double FmaPeakTflops = 66.9;   // H100 SXM fp32 non-tensor datasheet (gpu.md)

    private sealed record Result(string Op, string Shape, double Us, double Rate, string Unit, double WorstTol, double MaxAbs);

    private sealed class Setup(Accelerator acc, bool gpu)
    {
        public readonly Accelerator Acc = acc;
        public readonly bool Gpu = gpu;
        public readonly List<Result> Results = [];
        public int Batch => Gpu ? 10 : 1;
        public int Reps => Gpu ? 9 : 3;
        /// <summary>Some version's result differed in bits from v1's (they must not: one fma chain over k ascending each).</summary>
        public bool BitsDiffer;
    }

    private sealed record ConvCase(string Name, int N, int Cin, int H, int W, int Cout, int K, Conv2dParams P);

    public static int Run(string deviceKind)
    {
        return LabHarness.Run("conv lab", deviceKind, (acc, gpu) =>
        {
            var s = new Setup(acc, gpu);
            ConvCase[] cases = gpu
                ?
                [
                    new("resnet50 layer3 3×3", 64, 256, 14, 14, 256, 3, Conv2dParams.Symmetric(1, 1)),
                    new("resnet50 layer1 3×3", 64, 64, 56, 56, 64, 3, Conv2dParams.Symmetric(1, 1)),
                    new("resnet50 stem 7×7 s2", 64, 3, 224, 224, 64, 7, Conv2dParams.Symmetric(2, 3)),
                    new("resnet50 layer3 1×1 s2", 64, 512, 28, 28, 1024, 1, Conv2dParams.Symmetric(2, 0)),
                ]
                :
                [
                    new("tiny 3×3", 2, 8, 9, 9, 6, 3, Conv2dParams.Symmetric(1, 1)),
                    new("tiny 7×7 s2", 1, 3, 16, 16, 4, 7, Conv2dParams.Symmetric(2, 3)),
                ];
            foreach (var c in cases) Conv(s, c);
            if (gpu) Pools(s, 64, 64, 112, 112, 2048, 7);
            else Pools(s, 2, 3, 9, 9, 5, 3);
            Print(s);
            return s.Results.All(r => r.WorstTol <= 1) && !s.BitsDiffer ? 0 : 3;
        });
    }

    private static void Conv(Setup s, ConvCase c)
    {
        var acc = s.Acc;
        var p = c.P;
        var (ho, wo) = ConvKernels.OutputSize(c.H, c.W, c.K, c.K, p);
        long nx = (long)c.N * c.Cin * c.H * c.W, nw = (long)c.Cout * c.Cin * c.K * c.K, ny = (long)c.N * c.Cout * ho * wo;
        float[] xh = LabHarness.Random(nx, 1, -1, 1), wh = LabHarness.Random(nw, 2, -1, 1), bh = LabHarness.Random(c.Cout, 3, -1, 1), gyh = LabHarness.Random(ny, 4, -1, 1);
        float[] wantY, wantGx, wantGw, wantGb;
        var sw = Stopwatch.StartNew();
        {
            using var x = Tensor.FromArray(xh, c.N, c.Cin, c.H, c.W);
            using var w = Tensor.FromArray(wh, c.Cout, c.Cin, c.K, c.K);
            using var b = Tensor.FromArray(bh, c.Cout);
            using var gy = Tensor.FromArray(gyh, c.N, c.Cout, ho, wo);
            using var y = Tensor.Empty([c.N, c.Cout, ho, wo]);
            using var gx = Tensor.Empty([c.N, c.Cin, c.H, c.W]);
            using var gw = Tensor.Empty([c.Cout, c.Cin, c.K, c.K]);
            using var gb = Tensor.Empty([c.Cout]);
            CpuBackend.Instance.Conv2dForward(x, w, b, y, p);
            CpuBackend.Instance.Conv2dBackwardInput(gy, w, gx, p);
            CpuBackend.Instance.Conv2dBackwardWeight(x, gy, gw, gb, p);
            wantY = y.ToArray<float>(); wantGx = gx.ToArray<float>(); wantGw = gw.ToArray<float>(); wantGb = gb.ToArray<float>();
        }
        Console.WriteLine($"  ({c.Name}: CPU reference {sw.Elapsed.TotalSeconds:F1} s)");
        using var dx = acc.Allocate1D(xh);
        using var dw = acc.Allocate1D(wh);
        using var db = acc.Allocate1D(bh);
        using var dgy = acc.Allocate1D(gyh);
        using var dy = acc.Allocate1D<float>(ny);
        using var dgx = acc.Allocate1D<float>(nx);
        using var dgw = acc.Allocate1D<float>(nw);
        using var dgb = acc.Allocate1D<float>(c.Cout);
        using var ws = acc.Allocate1D<float>(16 * nw);   // split-K workspace for backward-weight (up to 16 chunks)
        double flop = 2.0 * c.N * c.Cout * ho * wo * c.Cin * c.K * c.K;
        string shape = $"x[{c.N},{c.Cin},{c.H},{c.W}] w[{c.Cout},{c.Cin},{c.K},{c.K}] s{p.StrideH} p{p.PadTop}";
        int kFwd = c.Cin * c.K * c.K, kBi = c.Cout * c.K * c.K, kBw = c.N * ho * wo;

        float[]? firstY = null, firstGx = null, firstGw = null;
        static int Differ(float[] a, float[] b) => a.Zip(b).Count(t => BitConverter.SingleToInt32Bits(t.First) != BitConverter.SingleToInt32Bits(t.Second));
        foreach (var v in ConvKernels.Versions)
        {
            void Fwd(int _) => ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, db.View, dy.View, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.K, p, v);
            void Bi(int _) => ConvKernels.Conv2dBackwardInput(acc, null, dgy.View, dw.View, dgx.View, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.K, p, v);
            void Bw(int _) => ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, dgw.View, dgb.View, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.K, p, v);
            string Tag(int m, int n) => $"{v}{(ConvKernels.Choose(acc, m, n) == v ? "*" : "")}";

            dy.MemSetToZero(); dgx.MemSetToZero(); dgw.MemSetToZero();
            Fwd(0); acc.Synchronize();
            var (w1, a1) = Compare(dy.GetAsArray1D(), wantY, kFwd);
            Record(s, $"{c.Name} fwd {Tag(c.Cout, c.N * ho * wo)}", shape, MedianUs(s, Fwd), flop, w1, a1);
            Bi(0); acc.Synchronize();
            var (w2, a2) = Compare(dgx.GetAsArray1D(), wantGx, kBi);
            Record(s, $"{c.Name} bwd-in {Tag(c.Cin, c.N * c.H * c.W)}", shape, MedianUs(s, Bi), flop, w2, a2);
            Bw(0); acc.Synchronize();
            var (w3, a3) = Compare(dgw.GetAsArray1D(), wantGw, kBw);
            var (w4, a4) = Compare(dgb.GetAsArray1D(), wantGb, kBw);
            Record(s, $"{c.Name} bwd-w+b {Tag(c.Cout, c.Cin * c.K * c.K)}", shape, MedianUs(s, Bw), flop, Math.Max(w3, w4), Math.Max(a3, a4));
            // the unsplit results of every version must equal v1's bit for bit
            float[] yNow = dy.GetAsArray1D(), gxNow = dgx.GetAsArray1D(), gwNow = dgw.GetAsArray1D();
            if (firstY is null) (firstY, firstGx, firstGw) = (yNow, gxNow, gwNow);
            else
            {
                int dY = Differ(yNow, firstY), dGx = Differ(gxNow, firstGx!), dGw = Differ(gwNow, firstGw!);
                s.BitsDiffer |= dY + dGx + dGw > 0;
                Console.WriteLine($"  ({c.Name} {v} vs {ConvKernels.Versions[0]}: elements whose bits differ: fwd {dY}, bwd-in {dGx}, bwd-w {dGw})");
            }
            void BwS(int _) => ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, dgw.View, dgb.View, c.N, c.Cin, c.H, c.W, c.Cout, c.K, c.K, p, v, ws.View);
            dgw.MemSetToZero();
            BwS(0); acc.Synchronize();
            var (w5, a5) = Compare(dgw.GetAsArray1D(), wantGw, kBw);
            var (w6, a6) = Compare(dgb.GetAsArray1D(), wantGb, kBw);
            string splitTag = $"{v}{(ConvKernels.ChooseBackwardWeight(acc, c.Cout, c.Cin * c.K * c.K, kBw, canSplit: true) == v ? "*" : "")}";
            Record(s, $"{c.Name} bwd-w+b splitK {splitTag}", shape, MedianUs(s, BwS), flop, Math.Max(w5, w6), Math.Max(a5, a6));
        }
    }

    private static void Pools(Setup s, int n, int ch, int h, int w, int adaptC, int adaptHw)
    {
        var acc = s.Acc;
        var p = new Pool2dParams(3, 3, 2, 2, 1, 1);
        int ho = p.OutH(h), wo = p.OutW(w), planes = n * ch;
        long nx = (long)planes * h * w, ny = (long)planes * ho * wo;
        float[] xh = LabHarness.Random(nx, 5, -1, 1), gyh = LabHarness.Random(ny, 6, -1, 1);
        float[] wantY, wantGx; long[] wantI;
        {
            using var x = Tensor.FromArray(xh, n, ch, h, w);
            using var y = Tensor.Empty([n, ch, ho, wo]);
            using var ids = Tensor.Empty([n, ch, ho, wo], DType.Int64);
            using var gy = Tensor.FromArray(gyh, n, ch, ho, wo);
            using var gx = Tensor.Empty([n, ch, h, w]);
            CpuBackend.Instance.MaxPool2dForward(x, y, ids, p);
            CpuBackend.Instance.MaxPool2dBackward(gy, ids, gx);
            wantY = y.ToArray<float>(); wantI = ids.ToArray<long>(); wantGx = gx.ToArray<float>();
        }
        using var dx = acc.Allocate1D(xh);
        using var dy = acc.Allocate1D<float>(ny);
        using var di = acc.Allocate1D<long>(ny);
        using var dgy = acc.Allocate1D(gyh);
        using var dgx = acc.Allocate1D<float>(nx);
        string shape = $"[{n},{ch},{h},{w}] 3×3 s2 p1";
        void Mf(int _) => ConvKernels.MaxPool2dForward(acc, null, dx.View, dy.View, di.View, planes, h, w, p);
        void Mg(int _) => ConvKernels.MaxPool2dBackward(acc, null, dgy.View, di.View, dgx.View, planes, h, w, ho, wo, p);
        void Ms(int _) => ConvKernels.MaxPool2dBackward(acc, null, dgy.View, di.View, dgx.View, planes, h, w, ho, wo, null);
        Mf(0); acc.Synchronize();
        var (w1, a1) = Compare(dy.GetAsArray1D(), wantY, 0);
        bool idsOk = di.GetAsArray1D().AsSpan().SequenceEqual(wantI);
        RecordBytes(s, "max_pool fwd", shape, MedianUs(s, Mf), 4 * nx + 12 * ny, idsOk ? w1 : double.PositiveInfinity, a1);
        Mg(0); acc.Synchronize();
        var (w2, a2) = Compare(dgx.GetAsArray1D(), wantGx, 0);
        RecordBytes(s, "max_pool bwd gather", shape, MedianUs(s, Mg), 12 * ny + 4 * nx, w2, a2);
        Ms(0); acc.Synchronize();
        var (w3, a3) = Compare(dgx.GetAsArray1D(), wantGx, 0);
        RecordBytes(s, "max_pool bwd plane-serial", shape, MedianUs(s, Ms), 12 * ny + 4 * nx, w3, a3);

        // adaptive average pooling: ResNet-50's global pool [N, 2048, 7, 7] → 1×1
        int ap = n * adaptC;
        long anx = (long)ap * adaptHw * adaptHw;
        float[] axh = LabHarness.Random(anx, 7, -1, 1), agyh = LabHarness.Random(ap, 8, -1, 1);
        float[] wantAy, wantAgx;
        {
            using var x = Tensor.FromArray(axh, n, adaptC, adaptHw, adaptHw);
            using var y = Tensor.Empty([n, adaptC, 1, 1]);
            using var gy = Tensor.FromArray(agyh, n, adaptC, 1, 1);
            using var gx = Tensor.Empty([n, adaptC, adaptHw, adaptHw]);
            CpuBackend.Instance.AdaptiveAvgPool2dForward(x, y);
            CpuBackend.Instance.AdaptiveAvgPool2dBackward(gy, gx);
            wantAy = y.ToArray<float>(); wantAgx = gx.ToArray<float>();
        }
        using var ax = acc.Allocate1D(axh);
        using var ay = acc.Allocate1D<float>(ap);
        using var agy = acc.Allocate1D(agyh);
        using var agx = acc.Allocate1D<float>(anx);
        string ashape = $"[{n},{adaptC},{adaptHw},{adaptHw}] → 1×1";
        void Af(int _) => ConvKernels.AdaptiveAvgPool2dForward(acc, null, ax.View, ay.View, ap, adaptHw, adaptHw, 1, 1);
        void Ab(int _) => ConvKernels.AdaptiveAvgPool2dBackward(acc, null, agy.View, agx.View, ap, adaptHw, adaptHw, 1, 1);
        Af(0); acc.Synchronize();
        var (w4, a4) = Compare(ay.GetAsArray1D(), wantAy, adaptHw * adaptHw);
        RecordBytes(s, "adaptive_avg fwd", ashape, MedianUs(s, Af), 4 * anx + 4L * ap, w4, a4);
        Ab(0); acc.Synchronize();
        var (w5, a5) = Compare(agx.GetAsArray1D(), wantAgx, 1);
        RecordBytes(s, "adaptive_avg bwd", ashape, MedianUs(s, Ab), 4 * anx + 4L * ap, w5, a5);
    }

    // ------------------------------------------------------------------ helpers

    private static double MedianUs(Setup s, Action<int> launch) => LabHarness.MedianUs(s.Acc, launch, s.Batch, s.Reps);

    private static void Record(Setup s, string op, string shape, double us, double flop, double worst, double maxAbs)
    {
        var r = new Result(op, shape, us, flop / (us * 1e3), "GFLOP/s", worst, maxAbs);
        s.Results.Add(r);
        Console.WriteLine(Line(r));
    }

    private static void RecordBytes(Setup s, string op, string shape, double us, long bytes, double worst, double maxAbs)
    {
        var r = new Result(op, shape, us, bytes / (us * 1e3), "GB/s", worst, maxAbs);
        s.Results.Add(r);
        Console.WriteLine(Line(r));
    }

    private static string Line(Result r) => string.Format(CultureInfo.InvariantCulture,
        "{0,-40} {1,-42} {2,11:F1} {3,10:F1} {4,-8} {5,8} {6,10:E2} {7,8:F3} {8}",
        r.Op, r.Shape, r.Us, r.Rate, r.Unit, r.Unit == "GFLOP/s" ? (100 * r.Rate / (FmaPeakTflops * 1000)).ToString("F1", CultureInfo.InvariantCulture) + "%" : "",
        r.MaxAbs, r.WorstTol, r.WorstTol <= 1 ? "ok" : "FAIL");

    private static void Print(Setup s)
    {
        Console.WriteLine();
        Console.WriteLine($"== conv lab summary ({(s.Gpu ? "GPU" : "CPU emulator: timings meaningless")}; conv FLOPs = 2·N·Cout·Ho·Wo·Cin·Kh·Kw per pass, "
            + $"% of the {FmaPeakTflops} TFLOP/s fp32 peak; tol = {Rtol:G}·(1 + |ref|) + 2e-7·(reduction length) vs CpuBackend)");
        Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "{0,-40} {1,-42} {2,11} {3,10} {4,-8} {5,8} {6,10} {7,8} {8}",
            "op", "shape", "median µs", "rate", "unit", "of peak", "max |err|", "err/tol", "check"));
        foreach (var r in s.Results) Console.WriteLine(Line(r));
    }

    /// <summary>(worst |got − want| / tol, max |got − want|) with tol = 1e-4·(1 + |want|) + 2e-7·reduction; NaN counts as +∞.</summary>
    private static (double worst, double maxAbs) Compare(float[] got, float[] want, int reduction)
    {
        double worst = 0, maxAbs = 0;
        for (int i = 0; i < want.Length; i++)
        {
            double g = got[i], w = want[i];
            double e = Math.Abs(g - w);
            if (double.IsNaN(e)) return (double.PositiveInfinity, double.NaN);
            maxAbs = Math.Max(maxAbs, e);
            worst = Math.Max(worst, e / (Rtol * (1 + Math.Abs(w)) + 2e-7 * reduction));
        }
        return (worst, maxAbs);
    }
}
