using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>The offline kernel audit's parsing and compilation pieces (no GPU, no ptxas needed).</summary>
public class KernelAuditTests
{
    [Test]
    public void LocalBytesSumsThePtxLocalDeclarations()
    {
        const string ptx = ".version 8.8\n.target sm_80\n\t.local .align 4 .b8 __local_depot0[4];\n\t.local .align 8 .b8 __local_depot1[16];\n" +
            "\t.shared .align 4 .b8 sm0[1024];\n\tst.local.f32 [%rd1], %f1;\n";
        Assert.That(KernelAudit.LocalBytes(ptx), Is.EqualTo(20));
        Assert.That(KernelAudit.LocalBytes(".version 8.8\n\t.shared .align 4 .b8 s[64];\n"), Is.Zero);
    }

    [Test]
    public void CountSassCountsOpcodesIncludingPredicatedOnes()
    {
        const string sass = "        /*0000*/                   MOV R1, c[0x0][0x28] ;   /* 0x00000a0000017a02 */\n" +
            "        /*0010*/                   FFMA R4, R2, R3, R4 ;   /* 0x0000000302047223 */\n" +
            "        /*0020*/              @!P0 FFMA R5, R2, R3, R5 ;   /* 0x0000000302058223 */\n" +
            "        /*0030*/                   HMMA.1688.F32.TF32 R4, R8, R2, R4 ;   /* 0x000000020804723c */\n" +
            "        /*0040*/                   STL [R1], R4 ;   /* 0x0000000401007387 */\n" +
            "                                                   /* 0x000fe200078e00ff */\n";
        Assert.That(KernelAudit.CountSass(sass, null), Is.EqualTo(5));
        Assert.That(KernelAudit.CountSass(sass, "FFMA"), Is.EqualTo(2));
        Assert.That(KernelAudit.CountSass(sass, "HMMA"), Is.EqualTo(1));
        Assert.That(KernelAudit.CountSass(sass, "STL"), Is.EqualTo(1));
    }

    private static string Sass(params (int Address, string Text)[] lines)
        => string.Concat(lines.Select(l => $"        /*{l.Address:x4}*/                   {l.Text} ;   /* 0x0000000000000000 */\n" +
            "                                                   /* 0x000fe200078e00ff */\n"));

    /// <summary>
    /// Loops are backward branches; the hot loop is the most deeply nested one whose own code (nested loops excluded) has
    /// FFMA or HMMA (here an innermost one), and its enclosing loop's
    /// other instructions are reported separately. Layout: an outer loop 0x10–0xd0 holding a K-tile loader (LD, STS, BAR),
    /// one FFMA of its own and an inner loop 0x50–0x90 (3 FFMA, 1 LDS), a later innermost loop 0xe0–0x100 with 1 FFMA, and forward branches
    /// that are not loops.
    /// </summary>
    [Test]
    public void HotLoopIsTheInnermostLoopWithTheMostMath()
    {
        var sass = Sass(
            (0x00, "MOV R1, c[0x0][0x28]"),
            (0x10, "LD.E R2, [R4.64]"),
            (0x20, "@P0 BRA 0x40"),
            (0x30, "STS [R3], R2"),
            (0x40, "BAR.SYNC.DEFER_BLOCKING 0x0"),
            (0x50, "LDS.128 R8, [R5]"),
            (0x60, "FFMA R10, R8, R9, R10"),
            (0x70, "FFMA R11, R8, R9, R11"),
            (0x80, "@!P1 FFMA R12, R8, R9, R12"),
            (0x90, "@P2 BRA 0x50"),
            (0xa0, "BAR.SYNC.DEFER_BLOCKING 0x0"),
            (0xb0, "FFMA R14, R8, R9, R14"),
            (0xc0, "ISETP.GE.AND P3, PT, R6, R7, PT"),
            (0xd0, "@!P3 BRA 0x10"),
            (0xe0, "FFMA R13, R8, R9, R13"),
            (0xf0, "IADD3 R6, R6, 0x1, RZ"),
            (0x100, "@P4 BRA 0xe0"),
            (0x110, "BRA 0x130"),
            (0x120, "EXIT"));
        var l = KernelAudit.HotLoop(sass);
        Assert.That(l, Is.EqualTo(new SassLoop(Instructions: 5, Ffma: 3, Hmma: 0, SharedLoads: 1, SharedStores: 0, GlobalLoads: 0, Barriers: 0, EnclosingExtra: 8)));
        Assert.That(l!.MathShare, Is.EqualTo(0.6).Within(1e-12));
        // no loop with math: none reported; a loop without an enclosing one has no extra
        Assert.That(KernelAudit.HotLoop(Sass((0x00, "IADD3 R6, R6, 0x1, RZ"), (0x10, "@P0 BRA 0x0"), (0x20, "FFMA R1, R2, R3, R1"))), Is.Null);
        Assert.That(KernelAudit.HotLoop(Sass((0x00, "HMMA.1688.F32.TF32 R4, R8, R2, R4"), (0x10, "@P0 BRA 0x0")))!.EnclosingExtra, Is.Null);
        // spill traffic inside the hot loop is counted (LDL and STL), outside it is not
        var spilled = KernelAudit.HotLoop(Sass((0x00, "STL [R1], R4"), (0x10, "LDL R5, [R1+0x10]"), (0x20, "FFMA R1, R2, R3, R1"),
            (0x30, "LDL.LU R6, [R1]"), (0x40, "@P0 BRA 0x10"), (0x50, "STL [R1+0x4], R3")))!;
        Assert.That(spilled.LocalAccesses, Is.EqualTo(2));
        Assert.That(spilled.Instructions, Is.EqualTo(4));
    }

    /// <summary>Math unrolled into a loop that also holds another loop (a whole K tile, plus a staging loop that rarely runs):
    /// the K-tile loop is the hot one, counted without the nested loop's instructions, and it beats a shallower loop with
    /// more math of its own (a tile loop holding peeled copies). Between loops at the same depth, the one with more math
    /// wins, whether it holds other loops or not.</summary>
    [Test]
    public void HotLoopCountsUnrolledMathWithoutTheLoopsNestedInIt()
    {
        var sass = Sass(
            (0x00, "LDS.128 R8, [R5]"),
            (0x10, "FFMA R10, R8, R9, R10"),
            (0x20, "FFMA R11, R8, R9, R11"),
            (0x30, "FFMA R12, R8, R9, R12"),
            (0x40, "FFMA R13, R8, R9, R13"),
            (0x50, "ISETP.GE.AND P0, PT, R6, 0x100, PT"),
            (0x60, "@P0 BRA 0xa0"),
            (0x70, "LD.E R2, [R4.64]"),          // the staging loop: no math, not counted
            (0x80, "STS [R3], R2"),
            (0x90, "@P1 BRA 0x70"),
            (0xa0, "BAR.SYNC.DEFER_BLOCKING 0x0"),
            (0xb0, "@!P2 BRA 0x0"),
            (0xc0, "FFMA R14, R8, R9, R14"),     // the tile loop around it: more math of its own, but shallower
            (0xd0, "FFMA R15, R8, R9, R15"),
            (0xe0, "FFMA R16, R8, R9, R16"),
            (0xf0, "FFMA R17, R8, R9, R17"),
            (0x100, "FFMA R18, R8, R9, R18"),
            (0x110, "@P3 BRA 0x0"),
            (0x120, "EXIT"));
        var l = KernelAudit.HotLoop(sass);
        Assert.That(l, Is.EqualTo(new SassLoop(Instructions: 9, Ffma: 4, Hmma: 0, SharedLoads: 1, SharedStores: 0, GlobalLoads: 0, Barriers: 1,
            EnclosingExtra: 6, NestedLoops: 1)));
        Assert.That(l!.MathShare, Is.EqualTo(4.0 / 9).Within(1e-12));
        // same depth: the loop with more math of its own wins over an innermost one with less
        var same = KernelAudit.HotLoop(Sass(
            (0x00, "FFMA R10, R8, R9, R10"), (0x10, "FFMA R11, R8, R9, R11"), (0x20, "@P0 BRA 0x50"), (0x30, "LD.E R2, [R4.64]"),
            (0x40, "@P1 BRA 0x30"), (0x50, "@P2 BRA 0x0"),
            (0x60, "FFMA R14, R8, R9, R14"), (0x70, "@P3 BRA 0x60")));
        Assert.That(same, Is.EqualTo(new SassLoop(Instructions: 4, Ffma: 2, Hmma: 0, SharedLoads: 0, SharedStores: 0, GlobalLoads: 0, Barriers: 0,
            EnclosingExtra: null, NestedLoops: 1)));
    }

    [TestCase(11, 8, 7, 8)]
    [TestCase(12, 0, 8, 0)]
    [TestCase(12, 4, 8, 4)]
    [TestCase(12, 6, 8, 5)]
    [TestCase(12, 8, 8, 7)]
    [TestCase(12, 9, 8, 8)]
    [TestCase(13, 0, 8, 8)]
    public void IsaFollowsThePtxasRelease(int major, int minor, int isaMajor, int isaMinor)
        => Assert.That(KernelAudit.IsaFor(major, minor), Is.EqualTo((isaMajor, isaMinor)));

    [Test]
    public void PtxasOlderThanSm90IsRefusedByName()
    {
        var e = Assert.Throws<NotSupportedException>(() => KernelAudit.IsaFor(11, 4))!;
        Assert.That(e.Message, Does.Contain("11.4").And.Contain("sm_90"));
    }

    [Test]
    public void AMissingPtxasPathIsNamed()
    {
        var e = Assert.Throws<FileNotFoundException>(() => KernelAudit.FindPtxas("/nonexistent/ptxas"))!;
        Assert.That(e.Message, Does.Contain("/nonexistent/ptxas"));
    }

    [Test]
    public void NamesShowGenericArguments()
    {
        var m = typeof(ElementwiseKernels).GetMethod("Map")!.MakeGenericMethod(typeof(float), typeof(float), typeof(UnaryOps.Gelu));
        Assert.That(KernelAudit.NameOf(m), Is.EqualTo("ElementwiseKernels.Map<Single,Single,UnaryOps.Gelu>"));
        Assert.That(KernelAudit.NameOf(TensorCoreGemm.KernelMethod()), Is.EqualTo("TensorCoreGemm.Kernel"));
        Assert.That(KernelAudit.NameOf(TensorCoreGemm.KernelMethod(TensorCoreTile.Tile128x64)), Is.EqualTo("TensorCoreGemm.Kernel128"));
    }

    /// <summary>The 128×128 SGEMMs are compiled with __launch_bounds__(256, 2) for CUDA (≤ 128 registers: two groups per SM);
    /// the smaller versions get none.</summary>
    [Test]
    public void The128TileGemmsCarryLaunchBoundsInTheirPtx()
    {
        using var c = new KernelAudit.PtxCompiler();
        foreach (var v in GemmKernels.Versions)
        {
            var ptx = c.Compile(KernelAudit.Entry(GemmKernels.KernelMethod(v)));
            bool bounded = v is GemmVersion.Reg128x8Vec or GemmVersion.Reg128x8Prefetch or GemmVersion.Reg128x8Layout;
            Assert.That(ptx.Contains(".maxntid 256, 1, 1", StringComparison.Ordinal), Is.EqualTo(bounded), v.ToString());
            Assert.That(ptx.Contains(".minnctapersm 2", StringComparison.Ordinal), Is.EqualTo(bounded), v.ToString());
        }
        Assert.That(GemmKernels.CudaLaunchBounds(GemmKernels.Best).MaxNumThreadsPerGroup, Is.EqualTo(GemmKernels.GpuGroupSize));
    }

    /// <summary>The tensor-core GEMM's 128×64 tile gets (256, 2) through the audit's lookup as through its loader; 64×32 none.</summary>
    [Test]
    public void TheTensorCoreTilesCarryTheirLaunchBounds()
    {
        using var c = new KernelAudit.PtxCompiler();
        foreach (var tile in TensorCoreGemm.Tiles)
        {
            var ptx = c.Compile(KernelAudit.Entry(TensorCoreGemm.KernelMethod(tile)));
            bool bounded = tile == TensorCoreTile.Tile128x64;
            Assert.That(ptx.Contains(".maxntid 256, 1, 1", StringComparison.Ordinal), Is.EqualTo(bounded), tile.ToString());
            Assert.That(ptx.Contains(".minnctapersm 2", StringComparison.Ordinal), Is.EqualTo(bounded), tile.ToString());
            Assert.That(KernelAudit.CudaLaunchBounds(TensorCoreGemm.KernelMethod(tile)), Is.EqualTo(TensorCoreGemm.CudaLaunchBounds(tile)));
        }
        // the 128×128 tiles (one GEMM kernel per layout, one conv kernel): (256, 2), through the audit's lookup as through the loaders
        foreach (var m in TensorCoreGemm.Kernel128x128Methods.Append(ConvKernels.TensorCoreKernelMethodFor(TensorCoreTile.Tile128x128)))
        {
            var ptx = c.Compile(KernelAudit.Entry(m));
            Assert.That(ptx, Does.Contain(".maxntid 256, 1, 1").And.Contain(".minnctapersm 2"), m.ToString());
            Assert.That(KernelAudit.CudaLaunchBounds(m), Is.EqualTo(TensorCoreGemm.CudaLaunchBounds(TensorCoreTile.Tile128x128)), m.ToString());
        }
    }

    [Test]
    public void PtxIsaFollowsTheCompilerSetting()
    {
        using var c = new KernelAudit.PtxCompiler(7, 8);
        Assert.That(c.Compile(KernelAudit.Entry(TensorCoreGemm.KernelMethod())), Does.Contain(".version 7.8"));
    }
}
