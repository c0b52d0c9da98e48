using System.Globalization;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Bench.Lab;

/// <summary>
/// Kernel lab for the row-wise family (layer norm, softmax, cross-entropy): every version and group size is checked
/// against the CPU backend on the same data, then timed (median of batches of launches, warm, inputs rotated through
/// more than the 50 MB L2) and printed as GB/s against the 3.0 TB/s device-to-device ceiling of docs/gpu.md.
/// Bytes counted are the minimum traffic: each input element read once, each output written once.
/// <c>Run("cuda")</c> uses the first CUDA device at [64·124, 768] and [64·75, 30522]; <c>Run("cpu")</c> runs ILGPU's
/// CPU accelerator on tiny shapes (the timings there mean nothing; the table shows the lab works).
/// <para>
/// Floors and predictions, written before any GPU run (none yet; the numbers are owed):
/// layernorm fwd [7936, 768] moves 48.8 MB, so 16 µs at 3.0 TB/s; softmax fwd [4800, 30522] moves 1.17 GB (391 µs);
/// cross-entropy fwd reads 586 MB (195 µs). The scalar loops keep one 4-byte load in flight per thread; at 2048
/// threads/SM that is ~8 KB/SM against the ~16 KB/SM Little's law asks for at 3 TB/s, so the scalar versions
/// should land near 1.3–1.8 TB/s unless ptxas unrolls them, and the X4 versions (four independent loads) near
/// 2.2–2.6 TB/s. Re-reading a row (two-pass, online write pass) should cost little: a 768-float row stays in L1,
/// and ~260 resident 30522-wide rows (32 MB) fit the 50 MB L2. Group size: 256 for 768-wide rows, 1024 for 30522.
/// If a measurement misses by more than 20%, explain it (SASS, occupancy) before changing the kernels.
/// </para>
/// </summary>
public static class RowLab
{
    private const double CeilingGBs = 3000.0;
    private const double Rtol = 1e-4, Atol = 1e-5;

    private sealed record Result(string Op, string Shape, string Version, int Group, double Us, double GBs, double WorstTol, double MaxAbs);

    private sealed class Setup(Accelerator acc, bool gpu)
    {
        public readonly Accelerator Acc = acc;
        public readonly bool Gpu = gpu;
        public readonly List<Result> Results = [];
        public int Batch => Gpu ? 20 : 2;
        public int Reps => Gpu ? 15 : 3;
        /// <summary>How many copies of the inputs/outputs to rotate through so a batch does not run out of L2.</summary>
        public int Copies(long bytesPerSet) => Gpu ? (int)Math.Clamp((200L << 20) / Math.Max(1, bytesPerSet) + 1, 1, 8) : 1;
    }

    public static int Run(string deviceKind)
    {
        return LabHarness.Run("row lab", deviceKind, (acc, gpu) =>
        {
            var s = new Setup(acc, gpu);
            int rowsLn = gpu ? 64 * 124 : 5, rowsV = gpu ? 64 * 75 : 3;
            int[] groups768 = gpu ? [128, 256, 512, 1024] : [acc.WarpSize * Math.Max(1, acc.MaxNumThreadsPerGroup / acc.WarpSize)];
            int[] groupsV = gpu ? [256, 512, 1024] : groups768;
            LayerNormForward(s, rowsLn, 768, groups768);
            LayerNormBackward(s, rowsLn, 768, groups768);
            SoftmaxForward(s, rowsLn, 768, groups768);
            SoftmaxForward(s, rowsV, 30522, groupsV);
            SoftmaxBackward(s, rowsV, 30522, groupsV);
            CrossEntropy(s, rowsV, 30522, groupsV);
            Print(s);
            return s.Results.All(r => r.WorstTol <= 1) ? 0 : 3;
        });
    }

    // ------------------------------------------------------------------ cases

    private static void LayerNormForward(Setup s, int rows, int d, int[] groups)
    {
        var acc = s.Acc;
        long n = (long)rows * d;
        int k = s.Copies(8 * n);
        var xs = Enumerable.Range(0, k).Select(i => acc.Allocate1D(LabHarness.Random(n, 100 + (ulong)i, 3, 5))).ToArray();
        var ys = Enumerable.Range(0, k).Select(_ => acc.Allocate1D<float>(n)).ToArray();
        float[] wh = LabHarness.Random(d, 7, 0.5f, 1.5f), bh = LabHarness.Random(d, 8, -1, 1);
        using var w = acc.Allocate1D(wh); using var b = acc.Allocate1D(bh);
        using var mean = acc.Allocate1D<float>(rows); using var rstd = acc.Allocate1D<float>(rows);
        float[] want;
        {
            using var x = Tensor.FromArray(xs[0].GetAsArray1D(), [rows, d]);
            using var wt = Tensor.FromArray(wh, [d]); using var bt = Tensor.FromArray(bh, [d]);
            using var y = Tensor.Empty([rows, d]); using var m = Tensor.Empty([rows]); using var r = Tensor.Empty([rows]);
            CpuBackend.Instance.LayerNormForward(x, wt, bt, 1e-12, y, m, r);
            want = y.ToArray<float>();
        }
        long bytes = 4 * (2 * n + 2L * d + 2L * rows);
        foreach (var variant in Enum.GetValues<LayerNormVariant>())
            foreach (int gs in groups)
            {
                void Launch(int i) => RowKernels.LayerNormForward(acc, null, xs[i % k].View, w.View, b.View, 1e-12f, ys[i % k].View, mean.View, rstd.View, rows, d, variant, gs);
                Launch(0); acc.Synchronize();
                var (worst, maxAbs) = Compare(ys[0].GetAsArray1D(), want);
                Record(s, "layernorm fwd", rows, d, variant.ToString(), gs, MedianUs(s, Launch), bytes, worst, maxAbs);
            }
        Dispose(xs); Dispose(ys);
    }

    private static void LayerNormBackward(Setup s, int rows, int d, int[] groups)
    {
        var acc = s.Acc;
        long n = (long)rows * d;
        float[] xh = LabHarness.Random(n, 11, -2, 3), gh = LabHarness.Random(n, 12, -1, 1), wh = LabHarness.Random(d, 13, 0.5f, 1.5f);
        using var xt = Tensor.FromArray(xh, [rows, d]); using var gt = Tensor.FromArray(gh, [rows, d]); using var wt = Tensor.FromArray(wh, [d]);
        using var yt = Tensor.Empty([rows, d]); using var mt = Tensor.Empty([rows]); using var rt = Tensor.Empty([rows]);
        CpuBackend.Instance.LayerNormForward(xt, wt, null, 1e-12, yt, mt, rt);
        using var gxt = Tensor.Empty([rows, d]); using var gwt = Tensor.Empty([d]); using var gbt = Tensor.Empty([d]);
        CpuBackend.Instance.LayerNormBackward(xt, gt, wt, mt, rt, gxt, gwt, gbt);
        float[] wantGx = gxt.ToArray<float>(), wantGw = gwt.ToArray<float>();
        int k = s.Copies(12 * n);
        var xs = Enumerable.Range(0, k).Select(_ => acc.Allocate1D(xh)).ToArray();
        var gys = Enumerable.Range(0, k).Select(_ => acc.Allocate1D(gh)).ToArray();
        var gxs = Enumerable.Range(0, k).Select(_ => acc.Allocate1D<float>(n)).ToArray();
        using var w = acc.Allocate1D(wh); using var m = acc.Allocate1D(mt.ToArray<float>()); using var r = acc.Allocate1D(rt.ToArray<float>());
        using var gw = acc.Allocate1D<float>(d); using var gb = acc.Allocate1D<float>(d);
        using var ws = acc.Allocate1D<float>(RowKernels.LayerNormBackwardWorkspace(rows, d));
        long bytes = 4 * (3 * n + 3L * d + 2L * rows);
        foreach (int gs in groups)
        {
            void Launch(int i) => RowKernels.LayerNormBackward(acc, null, xs[i % k].View, gys[i % k].View, w.View, m.View, r.View, gxs[i % k].View, gw.View, gb.View, ws.View, rows, d, gs);
            Launch(0); acc.Synchronize();
            var (w1, a1) = Compare(gxs[0].GetAsArray1D(), wantGx);
            var (w2, a2) = Compare(gw.GetAsArray1D(), wantGw);
            Record(s, "layernorm bwd (gx,gw,gb)", rows, d, "row + 64-row partials", gs, MedianUs(s, Launch), bytes, Math.Max(w1, w2), Math.Max(a1, a2));
        }
        Dispose(xs); Dispose(gys); Dispose(gxs);
    }

    private static void SoftmaxForward(Setup s, int rows, int c, int[] groups)
    {
        var acc = s.Acc;
        long n = (long)rows * c;
        int k = s.Copies(8 * n);
        var xs = Enumerable.Range(0, k).Select(i => acc.Allocate1D(LabHarness.Random(n, 200 + (ulong)i, -8, 8))).ToArray();
        var ys = Enumerable.Range(0, k).Select(_ => acc.Allocate1D<float>(n)).ToArray();
        foreach (bool log in new[] { false, true })
        {
            float[] want;
            {
                using var x = Tensor.FromArray(xs[0].GetAsArray1D(), [rows, c]);
                using var y = Tensor.Empty([rows, c]);
                CpuBackend.Instance.Softmax(x, y, log);
                want = y.ToArray<float>();
            }
            foreach (var variant in Enum.GetValues<SoftmaxVariant>())
                foreach (int gs in groups)
                {
                    void Launch(int i) => RowKernels.Softmax(acc, null, xs[i % k].View, ys[i % k].View, rows, c, log, variant, gs);
                    Launch(0); acc.Synchronize();
                    var (worst, maxAbs) = Compare(ys[0].GetAsArray1D(), want);
                    Record(s, log ? "log_softmax fwd" : "softmax fwd", rows, c, variant.ToString(), gs, MedianUs(s, Launch), 8 * n, worst, maxAbs);
                }
        }
        Dispose(xs); Dispose(ys);
    }

    private static void SoftmaxBackward(Setup s, int rows, int c, int[] groups)
    {
        var acc = s.Acc;
        long n = (long)rows * c;
        float[] xh = LabHarness.Random(n, 21, -8, 8), gh = LabHarness.Random(n, 22, -1, 1);
        float[] yh, want;
        {
            using var x = Tensor.FromArray(xh, [rows, c]); using var g = Tensor.FromArray(gh, [rows, c]);
            using var y = Tensor.Empty([rows, c]); using var gx = Tensor.Empty([rows, c]);
            CpuBackend.Instance.Softmax(x, y, false);
            CpuBackend.Instance.SoftmaxBackward(y, g, gx, false);
            yh = y.ToArray<float>(); want = gx.ToArray<float>();
        }
        int k = s.Copies(12 * n);
        var ys = Enumerable.Range(0, k).Select(_ => acc.Allocate1D(yh)).ToArray();
        var gys = Enumerable.Range(0, k).Select(_ => acc.Allocate1D(gh)).ToArray();
        var gxs = Enumerable.Range(0, k).Select(_ => acc.Allocate1D<float>(n)).ToArray();
        foreach (int gs in groups)
        {
            void Launch(int i) => RowKernels.SoftmaxBackward(acc, null, ys[i % k].View, gys[i % k].View, gxs[i % k].View, rows, c, false, gs);
            Launch(0); acc.Synchronize();
            var (worst, maxAbs) = Compare(gxs[0].GetAsArray1D(), want);
            Record(s, "softmax bwd", rows, c, "dot + write", gs, MedianUs(s, Launch), 12 * n, worst, maxAbs);
        }
        Dispose(ys); Dispose(gys); Dispose(gxs);
    }

    private static void CrossEntropy(Setup s, int rows, int c, int[] groups)
    {
        var acc = s.Acc;
        long n = (long)rows * c;
        float[] xh = LabHarness.Random(n, 31, -8, 8), glh = LabHarness.Random(rows, 32, 0.5f, 2);
        var tv = new long[rows];
        for (int r = 0; r < rows; r++) tv[r] = r % 7 == 3 ? -100 : (r * 7919L + 11) % c;
        float[] wantLoss, wantLse, wantGx;
        {
            using var x = Tensor.FromArray(xh, [rows, c]); using var t = Tensor.FromArray(tv, [rows]); using var gl = Tensor.FromArray(glh, [rows]);
            using var loss = Tensor.Empty([rows]); using var lse = Tensor.Empty([rows]); using var gx = Tensor.Empty([rows, c]);
            CpuBackend.Instance.CrossEntropyForward(x, t, null, -100, loss, lse);
            CpuBackend.Instance.CrossEntropyBackward(x, t, null, -100, lse, gl, gx);
            wantLoss = loss.ToArray<float>(); wantLse = lse.ToArray<float>(); wantGx = gx.ToArray<float>();
        }
        int k = s.Copies(8 * n);
        var xs = Enumerable.Range(0, k).Select(_ => acc.Allocate1D(xh)).ToArray();
        var gxs = Enumerable.Range(0, k).Select(_ => acc.Allocate1D<float>(n)).ToArray();
        using var tb = acc.Allocate1D(tv); using var glb = acc.Allocate1D(glh);
        using var lossB = acc.Allocate1D<float>(rows); using var lseB = acc.Allocate1D<float>(rows);
        foreach (var variant in new[] { SoftmaxVariant.Online, SoftmaxVariant.OnlineX4 })
        foreach (int gs in groups)
        {
            void Fwd(int i) => RowKernels.CrossEntropyForward(acc, null, xs[i % k].View, tb.View, null, -100, lossB.View, lseB.View, rows, c, gs, variant);
            void Bwd(int i) => RowKernels.CrossEntropyBackward(acc, null, xs[i % k].View, tb.View, null, -100, lseB.View, glb.View, gxs[i % k].View, rows, c, gs);
            Fwd(0); acc.Synchronize();
            var (w1, a1) = Compare(lossB.GetAsArray1D(), wantLoss);
            var (w2, a2) = Compare(lseB.GetAsArray1D(), wantLse);
            Record(s, "cross_entropy fwd (hard)", rows, c, variant.ToString(), gs, MedianUs(s, Fwd), 4 * n + 16L * rows, Math.Max(w1, w2), Math.Max(a1, a2));
            if (variant != SoftmaxVariant.Online) continue;   // the backward has one version
            Bwd(0); acc.Synchronize();
            var (w3, a3) = Compare(gxs[0].GetAsArray1D(), wantGx);
            Record(s, "cross_entropy bwd (hard)", rows, c, "exp·g − onehot", gs, MedianUs(s, Bwd), 8 * n + 16L * rows, w3, a3);
        }
        Dispose(xs); Dispose(gxs);
    }

    // ------------------------------------------------------------------ helpers

    private static double MedianUs(Setup s, Action<int> launch) => LabHarness.MedianUs(s.Acc, launch, s.Batch, s.Reps);

    private static (double worst, double maxAbs) Compare(float[] got, float[] want) => LabHarness.Compare(got, want, Atol, Rtol);

    private static void Record(Setup s, string op, int rows, int c, string version, int gs, double us, long bytes, double worst, double maxAbs)
    {
        var r = new Result(op, $"[{rows}, {c}]", version, gs, us, bytes / (us * 1e3), worst, maxAbs);
        s.Results.Add(r);
        Console.WriteLine(Line(r));
    }

    private static string Line(Result r) => string.Format(CultureInfo.InvariantCulture,
        "{0,-26} {1,-14} {2,-22} {3,5} {4,10:F1} {5,9:F1} {6,7:F1}% {7,10:E2} {8,8:F3} {9}",
        r.Op, r.Shape, r.Version, r.Group, r.Us, r.GBs, 100 * r.GBs / CeilingGBs, r.MaxAbs, r.WorstTol, r.WorstTol <= 1 ? "ok" : "FAIL");

    private static void Print(Setup s)
    {
        string head = string.Format(CultureInfo.InvariantCulture, "{0,-26} {1,-14} {2,-22} {3,5} {4,10} {5,9} {6,8} {7,10} {8,8} {9}",
            "op", "shape", "version", "group", "median µs", "GB/s", "of 3TB/s", "max |err|", "err/tol", "check");
        Console.WriteLine();
        Console.WriteLine($"== row lab summary ({(s.Gpu ? "GPU" : "CPU emulator: timings meaningless")}; bytes = inputs read once + outputs written once; tol = {Atol:G} + {Rtol:G}·|ref| vs CpuBackend)");
        Console.WriteLine(head);
        foreach (var r in s.Results) Console.WriteLine(Line(r));
        Console.WriteLine();
        Console.WriteLine("best per op and shape:");
        foreach (var g in s.Results.Where(r => r.WorstTol <= 1).GroupBy(r => (r.Op, r.Shape)))
            Console.WriteLine(Line(g.MaxBy(r => r.GBs)!));
    }
    private static void Dispose<T>(T[] buffers) where T : IDisposable
    {
        foreach (var b in buffers) b.Dispose();
    }
}
