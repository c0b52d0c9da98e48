using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The deterministic CUDA embedding backward (rank / plan / sum kernels) on ILGPU's CPU accelerator: bit for bit equal to
/// the CPU backend (ascending source order, gWeight[id] ← ((gWeight[id] + gy[j1]) + gy[j2]) + …) and to a plain float loop
/// written here, on awkward shapes, through both the light and the heavy (shared-memory tile) paths, with garbage in the
/// scratch, run twice.
/// </summary>
[TestFixture, Category("Cuda")]
public class EmbeddingBackwardTests() : EmulatorKernelTestBase(assertions: true, multiWarp: true, NormIndexKernelTests.CudaVariable)
{
    /// <summary>Ids with Zipf-like repeats: a few ids dozens of times (like [CLS]/[SEP]), most once or twice.</summary>
    private static long[] ZipfIds(int n, int v, ulong seed)
    {
        var r = new Random((int)seed);
        return Enumerable.Range(0, n).Select(_ =>
        {
            double u = r.NextDouble();
            return u < 0.15 ? 1L : u < 0.25 ? 2L : u < 0.3 ? 0L : (long)r.Next(v);
        }).ToArray();
    }

    /// <summary>gy rows with magnitudes spread over 2⁻⁶..2⁶, so that a different summation order changes the bits.</summary>
    private static float[] Grad(int n, int d, ulong seed)
    {
        var r = new Random((int)seed);
        var g = new float[n * d];
        for (int i = 0; i < g.Length; i++) g[i] = (float)((r.NextDouble() * 2 - 1) * Math.Pow(2, r.Next(-6, 7)));
        return g;
    }

    /// <summary>The reference written out: ascending j, one float add at a time, skipping padding and out-of-range ids.</summary>
    private static float[] Reference(long[] ids, float[] gy, float[] w0, int v, int d, int paddingIdx, bool descending = false)
    {
        var w = (float[])w0.Clone();
        int n = ids.Length;
        for (int t = 0; t < n; t++)
        {
            int i = descending ? n - 1 - t : t;
            long id = ids[i];
            if (id == paddingIdx || id < 0 || id >= v) continue;
            for (int c = 0; c < d; c++) w[id * d + c] += gy[(long)i * d + c];
        }
        return w;
    }

    /// <summary>The CPU backend on the rows the device keeps (it throws on out-of-range ids; the device skips them).</summary>
    private static float[] CpuBackend(long[] ids, float[] gy, float[] w0, int v, int d, int paddingIdx)
    {
        var keep = Enumerable.Range(0, ids.Length).Where(i => ids[i] >= 0 && ids[i] < v).ToArray();
        using var w = Tensor.FromArray((float[])w0.Clone(), [v, d]);
        if (keep.Length > 0)
        {
            using var it = Tensor.FromArray(keep.Select(i => ids[i]).ToArray(), [keep.Length]);
            using var gt = Tensor.FromArray(keep.SelectMany(i => gy.Skip(i * d).Take(d)).ToArray(), [keep.Length, d]);
            Cpu.EmbeddingBackward(it, gt, w, paddingIdx);
        }
        return w.ToArray<float>();
    }

    private static float[] Run(Accelerator acc, long[] ids, float[] gy, float[] w0, int v, int d, int paddingIdx,
        int heavyMin = 0, int adders = 0, int scratchFill = unchecked((int)0xDEADBEEF))
    {
        int n = ids.Length;
        using var bids = UpL(acc, ids); using var bgy = Up(acc, gy); using var bw = Up(acc, w0);
        var junk = new int[IndexKernels.EmbeddingScratch(n)];
        var r = new Random(scratchFill);
        for (int i = 0; i < junk.Length; i++) junk[i] = scratchFill == 0 ? 0 : r.Next(int.MinValue, int.MaxValue);
        using var scratch = acc.Allocate1D(junk);
        IndexKernels.EmbeddingBackward(acc, null, bids.View, bgy.View, bw.View, scratch.View, n, d, v, paddingIdx, heavyMin: heavyMin, adders: adders);
        acc.Synchronize();
        return bw.GetAsArray1D().Take(v * d).ToArray();
    }

    private static int[] Bits(float[] a) => a.Select(BitConverter.SingleToInt32Bits).ToArray();

    private void Check(long[] ids, int v, int d, int paddingIdx, string tag, Accelerator? acc = null, int heavyMin = 0, int adders = 0)
    {
        int n = ids.Length;
        var gy = Grad(n, d, (ulong)(n * 31 + d));
        var w0 = Grad(v, d, (ulong)(v * 17 + d + 1));   // accumulated into, not overwritten
        var want = Reference(ids, gy, w0, v, d, paddingIdx);
        Assert.That(Bits(CpuBackend(ids, gy, w0, v, d, paddingIdx)), Is.EqualTo(Bits(want)), tag + ": the CPU backend sums in ascending order");
        var got = Run(acc ?? Acc, ids, gy, w0, v, d, paddingIdx, heavyMin, adders);
        Assert.That(Bits(got), Is.EqualTo(Bits(want)), tag + ": bitwise equal to the ascending-order sums");
    }

    [Test]
    public void ZipfIdsAreBitwiseEqualToTheCpuBackend([Values(-1, 0, 2)] int paddingIdx)
    {
        // d = 45: two column slices of 32, the second 13 wide; ids 1 and 2 repeat ≥ 16 times (heavy), the rest are light
        var ids = ZipfIds(150, 37, 5);
        Assert.That(ids.Count(x => x == 1), Is.GreaterThanOrEqualTo(IndexKernels.EmbHeavyMin), "the test reaches the heavy path");
        Check(ids, 37, 45, paddingIdx, $"padding {paddingIdx}");
    }

    [Test]
    public void TheOrderMattersForTheseInputs()
    {
        // the test data is sensitive: summing the same rows in descending order changes bits (else bitwise tests prove little)
        var ids = ZipfIds(150, 37, 5);
        var gy = Grad(150, 45, 150 * 31 + 45);
        var w0 = Grad(37, 45, 37 * 17 + 46);
        var asc = Bits(Reference(ids, gy, w0, 37, 45, -1));
        var desc = Bits(Reference(ids, gy, w0, 37, 45, -1, descending: true));
        int differ = asc.Zip(desc).Count(p => p.First != p.Second);
        Assert.That(differ, Is.GreaterThan(45), "descending order gives other bits in many elements");
    }

    [Test]
    public void AllIdsEqualRunThroughSeveralTiles([Values(-1, 0)] int paddingIdx)
    {
        // 300 rows of one id (token types): heavy, three 128-row tiles (the last partial); d = 33 (a 1-column second slice)
        var ids = Enumerable.Repeat(1L, 300).ToArray();
        Check(ids, 3, 33, paddingIdx, "one id");
    }

    [Test]
    public void AllIdsArePaddingOrOutOfRange()
    {
        long[] ids = [0, 0, -1, 7, 0, long.MaxValue, long.MinValue, 0];
        Check(ids, 7, 5, 0, "nothing to add: gWeight unchanged");
        Check([3, -4, 9, 3, 2, 100, 3], 7, 5, 0, "a mix of valid and out-of-range ids");
    }

    [Test]
    public void SingleTokenAndSingleColumn()
    {
        Check([4], 6, 7, -1, "N = 1");
        Check([4], 6, 7, 4, "N = 1, the padding id");
        Check([2, 0, 2, 2, 1], 3, 1, -1, "D = 1");
    }

    [Test]
    public void EveryHeavyOrEveryLightGivesTheSameBits([Values(1, 2, 1000)] int heavyMin)
    {
        // heavyMin 1: every id goes through the tiles; 1000: none does
        var ids = ZipfIds(90, 23, 9);
        Check(ids, 23, 37, 0, $"heavyMin {heavyMin}", heavyMin: heavyMin);
    }

    [Test]
    public void SplitLoadersAndAddersOnMultiWarpGroups([Values(0, 1, 3, 7)] int adders)
    {
        // 8-thread groups (4 warps of 2): adders < 8 makes the other threads pure loaders, as 32 adders do on the GPU
        var ids = ZipfIds(140, 19, 11).Concat(Enumerable.Repeat(5L, 200)).ToArray();
        Check(ids, 19, 41, 0, $"adders {adders}", Multi, heavyMin: 4, adders: adders);
    }

    [Test]
    public void OneLoaderOneAdderOnTwoThreadGroups()
    {
        var ids = Enumerable.Repeat(2L, 260).Concat(ZipfIds(40, 5, 13)).ToArray();
        Check(ids, 5, 35, -1, "adders 1 of 2", Acc, heavyMin: 8, adders: 1);
    }

    [Test]
    public void RunTwiceWithDifferentScratchGarbageIsIdentical()
    {
        var ids = ZipfIds(120, 29, 21);
        var gy = Grad(120, 34, 3);
        var w0 = Grad(29, 34, 4);
        var a = Run(Multi, ids, gy, w0, 29, 34, 0, heavyMin: 6);
        var b = Run(Multi, ids, gy, w0, 29, 34, 0, heavyMin: 6, scratchFill: 0);
        var c = Run(Multi, ids, gy, w0, 29, 34, 0, heavyMin: 6, scratchFill: 12345);
        Assert.That(Bits(b), Is.EqualTo(Bits(a)));
        Assert.That(Bits(c), Is.EqualTo(Bits(a)));
        Assert.That(Bits(a), Is.EqualTo(Bits(Reference(ids, gy, w0, 29, 34, 0))));
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var ids = Acc.Allocate1D<long>(2); using var g = Acc.Allocate1D<float>(6); using var s = Acc.Allocate1D<int>(16);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => IndexKernels.EmbeddingBackward(Acc, null, ids.View, g.View, g.View, s.View, 2, 3, 2, 2))!;
        Assert.That(e.Message, Does.Contain("embedding_backward").And.Contain("padding index 2"));
        using var small = Acc.Allocate1D<int>(15);
        var e2 = Assert.Throws<ArgumentException>(() => IndexKernels.EmbeddingBackward(Acc, null, ids.View, g.View, g.View, small.View, 2, 3, 2, -1))!;
        Assert.That(e2.Message, Does.Contain("scratch has 15 elements, needs 16"));
        var e3 = Assert.Throws<ArgumentOutOfRangeException>(() => IndexKernels.EmbeddingBackward(Acc, null, ids.View, g.View, g.View, s.View, 2, 3, 2, -1, adders: 3))!;
        Assert.That(e3.Message, Does.Contain("3 adder threads"));
    }
}

/// <summary>The same through the backend (Ops.Embedding's backward on the emulated device, scratch from the caching allocator).</summary>
[TestFixture, Category("Cuda")]
public class CudaEmbeddingBackwardTests : CudaTestBase
{
    [Test]
    public void EmbeddingWeightGradientIsBitwiseEqualToTheCpu()
    {
        var r = new Random(3);
        long[] idv = Enumerable.Range(0, 2 * 37).Select(i => i % 37 == 0 ? 101L : i % 37 > 30 ? 0L : r.Next(3) == 0 ? 7L : r.Next(150)).ToArray();
        using var ids = Tensor.FromArray(idv, [2, 37]);
        using var w = Rand([150, 40], 7);
        using var up = Rand([2, 37, 40], 8, DType.Float32, -3, 3);
        using var wd = w.To(Gpu); using var idd = ids.To(Gpu); using var upd = up.To(Gpu);
        w.RequiresGrad = true; wd.RequiresGrad = true;
        for (int rep = 0; rep < 2; rep++)
        {
            using (var y = Ops.Embedding(ids, w, 0)) using (var l = (y * up).Sum()) l.Backward();
            using (var y = Ops.Embedding(idd, wd, 0)) using (var l = (y * upd).Sum()) l.Backward();
            Assert.That(wd.Grad!.ToArray<float>().Select(BitConverter.SingleToInt32Bits), Is.EqualTo(w.Grad!.ToArray<float>().Select(BitConverter.SingleToInt32Bits)),
                $"pass {rep}: bitwise (the second pass accumulates into the first's gradient)");
        }
    }
}
