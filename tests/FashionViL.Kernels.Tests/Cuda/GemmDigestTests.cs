using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Bit-for-bit regression of the fp32 SGEMM versions (<see cref="GemmKernels"/>) on ILGPU's CPU accelerator. Every version
/// sums an output's products in k order from zero, then applies alpha, beta, bias and GELU the same way, so all five must
/// give the same bits for the same stored operands; and the wired version (v5) must keep the bits recorded in
/// tests/fixtures/gemm/digests.txt, which were written by v5 before its k steps were unrolled (main at 2a518cf, 2-thread
/// groups, FASHIONVIL_WRITE_GEMM_DIGESTS=1). Cases: several K tiles with a short last one, all four transposes, ragged
/// row and column tiles, aligned (128-bit paths) and unaligned operands, batches with a shared operand, alpha/beta, bias
/// and GELU. Group sizes: 2 (the emulator's groups: v5 stages all but two slots directly), 32, and the GPU's 256 (every
/// slot prefetched into registers). Closeness to the CPU backend is <see cref="GemmKernelTests"/>' job.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class GemmDigestTests() : EmulatorKernelTestBase(assertions: true)
{
    private sealed record Case(string Name, int Batch, int M, int N, int K, bool Ta, bool Tb, int Pad, bool ShareA,
        float Alpha = 1f, float Beta = 0f, bool Bias = false, bool Gelu = false);

    private static readonly Case[] Cases =
    [
        // 3 K tiles of 8 plus a tail of 3; two row tiles and two column tiles, both ragged; unaligned (ld 29 / 139)
        new("nn-ragged", 1, 131, 137, 27, false, false, 2, false),
        // aligned (pad 4 on K = 28 / N = 132: ld 32 / 136): the 128-bit loads and C stores
        new("nn-aligned-bias", 1, 40, 132, 28, false, false, 4, false, Bias: true),
        new("nt-alpha-beta", 2, 33, 70, 41, false, true, 0, false, Alpha: 0.5f, Beta: -1.25f),
        new("tn-gelu", 1, 70, 33, 17, true, false, 3, false, Bias: true, Gelu: true),
        new("tt-shared-a", 3, 19, 21, 35, true, true, 4, true, Beta: 0.75f),
        // K = 8 exactly (one K tile: no prefetch) and K = 1
        new("nn-k8", 1, 9, 10, 8, false, false, 0, false),
        new("nt-k1", 1, 5, 6, 1, false, true, 0, false, Bias: true),
    ];

    private static float[] RandF(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static string Digest(float[] a) => DigestFixtures.Hash(a, a.Length);

    /// <summary>C of one case (its whole stored buffer, padding included) after <paramref name="v"/> ran on <paramref name="acc"/>.</summary>
    private static float[] Run(Accelerator acc, GemmVersion v, Case c)
    {
        int aRows = c.Ta ? c.K : c.M, aCols = c.Ta ? c.M : c.K, bRows = c.Tb ? c.N : c.K, bCols = c.Tb ? c.K : c.N;
        int lda = aCols + c.Pad, ldb = bCols + c.Pad, ldc = c.N + c.Pad;
        int strideA = c.ShareA ? 0 : aRows * lda, strideB = bRows * ldb, strideC = c.M * ldc;
        int na = (c.ShareA ? 1 : c.Batch) * aRows * lda, nb = c.Batch * bRows * ldb, nc = c.Batch * strideC;
        using var a = Up(acc, RandF(na, 11));
        using var b = Up(acc, RandF(nb, 12));
        using var bias = Up(acc, RandF(c.N, 13));
        using var cBuf = Up(acc, RandF(nc, 14));   // beta ≠ 0 reads it; its padding must survive
        GemmKernels.Launch(acc, null, new GemmArgs
        {
            A = a.View, B = b.View, C = cBuf.View, Bias = c.Bias ? bias.View : default,
            M = c.M, N = c.N, K = c.K, Batch = c.Batch, Lda = lda, Ldb = ldb, Ldc = ldc,
            StrideA = strideA, StrideB = strideB, StrideC = strideC,
            TransA = c.Ta, TransB = c.Tb, Alpha = c.Alpha, Beta = c.Beta, Gelu = c.Gelu,
        }, v);
        acc.Synchronize();
        return cBuf.GetAsArray1D();
    }

    private DigestFixtures? _fixtures;

    /// <summary>A CPU accelerator whose largest group is <paramref name="threads"/> (warps of 2, or of 32 from 128 threads up).</summary>
    private Accelerator WithGroup(int threads) => (_fixtures ??= new DigestFixtures(Ctx, Acc)).WithGroup(threads);

    [OneTimeTearDown]
    public void DisposeGroupAccelerators() => _fixtures?.Dispose();

    [Test]
    public void TheWiredVersionKeepsItsRecordedBits()
    {
        string path = DigestFixtures.FixturePath("gemm");
        if (Environment.GetEnvironmentVariable("FASHIONVIL_WRITE_GEMM_DIGESTS") == "1")
        {
            var all = Cases.Select(c => $"{c.Name}\t{Digest(Run(Acc, GemmVersion.Reg128x8Prefetch, c))}").ToList();
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllLines(path + ".tmp", all);
            File.Move(path + ".tmp", path, overwrite: true);
            Assert.Inconclusive($"wrote {all.Count} digests to {path}");
        }
        var want = File.ReadAllLines(path).Where(x => x.Length > 0).Select(x => x.Split('\t')).ToDictionary(x => x[0], x => x[1]);
        Assert.That(want.Keys, Is.EquivalentTo(Cases.Select(c => c.Name)), "the digest file lists every case");
        var differ = Cases.Where(c => Digest(Run(Acc, GemmVersion.Reg128x8Prefetch, c)) != want[c.Name]).Select(c => c.Name).ToList();
        Assert.That(differ, Is.Empty, "v5 outputs whose bits changed");
    }

    public static IEnumerable<TestCaseData> GroupSizes()
    {
        foreach (int threads in new[] { 2, 32, GemmKernels.GpuGroupSize })
            yield return new TestCaseData(threads).SetName($"EveryVersionGivesTheBitsOfTheNaiveOne groups of {threads}");
    }

    [TestCaseSource(nameof(GroupSizes))]
    public void EveryVersionGivesTheBitsOfTheNaiveOne(int threads)
    {
        var acc = WithGroup(threads);
        // the GPU group size emulates 256 OS threads per group: a few cases keep it short
        var cases = threads == GemmKernels.GpuGroupSize ? Cases.Where(c => c.Name is "nn-ragged" or "tt-shared-a" or "nn-aligned-bias") : Cases;
        foreach (var c in cases)
        {
            var want = Run(acc, GemmVersion.Naive, c);
            foreach (var v in GemmKernels.Versions.Where(v => v != GemmVersion.Naive))
            {
                var got = Run(acc, v, c);
                int first = Enumerable.Range(0, want.Length).FirstOrDefault(i => BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(want[i]), -1);
                Assert.That(first, Is.EqualTo(-1), $"{v}, case {c.Name}, groups of {threads}: first differing element {first}"
                    + (first >= 0 ? $" ({got[first]:R} vs naive {want[first]:R})" : ""));
            }
        }
    }
}
