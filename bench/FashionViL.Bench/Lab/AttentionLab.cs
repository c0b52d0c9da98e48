using System.Diagnostics;
using System.Globalization;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Bench.Lab;

/// <summary>
/// Kernel lab for fused attention (and dropout): the ILGPU kernels of <see cref="AttentionKernels"/> are checked against
/// <see cref="CpuBackend"/> on the same data (padding mask [B,1,1,S] broadcast with zero strides, dropout from the same
/// Philox stream), then timed (median of batches of warm launches, each batch ended by Synchronize) for each group size,
/// and printed as GFLOP/s. FLOPs counted: forward 4·B·H·L·S·D (q·kᵀ and P·v), backward 8·B·H·L·S·D (gP, gV, gQ, gK);
/// softmax, mask and Philox work are not counted. Dropout is printed in GB/s (x read, y and the uint8 mask written).
/// <c>Run("cuda")</c> uses the first CUDA device at B=64, H=12, L=S=124, D=64 (BERT-base heads over the 75+49 joint
/// tokens of FashionViL); <c>Run("cpu")</c> runs ILGPU's CPU accelerator on a tiny shape (timings meaningless there).
/// <para>
/// Floors and predictions, written before any GPU run (none yet; the figures are owed): forward does 3.02 GFLOP and moves
/// at least 145 MB (q, k, v, o 97.5 MB + probs 47.2 MB written), so ≈ 48 µs at 3.0 TB/s against 45 µs at the 66.9 TFLOP/s
/// FP32 datasheet rate; backward 6.04 GFLOP and ≥ 287 MB (q, k, v, go, gq, gk, gv, probs read twice, gS written and read):
/// ≈ 96 µs. The inner loops issue one shared load per FMA-and-a-quarter (4 query rows per thread, the fifth load a
/// broadcast), so they are shared-memory-issue bound at roughly a fifth of FMA peak: expect 10–15 TFLOP/s, i.e. forward
/// 200–300 µs and backward 450–700 µs, best at 128 threads per group (the score phase has 128 work items per tile).
/// If a measurement misses by more than 20%, explain it (occupancy: 41 KB of shared memory allows 5 groups per SM) before
/// changing the kernels. Next steps if it is as predicted: 8 query rows × 2 keys per thread in registers, float4 shared
/// loads of the K/V rows, and mma.sync tf32 for q·kᵀ and P·v.
/// </para>
/// </summary>
public static class AttentionLab
{
    private const double Rtol = 1e-4, Atol = 1e-5;

    private sealed record Result(string Op, string Shape, string Version, int Group, double Us, double Rate, string Unit, double WorstTol, double MaxAbs);

    public static int Run(string deviceKind)
    {
        return LabHarness.Run("attention lab", deviceKind, (acc, gpu) =>
        {
            var results = new List<Result>();
            int b = gpu ? 64 : 2, h = gpu ? 12 : 2, l = gpu ? 124 : 19, s = gpu ? 124 : 37, d = 64;
            int[] groups = gpu ? [64, 128, 256, 512] : [acc.MaxNumThreadsPerGroup / acc.WarpSize * acc.WarpSize];
            int batch = gpu ? 20 : 2, reps = gpu ? 15 : 3;
            foreach (double p in new[] { 0.0, 0.1 })
                Attention(acc, results, b, h, l, s, d, p, groups, batch, reps);
            int rows = gpu ? 64 * 124 : 7, width = gpu ? 768 : 33;
            Dropout(acc, results, rows, width, 0.1, gpu ? [128, 256, 512] : groups, batch, reps);
            Print(results, gpu);
            return results.All(r => r.WorstTol <= 1) ? 0 : 3;
        });
    }

    private static void Attention(Accelerator acc, List<Result> results, int b, int h, int l, int s, int d, double p, int[] groups, int batch, int reps)
    {
        double scale = 1.0 / Math.Sqrt(d);
        const ulong seed = 1234, offset = 77;
        long nq = (long)b * h * l * d, nk = (long)b * h * s * d, np = (long)b * h * l * s;
        float[] qh = LabHarness.Random(nq, 1, -2, 2), kh = LabHarness.Random(nk, 2, -2, 2), vh = LabHarness.Random(nk, 3, -1, 1), goh = LabHarness.Random(nq, 4, -1, 1);
        var maskh = new float[b * s];
        for (int bi = 0; bi < b; bi++)
            for (int j = Math.Max(1, s - (bi * 7) % (s / 2 + 1)); j < s; j++) maskh[bi * s + j] = -10000f;

        // CPU reference (the lab's oracle)
        float[] wantO, wantP, wantGq, wantGk, wantGv;
        {
            using var q = Tensor.FromArray(qh, b, h, l, d); using var k = Tensor.FromArray(kh, b, h, s, d);
            using var v = Tensor.FromArray(vh, b, h, s, d); using var go = Tensor.FromArray(goh, b, h, l, d);
            using var ms = Tensor.FromArray(maskh, b, 1, 1, s);
            using var mask = ms.AsStrided([b, h, l, s], [s, 0, 0, 1], 0);
            using var o = Tensor.Empty([b, h, l, d]); using var probs = Tensor.Empty([b, h, l, s]);
            var sw = Stopwatch.StartNew();
            CpuBackend.Instance.AttentionForward(q, k, v, mask, scale, p, seed, offset, o, probs);
            using var gq = Tensor.Empty([b, h, l, d]); using var gk = Tensor.Empty([b, h, s, d]); using var gv = Tensor.Empty([b, h, s, d]);
            CpuBackend.Instance.AttentionBackward(q, k, v, probs, scale, p, seed, offset, go, gq, gk, gv);
            Console.WriteLine($"  CPU reference (p={p}) took {sw.Elapsed.TotalMilliseconds:F0} ms");
            wantO = o.ToArray<float>(); wantP = probs.ToArray<float>();
            wantGq = gq.ToArray<float>(); wantGk = gk.ToArray<float>(); wantGv = gv.ToArray<float>();
        }

        using var dq = acc.Allocate1D(qh); using var dk = acc.Allocate1D(kh); using var dv = acc.Allocate1D(vh);
        using var dgo = acc.Allocate1D(goh); using var dm = acc.Allocate1D(maskh);
        using var dO = acc.Allocate1D<float>(nq); using var dp = acc.Allocate1D<float>(np);
        using var dgq = acc.Allocate1D<float>(nq); using var dgk = acc.Allocate1D<float>(nk); using var dgv = acc.Allocate1D<float>(nk);
        using var ws = acc.Allocate1D<float>(AttentionKernels.BackwardWorkspace(b, h, l, s));
        var layout = new AttentionMaskLayout(0, s, 0, 0, 1);
        string shape = $"[{b},{h},{l},{s}]x{d}";
        double flops = (double)b * h * l * s * d;
        foreach (int gs in groups)
        {
            void Fwd() => AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm.View, layout, dO.View, dp.View, b, h, l, s, d, scale, p, seed, offset, gs);
            void Bwd() => AttentionKernels.Backward(acc, null, dq.View, dk.View, dv.View, dp.View, dgo.View, dgq.View, dgk.View, dgv.View, ws.View,
                b, h, l, s, d, scale, p, seed, offset, gs);
            Fwd(); acc.Synchronize();
            var (w1, a1) = LabHarness.Compare(dO.GetAsArray1D(), wantO, Atol, Rtol);
            var (w2, a2) = LabHarness.Compare(dp.GetAsArray1D(), wantP, Atol, Rtol);
            // backward from the CPU's probs, so its check does not inherit the forward's rounding
            dp.CopyFromCPU(wantP);
            Bwd(); acc.Synchronize();
            var (w3, a3) = LabHarness.Compare(dgq.GetAsArray1D(), wantGq, Atol, Rtol);
            var (w4, a4) = LabHarness.Compare(dgk.GetAsArray1D(), wantGk, Atol, Rtol);
            var (w5, a5) = LabHarness.Compare(dgv.GetAsArray1D(), wantGv, Atol, Rtol);
            string version = $"tiled QT{AttentionKernels.QT} p={p.ToString(CultureInfo.InvariantCulture)}";
            double fu = LabHarness.MedianUs(acc, _ => Fwd(), batch, reps);
            Record(results, new Result("attention fwd", shape, version, gs, fu, 4 * flops / (fu * 1e3), "GFLOP/s", Math.Max(w1, w2), Math.Max(a1, a2)));
            double bu = LabHarness.MedianUs(acc, _ => Bwd(), batch, reps);
            Record(results, new Result("attention bwd", shape, version, gs, bu, 8 * flops / (bu * 1e3), "GFLOP/s",
                Math.Max(w3, Math.Max(w4, w5)), Math.Max(a3, Math.Max(a4, a5))));
        }
    }

    private static void Dropout(Accelerator acc, List<Result> results, int rows, int width, double p, int[] groups, int batch, int reps)
    {
        int n = rows * width;
        float[] xh = LabHarness.Random(n, 9, -3, 3);
        float[] want; byte[] wantMask;
        {
            using var x = Tensor.FromArray(xh, rows, width);
            using var y = Tensor.Empty([rows, width]); using var m = Tensor.Empty([rows, width], DType.UInt8);
            CpuBackend.Instance.Dropout(x, y, m, p, 5, 11);
            want = y.ToArray<float>(); wantMask = m.ToArray<byte>();
        }
        using var dx = acc.Allocate1D(xh); using var dy = acc.Allocate1D<float>(n); using var dm = acc.Allocate1D<byte>(n);
        foreach (int gs in groups)
        {
            void Launch() => DropoutKernels.Dropout(acc, null, dx.View, dy.View, dm.View, n, p, 5, 11, gs);
            Launch(); acc.Synchronize();
            var (worst, maxAbs) = LabHarness.Compare(dy.GetAsArray1D(), want, Atol, Rtol);
            if (!dm.GetAsArray1D().AsSpan().SequenceEqual(wantMask)) worst = double.PositiveInfinity;
            double us = LabHarness.MedianUs(acc, _ => Launch(), batch, reps);
            Record(results, new Result("dropout", $"[{rows}, {width}]", $"philox/4 p={p.ToString(CultureInfo.InvariantCulture)}", gs, us, 9.0 * n / (us * 1e3), "GB/s", worst, maxAbs));
        }
    }

    // ------------------------------------------------------------------ helpers

    private static void Record(List<Result> results, Result r)
    {
        results.Add(r);
        Console.WriteLine(Line(r));
    }

    private static string Line(Result r) => string.Format(CultureInfo.InvariantCulture,
        "{0,-14} {1,-20} {2,-18} {3,5} {4,10:F1} {5,10:F1} {6,-8} {7,10:E2} {8,8:F3} {9}",
        r.Op, r.Shape, r.Version, r.Group, r.Us, r.Rate, r.Unit, r.MaxAbs, r.WorstTol, r.WorstTol <= 1 ? "ok" : "FAIL");

    private static void Print(List<Result> results, bool gpu)
    {
        Console.WriteLine();
        Console.WriteLine($"== attention lab summary ({(gpu ? "GPU" : "CPU emulator: timings meaningless")}; tol = {Atol:G} + {Rtol:G}·|ref| vs CpuBackend; "
            + "FLOPs 4·BHLSD fwd, 8·BHLSD bwd; dropout bytes 9/element)");
        Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "{0,-14} {1,-20} {2,-18} {3,5} {4,10} {5,10} {6,-8} {7,10} {8,8} {9}",
            "op", "shape", "version", "group", "median µs", "rate", "unit", "max |err|", "err/tol", "check"));
        foreach (var r in results) Console.WriteLine(Line(r));
        Console.WriteLine();
        Console.WriteLine("best per op and version:");
        foreach (var g in results.Where(r => r.WorstTol <= 1).GroupBy(r => (r.Op, r.Version)))
            Console.WriteLine(Line(g.MaxBy(r => r.Rate)!));
    }
}
