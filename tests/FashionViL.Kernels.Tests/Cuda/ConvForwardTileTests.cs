using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The 128×128 conv tile's forward path (<see cref="ConvTc3Forward"/>: the weight staged as a row-major matrix with
/// 128-bit loads, B as 8 consecutive K rows stored k-contiguous): bitwise the 128×64 tile's results — every tile gives the
/// same bits — on shapes whose whole row tiles take the 128-bit weight loads (K a multiple of 4, Cout ≥ 128), K tails,
/// edge row tiles, 1×1 and 3×3, weights rounded by the kernel or by the caller, a weight view that is not 16-byte aligned
/// (scalar loads), on 2-thread groups and on the 256-thread groups that run the GPU's one-slot path. The weight sits inside
/// NaN padding, so a load past its rows or its K would poison outputs. TensorCoreConvDigestTests pins the path's bits on
/// the awkward shapes (strides, dilation, asymmetric padding, split-K).
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class ConvForwardTileTests() : EmulatorKernelTestBase(assertions: true)
{
    private static float[] Random(Random r, int n) => Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();

    [TestCase(2, 16, 9, 7, 136, 3, 3, 1, TestName = "3x3 K 144, Cout 136 (an edge row tile)")]
    [TestCase(1, 4, 6, 6, 128, 3, 3, 1, TestName = "3x3 K 36 (a tail of 4), Cout 128")]
    [TestCase(2, 32, 5, 5, 256, 1, 1, 0, TestName = "1x1 K 32, Cout 256 (two whole row tiles)")]
    [TestCase(2, 20, 4, 5, 130, 1, 1, 0, TestName = "1x1 K 20 (a tail of 4), Cout 130")]
    [TestCase(1, 3, 6, 6, 128, 3, 3, 1, TestName = "3x3 K 27 (weight rows not multiples of 4: scalar loads), Cout 128")]
    public void TheForwardPathGivesTheBitsOfThe128x64Tile(int batch, int cin, int h, int w, int cout, int kh, int kw, int pad)
    {
        var r = new Random(batch * 1000 + cin * 10 + cout);
        var cp = Conv2dParams.Symmetric(1, pad);
        var (ho, wo) = ConvKernels.OutputSize(h, w, kh, kw, cp);
        int nw = cout * cin * kh * kw, ny = batch * cout * ho * wo;
        var x = Random(r, batch * cin * h * w);
        var wt = Random(r, nw);
        var bias = Random(r, cout);
        float[] want;
        using (var dx = Up(Acc, x)) using (var dw = Up(Acc, wt)) using (var db = Up(Acc, bias)) using (var dy = Acc.Allocate1D<float>(ny))
        {
            ConvKernels.Conv2dForward(Acc, null, dx.View, dw.View, db.View, dy.View, batch, cin, h, w, cout, kh, kw, cp, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x64);
            Acc.Synchronize();
            want = dy.GetAsArray1D();
        }
        var owned = new List<Accelerator>();
        try
        {
            var wide = new CPUDevice(16, 16, 1).CreateCPUAccelerator(Ctx, CPUAcceleratorMode.Parallel);
            owned.Add(wide);
            foreach (var (acc, groups) in new[] { (Acc, "2-thread groups"), (wide, "256-thread groups") })
                foreach (int offset in new[] { 4, 1 })   // 16-byte aligned weight, then one float off (scalar loads)
                    foreach (bool pre in new[] { false, true })
                    {
                        // the weight at `offset` inside NaN padding on both sides
                        var padded = Enumerable.Repeat(float.NaN, nw + offset + 8).ToArray();
                        for (int i = 0; i < nw; i++) padded[offset + i] = pre ? PrecisionRounding.ToTf32(wt[i]) : wt[i];
                        using var dx = Up(acc, x);
                        using var dw = Up(acc, padded);
                        using var db = Up(acc, bias);
                        using var dy = acc.Allocate1D<float>(ny);
                        long before = Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches);
                        ConvKernels.Conv2dForward(acc, null, dx.View, dw.View.SubView(offset, nw), db.View, dy.View, batch, cin, h, w, cout, kh, kw, cp,
                            precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128, weightRounded: pre);
                        acc.Synchronize();
                        string what = $"{groups}, weight at float {offset}, rounded by the caller {pre}";
                        Assert.That(Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches), Is.EqualTo(before + 1), $"{what}: the forward path ran");
                        Assert.That(dy.GetAsArray1D().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);
                    }
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    /// <summary>FVL_TC_CONV_FWD: vec (default) takes the forward path, table the coordinate tables — the same bits; anything
    /// else is refused by name.</summary>
    [Test]
    public void TheSwitchSelectsThePathAndRefusesAnythingElse()
    {
        Assert.That(ConvKernels.ParseTc3Forward(null), Is.True);
        Assert.That(ConvKernels.ParseTc3Forward(" VEC "), Is.True);
        Assert.That(ConvKernels.ParseTc3Forward("table"), Is.False);
        Assert.That(Assert.Throws<ArgumentException>(() => ConvKernels.ParseTc3Forward("fast"))!.Message, Does.Contain("FVL_TC_CONV_FWD").And.Contain("fast"));
        var r = new Random(9);
        const int batch = 1, cin = 8, h = 6, w = 5, cout = 130;
        var cp = Conv2dParams.Symmetric(1, 1);
        using var dx = Up(Acc, Random(r, batch * cin * h * w));
        using var dw = Up(Acc, Random(r, cout * cin * 9));
        using var dy = Acc.Allocate1D<float>(batch * cout * h * w);
        bool was = ConvKernels.Tc3ForwardPath;
        try
        {
            var bits = new List<int[]>();
            foreach (bool vec in new[] { true, false })
            {
                ConvKernels.Tc3ForwardPath = vec;
                long before = Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches);
                ConvKernels.Conv2dForward(Acc, null, dx.View, dw.View, default, dy.View, batch, cin, h, w, cout, 3, 3, cp, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
                Acc.Synchronize();
                Assert.That(Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches) - before, Is.EqualTo(vec ? 1 : 0), $"vec {vec}");
                bits.Add(dy.GetAsArray1D().Select(BitConverter.SingleToInt32Bits).ToArray());
            }
            Assert.That(bits[0], Is.EqualTo(bits[1]));
        }
        finally
        {
            ConvKernels.Tc3ForwardPath = was;
        }
    }

    /// <summary>Each lane's B fragment words on CUDA (<see cref="ConvKernels.Tc3LaneB"/> + the GEMM tile's offsets) are the
    /// words the stores put the PTX ISA's elements in (TF32 m16n8k8 B: b_i = (k t + 4i, n g)), on both paths: the forward
    /// path's k-contiguous B[n·20 + k] and the table path's B[k·136 + n]. (The emulator reads fragments through the same
    /// offsets, so this is the one CUDA-only link.)</summary>
    [Test]
    public void BFragmentsReadWhereTheStoresPutTheIsaElements()
    {
        foreach (bool forward in new[] { true, false })
            for (int w = 0; w < 8; w++)
            {
                int wc = 32 * (w & 3);
                for (int lane = 0; lane < 32; lane++)
                {
                    int g = lane >> 2, t = lane & 3;
                    foreach (int ks in new[] { 0, 8 })
                        for (int nj = 0; nj < 4; nj++)
                            for (int i = 0; i < 2; i++)
                            {
                                int k = ks + t + 4 * i, n = wc + 8 * nj + g;
                                long got = ConvKernels.Tc3LaneB(forward, wc, g, t) + TensorCoreGemm.B3Off(forward, nj, ks, i);
                                long want = forward ? ConvKernels.FwdBWord(k, n) : k * TensorCoreGemm.KoStride + n;
                                Assert.That(got, Is.EqualTo(want), $"forward {forward}, warp {w}, lane {lane}, ks {ks}, n8 tile {nj}, b{i}");
                            }
                }
            }
    }

    /// <summary>The input and weight gradients keep the table path (their A is not a row-major weight); the forward path's
    /// PTX stages the weight with 128-bit loads and both operands with 128-bit shared stores.</summary>
    [Test]
    public void OnlyForwardConvolutionsTakeItAndItsPtxUsesVectorLoadsAndStores()
    {
        var r = new Random(3);
        const int batch = 1, cin = 8, h = 5, w = 5, cout = 128;
        var cp = Conv2dParams.Symmetric(1, 1);
        using var dx = Up(Acc, Random(r, batch * cin * h * w));
        using var dw = Up(Acc, Random(r, cout * cin * 9));
        using var dy = Up(Acc, Random(r, batch * cout * h * w));
        using var ws = Acc.Allocate1D<float>(2 * cout * cin * 9);
        long before = Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches);
        ConvKernels.Conv2dBackwardInput(Acc, null, dy.View, dw.View, dx.View, batch, cin, h, w, cout, 3, 3, cp, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
        ConvKernels.Conv2dBackwardWeight(Acc, null, dx.View, dy.View, dw.View, default, batch, cin, h, w, cout, 3, 3, cp, workspace: ws.View, precision: Precision.Tf32, tcTile: TensorCoreTile.Tile128x128);
        Acc.Synchronize();
        Assert.That(Interlocked.Read(ref ConvKernels.Tc3ForwardLaunches), Is.EqualTo(before));

        using var c = new Sm90Ptx();
        var fwd = c.Compile(ConvKernels.TensorCoreForwardKernelMethod, "conv3-forward");
        var any = c.Compile(ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x128), "conv3-any");
        int Count(string ptx, string re) => System.Text.RegularExpressions.Regex.Count(ptx, re);
        Assert.That(Count(fwd, @"\bld\.v4\.f32"), Is.GreaterThan(0), "128-bit weight loads");
        Assert.That(Count(any, @"\bld\.v4\.f32"), Is.Zero);
        Assert.That(Count(fwd, @"st\.shared\.v4"), Is.GreaterThan(Count(any, @"st\.shared\.v4")), "128-bit stage stores");
        Assert.That(fwd, Does.Not.Contain(".local"));
    }
}
