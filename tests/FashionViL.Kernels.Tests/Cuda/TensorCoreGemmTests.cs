using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <see cref="TensorCoreGemm"/> on ILGPU's CPU accelerator (its portable path: 2-thread groups, bounds-checked views) against
/// CpuBackend.MatMul under the same <see cref="MatMulPrecision"/>, both checked against a float64 reference on the rounded
/// operands; and its PTX for sm_90. FVL_KERNEL_TESTS_CUDA=1 runs the same cases on a real GPU, i.e. the mma path (owed:
/// no GPU has run it yet).
/// </summary>
[TestFixture, Category("Cuda")]
public class TensorCoreGemmTests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    private static float[] RandF(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[Math.Max(n, 0)];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private void Check(Precision p, int batch, int M, int N, int K, bool ta, bool tb, bool epilogue, bool shareB = false)
    {
        string what = $"{p} batch {batch} M {M} N {N} K {K} ta {ta} tb {tb} epilogue {epilogue} shareB {shareB}";
        int bBatch = shareB ? 1 : batch;
        var a = RandF(batch * M * K, 1);
        var b = RandF(bBatch * K * N, 2);
        var c0 = RandF(batch * M * N, 3);
        var bias = epilogue ? RandF(N, 4) : null;
        float alpha = epilogue ? 1.5f : 1f, beta = epilogue ? 0.5f : 0f;

        // CPU backend, same precision
        float[] cpu;
        using (var at = Tensor.FromArray(a, batch, ta ? K : M, ta ? M : K))
        using (var bt = shareB ? Tensor.FromArray(b, tb ? N : K, tb ? K : N) : Tensor.FromArray(b, batch, tb ? N : K, tb ? K : N))
        using (var ct = Tensor.FromArray((float[])c0.Clone(), batch, M, N))
        using (var biasT = bias is null ? null : Tensor.FromArray(bias, N))
        using (MatMulPrecision.Use(p))
        {
            Cpu.MatMul(at, bt, ct, ta, tb, alpha, beta, biasT);
            cpu = ct.ToArray<float>();
        }

        // device, beta = 0 outputs poisoned with NaN (never read)
        using var aBuf = Up(Acc, a);
        using var bBuf = Up(Acc, b);
        using var cBuf = Up(Acc, beta == 0f ? Enumerable.Repeat(float.NaN, c0.Length).ToArray() : c0);
        using var biasBuf = Up(Acc, bias ?? new float[1]);
        var args = new GemmArgs
        {
            A = aBuf.View, B = bBuf.View, C = cBuf.View, Bias = bias is null ? default : biasBuf.View,
            M = M, N = N, K = K, Batch = batch, Lda = ta ? M : K, Ldb = tb ? K : N, Ldc = N,
            StrideA = (long)M * K, StrideB = shareB ? 0 : (long)K * N, StrideC = (long)M * N,
            TransA = ta, TransB = tb, Alpha = alpha, Beta = beta,
        };
        TensorCoreGemm.Launch(Acc, null, args, p);
        Acc.Synchronize();
        var dev = cBuf.GetAsArray1D().Take(c0.Length).ToArray();

        // float64 on the rounded operands; both results within the float32 accumulation bound (K+3)·2⁻²⁴·Σ|terms|
        double worst = 0, moved = 0;
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                {
                    double s = 0, abs = 0, exact = 0;
                    for (int k = 0; k < K; k++)
                    {
                        float av = a[bt * M * K + (ta ? k * M + i : i * K + k)];
                        float bv = b[(shareB ? 0 : bt) * K * N + (tb ? j * K + k : k * N + j)];
                        double x = PrecisionRounding.Round(av, p), y = PrecisionRounding.Round(bv, p);
                        s += x * y; abs += Math.Abs(x * y); exact += (double)av * bv;
                    }
                    int o = (bt * M + i) * N + j;
                    double want = alpha * s + beta * c0[o] + (bias?[j] ?? 0), mag = Math.Abs(alpha) * abs + Math.Abs(beta * c0[o]) + Math.Abs(bias?[j] ?? 0);
                    // Device: twice the bound, since tensor cores may truncate instead of round inside their fp32 sums (unit
                    // roundoff 2⁻²³); the portable path rounds, like the CPU.
                    double tol = (K + 3) * Math.Pow(2, -24) * mag + 1e-30;
                    Assert.That(Math.Abs(dev[o] - want), Is.LessThanOrEqualTo(2 * tol), $"{what}: device element {o} = {dev[o]:R}, want {want:R}");
                    Assert.That(Math.Abs(cpu[o] - want), Is.LessThanOrEqualTo(tol), $"{what}: cpu element {o} = {cpu[o]:R}, want {want:R}");
                    Assert.That(Math.Abs(dev[o] - cpu[o]), Is.LessThanOrEqualTo(3 * tol), $"{what}: device vs cpu at {o}");
                    worst = Math.Max(worst, Math.Abs(dev[o] - want));
                    moved = Math.Max(moved, Math.Abs(alpha * (exact - s)));
                }
        if (K > 0) Assert.That(moved, Is.GreaterThan(10 * worst + 1e-7), $"{what}: the device result does not show the operand rounding");
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            yield return new TestCaseData(p, 1, 7, 13, 19, false, false, false, false).SetName($"{p} NN 7x13x19");
            yield return new TestCaseData(p, 1, 5, 9, 33, false, true, true, false).SetName($"{p} NT 5x9x33 alpha beta bias");
            yield return new TestCaseData(p, 2, 11, 6, 17, true, false, true, false).SetName($"{p} TN batch 2 11x6x17 alpha beta bias");
            yield return new TestCaseData(p, 2, 3, 5, 9, true, true, false, true).SetName($"{p} TT batch 2 shared B 3x5x9");
            yield return new TestCaseData(p, 1, 67, 35, 21, false, false, true, false).SetName($"{p} NN 67x35x21 (2x2 group tiles)");
            yield return new TestCaseData(p, 1, 4, 3, 0, false, false, true, false).SetName($"{p} K = 0: beta C + bias");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheCpuBackendAtTheSamePrecision(Precision p, int batch, int M, int N, int K, bool ta, bool tb, bool epilogue, bool shareB)
        => Check(p, batch, M, N, K, ta, tb, epilogue, shareB);

    [Test]
    public void Fp32IsRefused()
    {
        using var buf = Acc.Allocate1D<float>(4);
        var args = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 2, 2, 1);
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.Launch(Acc, null, args, Precision.Fp32))!;
        Assert.That(e.Message, Does.Contain("Fp32"));
    }

    [Test]
    public void CompilesToPtxForSm90WithBothMmaForms()
    {
        using var ptxc = new Sm90Ptx();
        var ptx = ptxc.Compile(TensorCoreGemm.KernelMethod(), "tensor_core_gemm");
        Assert.That(ptx, Does.Contain(".entry"));
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"), "the TF32 tensor-core instruction");
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"), "the bf16 tensor-core instruction");
        Assert.That(ptx, Does.Contain("bar.sync"));
        // The accumulators are PTX registers named by the asm, never C# locals passed by ref (ILGPU routes those through
        // .local memory around every mma; ptxas did not promote them back: 320-byte stack frame in the first version).
        Assert.That(ptx, Does.Not.Contain(".local"), "no local memory in the tensor-core kernel");
        Assert.That(ptx, Does.Contain(".reg .f32 fvlc<16>;"));
        Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync"), Is.EqualTo(12), "one mma per n8 tile and k step: 4 bf16, and 2 × 4 TF32 (both k8 steps unrolled)");
    }
}

/// <summary>CudaBackend.MatMul (emulated device) follows <see cref="MatMulPrecision"/>: Fp32 stays the exact SGEMM, Tf32/Bf16 match the CPU backend.</summary>
[Category("Cuda"), NonParallelizable]
public class CudaMatMulPrecisionTests : CudaTestBase
{
    [TestCase(Precision.Fp32)]
    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void WiredMatMulFollowsTheSwitch(Precision p)
    {
        using var scope = Tensor.Scope();
        var a = Rand([2, 9, 21], 1, lo: -1, hi: 1);
        var b = Rand([21, 13], 2, lo: -1, hi: 1);
        var bias = Rand([13], 3, lo: -1, hi: 1);
        var want = Tensor.Empty([2, 9, 13]);
        var got = Tensor.Empty([2, 9, 13], DType.Float32, Gpu);
        var fp32 = Tensor.Empty([2, 9, 13], DType.Float32, Gpu);
        Dev.MatMul(Up(a), Up(b), fp32, false, false, 1, 0, Up(bias));
        using (MatMulPrecision.Use(p))
        {
            Cpu.MatMul(a, b, want, false, false, 1, 0, bias);
            Dev.MatMul(Up(a), Up(b), got, false, false, 1, 0, Up(bias));
        }
        // K = 21 terms of size ≤ 1 plus the bias: the fp32 accumulation bound (K+3)·2⁻²⁴·(K+1), on each backend (×2 on a
        // device whose tensor cores truncate: 2⁻²³), so 3× between them.
        double tol = 3 * 24 * 22 * Math.Pow(2, -24);
        AssertSame(got, want, 0, tol, $"{p} device vs cpu");
        var g = got.To(FashionViL.Tensors.Device.Cpu).ToArray<float>();
        var f = fp32.To(FashionViL.Tensors.Device.Cpu).ToArray<float>();
        double diff = g.Zip(f, (x, y) => Math.Abs(x - y)).Max();
        TestContext.Out.WriteLine($"{p}: max |device − device fp32| = {diff:G3}, tolerance {tol:G3}");
        if (p == Precision.Fp32) Assert.That(g, Is.EqualTo(f), "Fp32 in a scope is the default SGEMM, bitwise");
        else Assert.That(diff, Is.GreaterThan(10 * tol), $"{p} did not reach the device GEMM");
    }
}
