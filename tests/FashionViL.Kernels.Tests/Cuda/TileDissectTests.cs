using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The dissected 128×128 TF32 tiles (<see cref="TcPart"/>, <c>fashionvil bench dissect</c>): each part computes exactly what
/// its definition says it leaves behind — no mma: C = 0 (conv: the bias); no global loads: the prologue's stage 0 (the first
/// 16 k) read again every second stage (register-prefetch tiles) or every third (cp.async tile) — on 2-thread groups and on
/// the 256-thread groups that run the GPU's one-slot-per-thread path; the parts' PTX has (no) mma and (no) loads where they
/// should; the scope restores the production kernel; and the mma peak kernel's plumbing.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class TileDissectTests() : EmulatorKernelTestBase(assertions: true)
{
    private static float[] Random(Random r, int n) => Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();

    // leading dimensions are multiples of 4 so that the cp.async tile runs (it hands other operands to the register-prefetch tile)
    /// <summary>float64 Σ over k &lt; <paramref name="kMax"/> of rounded A·B (and of |A·B|, for the tolerance).</summary>
    private static (double[] Sum, double[] Abs) Product(float[] a, float[] b, int m, int n, int k, bool ta, bool tb, int kMax)
    {
        var sum = new double[m * n];
        var abs = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                for (int q = 0; q < Math.Min(k, kMax); q++)
                {
                    double av = PrecisionRounding.ToTf32(ta ? a[q * m + i] : a[i * k + q]), bv = PrecisionRounding.ToTf32(tb ? b[j * k + q] : b[q * n + j]);
                    sum[i * n + j] += av * bv;
                    abs[i * n + j] += Math.Abs(av * bv);
                }
        return (sum, abs);
    }

    private static IEnumerable<(Accelerator Acc, string Name)> Groups(Accelerator two, Context ctx, List<Accelerator> owned)
    {
        yield return (two, "2-thread groups");
        var wide = new CPUDevice(16, 16, 1).CreateCPUAccelerator(ctx, CPUAcceleratorMode.Parallel);
        owned.Add(wide);
        yield return (wide, "256-thread groups");
    }

    [Test]
    public void GemmPartsComputeWhatTheyLeaveBehind()
    {
        var r = new Random(5);
        var owned = new List<Accelerator>();
        try
        {
            foreach (var (acc, groups) in Groups(Acc, Ctx, owned))
                foreach (var tile in new[] { TensorCoreTile.Tile128x128, TensorCoreTile.Tile128x128Async })
                    foreach (var (m, n, k, ta, tb) in new[] { (136, 132, 52, false, true), (128, 128, 64, true, false), (132, 128, 100, false, false) })
                    {
                        var a = Random(r, m * k);
                        var b = Random(r, k * n);
                        using var aBuf = Up(acc, a);
                        using var bBuf = Up(acc, b);
                        using var cBuf = acc.Allocate1D<float>((long)m * n);
                        var args = GemmArgs.Dense(aBuf.View, bBuf.View, cBuf.View, 1, m, n, k, ta, tb);
                        string what = $"{tile} {m}x{n}x{k} {(ta ? 't' : 'n')}{(tb ? 't' : 'n')}, {groups}";

                        cBuf.CopyFromCPU(Enumerable.Repeat(float.NaN, m * n).ToArray());
                        using (TensorCoreGemm.UsePart(TcPart.NoMath)) TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, tile);
                        acc.Synchronize();
                        Assert.That(cBuf.GetAsArray1D(), Is.All.EqualTo(0f), $"{what}: no mma leaves C = 0");

                        long asyncBefore = TensorCoreGemm.AsyncLaunchCount;
                        using (TensorCoreGemm.UsePart(TcPart.NoGlobalLoads)) TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, tile);
                        acc.Synchronize();
                        Assert.That(TensorCoreGemm.AsyncLaunchCount - asyncBefore, Is.EqualTo(tile == TensorCoreTile.Tile128x128Async ? 1 : 0), $"{what}: the tile ran");
                        var got = cBuf.GetAsArray1D();
                        // stage 0 (k < 16) stays in buffer 0, the other buffers hold zeros: the register-prefetch tile reads it
                        // every second stage, the cp.async tile every third
                        int kTiles = (k + 15) / 16, times = tile == TensorCoreTile.Tile128x128 ? (kTiles + 1) / 2 : (kTiles + 2) / 3;
                        var (sum, abs) = Product(a, b, m, n, k, ta, tb, 16);
                        var (full, _) = Product(a, b, m, n, k, ta, tb, k);
                        int farFromFull = 0;
                        for (int i = 0; i < m * n; i++)
                        {
                            double want = times * sum[i], tol = times * (32 * Math.Pow(2, -24) * abs[i]) + 1e-30;
                            Assert.That(Math.Abs(got[i] - want), Is.LessThanOrEqualTo(tol), $"{what}: element {i}: {got[i]} against {want} (stage 0 × {times})");
                            if (Math.Abs(got[i] - full[i]) > 1e-3) farFromFull++;
                        }
                        Assert.That(farFromFull, Is.GreaterThan(m * n / 2), $"{what}: the part still computed the whole product");
                    }
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    [Test]
    public void ConvPartsComputeWhatTheyLeaveBehind()
    {
        var r = new Random(6);
        const int batch = 2, cin = 5, h = 9, wd = 11, cout = 7, kh = 3, kw = 3;   // K = 45: three stages
        var cp = Conv2dParams.Symmetric(1, 1);
        var x = Random(r, batch * cin * h * wd);
        var w = Random(r, cout * cin * kh * kw);
        var bias = Random(r, cout);
        var owned = new List<Accelerator>();
        try
        {
            foreach (var (acc, groups) in Groups(Acc, Ctx, owned))
            {
                using var dx = Up(acc, x);
                using var dw = Up(acc, w);
                using var db = Up(acc, bias);
                using var dy = acc.Allocate1D<float>(batch * cout * h * wd);
                dy.CopyFromCPU(Enumerable.Repeat(float.NaN, batch * cout * h * wd).ToArray());
                using (TensorCoreGemm.UsePart(TcPart.NoMath))
                    ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, db.View, dy.View, batch, cin, h, wd, cout, kh, kw, cp, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
                acc.Synchronize();
                var y = dy.GetAsArray1D();
                for (int i = 0; i < y.Length; i++)
                    Assert.That(y[i], Is.EqualTo(bias[i / (h * wd) % cout]), $"{groups}: no mma leaves the bias, output {i}");

                using (TensorCoreGemm.UsePart(TcPart.NoGlobalLoads))
                    ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, db.View, dy.View, batch, cin, h, wd, cout, kh, kw, cp, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
                acc.Synchronize();
                y = dy.GetAsArray1D();
                int farFromFull = 0;
                for (int n = 0; n < batch; n++)
                    for (int co = 0; co < cout; co++)
                        for (int oh = 0; oh < h; oh++)
                            for (int ow = 0; ow < wd; ow++)
                            {
                                // the implicit GEMM's k = (ci·kh + i)·kw + j: stage 0 is k < 16, read by stages 0 and 2 of 3
                                double want = bias[co], abs = Math.Abs(bias[co]), full = bias[co];
                                for (int k = 0; k < cin * kh * kw; k++)
                                {
                                    int ci = k / (kh * kw), i = k / kw % kh, j = k % kw, ih = oh - 1 + i, iw = ow - 1 + j;
                                    if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                                    double p = (double)PrecisionRounding.ToTf32(w[co * cin * kh * kw + k]) * PrecisionRounding.ToTf32(x[((n * cin + ci) * h + ih) * wd + iw]);
                                    full += p;
                                    if (k >= 16) continue;
                                    want += 2 * p; abs += 2 * Math.Abs(p);
                                }
                                int yi = ((n * cout + co) * h + oh) * wd + ow;
                                Assert.That(Math.Abs(y[yi] - want), Is.LessThanOrEqualTo(32 * Math.Pow(2, -24) * abs), $"{groups}: output {yi}: {y[yi]} against the first 16 taps' {want}");
                                if (Math.Abs(y[yi] - full) > 1e-3) farFromFull++;
                            }
                Assert.That(farFromFull, Is.GreaterThan(y.Length / 2), $"{groups}: the part still computed the whole convolution");
            }
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    /// <summary>Scopes nest and restore (Full outside every scope: the backend's launches), per thread; an undefined part is
    /// refused by name.</summary>
    [Test]
    public void ScopesNestRestoreAndStayOnTheirThread()
    {
        Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.Full));
        using (TensorCoreGemm.UsePart(TcPart.NoMath))
        {
            Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.NoMath));
            TcPart other = TcPart.NoMath;
            var t = new Thread(() => other = TensorCoreGemm.Part);
            t.Start(); t.Join();
            Assert.That(other, Is.EqualTo(TcPart.Full), "another thread's launches are not dissected");
            var inner = TensorCoreGemm.UsePart(TcPart.NoGlobalLoads);
            Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.NoGlobalLoads));
            inner.Dispose();
            inner.Dispose();   // twice: no effect
            Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.NoMath));
        }
        Assert.That(TensorCoreGemm.Part, Is.EqualTo(TcPart.Full));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TensorCoreGemm.UsePart((TcPart)7))!;
        Assert.That(e.Message, Does.Contain("NoGlobalLoads"));
    }

    /// <summary>Each part's PTX: the production instantiation is what the audits compile; no mma without math; no global loads
    /// (register-prefetch tiles) or only the prologue's copies (cp.async tile) without loads; the peak kernel: 16 mma in its
    /// loop and no memory traffic but its one store.</summary>
    [Test]
    public void PartsCompileToPtxWithoutWhatTheyLeaveOut()
    {
        using var c = new Sm90Ptx();
        const string mma = @"mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32";
        int Count(string ptx, string re) => System.Text.RegularExpressions.Regex.Count(ptx, re);
        Assert.That(TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128, TcPart.Full), Is.EqualTo(TensorCoreGemm.KernelMethod(TensorCoreTile.Tile128x128)));
        Assert.That(TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128Async, TcPart.Full), Is.EqualTo(TensorCoreGemm.KernelMethod(TensorCoreTile.Tile128x128Async)));
        Assert.That(ConvKernels.Tc3PartMethod(TcPart.Full), Is.EqualTo(ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x128)));

        var sync = new Dictionary<TcPart, string>();
        var async = new Dictionary<TcPart, string>();
        var conv = new Dictionary<TcPart, string>();
        foreach (var part in Enum.GetValues<TcPart>())
        {
            sync[part] = c.Compile(TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128, part), $"tc3-{part}");
            async[part] = c.Compile(TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128Async, part), $"tc4-{part}");
            conv[part] = c.Compile(ConvKernels.Tc3PartMethod(part), $"conv3-{part}");
        }
        foreach (var (name, d) in new[] { ("sync", sync), ("async", async), ("conv", conv) })
        {
            Assert.That(Count(d[TcPart.Full], mma), Is.GreaterThanOrEqualTo(32), $"{name} full");
            Assert.That(Count(d[TcPart.NoGlobalLoads], mma), Is.EqualTo(Count(d[TcPart.Full], mma)), $"{name}: no loads keeps the mma");
            Assert.That(Count(d[TcPart.NoMath], mma), Is.Zero, $"{name}: no math");
        }
        // the register-prefetch tiles load in the prologue and in the loop (ILGPU emits generic ld for global memory);
        // without the loop's loads fewer remain
        const string globalLoad = @"\bld\.(?:v4\.)?f32";
        foreach (var (name, d) in new[] { ("sync", sync), ("conv", conv) })
        {
            Assert.That(Count(d[TcPart.Full], globalLoad), Is.GreaterThan(0), $"{name}: loads counted");
            Assert.That(Count(d[TcPart.NoGlobalLoads], globalLoad), Is.LessThan(Count(d[TcPart.Full], globalLoad)), $"{name}: the loop's loads are gone");
        }
        Assert.That(Count(async[TcPart.NoGlobalLoads], @"cp\.async\.cg"), Is.LessThan(Count(async[TcPart.Full], @"cp\.async\.cg")), "async: only the prologue copies");
        Assert.That(Count(async[TcPart.NoMath], @"cp\.async\.cg"), Is.EqualTo(Count(async[TcPart.Full], @"cp\.async\.cg")), "async: no math keeps every copy");

        // every part gets the production kernels' launch bounds (256, 2) in the offline audit, as the loader gives them
        foreach (var part in Enum.GetValues<TcPart>())
            foreach (var m in new[] { TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128, part), TensorCoreGemm.PartMethod(TensorCoreTile.Tile128x128Async, part),
                                      ConvKernels.Tc3PartMethod(part), ConvKernels.Tc3PartMethod(part, forward: true) })
                Assert.That(KernelAudit.CudaLaunchBounds(m), Is.EqualTo(TensorCoreGemm.CudaLaunchBounds(TensorCoreTile.Tile128x128)), $"{m}: launch bounds");

        var peak = c.Compile(TensorCoreGemm.MmaPeakMethod, "mma-peak");
        Assert.That(Count(peak, mma), Is.EqualTo(TensorCoreGemm.MmaPeakMmaPerIteration));
        Assert.That(Count(peak, @"\bld\.(?!param)|\.shared|\.local|cp\.async"), Is.Zero, "the peak kernel reads no memory and has no local or shared state");
        Assert.That(Count(peak, @"\bst\.(?:global\.)?f32"), Is.EqualTo(2), "one store per path: the lane's sum (CUDA), the thread index (elsewhere)");
    }

    /// <summary>The peak kernel's launcher: sizes checked by name; on the emulator (no mma) each thread writes its index;
    /// the FLOP count is groups × 8 warps × iterations × 16 mma × 2,048.</summary>
    [Test]
    public void MmaPeakLaunchesAndCountsItsFlops()
    {
        int nt = Math.Min(256, Acc.MaxNumThreadsPerGroup);
        using var sink = Acc.Allocate1D<float>(3 * nt);
        TensorCoreGemm.LaunchMmaPeak(Acc, null, sink.View, 3, 5);
        Acc.Synchronize();
        Assert.That(sink.GetAsArray1D(), Is.EqualTo(Enumerable.Range(0, 3 * nt).Select(i => (float)(i % nt)).ToArray()));
        Assert.That(TensorCoreGemm.MmaPeakFlop(132, 1000), Is.EqualTo(132.0 * 8 * 1000 * 16 * 2048));
        Assert.That(Assert.Throws<ArgumentException>(() => TensorCoreGemm.LaunchMmaPeak(Acc, null, sink.View, 4, 5))!.Message, Does.Contain("sink"));
        Assert.Throws<ArgumentOutOfRangeException>(() => TensorCoreGemm.LaunchMmaPeak(Acc, null, sink.View, 0, 5));
    }
}
