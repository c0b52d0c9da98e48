using FashionViL.Kernels.Cpu;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests;

/// <summary>
/// The GEMM precision switch (<see cref="MatMulPrecision"/>) on the CPU backend: the rounding functions on hand-picked bit
/// patterns, the switch's scoping, Fp32 unchanged, and matmul / conv (forward and both backward GEMMs) under TF32 and bf16
/// against float64 references that round the operands the same way.
/// </summary>
[NonParallelizable]   // tests set the process-wide default
public class PrecisionTests
{
    private static IBackend Cpu => CpuBackend.Instance;

    [TearDown] public void ResetDefault() => MatMulPrecision.Default = Precision.Fp32;

    private static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);
    private static uint U(float x) => BitConverter.SingleToUInt32Bits(x);

    // ------------------------------------------------------------------ rounding functions

    // input bits → TF32 bits (cvt.rna.tf32.f32: 13 low bits dropped, round to nearest, ties away from zero)
    [TestCase(0x3F800000u, 0x3F800000u, TestName = "tf32 1.0 exact")]
    [TestCase(0x3F800FFFu, 0x3F800000u, TestName = "tf32 just below half an ulp rounds down")]
    [TestCase(0x3F801000u, 0x3F802000u, TestName = "tf32 tie with even kept part rounds away (RNE would round down)")]
    [TestCase(0x3F803000u, 0x3F804000u, TestName = "tf32 tie with odd kept part rounds away")]
    [TestCase(0xBF801000u, 0xBF802000u, TestName = "tf32 negative tie rounds away from zero")]
    [TestCase(0x3F801001u, 0x3F802000u, TestName = "tf32 above half rounds up")]
    [TestCase(0x3FFFF000u, 0x40000000u, TestName = "tf32 carry into the exponent (2 - ulp/2 -> 2)")]
    [TestCase(0x7F7FEFFFu, 0x7F7FE000u, TestName = "tf32 just below the overflow tie -> largest tf32")]
    [TestCase(0x7F7FF000u, 0x7F800000u, TestName = "tf32 tie above the largest tf32 -> inf")]
    [TestCase(0x7F7FFFFFu, 0x7F800000u, TestName = "tf32 float max -> inf")]
    [TestCase(0xFF7FFFFFu, 0xFF800000u, TestName = "tf32 -float max -> -inf")]
    [TestCase(0x00000001u, 0x00000000u, TestName = "tf32 smallest subnormal -> 0")]
    [TestCase(0x00000FFFu, 0x00000000u, TestName = "tf32 subnormal below half -> 0")]
    [TestCase(0x00001000u, 0x00002000u, TestName = "tf32 subnormal tie -> smallest tf32 subnormal")]
    [TestCase(0x80001000u, 0x80002000u, TestName = "tf32 negative subnormal tie")]
    [TestCase(0x007FF000u, 0x00800000u, TestName = "tf32 largest subnormal tie -> smallest normal")]
    [TestCase(0x00000000u, 0x00000000u, TestName = "tf32 +0")]
    [TestCase(0x80000000u, 0x80000000u, TestName = "tf32 -0")]
    [TestCase(0x7F800000u, 0x7F800000u, TestName = "tf32 +inf")]
    [TestCase(0xFF800000u, 0xFF800000u, TestName = "tf32 -inf")]
    public void Tf32RoundingOnHandPickedBits(uint input, uint expected)
    {
        Assert.That(PrecisionRounding.Tf32Bits(input), Is.EqualTo(expected), $"0x{input:X8}");
        Assert.That(U(PrecisionRounding.ToTf32(F(input))), Is.EqualTo(expected));
        Assert.That(U(PrecisionRounding.Round(F(input), Precision.Tf32)), Is.EqualTo(expected));
    }

    // input bits → bf16 bits (round to nearest even; the expected values were checked against torch 1.13's float→bfloat16)
    [TestCase(0x3F800000u, (ushort)0x3F80, TestName = "bf16 1.0 exact")]
    [TestCase(0x3F807FFFu, (ushort)0x3F80, TestName = "bf16 below half rounds down")]
    [TestCase(0x3F808000u, (ushort)0x3F80, TestName = "bf16 tie to even (down)")]
    [TestCase(0x3F818000u, (ushort)0x3F82, TestName = "bf16 tie to even (up)")]
    [TestCase(0x3F808001u, (ushort)0x3F81, TestName = "bf16 above half rounds up")]
    [TestCase(0xBF808000u, (ushort)0xBF80, TestName = "bf16 negative tie to even (down)")]
    [TestCase(0xBF818000u, (ushort)0xBF82, TestName = "bf16 negative tie to even (up)")]
    [TestCase(0x3FFF8000u, (ushort)0x4000, TestName = "bf16 carry into the exponent")]
    [TestCase(0x7F7F7FFFu, (ushort)0x7F7F, TestName = "bf16 below the overflow tie -> largest bf16")]
    [TestCase(0x7F7F8000u, (ushort)0x7F80, TestName = "bf16 overflow tie -> inf")]
    [TestCase(0x7F7FFFFFu, (ushort)0x7F80, TestName = "bf16 float max -> inf")]
    [TestCase(0x00008000u, (ushort)0x0000, TestName = "bf16 subnormal tie to even -> 0")]
    [TestCase(0x00018000u, (ushort)0x0002, TestName = "bf16 subnormal tie to even (up)")]
    [TestCase(0x00008001u, (ushort)0x0001, TestName = "bf16 subnormal above half")]
    [TestCase(0x80008000u, (ushort)0x8000, TestName = "bf16 negative subnormal tie -> -0")]
    [TestCase(0x007F8000u, (ushort)0x0080, TestName = "bf16 largest subnormal tie -> smallest normal")]
    [TestCase(0x7F800000u, (ushort)0x7F80, TestName = "bf16 +inf")]
    [TestCase(0xFF800000u, (ushort)0xFF80, TestName = "bf16 -inf")]
    [TestCase(0x80000000u, (ushort)0x8000, TestName = "bf16 -0")]
    public void Bf16RoundingOnHandPickedBits(uint input, ushort expected)
    {
        Assert.That(PrecisionRounding.Bf16Bits(input), Is.EqualTo(expected), $"0x{input:X8}");
        Assert.That(U(PrecisionRounding.ToBf16(F(input))), Is.EqualTo((uint)expected << 16));
        Assert.That(U(PrecisionRounding.Round(F(input), Precision.Bf16)), Is.EqualTo((uint)expected << 16));
    }

    [TestCase(0x7FC00000u)]
    [TestCase(0x7F800001u)]   // a NaN whose payload lies only in the dropped bits must not turn into inf
    [TestCase(0x7FFFF000u)]   // ...nor carry into the sign
    [TestCase(0xFFFFFFFFu)]
    [TestCase(0xFF800001u)]
    public void NaNStaysNaNWithItsSign(uint nan)
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            float r = PrecisionRounding.Round(F(nan), p);
            Assert.That(float.IsNaN(r), $"{p} 0x{nan:X8} -> 0x{U(r):X8}");
            Assert.That(U(r) >> 31, Is.EqualTo(nan >> 31), $"{p} sign");
        }
    }

    [Test]
    public void RoundingIsIdempotentAndKeepsTheStatedBits()
    {
        var rng = new Random(5);
        for (int i = 0; i < 100000; i++)
        {
            uint u = (uint)rng.NextInt64(0, 1L << 32);
            if ((u & 0x7FFFFFFF) > 0x7F800000) continue;
            uint t = PrecisionRounding.Tf32Bits(u);
            Assert.That(t & 0x1FFFu, Is.Zero);
            Assert.That(PrecisionRounding.Tf32Bits(t), Is.EqualTo(t));
            uint b = (uint)PrecisionRounding.Bf16Bits(u) << 16;
            Assert.That(PrecisionRounding.Bf16Bits(b), Is.EqualTo((ushort)(b >> 16)));
            // nearest: no representable neighbour of the result is closer to the input (in double)
            double x = F(u);
            if (double.IsInfinity(F(t)) || double.IsInfinity(F(b))) continue;
            foreach (var (r, step) in new[] { (t, 0x2000u), (b, 0x10000u) })
            {
                double d = Math.Abs(F(r) - x);
                uint up = r + step, down = r - step;
                if ((up & 0x7F800000) != 0x7F800000) Assert.That(Math.Abs(F(up) - x), Is.GreaterThanOrEqualTo(d), $"0x{u:X8} -> 0x{r:X8}");
                if ((r & 0x7FFFFFFF) >= step) Assert.That(Math.Abs(F(down) - x), Is.GreaterThanOrEqualTo(d), $"0x{u:X8} -> 0x{r:X8}");
            }
        }
    }

    // ------------------------------------------------------------------ the switch

    [Test]
    public void DefaultIsFp32AndScopesNestAndRestore()
    {
        Assert.That(MatMulPrecision.Default, Is.EqualTo(Precision.Fp32));
        Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Fp32));
        using (MatMulPrecision.Use(Precision.Tf32))
        {
            Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Tf32));
            using (MatMulPrecision.Use(Precision.Bf16)) Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Bf16));
            Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Tf32));
            Assert.That(Task.Run(() => MatMulPrecision.Current).Result, Is.EqualTo(Precision.Tf32), "a task started inside the scope");
        }
        Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Fp32));
        MatMulPrecision.Default = Precision.Bf16;
        Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Bf16));
        using (MatMulPrecision.Use(Precision.Fp32)) Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Fp32), "a scope overrides the default");
        Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Bf16));
        MatMulPrecision.Default = Precision.Fp32;
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMulPrecision.Use((Precision)7));
        Assert.Throws<ArgumentOutOfRangeException>(() => MatMulPrecision.Default = (Precision)7);
    }

    [Test]
    public void AScopeOnOneThreadDoesNotReachAThreadStartedOutsideIt()
    {
        using var go = new ManualResetEventSlim();
        Precision seen = (Precision)(-1);
        var t = new Thread(() => { go.Wait(); seen = MatMulPrecision.Current; });
        t.Start();
        using (MatMulPrecision.Use(Precision.Tf32)) { go.Set(); t.Join(); }
        Assert.That(seen, Is.EqualTo(Precision.Fp32));
    }

    [TestCase("fp32", Precision.Fp32)] [TestCase("TF32", Precision.Tf32)] [TestCase("bf16", Precision.Bf16)]
    [TestCase("highest", Precision.Fp32)] [TestCase("high", Precision.Tf32)] [TestCase("medium", Precision.Bf16)]
    public void ParseAndName(string s, Precision p)
    {
        Assert.That(MatMulPrecision.Parse(s), Is.EqualTo(p));
        Assert.That(MatMulPrecision.Parse(p.Name()), Is.EqualTo(p));
    }

    [Test]
    public void ParseNamesTheKeyAndTheValue()
    {
        var e = Assert.Throws<ArgumentException>(() => MatMulPrecision.Parse("fp16", "training.precision"))!;
        Assert.That(e.Message, Does.Contain("training.precision").And.Contain("fp16"));
    }

    // ------------------------------------------------------------------ GEMM

    private static float[] Rand(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static float[] MatMul(float[] a, float[] b, int batch, int M, int N, int K, bool ta, bool tb, float[]? c0 = null, float alpha = 1, float beta = 0, float[]? bias = null)
    {
        using var at = Tensor.FromArray(a, batch, ta ? K : M, ta ? M : K);
        using var bt = Tensor.FromArray(b, batch, tb ? N : K, tb ? K : N);
        using var ct = Tensor.FromArray(c0 is null ? new float[batch * M * N] : (float[])c0.Clone(), batch, M, N);
        using var biasT = bias is null ? null : Tensor.FromArray(bias, N);
        Cpu.MatMul(at, bt, ct, ta, tb, alpha, beta, biasT);
        return ct.ToArray<float>();
    }

    /// <summary>
    /// alpha·op(round(a))·op(round(b)) + beta·c0 + bias in float64, and the bound on float32 accumulation error per element:
    /// (K + 3)·2⁻²⁴·(|alpha|·Σ|round(a)·round(b)| + |beta·c0| + |bias|) (each rounded product is exact in float32; the K-term sum
    /// and the epilogue add at most K + 3 roundings of relative size 2⁻²⁴).
    /// </summary>
    private static (double[] Want, double[] Tol) Reference(float[] a, float[] b, int batch, int M, int N, int K, bool ta, bool tb, Precision p,
        float[]? c0 = null, float alpha = 1, float beta = 0, float[]? bias = null)
    {
        var want = new double[batch * M * N];
        var tol = new double[want.Length];
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                {
                    double s = 0, abs = 0;
                    for (int k = 0; k < K; k++)
                    {
                        double x = PrecisionRounding.Round(a[bt * M * K + (ta ? k * M + i : i * K + k)], p);
                        double y = PrecisionRounding.Round(b[bt * K * N + (tb ? j * K + k : k * N + j)], p);
                        s += x * y; abs += Math.Abs(x * y);
                    }
                    int o = (bt * M + i) * N + j;
                    double v = alpha * s, mag = Math.Abs(alpha) * abs;
                    if (beta != 0) { v += beta * c0![o]; mag += Math.Abs(beta * c0[o]); }
                    if (bias is not null) { v += bias[j]; mag += Math.Abs(bias[j]); }
                    want[o] = v;
                    tol[o] = (K + 3) * Math.Pow(2, -24) * mag + 1e-30;
                }
        return (want, tol);
    }

    private static void CheckGemm(int batch, int M, int N, int K, bool ta, bool tb, Precision p, bool epilogue = false, int seed = 1)
    {
        var a = Rand(batch * M * K, seed);
        var b = Rand(batch * K * N, seed + 1);
        var c0 = epilogue ? Rand(batch * M * N, seed + 2) : null;
        var bias = epilogue ? Rand(N, seed + 3) : null;
        float alpha = epilogue ? 0.75f : 1f, beta = epilogue ? -0.5f : 0f;
        float[] got;
        using (MatMulPrecision.Use(p)) got = MatMul(a, b, batch, M, N, K, ta, tb, c0, alpha, beta, bias);
        var (want, tol) = Reference(a, b, batch, M, N, K, ta, tb, p, c0, alpha, beta, bias);
        var (exact, _) = Reference(a, b, batch, M, N, K, ta, tb, Precision.Fp32, c0, alpha, beta, bias);
        double worst = 0, moved = 0;
        for (int i = 0; i < got.Length; i++)
        {
            double e = Math.Abs(got[i] - want[i]);
            Assert.That(e, Is.LessThanOrEqualTo(tol[i]), $"{p} batch {batch} M {M} N {N} K {K} ta {ta} tb {tb} element {i}: got {got[i]:R}, want {want[i]:R}");
            worst = Math.Max(worst, e);
            moved = Math.Max(moved, Math.Abs(exact[i] - want[i]));
        }
        // The rounding really happened: the operand rounding moves some output by far more than the accumulation error.
        Assert.That(moved, Is.GreaterThan(10 * worst + 1e-7), $"{p}: the result is as close to the exact-fp32 product as to the rounded one");
    }

    public static IEnumerable<TestCaseData> GemmCases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            yield return new TestCaseData(1, 7, 13, 19, false, false, p, false).SetName($"{p} NN 7x13x19");
            yield return new TestCaseData(1, 5, 17, 11, false, true, p, true).SetName($"{p} NT 5x17x11 alpha beta bias");
            yield return new TestCaseData(2, 9, 6, 23, true, false, p, true).SetName($"{p} TN batch 2 9x6x23 alpha beta bias");
            yield return new TestCaseData(1, 3, 33, 300, true, true, p, false).SetName($"{p} TT 3x33x300 (K past one KC block)");
            yield return new TestCaseData(1, 97, 101, 103, false, false, p, true).SetName($"{p} NN 97x101x103 (threaded shared-B path)");
            yield return new TestCaseData(12, 9, 11, 40, false, true, p, false).SetName($"{p} NT batch 12 (parallel over batches)");
        }
    }

    [TestCaseSource(nameof(GemmCases))]
    public void GemmMatchesARoundedFloat64Reference(int batch, int M, int N, int K, bool ta, bool tb, Precision p, bool epilogue)
        => CheckGemm(batch, M, N, K, ta, tb, p, epilogue);

    /// <summary>
    /// Bit-exact: with A the identity the product is exactly round(B) (and with B the identity, round(A)), so every packed
    /// operand lane (vector body and scalar tail, both packers, both transposes) is checked against the scalar rounding,
    /// on random bit patterns over the whole finite range except values that round to infinity (0·inf would be NaN).
    /// </summary>
    [TestCase(Precision.Tf32, false)] [TestCase(Precision.Tf32, true)]
    [TestCase(Precision.Bf16, false)] [TestCase(Precision.Bf16, true)]
    public void IdentityProductIsExactlyTheRoundedOperand(Precision p, bool transposed)
    {
        const int n = 19, m = 37;
        var rng = new Random(11);
        var x = new float[n * m];
        for (int i = 0; i < x.Length; i++)
        {
            float v;
            do v = F((uint)rng.NextInt64(0, 1L << 32)); while (!float.IsFinite(v) || Math.Abs(v) > 1e30f);
            x[i] = v;
        }
        // include the tie cases among them
        x[0] = F(0x3F801000u); x[1] = F(0xBF801000u); x[2] = F(0x3F808000u); x[3] = F(0x3F818000u); x[4] = F(0x00001000u); x[5] = F(0x00018000u);
        var eye = new float[n * n];
        for (int i = 0; i < n; i++) eye[i * n + i] = 1;
        float[] viaB, viaA;
        using (MatMulPrecision.Use(p))
        {
            // I[n,n] · X[n,m] (X in B), stored transposed when asked: op(B) = X either way
            var xb = transposed ? Transpose(x, n, m) : x;
            viaB = MatMul(eye, xb, 1, n, m, n, false, transposed);
            // Xᵀ[m,n] · I[n,n] (X in A): op(A) = Xᵀ
            var xa = transposed ? x : Transpose(x, n, m);
            viaA = MatMul(xa, eye, 1, m, n, n, transposed, false);
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                uint want = U(PrecisionRounding.Round(x[i * m + j], p));
                Assert.That(U(viaB[i * m + j]), Is.EqualTo(want), $"B operand ({i},{j}) 0x{U(x[i * m + j]):X8}");
                Assert.That(U(viaA[j * n + i]), Is.EqualTo(want), $"A operand ({j},{i}) 0x{U(x[i * m + j]):X8}");
            }
    }

    private static float[] Transpose(float[] x, int rows, int cols)
    {
        var t = new float[x.Length];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
        return t;
    }

    [Test]
    public void Fp32IsUnchangedByTheSwitchAndBitIdenticalAfterAScope()
    {
        // The same GEMM (threaded path, epilogue) and conv, before any switch, inside Tf32/Bf16 scopes, after them, and with the
        // default set to Tf32 and back: every Fp32 result is bitwise the first one; the rounded ones differ.
        var a = Rand(97 * 103, 1); var b = Rand(103 * 101, 2); var c0 = Rand(97 * 101, 3); var bias = Rand(101, 4);
        float[] Run() => MatMul(a, b, 1, 97, 101, 103, false, false, c0, 0.5f, 0.25f, bias);
        var before = Run();
        float[] tf, bf;
        using (MatMulPrecision.Use(Precision.Tf32)) tf = Run();
        Assert.That(Run().Select(U), Is.EqualTo(before.Select(U)), "leaving nothing open (the scope above is closed)");
        using (MatMulPrecision.Use(Precision.Bf16)) bf = Run();
        var after = Run();
        MatMulPrecision.Default = Precision.Tf32;
        var defTf = Run();
        MatMulPrecision.Default = Precision.Fp32;
        var afterDefault = Run();
        Assert.That(after.Select(U), Is.EqualTo(before.Select(U)));
        Assert.That(afterDefault.Select(U), Is.EqualTo(before.Select(U)));
        Assert.That(defTf.Select(U), Is.EqualTo(tf.Select(U)), "Default = Tf32 and Use(Tf32) are the same GEMM");
        Assert.That(tf.Select(U), Is.Not.EqualTo(before.Select(U)));
        Assert.That(bf.Select(U), Is.Not.EqualTo(tf.Select(U)));
        // ...and the Fp32 result is the float32 GEMM (float64 reference, fp32 accumulation bound), i.e. no rounding sneaked in.
        var (want, tol) = Reference(a, b, 1, 97, 101, 103, false, false, Precision.Fp32, c0, 0.5f, 0.25f, bias);
        for (int i = 0; i < before.Length; i++) Assert.That(Math.Abs(before[i] - want[i]), Is.LessThanOrEqualTo(tol[i]));
    }

    [Test]
    public void Float64GemmIgnoresTheSwitch()
    {
        using var a = OpCheck.Rand([1, 9, 21], 1);
        using var b = OpCheck.Rand([1, 21, 8], 2);
        using var c1 = Tensor.Zeros([1, 9, 8], DType.Float64);
        using var c2 = Tensor.Zeros([1, 9, 8], DType.Float64);
        Cpu.MatMul(a, b, c1, false, false);
        using (MatMulPrecision.Use(Precision.Bf16)) Cpu.MatMul(a, b, c2, false, false);
        Assert.That(c2.ToArray<double>(), Is.EqualTo(c1.ToArray<double>()));
    }

    // ------------------------------------------------------------------ convolution: forward and both backward GEMMs

    private static double[] RoundAll(double[] v, Precision p) => v.Select(x => (double)PrecisionRounding.Round((float)x, p)).ToArray();

    private static void AssertCloseAndMoved(Tensor got, double[] want, double[] exact, double tol, string what)
    {
        var g = got.ToArray<float>();
        double worst = 0, moved = 0;
        for (int i = 0; i < g.Length; i++)
        {
            double e = Math.Abs(g[i] - want[i]);
            Assert.That(e, Is.LessThanOrEqualTo(tol), $"{what} element {i}: got {g[i]:R}, want {want[i]:R}");
            worst = Math.Max(worst, e); moved = Math.Max(moved, Math.Abs(exact[i] - want[i]));
        }
        Assert.That(moved, Is.GreaterThan(10 * worst + 1e-7), $"{what}: the operand rounding is not visible");
    }

    public static IEnumerable<TestCaseData> ConvCases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            yield return new TestCaseData(p, 2, 3, 9, 7, 5, 3, 3, Conv2dParams.Symmetric(2, 1), 0L).SetName($"{p} conv 3x3 s2 p1");
            yield return new TestCaseData(p, 2, 6, 5, 4, 7, 1, 1, Conv2dParams.Symmetric(1, 0), 0L).SetName($"{p} conv 1x1 s1 (direct GEMM path)");
            yield return new TestCaseData(p, 3, 2, 6, 5, 3, 3, 3, new Conv2dParams(2, 1, 1, 0, 1, 1), 180L).SetName($"{p} conv chunked column buffer");
        }
    }

    [TestCaseSource(nameof(ConvCases))]
    public void ConvMatchesARoundedFloat64Reference(Precision p, int N, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams cp, long budget)
    {
        using var scope = Tensor.Scope();
        long savedBudget = CpuBackend.ConvColumnBudget;
        try
        {
            if (budget > 0) CpuBackend.ConvColumnBudget = budget;
            var x = OpCheck.Rand([N, Cin, H, W], 1, DType.Float32);
            var w = OpCheck.Rand([Cout, Cin, Kh, Kw], 2, DType.Float32);
            var b = OpCheck.Rand([Cout], 3, DType.Float32);
            var (Ho, Wo) = ConvKernelTests.OutSize(H, W, Kh, Kw, cp);
            var gy = OpCheck.Rand([N, Cout, Ho, Wo], 4, DType.Float32);
            double[] xd = x.ToArray<double>(), wd = w.ToArray<double>(), bd = b.ToArray<double>(), gyd = gy.ToArray<double>();
            double[] xr = RoundAll(xd, p), wr = RoundAll(wd, p), gyr = RoundAll(gyd, p);
            // Each output sums at most Cin·Kh·Kw (forward), Cout·Kh·Kw (grad input), N·Ho·Wo (grad weight) products of values in
            // [-1, 1]: the fp32 accumulation bound (terms + 3)·2⁻²⁴·terms, with the bias term.
            double Tol(int terms) => (terms + 3) * (terms + 1) * Math.Pow(2, -24);
            var y = Tensor.Empty([N, Cout, Ho, Wo]);
            var gx = Tensor.Full([N, Cin, H, W], 7f);
            var gw = Tensor.Full([Cout, Cin, Kh, Kw], 7f); var gb = Tensor.Full([Cout], 7f);
            using (MatMulPrecision.Use(p))
            {
                Cpu.Conv2dForward(x, w, b, y, cp);
                Cpu.Conv2dBackwardInput(gy, w, gx, cp);
                Cpu.Conv2dBackwardWeight(x, gy, gw, gb, cp);
            }
            AssertCloseAndMoved(y, ConvKernelTests.RefConv(xr, wr, bd, N, Cin, H, W, Cout, Kh, Kw, cp),
                ConvKernelTests.RefConv(xd, wd, bd, N, Cin, H, W, Cout, Kh, Kw, cp), Tol(Cin * Kh * Kw), $"{p} forward");
            AssertCloseAndMoved(gx, ConvKernelTests.RefConvGradInput(gyr, wr, N, Cin, H, W, Cout, Kh, Kw, cp),
                ConvKernelTests.RefConvGradInput(gyd, wd, N, Cin, H, W, Cout, Kh, Kw, cp), Tol(Cout * Kh * Kw), $"{p} grad input");
            var (gwR, _) = ConvKernelTests.RefConvGradWeight(xr, gyr, N, Cin, H, W, Cout, Kh, Kw, cp);
            var (gwE, _) = ConvKernelTests.RefConvGradWeight(xd, gyd, N, Cin, H, W, Cout, Kh, Kw, cp);
            AssertCloseAndMoved(gw, gwR, gwE, Tol(N * Ho * Wo), $"{p} grad weight");
            // the bias gradient is a plain sum of gy (not a GEMM operand product): unrounded
            var (_, gbExact) = ConvKernelTests.RefConvGradWeight(xd, gyd, N, Cin, H, W, Cout, Kh, Kw, cp);
            OpCheck.AssertClose(gb, gbExact, 1e-5, Tol(N * Ho * Wo), $"{p} grad bias");
        }
        finally { CpuBackend.ConvColumnBudget = savedBudget; }
    }
}
