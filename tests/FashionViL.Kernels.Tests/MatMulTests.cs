using FashionViL.Testing;

namespace FashionViL.Kernels.Tests;

/// <summary>IBackend.MatMul against a float64 triple loop over the operands' raw storage.</summary>
public class MatMulTests
{
    private static IBackend Cpu => Backends.Get(Device.Cpu);

    /// <summary>A stored operand: a [batch, rows, cols] view whose rows are <paramref name="pad"/> elements longer than needed.</summary>
    private sealed class Operand : IDisposable
    {
        public readonly Tensor View;
        public readonly double[] Data;   // the whole storage, row-major [batch, rows, cols + pad]
        public readonly int Rows, Cols, Ld, BatchStride;

        public Operand(int batch, int rows, int cols, int pad, ulong seed, DType dtype, bool shareBatch = false)
        {
            Rows = rows; Cols = cols; Ld = cols + pad;
            int storedBatch = shareBatch ? 1 : batch;
            // (an empty operand gets zeros: there is nothing to draw)
            using var store = rows * Ld == 0 ? Tensor.Zeros([storedBatch, rows, Ld], dtype) : OpCheck.Rand([storedBatch, rows, Ld], seed, dtype);
            Data = rows * Ld == 0 ? [] : store.ToArray<double>();
            BatchStride = shareBatch ? 0 : rows * Ld;
            View = store.AsStrided([batch, rows, cols], [BatchStride, Ld, 1], 0);
        }

        public double At(int b, int r, int c) => Data[b * BatchStride + r * Ld + c];
        public void Dispose() => View.Dispose();
    }

    /// <summary>c ← alpha·op(a)·op(b) + beta·c0 + bias, in float64.</summary>
    private static double[] Reference(Operand a, Operand b, double[]? c0, int batch, int M, int N, int K, bool ta, bool tb, double alpha, double beta, double[]? bias)
    {
        var r = new double[batch * M * N];
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                {
                    double s = 0;
                    for (int k = 0; k < K; k++)
                        s += (ta ? a.At(bt, k, i) : a.At(bt, i, k)) * (tb ? b.At(bt, j, k) : b.At(bt, k, j));
                    int o = (bt * M + i) * N + j;
                    double v = alpha * s;
                    if (beta != 0) v += beta * c0![o];
                    if (bias is not null) v += bias[j];
                    r[o] = v;
                }
        return r;
    }

    private static double Atol(DType dtype, int K) => dtype == DType.Float32 ? 1e-6 + 2e-7 * K : 1e-13 * (K + 1);
    private static double Rtol(DType dtype) => dtype == DType.Float32 ? 1e-5 : 1e-12;

    private static void Check(int batch, int M, int N, int K, bool ta, bool tb, DType dtype, double alpha = 1, double beta = 0,
        bool withBias = false, int pad = 0, bool shareA = false, bool shareB = false, ulong seed = 1)
    {
        using var a = ta ? new Operand(batch, K, M, pad, seed, dtype, shareA) : new Operand(batch, M, K, pad, seed, dtype, shareA);
        using var b = tb ? new Operand(batch, N, K, pad, seed + 1, dtype, shareB) : new Operand(batch, K, N, pad, seed + 1, dtype, shareB);
        using var c = OpCheck.Rand([batch, M, N], seed + 2, dtype);
        var c0 = c.ToArray<double>();
        using var bias = withBias ? OpCheck.Rand([N], seed + 3, dtype) : null;
        var biasV = bias?.ToArray<double>();
        if (beta == 0) Cpu.Fill(c, double.NaN);   // beta = 0 must not read c
        Cpu.MatMul(a.View, b.View, c, ta, tb, alpha, beta, bias);
        var want = Reference(a, b, c0, batch, M, N, K, ta, tb, alpha, beta, biasV);
        OpCheck.AssertClose(c.ToArray<double>(), want, Rtol(dtype), Atol(dtype, K),
            $"matmul {dtype.Name()} batch {batch} M {M} N {N} K {K} transA {ta} transB {tb} alpha {alpha} beta {beta} bias {withBias} pad {pad}");
    }

    private static readonly int[][] Sizes =
    [
        [1, 1, 1], [1, 17, 3], [3, 1, 17], [17, 3, 1], [3, 17, 65], [17, 65, 3], [65, 129, 17], [129, 3, 65],
        [1, 129, 65], [129, 1, 129], [65, 65, 129], [129, 129, 3],
    ];

    [Test]
    public void AllTransposesAndAwkwardSizes([Values(DType.Float32, DType.Float64)] DType dtype, [Values(false, true)] bool ta, [Values(false, true)] bool tb)
    {
        ulong seed = 10;
        foreach (var s in Sizes) Check(1, s[0], s[1], s[2], ta, tb, dtype, seed: seed++);
    }

    [Test]
    public void AlphaBetaAndBias([Values(DType.Float32, DType.Float64)] DType dtype, [Values(false, true)] bool ta, [Values(false, true)] bool tb)
    {
        Check(2, 17, 65, 33, ta, tb, dtype, alpha: -1.5, beta: 0.5, withBias: true, seed: 20);
        Check(1, 3, 129, 17, ta, tb, dtype, alpha: 0.25, beta: 0, withBias: true, seed: 21);
        Check(1, 65, 3, 5, ta, tb, dtype, alpha: 1, beta: -2, withBias: false, seed: 22);
    }

    [Test]
    public void PaddedRowStrides([Values(DType.Float32, DType.Float64)] DType dtype, [Values(false, true)] bool ta, [Values(false, true)] bool tb)
        => Check(3, 17, 33, 65, ta, tb, dtype, beta: 1, withBias: true, pad: 5, seed: 30);

    [Test]
    public void BatchStrideZero([Values(DType.Float32, DType.Float64)] DType dtype, [Values(false, true)] bool ta, [Values(false, true)] bool tb)
    {
        Check(3, 17, 19, 23, ta, tb, dtype, shareA: true, seed: 40);
        Check(3, 17, 19, 23, ta, tb, dtype, shareB: true, withBias: true, seed: 41);
        Check(2, 5, 7, 9, ta, tb, dtype, shareA: true, shareB: true, seed: 42);
    }

    /// <summary>Large enough for several K, M and N blocks, the parallel split, and an odd batch count.</summary>
    [Test]
    public void CrossesCacheBlocksAndThreads([Values(DType.Float32, DType.Float64)] DType dtype)
    {
        Check(1, 260, 41, 270, false, false, dtype, beta: 0.5, withBias: true, seed: 50);
        Check(1, 41, 260, 270, true, true, dtype, alpha: 2, seed: 51);
        Check(3, 70, 80, 100, false, true, dtype, withBias: true, seed: 52);
        Check(1, 7, 4100, 5, true, false, dtype, beta: 1, withBias: true, seed: 53);
        Check(5, 40, 41, 70, true, false, dtype, beta: 0.5, seed: 54);             // many batches: one task per matrix
        Check(1, 3, 700, 300, false, true, dtype, withBias: true, seed: 55);       // fewer rows than threads: columns split
        Check(1, 13, 170, 300, true, true, dtype, seed: 56);
    }

    [Test]
    public void ZeroDepthGivesBetaCPlusBias([Values(DType.Float32, DType.Float64)] DType dtype)
    {
        Check(2, 3, 5, 0, false, false, dtype, beta: 0.5, withBias: true, seed: 60);
        Check(1, 4, 6, 0, true, true, dtype, seed: 61);
    }

    [Test]
    public void EmptyOutputIsANoOp()
    {
        using var a = Tensor.Zeros([1, 0, 4]);
        using var b = Tensor.Zeros([1, 4, 3]);
        using var c = Tensor.Zeros([1, 0, 3]);
        Assert.DoesNotThrow(() => Cpu.MatMul(a, b, c, false, false));
    }

    [Test]
    public void RankTwoOperandsAreSharedAcrossTheBatch()
    {
        using var a = OpCheck.Rand([2, 4, 5], 70, DType.Float64);
        using var w = OpCheck.Rand([3, 5], 71, DType.Float64);   // used as bᵀ: [N=3, K=5]
        using var c = Tensor.Zeros([2, 4, 3], DType.Float64);
        Cpu.MatMul(a, w, c, false, true);
        var av = a.ToArray<double>(); var wv = w.ToArray<double>();
        var want = new double[24];
        for (int bt = 0; bt < 2; bt++)
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++)
                {
                    double s = 0;
                    for (int k = 0; k < 5; k++) s += av[(bt * 4 + i) * 5 + k] * wv[j * 5 + k];
                    want[(bt * 4 + i) * 3 + j] = s;
                }
        OpCheck.AssertClose(c.ToArray<double>(), want, 1e-12, 1e-13, "rank-2 b");
    }

    private static void Throws(Action act, params string[] parts)
    {
        var ex = Assert.Throws<ArgumentException>(() => act());
        Assert.That(ex!.Message, Does.StartWith("matmul"));
        foreach (var p in parts) Assert.That(ex.Message, Does.Contain(p));
    }

    [Test]
    public void BadShapesNameTheOpAndShapes()
    {
        using var a = Tensor.Zeros([2, 3, 4]);
        using var b = Tensor.Zeros([2, 5, 6]);
        using var c = Tensor.Zeros([2, 3, 6]);
        Throws(() => Cpu.MatMul(a, b, c, false, false), "[2, 3, 4]", "[2, 5, 6]", "[2, 3, 6]");

        using var b2 = Tensor.Zeros([3, 4, 6]);
        Throws(() => Cpu.MatMul(a, b2, c, false, false), "batch", "[3, 4, 6]");

        using var b3 = Tensor.Zeros([2, 4, 6]);
        using var cWrong = Tensor.Zeros([2, 3, 7]);
        Throws(() => Cpu.MatMul(a, b3, cWrong, false, false), "[2, 3, 7]");

        using var bias = Tensor.Zeros([5]);
        Throws(() => Cpu.MatMul(a, b3, c, false, false, bias: bias), "bias", "[5]");

        using var b64 = Tensor.Zeros([2, 4, 6], DType.Float64);
        Throws(() => Cpu.MatMul(a, b64, c, false, false), "dtypes", "float64");

        using var cT = Tensor.Zeros([2, 6, 3]);
        using var cNonContig = cT.AsStrided([2, 3, 6], [18, 1, 3], 0);
        Throws(() => Cpu.MatMul(a, b3, cNonContig, false, false), "contiguous");

        using var aT = Tensor.Zeros([2, 4, 3]);
        using var aCols = aT.AsStrided([2, 3, 4], [12, 1, 3], 0);
        Throws(() => Cpu.MatMul(aCols, b3, c, false, false), "stride");

        using var r4 = Tensor.Zeros([1, 2, 3, 4]);
        Throws(() => Cpu.MatMul(r4, b3, c, false, false), "rank");
    }

    [Test]
    public void IntegerTensorsAreRejected()
    {
        using var a = Tensor.Zeros([2, 3], DType.Int64);
        Assert.Throws<NotSupportedException>(() => Cpu.MatMul(a, a, a, false, false));
    }

    /// <summary>
    /// The float32 GEMM sums each output's products with FMAs in k order in blocks of 256 (the packed block depth), scales
    /// each block by alpha and adds it to the running output: the same bits on every x64 machine whatever its vector width
    /// (sized by the vector width, AVX-512 machines summed in blocks of 128 and moved ResNet-50's golden gradients by 2× the
    /// test's tolerance). Bitwise against that order written out in scalar code, at K = 700 (blocks 256 + 256 + 188),
    /// shapes with edge tiles, and both epilogues.
    /// </summary>
    [TestCase(1.0, 0.0, false)]
    [TestCase(0.5, 0.25, true)]
    public void Float32SumsInBlocksOf256OnEveryMachine(double alpha, double beta, bool withBias)
    {
        if (!System.Runtime.Intrinsics.X86.Fma.IsSupported) Assert.Ignore("the GEMM's order is pinned for FMA machines");
        const int M = 13, N = 45, K = 700, Block = 256;
        using var a = OpCheck.Rand([M, K], 71, DType.Float32);
        using var b = OpCheck.Rand([K, N], 72, DType.Float32);
        using var c = OpCheck.Rand([M, N], 73, DType.Float32);
        using var bias = withBias ? OpCheck.Rand([N], 74, DType.Float32) : null;
        float[] av = a.ToArray<float>(), bv = b.ToArray<float>(), c0 = c.ToArray<float>(), biasV = bias?.ToArray<float>() ?? [];
        Cpu.MatMul(a, b, c, false, false, alpha, beta, bias);
        var got = c.ToArray<float>();
        float al = (float)alpha, be = (float)beta;
        var want = new float[M * N];
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
            {
                float v = 0f;
                for (int p0 = 0; p0 < K; p0 += Block)
                {
                    float acc = 0f;
                    for (int k = p0; k < Math.Min(K, p0 + Block); k++) acc = MathF.FusedMultiplyAdd(av[i * K + k], bv[k * N + j], acc);
                    float blk = acc * al;
                    if (p0 == 0)
                    {
                        v = be != 0f ? MathF.FusedMultiplyAdd(be, c0[i * N + j], blk) : blk;
                        if (withBias) v += biasV[j];
                    }
                    else v += blk;
                }
                want[i * N + j] = v;
            }
        int differ = Enumerable.Range(0, M * N).Count(x => BitConverter.SingleToInt32Bits(got[x]) != BitConverter.SingleToInt32Bits(want[x]));
        Assert.That(differ, Is.Zero, $"outputs whose bits differ from blocks of {Block} (of {M * N})");
    }
}
