using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The 128×128 tensor-core tile's parts that TensorCoreGemm128Tests' bitwise comparisons do not reach one by one: its
/// fragment offsets in all four operand layouts against the PTX ISA, its TF32 rounding against PrecisionRounding.Tf32Bits,
/// the group-size independence of its portable path, what it refuses, and its PTX for sm_90.
/// </summary>
[TestFixture, Category("Cuda")]
public class TensorCoreGemm128x128Tests() : EmulatorKernelTestBase(assertions: true, cudaVariable: NormIndexKernelTests.CudaVariable)
{
    /// <summary>
    /// Every fragment word the CUDA stage reads (<see cref="TensorCoreGemm.Lane3"/> + A3Off / B3Off) is the element the PTX ISA
    /// assigns to that lane and register (TF32 m16n8k8: A a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); B b0 (k t, n g)
    /// b1 (k t+4, n g)), in the layout the operand is staged in: k-contiguous T[r·20 + k] for A not transposed and B
    /// transposed, k-outer T[k·136 + r] otherwise; and no two lanes of a warp read the same bank in one load.
    /// </summary>
    [Test]
    public void FragmentOffsetsFollowTheIsaLayoutsInEveryLayoutWithoutBankConflicts()
    {
        int checkedWords = 0;
        foreach (bool trans in new[] { false, true })
        {
            bool aKOuter = trans, bKOuter = !trans;   // A transposed is staged k-outer; B transposed is staged k-contiguous
            long AWord(int r, int k) => aKOuter ? (long)k * TensorCoreGemm.KoStride + r : (long)r * TensorCoreGemm.KcStride + k;
            long BWord(int n, int k) => bKOuter ? (long)k * TensorCoreGemm.KoStride + n : (long)n * TensorCoreGemm.KcStride + k;
            for (int w = 0; w < 8; w++)
            {
                int wr = 64 * (w >> 2), wc = 32 * (w & 3);
                foreach (int ks in new[] { 0, 8 })
                {
                    // one fragment register across the warp: every lane's word is the ISA's element, no two lanes share a bank
                    void Register(string what, Func<int, int, long> word, Func<int, int, long> want)
                    {
                        var banks = new HashSet<long>();
                        for (int lane = 0; lane < 32; lane++)
                        {
                            int g = lane >> 2, t = lane & 3;
                            long got = word(g, t);
                            Assert.That(got, Is.EqualTo(want(g, t)), $"{what}, lane {lane}");
                            Assert.That(got, Is.InRange(0, TensorCoreGemm.Op3Words - 1), what);
                            banks.Add(got % 32);
                            checkedWords++;
                        }
                        Assert.That(banks, Has.Count.EqualTo(32), $"{what}: bank conflict");
                    }
                    for (int mi = 0; mi < 4; mi++)
                        for (int i = 0; i < 4; i++)
                            Register($"A transposed {trans}: warp {w}, m16 tile {mi}, k {ks}, register {i}",
                                (g, t) => TensorCoreGemm.Lane3(aKOuter, wr, g, t) + TensorCoreGemm.A3Off(trans, mi, ks, i),
                                (g, t) => AWord(wr + 16 * mi + g + ((i & 1) != 0 ? 8 : 0), ks + t + ((i & 2) != 0 ? 4 : 0)));
                    for (int nj = 0; nj < 4; nj++)
                        for (int i = 0; i < 2; i++)
                            Register($"B transposed {trans}: warp {w}, n8 tile {nj}, k {ks}, register {i}",
                                (g, t) => TensorCoreGemm.Lane3(bKOuter, wc, g, t) + TensorCoreGemm.B3Off(trans, nj, ks, i),
                                (g, t) => BWord(wc + 8 * nj + g, ks + t + 4 * i));
                }
            }
        }
        Assert.That(checkedWords, Is.EqualTo(2 * 8 * 2 * 32 * (16 + 8)), "every word: 16 A and 8 B registers per lane and k step");
    }

    /// <summary>Where the CUDA path writes accumulator i of mma tile (mi, nj) of lane (g, t) in a C half-tile
    /// (<see cref="TensorCoreGemm.CIndex3"/>, SpillAccumulators3's offsets): the PTX ISA's C fragment element (c0 (g, 2t),
    /// c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)) of that tile, and the 4 warps of a half cover its 64 × 128 words
    /// once.</summary>
    [Test]
    public void AccumulatorsLandOnTheIsaCLayoutAndCoverAHalfTileOnce()
    {
        var seen = new HashSet<int>();
        for (int wc = 0; wc < 128; wc += 32)
            for (int lane = 0; lane < 32; lane++)
                for (int mi = 0; mi < 4; mi++)
                    for (int nj = 0; nj < 4; nj++)
                        for (int i = 0; i < 4; i++)
                        {
                            int g = lane >> 2, t = lane & 3;
                            int row = 16 * mi + g + (i >= 2 ? 8 : 0), col = wc + 8 * nj + 2 * t + (i % 2);
                            int at = TensorCoreGemm.CIndex3(wc, g, t, mi, nj, i);
                            Assert.That(at, Is.EqualTo(row * TensorCoreGemm.C3Stride + col), $"warp column {wc}, lane {lane}, tile ({mi}, {nj}), c{i}");
                            Assert.That(seen.Add(at), Is.True, "written twice");
                        }
        Assert.That(seen, Has.Count.EqualTo(64 * 128));
        Assert.That(seen.Max(), Is.LessThan(TensorCoreGemm.Shared3Words), "inside the stage buffers it reuses");
    }

    /// <summary>Each thread's two float4 slots of a stage cover the operand tile (128 rows × 16 k) exactly once, in both
    /// staging layouts, and land 16-byte aligned.</summary>
    [Test]
    public void StagingSlotsCoverTheTileOnce()
    {
        foreach (bool kOuter in new[] { false, true })
        {
            var seen = new HashSet<(int, int)>();
            for (int p = 0; p < 256; p++)
                for (int q = 0; q < 2; q++)
                {
                    int r = TensorCoreGemm.Slot3R(kOuter, p, q), k = TensorCoreGemm.Slot3K(kOuter, p, q), place = TensorCoreGemm.Place3(kOuter, p, q);
                    Assert.That(place % 4, Is.Zero, "16-byte aligned shared store");
                    for (int j = 0; j < 4; j++)
                    {
                        int rr = kOuter ? r + j : r, kk = kOuter ? k : k + j;
                        Assert.That(rr, Is.InRange(0, 127)); Assert.That(kk, Is.InRange(0, 15));
                        Assert.That(seen.Add((rr, kk)), Is.True, $"k-outer {kOuter}: ({rr}, {kk}) staged twice");
                        Assert.That(place + j, Is.EqualTo(TensorCoreGemm.Off3(kOuter, rr, kk)), "the float4's element j is where the fragments read it");
                    }
                }
            Assert.That(seen, Has.Count.EqualTo(128 * 16));
        }
    }

    [Test]
    public void Tf32WordIsTf32Bits()
    {
        var specials = new uint[] { 0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800001, 0xFF800001, 0x7FC00000, 0x7FFFFFFF,
            0xFFFFFFFF, 0x7FBFF000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00001000, 0x00000FFF, 0x3F800FFF, 0x3F801000, 0x3F801001, 0xBF801000, 0x7F7FF000 };
        var r = new Random(5);
        foreach (uint u in specials.Concat(Enumerable.Range(0, 200_000).Select(_ => (uint)r.NextInt64(0, 1L << 32))))
        {
            float x = BitConverter.UInt32BitsToSingle(u);
            Assert.That(TensorCoreGemm.Tf32Word(x), Is.EqualTo(PrecisionRounding.Tf32Bits(u)), $"bits 0x{u:X8}");
        }
    }

    /// <summary>8, 16 and 256 threads per group: the synchronous staging of the slots nobody prefetches (none at 256), the
    /// emulated warps spread differently; the same bits as the 128×64 tile, with and without operands the caller rounded.</summary>
    [Test]
    public void AnyGroupSizeGivesTheSameBits()
    {
        if (Acc.AcceleratorType != AcceleratorType.CPU) Assert.Ignore("group size is fixed on a GPU");
        const int M = 256, N = 128, K = 48;
        var r = new Random(21);
        var a = Enumerable.Range(0, M * K).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var b = Enumerable.Range(0, N * K).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var shape = new GemmArgs { M = M, N = N, K = K, Batch = 1, Lda = K, Ldb = K, Ldc = N, Alpha = 1, Beta = 0, TransB = true };
        float[] want;
        using (var aBuf = Up(Acc, a)) using (var bBuf = Up(Acc, b)) using (var cBuf = Acc.Allocate1D<float>(M * N))
        {
            var args = shape; args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View;
            TensorCoreGemm.Launch(Acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x64);
            Acc.Synchronize();
            want = cBuf.GetAsArray1D();
        }
        foreach (var (warp, warps) in new[] { (2, 4), (4, 4), (16, 16) })
        {
            using var acc = new ILGPU.Runtime.CPU.CPUDevice(warp, warps, 1).CreateCPUAccelerator(Ctx, ILGPU.Runtime.CPU.CPUAcceleratorMode.Parallel);
            Assert.That(TensorCoreGemm.GroupSize(acc, TensorCoreTile.Tile128x128), Is.EqualTo(warp * warps));
            foreach (bool pre in new[] { false, true })
            {
                using var aBuf = Up(acc, pre ? a.Select(v => PrecisionRounding.ToTf32(v)).ToArray() : a);
                using var bBuf = Up(acc, pre ? b.Select(v => PrecisionRounding.ToTf32(v)).ToArray() : b);
                using var cBuf = acc.Allocate1D<float>(M * N);
                var args = shape; args.A = aBuf.View; args.B = bBuf.View; args.C = cBuf.View; args.ARounded = pre; args.BRounded = pre;
                TensorCoreGemm.Launch(acc, null, args, Precision.Tf32, TensorCoreTile.Tile128x128);
                acc.Synchronize();
                Assert.That(cBuf.GetAsArray1D().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(want.Select(BitConverter.SingleToInt32Bits)),
                    $"group {warp}×{warps}, pre-rounded {pre}");
            }
        }
    }

    [Test]
    public void TheEmulatorsBuffersTakeThe128BitLoads()
    {
        // TensorCoreGemm128Tests' stage-loop cases rely on this: an ILGPU buffer starts 16-byte aligned
        using var buf = Acc.Allocate1D<float>(1000);
        Assert.That(GemmKernels.Aligned4(buf.View, 8, 16), Is.True);
        Assert.That(GemmKernels.Aligned4(buf.View, 9, 16), Is.False, "ld % 4 != 0");
        Assert.That(GemmKernels.Aligned4(buf.View.SubView(1, 500), 8, 16), Is.False, "an offset view");
    }

    [Test]
    public void Bf16IsRefusedByName()
    {
        using var buf = Acc.Allocate1D<float>(4);
        var args = GemmArgs.Dense(buf.View, buf.View, buf.View, 1, 2, 2, 1);
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.Launch(Acc, null, args, Precision.Bf16, TensorCoreTile.Tile128x128))!;
        Assert.That(e.Message, Does.Contain("128×128").And.Contain("Tf32"));
        Assert.That(TensorCoreGemm.TilesFor(Precision.Bf16), Does.Not.Contain(TensorCoreTile.Tile128x128));
        Assert.That(TensorCoreGemm.TilesFor(Precision.Tf32), Does.Contain(TensorCoreTile.Tile128x128));
    }

    [Test]
    public void GridsPastCudasLimitsRunThe128x64Tile()
    {
        Assert.That(TensorCoreGemm.Runnable(TensorCoreTile.Tile128x128, 128 * 65535, 65535), Is.EqualTo(TensorCoreTile.Tile128x128));
        Assert.That(TensorCoreGemm.Runnable(TensorCoreTile.Tile128x128, 128 * 65535 + 1, 1), Is.EqualTo(TensorCoreTile.Tile128x64));
        Assert.That(TensorCoreGemm.Runnable(TensorCoreTile.Tile128x128, 1, 65536), Is.EqualTo(TensorCoreTile.Tile128x64));
        Assert.That(TensorCoreGemm.Runnable(TensorCoreTile.Tile64x32, 128 * 65535 + 1, 65536), Is.EqualTo(TensorCoreTile.Tile64x32));
        // the fp32 SGEMM v5 is one tile per group as well: v4 (same bits, grid-strided) takes the grids it cannot
        Assert.That(GemmKernels.Runnable(GemmVersion.Reg128x8Prefetch, 128 * 65535, 65535), Is.EqualTo(GemmVersion.Reg128x8Prefetch));
        Assert.That(GemmKernels.Runnable(GemmVersion.Reg128x8Prefetch, 128 * 65535 + 1, 1), Is.EqualTo(GemmVersion.Reg128x8Vec));
        Assert.That(GemmKernels.Runnable(GemmVersion.Reg128x8Prefetch, 1, 65536), Is.EqualTo(GemmVersion.Reg128x8Vec));
        Assert.That(GemmKernels.Runnable(GemmVersion.Reg64x4, 1, 65536), Is.EqualTo(GemmVersion.Reg64x4));
    }

    [Test]
    public void EachLayoutCompilesToPtxForSm90WithLaunchBoundsAndNoLocalMemory()
    {
        using var c = new KernelAudit.PtxCompiler(7, 8);
        Assert.That(TensorCoreGemm.Kernel128x128Methods, Has.Count.EqualTo(4));
        foreach (var m in TensorCoreGemm.Kernel128x128Methods)
        {
            var ptx = c.Compile(KernelAudit.Entry(m));
            Assert.That(System.Text.RegularExpressions.Regex.Count(ptx, @"mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32"), Is.EqualTo(64),
                $"{m}: 4 m16 × 4 n8 × 2 k8 mma per stage, in the stage loop and in the general loop");
            Assert.That(ptx, Does.Not.Contain("bf16"), $"{m}: TF32 only");
            Assert.That(ptx, Does.Contain(".reg .f32 fvle<64>;"));
            Assert.That(ptx, Does.Not.Contain(".local"), $"{m}: no local memory");
            Assert.That(ptx, Does.Contain(".maxntid 256, 1, 1").And.Contain(".minnctapersm 2"), $"{m}: launch bounds (256, 2)");
            Assert.That(ptx, Does.Contain("ld.v4.f32"), $"{m}: 128-bit global loads");
            Assert.That(ptx, Does.Contain("st.shared.v4.u32").Or.Contain("st.shared.v4.b32"), $"{m}: 128-bit shared stores");
            var shared = System.Text.RegularExpressions.Regex.Matches(ptx, @"\.shared\s+(?:\.align\s+\d+\s+)?\.\w+\s+[\w$]+\[(\d+)\]")
                .Sum(x => int.Parse(x.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            Assert.That(shared, Is.EqualTo(TensorCoreGemm.Shared3Words * 4).And.LessThanOrEqualTo(48 * 1024), $"{m}: only the 40 KB stage buffers");
        }
    }
}
