using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>Joining, splitting and indexing: cat, stack, chunk/split, index_select, gather, scatter, masked ops, embedding, one_hot.</summary>
public static partial class Ops
{
    private static void RequireIndex(Tensor index, string op, string name = "index")
    {
        if (index.DType is not (DType.Int64 or DType.Int32))
            throw new ArgumentException($"{op}: {name} {index.ShapeString} must be int64 or int32, got {index.DType.Name()}");
    }

    private static void RequireMask(Tensor mask, string op)
    {
        if (mask.DType != DType.Bool) throw new ArgumentException($"{op}: mask {mask.ShapeString} must be bool, got {mask.DType.Name()}");
    }

    /// <summary>A fresh contiguous copy (not recorded).</summary>
    private static Tensor CloneRaw(Tensor x)
    {
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        B(x).Copy(x, y);
        return y;
    }

    /// <summary>Concatenates along <paramref name="dim"/>. Every tensor must match the first in rank, dtype, device and every other dim.</summary>
    public static Tensor Cat(Tensor[] xs, int dim = 0)
    {
        if (xs is null || xs.Length == 0) throw new ArgumentException("cat: expected a non-empty list of tensors");
        var first = xs[0];
        if (first.Rank == 0) throw new ArgumentException($"cat: tensor 0 {first.ShapeString} is zero-dimensional and cannot be concatenated");
        int d = Shape.Dim(dim, first.Rank, "cat");
        int total = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            var t = xs[i];
            if (t.Rank != first.Rank)
                throw new ArgumentException($"cat: tensor {i} {t.ShapeString} has rank {t.Rank} but tensor 0 {first.ShapeString} has rank {first.Rank}");
            if (t.DType != first.DType)
                throw new ArgumentException($"cat: tensor {i} {t.ShapeString} is {t.DType.Name()} but tensor 0 {first.ShapeString} is {first.DType.Name()}");
            if (t.Device != first.Device)
                throw new ArgumentException($"cat: tensor {i} {t.ShapeString} is on {t.Device} but tensor 0 {first.ShapeString} is on {first.Device}");
            for (int j = 0; j < first.Rank; j++)
                if (j != d && t.Sizes[j] != first.Sizes[j])
                    throw new ArgumentException($"cat: tensor {i} {t.ShapeString} does not match tensor 0 {first.ShapeString} in dim {j} (concatenating along dim {d})");
            total = checked(total + t.Sizes[d]);
        }
        var shape = first.Shape; shape[d] = total;
        var y = Tensor.Empty(shape, first.DType, first.Device);
        var starts = new int[xs.Length];
        int at = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            starts[i] = at;
            if (xs[i].Numel > 0)
            {
                using var slot = y.AsStrided(xs[i].Shape, y.Strides.ToArray(), at * y.Strides[d]);
                B(y).Copy(xs[i], slot);
            }
            at += xs[i].Sizes[d];
        }
        if (!Graph.NeedsGrad(xs)) return y;
        var req = xs.Select(t => t.RequiresGrad).ToArray();
        var shapes = xs.Select(t => t.Shape).ToArray();
        return Graph.Record(y, "cat", xs, [], (gy, _) =>
        {
            var g = new Tensor?[req.Length];
            for (int i = 0; i < req.Length; i++)
                if (req[i]) g[i] = gy.AsStrided(shapes[i], gy.Strides.ToArray(), gy.Offset + starts[i] * gy.Strides[d]);
            return g;
        });
    }

    /// <summary>Stacks same-shaped tensors along a new dim <paramref name="dim"/> (0 ≤ dim ≤ rank, or negative).</summary>
    public static Tensor Stack(Tensor[] xs, int dim = 0)
    {
        if (xs is null || xs.Length == 0) throw new ArgumentException("stack: expected a non-empty list of tensors");
        var first = xs[0];
        for (int i = 1; i < xs.Length; i++)
            if (!xs[i].Sizes.SequenceEqual(first.Sizes))
                throw new ArgumentException($"stack: tensor {i} {xs[i].ShapeString} differs in shape from tensor 0 {first.ShapeString}");
        int d = Shape.Dim(dim, first.Rank + 1, "stack");
        var us = new Tensor[xs.Length];
        try
        {
            for (int i = 0; i < xs.Length; i++) us[i] = xs[i].Unsqueeze(d);
            return Cat(us, d);
        }
        finally
        {
            foreach (var u in us) u?.Dispose();
        }
    }

    /// <summary>
    /// Embedding lookup: weight [V, D] rows picked by <paramref name="ids"/> (int64/int32, any shape), giving ids.shape + [D].
    /// Rows whose id equals <paramref name="paddingIdx"/> get no gradient (−1: no padding row).
    /// </summary>
    public static Tensor Embedding(Tensor ids, Tensor weight, int paddingIdx = -1)
    {
        RequireIndex(ids, "embedding", "ids");
        if (weight.Rank != 2) throw new ArgumentException($"embedding: weight {weight.ShapeString} must be [num_embeddings, dim]");
        SameDevice("embedding", ids, weight);
        int v = weight.Sizes[0], dm = weight.Sizes[1];
        if (paddingIdx >= v) throw new ArgumentOutOfRangeException(nameof(paddingIdx), $"embedding: padding index {paddingIdx} is out of range for weight {weight.ShapeString}");
        int n = ids.Numel;
        using var idc = ids.ContiguousRaw();
        using var flat = idc.AsStrided([n], [1], idc.Offset);
        var y2 = Tensor.Empty([n, dm], weight.DType, weight.Device);
        try { B(weight).IndexSelect(weight, 0, flat, y2); }
        catch { y2.Dispose(); throw; }
        var outShape = ids.Shape.Append(dm).ToArray();
        var y = y2.AsStrided(outShape, Shape.ContiguousStrides(outShape), 0);
        y2.Dispose();
        if (!Graph.NeedsGrad(weight)) return y;
        var wShape = weight.Shape;
        return Graph.Record(y, "embedding", [weight], [ids], (gy, s) =>
        {
            var gw = Tensor.Zeros(wShape, gy.DType, gy.Device);
            B(gy).EmbeddingBackward(s[0]!, gy, gw, paddingIdx);
            return [gw];
        });
    }

    /// <summary>Gather's gradient for a scatter source of <paramref name="srcShape"/> (zero outside the index's extent).</summary>
    private static Tensor GatherInto(Tensor gy, int d, Tensor index, int[] srcShape)
    {
        var g = Tensor.Empty(index.Shape, gy.DType, gy.Device);
        B(gy).Gather(gy, d, index, g);
        if (index.Sizes.SequenceEqual(srcShape)) return g;
        var full = Tensor.Zeros(srcShape, gy.DType, gy.Device);
        using (var region = full.AsStrided(index.Shape, full.Strides.ToArray(), 0)) B(gy).Copy(g, region);
        g.Dispose();
        return full;
    }

    private static int CheckScatter(Tensor x, int dim, Tensor index, Tensor src, string op)
    {
        RequireIndex(index, op);
        SameDType(op, x, src);
        SameDevice(op, x, src); SameDevice(op, x, index);
        if (x.Rank == 0) throw new ArgumentException($"{op}: input {x.ShapeString} must have at least one dimension");
        int d = Shape.Dim(dim, x.Rank, op);
        if (index.Rank != x.Rank || src.Rank != x.Rank)
            throw new ArgumentException($"{op}: input {x.ShapeString}, index {index.ShapeString} and source {src.ShapeString} must have the same rank");
        for (int i = 0; i < x.Rank; i++)
        {
            if (index.Sizes[i] > src.Sizes[i]) throw new ArgumentException($"{op}: index {index.ShapeString} is larger than source {src.ShapeString} in dim {i}");
            if (i != d && index.Sizes[i] > x.Sizes[i]) throw new ArgumentException($"{op}: index {index.ShapeString} is larger than input {x.ShapeString} in dim {i}");
        }
        return d;
    }

    extension(Tensor x)
    {
        /// <summary>Splits into <paramref name="chunks"/> views of size ⌈n/chunks⌉ along <paramref name="dim"/> (the last may be smaller; fewer when n is small).</summary>
        public Tensor[] Chunk(int chunks, int dim = 0)
        {
            if (chunks <= 0) throw new ArgumentException($"chunk: number of chunks must be positive, got {chunks} for {x.ShapeString}");
            int d = Shape.Dim(dim, x.Rank, "chunk"), n = x.Sizes[d];
            if (n == 0) return Enumerable.Range(0, chunks).Select(_ => x.Narrow(d, 0, 0)).ToArray();
            return x.Split((n + chunks - 1) / chunks, d);
        }

        /// <summary>Views of <paramref name="size"/> elements along <paramref name="dim"/> (the last may be smaller).</summary>
        public Tensor[] Split(int size, int dim = 0)
        {
            int d = Shape.Dim(dim, x.Rank, "split"), n = x.Sizes[d];
            if (size <= 0 && n > 0) throw new ArgumentException($"split: split size must be positive, got {size} for {x.ShapeString}");
            if (n == 0) return [x.Narrow(d, 0, 0)];
            var r = new Tensor[(n + size - 1) / size];
            for (int i = 0; i < r.Length; i++) r[i] = x.Narrow(d, i * size, Math.Min(size, n - i * size));
            return r;
        }

        /// <summary>Views with the given sizes along <paramref name="dim"/>; the sizes must add up to the dim's size.</summary>
        public Tensor[] Split(int[] sizes, int dim = 0)
        {
            int d = Shape.Dim(dim, x.Rank, "split");
            if (sizes.Any(s => s < 0) || sizes.Sum() != x.Sizes[d])
                throw new ArgumentException($"split: sizes [{string.Join(", ", sizes)}] do not add up to dim {d} of {x.ShapeString}");
            var r = new Tensor[sizes.Length];
            int at = 0;
            for (int i = 0; i < sizes.Length; i++) { r[i] = x.Narrow(d, at, sizes[i]); at += sizes[i]; }
            return r;
        }

        /// <summary>Entries of <paramref name="index"/> (int64/int32, 1-D) along <paramref name="dim"/>.</summary>
        public Tensor IndexSelect(int dim, Tensor index)
        {
            RequireIndex(index, "index_select");
            SameDevice("index_select", x, index);
            if (x.Rank == 0) throw new ArgumentException($"index_select: input {x.ShapeString} must have at least one dimension");
            if (index.Rank > 1) throw new ArgumentException($"index_select: index {index.ShapeString} must be 1-D (input {x.ShapeString})");
            int d = Shape.Dim(dim, x.Rank, "index_select");
            var shape = x.Shape; shape[d] = index.Numel;
            using var flat = index.Rank == 1 ? index.Alias() : index.AsStrided([1], [1], index.Offset);
            var y = Tensor.Empty(shape, x.DType, x.Device);
            try { B(x).IndexSelect(x, d, flat, y); }
            catch { y.Dispose(); throw; }
            if (!Graph.NeedsGrad(x)) return y;
            var xs = x.Shape;
            return Graph.Record(y, "index_select", [x], [flat], (gy, s) =>
            {
                var gx = Tensor.Zeros(xs, gy.DType, gy.Device);
                B(gy).IndexAdd(gx, d, s[0]!, gy);
                return [gx];
            });
        }

        /// <summary>y[..., j, ...] = x[..., index[..., j, ...], ...] along <paramref name="dim"/>; index has x's rank and y the index's shape.</summary>
        public Tensor Gather(int dim, Tensor index)
        {
            RequireIndex(index, "gather");
            SameDevice("gather", x, index);
            if (x.Rank == 0) throw new ArgumentException($"gather: input {x.ShapeString} must have at least one dimension");
            if (index.Rank != x.Rank) throw new ArgumentException($"gather: index {index.ShapeString} must have the rank of input {x.ShapeString}");
            int d = Shape.Dim(dim, x.Rank, "gather");
            for (int i = 0; i < x.Rank; i++)
                if (i != d && index.Sizes[i] > x.Sizes[i])
                    throw new ArgumentException($"gather: index {index.ShapeString} is larger than input {x.ShapeString} in dim {i}");
            var y = Tensor.Empty(index.Shape, x.DType, x.Device);
            try { B(x).Gather(x, d, index, y); }
            catch { y.Dispose(); throw; }
            if (!Graph.NeedsGrad(x)) return y;
            var xs = x.Shape;
            return Graph.Record(y, "gather", [x], [index], (gy, s) =>
            {
                var gx = Tensor.Zeros(xs, gy.DType, gy.Device);
                B(gy).Scatter(gx, d, s[0]!, gy, add: true);
                return [gx];
            });
        }

        /// <summary>Out-of-place scatter_add: a copy of x with src[..., j, ...] added at x[..., index[..., j, ...], ...].</summary>
        public Tensor ScatterAdd(int dim, Tensor index, Tensor src)
        {
            int d = CheckScatter(x, dim, index, src, "scatter_add");
            var y = CloneRaw(x);
            try { B(x).Scatter(y, d, index, src, add: true); }
            catch { y.Dispose(); throw; }
            if (!Graph.NeedsGrad(x, src)) return y;
            bool rx = x.RequiresGrad, rs = src.RequiresGrad;
            var ss = src.Shape;
            return Graph.Record(y, "scatter_add", [x, src], [index], (gy, s) =>
                [rx ? gy.Alias() : null, rs ? GatherInto(gy, d, s[0]!, ss) : null]);
        }

        /// <summary>
        /// Out-of-place scatter: a copy of x with x[..., index[..., j, ...], ...] = src[..., j, ...]. With duplicate
        /// indices the surviving value is unspecified (and every duplicate receives the gradient, as in PyTorch).
        /// </summary>
        public Tensor Scatter(int dim, Tensor index, Tensor src)
        {
            int d = CheckScatter(x, dim, index, src, "scatter");
            var y = CloneRaw(x);
            try { B(x).Scatter(y, d, index, src, add: false); }
            catch { y.Dispose(); throw; }
            if (!Graph.NeedsGrad(x, src)) return y;
            bool rx = x.RequiresGrad, rs = src.RequiresGrad;
            var ss = src.Shape;
            return Graph.Record(y, "scatter", [x, src], [index], (gy, s) =>
            {
                Tensor? gx = null;
                if (rx)
                {
                    // Overwritten positions do not depend on x.
                    gx = CloneRaw(gy);
                    using var zeros = Tensor.Zeros(s[0]!.Shape, gy.DType, gy.Device);
                    B(gy).Scatter(gx, d, s[0]!, zeros, add: false);
                }
                return [gx, rs ? GatherInto(gy, d, s[0]!, ss) : null];
            });
        }

        /// <summary>The elements where <paramref name="mask"/> (bool, broadcastable with x) is true, as a 1-D tensor in row-major order.</summary>
        public Tensor MaskedSelect(Tensor mask)
        {
            RequireMask(mask, "masked_select");
            SameDevice("masked_select", x, mask);
            var shape = Shape.Broadcast(x.Sizes, mask.Sizes, "masked_select");
            using var ex = ExpandRaw(x, shape);
            using var em = ExpandRaw(mask, shape);
            int count = 0;
            foreach (var b in em.ToArray<bool>()) if (b) count++;
            var y = Tensor.Empty([count], x.DType, x.Device);
            B(x).MaskedSelect(ex, em, y);
            if (!Graph.NeedsGrad(x)) return y;
            var xs = x.Shape;
            return Graph.Record(y, "masked_select", [x], [mask], (gy, s) =>
            {
                using var m = ExpandRaw(s[0]!, shape);
                using var full = Tensor.Zeros(shape, gy.DType, gy.Device);
                B(gy).MaskedScatter(full, m, gy);
                return [SumTo(full, xs)];
            });
        }

        /// <summary>x with <paramref name="value"/> where <paramref name="mask"/> (bool, broadcastable to x's shape) is true. No gradient flows through filled positions.</summary>
        public Tensor MaskedFill(Tensor mask, double value)
        {
            RequireMask(mask, "masked_fill");
            SameDevice("masked_fill", x, mask);
            var shape = Shape.Broadcast(x.Sizes, mask.Sizes, "masked_fill");
            if (!shape.AsSpan().SequenceEqual(x.Sizes))
                throw new ArgumentException($"masked_fill: mask {mask.ShapeString} does not broadcast to input {x.ShapeString}");
            using var v = Tensor.Scalar(value, x.DType, x.Device);
            return Where(mask, v, x);
        }

        /// <summary>One-hot encoding of integer labels: x.shape + [numClasses] (−1: max label + 1). Not differentiable.</summary>
        public Tensor OneHot(int numClasses = -1, DType dtype = DType.Int64)
        {
            RequireIndex(x, "one_hot", "labels");
            var labels = x.ToArray<long>();
            if (numClasses < 0)
            {
                if (labels.Length == 0) throw new ArgumentException($"one_hot: cannot infer the number of classes from empty labels {x.ShapeString}; pass numClasses");
                numClasses = checked((int)(labels.Max() + 1));
            }
            foreach (var l in labels)
                if (l < 0 || l >= numClasses)
                    throw new ArgumentOutOfRangeException(nameof(x), $"one_hot: label {l} is out of range for {numClasses} classes");
            int n = labels.Length;
            var outShape = x.Shape.Append(numClasses).ToArray();
            var y = Tensor.Zeros([n, numClasses], dtype, x.Device);
            if (n > 0 && numClasses > 0)
            {
                using var xc = x.ContiguousRaw();
                using var idx = xc.AsStrided([n, 1], [1, 1], xc.Offset);
                using var ones = Tensor.Ones([n, 1], dtype, x.Device);
                B(x).Scatter(y, 1, idx, ones, add: false);
            }
            var r = y.AsStrided(outShape, Shape.ContiguousStrides(outShape), 0);
            y.Dispose();
            return r;
        }
    }
}
