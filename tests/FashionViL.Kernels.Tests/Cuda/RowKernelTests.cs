using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The ILGPU row kernels (layer norm, softmax, cross-entropy, AdamW) on ILGPU's CPU accelerator (2-thread groups,
/// warp size 2) against the CPU backend, on awkward shapes.
/// </summary>
[TestFixture, Category("Cuda")]
public class RowKernelTests() : EmulatorKernelTestBase(assertions: false, multiWarp: true)
{
    private const double Rt = 1e-4, At = 1e-5;

    public static readonly int[] Widths = [1, 5, 33, 768];
    private static readonly int[] RowCounts = [1, 3, 7];

    // ------------------------------------------------------------------ layer norm

    [Test]
    public void LayerNormForwardMatchesCpu([ValueSource(nameof(Widths))] int d, [Values] bool affine, [Values] LayerNormVariant variant)
    {
        foreach (int rows in RowCounts)
        {
            // an offset mean (as after a residual add) makes a naive one-pass variance lose digits
            using var x = Rand([rows, d], (ulong)(rows * 31 + d), 3, 5);
            using var w = affine ? Rand([d], 2, 0.5, 1.5) : null;
            using var b = affine ? Rand([d], 3) : null;
            using var y = Tensor.Empty([rows, d]); using var mean = Tensor.Empty([rows]); using var rstd = Tensor.Empty([rows]);
            Cpu.LayerNormForward(x, w, b, 1e-5, y, mean, rstd);

            using var gx = Up(Acc, x); using var gw = w is null ? null : Up(Acc, w); using var gb = b is null ? null : Up(Acc, b);
            using var gy = Poisoned(Acc, rows * d); using var gm = Poisoned(Acc, rows); using var gr = Poisoned(Acc, rows);
            RowKernels.LayerNormForward(Acc, null, gx.View, gw?.View, gb?.View, 1e-5f, gy.View, gm.View, gr.View, rows, d, variant);
            Acc.Synchronize();
            string what = $"[{rows},{d}] {variant} affine={affine}";
            OpCheck.AssertClose(D(gy, rows * d), y.ToArray<double>(), Rt, At, "y " + what);
            OpCheck.AssertClose(D(gm, rows), mean.ToArray<double>(), Rt, At, "mean " + what);
            OpCheck.AssertClose(D(gr, rows), rstd.ToArray<double>(), Rt, At, "rstd " + what);
        }
    }

    [Test]
    public void LayerNormBackwardMatchesCpu([ValueSource(nameof(Widths))] int d, [Values] bool affine)
    {
        // 130 rows: three 64-row partial blocks for gw/gb; 262: five blocks, the last of 6 rows (the 4-row loops' body
        // and tail in both the partial and the reduce kernel)
        foreach (int rows in affine ? [1, 3, 7, 130, 262] : RowCounts)
        {
            if (rows >= 130 && d == 768) continue;
            using var x = Rand([rows, d], (ulong)(rows * 7 + d), -2, 3);
            using var w = affine ? Rand([d], 4, 0.5, 1.5) : null;
            using var g = Rand([rows, d], 5);
            using var y = Tensor.Empty([rows, d]); using var mean = Tensor.Empty([rows]); using var rstd = Tensor.Empty([rows]);
            Cpu.LayerNormForward(x, w, null, 1e-5, y, mean, rstd);
            using var gxRef = Tensor.Empty([rows, d]); using var gwRef = Tensor.Empty([d]); using var gbRef = Tensor.Empty([d]);
            Cpu.LayerNormBackward(x, g, w, mean, rstd, gxRef, affine ? gwRef : null, affine ? gbRef : null);

            using var bx = Up(Acc, x); using var bg = Up(Acc, g); using var bw = w is null ? null : Up(Acc, w);
            using var bm = Up(Acc, mean); using var br = Up(Acc, rstd);
            using var bgx = Poisoned(Acc, rows * d); using var bgw = Poisoned(Acc, d); using var bgb = Poisoned(Acc, d);
            using var ws = Acc.Allocate1D<float>(Math.Max(1, RowKernels.LayerNormBackwardWorkspace(rows, d)));
            RowKernels.LayerNormBackward(Acc, null, bx.View, bg.View, bw?.View, bm.View, br.View, bgx.View,
                affine ? bgw.View : null, affine ? bgb.View : null, ws.View, rows, d);
            Acc.Synchronize();
            string what = $"[{rows},{d}] affine={affine}";
            OpCheck.AssertClose(D(bgx, rows * d), gxRef.ToArray<double>(), Rt, At, "gx " + what);
            if (affine)
            {
                OpCheck.AssertClose(D(bgw, d), gwRef.ToArray<double>(), Rt, At, "gw " + what);
                OpCheck.AssertClose(D(bgb, d), gbRef.ToArray<double>(), Rt, At, "gb " + what);
            }
        }
    }

    // ------------------------------------------------------------------ softmax

    [Test]
    public void SoftmaxForwardMatchesCpu([ValueSource(nameof(Widths))] int c, [Values] bool log, [Values] SoftmaxVariant variant)
    {
        foreach (int rows in RowCounts)
        {
            var xs = Rand([rows, c], (ulong)(rows * 13 + c), -4, 4).ToArray<float>();
            if (c >= 5) for (int r = 0; r < rows; r++) xs[r * c + (r % c)] = float.NegativeInfinity;   // masked entries
            using var x = Tensor.FromArray(xs, [rows, c]);
            using var y = Tensor.Empty([rows, c]);
            Cpu.Softmax(x, y, log);
            using var bx = Up(Acc, x); using var by = Poisoned(Acc, rows * c);
            RowKernels.Softmax(Acc, null, bx.View, by.View, rows, c, log, variant);
            Acc.Synchronize();
            OpCheck.AssertClose(D(by, rows * c), y.ToArray<double>(), Rt, At, $"[{rows},{c}] log={log} {variant}");
        }
    }

    [Test]
    public void SoftmaxBackwardMatchesCpu([ValueSource(nameof(Widths))] int c, [Values] bool log)
    {
        foreach (int rows in RowCounts)
        {
            using var x = Rand([rows, c], (ulong)(rows * 17 + c), -3, 3);
            using var y = Tensor.Empty([rows, c]);
            Cpu.Softmax(x, y, log);
            using var g = Rand([rows, c], 9);
            using var gx = Tensor.Empty([rows, c]);
            Cpu.SoftmaxBackward(y, g, gx, log);
            using var by = Up(Acc, y); using var bg = Up(Acc, g); using var bgx = Poisoned(Acc, rows * c);
            RowKernels.SoftmaxBackward(Acc, null, by.View, bg.View, bgx.View, rows, c, log);
            Acc.Synchronize();
            OpCheck.AssertClose(D(bgx, rows * c), gx.ToArray<double>(), Rt, At, $"[{rows},{c}] log={log}");
        }
    }

    // ------------------------------------------------------------------ cross-entropy

    private void CheckCrossEntropy(int rows, int c, bool soft, int ignoreIndex, ulong seed, Accelerator? accel = null, int gs = 0,
        SoftmaxVariant variant = SoftmaxVariant.Online)
    {
        var acc = accel ?? Acc;
        using var x = Rand([rows, c], seed, -6, 6);
        using var gLoss = Rand([rows], seed + 1, 0.5, 2);
        long[] tv = new long[rows];
        for (int r = 0; r < rows; r++) tv[r] = r % 3 == 1 ? ignoreIndex : (r * 7919L + 3) % c;   // every third row ignored
        using var t = Tensor.FromArray(tv, [rows]);
        using var st0 = Rand([rows, c], seed + 2, 0, 1);
        using var st = soft ? st0.Alias() : null;
        using var loss = Tensor.Empty([rows]); using var lse = Tensor.Empty([rows]); using var gx = Tensor.Empty([rows, c]);
        Cpu.CrossEntropyForward(x, soft ? null : t, st, ignoreIndex, loss, lse);
        Cpu.CrossEntropyBackward(x, soft ? null : t, st, ignoreIndex, lse, gLoss, gx);

        using var bx = Up(acc, x); using var bt = acc.Allocate1D(tv); using var bst = Up(acc, st0); using var bgl = Up(acc, gLoss);
        using var bloss = Poisoned(acc, rows); using var blse = Poisoned(acc, rows); using var bgx = Poisoned(acc, (long)rows * c);
        ArrayView<long>? tView = soft ? null : bt.View;
        ArrayView<float>? sView = soft ? bst.View : null;
        RowKernels.CrossEntropyForward(acc, null, bx.View, tView, sView, ignoreIndex, bloss.View, blse.View, rows, c, gs, soft ? SoftmaxVariant.Online : variant);
        RowKernels.CrossEntropyBackward(acc, null, bx.View, tView, sView, ignoreIndex, blse.View, bgl.View, bgx.View, rows, c, gs);
        acc.Synchronize();
        string what = $"[{rows},{c}] soft={soft}";
        OpCheck.AssertClose(D(blse, rows), lse.ToArray<double>(), Rt, At, "lse " + what);
        OpCheck.AssertClose(D(bloss, rows), loss.ToArray<double>(), Rt, soft ? 1e-4 : At, "loss " + what);
        OpCheck.AssertClose(D(bgx, (long)rows * c), gx.ToArray<double>(), Rt, At, "gLogits " + what);
    }

    [Test]
    public void CrossEntropyMatchesCpu([ValueSource(nameof(Widths))] int c, [Values] bool soft, [Values(SoftmaxVariant.Online, SoftmaxVariant.OnlineX4)] SoftmaxVariant v)
    {
        foreach (int rows in RowCounts) CheckCrossEntropy(rows, c, soft, -100, (ulong)(rows * 5 + c), variant: v);
    }

    [Test]
    public void CrossEntropyVocabularyWidthMatchesCpu([Values] bool soft, [Values(SoftmaxVariant.Online, SoftmaxVariant.OnlineX4)] SoftmaxVariant v)
        => CheckCrossEntropy(3, 30522, soft, 0, 77, variant: v);

    // ------------------------------------------------------------------ groups of several warps

    [Test]
    public void MultiWarpGroupsMatchCpu([Values(4, 8)] int gs)
    {
        const int rows = 3;
        var acc = Multi;
        foreach (int d in new[] { 33, 768 })
        {
            string what = $"[{rows},{d}] group {gs}";
            using var x = Rand([rows, d], (ulong)(d + gs), 3, 5);
            using var w = Rand([d], 2, 0.5, 1.5); using var b = Rand([d], 3);
            using var g = Rand([rows, d], 4);
            using var y = Tensor.Empty([rows, d]); using var mean = Tensor.Empty([rows]); using var rstd = Tensor.Empty([rows]);
            Cpu.LayerNormForward(x, w, b, 1e-5, y, mean, rstd);
            using var gxRef = Tensor.Empty([rows, d]); using var gwRef = Tensor.Empty([d]); using var gbRef = Tensor.Empty([d]);
            Cpu.LayerNormBackward(x, g, w, mean, rstd, gxRef, gwRef, gbRef);
            using var bx = Up(acc, x); using var bw = Up(acc, w); using var bb = Up(acc, b); using var bg = Up(acc, g);
            foreach (var variant in Enum.GetValues<LayerNormVariant>())
            {
                using var by = Poisoned(acc, rows * d); using var bm = Poisoned(acc, rows); using var br = Poisoned(acc, rows);
                RowKernels.LayerNormForward(acc, null, bx.View, bw.View, bb.View, 1e-5f, by.View, bm.View, br.View, rows, d, variant, gs);
                acc.Synchronize();
                OpCheck.AssertClose(D(by, rows * d), y.ToArray<double>(), Rt, At, $"ln y {variant} " + what);
                OpCheck.AssertClose(D(br, rows), rstd.ToArray<double>(), Rt, At, $"ln rstd {variant} " + what);
            }
            using var bm2 = Up(acc, mean); using var br2 = Up(acc, rstd);
            using var bgx = Poisoned(acc, rows * d); using var bgw = Poisoned(acc, d); using var bgb = Poisoned(acc, d);
            using var ws = acc.Allocate1D<float>(RowKernels.LayerNormBackwardWorkspace(rows, d));
            RowKernels.LayerNormBackward(acc, null, bx.View, bg.View, bw.View, bm2.View, br2.View, bgx.View, bgw.View, bgb.View, ws.View, rows, d, gs);
            acc.Synchronize();
            OpCheck.AssertClose(D(bgx, rows * d), gxRef.ToArray<double>(), Rt, At, "ln gx " + what);
            OpCheck.AssertClose(D(bgw, d), gwRef.ToArray<double>(), Rt, At, "ln gw " + what);

            foreach (bool log in new[] { false, true })
            {
                using var sy = Tensor.Empty([rows, d]); using var sgx = Tensor.Empty([rows, d]);
                Cpu.Softmax(g, sy, log);
                Cpu.SoftmaxBackward(sy, x, sgx, log);
                using var bsx = Up(acc, g); using var bsy = Up(acc, sy); using var bgy = Up(acc, x);
                foreach (var variant in Enum.GetValues<SoftmaxVariant>())
                {
                    using var o = Poisoned(acc, rows * d);
                    RowKernels.Softmax(acc, null, bsx.View, o.View, rows, d, log, variant, gs);
                    acc.Synchronize();
                    OpCheck.AssertClose(D(o, rows * d), sy.ToArray<double>(), Rt, At, $"softmax log={log} {variant} " + what);
                }
                using var og = Poisoned(acc, rows * d);
                RowKernels.SoftmaxBackward(acc, null, bsy.View, bgy.View, og.View, rows, d, log, gs);
                acc.Synchronize();
                OpCheck.AssertClose(D(og, rows * d), sgx.ToArray<double>(), Rt, At, $"softmax backward log={log} " + what);
            }
            CheckCrossEntropy(rows, d, false, -100, 3, acc, gs);
            CheckCrossEntropy(rows, d, false, -100, 5, acc, gs, SoftmaxVariant.OnlineX4);
            CheckCrossEntropy(rows, d, true, -100, 4, acc, gs);
        }
    }

    // ------------------------------------------------------------------ AdamW

    [Test]
    public void AdamWThreeStepsMatchCpu([Values(1, 1037)] int n, [Values(0.0, 0.01)] double wd, [Values] bool correctBias)
    {
        using var p = Rand([n], 11); using var m = Tensor.Zeros([n]); using var v = Tensor.Zeros([n]);
        using var bp = Up(Acc, p); using var bm = Up(Acc, m); using var bv = Up(Acc, v);
        for (int step = 1; step <= 3; step++)
        {
            using var g = Rand([n], (ulong)(20 + step), -2, 2);
            var hp = new AdamWParams(1e-3, 0.9, 0.999, 1e-6, wd, step, correctBias);
            Cpu.AdamWStep(p, g, m, v, hp);
            using var bg = Up(Acc, g);
            RowKernels.AdamWStep(Acc, null, bp.View, bg.View, bm.View, bv.View, n, hp);
        }
        Acc.Synchronize();
        // the same float operations in the same order: equal up to the last bit or two
        OpCheck.AssertClose(D(bp, n), p.ToArray<double>(), 1e-6, 1e-7, "param");
        OpCheck.AssertClose(D(bm, n), m.ToArray<double>(), 1e-6, 1e-9, "exp_avg");
        OpCheck.AssertClose(D(bv, n), v.ToArray<double>(), 1e-6, 1e-12, "exp_avg_sq");
    }

    // ------------------------------------------------------------------ bad input

    [Test]
    public void BadLaunchesThrowNamingTheOp()
    {
        using var a = Acc.Allocate1D<float>(10); using var r = Acc.Allocate1D<float>(2);
        var e = Assert.Throws<ArgumentException>(() => RowKernels.Softmax(Acc, null, a.View, a.View, 3, 4, false))!;
        Assert.That(e.Message, Does.Contain("softmax").And.Contain("[3, 4]"));
        e = Assert.Throws<ArgumentException>(() => RowKernels.LayerNormForward(Acc, null, a.View, null, null, 1e-5f, a.View, r.View, r.View, 2, 5, groupSize: 3))!;
        Assert.That(e.Message, Does.Contain("layer_norm").And.Contain("group size 3"));
        e = Assert.Throws<ArgumentException>(() => RowKernels.CrossEntropyForward(Acc, null, a.View, null, null, -100, r.View, r.View, 2, 5))!;
        Assert.That(e.Message, Does.Contain("cross_entropy"));
        e = Assert.Throws<ArgumentException>(() => RowKernels.AdamWStep(Acc, null, a.View, a.View, a.View, r.View, 10, new AdamWParams(1e-3, 0.9, 0.999, 1e-6, 0, 1)))!;
        Assert.That(e.Message, Does.Contain("adamw").And.Contain("exp_avg_sq"));
    }
}

/// <summary>Every row kernel compiles to PTX for sm_90 without a GPU (catches kernel code the CPU accelerator accepts but CUDA does not).</summary>
[TestFixture, Category("Cuda")]
public class RowKernelPtxTests
{
    [Test]
    public void AllRowKernelsCompileToPtx()
    {
        using var ptxc = new Sm90Ptx();
        var kernels = typeof(RowKernels).GetMethods(System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic)
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)).ToArray();
        Assert.That(kernels, Has.Length.EqualTo(17));   // 16 + the fused dropout-add-layer-norm forward; its backward kernel is also the layer norm's
        foreach (var mi in kernels)
        {
            string ptx = ptxc.Compile(mi, mi.Name);
            Assert.That(ptx, Does.Contain(".entry"), mi.Name);
            if (mi.Name.Contains("Softmax") || mi.Name.Contains("LayerNormForward"))
                Assert.That(ptx, Does.Contain("shfl.sync"), mi.Name + " uses warp shuffles");
        }
    }
}
