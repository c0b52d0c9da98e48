using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The CUDA backend's weight gradient splits K (batch·Ho·Wo) when the gradient has few output tiles: it sizes a workspace
/// with <see cref="ConvKernels.BackwardWeightWorkspace"/> from the caching allocator and passes it to the launcher, which
/// then runs the split GEMM and the in-order reduction (two launches instead of one). Without it ResNet-50's stem and
/// layer1 weight gradients would run on 1–9 multiprocessors of an H100's 132.
/// </summary>
public class CudaConvSplitKTests : CudaTestBase
{
    private static double[] D(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>float64 weight gradient: gw[co, ci, i, j] = Σ_n,oh,ow gy[n, co, oh, ow] · x[n, ci, oh·s − p + i, ow·s − p + j].</summary>
    private static double[] RefWeightGrad(float[] x, float[] gy, int batch, int cin, int h, int w, int cout, int k, int stride, int pad, int ho, int wo)
    {
        var gw = new double[cout * cin * k * k];
        for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
        for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++)
        {
            double s = 0;
            for (int n = 0; n < batch; n++)
            for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++)
            {
                int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                s += (double)gy[((n * cout + co) * ho + oh) * wo + ow] * x[((n * cin + ci) * h + ih) * w + iw];
            }
            gw[((co * cin + ci) * k + i) * k + j] = s;
        }
        return gw;
    }

    [TestCase(3, 1, 1)]   // 3×3 pad 1: a 4 × 27 gradient (one tile) over K = 2·20·20 = 800
    [TestCase(1, 2, 0)]   // 1×1 stride 2: 4 × 3, K = 2·10·10 = 200 → too shallow to split (chunks ≥ 256)
    public void BackendSplitsTheWeightGradientOfFewTilesAndMatchesFloat64(int k, int stride, int pad)
    {
        using var scope = Tensor.Scope();
        int batch = 2, cin = 3, h = 20, w = 20, cout = 4;
        var p = Conv2dParams.Symmetric(stride, pad);
        var (ho, wo) = ConvKernels.OutputSize(h, w, k, k, p);
        var x = Rand([batch, cin, h, w], 11, lo: -1, hi: 1);
        var gy = Rand([batch, cout, ho, wo], 12, lo: -1, hi: 1);
        var rt = Dev.Runtime;
        long ws = ConvKernels.BackwardWeightWorkspace(rt.Accelerator, batch, cin, h, w, cout, k, k, p);
        int depth = batch * ho * wo;
        bool splits = depth >= 512;   // one output tile: the rule asks for ≥ 2 splits whenever two chunks of ≥ 256 fit
        Assert.That(ws > 0, Is.EqualTo(splits), $"workspace {ws} floats for K = {depth}");
        if (splits)
        {
            Assert.That(ws % (cout * cin * k * k), Is.EqualTo(0), "a whole number of gradient-sized partials");
            Assert.That(ws, Is.GreaterThanOrEqualTo(2L * cout * cin * k * k), "at least two partials");
        }

        var dx = Up(x); var dgy = Up(gy);
        var gw = Tensor.Full([cout, cin, k, k], double.NaN, DType.Float32, Gpu);
        var gb = Tensor.Full([cout], double.NaN, DType.Float32, Gpu);
        Dev.Synchronize();
        var c0 = rt.Counters;
        Dev.Conv2dBackwardWeight(dx, dgy, gw, gb, p);
        Dev.Synchronize();
        long launches = (rt.Counters - c0).KernelLaunches;
        // split: partial GEMMs + the in-order reduction + the bias gradient; unsplit: the GEMM + the bias gradient
        Assert.That(launches, Is.EqualTo(splits ? 3 : 2), "launches of one weight gradient");

        var want = RefWeightGrad(x.ToArray<float>(), gy.ToArray<float>(), batch, cin, h, w, cout, k, stride, pad, ho, wo);
        // values in [-1, 1): Σ|terms| ≤ K, fp32 accumulation bound (K + 3)·2⁻²⁴·K per element (a split only reorders the sum)
        double tol = (depth + 3) * Math.Pow(2, -24) * depth;
        OpCheck.AssertClose(D(gw.To(Device.Cpu).ToArray<float>()), want, 0, tol, "weight gradient vs float64");
        var gbWant = new double[cout];
        var gyh = gy.ToArray<float>();
        for (int n = 0; n < batch; n++) for (int co = 0; co < cout; co++) for (int q = 0; q < ho * wo; q++) gbWant[co] += gyh[(n * cout + co) * ho * wo + q];
        OpCheck.AssertClose(D(gb.To(Device.Cpu).ToArray<float>()), gbWant, 0, (ho * wo * batch + 3) * Math.Pow(2, -24) * ho * wo * batch, "bias gradient");
    }

    [Test]
    public void WorkspaceRuleSplitsOnlyWhenTilesAreFewAndKIsDeep()
    {
        var acc = Dev.Runtime.Accelerator;
        var p = Conv2dParams.Symmetric(1, 1);
        // many output tiles (every multiprocessor busy twice over): no split, whatever K
        int wide = 64 * Math.Max(1, 2 * acc.NumMultiprocessors);
        Assert.That(ConvKernels.BackwardWeightWorkspace(acc, 2, wide, 24, 24, 256, 3, 3, p), Is.EqualTo(0));
        // one tile and K = 4·32·32 = 4096: min(2·MPs, 4096/256 = 16) splits
        long want = Math.Min(2L * acc.NumMultiprocessors, 16);
        long ws = ConvKernels.BackwardWeightWorkspace(acc, 4, 2, 32, 32, 3, 3, 3, p);
        Assert.That(ws, Is.EqualTo(want < 2 ? 0 : want * 3 * 2 * 9));
        // empty batch: nothing to split
        Assert.That(ConvKernels.BackwardWeightWorkspace(acc, 0, 2, 32, 32, 3, 3, 3, p), Is.EqualTo(0));
    }
}
