using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The 128×64 tile of <see cref="TensorCoreGemm"/> (<see cref="TensorCoreTile.Tile128x64"/>) on ILGPU's CPU accelerator
/// (its portable path, 2-thread groups, bounds-checked views): against CpuBackend.MatMul under the same precision and a
/// float64 reference on the rounded operands, with padded leading dimensions and batch strides whose gaps hold NaN (an
/// index error reads one), and bitwise against the 64×32 tile on the same data. FVL_KERNEL_TESTS_CUDA=1 runs the same
/// cases on a GPU (the mma path; owed).
/// </summary>
[TestFixture, Category("Cuda")]
public class TensorCoreGemm128Tests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    private const float Gap = -7.25e5f;   // C outside the logical matrices: must stay untouched

    /// <summary>A batch of row-major rows×cols matrices with leading dimension ld and batch stride (0: one shared matrix),
    /// random in [−1, 1) where valid and <paramref name="gap"/> in the gaps.</summary>
    private static float[] Strided(int batch, int rows, int cols, int ld, long stride, int seed, float gap)
    {
        int copies = stride == 0 ? 1 : batch;
        long n = stride == 0 ? (long)rows * ld : (copies - 1) * stride + (long)rows * ld;
        var a = new float[Math.Max(n, 1)];
        Array.Fill(a, gap);
        var r = new Random(seed);
        for (int bt = 0; bt < copies; bt++)
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    a[bt * stride + (long)i * ld + j] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    /// <summary>Every value rounded for <paramref name="p"/> as the tensor cores see it (ConvKernels.RoundOperands on the host).</summary>
    private static float[] RoundAll(float[] x, Precision p) => x.Select(v => (float)PrecisionRounding.Round(v, p)).ToArray();

    /// <summary>Whether the launcher would give the 128×128 tile 128-bit loads for this operand (uploaded as <see cref="Run"/> does).</summary>
    private bool Aligned(float[] x, int ld, long stride)
    {
        using var buf = Up(Acc, x);
        return GemmKernels.Aligned4(buf.View, ld, stride);
    }

    private float[] Run(TensorCoreTile tile, Precision p, float[] a, float[] b, float[] c0, float[]? bias, GemmArgs shape, bool gelu)
    {
        using var aBuf = Up(Acc, a);
        using var bBuf = Up(Acc, b);
        using var cBuf = Up(Acc, c0);
        using var biasBuf = Up(Acc, bias ?? new float[1]);
        var args = shape;
        args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View; args.Bias = bias is null ? default : biasBuf.View; args.Gelu = gelu;
        TensorCoreGemm.Launch(Acc, null, args, p, tile);
        Acc.Synchronize();
        return cBuf.GetAsArray1D().Take(c0.Length).ToArray();
    }

    private void Check(Precision p, int batch, int M, int N, int K, bool ta, bool tb, bool epilogue, bool shareB, int pad, bool gelu = false)
    {
        string what = $"{p} batch {batch} M {M} N {N} K {K} ta {ta} tb {tb} epilogue {epilogue} shareB {shareB} pad {pad} gelu {gelu}";
        int aRows = ta ? K : M, aCols = ta ? M : K, bRows = tb ? N : K, bCols = tb ? K : N;
        int lda = aCols + pad, ldb = bCols + 2 * pad, ldc = N + pad;
        long strideA = (long)aRows * lda + 3 * pad, strideB = shareB ? 0 : (long)bRows * ldb + pad, strideC = (long)M * ldc + 2 * pad;
        var a = Strided(batch, aRows, aCols, lda, strideA, 1, float.NaN);
        var b = Strided(batch, bRows, bCols, ldb, strideB, 2, float.NaN);
        var c0 = Strided(batch, M, N, ldc, strideC, 3, Gap);
        var bias = epilogue ? Strided(1, 1, N, N, 0, 4, 0f) : null;
        float alpha = epilogue ? 1.5f : 1f, beta = epilogue ? 0.5f : 0f;
        if (beta == 0f)   // outputs poisoned with NaN (never read when beta = 0)
            for (int bt = 0; bt < batch; bt++)
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) c0[bt * strideC + (long)i * ldc + j] = float.NaN;
        float A(int bt, int i, int k) => a[bt * strideA + (ta ? (long)k * lda + i : (long)i * lda + k)];
        float B(int bt, int k, int j) => b[(shareB ? 0 : bt * strideB) + (tb ? (long)j * ldb + k : (long)k * ldb + j)];
        long Ci(int bt, int i, int j) => bt * strideC + (long)i * ldc + j;

        var shape = new GemmArgs
        {
            M = M, N = N, K = K, Batch = batch, Lda = lda, Ldb = ldb, Ldc = ldc, StrideA = strideA, StrideB = strideB, StrideC = strideC,
            TransA = ta, TransB = tb, Alpha = alpha, Beta = beta,
        };
        var dev = Run(TensorCoreTile.Tile128x64, p, a, b, c0, bias, shape, false);
        var dev64 = Run(TensorCoreTile.Tile64x32, p, a, b, c0, bias, shape, false);
        // the 64×32 tile: every element the same bits (the same mma / emulated additions in the same order)
        for (long o = 0; o < dev.Length; o++)
            if (BitConverter.SingleToInt32Bits(dev[o]) != BitConverter.SingleToInt32Bits(dev64[o]))
                Assert.Fail($"{what}: 128×64 tile {dev[o]:R} vs 64×32 tile {dev64[o]:R} at buffer index {o}");
        // operands rounded by the caller and passed as such (what the CUDA backend does for one or both), and the 128×128 tile
        // (TF32 only) with its own rounding and with the caller's: the same bits
        var aligned = (a: Aligned(a, lda, strideA), b: Aligned(b, ldb, strideB));
        foreach (var tile in TensorCoreGemm.AllTilesFor(p).Where(t => t != TensorCoreTile.Tile64x32))
            foreach (var (preA, preB) in new[] { (false, false), (true, true), (true, false), (false, true) })
            {
                if (tile == TensorCoreTile.Tile128x64 && !preA && !preB) continue;   // dev itself
                var rounded = shape;
                rounded.ARounded = preA; rounded.BRounded = preB;
                long before = TensorCoreGemm.AsyncLaunchCount;
                var other = Run(tile, p, preA ? RoundAll(a, p) : a, preB ? RoundAll(b, p) : b, c0, bias, rounded, false);
                // the cp.async variant runs exactly where both operands take 128-bit loads (else the register-prefetch kernel)
                bool ranAsync = TensorCoreGemm.AsyncLaunchCount > before;
                Assert.That(ranAsync, Is.EqualTo(tile == TensorCoreTile.Tile128x128Async && aligned.a && aligned.b && M > 0 && N > 0 && batch > 0),
                    $"{what}: {tile}: whether the asynchronous kernel ran");
                for (long o = 0; o < dev.Length; o++)
                    if (BitConverter.SingleToInt32Bits(dev[o]) != BitConverter.SingleToInt32Bits(other[o]))
                        Assert.Fail($"{what}: {tile}{(ranAsync ? " (cp.async stages)" : "")} (pre-rounded A {preA} / B {preB}; 128-bit loads possible A {aligned.a} / B {aligned.b}) gives {other[o]:R}, " +
                            $"the 128×64 tile with its own rounding {dev[o]:R} at buffer index {o}");
            }

        // CPU backend, same precision, on dense copies
        float[] cpu;
        using (var at = Tensor.FromArray(Enumerable.Range(0, batch * M * K).Select(x => A(x / (M * K), x / K % M, x % K)).ToArray(), batch, M, K))
        using (var bt = Tensor.FromArray(Enumerable.Range(0, batch * K * N).Select(x => B(x / (K * N), x / N % K, x % N)).ToArray(), batch, K, N))
        using (var ct = Tensor.FromArray(Enumerable.Range(0, batch * M * N).Select(x => beta == 0f ? 0f : c0[Ci(x / (M * N), x / N % M, x % N)]).ToArray(), batch, M, N))
        using (var biasT = bias is null ? null : Tensor.FromArray(bias, N))
        using (MatMulPrecision.Use(p))
        {
            Cpu.MatMul(at, bt, ct, false, false, alpha, beta, biasT);
            cpu = ct.ToArray<float>();
        }

        // float64 on the rounded operands; within the float32 accumulation bound (K+3)·2⁻²⁴·Σ|terms| (2× on a device whose
        // tensor cores truncate), and the gaps of C untouched
        var valid = new bool[c0.Length];
        double worst = 0, moved = 0;
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                {
                    double s = 0, abs = 0, exact = 0;
                    for (int k = 0; k < K; k++)
                    {
                        float av = A(bt, i, k), bv = B(bt, k, j);
                        double x = PrecisionRounding.Round(av, p), y = PrecisionRounding.Round(bv, p);
                        s += x * y; abs += Math.Abs(x * y); exact += (double)av * bv;
                    }
                    long o = Ci(bt, i, j);
                    valid[o] = true;
                    double cOld = beta == 0f ? 0 : c0[o];
                    double want = alpha * s + beta * cOld + (bias?[j] ?? 0), mag = Math.Abs(alpha) * abs + Math.Abs(beta * cOld) + Math.Abs(bias?[j] ?? 0);
                    double tol = (K + 3) * Math.Pow(2, -24) * mag + 1e-30;
                    float cv = cpu[(bt * M + i) * N + j];
                    Assert.That(Math.Abs(dev[o] - want), Is.LessThanOrEqualTo(2 * tol), $"{what}: device ({bt}, {i}, {j}) = {dev[o]:R}, want {want:R}");
                    Assert.That(Math.Abs(cv - want), Is.LessThanOrEqualTo(tol), $"{what}: cpu ({bt}, {i}, {j}) = {cv:R}, want {want:R}");
                    Assert.That(Math.Abs(dev[o] - cv), Is.LessThanOrEqualTo(3 * tol), $"{what}: device vs cpu at ({bt}, {i}, {j})");
                    worst = Math.Max(worst, Math.Abs(dev[o] - want));
                    moved = Math.Max(moved, Math.Abs(alpha * (exact - s)));
                }
        for (long o = 0; o < c0.Length; o++)
            if (!valid[o]) Assert.That(dev[o], Is.EqualTo(Gap), $"{what}: C gap at buffer index {o} was written");
        if (K > 0) Assert.That(moved, Is.GreaterThan(10 * worst + 1e-7), $"{what}: the device result does not show the operand rounding");

        if (gelu)
        {
            // GELU is applied to the value just checked: within a few ulp of GeluF of it (the GPU's erf may differ in the last bits)
            var g = Run(TensorCoreTile.Tile128x64, p, a, b, c0, bias, shape, true);
            var g64 = Run(TensorCoreTile.Tile64x32, p, a, b, c0, bias, shape, true);
            if (p == Precision.Tf32)
            {
                foreach (var t3 in new[] { TensorCoreTile.Tile128x128, TensorCoreTile.Tile128x128Async })
                {
                    var g3 = Run(t3, p, a, b, c0, bias, shape, true);
                    for (long o = 0; o < c0.Length; o++)
                        Assert.That(BitConverter.SingleToInt32Bits(g3[o]), Is.EqualTo(BitConverter.SingleToInt32Bits(g64[o])), $"{what}: GELU, {t3} differs at {o}");
                }
            }
            for (long o = 0; o < c0.Length; o++)
            {
                Assert.That(BitConverter.SingleToInt32Bits(g[o]), Is.EqualTo(BitConverter.SingleToInt32Bits(g64[o])), $"{what}: GELU, tiles differ at {o}");
                if (!valid[o]) { Assert.That(g[o], Is.EqualTo(Gap)); continue; }
                float want = ScalarMath.GeluF(dev[o]);
                Assert.That(g[o], Is.EqualTo(want).Within(4e-7 * Math.Abs(dev[o]) + 1e-30), $"{what}: GELU at {o}");
            }
        }
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var p in new[] { Precision.Tf32, Precision.Bf16 })
        {
            yield return new TestCaseData(p, 1, 1, 1, 1, false, false, false, false, 0).SetName($"{p} NN 1x1x1");
            yield return new TestCaseData(p, 1, 130, 70, 33, false, true, true, false, 3).SetName($"{p} NT 130x70x33 alpha beta bias, padded");
            yield return new TestCaseData(p, 1, 257, 65, 17, true, false, false, false, 0).SetName($"{p} TN 257x65x17");
            yield return new TestCaseData(p, 2, 19, 67, 40, true, true, true, true, 2).SetName($"{p} TT batch 2 shared B 19x67x40, padded");
            yield return new TestCaseData(p, 3, 33, 20, 48, false, false, true, false, 5).SetName($"{p} NN batch 3 strided 33x20x48, padded");
            yield return new TestCaseData(p, 1, 4, 3, 0, false, false, true, false, 1).SetName($"{p} K = 0: beta C + bias");
        }
    }

    /// <summary>Shapes whose tiles and stages lie inside both operands (M and N multiples of 128, K ≥ 32): the 128×128 tile's
    /// branch-free stage loop with 128-bit loads when ld % 4 = 0 (pad 0 or 4), the general loop for the last stage, a K tail
    /// and edge tiles, and the 4-byte path when a leading dimension is odd (pad 1).</summary>
    public static IEnumerable<TestCaseData> Cases128()
    {
        var p = Precision.Tf32;
        yield return new TestCaseData(p, 1, 256, 128, 64, false, false, false, false, 0).SetName("Tf32 NN 256x128x64 (stage loop, 128-bit)");
        yield return new TestCaseData(p, 2, 128, 256, 40, true, false, true, false, 4).SetName("Tf32 TN batch 2 128x256x40 alpha beta bias, padded by 4");
        yield return new TestCaseData(p, 1, 128, 128, 48, false, true, false, false, 0).SetName("Tf32 NT 128x128x48");
        yield return new TestCaseData(p, 2, 128, 128, 35, true, true, true, true, 0).SetName("Tf32 TT batch 2 shared B 128x128x35 (K tail)");
        yield return new TestCaseData(p, 1, 200, 136, 64, false, false, false, false, 0).SetName("Tf32 NN 200x136x64 (edge tiles)");
        yield return new TestCaseData(p, 1, 128, 128, 64, false, true, true, false, 1).SetName("Tf32 NT 128x128x64 odd leading dimensions (4-byte loads)");
    }

    [TestCaseSource(nameof(Cases128))]
    public void The128x128TilesStageLoopMatchesTheOtherTilesBitwise(Precision p, int batch, int M, int N, int K, bool ta, bool tb, bool epilogue, bool shareB, int pad)
        => Check(p, batch, M, N, K, ta, tb, epilogue, shareB, pad);

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheCpuBackendAndThe64x32TileBitwise(Precision p, int batch, int M, int N, int K, bool ta, bool tb, bool epilogue, bool shareB, int pad)
        => Check(p, batch, M, N, K, ta, tb, epilogue, shareB, pad);

    [TestCase(Precision.Tf32)]
    [TestCase(Precision.Bf16)]
    public void GeluEpilogue(Precision p) => Check(p, 1, 70, 9, 21, false, true, true, false, 1, gelu: true);

    /// <summary>The portable path works for any group size: 8, 16 and 256 threads (the synchronous staging of the slots nobody
    /// prefetches, down to none at 256; the emulated warps spread over the threads differently), bitwise as the 64×32 tile.</summary>
    [Test]
    public void AnyGroupSizeGivesTheSameBits()
    {
        if (Acc.AcceleratorType != AcceleratorType.CPU) Assert.Ignore("group size is fixed on a GPU");
        const int M = 131, N = 66, K = 35;
        var a = Strided(1, M, K, K, 0, 11, float.NaN);
        var b = Strided(1, K, N, N, 0, 12, float.NaN);
        var shape = new GemmArgs { M = M, N = N, K = K, Batch = 1, Lda = K, Ldb = N, Ldc = N, Alpha = 1, Beta = 0 };
        var want = Run(TensorCoreTile.Tile64x32, Precision.Tf32, a, b, new float[M * N], null, shape, false);
        foreach (var (warp, warps) in new[] { (2, 4), (4, 4), (16, 16) })
        {
            using var acc = new ILGPU.Runtime.CPU.CPUDevice(warp, warps, 1).CreateCPUAccelerator(Ctx, ILGPU.Runtime.CPU.CPUAcceleratorMode.Parallel);
            using var aBuf = Up(acc, a);
            using var bBuf = Up(acc, b);
            using var cBuf = acc.Allocate1D<float>(M * N);
            var args = shape;
            args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View;
            Assert.That(TensorCoreGemm.GroupSize(acc, TensorCoreTile.Tile128x64), Is.EqualTo(warp * warps));
            TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x64);
            acc.Synchronize();
            var got = cBuf.GetAsArray1D();
            Assert.That(got.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), $"group {warp}×{warps}");
            // pre-rounded operands: at 256 threads every slot is prefetched, so every operand takes the unrounded stores
            using var aPre = Up(acc, RoundAll(a, Precision.Tf32));
            using var bPre = Up(acc, RoundAll(b, Precision.Tf32));
            args.A = aPre.View; args.B = bPre.View; args.ARounded = true; args.BRounded = true;
            TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x64);
            acc.Synchronize();
            Assert.That(cBuf.GetAsArray1D().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)),
                $"group {warp}×{warps}, pre-rounded operands");
        }
    }

    [Test]
    public void AnUnknownTileIsRefused()
    {
        using var buf = Acc.Allocate1D<float>(4);
        var args = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 2, 2, 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => TensorCoreGemm.Launch(Acc, null, args, Precision.Tf32, (TensorCoreTile)7))!;
        Assert.That(e.Message, Does.Contain("tile"));
    }

    [Test]
    public void CompilesToPtxForSm90WithLaunchBoundsAndNoLocalMemory()
    {
        using var c = new KernelAudit.PtxCompiler(7, 8);   // the ISA `fashionvil bench ptx` uses with ptxas 11.8
        var ptx = c.Compile(KernelAudit.Entry(TensorCoreGemm.KernelMethod(TensorCoreTile.Tile128x64)));
        if ((Environment.GetEnvironmentVariable("FVL_DUMP_PTX") ?? Environment.GetEnvironmentVariable("FVL_PTX_DUMP")) is { Length: > 0 } dir)
            File.WriteAllText(Path.Combine(dir, "tensor_core_gemm_128.ptx"), ptx);
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"), "the TF32 tensor-core instruction");
        Assert.That(ptx, Does.Contain("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"), "the bf16 tensor-core instruction");
        Assert.That(ptx, Does.Contain(".reg .f32 fvld<32>;"));
        Assert.That(ptx, Does.Not.Contain(".local"), "no local memory");
        Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync"), Is.EqualTo(24), "2 m16 × 4 n8 mma per k step: 8 bf16, and 2 × 8 TF32 (both k8 steps unrolled)");
        Assert.That(ptx, Does.Contain(".maxntid 256, 1, 1").And.Contain(".minnctapersm 2"), "launch bounds (256, 2)");
        // shared memory: only the 36,864-byte stage/C buffer; the portable path's accumulator tile is dead code on CUDA
        var shared = System.Text.RegularExpressions.Regex.Matches(ptx, @"\.shared\s+(?:\.align\s+\d+\s+)?\.\w+\s+[\w$]+\[(\d+)\]")
            .Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.That(shared, Is.EqualTo(TensorCoreGemm.Shared2Words * 4).And.LessThanOrEqualTo(48 * 1024));
    }

    /// <summary>
    /// The CUDA stages read every fragment word as a lane base (ALane/BLane, once per stage) plus a constant (A128Off,
    /// B128Off, and AOff/BOff with the 64×32 tile's stride). The emulator reads fragments through AFrag/BFrag, which only
    /// use the first m16 and n8 tile; this checks the offsets of every tile, k step and register against the PTX ISA's
    /// fragment layouts, written out here (TF32 m16n8k8: A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4), B b0 (k t, n g)
    /// b1 (k t+4, n g); bf16 m16n8k16: A a_i at column 2t + 8·(i ≥ 2), row g + 8·(i odd), B b_i at k 2t + 8i, the packed
    /// pair's second word one column / one row further).
    /// </summary>
    [Test]
    public void TheCudaStagesFragmentOffsetsFollowTheIsaLayouts()
    {
        int checkedWords = 0;
        foreach (bool bf16 in new[] { false, true })
            for (int r0 = 0; r0 < 128; r0 += 32)
                for (int c0 = 0; c0 < 64; c0 += 32)
                    for (int lane = 0; lane < 32; lane++)
                    {
                        int g = lane >> 2, t = lane & 3;
                        long al = TensorCoreGemm.ALane(r0, g, t, bf16);
                        long bl128 = TensorCoreGemm.BLane(TensorCoreGemm.B2Stride, c0, g, t, bf16), bl64 = TensorCoreGemm.BLane(TensorCoreGemm.BStride, 0, g, t, bf16);
                        foreach (int ks in bf16 ? new[] { 0 } : new[] { 0, 8 })
                        {
                            for (int i = 0; i < 4; i++)
                            {
                                int col = bf16 ? 2 * t + (i >= 2 ? 8 : 0) : ks + t + (i >= 2 ? 4 : 0);
                                for (int mi = 0; mi < 2; mi++)
                                {
                                    int row = r0 + 16 * mi + g + ((i & 1) != 0 ? 8 : 0);
                                    Assert.That(al + TensorCoreGemm.A128Off(mi, ks, i, bf16), Is.EqualTo((long)row * TensorCoreGemm.AStride + col),
                                        $"A: bf16 {bf16}, warp rows {r0}, lane {lane}, m16 tile {mi}, k {ks}, register {i}");
                                    checkedWords++;
                                }
                                Assert.That(al + TensorCoreGemm.AOff(0, ks, i, bf16), Is.EqualTo((long)(r0 + g + ((i & 1) != 0 ? 8 : 0)) * TensorCoreGemm.AStride + col),
                                    $"A (64×32 tile): bf16 {bf16}, lane {lane}, k {ks}, register {i}");
                            }
                            for (int i = 0; i < 2; i++)
                            {
                                int k = bf16 ? 2 * t + 8 * i : ks + t + 4 * i;
                                for (int j = 0; j < 4; j++)
                                {
                                    Assert.That(bl128 + TensorCoreGemm.B128Off(j, ks, i, bf16), Is.EqualTo((long)k * TensorCoreGemm.B2Stride + c0 + 8 * j + g),
                                        $"B: bf16 {bf16}, warp columns {c0}, lane {lane}, n8 tile {j}, k {ks}, register {i}");
                                    Assert.That(bl64 + TensorCoreGemm.BOff(TensorCoreGemm.BStride, 8 * j, ks, i, bf16), Is.EqualTo((long)k * TensorCoreGemm.BStride + 8 * j + g),
                                        $"B (64×32 tile): bf16 {bf16}, lane {lane}, n8 tile {j}, k {ks}, register {i}");
                                    checkedWords += 2;
                                }
                            }
                        }
                    }
        Assert.That(checkedWords, Is.EqualTo(4 * 2 * 32 * (2 * 24 + 1 * 24)), "every word was checked: 24 per lane and k step (8 A, 16 B), 2 TF32 k steps + 1 bf16");
    }
}
