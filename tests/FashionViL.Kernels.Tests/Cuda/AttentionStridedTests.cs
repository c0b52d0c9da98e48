using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Attention on strided operands (issue 7, branch blhd): q, k, v, go read in place as [B,H,R,D] views with unit stride on D,
/// o, gq, gk, gv written in place in a layout the caller picks. On the CPU backend and on the CUDA backend (the emulator in
/// CI) every result must be bitwise that of contiguous operands, with awkward strides (padded rows, heads interleaved in
/// rows, a non-zero base offset), B or H = 1, dropout and a padding mask, scores in shared and in global memory; nothing
/// outside an output's rows may be written. At the op level, BERT's head split (Reshape → Permute) and merge (Permute →
/// Reshape) around <see cref="Ops.Attention"/> must cost no copy kernel, forward or backward.
/// </summary>
[TestFixture, Category("Cuda")]
public class AttentionStridedTests : CudaTestBase
{
    private static Device On(bool device) => device ? Gpu : Device.Cpu;

    /// <summary>
    /// A [b,h,r,d] view into a NaN-filled storage: heads interleaved in rows of <c>h·d + pad</c> elements (a padded
    /// [B,R,H·D] projection) when <paramref name="interleaved"/>, else head-major blocks with <c>pad</c> spare elements after
    /// each row; starting <paramref name="offset"/> elements in. Returns the storage (owned) and the view.
    /// </summary>
    private static (Tensor Storage, Tensor View) Awkward(Device dev, int b, int h, int r, int d, bool interleaved, int pad, int offset)
    {
        int[] strides;
        long span;
        if (interleaved)
        {
            int row = h * d + pad;
            strides = [r * row, d, row, 1];
            span = (long)b * r * row;
        }
        else
        {
            int row = d + pad;
            strides = [h * r * row, r * row, row, 1];
            span = (long)b * h * r * row;
        }
        var storage = Tensor.Full([(int)span + offset + 5], double.NaN, DType.Float32, dev);
        return (storage, storage.AsStrided([b, h, r, d], strides, offset));
    }

    /// <summary>The values of <paramref name="src"/> in an <see cref="Awkward"/> layout.</summary>
    private static (Tensor Storage, Tensor View) AwkwardCopy(Tensor src, bool interleaved, int pad, int offset)
    {
        var (st, view) = Awkward(src.Device, src.Sizes[0], src.Sizes[1], src.Sizes[2], src.Sizes[3], interleaved, pad, offset);
        Backends.Get(src.Device).Copy(src, view);
        return (st, view);
    }

    /// <summary>Every storage element outside the view's footprint is still the NaN poison.</summary>
    private static void AssertOnlyRowsWritten(Tensor storage, Tensor view, string what)
    {
        var inside = new HashSet<long>();
        var s = view.Sizes; var st = view.Strides;
        for (int a = 0; a < s[0]; a++)
            for (int b = 0; b < s[1]; b++)
                for (int c = 0; c < s[2]; c++)
                    for (int e = 0; e < s[3]; e++)
                        inside.Add(view.Offset + (long)a * st[0] + (long)b * st[1] + (long)c * st[2] + e * st[3]);
        var all = storage.ToArray<float>();
        for (int i = 0; i < all.Length; i++)
            if (!inside.Contains(i)) Assert.That(float.IsNaN(all[i]), $"{what}: element {i} outside the view was written ({all[i]})");
    }

    private sealed record Case(int B, int H, int L, int S, int D, double P, bool Mask);

    private static readonly Case[] Cases =
    [
        new(1, 3, 5, 7, 8, 0.1, true),      // B = 1
        new(2, 1, 5, 7, 8, 0.1, true),      // H = 1
        new(2, 2, 6, 6, 4, 0.0, false),     // self-attention shape, no dropout, no mask
        new(2, 2, 3, 9, 5, 0.2, true),      // odd D
    ];

    /// <summary>S past the shared-memory cap: the scores go through global memory (the CUDA kernels' big-S path).</summary>
    private static readonly Case BigS = new(1, 2, 3, AttentionKernels.SCap + 5, 4, 0.1, true);

    private static Tensor? PaddingMask(Case c, Device dev)
    {
        if (!c.Mask) return null;
        var m = new float[c.B * c.S];
        for (int bi = 0; bi < c.B; bi++)
            for (int j = c.S - 1 - bi; j < c.S; j++) if (bi > 0 || j == c.S - 1) m[bi * c.S + j] = -10000f;
        using var m4 = Tensor.FromArray(m, c.B, 1, 1, c.S);
        using var md = m4.To(dev);
        return md.AsStrided([c.B, c.H, c.L, c.S], [c.S, 0, 0, 1], 0);
    }

    /// <summary>Backend forward and backward on contiguous operands and on strided ones: bitwise equal, and only the output rows written.</summary>
    private static void BackendStridedEqualsContiguous(Device dev, Case c)
    {
        var be = Backends.Get(dev);
        double scale = 1.0 / Math.Sqrt(c.D);
        const ulong seed = 17, offset = 9;
        using var q = Rand([c.B, c.H, c.L, c.D], 31).To(dev);
        using var k = Rand([c.B, c.H, c.S, c.D], 32).To(dev);
        using var v = Rand([c.B, c.H, c.S, c.D], 33).To(dev);
        using var go = Rand([c.B, c.H, c.L, c.D], 34).To(dev);
        using var mask = PaddingMask(c, dev);
        string what = $"{c} on {dev}";

        // contiguous reference
        using var o = Tensor.Empty(q.Shape, DType.Float32, dev);
        using var probs = Tensor.Empty([c.B, c.H, c.L, c.S], DType.Float32, dev);
        be.AttentionForward(q, k, v, mask, scale, c.P, seed, offset, o, probs);
        using var gq = Tensor.Empty(q.Shape, DType.Float32, dev);
        using var gk = Tensor.Empty(k.Shape, DType.Float32, dev);
        using var gv = Tensor.Empty(v.Shape, DType.Float32, dev);
        be.AttentionBackward(q, k, v, probs, scale, c.P, seed, offset, go, gq, gk, gv);

        // strided: inputs interleaved (q, v) or head-major padded (k, go), all with a base offset; outputs the other way
        var (qs, qv) = AwkwardCopy(q, true, 3, 7);
        var (ks, kv) = AwkwardCopy(k, false, 2, 1);
        var (vs, vv) = AwkwardCopy(v, true, 1, 4);
        var (gos, gov) = AwkwardCopy(go, false, 5, 2);
        var (os, ov) = Awkward(dev, c.B, c.H, c.L, c.D, false, 1, 3);
        var (gqs, gqv) = Awkward(dev, c.B, c.H, c.L, c.D, true, 2, 5);
        var (gks, gkv) = Awkward(dev, c.B, c.H, c.S, c.D, true, 0, 6);
        var (gvs, gvv) = Awkward(dev, c.B, c.H, c.S, c.D, false, 3, 1);
        Tensor[] all = [qs, qv, ks, kv, vs, vv, gos, gov, os, ov, gqs, gqv, gks, gkv, gvs, gvv];
        try
        {
            using var probs2 = Tensor.Empty([c.B, c.H, c.L, c.S], DType.Float32, dev);
            be.AttentionForward(qv, kv, vv, mask, scale, c.P, seed, offset, ov, probs2);
            be.AttentionBackward(qv, kv, vv, probs2, scale, c.P, seed, offset, gov, gqv, gkv, gvv);
            Assert.That(Bits(ov), Is.EqualTo(Bits(o)), "o " + what);
            Assert.That(Bits(probs2), Is.EqualTo(Bits(probs)), "probs " + what);
            Assert.That(Bits(gqv), Is.EqualTo(Bits(gq)), "gq " + what);
            Assert.That(Bits(gkv), Is.EqualTo(Bits(gk)), "gk " + what);
            Assert.That(Bits(gvv), Is.EqualTo(Bits(gv)), "gv " + what);
            AssertOnlyRowsWritten(os, ov, "o " + what);
            AssertOnlyRowsWritten(gqs, gqv, "gq " + what);
            AssertOnlyRowsWritten(gks, gkv, "gk " + what);
            AssertOnlyRowsWritten(gvs, gvv, "gv " + what);
            // the output-only forward writes the same o into a strided buffer
            var (o3s, o3v) = Awkward(dev, c.B, c.H, c.L, c.D, true, 1, 2);
            using (o3s) using (o3v)
            {
                be.AttentionForward(qv, kv, vv, mask, scale, c.P, seed, offset, o3v, null);
                Assert.That(Bits(o3v), Is.EqualTo(Bits(o)), "o (output only) " + what);
            }
            Assert.That(Bits(gk).Distinct().Count(), Is.GreaterThan(gk.Numel / 2), "gk is not degenerate " + what);
        }
        finally { foreach (var t in all) t.Dispose(); }
    }

    [Test]
    public void BackendStridedOperandsAreBitwiseContiguous([Values] bool device, [Range(0, 3)] int i)
        => BackendStridedEqualsContiguous(On(device), Cases[i]);

    [Test]
    public void BackendStridedOperandsAreBitwiseContiguousWithLongRows([Values] bool device)
        => BackendStridedEqualsContiguous(On(device), BigS);

    [Test]
    public void NonUnitHeadStrideInputIsCopiedOutputIsRefused([Values] bool device)
    {
        var dev = On(device);
        var be = Backends.Get(dev);
        using var q = Rand([1, 2, 3, 4], 41).To(dev);
        using var k = Rand([1, 2, 5, 4], 42).To(dev);
        using var v = Rand([1, 2, 5, 4], 43).To(dev);
        using var o = Tensor.Empty(q.Shape, DType.Float32, dev);
        using var probs = Tensor.Empty([1, 2, 3, 5], DType.Float32, dev);
        be.AttentionForward(q, k, v, null, 0.5, 0, 0, 0, o, probs);
        // q with its D elements two apart: read through a copy, same bits
        using var wide = Tensor.Full([1, 2, 3, 8], double.NaN, DType.Float32, dev);
        using var qw = wide.AsStrided([1, 2, 3, 4], [48, 24, 8, 2], 0);
        be.Copy(q, qw);
        using var o2 = Tensor.Empty(q.Shape, DType.Float32, dev);
        be.AttentionForward(qw, k, v, null, 0.5, 0, 0, 0, o2, null);
        Assert.That(Bits(o2), Is.EqualTo(Bits(o)), "o from a q with D stride 2");
        // an output with D stride 2 cannot be written in place: a clear error naming it
        using var ow = wide.AsStrided([1, 2, 3, 4], [48, 24, 8, 2], 0);
        var ex = Assert.Throws<ArgumentException>(() => be.AttentionForward(q, k, v, null, 0.5, 0, 0, 0, ow, null));
        Assert.That(ex!.Message, Does.Contain("unit stride").And.Contain("[1, 2, 3, 4]").Or.Contain("[1,2,3,4]"));
    }

    [Test]
    public void KernelRejectsALayoutPastItsView()
    {
        if (OnRealGpu) Assert.Ignore("emulator only");
        var acc = Dev.Runtime.Accelerator;
        using var buf = acc.Allocate1D<float>(64);
        var layouts = AttentionLayouts.Dense(2, 4, 4, 4);   // 1×2×4×4 = 32 elements each
        layouts.K = new AttentionHeadsLayout(40, 16, 4, 8); // last row at 40 + 4 + 24 = 68 > 64
        var ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Forward(acc, null, buf.View, buf.View, buf.View, null, default,
            buf.View, buf.View, layouts, 1, 2, 4, 4, 4, 0.5, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("k layout"));
        layouts = AttentionLayouts.Dense(2, 4, 4, 4);
        layouts.GV = new AttentionHeadsLayout(0, -1, 4, 8);
        ex = Assert.Throws<ArgumentException>(() => AttentionKernels.Backward(acc, null, buf.View, buf.View, buf.View, buf.View, buf.View,
            buf.View, buf.View, buf.View, buf.View, layouts, 1, 2, 4, 4, 4, 0.5, 0, 0, 0));
        Assert.That(ex!.Message, Does.Contain("gv layout").And.Contain("negative"));
    }

    /// <summary>
    /// BERT's self-attention around the op, on leaves yq, yk, yv [B,L,H·D] (the projections): heads split as views (new) or
    /// made contiguous (as before), merged back with Permute → Reshape. Returns the merged output's bits, the three leaf
    /// gradients' bits, the kernel launches of forward + backward (device only), and whether the merge was a view.
    /// </summary>
    private static (List<int[]> Bits, long Launches, bool MergeIsView) BertLike(Device dev, bool contiguousHeads, int b, int h, int l, int d, double p)
    {
        var rt = dev.IsCpu ? null : Dev.Runtime;
        using var yq = Rand([b, l, h * d], 51).To(dev);
        using var yk = Rand([b, l, h * d], 52).To(dev);
        using var yv = Rand([b, l, h * d], 53).To(dev);
        using var w = Rand([b, l, h * d], 54).To(dev);
        yq.RequiresGrad = yk.RequiresGrad = yv.RequiresGrad = true;
        var m = new float[b * l];
        m[b * l - 1] = -10000f;
        using var m4 = Tensor.FromArray(m, b, 1, 1, l);
        using var mask = m4.To(dev);
        var res = new List<int[]>();
        bool mergeIsView;
        if (rt is not null) Dev.Synchronize();
        var c0 = rt?.Counters;
        using (Tensor.Scope())
        {
            Tensor Heads(Tensor y)
            {
                var hv = y.Reshape(b, l, h, d).Permute(0, 2, 1, 3);
                return contiguousHeads ? hv.Contiguous() : hv;
            }
            var o = Ops.Attention(Heads(yq), Heads(yk), Heads(yv), mask, 1.0 / Math.Sqrt(d), p, true, new Generator(5));
            var perm = o.Permute(0, 2, 1, 3);
            mergeIsView = perm.IsContiguous;
            var merged = perm.Reshape(b, l, h * d);
            var loss = (merged * w).Sum();
            loss.Backward();
            if (rt is not null) Dev.Synchronize();
            c0 = rt is null ? null : rt.Counters - c0!.Value;
            res.Add(Bits(merged));
        }
        res.Add(Bits(yq.Grad!)); res.Add(Bits(yk.Grad!)); res.Add(Bits(yv.Grad!));
        return (res, c0?.KernelLaunches ?? 0, mergeIsView);
    }

    [Test]
    public void BertHeadSplitAndMergeAreFreeAndBitwiseTheSame([Values] bool device, [Values(1, 2)] int b, [Values(1, 3)] int h, [Values(0.0, 0.1)] double p)
    {
        var dev = On(device);
        var now = BertLike(dev, false, b, h, 5, 4, p);
        var before = BertLike(dev, true, b, h, 5, 4, p);
        string[] names = ["output", "grad yq", "grad yk", "grad yv"];
        for (int i = 0; i < names.Length; i++) Assert.That(now.Bits[i], Is.EqualTo(before.Bits[i]), $"{names[i]} b {b} h {h} p {p} on {dev}");
        Assert.That(now.Bits[2].Distinct().Count(), Is.GreaterThan(now.Bits[2].Length / 2), "grad yk is not degenerate");
        if (h > 1)
        {
            Assert.That(now.MergeIsView, Is.True, "o.Permute(0, 2, 1, 3) is contiguous: the merge is a view");
            Assert.That(before.MergeIsView, Is.False, "contiguous heads give a contiguous [B,H,L,D] output, as before");
            // contiguous heads: 3 head copies + the merge copy forward, 3 head-gradient copies backward (the output gradient's
            // copy of the old code is gone there too: the op now takes its gradient strided); BERT before this change paid 8
            if (device) Assert.That(before.Launches - now.Launches, Is.EqualTo(7), "copy kernels saved by split heads");
        }
    }
}
