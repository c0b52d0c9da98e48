using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Every SGEMM version (<see cref="GemmVersion"/>) on ILGPU's CPU accelerator (2-thread groups, bounds-checked views)
/// against CpuBackend.MatMul on the same stored operands: awkward sizes, all transposes, padded leading dimensions,
/// offset views, shared (stride-0) batches, alpha/beta, bias and the GELU epilogue.
/// </summary>
[TestFixture, Category("Cuda")]
public class GemmKernelTests() : EmulatorKernelTestBase(assertions: true)
{
    /// <summary>A stored operand: [storedBatch, rows, ld] floats after <c>offset</c> leading floats.</summary>
    private sealed record Stored(float[] Data, int Rows, int Cols, int Ld, int Offset, int BatchStride);

    private static Stored Make(int batch, int rows, int cols, int pad, int offset, bool share, ulong seed)
    {
        int ld = cols + pad, storedBatch = share ? 1 : batch;
        int n = offset + storedBatch * rows * ld;
        using var t = OpCheck.Rand([Math.Max(n, 1)], seed, DType.Float32);
        return new Stored(t.ToArray<float>()[..n], rows, cols, ld, offset, share ? 0 : rows * ld);
    }

    private static Tensor CpuView(Stored s, int batch)
    {
        using var flat = Tensor.FromArray(s.Data.Length == 0 ? new float[1] : s.Data, Math.Max(s.Data.Length, 1));
        return flat.AsStrided([batch, s.Rows, s.Cols], [s.BatchStride, s.Ld, 1], s.Offset);
    }

    private void Check(GemmVersion v, int batch, int M, int N, int K, bool ta, bool tb, float alpha = 1f, float beta = 0f,
        bool bias = false, bool gelu = false, int pad = 0, int offset = 0, bool shareA = false, bool shareB = false, ulong seed = 1)
        => Check(Acc, v, batch, M, N, K, ta, tb, alpha, beta, bias, gelu, pad, offset, shareA, shareB, seed);

    private static void Check(Accelerator acc, GemmVersion v, int batch, int M, int N, int K, bool ta, bool tb, float alpha = 1f, float beta = 0f,
        bool bias = false, bool gelu = false, int pad = 0, int offset = 0, bool shareA = false, bool shareB = false, ulong seed = 1)
    {
        string what = $"{v} batch {batch} M {M} N {N} K {K} transA {ta} transB {tb} alpha {alpha} beta {beta} bias {bias} gelu {gelu} pad {pad} offset {offset} shareA {shareA} shareB {shareB}";
        var a = ta ? Make(batch, K, M, pad, offset, shareA, seed) : Make(batch, M, K, pad, offset, shareA, seed);
        var b = tb ? Make(batch, N, K, pad, offset, shareB, seed + 1) : Make(batch, K, N, pad, offset, shareB, seed + 1);
        using var c0t = OpCheck.Rand([batch, M, N], seed + 2, DType.Float32);
        var c0 = c0t.ToArray<float>();
        using var biasT = bias ? OpCheck.Rand([N], seed + 3, DType.Float32) : null;

        // CPU reference: CpuBackend.MatMul on the same storage, then GELU with the CPU backend's scalar formula.
        using var av = CpuView(a, batch);
        using var bv = CpuView(b, batch);
        using var want = Tensor.FromArray(beta == 0f ? Enumerable.Repeat(float.NaN, c0.Length).ToArray() : (float[])c0.Clone(), batch, M, N);
        CpuBackend.Instance.MatMul(av, bv, want, ta, tb, alpha, beta, biasT);
        var expected = want.ToArray<float>().Select(x => (double)(gelu ? ScalarMath.GeluF(x) : x)).ToArray();

        // Device: C stored with a padded ldc and poisoned padding, which must survive.
        int ldc = N + pad;
        var cHost = new float[offset + batch * M * ldc];
        Array.Fill(cHost, -777f);
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++)
                    cHost[offset + (bt * M + i) * ldc + j] = beta == 0f ? float.NaN : c0[(bt * M + i) * N + j];
        using var aBuf = acc.Allocate1D(a.Data.Length == 0 ? new float[1] : a.Data);
        using var bBuf = acc.Allocate1D(b.Data.Length == 0 ? new float[1] : b.Data);
        using var cBuf = acc.Allocate1D(cHost.Length == 0 ? new float[1] : cHost);
        using var biasBuf = acc.Allocate1D(bias ? biasT!.ToArray<float>() : new float[1]);
        var args = new GemmArgs
        {
            A = aBuf.View.SubView(offset, a.Data.Length - offset), B = bBuf.View.SubView(offset, b.Data.Length - offset),
            C = cBuf.View.SubView(offset, cHost.Length - offset), Bias = bias ? biasBuf.View : default,
            M = M, N = N, K = K, Batch = batch, Lda = a.Ld, Ldb = b.Ld, Ldc = ldc,
            StrideA = a.BatchStride, StrideB = b.BatchStride, StrideC = (long)M * ldc,
            TransA = ta, TransB = tb, Alpha = alpha, Beta = beta, Gelu = gelu,
        };
        GemmKernels.Launch(acc, null, args, v);
        acc.Synchronize();
        var got = cBuf.GetAsArray1D();

        var gotC = new double[batch * M * N];
        for (int bt = 0; bt < batch; bt++)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++)
                {
                    float x = got[offset + (bt * M + i) * ldc + j];
                    if (j < N) gotC[(bt * M + i) * N + j] = x;
                    else Assert.That(x, Is.EqualTo(-777f), $"{what}: padding of C at batch {bt} row {i} col {j} was written");
                }
        for (int i = 0; i < offset; i++) Assert.That(got[i], Is.EqualTo(-777f), $"{what}: C before the view was written");
        OpCheck.AssertClose(gotC, expected, 1e-5, 1e-6 + 2e-7 * K, what);
    }

    private static readonly int[][] Shapes = [[1, 1, 1], [5, 7, 3], [33, 17, 65], [64, 64, 64]];

    [Test]
    public void AllTransposesAndSizes([ValueSource(nameof(AllVersions))] GemmVersion v, [Values(false, true)] bool ta, [Values(false, true)] bool tb)
    {
        ulong seed = 100;
        foreach (var s in Shapes) Check(v, 1, s[0], s[1], s[2], ta, tb, seed: seed++);
    }

    public static IEnumerable<GemmVersion> AllVersions => GemmKernels.Versions;

    [Test]
    public void BatchedSharedOperandsPaddingAndOffsets([ValueSource(nameof(AllVersions))] GemmVersion v)
    {
        Check(v, 3, 9, 13, 7, false, false, shareA: true, pad: 3, offset: 1);
        Check(v, 2, 6, 5, 11, true, true, shareB: true, pad: 2, offset: 5);
        Check(v, 2, 4, 12, 8, true, false, pad: 4, offset: 4, seed: 7);           // aligned: the 128-bit paths of v4
        Check(v, 1, 130, 3, 9, false, true, seed: 8);                             // more rows than one 128 tile
        Check(v, 1, 2, 131, 5, false, false, seed: 9);                            // more columns than one 128 tile
    }

    [Test]
    public void AlphaBetaBiasGelu([ValueSource(nameof(AllVersions))] GemmVersion v)
    {
        Check(v, 2, 10, 11, 12, false, true, alpha: 0.5f, beta: -1.5f, seed: 20);
        Check(v, 1, 9, 8, 16, false, false, alpha: 2f, beta: 0.25f, bias: true, pad: 4, seed: 21);
        Check(v, 2, 7, 9, 5, true, false, bias: true, gelu: true, seed: 22);
        Check(v, 1, 8, 16, 12, false, false, alpha: 3f, beta: 1f, bias: true, gelu: true, seed: 23);   // vector epilogue
        Check(v, 1, 3, 4, 0, false, false, beta: 0.5f, bias: true, seed: 24);   // K = 0: C ← beta·C + bias
    }

    [Test]
    public void GpuGroupShapeOf256ThreadsGivesTheSameResults()
    {
        // The launcher gives a GPU 256-thread groups: one pass per tile, every thread owns one staging slot (v5's
        // register-prefetch path only). A 256-thread CPU device runs that exact path (slow barriers: keep it small).
        using var ctx = Context.Create(b => b.CPU(new CPUDevice(32, 8, 1)).EnableAlgorithms().Assertions());
        using var acc = ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        Assert.That(acc.MaxNumThreadsPerGroup, Is.EqualTo(GemmKernels.GpuGroupSize));
        foreach (var v in GemmKernels.Versions)
        {
            Check(acc, v, 1, 9, 133, 19, true, false, beta: 0.5f, bias: true, seed: 40);   // 2 column tiles, 3 K tiles of v4/v5
            Check(acc, v, 2, 9, 12, 20, false, true, pad: 4, shareA: true, seed: 41);
        }
    }

    /// <summary>v6's stage loop (interior tiles of aligned operands with a next K tile inside: M and N multiples of 128, K ≥ 16)
    /// in every layout, with batches, an epilogue, a K tail, edge tiles and unaligned operands (its general loop), bit for
    /// bit v5's result, on 2-thread groups (most slots staged directly) and on 256-thread groups (every slot prefetched).</summary>
    [Test]
    public void V6IsV5BitForBitThroughItsStageLoop([Values(false, true)] bool ta, [Values(false, true)] bool tb)
    {
        using var ctx = Context.Create(b => b.CPU(new CPUDevice(32, 8, 1)).EnableAlgorithms().Assertions());
        using var acc256 = ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        foreach (var (acc, batch, m, n, k, pad, epilogue) in new (Accelerator, int, int, int, int, int, bool)[]
                 {
                     (Acc, 2, 128, 256, 40, 0, false),    // 5 K tiles: 4 through the stage loop, the last through the general one
                     (Acc, 1, 256, 128, 37, 4, true),     // a K tail; padded by 4 (still 16-byte rows); bias + GELU, beta
                     (Acc, 1, 200, 136, 32, 0, false),    // edge tiles: the general loop for all but the first
                     (Acc, 1, 128, 128, 24, 1, false),    // odd leading dimensions: no 128-bit loads, the general loop
                     (acc256, 1, 128, 128, 32, 0, true),  // the CUDA group size: every slot through the stage loop's loads
                 })
        {
            var a = ta ? Make(batch, k, m, pad, 0, false, 61) : Make(batch, m, k, pad, 0, false, 61);
            var b = tb ? Make(batch, n, k, pad, 0, false, 62) : Make(batch, k, n, pad, 0, false, 62);
            using var c0 = OpCheck.Rand([batch * m * n], 63, DType.Float32);
            using var biasT = OpCheck.Rand([n], 64, DType.Float32);
            float[] Run(GemmVersion v)
            {
                using var ab = acc.Allocate1D(a.Data);
                using var bb = acc.Allocate1D(b.Data);
                using var cb = acc.Allocate1D(c0.ToArray<float>());
                using var biasB = acc.Allocate1D(biasT.ToArray<float>());
                var g = new GemmArgs
                {
                    A = ab.View, B = bb.View, C = cb.View, M = m, N = n, K = k, Batch = batch, Lda = a.Ld, Ldb = b.Ld, Ldc = n,
                    StrideA = a.BatchStride, StrideB = b.BatchStride, StrideC = (long)m * n, TransA = ta, TransB = tb,
                    Alpha = epilogue ? 1.5f : 1f, Beta = epilogue ? 0.5f : 0f,
                };
                if (epilogue) { g.Bias = biasB.View; g.Gelu = true; }
                GemmKernels.Launch(acc, null, g, v);
                acc.Synchronize();
                return cb.GetAsArray1D();
            }
            var v5 = Run(GemmVersion.Reg128x8Prefetch);
            var v6 = Run(GemmVersion.Reg128x8Layout);
            Assert.That(v6.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(v5.Select(BitConverter.SingleToInt32Bits)),
                $"v6 vs v5: batch {batch} {m}x{n}x{k} ta {ta} tb {tb} pad {pad} epilogue {epilogue}, groups of {acc.MaxNumThreadsPerGroup}");
        }
    }

    [Test]
    public void GeluMatchesCpuFormulaOverWideRange()
    {
        // bias carries the values; A·B = 0 via K = 0, so C = GELU(bias) exactly as the kernel evaluates it.
        const int n = 257;
        var xs = Enumerable.Range(0, n).Select(i => -8f + 16f * i / (n - 1)).ToArray();
        using var biasBuf = Acc.Allocate1D(xs);
        using var c = Acc.Allocate1D<float>(n);
        using var dummy = Acc.Allocate1D<float>(1);
        var args = GemmArgs.Dense(dummy.View, dummy.View, c.View, 1, 1, n, 0);
        args.Bias = biasBuf.View;
        args.Gelu = true;
        foreach (var v in GemmKernels.Versions)
        {
            GemmKernels.Launch(Acc, null, args, v);
            var got = c.GetAsArray1D().Select(x => (double)x).ToArray();
            // the kernel evaluates the CPU backend's float formula ...
            OpCheck.AssertClose(got, xs.Select(x => (double)ScalarMath.GeluF(x)).ToArray(), 1e-6, 1e-7, $"gelu {v} vs ScalarMath.GeluF");
            // ... which is exact-erf GELU to the A&S 7.1.26 bound: |erf error| ≤ 1.5e-7, so |GELU error| ≤ 0.5·8·1.5e-7 here.
            OpCheck.AssertClose(got, xs.Select(x => ScalarMath.Gelu(x)).ToArray(), 1e-6, 6e-7, $"gelu {v} vs float64 erf GELU");
        }
    }

    [Test]
    public void EmptyOutputsDoNothingAndBadArgumentsThrow()
    {
        using var buf = Acc.Allocate1D<float>(64);
        GemmKernels.Launch(Acc, null, GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 0, 5, 3));
        GemmKernels.Launch(Acc, null, GemmArgs.Dense(buf.View, buf.View, buf.View, 0, 5, 5, 3));
        var tooShort = GemmArgs.Dense(buf.View, buf.View, buf.View.SubView(0, 10), 1, 4, 4, 4);
        var ex = Assert.Throws<ArgumentException>(() => GemmKernels.Launch(Acc, null, tooShort));
        Assert.That(ex!.Message, Does.Contain("matmul").And.Contain("M 4, N 4, K 4"));
        var badLd = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 4, 4, 4);
        badLd.Lda = 3;
        Assert.That(() => GemmKernels.Launch(Acc, null, badLd), Throws.ArgumentException.With.Message.Contain("leading dimension"));
        var badBias = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 4, 4, 4);
        badBias.Bias = buf.View.SubView(0, 3);
        Assert.That(() => GemmKernels.Launch(Acc, null, badBias), Throws.ArgumentException.With.Message.Contain("bias"));
    }

    [Test]
    public void EveryVersionCompilesToPtxForSm90WithoutAGpu()
    {
        using var ptxc = new Sm90Ptx();
        foreach (var v in GemmKernels.Versions)
        {
            var ptx = ptxc.Compile(GemmKernels.KernelMethod(v), $"gemm_{v}");
            Assert.That(ptx, Does.Contain(".entry"), $"{v}: no PTX entry");
            if (v >= GemmVersion.Reg128x8Vec)
            {
                // the point of v4 and v5: 128-bit global and shared accesses
                Assert.That(ptx, Does.Match(@"ld(\.global)?\.v4\.f32"), $"{v}: no 128-bit global load");
                Assert.That(ptx, Does.Match(@"ld\.shared\.v4\.f32"), $"{v}: no 128-bit shared load");
                Assert.That(ptx, Does.Match(@"st(\.global)?\.v4\.f32"), $"{v}: no 128-bit store");
            }
        }
    }
}
