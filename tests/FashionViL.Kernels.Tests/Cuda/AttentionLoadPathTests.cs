using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The attention kernels' two ways of moving rows between global and shared memory (issue 7): float4 loads and stores
/// when an operand allows them (D % 4 = 0, a 16-byte aligned view, offset and strides multiples of 4:
/// <see cref="AttentionKernels.Vec"/>), scalar ones otherwise; both issue up to four loads per thread before any store.
/// The same operands are run once in aligned contiguous buffers (every operand float4) and once one element into their
/// buffers (every operand scalar): all five outputs must be bitwise equal, on 2-thread groups and on 4 warps of 2, at
/// shapes that reach every batch of kernel 1's row passes (S ≤ 4·warp keeps the probabilities in registers; longer rows
/// take several batches and a tail), with and without dropout and a mask, S past the shared cap, and MLM's D = 64,
/// S = 124. (The digests in <see cref="AttentionDigestTests"/> pin the aligned path's bits to the kernels before.)
/// </summary>
[TestFixture, Category("Cuda")]
public class AttentionLoadPathTests() : EmulatorKernelTestBase(assertions: true, multiWarp: true)
{
    public sealed record Case(string Name, int B, int H, int L, int S, int D, double P, bool Mask);

    private static readonly Case[] Cases =
    [
        new("regs-nodrop", 2, 2, 9, 7, 8, 0.0, true),     // S ≤ 4·warp = 8 on the emulator: probabilities in registers
        new("regs-drop", 1, 2, 19, 8, 20, 0.2, true),
        new("batches", 1, 2, 17, 37, 64, 0.1, true),      // 37 = 4 batches of 8 + 5 per 2-lane warp
        new("batches-nodrop", 2, 1, 6, 21, 12, 0.0, false),
        new("mlm-like", 1, 1, 21, 124, 64, 0.1, true),
        new("big", 1, 1, 5, AttentionKernels.SCap + 9, 8, 0.1, true),
    ];

    private static IEnumerable<TestCaseData> CaseData() => Cases.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    private sealed class Run : IDisposable
    {
        public required MemoryBuffer1D<float, Stride1D.Dense> O, Probs, Gq, Gk, Gv;
        public required long Shift, Nq, Nk, Np;
        public float[] Get(MemoryBuffer1D<float, Stride1D.Dense> b, long n) => b.GetAsArray1D().Skip((int)(ReferenceEquals(b, Probs) ? 0 : Shift)).Take((int)n).ToArray();
        public void Dispose() { O.Dispose(); Probs.Dispose(); Gq.Dispose(); Gk.Dispose(); Gv.Dispose(); }
    }

    /// <summary>Forward and backward with every [B,H,R,D] operand <paramref name="shift"/> elements into its buffer.</summary>
    private static Run Attention(Accelerator acc, Case c, float[] q, float[] k, float[] v, float[] go, float[]? mask, int shift, bool expectVec)
    {
        long nq = (long)c.B * c.H * c.L * c.D, nk = (long)c.B * c.H * c.S * c.D, np = (long)c.B * c.H * c.L * c.S;
        float[] Shifted(float[] a) => [.. Enumerable.Repeat(float.NaN, shift), .. a];
        var lq = new AttentionHeadsLayout(shift, (long)c.H * c.L * c.D, (long)c.L * c.D, c.D);
        var lk = new AttentionHeadsLayout(shift, (long)c.H * c.S * c.D, (long)c.S * c.D, c.D);
        var x = new AttentionLayouts { Q = lq, K = lk, V = lk, O = lq, GO = lq, GQ = lq, GK = lk, GV = lk };
        using var dq = Up(acc, Shifted(q)); using var dk = Up(acc, Shifted(k)); using var dv = Up(acc, Shifted(v)); using var dgo = Up(acc, Shifted(go));
        using var dm = mask is null ? null : Up(acc, mask);
        var ml = mask is null ? default : new AttentionMaskLayout(0, c.S, 0, 0, 1);
        var run = new Run
        {
            O = Poisoned(acc, nq + shift), Probs = Poisoned(acc, np), Gq = Poisoned(acc, nq + shift), Gk = Poisoned(acc, nk + shift),
            Gv = Poisoned(acc, nk + shift), Shift = shift, Nq = nq, Nk = nk, Np = np,
        };
        foreach (var (view, layout, name) in new[] { (dq.View, lq, "q"), (dk.View, lk, "k"), (dv.View, lk, "v"), (dgo.View, lq, "go"),
                     (run.O.View, lq, "o"), (run.Gq.View, lq, "gq"), (run.Gk.View, lk, "gk"), (run.Gv.View, lk, "gv") })
            Assert.That(AttentionKernels.Vec(view, layout, c.D), Is.EqualTo(expectVec), $"{c.Name}: {name} {(expectVec ? "takes" : "does not take")} the float4 path");
        double scale = 1.0 / Math.Sqrt(c.D);
        AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm?.View, ml, run.O.View, run.Probs.View, x,
            c.B, c.H, c.L, c.S, c.D, scale, c.P, 0xB10C, 3);
        using var ws = Poisoned(acc, AttentionKernels.BackwardWorkspace(c.B, c.H, c.L, c.S));
        AttentionKernels.Backward(acc, null, dq.View, dk.View, dv.View, run.Probs.View, dgo.View, run.Gq.View, run.Gk.View, run.Gv.View, ws.View,
            x, c.B, c.H, c.L, c.S, c.D, scale, c.P, 0xB10C, 3);
        acc.Synchronize();
        return run;
    }

    [TestCaseSource(nameof(CaseData))]
    public void Float4AndScalarRowsGiveTheSameBits(Case c)
    {
        var q = Rand([c.B, c.H, c.L, c.D], 11, -2, 2).ToArray<float>();
        var k = Rand([c.B, c.H, c.S, c.D], 12, -2, 2).ToArray<float>();
        var v = Rand([c.B, c.H, c.S, c.D], 13).ToArray<float>();
        var go = Rand([c.B, c.H, c.L, c.D], 14).ToArray<float>();
        float[]? mask = null;
        if (c.Mask)
        {
            mask = new float[c.B * c.S];
            for (int b = 0; b < c.B; b++)
                for (int j = c.S - 1 - 2 * b; j < c.S; j++) mask[b * c.S + j] = -10000f;
        }
        foreach (var (acc, an) in new[] { (Acc, "2-thread groups"), (Multi, "4 warps of 2") })
        {
            using var vec = Attention(acc, c, q, k, v, go, mask, 0, expectVec: true);
            using var sca = Attention(acc, c, q, k, v, go, mask, 1, expectVec: false);
            foreach (var (name, a, b, n) in new[] { ("o", vec.O, sca.O, vec.Nq), ("probs", vec.Probs, sca.Probs, vec.Np),
                         ("gq", vec.Gq, sca.Gq, vec.Nq), ("gk", vec.Gk, sca.Gk, vec.Nk), ("gv", vec.Gv, sca.Gv, vec.Nk) })
            {
                var x = vec.Get(a, n);
                var y = sca.Get(b, n);
                Assert.That(x.All(float.IsFinite), $"{c.Name} {an}: {name} (float4 path) has a value the kernels did not write");
                Assert.That(y, Is.EqualTo(x), $"{c.Name} {an}: {name} differs between the float4 and the scalar row paths");
            }
        }
    }
}
