using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>How a per-row loss is reduced.</summary>
public enum Reduction { Mean, Sum, None }

public static partial class Ops
{
    private static int[] DropLast(Tensor x) => x.Sizes[..^1].ToArray();

    extension(Tensor x)
    {
        /// <summary>
        /// Layer norm over the last dim (PyTorch's <c>F.layer_norm(x, [D], weight, bias, eps)</c>); weight and
        /// bias are [D] or null. BERT uses eps 1e-12. Statistics use the biased variance.
        /// </summary>
        public Tensor LayerNorm(Tensor? weight, Tensor? bias, double eps = 1e-12)
        {
            const string op = "layer_norm";
            if (x.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {x.ShapeString}");
            if (weight is not null) SameDevice(op, x, weight);
            if (bias is not null) SameDevice(op, x, bias);
            using var xc = x.ContiguousRaw();
            var y = Tensor.Empty(x.Shape, x.DType, x.Device);
            var rows = DropLast(x);
            using var mean = Tensor.Empty(rows, x.DType, x.Device);
            using var rstd = Tensor.Empty(rows, x.DType, x.Device);
            B(x).LayerNormForward(xc, weight, bias, eps, y, mean, rstd);
            if (!Graph.NeedsGrad(x, weight, bias)) return y;
            bool rx = x.RequiresGrad, rw = weight?.RequiresGrad == true, rb = bias?.RequiresGrad == true;
            int[]? ws = weight?.Shape, bs = bias?.Shape;
            return Graph.Record(y, op, [x, weight, bias], [xc, weight, mean, rstd], (gy, s) =>
            {
                var gx = Tensor.Empty(s[0]!.Shape, gy.DType, gy.Device);
                Tensor? gw = rw ? Tensor.Empty(ws!, gy.DType, gy.Device) : null;
                Tensor? gb = rb ? Tensor.Empty(bs!, gy.DType, gy.Device) : null;
                B(gy).LayerNormBackward(s[0]!, gy, s[1], s[2]!, s[3]!, gx, gw, gb);
                Tensor? gxr = gx;
                if (!rx) { gx.Dispose(); gxr = null; }
                return [gxr, gw, gb];
            });
        }

        /// <summary>Softmax along <paramref name="dim"/> (numerically stable).</summary>
        public Tensor Softmax(int dim = -1) => SoftmaxDim(x, dim, false);

        /// <summary>log(softmax(x)) along <paramref name="dim"/>, computed as x − max − log Σ exp(x − max).</summary>
        public Tensor LogSoftmax(int dim = -1) => SoftmaxDim(x, dim, true);

        /// <summary>
        /// The k largest (or smallest) entries of each row along the last dim, sorted; ties keep the lower
        /// index first. Values carry a gradient (scattered back to the chosen positions); indices are Int64.
        /// </summary>
        public (Tensor Values, Tensor Indices) TopK(int k, bool largest = true)
        {
            if (x.Rank == 0) throw new ArgumentException($"topk: input must have at least one dim, got {x.ShapeString}");
            var shape = x.Shape; shape[^1] = k;
            if (k < 0 || k > x.Sizes[^1]) throw new ArgumentException($"topk: k = {k} is out of range for {x.Sizes[^1]} elements in the last dim of {x.ShapeString}");
            var values = Tensor.Empty(shape, x.DType, x.Device);
            var indices = Tensor.Empty(shape, DType.Int64, x.Device);
            B(x).TopK(x, k, largest, values, indices);
            return (RecordSelectRows("topk", x, values, indices), indices);
        }

        /// <summary>Stable sort along the last dim (ties keep the lower index first); NaN counts as the largest value.</summary>
        public (Tensor Values, Tensor Indices) Sort(bool descending = false)
        {
            if (x.Rank == 0) throw new ArgumentException($"sort: input must have at least one dim, got {x.ShapeString}");
            var values = Tensor.Empty(x.Shape, x.DType, x.Device);
            var indices = Tensor.Empty(x.Shape, DType.Int64, x.Device);
            B(x).Sort(x, descending, values, indices);
            return (RecordSelectRows("sort", x, values, indices), indices);
        }
    }

    /// <summary>values = x.gather(-1, indices): the gradient is scattered back into zeros of x's shape.</summary>
    private static Tensor RecordSelectRows(string name, Tensor x, Tensor values, Tensor indices)
    {
        if (!Graph.NeedsGrad(x)) return values;
        var xs = x.Shape;
        return Graph.Record(values, name, [x], [indices], (gy, s) =>
        {
            var gx = Tensor.Zeros(xs, gy.DType, gy.Device);
            B(gy).Scatter(gx, xs.Length - 1, s[0]!, gy, add: true);
            return [gx];
        });
    }

    private static Tensor SoftmaxDim(Tensor x, int dim, bool log)
    {
        string op = log ? "log_softmax" : "softmax";
        if (x.Rank == 0)
        {
            using var one = x.Reshape(1);
            using var r = SoftmaxDim(one, 0, log);
            return r.Reshape([]);
        }
        int d = Shape.Dim(dim, x.Rank, op);
        if (d == x.Rank - 1) return SoftmaxLast(x, log);
        // Move the dim last, normalise there, and move it back (a permuted view of a contiguous result).
        using var t = x.Transpose(d, -1);
        using var y = SoftmaxLast(t, log);
        return y.Transpose(d, -1);
    }

    private static Tensor SoftmaxLast(Tensor x, bool log)
    {
        string op = log ? "log_softmax" : "softmax";
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        B(x).Softmax(x, y, log);
        return Graph.Record(y, op, [x], [y], (gy, s) =>
        {
            var gx = Tensor.Empty(gy.Shape, gy.DType, gy.Device);
            B(gy).SoftmaxBackward(s[0]!, gy, gx, log);
            return [gx];
        });
    }

    /// <summary>
    /// Cross-entropy of logits [N, C]. With an Int64 target [N] (class ids; rows equal to
    /// <paramref name="ignoreIndex"/> contribute 0 and are left out of the mean, as PyTorch), or with a
    /// floating target [N, C] of class probabilities (loss = −Σ t·log_softmax(logits); the mean is over all N
    /// rows; no gradient flows to the target). Mean over zero counted rows gives NaN, as PyTorch.
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, int ignoreIndex = -100, Reduction reduction = Reduction.Mean)
    {
        const string op = "cross_entropy";
        SameDevice(op, logits, target);
        if (logits.Rank != 2) throw new ArgumentException($"{op}: logits must be [N, C], got {logits.ShapeString}");
        bool soft = target.DType.IsFloating();
        if (!soft && target.DType != DType.Int64) throw new ArgumentException($"{op}: target {target.ShapeString} must be int64 class ids or floating probabilities, got {target.DType.Name()}");
        if (soft && !target.Sizes.SequenceEqual(logits.Sizes)) throw new ArgumentException($"{op}: soft target {target.ShapeString} must match logits {logits.ShapeString}");
        if (soft) SameDType(op, logits, target);
        int n = logits.Sizes[0];
        using var xc = logits.ContiguousRaw();
        using var tc = target.ContiguousRaw();
        var loss = Tensor.Empty([n], logits.DType, logits.Device);
        using var lse = Tensor.Empty([n], logits.DType, logits.Device);
        B(logits).CrossEntropyForward(xc, soft ? null : tc, soft ? tc : null, ignoreIndex, loss, lse);
        var rows = Graph.Record(loss, op, [logits], [xc, tc, lse], (gy, s) =>
        {
            var g = Tensor.Empty(s[0]!.Shape, gy.DType, gy.Device);
            B(gy).CrossEntropyBackward(s[0]!, soft ? null : s[1], soft ? s[1] : null, ignoreIndex, s[2]!, gy, g);
            return [g];
        });
        if (reduction == Reduction.None) return rows;
        double count = n;
        if (!soft && reduction == Reduction.Mean) count = tc.ToArray<long>().Count(t => t != ignoreIndex);
        using (rows)
        {
            if (reduction == Reduction.Sum) return rows.Sum();
            using var sum = rows.Sum();
            return sum.MulScalar(1.0 / count);
        }
    }

    /// <summary>
    /// Inverted dropout: in training, each element is zeroed with probability p and the rest scaled by
    /// 1/(1−p); otherwise (or with p = 0) the identity. The mask comes from the Philox stream of
    /// <paramref name="generator"/> (<see cref="Generator.Default"/> when null): element i is kept iff
    /// Philox.Uniform(seed, offset, i) ≥ p, where offset is reserved from the generator for x.Numel elements.
    /// </summary>
    public static Tensor Dropout(Tensor x, double p, bool training = true, Generator? generator = null)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"dropout: probability {p} must be in [0, 1] (input {x.ShapeString})");
        if (!training || p == 0) return ViewOp("dropout", x, x.Alias(), gy => gy.Alias());
        var gen = generator ?? Generator.Default;
        ulong seed = gen.Seed, offset = gen.Reserve(x.Numel);
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        using (var mask = Tensor.Empty(x.Shape, DType.UInt8, x.Device))
            B(x).Dropout(x, y, mask, p, seed, offset);
        // Backward replays the same stream (gx = gy·mask/(1−p)) instead of keeping the mask.
        return Graph.Record(y, "dropout", [x], [], (gy, _) =>
        {
            var gx = Tensor.Empty(gy.Shape, gy.DType, gy.Device);
            using var m = Tensor.Empty(gy.Shape, DType.UInt8, gy.Device);
            B(gy).Dropout(gy, gx, m, p, seed, offset);
            return [gx];
        });
    }

    /// <summary>
    /// LayerNorm(Dropout(h) + residual) over the last dim in one backend call forward and one backward (BERT's
    /// residual output block), bitwise equal to <c>Dropout(h, p, training, generator) + residual</c> followed by
    /// <c>LayerNorm(weight, bias, eps)</c>: the dropout draws the same Philox elements (h.Numel reserved from
    /// <paramref name="generator"/>, <see cref="Generator.Default"/> when null) and nothing is drawn in eval or with p = 0.
    /// h and residual have the same shape; the residual's gradient is the layer-norm input gradient itself.
    /// </summary>
    public static Tensor DropoutAddLayerNorm(Tensor h, Tensor residual, double p, bool training, Generator? generator,
        Tensor? weight, Tensor? bias, double eps = 1e-12)
    {
        const string op = "dropout_add_layer_norm";
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"{op}: probability {p} must be in [0, 1] (input {h.ShapeString})");
        if (h.Rank == 0) throw new ArgumentException($"{op}: input must have at least one dim, got {h.ShapeString}");
        if (!h.Sizes.SequenceEqual(residual.Sizes))
            throw new ArgumentException($"{op}: h {h.ShapeString} and residual {residual.ShapeString} must have the same shape");
        SameDevice(op, h, residual);
        if (weight is not null) SameDevice(op, h, weight);
        if (bias is not null) SameDevice(op, h, bias);
        double pe = training ? p : 0;
        ulong seed = 0, offset = 0;
        if (pe > 0)
        {
            var gen = generator ?? Generator.Default;
            seed = gen.Seed; offset = gen.Reserve(h.Numel);
        }
        var s = Tensor.Empty(h.Shape, h.DType, h.Device);
        var y = Tensor.Empty(h.Shape, h.DType, h.Device);
        var rows = DropLast(h);
        using var mean = Tensor.Empty(rows, h.DType, h.Device);
        using var rstd = Tensor.Empty(rows, h.DType, h.Device);
        B(h).DropoutAddLayerNormForward(h, residual, pe, seed, offset, weight, bias, eps, s, y, mean, rstd);
        if (!Graph.NeedsGrad(h, residual, weight, bias)) { s.Dispose(); return y; }
        bool rh = h.RequiresGrad, rr = residual.RequiresGrad, rw = weight?.RequiresGrad == true, rb = bias?.RequiresGrad == true;
        int[]? ws = weight?.Shape, bs = bias?.Shape;
        try
        {
            return Graph.Record(y, op, [h, residual, weight, bias], [s, weight, mean, rstd], (gy, sv) =>
            {
                var gs = Tensor.Empty(sv[0]!.Shape, gy.DType, gy.Device);
                // p = 0: the dropout is the identity, so h's gradient is gs itself (an alias, as Ops.Dropout's backward)
                Tensor? gh = rh && pe > 0 ? Tensor.Empty(sv[0]!.Shape, gy.DType, gy.Device) : null;
                Tensor? gw = rw ? Tensor.Empty(ws!, gy.DType, gy.Device) : null;
                Tensor? gb = rb ? Tensor.Empty(bs!, gy.DType, gy.Device) : null;
                B(gy).DropoutAddLayerNormBackward(sv[0]!, gy, sv[1], sv[2]!, sv[3]!, pe, seed, offset, gs, gh, gw, gb);
                if (rh && gh is null) gh = gs.Alias();
                Tensor? gr = gs;
                if (!rr) { gs.Dispose(); gr = null; }
                return [gh, gr, gw, gb];
            });
        }
        finally { s.Dispose(); }
    }

    /// <summary>
    /// Fused scaled-dot-product attention: dropout(softmax(scale·q·kᵀ + mask))·v with q [B,H,L,D] and
    /// k, v [B,H,S,D]. <paramref name="additiveMask"/> broadcasts to [B,H,L,S] (e.g. [B,1,1,S] with −10000 on
    /// padded keys) and gets no gradient. Dropout (training and p &gt; 0) draws B·H·L·S elements from
    /// <paramref name="generator"/> (<see cref="Generator.Default"/> when null) with the rule of <see cref="Dropout"/>.
    /// <para>
    /// Layouts: q, k, v may be any strided views with unit stride on D (e.g. <c>y.Reshape(B, L, H, D).Permute(0, 2, 1, 3)</c>
    /// of a Linear output y [B,L,H·D]); the backends read them in place (a non-unit D stride costs a contiguous copy). The
    /// output, and in the backward gq, gk, gv, follow the layout of q, k, v (<see cref="HeadsLike"/>): for heads interleaved
    /// in rows like the example, o is a [B,L,H,D] contiguous buffer returned as its [B,H,L,D] view, so
    /// <c>o.Permute(0, 2, 1, 3).Reshape(B, L, H·D)</c> is a free view, and the gradients flow back to y without a copy. The
    /// output gradient is taken in any layout (no copy when its D stride is unit). Values are bitwise those of contiguous inputs.
    /// </para>
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? additiveMask, double scale, double dropoutP = 0, bool training = true, Generator? generator = null)
    {
        const string op = "attention";
        SameDevice(op, q, k); SameDevice(op, q, v);
        SameDType(op, q, k); SameDType(op, q, v);
        if (q.Rank != 4 || k.Rank != 4 || v.Rank != 4)
            throw new ArgumentException($"{op}: q {q.ShapeString}, k {k.ShapeString}, v {v.ShapeString} must all be [B,H,L,D]");
        if (!(dropoutP >= 0 && dropoutP <= 1)) throw new ArgumentException($"{op}: dropout probability {dropoutP} must be in [0, 1]");
        int[] pShape = [q.Sizes[0], q.Sizes[1], q.Sizes[2], k.Sizes[2]];
        double p = training ? dropoutP : 0;
        ulong seed = 0, offset = 0;
        if (p > 0)
        {
            var gen = generator ?? Generator.Default;
            seed = gen.Seed; offset = gen.Reserve(Shape.Numel(pShape));
        }
        Tensor? m = null;
        if (additiveMask is not null)
        {
            SameDevice(op, q, additiveMask); SameDType(op, q, additiveMask);
            try { m = ExpandRaw(additiveMask, pShape); }
            catch (ArgumentException) { throw new ArgumentException($"{op}: mask {additiveMask.ShapeString} does not broadcast to the scores {Shape.Format(pShape)} of q {q.ShapeString}, k {k.ShapeString}"); }
        }
        var o = HeadsLike(q);
        if (AttentionFullPasses)
            using (var probs = Tensor.Empty(pShape, q.DType, q.Device))
                B(q).AttentionForward(q, k, v, m, scale, p, seed, offset, o, probs);
        else
            B(q).AttentionForward(q, k, v, m, scale, p, seed, offset, o, null);   // output only: nothing [B,H,L,S] allocated
        // The probabilities [B,H,L,S] are not saved: backward recomputes them from q, k, v and the mask (the same kernel on
        // the same inputs, and dropout redrawn from the same Philox seed and offset, so gradients are bitwise those of
        // saved probabilities). Like PyTorch's fused attention, a step then holds one layer's [B,H,L,S] at a time instead
        // of every layer's: 12 × 47 MB for BERT-base at batch 64 and 124 tokens. The recompute asks for the probabilities
        // only (scores, mask, softmax: no dropout, no P·V, no output), about half an attention forward per layer.
        using (m)
            return Graph.Record(o, op, [q, k, v], [q, k, v, m], stridedGradient: true, rule: (go, s) =>
            {
                using var probs = Tensor.Empty(pShape, go.DType, go.Device);
                if (AttentionFullPasses)
                    using (var again = Tensor.Empty(s[0]!.Shape, go.DType, go.Device))
                        B(go).AttentionForward(s[0]!, s[1]!, s[2]!, s[3], scale, p, seed, offset, again, probs);
                else
                    B(go).AttentionForward(s[0]!, s[1]!, s[2]!, s[3], scale, p, seed, offset, null, probs);
                var gq = HeadsLike(s[0]!);
                var gk = HeadsLike(s[1]!);
                var gv = HeadsLike(s[2]!);
                B(go).AttentionBackward(s[0]!, s[1]!, s[2]!, probs, scale, p, seed, offset, go, gq, gk, gv);
                return [gq, gk, gv];
            });
    }

    /// <summary>
    /// A new [B,H,R,D] tensor laid out like the attention operand <paramref name="t"/>: when t's heads are interleaved within
    /// its rows (H, R &gt; 1, unit D stride and head stride &lt; row stride, as the heads of a [B,R,H·D] projection), a contiguous
    /// [B,R,H,D] buffer returned as its permuted [B,H,R,D] view; otherwise contiguous [B,H,R,D].
    /// </summary>
    internal static Tensor HeadsLike(Tensor t)
    {
        int b = t.Sizes[0], h = t.Sizes[1], r = t.Sizes[2], d = t.Sizes[3];
        bool interleaved = h > 1 && r > 1 && (d <= 1 || t.Strides[3] == 1) && t.Strides[1] < t.Strides[2];
        if (!interleaved) return Tensor.Empty(t.Shape, t.DType, t.Device);
        using var rows = Tensor.Empty([b, r, h, d], t.DType, t.Device);
        return rows.AsStrided([b, h, r, d], [r * h * d, d, h * d, 1], rows.Offset);
    }

    /// <summary>
    /// Test switch: when set, <see cref="Attention"/> runs the full forward both times (output and probabilities in the
    /// forward, and again in the backward's recompute), as before the output-only / probabilities-only modes. Results
    /// must be bitwise the same either way; tests compare the two.
    /// </summary>
    internal static bool AttentionFullPasses { get; set; }

    /// <summary>Nearest codebook entry for each row of z [N, D] (codebook [K, D]); Int64 [N]; first minimum on ties. No gradient.</summary>
    public static Tensor VqLookup(Tensor z, Tensor codebook)
    {
        SameDevice("vq_lookup", z, codebook);
        if (z.Rank != 2) throw new ArgumentException($"vq_lookup: z must be [N, D], got {z.ShapeString}");
        var ids = Tensor.Empty([z.Sizes[0]], DType.Int64, z.Device);
        B(z).VqLookup(z, codebook, ids);
        return ids;
    }
}
