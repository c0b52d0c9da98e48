using FashionViL.Tensors;

namespace FashionViL.Autograd;

public static partial class Ops
{
    // ------------------------------------------------------------------ raw GEMM plumbing (no autograd)

    /// <summary>
    /// A view of <paramref name="t"/> ([..., rows, cols]) that IBackend.MatMul accepts without a copy: row-major
    /// (last dim stride 1) as is, or a column-major view (a transpose) swapped back with <paramref name="flipped"/> set,
    /// so that op(view) with the flag toggled is t. Anything else is copied to contiguous.
    /// </summary>
    private static Tensor GemmOperand(Tensor t, out bool flipped)
    {
        int r = t.Rank, rows = t.Sizes[r - 2], cols = t.Sizes[r - 1];
        int sr = t.Strides[r - 2], sc = t.Strides[r - 1];
        flipped = false;
        if ((cols <= 1 || sc == 1) && (rows <= 1 || sr >= cols)) return t.Alias();
        if ((rows <= 1 || sr == 1) && (cols <= 1 || sc >= rows))
        {
            var shape = t.Shape; (shape[r - 2], shape[r - 1]) = (cols, rows);
            var strides = t.Strides.ToArray(); (strides[r - 2], strides[r - 1]) = (sc, sr);
            flipped = true;
            return t.AsStrided(shape, strides, t.Offset);
        }
        return t.ContiguousRaw();
    }

    /// <summary>The single batch stride of dims [0, nb) of <paramref name="t"/>, or null when they do not collapse.</summary>
    private static int? BatchStride(Tensor t, int nb)
    {
        int? inner = null; long expect = 0;
        for (int d = nb - 1; d >= 0; d--)
        {
            int size = t.Sizes[d];
            if (size == 1) continue;
            if (inner is null) { inner = t.Strides[d]; expect = (long)t.Strides[d] * size; continue; }
            if (t.Strides[d] != expect) return null;
            expect *= size;
        }
        return inner ?? 0;
    }

    /// <summary>
    /// c ← op(a)·op(b) (+ bias) where c is a contiguous [batch..., M, N] and a, b are [..., rows, cols] with batch dims that
    /// broadcast to c's. One backend call when every operand's batch dims collapse to a single stride, else one call per matrix.
    /// </summary>
    internal static void GemmRaw(Tensor a, bool transA, Tensor b, bool transB, Tensor c, Tensor? bias = null)
    {
        if (c.Numel == 0) return;
        using var pa = GemmOperand(a, out bool fa);
        using var pb = GemmOperand(b, out bool fb);
        transA ^= fa; transB ^= fb;
        int nb = c.Rank - 2;
        var batch = c.Sizes[..nb].ToArray();
        using var ea = ExpandRaw(pa, [.. batch, pa.Sizes[^2], pa.Sizes[^1]]);
        using var eb = ExpandRaw(pb, [.. batch, pb.Sizes[^2], pb.Sizes[^1]]);
        int total = Shape.Numel(batch);
        int M = c.Sizes[^2], N = c.Sizes[^1];
        var backend = B(c);
        int? sa = BatchStride(ea, nb), sb = BatchStride(eb, nb);
        if (sa is not null && sb is not null)
        {
            using var a3 = Mat(ea, total, sa.Value, ea.Offset);
            using var b3 = Mat(eb, total, sb.Value, eb.Offset);
            using var c3 = c.AsStrided([total, M, N], [M * N, N, 1], c.Offset);
            backend.MatMul(a3, b3, c3, transA, transB, 1, 0, bias);
            return;
        }
        var idx = new int[nb];
        for (int i = 0; i < total; i++)
        {
            int rem = i, oa = ea.Offset, ob = eb.Offset;
            for (int d = nb - 1; d >= 0; d--)
            {
                idx[d] = rem % batch[d]; rem /= batch[d];
                oa += idx[d] * ea.Strides[d]; ob += idx[d] * eb.Strides[d];
            }
            using var a1 = Mat(ea, 1, 0, oa);
            using var b1 = Mat(eb, 1, 0, ob);
            using var c1 = c.AsStrided([1, M, N], [M * N, N, 1], c.Offset + i * M * N);
            backend.MatMul(a1, b1, c1, transA, transB, 1, 0, bias);
        }

        static Tensor Mat(Tensor t, int n, int stride, int offset)
            => t.AsStrided([n, t.Sizes[^2], t.Sizes[^1]], [stride, t.Strides[^2], t.Strides[^1]], offset);
    }

    private static Tensor SumToShape(Tensor full, int[] shape)
    {
        using var f = full;
        return SumTo(f, shape);
    }

    // ------------------------------------------------------------------ differentiable cores

    /// <summary>a [..., M, K] · b [..., K, N] with broadcast batch dims (both rank ≥ 2).</summary>
    private static Tensor MatmulCore(string name, Tensor a, Tensor b)
    {
        int M = a.Sizes[^2], K = a.Sizes[^1], N = b.Sizes[^1];
        int[] batch;
        try { batch = Shape.Broadcast(a.Sizes[..^2], b.Sizes[..^2], name); }
        catch (ArgumentException) { throw new ArgumentException($"{name}: batch dims of {a.ShapeString} and {b.ShapeString} cannot be broadcast"); }
        var y = Tensor.Empty([.. batch, M, N], a.DType, a.Device);
        GemmRaw(a, false, b, false, y);
        if (!Graph.NeedsGrad(a, b)) return y;
        int[] sa = a.Shape, sb = b.Shape;
        bool ra = a.RequiresGrad, rb = b.RequiresGrad;
        return Graph.Record(y, name, [a, b], [rb ? a : null, ra ? b : null], (gy, s) =>
        {
            Tensor? ga = null, gb = null;
            if (ra)
            {
                // dL/da = gy · bᵀ, then summed over a's broadcast batch dims
                var full = Tensor.Empty([.. batch, M, K], gy.DType, gy.Device);
                GemmRaw(gy, false, s[1]!, true, full);
                ga = SumToShape(full, sa);
            }
            if (rb)
            {
                // dL/db = aᵀ · gy
                var full = Tensor.Empty([.. batch, K, N], gy.DType, gy.Device);
                GemmRaw(s[0]!, true, gy, false, full);
                gb = SumToShape(full, sb);
            }
            return [ga, gb];
        });
    }

    /// <summary>x [M, in] · weightᵀ ([out, in]) + bias [out].</summary>
    private static Tensor LinearCore(Tensor x, Tensor weight, Tensor? bias)
    {
        int M = x.Sizes[0], inF = x.Sizes[1], outF = weight.Sizes[0];
        var y = Tensor.Empty([M, outF], x.DType, x.Device);
        using (var bc = bias?.ContiguousRaw()) GemmRaw(x, false, weight, true, y, bc);
        if (!Graph.NeedsGrad(x, weight, bias)) return y;
        bool rx = x.RequiresGrad, rw = weight.RequiresGrad, rbias = bias is not null && bias.RequiresGrad;
        return Graph.Record(y, "linear", [x, weight, bias], [rw ? x : null, rx ? weight : null], (gy, s) =>
        {
            Tensor? gx = null, gw = null, gb = null;
            if (rx) { gx = Tensor.Empty([M, inF], gy.DType, gy.Device); GemmRaw(gy, false, s[1]!, false, gx); }
            if (rw) { gw = Tensor.Empty([outF, inF], gy.DType, gy.Device); GemmRaw(gy, true, s[0]!, false, gw); }
            if (rbias) gb = SumTo(gy, [outF]);
            return [gx, gw, gb];
        });
    }

    private static void CheckPair(string op, Tensor a, Tensor b)
    {
        SameDevice(op, a, b);
        SameDType(op, a, b);
        if (!a.DType.IsFloating()) throw new ArgumentException($"{op}: {a.ShapeString} is {a.DType.Name()}; matrix products need a floating dtype");
    }

    // ------------------------------------------------------------------ public ops

    /// <summary>
    /// Batched matrix product a [B, M, K] · b [B, K, N] → [B, M, N] (no broadcasting, as torch.bmm).
    /// </summary>
    public static Tensor Bmm(Tensor a, Tensor b)
    {
        CheckPair("bmm", a, b);
        if (a.Rank != 3 || b.Rank != 3)
            throw new ArgumentException($"bmm: both operands must be rank 3 [batch, rows, cols], got {a.ShapeString} and {b.ShapeString}");
        if (a.Sizes[0] != b.Sizes[0])
            throw new ArgumentException($"bmm: batch sizes differ: {a.ShapeString} and {b.ShapeString}");
        if (a.Sizes[2] != b.Sizes[1])
            throw new ArgumentException($"bmm: {a.ShapeString} and {b.ShapeString} cannot be multiplied ({a.Sizes[2]} ≠ {b.Sizes[1]})");
        return MatmulCore("bmm", a, b);
    }

    /// <summary>
    /// Affine map on the last dim, as torch.nn.functional.linear: x [..., in] · weightᵀ (weight [out, in]) + bias [out]
    /// → [..., out]. One GEMM with the bias fused into its epilogue.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        CheckPair("linear", x, weight);
        if (weight.Rank != 2) throw new ArgumentException($"linear: weight {weight.ShapeString} must be [out, in]");
        if (x.Rank < 1) throw new ArgumentException($"linear: input {x.ShapeString} needs at least 1 dim");
        int inF = weight.Sizes[1], outF = weight.Sizes[0];
        if (x.Sizes[^1] != inF)
            throw new ArgumentException($"linear: input {x.ShapeString} has {x.Sizes[^1]} features, weight {weight.ShapeString} expects {inF}");
        if (bias is not null)
        {
            CheckPair("linear", x, bias);
            if (bias.Rank != 1 || bias.Sizes[0] != outF)
                throw new ArgumentException($"linear: bias {bias.ShapeString} must be [{outF}] for weight {weight.ShapeString}");
        }
        var lead = x.Sizes[..^1].ToArray();
        int M = Shape.Numel(lead);
        using var x2 = x.Reshape(M, inF);
        using var y2 = LinearCore(x2, weight, bias);
        return y2.Reshape([.. lead, outF]);
    }

    extension(Tensor x)
    {
        /// <summary>
        /// Matrix product with torch.matmul semantics: 1-D·1-D is a dot product (a scalar), a 1-D operand is treated as
        /// a row (left) or column (right) vector and that dim is removed from the result, and for rank ≥ 3 the leading
        /// (batch) dims broadcast.
        /// </summary>
        public Tensor Matmul(Tensor other)
        {
            var y = other;
            CheckPair("matmul", x, y);
            if (x.Rank == 0 || y.Rank == 0)
                throw new ArgumentException($"matmul: both operands need at least 1 dim, got {x.ShapeString} and {y.ShapeString}");
            int kx = x.Sizes[^1], ky = y.Rank == 1 ? y.Sizes[0] : y.Sizes[^2];
            if (kx != ky)
                throw new ArgumentException($"matmul: {x.ShapeString} and {y.ShapeString} cannot be multiplied ({kx} ≠ {ky})");
            if (x.Rank == 1 && y.Rank == 1)
            {
                using var xr = x.Reshape(1, kx);
                using var yr = y.Reshape(kx, 1);
                using var r = MatmulCore("matmul", xr, yr);
                return r.Reshape([]);
            }
            if (x.Rank == 1)
            {
                using var xr = x.Reshape(1, kx);
                using var r = xr.Matmul(y);            // [..., 1, N]
                var s = r.Shape.ToList(); s.RemoveAt(s.Count - 2);
                return r.Reshape(s.ToArray());
            }
            if (y.Rank == 1)
            {
                using var yr = y.Reshape(ky, 1);
                using var r = x.Matmul(yr);            // [..., M, 1]
                return r.Reshape(r.Sizes[..^1].ToArray());
            }
            if (x.Rank > 2 && y.Rank == 2)
            {
                // Fold the batch into the rows: one [B·M, K]·[K, N] product.
                var lead = x.Sizes[..^1].ToArray();
                using var xf = x.Reshape(Shape.Numel(lead), kx);
                using var r = MatmulCore("matmul", xf, y);
                return r.Reshape([.. lead, y.Sizes[1]]);
            }
            return MatmulCore("matmul", x, y);
        }
    }
}
