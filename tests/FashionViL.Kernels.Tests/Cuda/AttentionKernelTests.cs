using System.Reflection;
using System.Text.RegularExpressions;
using FashionViL.Kernels.Cpu;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// The ILGPU fused attention (forward, backward) and dropout kernels on ILGPU's CPU accelerator (2-thread groups, warp
/// size 2, bounds-checked views; plus a 4-warp device for the multi-warp paths) against <see cref="CpuBackend"/>: padding
/// masks broadcast with zero strides, arbitrary mask strides, dropout from the shared Philox stream (the dropped set must
/// be the CPU's exactly), scores kept in shared memory (S ≤ 256) and in global memory (S &gt; 256).
/// </summary>
[TestFixture, Category("Cuda")]
public class AttentionKernelTests() : EmulatorKernelTestBase(assertions: true, multiWarp: true)
{
    private const double Rt = 1e-4, At = 1e-5;

    /// <summary>A padding mask [B,1,1,S] (−10000 on the last keys of each batch row; batch 0 unpadded) expanded to [B,H,L,S] with zero strides.</summary>
    private static (Tensor Storage, Tensor View) PaddingMask(int b, int h, int l, int s)
    {
        var m = new float[b * s];
        for (int bi = 0; bi < b; bi++)
        {
            int valid = Math.Max(1, s - bi * (s / 3 + 1));
            for (int j = valid; j < s; j++) m[bi * s + j] = -10000f;
        }
        var storage = Tensor.FromArray(m, b, 1, 1, s);
        return (storage, storage.AsStrided([b, h, l, s], [s, 0, 0, 1], 0));
    }

    private sealed record Case(int B, int H, int L, int S, int D, double P, ulong Seed = 7, ulong Offset = 5);

    /// <summary>Forward on both backends; returns (o, probs) from the kernel and asserts them against the CPU.</summary>
    private void CheckForward(Accelerator acc, Case c, Tensor? maskView, Tensor? maskStorage, string what, int groupSize = 0)
    {
        double scale = 1.0 / Math.Sqrt(c.D);
        using var q = Rand([c.B, c.H, c.L, c.D], 11 + (ulong)c.L, -2, 2);
        using var k = Rand([c.B, c.H, c.S, c.D], 12 + (ulong)c.S, -2, 2);
        using var v = Rand([c.B, c.H, c.S, c.D], 13);
        using var o = Tensor.Empty([c.B, c.H, c.L, c.D]);
        using var probs = Tensor.Empty([c.B, c.H, c.L, c.S]);
        Cpu.AttentionForward(q, k, v, maskView, scale, c.P, c.Seed, c.Offset, o, probs);

        long nq = (long)c.B * c.H * c.L * c.D, np = (long)c.B * c.H * c.L * c.S;
        using var gq = Up(acc, q); using var gk = Up(acc, k); using var gv = Up(acc, v);
        using var gm = maskStorage is null ? null : Up(acc, maskStorage.ToArray<float>());
        using var go = Poisoned(acc, nq); using var gp = Poisoned(acc, np);
        var layout = maskView is null ? default : AttentionMaskLayout.Of(maskView);
        AttentionKernels.Forward(acc, null, gq.View, gk.View, gv.View, gm?.View, layout, go.View, gp.View,
            c.B, c.H, c.L, c.S, c.D, scale, c.P, c.Seed, c.Offset, groupSize);
        acc.Synchronize();
        string w = $"{c} {what} group {groupSize}";
        OpCheck.AssertClose(D(gp, np), probs.ToArray<double>(), Rt, At, "probs " + w);
        OpCheck.AssertClose(D(go, nq), o.ToArray<double>(), Rt, At, "o " + w);
    }

    private void CheckBackward(Accelerator acc, Case c, Tensor? maskView, string what, int groupSize = 0)
    {
        double scale = 1.0 / Math.Sqrt(c.D);
        using var q = Rand([c.B, c.H, c.L, c.D], 21 + (ulong)c.L, -2, 2);
        using var k = Rand([c.B, c.H, c.S, c.D], 22 + (ulong)c.S, -2, 2);
        using var v = Rand([c.B, c.H, c.S, c.D], 23);
        using var gO = Rand([c.B, c.H, c.L, c.D], 24);
        using var o = Tensor.Empty([c.B, c.H, c.L, c.D]);
        using var probs = Tensor.Empty([c.B, c.H, c.L, c.S]);
        Cpu.AttentionForward(q, k, v, maskView, scale, c.P, c.Seed, c.Offset, o, probs);
        using var cgq = Tensor.Empty([c.B, c.H, c.L, c.D]);
        using var cgk = Tensor.Empty([c.B, c.H, c.S, c.D]);
        using var cgv = Tensor.Empty([c.B, c.H, c.S, c.D]);
        Cpu.AttentionBackward(q, k, v, probs, scale, c.P, c.Seed, c.Offset, gO, cgq, cgk, cgv);

        long nq = (long)c.B * c.H * c.L * c.D, nk = (long)c.B * c.H * c.S * c.D;
        using var dq = Up(acc, q); using var dk = Up(acc, k); using var dv = Up(acc, v);
        using var dp = Up(acc, probs); using var dgo = Up(acc, gO);
        using var dgq = Poisoned(acc, nq); using var dgk = Poisoned(acc, nk); using var dgv = Poisoned(acc, nk);
        using var ws = Poisoned(acc, AttentionKernels.BackwardWorkspace(c.B, c.H, c.L, c.S));
        AttentionKernels.Backward(acc, null, dq.View, dk.View, dv.View, dp.View, dgo.View, dgq.View, dgk.View, dgv.View, ws.View,
            c.B, c.H, c.L, c.S, c.D, scale, c.P, c.Seed, c.Offset, groupSize);
        acc.Synchronize();
        string w = $"{c} {what} group {groupSize}";
        OpCheck.AssertClose(D(dgq, nq), cgq.ToArray<double>(), Rt, At, "gq " + w);
        OpCheck.AssertClose(D(dgk, nk), cgk.ToArray<double>(), Rt, At, "gk " + w);
        OpCheck.AssertClose(D(dgv, nk), cgv.ToArray<double>(), Rt, At, "gv " + w);
    }

    private static readonly int[] Ls = [1, 5, 17];
    private static readonly int[] Ss = [1, 7, 33];

    // ------------------------------------------------------------------ forward / backward vs the CPU backend

    [Test]
    public void ForwardMatchesCpu([Values(1, 2)] int b, [Values(1, 2)] int h, [Values(64, 8)] int d, [Values] bool mask, [Values(0.0, 0.1)] double p)
    {
        foreach (int l in Ls)
            foreach (int s in Ss)
            {
                var (storage, view) = mask ? PaddingMask(b, h, l, s) : (null, null);
                using (storage) using (view)
                    CheckForward(Acc, new Case(b, h, l, s, d, p), view, storage, mask ? "padding mask [B,1,1,S]" : "no mask");
            }
    }

    [Test]
    public void BackwardMatchesCpu([Values(1, 2)] int b, [Values(1, 2)] int h, [Values(64, 8)] int d, [Values] bool mask, [Values(0.0, 0.1)] double p)
    {
        foreach (int l in Ls)
            foreach (int s in Ss)
            {
                var (storage, view) = mask ? PaddingMask(b, h, l, s) : (null, null);
                using (storage) using (view)
                    CheckBackward(Acc, new Case(b, h, l, s, d, p), view, mask ? "padding mask [B,1,1,S]" : "no mask");
            }
    }

    [Test]
    public void ArbitraryMaskStridesAndOffset()
    {
        // a full random mask stored as [S, B, L, H] after 3 leading floats, viewed as [B,H,L,S]
        int b = 2, h = 2, l = 6, s = 9, d = 8;
        var data = Rand([3 + s * b * l * h], 31, -3, 3).ToArray<float>();
        using var storage = Tensor.FromArray(data, data.Length);
        using var view = storage.AsStrided([b, h, l, s], [l * h, 1, h, b * l * h], 3);
        CheckForward(Acc, new Case(b, h, l, s, d, 0.1), view, storage, "permuted mask with offset");
        CheckBackward(Acc, new Case(b, h, l, s, d, 0.1), view, "permuted mask with offset");
        // a [1,1,L,S] mask (e.g. causal-style) broadcast over batch and heads
        var causal = new float[l * s];
        for (int i = 0; i < l; i++) for (int j = 0; j < s; j++) causal[i * s + j] = j > i + 2 ? float.NegativeInfinity : 0f;
        using var cs = Tensor.FromArray(causal, 1, 1, l, s);
        using var cv = cs.AsStrided([b, h, l, s], [0, 0, s, 1], 0);
        CheckForward(Acc, new Case(b, h, l, s, d, 0.0), cv, cs, "[1,1,L,S] −∞ mask");
    }

    [Test]
    public void ScoresThroughGlobalMemoryWhenSExceedsSharedCapacity()
    {
        int s = AttentionKernels.SCap + 37;
        var (storage, view) = PaddingMask(2, 1, 19, s);
        using (storage) using (view)
        {
            CheckForward(Acc, new Case(2, 1, 19, s, 8, 0.1), view, storage, "S > SCap, padding mask");
            CheckBackward(Acc, new Case(2, 1, 19, s, 8, 0.1), view, "S > SCap, padding mask");
        }
    }

    [Test]
    public void SeveralWarpsPerGroup([Values(0.0, 0.1)] double p)
    {
        var (storage, view) = PaddingMask(2, 2, 17, 33);
        using (storage) using (view)
        {
            CheckForward(Multi, new Case(2, 2, 17, 33, 64, p), view, storage, "4 warps");
            CheckBackward(Multi, new Case(2, 2, 17, 33, 64, p), view, "4 warps");
        }
        CheckForward(Multi, new Case(1, 1, 5, AttentionKernels.SCap + 3, 8, p), null, null, "4 warps, S > SCap");
        // an explicit group smaller than the device's (2 of its 4 warps)
        CheckForward(Multi, new Case(2, 1, 17, 33, 8, p), null, null, "2 of 4 warps", groupSize: 4);
        CheckBackward(Multi, new Case(2, 1, 17, 33, 8, p), null, "2 of 4 warps", groupSize: 4);
        CheckBackward(Multi, new Case(1, 1, 5, AttentionKernels.SCap + 3, 8, p), null, "4 warps, S > SCap");
    }

    [Test]
    public void OddHeadDimensionsAndFullHeadDimension([Values(1, 3, 37, 128)] int d)
    {
        CheckForward(Acc, new Case(1, 2, 17, 33, d, 0.1), null, null, "");
        CheckBackward(Acc, new Case(1, 2, 17, 33, d, 0.1), null, "");
    }

    [Test]
    public void DropoutDropsExactlyTheCpuSet([Values(0.1, 0.5)] double p, [Values(0ul, 3ul, 1ul << 40)] ulong offset)
    {
        // v = identity (S ≤ D), so o[b,h,l,e] is the dropped, rescaled probability of key e: zero exactly where dropped
        int b = 2, h = 2, l = 17, s = 33, d = 64;
        ulong seed = 0xC0FFEE;
        var vd = new float[b * h * s * d];
        for (int bh = 0; bh < b * h; bh++) for (int j = 0; j < s; j++) vd[(bh * s + j) * d + j] = 1f;
        using var q = Rand([b, h, l, d], 41);
        using var k = Rand([b, h, s, d], 42);
        using var v = Tensor.FromArray(vd, b, h, s, d);
        using var o = Tensor.Empty([b, h, l, d]);
        using var probs = Tensor.Empty([b, h, l, s]);
        Cpu.AttentionForward(q, k, v, null, 0.125, p, seed, offset, o, probs);
        using var dq = Up(Acc, q); using var dk = Up(Acc, k); using var dv = Up(Acc, v);
        using var dout = Poisoned(Acc, o.Numel); using var dp = Poisoned(Acc, probs.Numel);
        AttentionKernels.Forward(Acc, null, dq.View, dk.View, dv.View, null, default, dout.View, dp.View, b, h, l, s, d, 0.125, p, seed, offset);
        Acc.Synchronize();
        float[] got = dout.GetAsArray1D(), want = o.ToArray<float>();
        uint thr = (uint)Math.Ceiling(p * 16777216.0);
        int dropped = 0;
        for (int row = 0; row < b * h * l; row++)
            for (int j = 0; j < s; j++)
            {
                long flat = (long)row * s + j;
                bool keep = Philox.Uniform(seed, offset, flat) >= p;
                Assert.That(keep, Is.EqualTo((Philox.Word(seed, offset, flat) >> 8) >= thr), "threshold form of the rule");
                float g = got[row * d + j], c = want[row * d + j];
                Assert.That(g == 0f, Is.EqualTo(!keep), $"kernel at row {row}, key {j} (flat {flat})");
                Assert.That(c == 0f, Is.EqualTo(!keep), $"cpu at row {row}, key {j} (flat {flat})");
                if (!keep) dropped++;
            }
        int n = b * h * l * s;
        Assert.That(dropped, Is.InRange((int)(n * p * 0.7), (int)(n * p * 1.3) + 2), "fraction dropped");
    }

    [Test]
    public void EmptyAndDegenerateShapes()
    {
        // S = 0: o = 0; L = 0: nothing to do; backward with L = 0 zeroes gk, gv
        using var q = Up(Acc, new float[2 * 3 * 4]); using var z = Up(Acc, new float[1]);
        using var o = Poisoned(Acc, 24); using var p = Poisoned(Acc, 1);
        AttentionKernels.Forward(Acc, null, q.View, z.View, z.View, null, default, o.View, p.View, 1, 2, 3, 0, 4, 0.5, 0.1, 1, 0);
        Acc.Synchronize();
        Assert.That(o.GetAsArray1D(), Is.All.EqualTo(0f));
        using var k = Up(Acc, new float[10]); using var gk = Poisoned(Acc, 10); using var gv = Poisoned(Acc, 10);
        AttentionKernels.Backward(Acc, null, z.View, k.View, k.View, z.View, z.View, z.View, gk.View, gv.View, z.View, 1, 1, 0, 5, 2, 0.5, 0, 1, 0);
        Acc.Synchronize();
        Assert.That(gk.GetAsArray1D(), Is.All.EqualTo(0f));
        Assert.That(gv.GetAsArray1D(), Is.All.EqualTo(0f));
    }

    [Test]
    public void BadArgumentsThrowNamingTheOpAndShape()
    {
        using var a = Up(Acc, new float[4096]);
        var ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, null, default, a.View, a.View,
            1, 1, 2, 2, 129, 1, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("attention (cuda)").And.Contain("129"));
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, null, default, a.View, a.View.SubView(0, 10),
            2, 2, 5, 7, 8, 1, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("probs").And.Contain("[2,2,5,8]"));
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, a.View.SubView(0, 20),
            new AttentionMaskLayout(0, 7, 0, 0, 1), a.View, a.View, 3, 1, 1, 7, 8, 1, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("mask"));
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Backward(Acc, null, a.View, a.View, a.View, a.View, a.View, a.View, a.View, a.View,
            a.View.SubView(0, 3), 1, 1, 2, 2, 8, 1, 0.1, 0, 0));
        Assert.That(ex!.Message, Does.Contain("attention backward (cuda)").And.Contain("workspace"));
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, null, default, a.View, a.View,
            1, 1, 2, 2, 8, 1, 1.5, 0, 0));
        Assert.That(ex!.Message, Does.Contain("1.5"));
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, null, default, a.View, a.View,
            1, 1, 2, 2, 8, 1, 0, 0, 0, groupSize: 3));
        Assert.That(ex!.Message, Does.Contain("group size 3"));
        using var bytes = Acc.Allocate1D<byte>(4);
        ex = Assert.Throws<ArgumentException>(() => DropoutKernels.Dropout(Acc, null, a.View, a.View, bytes.View, 5, 0.1, 0, 0));
        Assert.That(ex!.Message, Does.Contain("dropout (cuda)").And.Contain("mask 4"));
    }

    // ------------------------------------------------------------------ output only / probabilities only

    private static int[] FloatBits(float[] a, long n) => a.Take((int)n).Select(BitConverter.SingleToInt32Bits).ToArray();

    /// <summary>
    /// The kernel and the CPU backend asked for the output only and for the probabilities only write bitwise what the full
    /// forward writes (the recompute of the backward and the forward of the op rely on it).
    /// </summary>
    private void CheckModes(Accelerator acc, Case c, bool mask, string what)
    {
        double scale = 1.0 / Math.Sqrt(c.D);
        using var q = Rand([c.B, c.H, c.L, c.D], 51 + (ulong)c.L, -2, 2);
        using var k = Rand([c.B, c.H, c.S, c.D], 52 + (ulong)c.S, -2, 2);
        using var v = Rand([c.B, c.H, c.S, c.D], 53);
        var (storage, view) = mask ? PaddingMask(c.B, c.H, c.L, c.S) : (null, null);
        using (storage) using (view)
        {
            long nq = (long)c.B * c.H * c.L * c.D, np = (long)c.B * c.H * c.L * c.S;
            string w = $"{c} {what} mask {mask}";
            // the CPU backend
            using var o = Tensor.Empty([c.B, c.H, c.L, c.D]); using var probs = Tensor.Empty([c.B, c.H, c.L, c.S]);
            using var o2 = Tensor.Full([c.B, c.H, c.L, c.D], double.NaN); using var probs2 = Tensor.Full([c.B, c.H, c.L, c.S], double.NaN);
            Cpu.AttentionForward(q, k, v, view, scale, c.P, c.Seed, c.Offset, o, probs);
            Cpu.AttentionForward(q, k, v, view, scale, c.P, c.Seed, c.Offset, o2, null);
            Cpu.AttentionForward(q, k, v, view, scale, c.P, c.Seed, c.Offset, null, probs2);
            Assert.That(FloatBits(o2.ToArray<float>(), nq), Is.EqualTo(FloatBits(o.ToArray<float>(), nq)), "cpu output only " + w);
            Assert.That(FloatBits(probs2.ToArray<float>(), np), Is.EqualTo(FloatBits(probs.ToArray<float>(), np)), "cpu probabilities only " + w);

            // the kernel
            using var dq = Up(acc, q); using var dk = Up(acc, k); using var dv = Up(acc, v);
            using var dm = storage is null ? null : Up(acc, storage.ToArray<float>());
            var layout = view is null ? default : AttentionMaskLayout.Of(view);
            using var fo = Poisoned(acc, nq); using var fp = Poisoned(acc, np);
            using var oo = Poisoned(acc, nq); using var pp = Poisoned(acc, np);
            AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm?.View, layout, fo.View, fp.View, c.B, c.H, c.L, c.S, c.D, scale, c.P, c.Seed, c.Offset);
            AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm?.View, layout, null, pp.View, c.B, c.H, c.L, c.S, c.D, scale, c.P, c.Seed, c.Offset);
            if (c.S <= AttentionKernels.SCap)
                AttentionKernels.Forward(acc, null, dq.View, dk.View, dv.View, dm?.View, layout, oo.View, null, c.B, c.H, c.L, c.S, c.D, scale, c.P, c.Seed, c.Offset);
            acc.Synchronize();
            var full = FloatBits(fo.GetAsArray1D(), nq);
            OpCheck.AssertClose(D(fo, nq), o.ToArray<double>(), Rt, At, "kernel full forward vs cpu " + w);
            Assert.That(FloatBits(pp.GetAsArray1D(), np), Is.EqualTo(FloatBits(fp.GetAsArray1D(), np)), "kernel probabilities only " + w);
            if (c.S <= AttentionKernels.SCap)
                Assert.That(FloatBits(oo.GetAsArray1D(), nq), Is.EqualTo(full), "kernel output only " + w);
        }
    }

    [Test]
    public void OutputOnlyAndProbabilitiesOnlyAreBitwiseTheFullForward([Values(0.0, 0.1)] double p, [Values] bool mask)
    {
        CheckModes(Acc, new Case(2, 2, 17, 33, 8, p), mask, "S 33");
        CheckModes(Acc, new Case(1, 2, 19, 7, 64, p, Offset: 3), mask, "S 7, offset 3");
        CheckModes(Multi, new Case(2, 2, 17, 33, 64, p, Offset: 1), mask, "4 warps");
        CheckModes(Acc, new Case(2, 1, 9, AttentionKernels.SCap + 37, 8, p), mask, "S > SCap (probabilities only)");
    }

    [Test]
    public void ModesRejectNoOutputsAndOutputOnlyBeyondSharedScores()
    {
        using var a = Up(Acc, new float[4096]);
        var ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, a.View, a.View, a.View, null, default, null, null,
            1, 1, 2, 2, 8, 1, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("attention (cuda)").And.Contain("neither"));
        int s = AttentionKernels.SCap + 1;
        using var big = Up(Acc, new float[2 * s * 8]);
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(Acc, null, big.View, big.View, big.View, null, default, big.View, null,
            1, 1, 2, s, 8, 1, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("probs").And.Contain($"S = {s}"));
        using var q = Tensor.Zeros([1, 1, 2, 4]);
        ex = Assert.Throws<ArgumentException>(() => Cpu.AttentionForward(q, q, q, null, 1, 0, 0, 0, null, null));
        Assert.That(ex!.Message, Does.Contain("attention").And.Contain("neither"));
    }

    // ------------------------------------------------------------------ dropout and the in-kernel Philox

    [Test]
    public void PhiloxInsideKernelEqualsPhiloxBlock([Values(0ul, 42ul, 0xDEADBEEFCAFEBABEul)] ulong seed)
    {
        const int n = 203;
        foreach (ulong offset in new ulong[] { 0, 7, (1ul << 40) + 3, ulong.MaxValue - 20 })
        {
            using var buf = Acc.Allocate1D<uint>(n);
            DropoutKernels.PhiloxWords(Acc, null, buf.View, n, seed, offset);
            Acc.Synchronize();
            var got = buf.GetAsArray1D();
            for (int i = 0; i < n; i++)
            {
                Philox.Block(seed, offset + (ulong)(i >> 2), out var w0, out var w1, out var w2, out var w3);
                uint want = (i & 3) switch { 0 => w0, 1 => w1, 2 => w2, _ => w3 };
                Assert.That(got[i], Is.EqualTo(want), $"seed {seed:X}, offset {offset}, i {i}");
            }
        }
    }

    [Test]
    public void DropoutMatchesCpuBitForBit([Values(1, 6, 1003)] int n, [Values(0.0, 0.1, 0.5, 1.0)] double p)
    {
        foreach (ulong offset in new ulong[] { 0, 13 })
        {
            using var x = Rand([n], (ulong)n, -3, 3);
            using var y = Tensor.Empty([n]);
            using var m = Tensor.Empty([n], DType.UInt8);
            Cpu.Dropout(x, y, m, p, 99, offset);
            using var dx = Up(Acc, x); using var dy = Poisoned(Acc, n);
            using var dm = Acc.Allocate1D(Enumerable.Repeat((byte)7, n).ToArray());
            DropoutKernels.Dropout(Acc, null, dx.View, dy.View, dm.View, n, p, 99, offset);
            Acc.Synchronize();
            Assert.That(dm.GetAsArray1D(), Is.EqualTo(m.ToArray<byte>()), $"mask n={n} p={p} offset={offset}");
            var gy = dy.GetAsArray1D(); var wy = y.ToArray<float>();
            for (int i = 0; i < n; i++)
                Assert.That(BitConverter.SingleToInt32Bits(gy[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(wy[i])), $"y[{i}] n={n} p={p} offset={offset}: {gy[i]} vs {wy[i]}");
        }
    }

    // ------------------------------------------------------------------ CUDA compilation without a GPU

    [Test]
    public void KernelsCompileToPtxForSm90WithinSharedMemoryLimit()
    {
        using var ptxc = new Sm90Ptx();
        const BindingFlags flags = BindingFlags.Static | BindingFlags.NonPublic;
        foreach (var (type, name) in new[] { (typeof(AttentionKernels), "ForwardKernel"), (typeof(AttentionKernels), "BackwardQKernel"),
            (typeof(AttentionKernels), "BackwardKVKernel"), (typeof(DropoutKernels), "DropoutKernel"), (typeof(DropoutKernels), "PhiloxWordsKernel") })
        {
            var mi = type.GetMethod(name, flags)!;
            var ptx = ptxc.Compile(mi, name);
            Assert.That(ptx, Does.Contain(".entry"), name);
            long shared = Regex.Matches(ptx, @"\.shared\s+\.align\s+\d+\s+\.b8\s+\S+\[(\d+)\]").Sum(m => long.Parse(m.Groups[1].Value));
            Assert.That(shared, Is.LessThanOrEqualTo(48 * 1024), $"{name}: {shared} bytes of static shared memory");
            TestContext.Out.WriteLine($"{name}: {shared} B shared, {ptx.Length} chars of PTX");
        }
    }
}
