using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The asynchronous 128×128 tensor-core tile (<see cref="TensorCoreTile.Tile128x128Async"/>: the TF32 rule's pick under
/// <c>FVL_TC_ASYNC=on</c>, <c>FVL_TC_TILE=128x128a</c>, a tuner candidate; TensorCoreGemm.Async.cs) piece by piece: its
/// swizzled stage layout, the fragment words its lanes read (against the PTX ISA, without bank conflicts), its portable path
/// for any group size and edge, its selection, and its PTX. TensorCoreGemm128Tests runs it bitwise against the other tiles
/// on every case.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]   // tests switch the process-wide AsyncStages
public class TensorCoreGemmAsyncTests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    /// <summary>Each layout maps the 128 × 16 tile onto the 2,048 words once, and the four elements of a copy chunk (along k
    /// when k-contiguous, along the rows when k-outer) onto four consecutive words starting at a multiple of 4 (a 16-byte
    /// cp.async); the copy slots (Slot3R/Slot3K) cover every chunk once.</summary>
    [Test]
    public void TheSwizzledLayoutIsABijectionWithWholeChunks()
    {
        foreach (bool kOuter in new[] { false, true })
        {
            var seen = new HashSet<int>();
            for (int r = 0; r < 128; r++)
                for (int k = 0; k < 16; k++)
                {
                    int w = TensorCoreGemm.Swz4(kOuter, r, k);
                    Assert.That(w, Is.InRange(0, TensorCoreGemm.Op4Words - 1));
                    Assert.That(seen.Add(w), Is.True, $"k-outer {kOuter}: ({r}, {k}) shares word {w}");
                }
            var chunks = new HashSet<int>();
            for (int p = 0; p < 256; p++)
                for (int q = 0; q < 2; q++)
                {
                    int r = TensorCoreGemm.Slot3R(kOuter, p, q), k = TensorCoreGemm.Slot3K(kOuter, p, q), w0 = TensorCoreGemm.Swz4(kOuter, r, k);
                    Assert.That(w0 % 4, Is.Zero, "16-byte aligned chunk");
                    Assert.That(chunks.Add(w0), Is.True, "a chunk copied twice");
                    for (int j = 1; j < 4; j++)
                        Assert.That(TensorCoreGemm.Swz4(kOuter, kOuter ? r + j : r, kOuter ? k : k + j), Is.EqualTo(w0 + j), $"k-outer {kOuter}: chunk element {j}");
                }
            Assert.That(chunks, Has.Count.EqualTo(512));
        }
    }

    /// <summary>
    /// Every fragment word a lane reads on CUDA (<see cref="TensorCoreGemm.LaneBase4"/> chosen by Sel4, plus Imm4) is the
    /// element the PTX ISA gives that lane and register (TF32 m16n8k8: A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4);
    /// B b0 (k t, n g) b1 (k t+4, n g)) at its swizzled word, in all four operand layouts, and the 32 lanes of each
    /// fragment register read 32 distinct banks.
    /// </summary>
    [Test]
    public void FragmentWordsFollowTheIsaLayoutsWithoutBankConflicts()
    {
        int words = 0;
        foreach (bool trans in new[] { false, true })
        {
            bool aKOuter = trans, bKOuter = !trans;   // A transposed is staged k-outer; B transposed k-contiguous
            for (int w = 0; w < 8; w++)
            {
                int wr = 64 * (w >> 2), wc = 32 * (w & 3);
                foreach (int ks in new[] { 0, 8 })
                {
                    void Register(string what, bool kOuter, int r0, int dr, int dk, Func<int, int, (int R, int K)> element)
                    {
                        var banks = new HashSet<long>();
                        for (int lane = 0; lane < 32; lane++)
                        {
                            int g = lane >> 2, t = lane & 3;
                            long got = TensorCoreGemm.LaneBase4(kOuter, r0, g, t, TensorCoreGemm.Sel4(kOuter, dr, dk)) + TensorCoreGemm.Imm4(kOuter, dr, dk);
                            var (r, k) = element(g, t);
                            Assert.That(got, Is.EqualTo(TensorCoreGemm.Swz4(kOuter, r, k)), $"{what}, lane {lane}");
                            banks.Add(got % 32);
                            words++;
                        }
                        Assert.That(banks, Has.Count.EqualTo(32), $"{what}: bank conflict");
                    }
                    for (int mi = 0; mi < 4; mi++)
                        for (int i = 0; i < 4; i++)
                            Register($"A transposed {trans}, warp {w}, m16 tile {mi}, k {ks}, register {i}", aKOuter, wr, 16 * mi + ((i & 1) != 0 ? 8 : 0), ks + ((i & 2) != 0 ? 4 : 0),
                                (g, t) => (wr + 16 * mi + g + ((i & 1) != 0 ? 8 : 0), ks + t + ((i & 2) != 0 ? 4 : 0)));
                    for (int nj = 0; nj < 4; nj++)
                        for (int i = 0; i < 2; i++)
                            Register($"B transposed {trans}, warp {w}, n8 tile {nj}, k {ks}, register {i}", bKOuter, wc, 8 * nj, ks + 4 * i,
                                (g, t) => (wc + 8 * nj + g, ks + t + 4 * i));
                }
            }
        }
        Assert.That(words, Is.EqualTo(2 * 8 * 2 * 32 * (16 + 8)));
    }

    [Test]
    public void ValidCountsClipChunksAtTheMatrixEdge()
    {
        // k-contiguous: a chunk runs along k on row r
        Assert.That(TensorCoreGemm.Valid4(false, 5, 8, 6, 16), Is.EqualTo(4));
        Assert.That(TensorCoreGemm.Valid4(false, 5, 12, 6, 14), Is.EqualTo(2), "K tail");
        Assert.That(TensorCoreGemm.Valid4(false, 6, 0, 6, 16), Is.Zero, "row past M");
        Assert.That(TensorCoreGemm.Valid4(false, 0, 16, 6, 14), Is.Zero, "chunk past K");
        // k-outer: a chunk runs along the rows at k
        Assert.That(TensorCoreGemm.Valid4(true, 4, 3, 7, 4), Is.EqualTo(3), "rows tail");
        Assert.That(TensorCoreGemm.Valid4(true, 8, 3, 7, 4), Is.Zero, "rows past the end");
        Assert.That(TensorCoreGemm.Valid4(true, 0, 4, 7, 4), Is.Zero, "k past K");
    }

    /// <summary>Edge tiles, a K tail shorter than a chunk, one and two stages (the prologue's empty copy groups), all four
    /// layouts, operands rounded by the caller or not, on groups of 8, 16 and 256 threads (256: the one-slot-per-thread path
    /// the GPU runs): the bits of the 128×64 tile. The last shape's edge column tile has whole stages whose plain copies
    /// would read past the end of B (a bounds error on the emulator) if it took the interior tiles' path.</summary>
    [Test]
    public void AnyGroupSizeAndEdgeGivesTheBitsOfThe128x64Tile()
    {
        if (Acc.AcceleratorType != AcceleratorType.CPU) Assert.Ignore("group size is fixed on a GPU");
        var r = new Random(33);
        foreach (var (m, n, k, ta, tb) in new[] { (136, 132, 18, false, false), (128, 128, 16, true, false), (132, 137, 6, false, true), (9, 260, 40, true, true), (130, 128, 33, true, false), (128, 132, 32, false, false) })
        {
            // leading dimensions rounded up to a multiple of 4 (the 16-byte copies need it), the gaps NaN: a chunk that read
            // past the K tail or the last row would poison its outputs
            int aRows = ta ? k : m, aCols = ta ? m : k, bRows = tb ? n : k, bCols = tb ? k : n, lda = (aCols + 3) & ~3, ldb = (bCols + 3) & ~3;
            float[] Fill(int rows, int cols, int ld) => Enumerable.Range(0, rows * ld).Select(i => i % ld < cols ? (float)(r.NextDouble() * 2 - 1) : float.NaN).ToArray();
            var a = Fill(aRows, aCols, lda);
            var b = Fill(bRows, bCols, ldb);
            var shape = new GemmArgs { M = m, N = n, K = k, Batch = 1, Lda = lda, Ldb = ldb, Ldc = n, Alpha = 1, Beta = 0, TransA = ta, TransB = tb };
            float[] want;
            using (var aBuf = Up(Acc, a)) using (var bBuf = Up(Acc, b)) using (var cBuf = Acc.Allocate1D<float>((long)m * n))
            {
                var args = shape; args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View;
                TensorCoreGemm.Launch(Acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x64);
                Acc.Synchronize();
                want = cBuf.GetAsArray1D();
            }
            foreach (var (warp, warps) in new[] { (2, 4), (4, 4), (16, 16) })
            {
                using var acc = new ILGPU.Runtime.CPU.CPUDevice(warp, warps, 1).CreateCPUAccelerator(Ctx, ILGPU.Runtime.CPU.CPUAcceleratorMode.Parallel);
                foreach (var (preA, preB) in new[] { (false, false), (true, true), (false, true) })
                {
                    using var aBuf = Up(acc, preA ? a.Select(v => PrecisionRounding.ToTf32(v)).ToArray() : a);
                    using var bBuf = Up(acc, preB ? b.Select(v => PrecisionRounding.ToTf32(v)).ToArray() : b);
                    using var cBuf = acc.Allocate1D<float>((long)m * n);
                    var args = shape; args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View; args.ARounded = preA; args.BRounded = preB;
                    long before = TensorCoreGemm.AsyncLaunchCount;
                    TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x128Async);
                    acc.Synchronize();
                    string what = $"{m}x{n}x{k} {(ta ? 't' : 'n')}{(tb ? 't' : 'n')}, group {warp}×{warps}, A rounded by the caller {args.ARounded}, B {args.BRounded}";
                    Assert.That(TensorCoreGemm.AsyncLaunchCount, Is.EqualTo(before + 1), $"{what}: the asynchronous kernel ran");
                    Assert.That(cBuf.GetAsArray1D().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)), what);
                }
            }
        }
    }

    /// <summary>FVL_TC_ASYNC=on makes the cp.async tile the TF32 rule's pick (bf16 keeps its tile) and a tuner candidate (off,
    /// the tuner never times it: no device has checked its bits); FVL_TC_TILE=128x128a names it; it is a GEMM tile only
    /// (FVL_TC_CONV_TILE refuses it, the conv tuner never times it) and runs TF32 only.</summary>
    [Test]
    public void TheRuleTheOverrideAndTheTunerSeeIt()
    {
        bool was = TensorCoreGemm.AsyncStages;
        try
        {
            TensorCoreGemm.AsyncStages = false;
            Assert.That(TensorCoreGemm.Choose(Acc, 4096, 768, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128));
            TensorCoreGemm.AsyncStages = true;
            Assert.That(TensorCoreGemm.Choose(Acc, 4096, 768, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128Async));
            Assert.That(TensorCoreGemm.Choose(Acc, 4096, 768, Precision.Bf16), Is.EqualTo(TensorCoreTile.Tile128x64));
            Assert.That(TensorCoreGemm.ChooseConv(Acc, 4096, 768, Precision.Tf32), Is.EqualTo(TensorCoreTile.Tile128x128), "not a conv tile");
            Assert.That(TensorCoreGemm.TilesFor(Precision.Tf32), Does.Contain(TensorCoreTile.Tile128x128Async), "a tuner candidate once opted in");
            TensorCoreGemm.AsyncStages = false;
            Assert.That(TensorCoreGemm.TilesFor(Precision.Tf32), Does.Not.Contain(TensorCoreTile.Tile128x128Async), "not timed by the tuner unless opted in");
        }
        finally { TensorCoreGemm.AsyncStages = was; }
        Assert.That(CudaBackend.ParseGemmTile(" 128X128A "), Is.EqualTo(TensorCoreTile.Tile128x128Async));
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.ParseTile("FVL_TC_CONV_TILE", "128x128a"))!;
        Assert.That(e.Message, Does.Contain("FVL_TC_CONV_TILE").And.Contain("128x128a").And.Not.Contain("or 128x128a"));
        Assert.That(TensorCoreGemm.AllTilesFor(Precision.Tf32), Does.Contain(TensorCoreTile.Tile128x128Async));
        Assert.That(TensorCoreGemm.AllTilesFor(Precision.Bf16), Does.Not.Contain(TensorCoreTile.Tile128x128Async));
        Assert.That(TensorCoreGemm.ConvTilesFor(Precision.Tf32), Does.Not.Contain(TensorCoreTile.Tile128x128Async));
        Assert.That(TensorCoreGemm.TileShape(TensorCoreTile.Tile128x128Async), Is.EqualTo((128, 128)));
        Assert.That(TensorCoreGemm.Runnable(TensorCoreTile.Tile128x128Async, 128 * 65535 + 1, 1), Is.EqualTo(TensorCoreTile.Tile128x64));
        using var buf = Acc.Allocate1D<float>(4);
        var args = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 2, 2, 1);
        var bf = Assert.Throws<ArgumentException>(() => TensorCoreGemm.Launch(Acc, null, args, Precision.Bf16, TensorCoreTile.Tile128x128Async))!;
        Assert.That(bf.Message, Does.Contain("Tf32"));
    }

    [Test]
    public void TheSwitchParsesOffAndOnAndRefusesAnythingElseByName()
    {
        Assert.That(TensorCoreGemm.ParseAsync(null), Is.False);
        Assert.That(TensorCoreGemm.ParseAsync(""), Is.False);
        Assert.That(TensorCoreGemm.ParseAsync(" OFF "), Is.False);
        Assert.That(TensorCoreGemm.ParseAsync(" On"), Is.True);
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.ParseAsync("yes"))!;
        Assert.That(e.Message, Does.Contain("FVL_TC_ASYNC").And.Contain("yes"));
    }

    /// <summary>The four kernels compile for sm_90: cp.async two stages ahead (wait_group 1), the shared window through the
    /// dynamic-shared symbol, every shared access through the shared state space (a generic pointer there would cost each
    /// fragment load an address conversion), no static shared arrays (the 48 KB of stages are all the dynamic memory the
    /// launch asks for), no local memory, 32 mma per stage, launch bounds (256, 2).</summary>
    [Test]
    public void CompilesToPtxForSm90WithCpAsyncAndSharedStateSpaceLoads()
    {
        using var c = new KernelAudit.PtxCompiler(8, 4);
        Assert.That(TensorCoreGemm.Kernel128x128AsyncMethods, Has.Count.EqualTo(4));
        foreach (var m in TensorCoreGemm.Kernel128x128AsyncMethods)
        {
            var ptx = c.Compile(KernelAudit.Entry(m));
            string what = m.ToString()!;
            Assert.That(ptx, Does.Contain("cp.async.cg.shared.global [fvls], [fvlg], 16;"), what);
            Assert.That(ptx, Does.Contain("cp.async.cg.shared.global [fvls], [fvlg], 16, "), $"{what}: the zero-filling form for edges");
            Assert.That(ptx, Does.Contain("cp.async.wait_group 1;").And.Contain("cp.async.commit_group;"), what);
            Assert.That(ptx, Does.Contain("mov.u32 fvls, __dyn_shared_alloca;"), what);
            Assert.That(ptx, Does.Not.Contain("cvta.shared"), $"{what}: shared memory through generic pointers");
            Assert.That(ptx, Does.Contain("ld.shared.b32"), what);
            Assert.That(ptx, Does.Not.Contain(".local"), $"{what}: local memory");
            Assert.That(System.Text.RegularExpressions.Regex.IsMatch(ptx, @"\.shared\s+(?:\.align\s+\d+\s+)?\.\w+\s+[\w$]+\[\d+\]"), Is.False, $"{what}: a static shared array");
            Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32"), Is.EqualTo(32), what);
            Assert.That(ptx, Does.Contain(".maxntid 256, 1, 1").And.Contain(".minnctapersm 2"), what);
        }
        Assert.That(TensorCoreGemm.Shared4Words * 4, Is.EqualTo(48 * 1024), "three stages fill ILGPU's dynamic shared-memory cap exactly");
    }
}
