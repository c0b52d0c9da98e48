using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <see cref="GemmSplitK"/> on ILGPU's CPU accelerator (FVL_KERNEL_TESTS_CUDA=1: a real GPU) against a float64 reference:
/// every transpose combination, whole chunks and a shorter last chunk, alpha / beta·C / bias / GELU applied once after the
/// in-order sum, Fp32 and the tensor-core precisions (operands rounded as the CPU backend rounds them).
/// </summary>
[TestFixture, Category("Cuda")]
public class GemmSplitKTests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    private static float[] RandF(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[Math.Max(n, 0)];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static double Gelu(double x) => 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));

    /// <summary>erf in double: its Maclaurin series below 3 (≈1e-13 after cancellation), the continued fraction of erfc above.</summary>
    private static double Erf(double x)
    {
        double ax = Math.Abs(x), s;
        if (ax < 3)
        {
            double term = ax, sum = ax;
            for (int n = 1; n < 80; n++) { term *= -ax * ax / n; sum += term / (2 * n + 1); }
            s = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            double f = ax;
            for (int n = 80; n >= 1; n--) f = ax + n / 2.0 / f;
            s = 1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f;
        }
        return x < 0 ? -s : s;
    }

    private void Check(Precision p, int M, int N, int K, bool ta, bool tb, bool epilogue, bool gelu, int splits, int expectLaunches)
    {
        string what = $"{p} M {M} N {N} K {K} ta {ta} tb {tb} epilogue {epilogue} gelu {gelu} splits {splits}";
        var a = RandF(M * K, 1);
        var b = RandF(K * N, 2);
        var c0 = RandF(M * N, 3);
        var bias = epilogue ? RandF(N, 4) : null;
        float alpha = epilogue ? 1.5f : 1f, beta = epilogue ? 0.5f : 0f;
        using var aBuf = Up(Acc, a);
        using var bBuf = Up(Acc, b);
        using var cBuf = Up(Acc, beta == 0f ? Enumerable.Repeat(float.NaN, c0.Length).ToArray() : c0);
        using var biasBuf = Up(Acc, bias ?? new float[1]);
        var args = new GemmArgs
        {
            A = aBuf.View, B = bBuf.View, C = cBuf.View, Bias = bias is null ? default : biasBuf.View,
            M = M, N = N, K = K, Batch = 1, Lda = ta ? M : K, Ldb = tb ? K : N, Ldc = N,
            StrideA = (long)M * K, StrideB = (long)K * N, StrideC = (long)M * N,
            TransA = ta, TransB = tb, Alpha = alpha, Beta = beta, Gelu = gelu,
        };
        using var ws = Acc.Allocate1D(Enumerable.Repeat(float.NaN, (int)GemmSplitK.Workspace(args, splits)).ToArray());
        int launches = GemmSplitK.Launch(Acc, null, args, p, ws.View, splits);
        Acc.Synchronize();
        Assert.That(launches, Is.EqualTo(expectLaunches), $"{what}: kernels enqueued");
        var dev = cBuf.GetAsArray1D().Take(c0.Length).ToArray();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
            {
                double s = 0, abs = 0;
                for (int k = 0; k < K; k++)
                {
                    double x = PrecisionRounding.Round(a[ta ? k * M + i : i * K + k], p), y = PrecisionRounding.Round(b[tb ? j * K + k : k * N + j], p);
                    s += x * y; abs += Math.Abs(x * y);
                }
                int o = i * N + j;
                double r = alpha * s + beta * c0[o] + (bias?[j] ?? 0), mag = Math.Abs(alpha) * abs + Math.Abs(beta * c0[o]) + Math.Abs(bias?[j] ?? 0);
                // fp32 accumulation bound (K + splits + 3)·2⁻²⁴·Σ|terms| (the chunk sums, then the partial sum, then the epilogue);
                // twice that on a GPU, whose tensor cores may truncate. GELU's slope is at most 1.13, and its float32
                // evaluation adds a few ulps of the result.
                double tol = 2 * (K + splits + 3) * Math.Pow(2, -24) * mag;
                double want = r;
                if (gelu) { want = Gelu(r); tol = 1.13 * tol + 8 * Math.Pow(2, -24) * (Math.Abs(want) + 1e-3); }
                Assert.That(Math.Abs(dev[o] - want), Is.LessThanOrEqualTo(tol + 1e-30), $"{what}: element ({i}, {j}) = {dev[o]:R}, want {want:R}");
            }
    }

    // Chunks are whole multiples of 16: K 512 in 2 → 256 + 256 (one batched launch + the reduction); K 600 in 3 → 208,
    // 208, 184 (batched + a shorter last chunk + the reduction); K 1000 in 4 → 256 × 3 + 232.
    [TestCase(Precision.Fp32, false, false, 512, 2, 2)]
    [TestCase(Precision.Fp32, true, false, 600, 3, 3)]
    [TestCase(Precision.Fp32, false, true, 1000, 4, 3)]
    [TestCase(Precision.Fp32, true, true, 600, 3, 3)]
    [TestCase(Precision.Tf32, true, false, 600, 3, 3)]
    [TestCase(Precision.Bf16, false, true, 512, 2, 2)]
    public void MatchesFloat64(Precision p, bool ta, bool tb, int k, int splits, int launches)
    {
        Check(p, 9, 13, k, ta, tb, epilogue: false, gelu: false, splits, launches);
        Check(p, 9, 13, k, ta, tb, epilogue: true, gelu: false, splits, launches);
    }

    [Test]
    public void GeluIsAppliedOnceAfterTheSum() => Check(Precision.Fp32, 5, 7, 600, false, false, epilogue: true, gelu: true, 3, 3);

    [Test]
    public void RefusesBadArguments()
    {
        using var buf = Acc.Allocate1D<float>(4 * 600);
        var args = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 2, 2, 600);
        using var small = Acc.Allocate1D<float>(5);
        Assert.That(Assert.Throws<ArgumentException>(() => GemmSplitK.Launch(Acc, null, args, Precision.Fp32, small.View, 2))!.Message,
            Does.Contain("need a workspace of 8 floats, got 5"));
        Assert.That(Assert.Throws<ArgumentException>(() => GemmSplitK.Launch(Acc, null, args, Precision.Fp32, buf.View, 1))!.Message,
            Does.Contain("at least 2 splits"));
        var batched = GemmArgs.Dense(buf.View, buf.View, buf.View, 2, 1, 1, 600);
        Assert.That(Assert.Throws<ArgumentException>(() => GemmSplitK.Launch(Acc, null, batched, Precision.Fp32, buf.View, 2))!.Message,
            Does.Contain("batch 2"));
    }

    [Test]
    public void SplitsOnlyFewTilesWithDeepK()
    {
        int sms = Acc.NumMultiprocessors;
        using var buf = Acc.Allocate1D<float>(1);
        GemmArgs Shape(int batch, int m, int n, int k) => new()
        {
            A = buf.View, B = buf.View, C = buf.View, M = m, N = n, K = k, Batch = batch, Lda = k, Ldb = n, Ldc = n,
        };
        // one 128×128 tile, K 4096: min(2·SMs, 4096 / 256 = 16) chunks (the rounding to multiples of 16 keeps the count here)
        int one = Math.Min(2 * sms, 16);
        Assert.That(GemmSplitK.Splits(Acc, Shape(1, 100, 100, 4096), Precision.Fp32), Is.EqualTo(one < 2 ? 1 : one));
        Assert.That(GemmSplitK.Splits(Acc, Shape(1, 100, 100, 511), Precision.Fp32), Is.EqualTo(1), "K below two chunks of 256");
        Assert.That(GemmSplitK.Splits(Acc, Shape(2, 100, 100, 4096), Precision.Fp32), Is.EqualTo(1), "batched GEMMs are not split");
        // as many tiles as multiprocessors: the device is already full
        Assert.That(GemmSplitK.Splits(Acc, Shape(1, 128 * sms, 128, 4096), Precision.Fp32), Is.EqualTo(1));
        // the tensor-core tile is 64×32: 100×100 is 2×4 = 8 of them
        int tc = 8 >= sms ? 1 : Math.Min(2 * sms / 8, 16);
        Assert.That(GemmSplitK.Splits(Acc, Shape(1, 100, 100, 4096), Precision.Tf32), Is.EqualTo(tc < 2 ? 1 : tc));
    }
}

/// <summary>CudaBackend.MatMul (emulated device: 2 multiprocessors) splits K for a GEMM of one tile with a deep K.</summary>
[Category("Cuda"), NonParallelizable]
public class CudaMatMulSplitKTests : CudaTestBase
{
    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    public void WiredMatMulSplitsAWeightGradientShapedGemm(Precision p)
    {
        using var scope = Tensor.Scope();
        // dW = dYᵀ·X: [24, 1000]ᵀ... as (transA) [1000, 24]ᵀ · [1000, 20] → [24, 20], K = 1000
        var dy = Rand([1000, 24], 5, lo: -1, hi: 1);
        var x = Rand([1000, 20], 6, lo: -1, hi: 1);
        var want = Tensor.Empty([24, 20]);
        using (MatMulPrecision.Use(p)) Cpu.MatMul(dy, x, want, transA: true, transB: false);
        var rt = Dev.Runtime;
        var args = new GemmArgs { M = 24, N = 20, K = 1000, Batch = 1 };
        int splits = GemmSplitK.Splits(rt.Accelerator, args, p);
        Assert.That(splits, Is.GreaterThanOrEqualTo(2), $"the emulated device ({rt.Accelerator.NumMultiprocessors} multiprocessors) splits one tile with K = 1000");
        var got = Tensor.Full([24, 20], double.NaN, DType.Float32, Gpu);
        var ddy = Up(dy); var dx = Up(x);
        Dev.Synchronize();
        var c0 = rt.Counters;
        using (MatMulPrecision.Use(p)) Dev.MatMul(ddy, dx, got, transA: true, transB: false);
        Dev.Synchronize();
        long launches = (rt.Counters - c0).KernelLaunches;
        Assert.That(launches, Is.GreaterThanOrEqualTo(2), "partial products and the reduction");
        // both within (K + 3)·2⁻²⁴·Σ|terms| ≤ (K + 3)·2⁻²⁴·K of float64 (operands in [-1, 1)), so within twice that of each other
        AssertSame(got, want, 0, 2 * (1000 + splits + 3) * Math.Pow(2, -24) * 1000, $"{p} split-K matmul vs CPU");
    }
}
