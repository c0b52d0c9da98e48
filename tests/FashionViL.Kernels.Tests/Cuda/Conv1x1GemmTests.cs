using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <c>FVL_CONV1X1=gemm</c> (<see cref="CudaBackend.Conv1x1AsGemm"/>): 1×1 stride-1 convolutions without bias, planes of at
/// least <see cref="CudaBackend.Conv1x1MinPlane"/> positions, run forward and input gradient as one batched GEMM. The
/// results are compared with the direct convolution kernels in every precision, and the geometry the switch must leave
/// alone (stride 2, padding, bias, small planes, 3×3) must still take the direct kernels.
/// </summary>
[TestFixture, Category("Cuda")]
public class Conv1x1GemmTests : CudaTestBase
{
    [TearDown]
    public void Reset()
    {
        CudaBackend.Conv1x1AsGemm = false;
        CudaBackend.Conv1x1MinPlane = 512;
    }

    private static float[] Forward(Tensor x, Tensor w, Tensor? b, Conv2dParams p, bool gemm, Precision pr)
    {
        CudaBackend.Conv1x1AsGemm = gemm;
        using var dx = Up(x); using var dw = Up(w); using var db = b is null ? null : Up(b);
        int oh = p.OutH(x.Sizes[2], w.Sizes[2]), ow = p.OutW(x.Sizes[3], w.Sizes[3]);
        using var y = Tensor.Empty([x.Sizes[0], w.Sizes[0], oh, ow], DType.Float32, Gpu);
        using (MatMulPrecision.Use(pr)) Dev.Conv2dForward(dx, dw, db, y, p);
        return y.To(Device.Cpu).ToArray<float>();
    }

    private static float[] InputGradient(Tensor gy, Tensor w, int h, int wd, Conv2dParams p, bool gemm, Precision pr)
    {
        CudaBackend.Conv1x1AsGemm = gemm;
        using var dgy = Up(gy); using var dw = Up(w);
        using var gx = Tensor.Empty([gy.Sizes[0], w.Sizes[1], h, wd], DType.Float32, Gpu);
        using (MatMulPrecision.Use(pr)) Dev.Conv2dBackwardInput(dgy, dw, gx, p);
        return gx.To(Device.Cpu).ToArray<float>();
    }

    [Test]
    public void ForwardAndInputGradientEqualTheDirectKernels([Values(Precision.Fp32, Precision.Tf32, Precision.Bf16)] Precision pr)
    {
        CudaBackend.Conv1x1MinPlane = 64;   // small shapes for the emulator; the rule is the same
        var p = Conv2dParams.Symmetric(1, 0);
        using var x = Rand([3, 72, 9, 11], 31, DType.Float32, -2, 2);   // 72 channels: several K tiles and a tail
        using var w = Rand([40, 72, 1, 1], 32, DType.Float32, -1, 1);
        var direct = Forward(x, w, null, p, gemm: false, pr);
        var gemm = Forward(x, w, null, p, gemm: true, pr);
        AssertEqual(gemm, direct, $"forward {pr}");
        using var gy = Rand([3, 40, 9, 11], 33, DType.Float32, -1, 1);
        var gDirect = InputGradient(gy, w, 9, 11, p, gemm: false, pr);
        var gGemm = InputGradient(gy, w, 9, 11, p, gemm: true, pr);
        AssertEqual(gGemm, gDirect, $"input gradient {pr}");
    }

    [Test]
    public void TheSwitchParsesDirectAndGemmAndNamesABadValue()
    {
        Assert.That(CudaBackend.ParseConv1x1(null), Is.False);
        Assert.That(CudaBackend.ParseConv1x1("direct"), Is.False);
        Assert.That(CudaBackend.ParseConv1x1(" GEMM "), Is.True);
        Assert.That(Assert.Throws<ArgumentException>(() => CudaBackend.ParseConv1x1("fast"))!.Message, Does.Contain("FVL_CONV1X1").And.Contain("fast"));
    }

    /// <summary>Geometry the GEMM form does not cover keeps the direct kernels with the switch on: the results stay those of the
    /// float64 convolution (a wrong GEMM mapping of a strided, padded or biased convolution would not be).</summary>
    [TestCase(2, 0, false, 64)]    // stride 2
    [TestCase(1, 1, false, 64)]    // padding 1
    [TestCase(1, 0, true, 64)]     // bias
    [TestCase(1, 0, false, 4096)]  // plane below the threshold
    public void OtherGeometryKeepsTheDirectKernels(int stride, int pad, bool bias, int minPlane)
    {
        CudaBackend.Conv1x1MinPlane = minPlane;
        var p = Conv2dParams.Symmetric(stride, pad);
        using var x = Rand([2, 16, 9, 11], 41, DType.Float32, -2, 2);
        using var w = Rand([8, 16, 1, 1], 42, DType.Float32, -1, 1);
        using var b = bias ? Rand([8], 43, DType.Float32, -1, 1) : null;
        var direct = Forward(x, w, b, p, gemm: false, Precision.Fp32);
        var on = Forward(x, w, b, p, gemm: true, Precision.Fp32);
        AssertEqual(on, direct, $"stride {stride}, padding {pad}, bias {bias}, min plane {minPlane}");
        // and both are the convolution
        var x64 = x.ToArray<float>(); var w64 = w.ToArray<float>(); var b64 = b?.ToArray<float>();
        int oh = p.OutH(9, 1), ow = p.OutW(11, 1);
        for (int n = 0; n < 2; n++)
            for (int k = 0; k < 8; k++)
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++)
                    {
                        int hi = i * stride - pad, wj = j * stride - pad;
                        double sum = b64 is null ? 0 : b64[k];
                        if (hi >= 0 && hi < 9 && wj >= 0 && wj < 11)
                            for (int c = 0; c < 16; c++) sum += (double)w64[k * 16 + c] * x64[((n * 16 + c) * 9 + hi) * 11 + wj];
                        float got = on[((n * 8 + k) * oh + i) * ow + j];
                        Assert.That(got, Is.EqualTo(sum).Within(1e-5 * (1 + Math.Abs(sum))), $"output ({n},{k},{i},{j})");
                    }
    }

    private static void AssertEqual(float[] got, float[] want, string what)
    {
        Assert.That(got.Length, Is.EqualTo(want.Length), what);
        double worst = 0, scale = want.Max(v => Math.Abs((double)v));
        int differ = 0;
        for (int i = 0; i < want.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i])) differ++;
            worst = Math.Max(worst, Math.Abs((double)got[i] - want[i]));
        }
        TestContext.Out.WriteLine($"{what}: {differ} of {want.Length} differ in bits, worst {worst:E2} of max {scale:E2}");
        Assert.That(differ, Is.Zero, $"{what}: {differ} of {want.Length} outputs differ from the direct kernel's bits (worst {worst:E2})");
    }
}
