using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The prefetching implicit-GEMM convolutions v3 (<see cref="ConvVersion.Tile128Prefetch"/>) and v4
/// (<see cref="ConvVersion.Tile64Prefetch"/>) on ILGPU's CPU accelerator (bounds-checked views, outputs poisoned with NaN):
/// every mode (forward with and without bias, backward-input, backward-weight with the bias gradient, split-K explicit and
/// automatic) at awkward shapes, <b>bitwise</b> equal to v1 and v2 (every version accumulates each output as one chain of
/// float multiply-adds over k ascending, so the bits must agree) and close to the CPU backend (an independent im2col GEMM).
/// Group sizes 2 (the fixture), 8, 16 and 64 run the prefetch path (slots 0..n−1) and the direct staging of the remaining
/// slots in every proportion (64 threads: v4 prefetches every slot), and 256 (v3 prefetches every slot).
/// </summary>
[TestFixture, Category("Cuda")]
public class ConvPrefetchTests() : EmulatorKernelTestBase(assertions: true)
{
    /// <summary>Which results <see cref="Run"/> computes (the emulator's 128-tile passes are slow: a case runs what it is for).</summary>
    [Flags]
    private enum Parts
    {
        Forward = 1, BackwardInput = 2, BackwardWeight = 4, Split3 = 8, SplitAuto = 16,
        Unsplit = Forward | BackwardInput | BackwardWeight, All = Unsplit | Split3 | SplitAuto,
    }

    private sealed record Case(int Batch, int Cin, int H, int W, int Cout, int Kh, int Kw, Conv2dParams P, Parts Parts = Parts.All)
    {
        public (int Ho, int Wo) Out => ConvKernels.OutputSize(H, W, Kh, Kw, P);
        public override string ToString() => $"x [{Batch},{Cin},{H},{W}] w [{Cout},{Cin},{Kh},{Kw}] {P}";
    }

    /// <summary>Inputs of one case and the CPU backend's results on them.</summary>
    private sealed class Data
    {
        public float[] X = [], Wt = [], B = [], Gy = [], Y = [], YNoBias = [], Gx = [], Gw = [], Gb = [];
    }

    private static Data Make(Case c, ulong seed)
    {
        var (ho, wo) = c.Out;
        using var x = OpCheck.Rand([c.Batch, c.Cin, c.H, c.W], seed, DType.Float32);
        using var wt = OpCheck.Rand([c.Cout, c.Cin, c.Kh, c.Kw], seed + 1, DType.Float32);
        using var b = OpCheck.Rand([c.Cout], seed + 2, DType.Float32);
        using var gy = OpCheck.Rand([c.Batch, c.Cout, ho, wo], seed + 3, DType.Float32);
        using var y = Tensor.Empty([c.Batch, c.Cout, ho, wo]);
        using var y0 = Tensor.Empty([c.Batch, c.Cout, ho, wo]);
        using var gx = Tensor.Empty([c.Batch, c.Cin, c.H, c.W]);
        using var gw = Tensor.Empty([c.Cout, c.Cin, c.Kh, c.Kw]);
        using var gb = Tensor.Empty([c.Cout]);
        Cpu.Conv2dForward(x, wt, b, y, c.P);
        Cpu.Conv2dForward(x, wt, null, y0, c.P);
        Cpu.Conv2dBackwardInput(gy, wt, gx, c.P);
        Cpu.Conv2dBackwardWeight(x, gy, gw, gb, c.P);
        return new Data
        {
            X = x.ToArray<float>(), Wt = wt.ToArray<float>(), B = b.ToArray<float>(), Gy = gy.ToArray<float>(),
            Y = y.ToArray<float>(), YNoBias = y0.ToArray<float>(), Gx = gx.ToArray<float>(), Gw = gw.ToArray<float>(), Gb = gb.ToArray<float>(),
        };
    }

    /// <summary>What one version computes: forward with bias, forward without, backward-input, backward-weight (+ bias gradient)
    /// unsplit, with 3 explicit splits, and with the launcher's own split count (splits 0, a workspace of 8 partials).</summary>
    private sealed record Outputs(float[]? Y, float[]? YNoBias, float[]? Gx, float[]? Gw, float[]? Gb, float[]? GwSplit3, float[]? GwSplitAuto,
        bool WorkspaceUsed);

    private static Outputs Run(Accelerator acc, Case c, Data d, ConvVersion v)
    {
        var (ho, wo) = c.Out;
        int ny = c.Batch * c.Cout * ho * wo, nx = c.Batch * c.Cin * c.H * c.W, nw = c.Cout * c.Cin * c.Kh * c.Kw;
        using var dx = Up(acc, d.X);
        using var dw = Up(acc, d.Wt);
        using var db = Up(acc, d.B);
        using var dgy = Up(acc, d.Gy);
        using var y = Poisoned(acc, ny);
        using var y0 = Poisoned(acc, ny);
        using var gx = Poisoned(acc, nx);
        using var gw = Poisoned(acc, nw);
        using var gb = Poisoned(acc, c.Cout);
        using var gw3 = Poisoned(acc, nw);
        using var gwA = Poisoned(acc, nw);
        using var ws = Poisoned(acc, 8L * nw);
        bool F(Parts p) => (c.Parts & p) != 0;
        if (F(Parts.Forward))
        {
            ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, db.View, y.View, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v);
            ConvKernels.Conv2dForward(acc, null, dx.View, dw.View, default, y0.View, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v);
        }
        if (F(Parts.BackwardInput))
            ConvKernels.Conv2dBackwardInput(acc, null, dgy.View, dw.View, gx.View, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v);
        if (F(Parts.BackwardWeight))
            ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, gw.View, gb.View, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v);
        if (F(Parts.Split3))
            ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, gw3.View, default, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v,
                ws.View.SubView(0, 3L * nw), 3);
        if (F(Parts.SplitAuto))
            ConvKernels.Conv2dBackwardWeight(acc, null, dx.View, dgy.View, gwA.View, default, c.Batch, c.Cin, c.H, c.W, c.Cout, c.Kh, c.Kw, c.P, v, ws.View, 0);
        acc.Synchronize();
        float[]? H(MemoryBuffer1D<float, Stride1D.Dense> buf, int n, Parts p) => F(p) ? buf.GetAsArray1D()[..n] : null;
        return new Outputs(H(y, ny, Parts.Forward), H(y0, ny, Parts.Forward), H(gx, nx, Parts.BackwardInput), H(gw, nw, Parts.BackwardWeight),
            H(gb, c.Cout, Parts.BackwardWeight), H(gw3, nw, Parts.Split3), H(gwA, nw, Parts.SplitAuto), !float.IsNaN(ws.GetAsArray1D()[0]));
    }

    private static void SameBits(float[]? got, float[]? want, string what)
    {
        Assert.That(got is null, Is.EqualTo(want is null), what + ": computed on one side only");
        if (got is null || want is null) return;
        Assert.That(got, Has.Length.EqualTo(want.Length), what);
        for (int i = 0; i < got.Length; i++)
            if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]))
                Assert.Fail($"{what}: element {i} is {got[i]:R}, the reference version gave {want[i]:R} (bits differ)");
    }

    /// <summary>Every output of <paramref name="got"/> bitwise as <paramref name="want"/>; the automatic split only when both
    /// versions have the same tile (the split count follows the tile).</summary>
    private static void SameBits(Outputs got, Outputs want, bool sameTile, string what)
    {
        SameBits(got.Y, want.Y, what + " forward + bias");
        SameBits(got.YNoBias, want.YNoBias, what + " forward");
        SameBits(got.Gx, want.Gx, what + " backward input");
        SameBits(got.Gw, want.Gw, what + " backward weight");
        SameBits(got.Gb, want.Gb, what + " bias gradient");
        SameBits(got.GwSplit3, want.GwSplit3, what + " backward weight, 3 splits");
        if (sameTile) SameBits(got.GwSplitAuto, want.GwSplitAuto, what + " backward weight, automatic split");
    }

    private static void CloseToCpu(Case c, Data d, Outputs o, string what)
    {
        var (ho, wo) = c.Out;
        // float32 sums of K products of values in [-1, 1]: the absolute error grows with the length (as ConvKernelTests)
        int kFwd = c.Cin * c.Kh * c.Kw, kBi = c.Cout * c.Kh * c.Kw, kBw = c.Batch * ho * wo;
        void Close(float[]? got, float[] want, int k, string part)
        {
            if (got is not null) OpCheck.AssertClose(D(got), D(want), 1e-5, 1e-6 + 2e-7 * k, $"{what} {part}");
        }
        Close(o.Y, d.Y, kFwd, "forward + bias");
        Close(o.YNoBias, d.YNoBias, kFwd, "forward");
        Close(o.Gx, d.Gx, kBi, "backward input");
        Close(o.Gw, d.Gw, kBw, "backward weight");
        Close(o.Gb, d.Gb, kBw, "bias gradient");
        Close(o.GwSplit3, d.Gw, kBw, "backward weight, 3 splits");
        Close(o.GwSplitAuto, d.Gw, kBw, "backward weight, automatic split");
    }

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (int tile in new[] { 128, 64 })
        {
            // ResNet's stem in small: 7×7 stride 2 pad 3, forward K = 2·49 = 98 = 12 tiles of 8 + 2 (a partial last tile, many
            // tiles), backward-input K = 3·49 = 147
            yield return new TestCaseData(new Case(1, 2, 9, 8, 3, 7, 7, Conv2dParams.Symmetric(2, 3)), 10ul, tile).SetName($"Stem7x7Stride2Pad3 tile {tile}");
            // 1×1 stride 2 with forward K = 5 (one partial K tile), M = 67 (two 64 tiles), N = 2·4·5 = 40
            yield return new TestCaseData(new Case(2, 5, 7, 9, 67, 1, 1, Conv2dParams.Symmetric(2, 0)), 20ul, tile).SetName($"Pointwise1x1Stride2OffTileM tile {tile}");
            // M = 129 (two 128 tiles, three 64 tiles), N = 11·12 = 132 (two 128 tiles, three 64 tiles), forward K = 1 (a K tile of one
            // row); the splits are left to the other cases (K 129 and 132 make them slow on the emulator)
            yield return new TestCaseData(new Case(1, 1, 11, 12, 129, 1, 1, Conv2dParams.Symmetric(1, 0), Parts.Unsplit), 30ul, tile)
                .SetName($"SeveralTilesBothWaysK1 tile {tile}");
            // dilation 2, stride (1, 2), asymmetric padding (1,0,2,1), 2×3 taps: forward K = 4·6 = 24 (3 full K tiles)
            yield return new TestCaseData(new Case(1, 4, 9, 10, 9, 2, 3, new Conv2dParams(1, 2, 1, 0, 2, 1, 2, 2)), 40ul, tile).SetName($"Dilation2AsymmetricPadding tile {tile}");
            // stride 1 with an output plane smaller than the input (Ho 7 ≠ H 9, Wo 7 ≠ W 8: dilation 2, asymmetric padding): the
            // folded gathers of all three GEMMs, backward-input's with the output plane's width and bounds (forward K = 3·6 = 18:
            // a partial last K tile; backward-input K = 5·6 = 30, N = 2·72 = 144; backward-weight K = 98)
            yield return new TestCaseData(new Case(2, 3, 9, 8, 5, 3, 2, new Conv2dParams(1, 1, 0, 2, 1, 0, 2, 2), Parts.Unsplit | Parts.Split3), 60ul, tile)
                .SetName($"Stride1SmallerOutputPlane tile {tile}");
            // backward-weight K = 2·16·16 = 512: the automatic split runs (2 chunks of 256 rows, 32 K tiles each); only that result
            yield return new TestCaseData(new Case(2, 1, 18, 18, 2, 3, 3, Conv2dParams.Symmetric(1, 0), Parts.SplitAuto), 55ul, tile)
                .SetName($"DeepKAutomaticSplit tile {tile}");
        }
    }

    /// <summary>v3 against v2 (tile 128) or v4 against v1 (tile 64), bitwise, and against the CPU backend.</summary>
    [TestCaseSource(nameof(Cases))]
    public void BitwiseAsTheUnprefetchedVersionOfItsTile(object boxed, ulong seed, int tile)
    {
        var c = (Case)boxed;
        var d = Make(c, seed);
        var (fresh, old) = tile == 128 ? (ConvVersion.Tile128Prefetch, ConvVersion.Tile128) : (ConvVersion.Tile64Prefetch, ConvVersion.Tile64);
        var got = Run(Acc, c, d, fresh);
        if (c.Parts == Parts.SplitAuto) Assert.That(got.WorkspaceUsed, Is.True, "the automatic split did not run (the workspace still holds its poison)");
        CloseToCpu(c, d, got, $"{fresh} {c}");
        SameBits(got, Run(Acc, c, d, old), sameTile: true, $"{fresh} vs {old} {c}");
    }

    /// <summary>v3 against v4 (the two tiles of the generic kernel, different split counts aside): with the two tests above,
    /// all four versions agree bit for bit.</summary>
    [Test]
    public void TheTwoTilesAgreeBitwise()
    {
        var c = new Case(2, 3, 7, 6, 70, 1, 2, new Conv2dParams(1, 2, 1, 1, 0, 1));   // M 70: two 64 tiles, one 128 tile
        var d = Make(c, 80);
        SameBits(Run(Acc, c, d, ConvVersion.Tile128Prefetch), Run(Acc, c, d, ConvVersion.Tile64Prefetch), sameTile: false, $"v3 vs v4 {c}");
    }

    /// <summary>Group sizes 8, 16 and 64 (warp × warps): the share of slots prefetched into registers vs staged directly changes (v3 owns
    /// 8/16/64 of 256 slots, v4 8/16/64 of 64), and so do the passes over the micro-tiles; the bits must not.</summary>
    [TestCase(2, 4)]
    [TestCase(4, 4)]
    [TestCase(16, 4)]
    public void AnyGroupSizeGivesTheSameBits(int warp, int warps)
    {
        var c = new Case(1, 3, 5, 6, 20, 2, 2, new Conv2dParams(2, 1, 1, 0, 0, 1));   // forward K = 12 (2 tiles, last partial), M = 20
        var d = Make(c, 60);
        var want3 = Run(Acc, c, d, ConvVersion.Tile128);
        var want4 = Run(Acc, c, d, ConvVersion.Tile64);
        using var acc = new CPUDevice(warp, warps, 1).CreateCPUAccelerator(Ctx, CPUAcceleratorMode.Parallel);
        // K of backward-weight is too shallow to split automatically, so the device's multiprocessor count does not matter
        SameBits(Run(acc, c, d, ConvVersion.Tile128Prefetch), want3, sameTile: true, $"v3 group {warp}×{warps} vs v2 on 2 threads");
        SameBits(Run(acc, c, d, ConvVersion.Tile64Prefetch), want4, sameTile: true, $"v4 group {warp}×{warps} vs v1 on 2 threads");
    }

    /// <summary>
    /// Infinities in x and gy keep their bits: the K rows past the range (a partial last K tile in all three GEMMs here) must
    /// contribute B = 0, not an input element, or 0·∞ = NaN replaces the ±∞ that v1/v2 give where a valid row reads the
    /// infinity (the folded tables' invalid rows point nowhere; with ordinary finite inputs a wrong B there only adds ±0).
    /// </summary>
    [Test]
    public void InfinitiesInTheInputsKeepTheirBits()
    {
        // forward K = 3·2·2 = 12, backward-input K = 5·4 = 20, backward-weight K = 4·5 = 20: each ends in a partial K tile
        var c = new Case(1, 3, 5, 6, 5, 2, 2, Conv2dParams.Symmetric(1, 0), Parts.Unsplit);
        var d = Make(c, 95);
        d.X[0] = float.PositiveInfinity;                  // x[0, 0, 0, 0]: the first element of every column's first tap
        d.Gy[0] = float.PositiveInfinity;                 // gy[0, 0, 0, 0]
        foreach (var (fresh, old) in new[] { (ConvVersion.Tile128Prefetch, ConvVersion.Tile128), (ConvVersion.Tile64Prefetch, ConvVersion.Tile64) })
        {
            var want = Run(Acc, c, d, old);
            Assert.That(want.Y!.Count(float.IsInfinity), Is.GreaterThan(0), "the reference has infinite outputs");
            Assert.That(want.Y!.Concat(want.Gx!).Concat(want.Gw!).Any(float.IsNaN), Is.False, "the reference has no NaN (one infinity per sum)");
            SameBits(Run(Acc, c, d, fresh), want, sameTile: true, $"{fresh} vs {old} with infinities");
        }
    }

    /// <summary>A GPU's group shape: 256 threads for v3 (every slot prefetched, one pass), 64 for v4 (the launcher's size).</summary>
    [Test]
    public void GpuGroupShapeGivesTheSameBits()
    {
        using var ctx = Context.Create(b => b.CPU(new CPUDevice(32, 8, 1)).EnableAlgorithms().Assertions());
        using var acc = ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        var c = new Case(1, 3, 6, 5, 4, 3, 3, new Conv2dParams(2, 1, 0, 1, 1, 1));   // as ConvKernelTests' 256-thread case
        var d = Make(c, 90);
        SameBits(Run(acc, c, d, ConvVersion.Tile128Prefetch), Run(Acc, c, d, ConvVersion.Tile128), sameTile: true, "v3, 256 threads, vs v2 on 2 threads");
        SameBits(Run(acc, c, d, ConvVersion.Tile64Prefetch), Run(Acc, c, d, ConvVersion.Tile64), sameTile: true, "v4, 64 threads, vs v1 on 2 threads");
    }

    [Test]
    public void AutoRunsTheNewVersionsWithTheSameBits()
    {
        // Auto on this 2-multiprocessor device: M 130 has two 128 tiles (v3), M 2 one 64 tile (v4)
        Assert.That(ConvKernels.Choose(Acc, 130, 9), Is.EqualTo(ConvVersion.Tile128Prefetch));
        Assert.That(ConvKernels.Choose(Acc, 2, 9), Is.EqualTo(ConvVersion.Tile64Prefetch));
        Assert.That(ConvKernels.Choose(Acc, 96, 1), Is.EqualTo(ConvVersion.Tile128Prefetch), "M ≥ 96 takes v3 even with one 128 tile");
        Assert.That(ConvKernels.Choose(Acc, 95, 1 << 20), Is.EqualTo(ConvVersion.Tile64Prefetch), "M < 96 takes v4 however many tiles");
        var c = new Case(1, 2, 3, 3, 130, 1, 1, Conv2dParams.Symmetric(1, 0));
        var d = Make(c, 70);
        var auto = Run(Acc, c, d, ConvVersion.Auto);
        // forward and backward-weight M = 130: v3 = v2's bits; backward-input M = 2: v4 = v1's bits
        var v1 = Run(Acc, c, d, ConvVersion.Tile64);
        var v2 = Run(Acc, c, d, ConvVersion.Tile128);
        SameBits(auto.Y, v2.Y, "auto forward");
        SameBits(auto.Gx, v1.Gx, "auto backward input");
        SameBits(auto.Gw, v2.Gw, "auto backward weight");
        SameBits(auto.Gb, v2.Gb, "auto bias gradient");
    }

    /// <summary>Backward-weight with a workspace splits K: then the 128 tile whenever M ≥ 96 (and K holds two chunks of 256),
    /// and the split count is sized for it; without a workspace the plain rule.</summary>
    [Test]
    public void BackwardWeightTakesThe128TileWhenItMaySplit()
    {
        int mps = Acc.NumMultiprocessors;
        // M 96 × N 27 is one tile of either size: fewer than the device's multiprocessors only matters for Choose
        Assert.That(ConvKernels.ChooseBackwardWeight(Acc, 96, 27, 4096, canSplit: true), Is.EqualTo(ConvVersion.Tile128Prefetch));
        Assert.That(ConvKernels.ChooseBackwardWeight(Acc, 95, 27, 4096, canSplit: true), Is.EqualTo(ConvVersion.Tile64Prefetch));
        Assert.That(ConvKernels.ChooseBackwardWeight(Acc, 96, 27, 511, canSplit: true), Is.EqualTo(ConvKernels.Choose(Acc, 96, 27)));
        Assert.That(ConvKernels.ChooseBackwardWeight(Acc, 96, 27, 4096, canSplit: false), Is.EqualTo(ConvKernels.Choose(Acc, 96, 27)));
        // the workspace the rule asks for: one 128 tile → min(2·MPs, K/256) chunks (v1/v4's two 64 tiles would ask for half)
        var p = Conv2dParams.Symmetric(1, 1);
        long want = Math.Min(2L * mps, 4 * 32 * 32 / 256);
        Assert.That(ConvKernels.BackwardWeightWorkspace(Acc, 4, 3, 32, 32, 96, 3, 3, p), Is.EqualTo(want < 2 ? 0 : want * 96 * 27));
        Assert.That(ConvKernels.BackwardWeightWorkspace(Acc, 4, 3, 32, 32, 96, 3, 3, p, ConvVersion.Tile64Prefetch),
            Is.EqualTo(Math.Min(mps, 16) < 2 ? 0 : Math.Min(mps, 16) * 96 * 27));   // two 64 tiles: 2·MPs / 2 chunks
    }

    [Test]
    public void AnUnknownVersionIsRefused()
    {
        using var buf = Acc.Allocate1D<float>(64);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ConvKernels.Conv2dForward(Acc, null, buf.View, buf.View, default, buf.View,
            1, 1, 2, 2, 1, 1, 1, Conv2dParams.Symmetric(1, 0), (ConvVersion)9))!;
        Assert.That(e.Message, Does.Contain("unknown version"));
    }

    /// <summary>sm_90 PTX as `fashionvil bench ptx` compiles it: launch bounds (256, 2) for v3 and (64, 8) for v4, no local
    /// memory, 128-bit shared loads (the float4 operands and the packed table entries), shared memory within 48 KiB.</summary>
    [Test]
    public void CompilesToPtxWithLaunchBoundsAndNoLocalMemory()
    {
        using var c = new KernelAudit.PtxCompiler(7, 8);
        // (the last term: the K-row refill's digits, 8 slots and the step, 16 bytes each)
        foreach (var (v, threads, groups, smem) in new[] { (ConvVersion.Tile128Prefetch, 256, 2, 2 * 8 * 132 * 4 + 2 * 8 * 128 * 4 + 128 * 16 + 16 * 16 + 9 * 16),
                     (ConvVersion.Tile64Prefetch, 64, 8, 2 * 8 * 68 * 4 + 2 * 8 * 64 * 4 + 64 * 16 + 16 * 16 + 9 * 16) })
        {
            var method = ConvKernels.KernelMethod(v);
            Assert.That(ConvKernels.KernelMethods.Select(k => k.Method), Does.Contain(method), $"{v}: not in KernelMethods (bench ptx)");
            Assert.That(KernelAudit.CudaLaunchBounds(method), Is.EqualTo(ConvKernels.CudaLaunchBounds(v)), $"{v}: the audit's bounds");
            var ptx = c.Compile(KernelAudit.Entry(method));
            if ((Environment.GetEnvironmentVariable("FVL_DUMP_PTX") ?? Environment.GetEnvironmentVariable("FVL_PTX_DUMP")) is { Length: > 0 } dir)
                File.WriteAllText(Path.Combine(dir, $"conv_{v}.ptx"), ptx);
            Assert.That(ptx, Does.Contain($".maxntid {threads}, 1, 1").And.Contain($".minnctapersm {groups}"), $"{v}: launch bounds");
            Assert.That(ptx, Does.Not.Contain(".local"), $"{v}: local memory");
            Assert.That(ptx, Does.Match(@"ld\.shared\.v4\.f32"), $"{v}: no 128-bit shared operand load");
            var shared = System.Text.RegularExpressions.Regex.Matches(ptx, @"\.shared\s+(?:\.align\s+\d+\s+)?\.\w+\s+[\w$]+\[(\d+)\]")
                .Sum(m => int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            Assert.That(shared, Is.EqualTo(smem).And.LessThanOrEqualTo(48 * 1024), $"{v}: shared bytes");
        }
        // v1 and v2 keep no bounds
        Assert.That(ConvKernels.CudaLaunchBounds(ConvVersion.Tile64), Is.EqualTo(default(KernelSpecialization)));
        Assert.That(ConvKernels.CudaLaunchBounds(ConvVersion.Tile128), Is.EqualTo(default(KernelSpecialization)));
    }
}
