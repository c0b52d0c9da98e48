using System.Security.Cryptography;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Bit-for-bit regression of the fused attention: SHA-256 digests of the outputs (o, probs, gq, gk, gv) of the CUDA kernels
/// on ILGPU's CPU accelerator and of <see cref="CpuBackend"/>, at shapes with S not a multiple of 4 (Philox blocks
/// straddle rows), dropout on and off, a padding mask, and S &gt; <see cref="AttentionKernels.SCap"/>. The digests in
/// tests/fixtures/attention/digests.txt were written by the kernels as they were before the output-only /
/// probabilities-only modes and the one-Philox-block-per-four-elements dropout (commit 34d19c1), with
/// FASHIONVIL_WRITE_ATTENTION_DIGESTS=1: every later change to these kernels must keep them, or explain why not.
/// The bits depend on the machine's floating point library (exp) and on the CPU backend's vector width (TensorPrimitives'
/// sums, dots and exp take other paths with AVX-512): the digests were written on x64 with AVX2 and .NET 10; on a machine
/// with Vector512 acceleration the CPU backend's are checked against digests-avx512.txt instead (written on an AVX-512
/// Xeon, 2026-11-28, from the same CPU backend code), and skipped without Vector256 acceleration. The kernels' digests
/// (ILGPU's CPU accelerator, scalar code) are the same on both.
/// </summary>
[TestFixture, Category("Cuda")]
public class AttentionDigestTests() : EmulatorKernelTestBase(assertions: true, multiWarp: true)
{
    private sealed record Case(string Name, int B, int H, int L, int S, int D, double P, ulong Offset, bool Mask);

    private static readonly Case[] Cases =
    [
        new("shared-drop", 2, 2, 17, 33, 8, 0.1, 5, true),
        new("shared-nodrop", 2, 2, 17, 33, 8, 0.0, 0, true),
        new("shared-odd", 1, 2, 19, 7, 64, 0.3, 3, false),
        new("big-drop", 2, 1, 9, AttentionKernels.SCap + 37, 8, 0.1, 1, true),
        // written by the kernels of commit 633309c (before the float4 register blocking): D/4 not a multiple of the
        // four-float4 unrolling (D = 20, 44: unrolled steps and a tail), query and key tiles not multiples of 4 or 2 (L = 19:
        // 16 + 3 rows; S = 37, 10: 32 + 5, 10 keys), the scalar path (D = 6, 37: D % 4 ≠ 0), S > SCap with D = 20
        new("tails-d20", 1, 2, 19, 37, 20, 0.1, 2, true),
        new("tails-d44", 2, 1, 6, 10, 44, 0.0, 0, false),
        new("scalar-d6", 1, 2, 19, 37, 6, 0.1, 7, true),
        new("scalar-d37", 1, 1, 17, 33, 37, 0.3, 1, false),
        new("big-d20", 1, 1, 5, AttentionKernels.SCap + 7, 20, 0.1, 3, true),
    ];

    private static string Hash(float[] a, long n)
    {
        var bytes = new byte[n * 4];
        Buffer.BlockCopy(a, 0, bytes, 0, bytes.Length);
        return Convert.ToHexString(SHA256.HashData(bytes))[..24];
    }

    private static (Tensor Storage, Tensor View) PaddingMask(int b, int h, int l, int s)
    {
        var m = new float[b * s];
        for (int bi = 0; bi < b; bi++)
            for (int j = Math.Max(1, s - bi * (s / 3 + 1)); j < s; j++) m[bi * s + j] = -10000f;
        var storage = Tensor.FromArray(m, b, 1, 1, s);
        return (storage, storage.AsStrided([b, h, l, s], [s, 0, 0, 1], 0));
    }

    private IEnumerable<(string Key, string Digest)> Digests()
    {
        foreach (var c in Cases)
        {
            double scale = 1.0 / Math.Sqrt(c.D);
            const ulong seed = 0xA77E;
            using var q = Rand([c.B, c.H, c.L, c.D], 101 + (ulong)c.L, -2, 2);
            using var k = Rand([c.B, c.H, c.S, c.D], 102 + (ulong)c.S, -2, 2);
            using var v = Rand([c.B, c.H, c.S, c.D], 103);
            using var gO = Rand([c.B, c.H, c.L, c.D], 104);
            var (ms, mv) = c.Mask ? PaddingMask(c.B, c.H, c.L, c.S) : (null, null);
            long nq = (long)c.B * c.H * c.L * c.D, nk = (long)c.B * c.H * c.S * c.D, np = (long)c.B * c.H * c.L * c.S;
            using (ms) using (mv)
            {
                // the CPU backend
                using var o = Tensor.Empty([c.B, c.H, c.L, c.D]);
                using var probs = Tensor.Empty([c.B, c.H, c.L, c.S]);
                Cpu.AttentionForward(q, k, v, mv, scale, c.P, seed, c.Offset, o, probs);
                using var cgq = Tensor.Empty([c.B, c.H, c.L, c.D]);
                using var cgk = Tensor.Empty([c.B, c.H, c.S, c.D]);
                using var cgv = Tensor.Empty([c.B, c.H, c.S, c.D]);
                Cpu.AttentionBackward(q, k, v, probs, scale, c.P, seed, c.Offset, gO, cgq, cgk, cgv);
                yield return ($"cpu {c.Name} o", Hash(o.ToArray<float>(), nq));
                yield return ($"cpu {c.Name} probs", Hash(probs.ToArray<float>(), np));
                yield return ($"cpu {c.Name} gq", Hash(cgq.ToArray<float>(), nq));
                yield return ($"cpu {c.Name} gk", Hash(cgk.ToArray<float>(), nk));
                yield return ($"cpu {c.Name} gv", Hash(cgv.ToArray<float>(), nk));

                // the kernels, 2-thread groups and 4 warps of 2
                foreach (var (acc, an) in new[] { (Acc, "emu2"), (Multi, "emu4x2") })
                {
                    using var dq = Up(acc, q); using var dk = Up(acc, k); using var dv = Up(acc, v); using var dgo = Up(acc, gO);
                    using var dm = ms is null ? null : Up(acc, ms.ToArray<float>());
                    var layout = mv is null ? default : AttentionMaskLayout.Of(mv);
                    using var doo = Poisoned(acc, nq); using var dp = Poisoned(acc, np);
                    AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm?.View, layout, doo.View, dp.View,
                        c.B, c.H, c.L, c.S, c.D, scale, c.P, seed, c.Offset);
                    using var dgq = Poisoned(acc, nq); using var dgk = Poisoned(acc, nk); using var dgv = Poisoned(acc, nk);
                    using var ws = Poisoned(acc, AttentionKernels.BackwardWorkspace(c.B, c.H, c.L, c.S));
                    AttentionKernels.Backward(acc, null, dq.View, dk.View, dv.View, dp.View, dgo.View, dgq.View, dgk.View, dgv.View, ws.View,
                        c.B, c.H, c.L, c.S, c.D, scale, c.P, seed, c.Offset);
                    acc.Synchronize();
                    yield return ($"{an} {c.Name} o", Hash(doo.GetAsArray1D(), nq));
                    yield return ($"{an} {c.Name} probs", Hash(dp.GetAsArray1D(), np));
                    yield return ($"{an} {c.Name} gq", Hash(dgq.GetAsArray1D(), nq));
                    yield return ($"{an} {c.Name} gk", Hash(dgk.GetAsArray1D(), nk));
                    yield return ($"{an} {c.Name} gv", Hash(dgv.GetAsArray1D(), nk));
                }
            }
        }
    }

    private static string FixturePath(string file = "digests.txt")
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (Directory.Exists(Path.Combine(d.FullName, "tests", "fixtures")))
                return Path.Combine(d.FullName, "tests", "fixtures", "attention", file);
        throw new DirectoryNotFoundException($"tests/fixtures not found above {TestContext.CurrentContext.TestDirectory}");
    }

    private static bool IsCpu(string key) => key.StartsWith("cpu ", StringComparison.Ordinal);

    private static Dictionary<string, string> Read(string path)
        => File.ReadAllLines(path).Where(x => x.Length > 0).Select(x => x.Split('\t')).ToDictionary(x => x[0], x => x[1]);

    private static void Write(string path, IEnumerable<(string Key, string Digest)> entries)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllLines(path + ".tmp", entries.Select(g => $"{g.Key}\t{g.Digest}"));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    [Test]
    public void OutputsAreBitwiseThoseOfTheKernelsBeforeTheModes()
    {
        var got = Digests().ToList();
        bool avx512 = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated;
        string path = FixturePath(), path512 = FixturePath("digests-avx512.txt");
        if (Environment.GetEnvironmentVariable("FASHIONVIL_WRITE_ATTENTION_DIGESTS") == "1")
        {
            // an AVX-512 machine writes only its CPU backend's digests, to their own file
            if (avx512) Write(path512, got.Where(g => IsCpu(g.Key)));
            else Write(path, got);
            Assert.Inconclusive($"wrote digests to {(avx512 ? path512 : path)}");
        }
        var want = Read(path);
        Assert.That(got.Select(g => g.Key), Is.EquivalentTo(want.Keys), "the digest file lists the same outputs");
        if (avx512)
        {
            var want512 = Read(path512);
            Assert.That(want512.Keys, Is.EquivalentTo(got.Where(g => IsCpu(g.Key)).Select(g => g.Key)), "the AVX-512 file lists the CPU backend's outputs");
            foreach (var (key, digest) in want512) want[key] = digest;
        }
        var differ = got.Where(g => want[g.Key] != g.Digest)
            .Where(g => System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated || !IsCpu(g.Key))
            .Select(g => g.Key).ToList();
        Assert.That(differ, Is.Empty, "outputs whose bits changed");
    }
}
