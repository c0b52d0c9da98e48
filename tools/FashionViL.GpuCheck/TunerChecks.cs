using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;
using Device = FashionViL.Tensors.Device;

namespace FashionViL.GpuCheck;

/// <summary>
/// What <see cref="KernelTuner"/> rests on, checked on the device itself: every group of kernels it chooses between gives
/// the same bits there (on the emulator the unit tests check it; on a GPU it depends on ptxas contracting every product
/// and sum into one FFMA in each kernel alike), and the tuned backend gives the untuned backend's bits through its CUDA
/// event timing path.
/// </summary>
public static partial class Checks
{
    private const string SameBitsName = "tuner candidates: same bits (SGEMM v1–v6, conv v1–v4, tensor-core tiles)";
    private const string TunedName = "kernel tuner on == off (bitwise, fresh cache)";

    private static float[] Noise(Random r, long n)
    {
        var x = new float[n];
        for (long i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 2 - 1);
        return x;
    }

    /// <summary>The number of elements whose bits differ (lengths must match).</summary>
    private static int Differing(float[] a, float[] b)
    {
        int d = 0;
        for (int i = 0; i < a.Length; i++)
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) d++;
        return d;
    }

    private const string AsyncName = "tf32 GEMM: cp.async 128x128 tile (128x128a) == register prefetch (bitwise)";

    /// <summary>
    /// The asynchronous 128×128 tile (<see cref="TensorCoreTile.Tile128x128Async"/>) against the register-prefetch one on BERT-sized
    /// products: forward (NT), FFN (NN), a weight gradient (TN, K = 992), an edge-and-K-tail shape and a batched strided
    /// product, with operands rounded by the kernel, by the caller, or one of each: the same bits, and the asynchronous
    /// kernel really ran. Its first run on a device is the check of its inline PTX (cp.async, the dynamic-shared symbol).
    /// </summary>
    private static CheckResult AsyncStagesSameBits(Device device)
    {
        var rt = CudaRuntime.Get(device.Index);
        var acc = rt.Accelerator;
        var st = rt.Stream;
        var rng = new Random(23);
        var failures = new List<string>();
        int runs = 0;
        // on the emulator (CI) the same layouts at sizes its emulated warps finish in seconds
        var shapes = rt.IsEmulated
            ? new[] { (1, 136, 128, 72, false, true), (1, 128, 136, 36, false, false), (1, 128, 128, 52, true, false), (2, 40, 132, 20, true, true) }
            : new[] { (1, 992, 768, 768, false, true), (1, 992, 3072, 768, false, false), (1, 768, 768, 992, true, false),
                      (1, 1000, 776, 772, false, false), (3, 124, 124, 64, false, true), (1, 132, 260, 36, true, true) };
        foreach (var (batch, m, n, k, ta, tb) in shapes)
        {
            int aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n;
            var a = Noise(rng, (long)batch * aRows * aCols); var b = Noise(rng, (long)batch * bRows * bCols);
            var aR = a.Select(v => (float)PrecisionRounding.Round(v, Precision.Tf32)).ToArray();
            var bR = b.Select(v => (float)PrecisionRounding.Round(v, Precision.Tf32)).ToArray();
            using var ab = acc.Allocate1D(a); using var bb = acc.Allocate1D(b); using var abR = acc.Allocate1D(aR); using var bbR = acc.Allocate1D(bR);
            using var cb = acc.Allocate1D<float>((long)batch * m * n);
            foreach (var (preA, preB) in new[] { (false, false), (true, true), (false, true) })
            {
                float[] Run(bool async)
                {
                    var g = new GemmArgs
                    {
                        A = preA ? abR.View : ab.View, B = preB ? bbR.View : bb.View, C = cb.View, M = m, N = n, K = k, Batch = batch,
                        Lda = aCols, Ldb = bCols, Ldc = n, StrideA = (long)aRows * aCols, StrideB = (long)bRows * bCols, StrideC = (long)m * n,
                        TransA = ta, TransB = tb, Alpha = 1f, Beta = 0f, ARounded = preA, BRounded = preB,
                    };
                    long before = TensorCoreGemm.AsyncLaunches;
                    TensorCoreGemm.Launch(acc, st, g, Precision.Tf32, async ? TensorCoreTile.Tile128x128Async : TensorCoreTile.Tile128x128);
                    st.Synchronize();
                    if (async && TensorCoreGemm.AsyncLaunches == before) failures.Add($"{m}x{n}x{k}: the asynchronous kernel did not run");
                    return cb.GetAsArray1D();
                }
                var sync = Run(false);
                var asy = Run(true);
                runs++;
                int d = Differing(asy, sync);
                if (d > 0) failures.Add($"batch {batch} {m}x{n}x{k} {(ta ? 't' : 'n')}{(tb ? 't' : 'n')} pre-rounded A {preA} B {preB}: {d} of {sync.Length} differ");
            }
        }
        return failures.Count == 0 ? new(AsyncName, "PASS", 0, 0, $"{runs} products bit for bit")
            : new(AsyncName, "FAIL", double.NaN, 0, string.Join("; ", failures.Take(4)) + (failures.Count > 4 ? $"; … {failures.Count} in all" : ""));
    }

    private static CheckResult SameBitsCandidates(Device device)
    {
        var rt = CudaRuntime.Get(device.Index);
        var acc = rt.Accelerator;
        var st = rt.Stream;
        var rng = new Random(11);
        var failures = new List<string>();
        int groups = 0;

        void Group(string what, IReadOnlyList<(string Name, Func<float[]> Run)> runs)
        {
            groups++;
            float[]? first = null;
            foreach (var (name, run) in runs)
            {
                var got = run();
                if (first is null) { first = got; continue; }
                int d = Differing(got, first);
                if (d > 0) failures.Add($"{what}: {name} differs from {runs[0].Name} in {d} of {got.Length} elements");
            }
        }

        // SGEMM: ragged and aligned (the 128-bit paths of v4/v5), bias + GELU, beta ≠ 0, transposes
        // (the last three: several 128-row and -column tiles whose stages lie inside both aligned operands: the bounds-free
        // stage loops of the 128×128 tensor-core tile and of SGEMM v6, in the NN, TT and TN layouts)
        foreach (var (m, n, k, ta, tb, beta, epi) in new[] { (130, 70, 41, false, false, 0f, true), (128, 128, 64, false, true, 0.5f, false), (96, 200, 48, true, false, 0f, true),
                     (256, 256, 64, false, false, 0f, false), (128, 256, 48, true, true, 0.5f, true), (256, 128, 48, true, false, 0f, false) })
        {
            var a = Noise(rng, (long)m * k); var b = Noise(rng, (long)k * n); var c0 = Noise(rng, (long)m * n); var bias = Noise(rng, n);
            using var ab = acc.Allocate1D(a); using var bb = acc.Allocate1D(b); using var cb = acc.Allocate1D<float>((long)m * n); using var biasB = acc.Allocate1D(bias);
            float[] Gemm(GemmVersion v, Precision p, TensorCoreTile? tile)
            {
                cb.CopyFromCPU(c0);
                var g = GemmArgs.Dense(ab.View, bb.View, cb.View, 1, m, n, k, ta, tb, 1f, beta);
                if (epi) { g.Bias = biasB.View; g.Gelu = true; }
                if (p == Precision.Fp32) GemmKernels.Launch(acc, st, g, v);
                else TensorCoreGemm.Launch(acc, st, g, p, tile!.Value);
                st.Synchronize();
                return cb.GetAsArray1D();
            }
            string shape = $"gemm {m}x{n}x{k} {(ta ? 't' : 'n')}{(tb ? 't' : 'n')}{(beta != 0 ? " beta" : "")}{(epi ? " bias+gelu" : "")}";
            Group($"{shape} fp32", GemmKernels.Versions.Select(v => ($"v{(int)v}", (Func<float[]>)(() => Gemm(v, Precision.Fp32, null)))).ToList());
            foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
            {
                // (the tuner's candidates: the cp.async tile only when FVL_TC_ASYNC opts in; AsyncStagesSameBits, run last,
                // checks it on its own, so that a fault in it cannot take these checks down)
                Group($"{shape} {p}", TensorCoreGemm.TilesFor(p).Select(t => (t.ToString(), (Func<float[]>)(() => Gemm(default, p, t)))).ToList());
            }
        }

        // Convolutions: forward, input gradient, weight gradient (unsplit and in 3 chunks), per fp32 version and tensor-core tile
        foreach (var (bt, cin, h, w, cout, kk, p) in new[]
                 {
                     (2, 5, 9, 7, 6, 3, new Conv2dParams(1, 1, 1, 1, 1, 1)),
                     (1, 4, 8, 8, 130, 1, new Conv2dParams(2, 2, 0, 0, 0, 0)),
                     // K 144, Cout 136: the 128×128 tile's forward path with 128-bit weight loads (a whole row tile)
                     (2, 16, 10, 9, 136, 3, new Conv2dParams(1, 1, 1, 1, 1, 1)),
                 })
        {
            var (ho, wo) = ConvKernels.OutputSize(h, w, kk, kk, p);
            var x = Noise(rng, (long)bt * cin * h * w); var wt = Noise(rng, (long)cout * cin * kk * kk);
            var gy = Noise(rng, (long)bt * cout * ho * wo); var bias = Noise(rng, cout);
            using var xb = acc.Allocate1D(x); using var wb = acc.Allocate1D(wt); using var gyb = acc.Allocate1D(gy); using var biasB = acc.Allocate1D(bias);
            using var yb = acc.Allocate1D<float>(gy.Length); using var gxb = acc.Allocate1D<float>(x.Length); using var gwb = acc.Allocate1D<float>(wt.Length);
            using var gbb = acc.Allocate1D<float>(cout); using var ws = acc.Allocate1D<float>(3L * wt.Length);
            float[] Fwd(ConvVersion v, Precision pr, TensorCoreTile? t)
            {
                ConvKernels.Conv2dForward(acc, st, xb.View, wb.View, biasB.View, yb.View, bt, cin, h, w, cout, kk, kk, p, v, pr, t);
                st.Synchronize();
                return yb.GetAsArray1D();
            }
            float[] Bin(ConvVersion v, Precision pr, TensorCoreTile? t)
            {
                ConvKernels.Conv2dBackwardInput(acc, st, gyb.View, wb.View, gxb.View, bt, cin, h, w, cout, kk, kk, p, v, pr, t);
                st.Synchronize();
                return gxb.GetAsArray1D();
            }
            float[] Bw(ConvVersion v, Precision pr, TensorCoreTile? t, int splits)
            {
                ConvKernels.Conv2dBackwardWeight(acc, st, xb.View, gyb.View, gwb.View, gbb.View, bt, cin, h, w, cout, kk, kk, p, v,
                    splits > 1 ? ws.View : default, splits, pr, t);
                st.Synchronize();
                return gwb.GetAsArray1D();
            }
            string shape = $"conv {kk}x{kk} [{bt},{cin},{h},{w}]→{cout}";
            var fp = new[] { ConvVersion.Tile64, ConvVersion.Tile128, ConvVersion.Tile128Prefetch, ConvVersion.Tile64Prefetch };
            Group($"{shape} forward fp32", fp.Select(v => (v.ToString(), (Func<float[]>)(() => Fwd(v, Precision.Fp32, null)))).ToList());
            Group($"{shape} input gradient fp32", fp.Select(v => (v.ToString(), (Func<float[]>)(() => Bin(v, Precision.Fp32, null)))).ToList());
            foreach (int sp in new[] { 1, 3 })
                Group($"{shape} weight gradient fp32, {sp} split(s)", fp.Select(v => (v.ToString(), (Func<float[]>)(() => Bw(v, Precision.Fp32, null, sp)))).ToList());
            float[] FwdTable()   // the 128×128 tile's forward convolution through the coordinate tables (FVL_TC_CONV_FWD=table)
            {
                bool was = ConvKernels.Tc3ForwardPath;
                ConvKernels.Tc3ForwardPath = false;
                try { return Fwd(ConvVersion.Auto, Precision.Tf32, TensorCoreTile.Tile128x128); }
                finally { ConvKernels.Tc3ForwardPath = was; }
            }
            Group($"{shape} forward Tf32", TensorCoreGemm.ConvTilesFor(Precision.Tf32).Select(t => (t.ToString(), (Func<float[]>)(() => Fwd(ConvVersion.Auto, Precision.Tf32, t))))
                .Append(("Tile128x128 table", (Func<float[]>)FwdTable)).ToList());
            Group($"{shape} input gradient Tf32", TensorCoreGemm.ConvTilesFor(Precision.Tf32).Select(t => (t.ToString(), (Func<float[]>)(() => Bin(ConvVersion.Auto, Precision.Tf32, t)))).ToList());
            Group($"{shape} weight gradient Tf32, 3 splits", TensorCoreGemm.ConvTilesFor(Precision.Tf32).Select(t => (t.ToString(), (Func<float[]>)(() => Bw(ConvVersion.Auto, Precision.Tf32, t, 3)))).ToList());
        }
        return failures.Count == 0
            ? new(SameBitsName, "PASS", 0, 0, $"{groups} groups of candidates, every pair bit for bit equal")
            : new(SameBitsName, "FAIL", double.NaN, 0, string.Join("; ", failures.Take(6)) + (failures.Count > 6 ? $"; … {failures.Count} in all" : ""));
    }

    /// <summary>Ops that reach every tuned decision (fp32 / TF32 / bf16 GEMMs, split-K GEMMs in fp32 and TF32, a GEMM that
    /// accumulates into its output, fp32 and TF32 convolutions with a split-K weight gradient), forward and backward, with the
    /// tuner off, on (a fresh cache file in a temporary folder, through the CUDA-event path), and then with every remembered
    /// shape forced onto each of its candidates in turn (<see cref="KernelTuner.ForceChoices"/>): every output and gradient
    /// must be the same bits each time.</summary>
    private static CheckResult TunedEqualsUntuned(Device device)
    {
        var acc = CudaRuntime.Get(device.Index).Accelerator;
        var cases = new (string Name, int[][] Shapes, Func<Tensor[], Tensor> F, Precision P)[]
        {
            ("matmul", [[130, 40], [40, 70]], t => t[0].Matmul(t[1]), Precision.Fp32),
            ("linear, split-K weight gradient", [[600, 64], [48, 64], [48]], t => Ops.Linear(t[0], t[1], t[2]), Precision.Fp32),
            ("linear, split-K weight gradient tf32", [[600, 64], [48, 64], [48]], t => Ops.Linear(t[0], t[1], t[2]), Precision.Tf32),
            ("conv 3x3, split-K weight gradient", [[2, 8, 16, 16], [16, 8, 3, 3], [16]], t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), Precision.Fp32),
            ("conv 3x3 tf32", [[2, 8, 16, 16], [16, 8, 3, 3], [16]], t => Ops.Conv2d(t[0], t[1], t[2], 1, 1), Precision.Tf32),
            ("linear tf32", [[3, 50, 33], [65, 33], [65]], t => Ops.Linear(t[0], t[1], t[2]), Precision.Tf32),
            ("linear bf16", [[3, 50, 33], [65, 33], [65]], t => Ops.Linear(t[0], t[1], t[2]), Precision.Bf16),
            ("conv 1x1 s2 tf32", [[1, 4, 8, 8], [130, 4, 1, 1]], t => Ops.Conv2d(t[0], t[1], null, new Conv2dParams(2, 2, 0, 0, 0, 0)), Precision.Tf32),
        };
        List<float[]> Bits((string Name, int[][] Shapes, Func<Tensor[], Tensor> F, Precision P) c, ulong seed)
        {
            using var scope = Tensor.Scope();
            var g = new Generator(seed);
            var dev = c.Shapes.Select(s => { var d = g.Uniform(s, -2, 2).To(device); d.RequiresGrad = true; return d; }).ToArray();
            using (MatMulPrecision.Use(c.P))
            {
                var y = c.F(dev);
                using var w = g.Uniform(y.Shape, 0.5, 1.5).To(device);
                (y * w).Sum().Backward();
                return [y.ToArray<float>(), .. dev.Select(d => d.Grad!.ToArray<float>())];
            }
        }
        // C ← A·B + 1·C straight on the backend, in fp32 and TF32: the output the timed runs accumulate into is restored
        List<float[]> Accumulate(Precision p, ulong seed)
        {
            using var scope = Tensor.Scope();
            var g = new Generator(seed);
            var a = g.Uniform([70, 20], -2, 2).To(device);
            var b = g.Uniform([20, 90], -2, 2).To(device);
            var c = g.Uniform([70, 90], -2, 2).To(device);
            using (MatMulPrecision.Use(p)) Backends.Get(device).MatMul(a, b, c, false, false, 1, 1);
            return [c.ToArray<float>()];
        }
        var all = cases.Select(c => (c.Name, (Func<ulong, List<float[]>>)(seed => Bits(c, seed))))
            .Append(("accumulating matmul (beta 1)", seed => Accumulate(Precision.Fp32, seed)))
            .Append(("accumulating matmul (beta 1) tf32", seed => Accumulate(Precision.Tf32, seed))).ToList();
        var mode = KernelTuner.ModeSetting;
        var file = KernelTuner.CacheFile;
        string dir = Path.Combine(Path.GetTempPath(), $"fvl-gpu-check-tune-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        var failures = new List<string>();
        int forcedRuns = 0;
        long differ = 0;
        double tuningMs = 0;
        try
        {
            KernelTuner.CacheFile = Path.Combine(dir, "tune.json");
            KernelTuner.Forget(acc);
            ulong seed = 40;
            foreach (var (name, run) in all)
            {
                void Same(List<float[]> want, List<float[]> got, string how)
                {
                    for (int i = 0; i < want.Count; i++)
                        if (Differing(got[i], want[i]) is var d and > 0)
                            failures.Add($"{name} ({how}): {(i == 0 ? "output" : $"gradient {i - 1}")} differs in {d} elements");
                }
                KernelTuner.Mode = TuneMode.Off;
                var off = run(seed);
                KernelTuner.Mode = TuneMode.On;
                Same(off, run(seed), "tuned");
                int most = KernelTuner.ForceChoices(acc, 0);
                if (most < 2) failures.Add($"{name}: no remembered shape with two or more candidates to force");
                for (int i = 0; i < most; i++)
                {
                    KernelTuner.ForceChoices(acc, i);
                    Same(off, run(seed), $"every shape on its candidate {i}");
                    forcedRuns++;
                }
                var st = KernelTuner.Stats(acc);
                differ += st.DifferFromRule;
                tuningMs += st.TuningMs;
                KernelTuner.Forget(acc);   // back to the timed choices (the forced ones were never written)
                seed++;
            }
            string detail = $"{all.Count} ops, {KernelTuner.KnownChoices(acc)} shapes timed ({differ} picks away from the rule, {tuningMs:F0} ms), {forcedRuns} forced runs";
            return failures.Count == 0 ? new(TunedName, "PASS", 0, 0, detail) : new(TunedName, "FAIL", double.NaN, 0, string.Join("; ", failures.Take(6)) + "; " + detail);
        }
        finally
        {
            KernelTuner.ModeSetting = mode;
            KernelTuner.CacheFile = file;
            KernelTuner.Forget(acc);
            Directory.Delete(dir, recursive: true);
        }
    }
}
