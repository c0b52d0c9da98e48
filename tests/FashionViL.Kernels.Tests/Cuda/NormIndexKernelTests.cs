using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The ILGPU batch-norm / group-norm kernels and the indexing kernels (embedding backward, index_select, gather,
/// scatter, fused VQ lookup) on ILGPU's CPU accelerator (warp size 2) against the CPU backend, on awkward shapes.
/// </summary>
[TestFixture, Category("Cuda")]
public class NormIndexKernelTests() : EmulatorKernelTestBase(assertions: false, multiWarp: true, CudaVariable)
{
    private const double Rt = 1e-4, At = 1e-5;
    /// <summary>Set to 1 to run this fixture on the first CUDA device instead of the CPU accelerator (the GPU check).</summary>
    public const string CudaVariable = "FVL_KERNEL_TESTS_CUDA";
    private static (int N, int C, int S) Ncs(int[] shape) => (shape[0], shape[1], shape.Skip(2).Aggregate(1, (a, b) => a * b));

    // ================================================================== batch norm

    /// <summary>[N, C]; batch 1 with H·W > 1; odd sizes; a channel count above the grid of the CPU device.</summary>
    public static readonly int[][] BnShapes = [[5, 3], [1, 4, 3, 5], [3, 7, 2, 3], [2, 5, 1, 1], [4, 2, 9]];

    /// <param name="split">&gt; 0: force that many slices per channel (<see cref="NormKernels.BatchNormSplitOverride"/>) and pass a workspace.</param>
    private void CheckBatchNorm(int[] shape, bool affine, bool training, Accelerator acc, string tag, bool residual = false, bool relu = false, int split = 0)
    {
        var (n, c, s) = Ncs(shape);
        ulong seed = (ulong)(n * 1000 + c * 10 + s);
        using var x = Rand(shape, seed, 3, 5);   // offset mean: a naive one-pass variance would lose digits
        using var w = affine ? Rand([c], seed + 1, 0.5, 1.5) : null;
        using var b = affine ? Rand([c], seed + 2) : null;
        // with relu, running means inside x's range so that eval mode's output changes sign too
        using var rm = relu ? Rand([c], seed + 3, 3.5, 4.5) : Rand([c], seed + 3, -0.5, 0.5);
        using var rv = Rand([c], seed + 4, 0.5, 2);
        using var gy = Rand(shape, seed + 5);
        // residual in [-5, 2]: with x̂·w + b around 0, the relu cuts a good share of the elements
        using var res = residual ? Rand(shape, seed + 6, -5, 2) : null;
        const double momentum = 0.1, eps = 1e-5;

        // device copies before the CPU call updates the running stats in place
        using var bx = Up(acc, x); using var bw = w is null ? null : Up(acc, w); using var bb = b is null ? null : Up(acc, b);
        using var brm = Up(acc, rm); using var brv = Up(acc, rv); using var bgy = Up(acc, gy);
        using var bres = res is null ? null : Up(acc, res);

        using var y = Tensor.Empty(shape); using var sm = Tensor.Empty([c]); using var sis = Tensor.Empty([c]);
        Cpu.BatchNormForward(x, w, b, rm, rv, training, momentum, eps, y, sm, sis, res, relu);
        using var gx = Tensor.Empty(shape); using var gw = Tensor.Empty([c]); using var gb = Tensor.Empty([c]);
        using var gr = residual ? Tensor.Empty(shape) : null;
        Cpu.BatchNormBackward(x, gy, w, sm, sis, training, gx, gw, gb, relu ? y : null, gr);

        long total = (long)n * c * s;
        using var by = Poisoned(acc, total); using var bsm = Poisoned(acc, c); using var bsis = Poisoned(acc, c);
        using var bgx = Poisoned(acc, total); using var bgw = Poisoned(acc, c); using var bgb = Poisoned(acc, c);
        using var bgr = residual ? Poisoned(acc, total) : null;
        // the backward runs on the CPU's saved statistics (and relu mask) so that it is checked on its own
        using var rsm = Up(acc, sm); using var rsis = Up(acc, sis);
        using var ry = relu ? Up(acc, y) : null;
        // split: NaN-poisoned partials, so a slice that is not written (or read past) fails the comparison
        using var ws = split > 0 ? acc.Allocate1D(Enumerable.Repeat(double.NaN, (int)NormKernels.BatchNormWorkspace(c, split)).Append(double.NaN).ToArray()) : null;
        NormKernels.BatchNormSplitOverride = split > 0 ? split : null;
        try
        {
            Assert.That(NormKernels.BatchNormSplitFor(acc, c, (long)n * s), Is.EqualTo(split > 0 ? split : 1), "slices per channel");
            NormKernels.BatchNormForward(acc, null, bx.View, bw?.View, bb?.View, brm.View, brv.View, training, (float)momentum, (float)eps,
                by.View, bsm.View, bsis.View, n, c, s, 0, bres?.View, relu, ws?.View);
            NormKernels.BatchNormBackward(acc, null, bx.View, bgy.View, bw?.View, rsm.View, rsis.View, training, bgx.View, bgw.View, bgb.View, n, c, s,
                0, ry?.View, bgr?.View, ws?.View);
            acc.Synchronize();
        }
        finally { NormKernels.BatchNormSplitOverride = null; }

        string what = $"{Shape.Format(shape)} affine={affine} training={training} residual={residual} relu={relu} split={split} {tag}";
        if (relu)
        {
            var ya = y.ToArray<double>();
            Assert.That(ya.Count(v => v == 0), Is.GreaterThan(0).And.LessThan(ya.Length), "the relu should cut some elements and keep others " + what);
        }
        if (gr is not null) OpCheck.AssertClose(D(bgr!, total), gr.ToArray<double>(), Rt, At, "g residual " + what);
        OpCheck.AssertClose(D(by, total), y.ToArray<double>(), Rt, At, "y " + what);
        OpCheck.AssertClose(D(bsm, c), sm.ToArray<double>(), Rt, At, "saveMean " + what);
        OpCheck.AssertClose(D(bsis, c), sis.ToArray<double>(), Rt, At, "saveInvStd " + what);
        OpCheck.AssertClose(D(brm, c), rm.ToArray<double>(), Rt, At, "running mean " + what);
        OpCheck.AssertClose(D(brv, c), rv.ToArray<double>(), Rt, At, "running var " + what);
        OpCheck.AssertClose(D(bgx, total), gx.ToArray<double>(), Rt, At, "gx " + what);
        OpCheck.AssertClose(D(bgw, c), gw.ToArray<double>(), Rt, At, "gw " + what);
        OpCheck.AssertClose(D(bgb, c), gb.ToArray<double>(), Rt, At, "gb " + what);
    }

    [Test]
    public void BatchNormMatchesCpu([Values] bool affine, [Values] bool training)
    {
        foreach (var shape in BnShapes) CheckBatchNorm(shape, affine, training, Acc, "warp 2");
    }

    [Test]
    public void BatchNormFusedMatchesCpu([Values] bool training, [Values] bool residual)
    {
        foreach (var shape in BnShapes) CheckBatchNorm(shape, true, training, Acc, "warp 2", residual, relu: true);
        CheckBatchNorm([3, 7, 2, 3], false, training, Acc, "warp 2, no relu", residual: true, relu: false);
        CheckBatchNorm([3, 4, 5, 7], true, training, Multi, "group 8", residual, relu: true);
    }

    [Test]
    public void BatchNormGroupSizeRule()
    {
        // H100 (132 SMs), batch 64: the stem (64 channels of 802,816) and layer1 (64 or 256 of 200,704) get 1,024 threads
        Assert.That(NormKernels.BatchNormGroupSize(64, 802_816, 132), Is.EqualTo(1024));
        Assert.That(NormKernels.BatchNormGroupSize(256, 200_704, 132), Is.EqualTo(1024));
        // 512 channels (layer2's wide norms) already give every SM several groups; layer3's 12,544 per channel is short
        Assert.That(NormKernels.BatchNormGroupSize(512, 50_176, 132), Is.EqualTo(512));
        Assert.That(NormKernels.BatchNormGroupSize(256, 12_544, 132), Is.EqualTo(256));
        Assert.That(NormKernels.BatchNormGroupSize(64, 65_535, 132), Is.EqualTo(512), "just under the element threshold");
        Assert.That(NormKernels.BatchNormGroupSize(4, 100, 132), Is.EqualTo(128));
    }

    /// <summary>Shapes for the split path (slices forced by the override): slice boundaries inside a sample, N = 1, H·W prime, a short
    /// last slice, more slices than a thread has elements, a split over [N, C].</summary>
    private static readonly (int[] Shape, int Split)[] SplitCases =
    [
        ([3, 2, 5, 7], 4),    // 105 per channel: slices of 27 — boundaries at 27, 54, 81 fall inside samples of 35
        ([1, 3, 7, 11], 3),   // N = 1: slices of 26 of 77 (last 25) inside the one sample
        ([4, 2, 13], 5),      // 52: slices of 11, last slice 8
        ([2, 3, 3, 3], 7),    // 54: slices of 8 (2-thread groups: 4 elements each), last 6
        ([9, 2], 2),          // [N, C]: 9 values, slices of 5 and 4
        ([2, 1, 40], 16),     // 80: slices of 5, one channel, 16 groups
    ];

    [Test]
    public void BatchNormSplitMatchesCpu([Values] bool training, [Values] bool affine)
    {
        foreach (var (shape, split) in SplitCases) CheckBatchNorm(shape, affine, training, Acc, "warp 2", split: split);
        CheckBatchNorm([3, 4, 5, 7], affine, training, Multi, "group 8", split: 3);
    }

    [Test]
    public void BatchNormSplitFusedMatchesCpu([Values] bool training, [Values] bool residual)
    {
        foreach (var (shape, split) in SplitCases.Where(t => t.Shape[0] * t.Shape.Skip(1).Aggregate(1, (a, b) => a * b) > 20))
            CheckBatchNorm(shape, true, training, Acc, "warp 2", residual, relu: true, split: split);
        CheckBatchNorm([3, 7, 2, 3], false, training, Acc, "warp 2, no relu", residual: true, relu: false, split: 3);
        CheckBatchNorm([3, 4, 5, 7], true, training, Multi, "group 8", residual, relu: true, split: 4);
    }

    /// <summary>The split's statistics against float64 on long channels with a large offset mean (the one-pass variance in
    /// double partials must not cancel), and its training forward against the CPU backend there too.</summary>
    [Test]
    public void BatchNormSplitStatisticsMatchFloat64OnALongOffsetChannel()
    {
        int n = 3, c = 2, s = 4099;   // 12,297 values per channel in 6 slices of 2,050 (last 2,047)
        using var x = Rand([n, c, s], 777, 995, 1005);   // mean ≈ 1000, std ≈ 2.9
        var xv = x.ToArray<float>();
        using var bx = Up(Multi, x); using var y = Poisoned(Multi, n * c * s);
        using var sm = Poisoned(Multi, c); using var sis = Poisoned(Multi, c);
        using var ws = Multi.Allocate1D<double>(NormKernels.BatchNormWorkspace(c, 6));
        NormKernels.BatchNormSplitOverride = 6;
        try
        {
            NormKernels.BatchNormForward(Multi, null, bx.View, null, null, null, null, true, 0.1f, 1e-5f, y.View, sm.View, sis.View, n, c, s, workspace: ws.View);
            Multi.Synchronize();
        }
        finally { NormKernels.BatchNormSplitOverride = null; }
        for (int ch = 0; ch < c; ch++)
        {
            double sum = 0, m = n * s;
            for (int i = 0; i < n; i++) for (int j = 0; j < s; j++) sum += xv[(i * c + ch) * s + j];
            double mean = sum / m, v = 0;
            for (int i = 0; i < n; i++) for (int j = 0; j < s; j++) { double d = xv[(i * c + ch) * s + j] - mean; v += d * d; }
            double inv = 1 / Math.Sqrt(v / m + 1e-5);
            // the mean is rounded to float32 once (half an ulp at 1000: 2⁻¹⁵ ≈ 3.05e-5); 1/std: four float32 roundings
            // (var, + eps, √, 1/·) of at most 2⁻²⁴ each
            Assert.That(sm.GetAsArray1D()[ch], Is.EqualTo(mean).Within(Math.Pow(2, -15) * 1.01), $"mean of channel {ch}");
            Assert.That(sis.GetAsArray1D()[ch], Is.EqualTo(inv).Within(inv * 4 * Math.Pow(2, -24)), $"1/std of channel {ch}");
        }
    }

    /// <summary>
    /// gw = Σ gy·(x − mean)·inv and gb = Σ gy of the split backward against float64, on one channel of 66,246 values in [-2, 2]
    /// with gy in [0.5, 1.5]. gw cancels to ~17 from terms summing to ~5·10⁴ in magnitude; a float32 x − mean rounds by the same
    /// offset throughout a binade, which biased the sum by ~2e-4 here, so the split computes the terms in double. Bound: the
    /// saved mean's float32 rounding (½ ulp) times inv·Σgy, inv's (4 roundings of 2⁻²⁴) times |gw|, and 1e-10 of Σ|terms| for the
    /// double sums; gb: ½ ulp of the float32 result plus the same.
    /// </summary>
    [Test]
    public void BatchNormSplitGradientSumsMatchFloat64()
    {
        int n = 2, c = 1, s = 181 * 183;
        using var x = Rand([n, c, s], 61, -2, 2); using var gy = Rand([n, c, s], 62, 0.5, 1.5);
        var xv = x.ToArray<float>(); var gv = gy.ToArray<float>();
        using var bx = Up(Multi, x); using var bgy = Up(Multi, gy); using var y = Poisoned(Multi, n * s);
        using var sm = Poisoned(Multi, c); using var sis = Poisoned(Multi, c);
        using var gx = Poisoned(Multi, n * s); using var gw = Poisoned(Multi, c); using var gb = Poisoned(Multi, c);
        using var ws = Multi.Allocate1D<double>(NormKernels.BatchNormWorkspace(c, 4));
        NormKernels.BatchNormSplitOverride = 4;
        try
        {
            NormKernels.BatchNormForward(Multi, null, bx.View, null, null, null, null, true, 0.1f, 1e-5f, y.View, sm.View, sis.View, n, c, s, workspace: ws.View);
            NormKernels.BatchNormBackward(Multi, null, bx.View, bgy.View, null, sm.View, sis.View, true, gx.View, gw.View, gb.View, n, c, s, workspace: ws.View);
            Multi.Synchronize();
        }
        finally { NormKernels.BatchNormSplitOverride = null; }
        double mean = xv.Sum(v => (double)v) / xv.Length, v2 = xv.Sum(v => (v - mean) * (v - mean));
        double inv = 1 / Math.Sqrt(v2 / xv.Length + 1e-5), wantW = 0, wantB = 0, absTerms = 0;
        for (int i = 0; i < xv.Length; i++) { wantW += gv[i] * (xv[i] - mean) * inv; wantB += gv[i]; absTerms += Math.Abs(gv[i] * (xv[i] - mean) * inv); }
        float m32 = sm.GetAsArray1D()[0];
        double ulpMean = MathF.BitIncrement(Math.Abs(m32)) - Math.Abs(m32);
        double tolW = 0.5 * ulpMean * inv * wantB + 4 * Math.Pow(2, -24) * Math.Abs(wantW) + 1e-10 * absTerms;
        Assert.That(gw.GetAsArray1D()[0], Is.EqualTo(wantW).Within(tolW), $"gw (tolerance {tolW:E2})");
        double tolB = (MathF.BitIncrement((float)wantB) - (float)wantB) + 1e-10 * wantB;
        Assert.That(gb.GetAsArray1D()[0], Is.EqualTo(wantB).Within(tolB), "gb");
    }

    [Test]
    public void BatchNormSplitEvalIsBitIdenticalToUnsplit()
    {
        // eval has no reduction: the split launch computes every element exactly as the one-group-per-channel kernel does
        int[] shape = [3, 2, 5, 7];
        using var x = Rand(shape, 5, 3, 5); using var w = Rand([2], 6, 0.5, 1.5); using var b = Rand([2], 7);
        using var rm = Rand([2], 8, 3.5, 4.5); using var rv = Rand([2], 9, 0.5, 2); using var res = Rand(shape, 10, -5, 2);
        using var bx = Up(Acc, x); using var bw = Up(Acc, w); using var bb = Up(Acc, b); using var brm = Up(Acc, rm); using var brv = Up(Acc, rv);
        using var bres = Up(Acc, res);
        float[] Run(int? split)
        {
            using var y = Poisoned(Acc, 210); using var sm = Poisoned(Acc, 2); using var sis = Poisoned(Acc, 2);
            NormKernels.BatchNormSplitOverride = split;
            try
            {
                NormKernels.BatchNormForward(Acc, null, bx.View, bw.View, bb.View, brm.View, brv.View, false, 0.1f, 1e-5f, y.View, sm.View, sis.View, 3, 2, 35,
                    residual: bres.View, relu: true);
                Acc.Synchronize();
            }
            finally { NormKernels.BatchNormSplitOverride = null; }
            return [.. y.GetAsArray1D(), .. sm.GetAsArray1D(), .. sis.GetAsArray1D()];
        }
        var one = Run(null);
        Assert.That(Run(4), Is.EqualTo(one), "eval split into 4 vs one group per channel");
        Assert.That(one, Has.None.NaN);
    }

    [Test]
    public void BatchNormSplitRule()
    {
        // H100 (132 SMs), batch 64: the stem (64 × 802,816) and layer1's 64-channel norms (200,704) get 4 slices: 256 groups,
        // one wave of two per SM; layer2's 128-channel norms 2; layer1's 256-channel norms and everything wider are not split
        Assert.That(NormKernels.BatchNormSplit(64, 802_816, 132), Is.EqualTo(4));
        Assert.That(NormKernels.BatchNormSplit(64, 200_704, 132), Is.EqualTo(4));
        Assert.That(NormKernels.BatchNormSplit(128, 200_704, 132), Is.EqualTo(2));
        Assert.That(NormKernels.BatchNormSplit(128, 50_176, 132), Is.EqualTo(2));
        Assert.That(NormKernels.BatchNormSplit(256, 200_704, 132), Is.EqualTo(1));
        Assert.That(NormKernels.BatchNormSplit(512, 50_176, 132), Is.EqualTo(1));
        Assert.That(NormKernels.BatchNormSplit(133, 1_000_000, 132), Is.EqualTo(1), "more channels than SMs");
        // slices of at least MinSplitSlice = 16,384 values
        Assert.That(NormKernels.BatchNormSplit(64, 32_767, 132), Is.EqualTo(1), "shorter than two slices");
        Assert.That(NormKernels.BatchNormSplit(64, 32_768, 132), Is.EqualTo(2));
        Assert.That(NormKernels.BatchNormSplit(2, 1_000_000, 132), Is.EqualTo(61), "⌊1,000,000 / 16,384⌋ slices, not 132");
        // the emulator's 2 SMs: one long channel splits in 4, two in 2, three not at all
        Assert.That(NormKernels.BatchNormSplit(1, 1 << 20, 2), Is.EqualTo(4));
        Assert.That(NormKernels.BatchNormSplit(2, 1 << 20, 2), Is.EqualTo(2));
        Assert.That(NormKernels.BatchNormSplit(3, 1 << 20, 2), Is.EqualTo(1));
        Assert.That(NormKernels.BatchNormSplitFor(Acc, 3, 105), Is.EqualTo(1), "test shapes do not split by the rule");
        // the override is clamped to one slice per value; no split without at least two values
        NormKernels.BatchNormSplitOverride = 50;
        try
        {
            Assert.That(NormKernels.BatchNormSplitFor(Acc, 3, 20), Is.EqualTo(20));
            Assert.That(NormKernels.BatchNormSplitFor(Acc, 3, 1), Is.EqualTo(1));
        }
        finally { NormKernels.BatchNormSplitOverride = null; }
        Assert.That(NormKernels.BatchNormWorkspace(64, 4), Is.EqualTo(512));
        Assert.That(NormKernels.BatchNormWorkspace(64, 4, needsStatistics: false), Is.Zero);
        Assert.That(NormKernels.BatchNormWorkspace(64, 1), Is.Zero);
    }

    [Test]
    public void BatchNormSplitRejectsAMissingOrShortWorkspace()
    {
        using var x = Acc.Allocate1D<float>(60); using var st = Acc.Allocate1D<float>(3); using var ws = Acc.Allocate1D<double>(17);
        NormKernels.BatchNormSplitOverride = 3;
        try
        {
            var e = Assert.Throws<ArgumentException>(() => NormKernels.BatchNormForward(Acc, null, x.View, null, null, null, null, true, 0.1f, 1e-5f,
                x.View, st.View, st.View, 4, 3, 5))!;
            Assert.That(e.Message, Does.Contain("batch_norm").And.Contain("3 slices").And.Contain("[4, 3, 5]").And.Contain("18 doubles, got 0"));
            e = Assert.Throws<ArgumentException>(() => NormKernels.BatchNormBackward(Acc, null, x.View, x.View, null, st.View, st.View, true,
                x.View, null, null, 4, 3, 5, workspace: ws.View))!;
            Assert.That(e.Message, Does.Contain("batch_norm backward").And.Contain("18 doubles, got 17"));
        }
        finally { NormKernels.BatchNormSplitOverride = null; }
    }

    [Test]
    public void BatchNormMultiWarpMatchesCpu([Values] bool training)
    {
        CheckBatchNorm([3, 4, 5, 7], true, training, Multi, "group 8");
        CheckBatchNorm([7, 3], true, training, Multi, "group 8");
    }

    [Test]
    public void BatchNormTrainingWithoutRunningStatsMatchesCpu()
    {
        int[] shape = [2, 3, 4];
        using var x = Rand(shape, 41, -2, 2);
        using var y = Tensor.Empty(shape); using var sm = Tensor.Empty([3]); using var sis = Tensor.Empty([3]);
        Cpu.BatchNormForward(x, null, null, null, null, true, 0.1, 1e-3, y, sm, sis);
        using var bx = Up(Acc, x); using var by = Poisoned(Acc, 24); using var bsm = Poisoned(Acc, 3); using var bsis = Poisoned(Acc, 3);
        NormKernels.BatchNormForward(Acc, null, bx.View, null, null, null, null, true, 0.1f, 1e-3f, by.View, bsm.View, bsis.View, 2, 3, 4);
        Acc.Synchronize();
        OpCheck.AssertClose(D(by, 24), y.ToArray<double>(), Rt, At, "y");
        OpCheck.AssertClose(D(bsis, 3), sis.ToArray<double>(), Rt, At, "saveInvStd");
    }

    [Test]
    public void BatchNormEmptyBatchMatchesCpu([Values] bool training)
    {
        // N = 0: no data; training still writes saveMean = 0 and 1/√eps, and leaves the running stats alone
        int[] shape = [0, 3, 4];
        using var x = Tensor.Empty(shape);
        using var rm = Rand([3], 131); using var rv = Rand([3], 132, 0.5, 2);
        using var brm = Up(Acc, rm); using var brv = Up(Acc, rv);
        using var y = Tensor.Empty(shape); using var sm = Tensor.Empty([3]); using var sis = Tensor.Empty([3]);
        Cpu.BatchNormForward(x, null, null, rm, rv, training, 0.1, 1e-5, y, sm, sis);
        using var bx = Acc.Allocate1D<float>(1); using var bsm = Poisoned(Acc, 3); using var bsis = Poisoned(Acc, 3);
        NormKernels.BatchNormForward(Acc, null, bx.View.SubView(0, 0), null, null, brm.View, brv.View, training, 0.1f, 1e-5f,
            bx.View.SubView(0, 0), bsm.View, bsis.View, 0, 3, 4);
        Acc.Synchronize();
        OpCheck.AssertClose(D(bsm, 3), sm.ToArray<double>(), Rt, At, "saveMean");
        OpCheck.AssertClose(D(bsis, 3), sis.ToArray<double>(), Rt, At, "saveInvStd");
        OpCheck.AssertClose(D(brm, 3), rm.ToArray<double>(), 0, 0, "running mean");
        OpCheck.AssertClose(D(brv, 3), rv.ToArray<double>(), 0, 0, "running var");
    }

    [Test]
    public void BatchNormRejectsBadInput()
    {
        using var x = Acc.Allocate1D<float>(12); using var st = Acc.Allocate1D<float>(3);
        var e = Assert.Throws<ArgumentException>(() => NormKernels.BatchNormForward(Acc, null, x.View, null, null, null, null, false, 0.1f, 1e-5f,
            x.View, st.View, st.View, 2, 3, 2))!;
        Assert.That(e.Message, Does.Contain("batch_norm").And.Contain("running"));
        e = Assert.Throws<ArgumentException>(() => NormKernels.BatchNormForward(Acc, null, x.View, null, null, null, null, true, 0.1f, 1e-5f,
            x.View, st.View, st.View, 1, 3, 1))!;
        Assert.That(e.Message, Does.Contain("more than 1 value per channel").And.Contain("[1, 3, 1]"));
        e = Assert.Throws<ArgumentException>(() => NormKernels.BatchNormForward(Acc, null, x.View, null, null, null, null, true, 0.1f, 1e-5f,
            x.View, st.View, st.View, 2, 3, 3))!;
        Assert.That(e.Message, Does.Contain("batch_norm").And.Contain("x has 12 elements").And.Contain("[2, 3, 3]"));
    }

    // ================================================================== group norm

    private void CheckGroupNorm(int[] shape, int groups, bool affine, Accelerator acc, string tag)
    {
        var (n, c, s) = Ncs(shape);
        ulong seed = (ulong)(n * 977 + c * 13 + s + groups);
        using var x = Rand(shape, seed, -1, 4);
        using var w = affine ? Rand([c], seed + 1, 0.5, 1.5) : null;
        using var b = affine ? Rand([c], seed + 2) : null;
        using var gy = Rand(shape, seed + 3);
        const double eps = 1e-5;
        using var y = Tensor.Empty(shape); using var mean = Tensor.Empty([n, groups]); using var rstd = Tensor.Empty([n, groups]);
        Cpu.GroupNormForward(x, w, b, groups, eps, y, mean, rstd);
        using var gx = Tensor.Empty(shape); using var gw = Tensor.Empty([c]); using var gb = Tensor.Empty([c]);
        Cpu.GroupNormBackward(x, gy, w, groups, mean, rstd, gx, gw, gb);

        long total = (long)n * c * s;
        using var bx = Up(acc, x); using var bw = w is null ? null : Up(acc, w); using var bb = b is null ? null : Up(acc, b); using var bgy = Up(acc, gy);
        using var by = Poisoned(acc, total); using var bm = Poisoned(acc, n * groups); using var br = Poisoned(acc, n * groups);
        NormKernels.GroupNormForward(acc, null, bx.View, bw?.View, bb?.View, groups, (float)eps, by.View, bm.View, br.View, n, c, s);
        using var rm = Up(acc, mean); using var rr = Up(acc, rstd);
        using var bgx = Poisoned(acc, total); using var bgw = Poisoned(acc, c); using var bgb = Poisoned(acc, c);
        NormKernels.GroupNormBackward(acc, null, bx.View, bgy.View, bw?.View, groups, rm.View, rr.View, bgx.View, bgw.View, bgb.View, n, c, s);
        acc.Synchronize();

        string what = $"{Shape.Format(shape)} groups={groups} affine={affine} {tag}";
        if (c / groups * s == 1)
        {
            // one element per group: x − mean is exactly 0, so y is exactly the bias. (The CPU's x·scale + shift form,
            // with scale = 1/√eps ≈ 316, leaves ~1e-4 of rounding there, so it is not the reference for y in this case.)
            var bias = b is null ? new double[c] : b.ToArray<double>();
            OpCheck.AssertClose(D(by, total), Enumerable.Range(0, (int)total).Select(i => bias[i % c]).ToArray(), 0, 0, "y " + what);
        }
        else OpCheck.AssertClose(D(by, total), y.ToArray<double>(), Rt, At, "y " + what);
        OpCheck.AssertClose(D(bm, n * groups), mean.ToArray<double>(), Rt, At, "mean " + what);
        OpCheck.AssertClose(D(br, n * groups), rstd.ToArray<double>(), Rt, At, "rstd " + what);
        OpCheck.AssertClose(D(bgx, total), gx.ToArray<double>(), Rt, At, "gx " + what);
        OpCheck.AssertClose(D(bgw, c), gw.ToArray<double>(), Rt, At, "gw " + what);
        OpCheck.AssertClose(D(bgb, c), gb.ToArray<double>(), Rt, At, "gb " + what);
    }

    [Test]
    public void GroupNormMatchesCpu([Values] bool affine)
    {
        CheckGroupNorm([2, 64, 3, 5], 32, affine, Acc, "warp 2");   // 32 groups of 2 channels
        CheckGroupNorm([1, 6, 7], 3, affine, Acc, "warp 2");        // batch 1, rank 3
        CheckGroupNorm([3, 5, 1, 1], 5, affine, Acc, "warp 2");     // one element per group
        CheckGroupNorm([2, 9, 2, 3], 1, affine, Acc, "warp 2");     // one group (layer-norm-like)
        CheckGroupNorm([2, 6, 1, 2], 6, affine, Acc, "warp 2");     // two elements per group
    }

    [Test]
    public void GroupNormMultiWarpMatchesCpu()
    {
        CheckGroupNorm([2, 64, 3, 3], 32, true, Multi, "group 8");
        CheckGroupNorm([3, 10, 17], 2, true, Multi, "group 8");
    }

    [Test]
    public void GroupNormRejectsBadGroups()
    {
        using var x = Acc.Allocate1D<float>(30); using var st = Acc.Allocate1D<float>(8);
        var e = Assert.Throws<ArgumentException>(() => NormKernels.GroupNormForward(Acc, null, x.View, null, null, 4, 1e-5f, x.View, st.View, st.View, 2, 5, 3))!;
        Assert.That(e.Message, Does.Contain("group_norm").And.Contain("5 channels").And.Contain("4 groups"));
    }

    // embedding backward: EmbeddingBackwardTests (deterministic, bitwise against the CPU backend)

    // ================================================================== index_select / gather / scatter

    [Test]
    public void IndexSelectMatchesCpu([Values(0, 1, 2)] int dim)
    {
        int[] shape = [4, 5, 3];
        using var x = Rand(shape, (ulong)(71 + dim));
        long[] iv = dim switch { 0 => [3, 0, 3, 1, 2, 2, 0], 1 => [4, 4, 0], _ => [2] };
        using var index = Tensor.FromArray(iv, [iv.Length]);
        var yShape = (int[])shape.Clone(); yShape[dim] = iv.Length;
        using var y = Tensor.Empty(yShape);
        Cpu.IndexSelect(x, dim, index, y);
        var (outer, size, inner) = IndexKernels.Split(shape, dim);
        using var bx = Up(Acc, x); using var bi = UpL(Acc, iv); using var by = Poisoned(Acc, y.Numel);
        IndexKernels.IndexSelect(Acc, null, bx.View, bi.View, by.View, outer, size, iv.Length, inner);
        Acc.Synchronize();
        // a copy: exact
        OpCheck.AssertClose(D(by, y.Numel), y.ToArray<double>(), 0, 0, $"dim {dim}");
    }

    private static long[] RandIndex(int count, int size, ulong seed)
    {
        var r = new Random((int)seed);
        return Enumerable.Range(0, count).Select(_ => (long)r.Next(size)).ToArray();
    }

    [Test]
    public void GatherMatchesCpu([Values(0, 1, 2)] int dim)
    {
        int[] xShape = [3, 4, 5];
        var iShape = (int[])xShape.Clone(); iShape[dim] = dim == 1 ? 6 : 2;
        using var x = Rand(xShape, (ulong)(81 + dim));
        int count = iShape.Aggregate(1, (a, b) => a * b);
        var iv = RandIndex(count, xShape[dim], (ulong)(82 + dim));
        using var index = Tensor.FromArray(iv, iShape);
        using var y = Tensor.Empty(iShape);
        Cpu.Gather(x, dim, index, y);
        var (outer, nx, inner) = IndexKernels.Split(xShape, dim);
        using var bx = Up(Acc, x); using var bi = UpL(Acc, iv); using var by = Poisoned(Acc, count);
        IndexKernels.Gather(Acc, null, bx.View, bi.View, by.View, outer, nx, iShape[dim], inner);
        Acc.Synchronize();
        OpCheck.AssertClose(D(by, count), y.ToArray<double>(), 0, 0, $"dim {dim}");
    }

    [Test]
    public void ScatterAddMatchesCpu([Values(0, 1, 2)] int dim)
    {
        int[] dShape = [3, 4, 5];
        var iShape = (int[])dShape.Clone(); iShape[dim] = 7;          // more sources than slots: duplicates
        var sShape = (int[])iShape.Clone(); sShape[dim] = 8;          // source larger than the index in the scattered dim
        using var dst = Rand(dShape, (ulong)(91 + dim));
        using var src = Rand(sShape, (ulong)(92 + dim), -3, 3);
        int count = iShape.Aggregate(1, (a, b) => a * b);
        var iv = RandIndex(count, dShape[dim], (ulong)(93 + dim));
        using var index = Tensor.FromArray(iv, iShape);
        using var bd = Up(Acc, dst); using var bs = Up(Acc, src); using var bi = UpL(Acc, iv);
        Cpu.Scatter(dst, dim, index, src, add: true);
        var (outer, nd, inner) = IndexKernels.Split(dShape, dim);
        IndexKernels.Scatter(Acc, null, bd.View, bi.View, bs.View, outer, nd, iShape[dim], sShape[dim], inner, add: true);
        Acc.Synchronize();
        // float atomics: the order of the duplicate adds differs from the CPU's, so equal up to rounding
        OpCheck.AssertClose(D(bd, dst.Numel), dst.ToArray<double>(), 1e-5, 1e-6, $"dim {dim}");
    }

    [Test]
    public void ScatterMatchesCpu([Values(0, 1, 2)] int dim)
    {
        int[] dShape = [3, 4, 5];
        var iShape = (int[])dShape.Clone(); iShape[dim] = dShape[dim] - 1;   // a slot per column left untouched
        using var dst = Rand(dShape, (ulong)(101 + dim));
        using var src = Rand(iShape, (ulong)(102 + dim), -3, 3);
        // distinct targets along the dim in every column (the result with duplicates is unspecified)
        var (outer, nd, inner) = IndexKernels.Split(dShape, dim);
        int ni = iShape[dim];
        var iv = new long[outer * ni * inner];
        var r = new Random(103 + dim);
        for (int o = 0; o < outer; o++)
            for (int k = 0; k < inner; k++)
            {
                var perm = Enumerable.Range(0, nd).OrderBy(_ => r.Next()).ToArray();
                for (int j = 0; j < ni; j++) iv[(o * ni + j) * inner + k] = perm[j];
            }
        using var index = Tensor.FromArray(iv, iShape);
        using var bd = Up(Acc, dst); using var bs = Up(Acc, src); using var bi = UpL(Acc, iv);
        Cpu.Scatter(dst, dim, index, src, add: false);
        IndexKernels.Scatter(Acc, null, bd.View, bi.View, bs.View, outer, nd, ni, ni, inner, add: false);
        Acc.Synchronize();
        OpCheck.AssertClose(D(bd, dst.Numel), dst.ToArray<double>(), 0, 0, $"dim {dim}");
    }

    [Test]
    public void ScatterRejectsSmallSource()
    {
        using var a = Acc.Allocate1D<float>(60); using var i = Acc.Allocate1D<long>(60);
        var e = Assert.Throws<ArgumentException>(() => IndexKernels.Scatter(Acc, null, a.View, i.View, a.View, 3, 4, 5, 4, 5, true))!;
        Assert.That(e.Message, Does.Contain("scatter_add").And.Contain("source [3, 4, 5]"));
    }

    // ================================================================== VQ lookup

    private void CheckVq(float[] zv, float[] ev, int n, int k, int d, Accelerator acc, string what)
    {
        using var z = Tensor.FromArray(zv, [n, d]); using var e = Tensor.FromArray(ev, [k, d]);
        using var ids = Tensor.Empty([n], DType.Int64);
        Cpu.VqLookup(z, e, ids);
        var want = ids.ToArray<long>();
        using var bz = acc.Allocate1D(zv); using var be = acc.Allocate1D(ev);
        using var bids = acc.Allocate1D<long>(Math.Max(n, 1));
        bids.CopyFromCPU(Enumerable.Repeat(-7L, Math.Max(n, 1)).ToArray());
        IndexKernels.VqLookup(acc, null, bz.View, be.View, bids.View, n, k, d);
        acc.Synchronize();
        var got = bids.GetAsArray1D();
        // first occurrence of each codebook row's content: a tie between equal rows must go to the first
        var firstOf = new int[k];
        for (int j = 0; j < k; j++)
        {
            firstOf[j] = j;
            for (int i = 0; i < j; i++)
                if (ev.AsSpan(i * d, d).SequenceEqual(ev.AsSpan(j * d, d))) { firstOf[j] = i; break; }
        }
        for (int r = 0; r < n; r++)
        {
            Assert.That(got[r], Is.InRange(0, k - 1), $"{what}: row {r} id");
            if (got[r] == want[r]) continue;
            // a different winner is allowed only for a near-tie between different codes (rounding of the float distances),
            // never for equal codebook rows, whose distances are bit-equal on both sides
            Assert.That(firstOf[got[r]], Is.EqualTo(got[r]), $"{what}: row {r} picked {got[r]}, a later duplicate of {firstOf[got[r]]}");
            double Dist(long j) { double s = 0; for (int f = 0; f < d; f++) { double q = zv[r * d + f] - (double)ev[j * d + f]; s += q * q; } return s; }
            double dg = Dist(got[r]), dw = Dist(want[r]);
            Assert.That(Math.Abs(dg - dw), Is.LessThanOrEqualTo(1e-5 * (1 + dw)), $"{what}: row {r}: got {got[r]} (d={dg}), cpu {want[r]} (d={dw})");
        }
    }

    [Test]
    public void VqLookupMatchesCpu([Values(1, 19, 70)] int k)
    {
        const int n = 45, d = 19;   // 2 row blocks (32 + 13), K up to 70: one full 64-code tile and a partial one; D: 16 + 3
        var zv = Rand([n, d], (ulong)(111 + k), -1, 1).ToArray<float>();
        var ev = Rand([k, d], (ulong)(112 + k), -1, 1).ToArray<float>();
        if (k == 70)
        {
            // exact ties: code 50 duplicates 3, 69 duplicates 10 (in another tile), 20 duplicates 3 (same tile)
            Array.Copy(ev, 3 * d, ev, 50 * d, d); Array.Copy(ev, 10 * d, ev, 69 * d, d); Array.Copy(ev, 3 * d, ev, 20 * d, d);
            // rows of z that sit exactly on (or next to) duplicated codes
            Array.Copy(ev, 3 * d, zv, 0, d); Array.Copy(ev, 10 * d, zv, 5 * d, d); Array.Copy(ev, 3 * d, zv, 40 * d, d);
            for (int f = 0; f < d; f++) zv[7 * d + f] = ev[10 * d + f] + 0.01f;
        }
        CheckVq(zv, ev, n, k, d, Acc, $"K={k}");
    }

    [Test]
    public void VqLookupExactTiesTakeTheFirstCode()
    {
        // d = 1, codebook [1, −1, 1, 0.5, −1]: z = 0 ties codes 0,1,2,4 (dist 1) but 3 wins (0.25); z = 2 ties 0 and 2;
        // z = 0.75 ties 0 and 3 exactly in float (0.5625 + 1 − 1.5 = 0.5625 + 0.25 − 0.75 = 0.0625); z = −3 ties 1 and 4.
        float[] ev = [1, -1, 1, 0.5f, -1];
        float[] zv = [0, 2, 0.75f, -3];
        CheckVq(zv, ev, zv.Length, ev.Length, 1, Acc, "d=1 ties");
        using var bz = Acc.Allocate1D(zv); using var be = Acc.Allocate1D(ev); using var bids = Acc.Allocate1D<long>(zv.Length);
        IndexKernels.VqLookup(Acc, null, bz.View, be.View, bids.View, zv.Length, ev.Length, 1);
        Acc.Synchronize();
        Assert.That(bids.GetAsArray1D(), Is.EqualTo(new long[] { 3, 0, 0, 1 }), "hand-computed first minima");
    }

    [Test]
    public void VqLookupMultiWarpMatchesCpu()
    {
        const int n = 33, k = 130, d = 40;
        var zv = Rand([n, d], 121, -1, 1).ToArray<float>();
        var ev = Rand([k, d], 122, -1, 1).ToArray<float>();
        Array.Copy(ev, 5 * d, ev, 129 * d, d); Array.Copy(ev, 5 * d, zv, 32 * d, d);
        CheckVq(zv, ev, n, k, d, Multi, "group 8");
    }

    [Test]
    public void VqLookupRejectsEmptyCodebook()
    {
        using var z = Acc.Allocate1D<float>(4); using var ids = Acc.Allocate1D<long>(2);
        var e = Assert.Throws<ArgumentException>(() => IndexKernels.VqLookup(Acc, null, z.View, z.View, ids.View, 2, 0, 2))!;
        Assert.That(e.Message, Does.Contain("vq_lookup").And.Contain("codebook [0, 2] is empty"));
    }
}

/// <summary>Every norm and index kernel compiles to PTX for sm_90 without a GPU (catches kernel code the CPU accelerator accepts but CUDA does not).</summary>
[TestFixture, Category("Cuda")]
public class NormIndexKernelPtxTests
{
    [Test]
    public void AllNormAndIndexKernelsCompileToPtx()
    {
        using var ptxc = new Sm90Ptx();
        var flags = System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic;
        var kernels = typeof(NormKernels).GetMethods(flags).Concat(typeof(IndexKernels).GetMethods(flags))
            .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)).ToArray();
        Assert.That(kernels, Has.Length.EqualTo(16));
        foreach (var mi in kernels)
        {
            string ptx = ptxc.Compile(mi, mi.Name);
            Assert.That(ptx, Does.Contain(".entry"), mi.Name);
            // the split batch norm's apply kernels are elementwise (their reductions ran in the partial kernels)
            if (mi.DeclaringType == typeof(NormKernels) && !mi.Name.EndsWith("ApplyKernel", StringComparison.Ordinal))
                Assert.That(ptx, Does.Contain("shfl.sync"), mi.Name + " reduces with warp shuffles");
            if (mi.Name is "ScatterKernel")
                Assert.That(ptx, Does.Match(@"(atom|red)(\.global)?\.add\.f32"), mi.Name + " adds with float atomics (red.add when the old value is unused)");
            if (mi.Name.StartsWith("Embedding", StringComparison.Ordinal))
                Assert.That(ptx, Does.Not.Match(@"\b(atom|red)(\.\w+)*\.f32"), mi.Name + " is deterministic: no float atomics");
            if (mi.Name == "EmbeddingSumKernel")
                Assert.That(ptx, Does.Contain(".shared"), mi.Name + " stages heavy ids through shared memory");
            if (mi.Name == "VqLookupKernel")
                Assert.That(ptx, Does.Contain(".shared"), mi.Name + " tiles through shared memory");
        }
    }
}
