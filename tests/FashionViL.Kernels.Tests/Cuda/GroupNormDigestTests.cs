using FashionViL.Kernels.Cuda;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Bit-for-bit regression of the CUDA group norm forward (y, mean, rstd) on ILGPU's CPU accelerator, 2-thread groups and
/// 4 warps of 2: SHA-256 digests in tests/fixtures/groupnorm/digests.txt, written by the kernel as it was before its loops
/// took four elements per thread at a time (session 19) with FASHIONVIL_WRITE_GROUPNORM_DIGESTS=1. Shapes whose group
/// sizes leave tails of 1–3 elements per thread after the unrolled part, affine or not, silu or not.
/// </summary>
[TestFixture, Category("Cuda")]
public class GroupNormDigestTests() : EmulatorKernelTestBase(assertions: true, multiWarp: true)
{
    private sealed record Case(string Name, int N, int C, int S, int Groups, bool Affine, bool Silu);

    private static readonly Case[] Cases =
    [
        new("vq-like", 2, 64, 63, 32, true, true),     // 2 channels × 63 per group
        new("plain", 3, 8, 35, 4, false, false),       // 70 per group
        new("affine", 1, 16, 33, 2, true, false),      // 264 per group
        new("silu", 2, 12, 29, 3, false, true),        // 116 per group
        new("tiny", 2, 6, 1, 3, true, true),           // 2 per group
    ];

    private IEnumerable<(string Key, string Digest)> Digests()
    {
        foreach (var c in Cases)
        {
            using var x = Rand([c.N, c.C, c.S], 700 + (ulong)c.S, -1, 4);
            using var w = Rand([c.C], 701, 0.5, 1.5);
            using var b = Rand([c.C], 702);
            long total = (long)c.N * c.C * c.S;
            foreach (var (acc, an) in new[] { (Acc, "emu2"), (Multi, "emu4x2") })
            {
                using var dx = Up(acc, x); using var dw = Up(acc, w); using var db = Up(acc, b);
                using var y = Poisoned(acc, total); using var mean = Poisoned(acc, c.N * c.Groups); using var rstd = Poisoned(acc, c.N * c.Groups);
                NormKernels.GroupNormForward(acc, null, dx.View, c.Affine ? dw.View : null, c.Affine ? db.View : null, c.Groups, 1e-6f,
                    y.View, mean.View, rstd.View, c.N, c.C, c.S, silu: c.Silu);
                acc.Synchronize();
                yield return ($"{an} {c.Name} y", DigestFixtures.Hash(y.GetAsArray1D(), total));
                yield return ($"{an} {c.Name} mean", DigestFixtures.Hash(mean.GetAsArray1D(), c.N * c.Groups));
                yield return ($"{an} {c.Name} rstd", DigestFixtures.Hash(rstd.GetAsArray1D(), c.N * c.Groups));
            }
        }
    }

    [Test]
    public void OutputsAreBitwiseThoseOfTheKernelBeforeTheUnrolling()
    {
        var got = Digests().ToList();
        string path = DigestFixtures.FixturePath("groupnorm");
        if (Environment.GetEnvironmentVariable("FASHIONVIL_WRITE_GROUPNORM_DIGESTS") == "1")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllLines(path + ".tmp", got.Select(g => $"{g.Key}\t{g.Digest}"));
            File.Move(path + ".tmp", path, overwrite: true);
            Assert.Inconclusive($"wrote {got.Count} digests to {path}");
        }
        var want = File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => l.Split('\t')).ToDictionary(l => l[0], l => l[1]);
        Assert.That(got.Select(g => g.Key), Is.EquivalentTo(want.Keys), "the digest file lists the same outputs");
        Assert.That(got.Where(g => want[g.Key] != g.Digest).Select(g => g.Key), Is.Empty, "outputs whose bits changed");
    }
}
