using FashionViL.Tensors;

namespace FashionViL.Autograd;

public static partial class Ops
{
    private static int[] NormDims(Tensor x, int[]? dims, string op)
    {
        if (dims is null || dims.Length == 0) return Enumerable.Range(0, x.Rank).ToArray();
        var d = dims.Select(v => Shape.Dim(v, x.Rank, op)).Distinct().OrderBy(v => v).ToArray();
        if (d.Length != dims.Length) throw new ArgumentException($"{op}: repeated dim in [{string.Join(",", dims)}]");
        return d;
    }

    private static int[] KeepShape(Tensor x, int[] dims)
    {
        var s = x.Shape;
        foreach (var d in dims) s[d] = 1;
        return s;
    }

    private static int[] DropShape(Tensor x, int[] dims) => Enumerable.Range(0, x.Rank).Where(i => !dims.Contains(i)).Select(i => x.Sizes[i]).ToArray();

    /// <summary>Reduces into the keep-dim shape, then views it without the reduced dims unless keepDim.</summary>
    private static Tensor ReduceRaw(ReduceOp op, Tensor x, int[] dims, bool keepDim, double p0 = 0, Tensor? indices = null)
    {
        var keep = KeepShape(x, dims);
        var y = Tensor.Empty(keep, x.DType, x.Device);
        if (x.Rank > 0) B(x).Reduce(op, x, dims, y, indices, p0); else B(x).Copy(x, y);
        if (keepDim) return y;
        var shape = DropShape(x, dims);
        var v = y.AsStrided(shape, Shape.ContiguousStrides(shape), 0);
        y.Dispose();
        return v;
    }

    /// <summary>Gradient of a keep-dim-less reduction output, viewed back with size-1 dims and broadcast to x's shape.</summary>
    private static Tensor Unreduce(Tensor gy, int[] keepShape, int[] xShape)
    {
        using var g = gy.AsStrided(keepShape, Shape.ContiguousStrides(keepShape), gy.Offset);
        return ExpandRaw(g, xShape);
    }

    extension(Tensor x)
    {
        /// <summary>Sum over <paramref name="dims"/> (all dims when null).</summary>
        public Tensor Sum(int[]? dims = null, bool keepDim = false)
        {
            var d = NormDims(x, dims, "sum");
            var y = ReduceRaw(ReduceOp.Sum, x, d, keepDim);
            int[] ks = KeepShape(x, d), xs = x.Shape;
            return Graph.Record(y, "sum", [x], [], (gy, _) =>
            {
                using var e = Unreduce(gy, ks, xs);
                return [e.ContiguousRaw()];
            });
        }

        public Tensor Sum(int dim, bool keepDim = false) => x.Sum([dim], keepDim);

        public Tensor Mean(int[]? dims = null, bool keepDim = false)
        {
            var d = NormDims(x, dims, "mean");
            var y = ReduceRaw(ReduceOp.Mean, x, d, keepDim);
            int[] ks = KeepShape(x, d), xs = x.Shape;
            double n = d.Aggregate(1.0, (a, i) => a * xs[i]);
            return Graph.Record(y, "mean", [x], [], (gy, _) =>
            {
                using var e = Unreduce(gy, ks, xs);
                var g = Tensor.Empty(xs, gy.DType, gy.Device);
                B(gy).Unary(UnaryOp.MulScalar, e, g, 1.0 / n);
                return [g];
            });
        }

        public Tensor Mean(int dim, bool keepDim = false) => x.Mean([dim], keepDim);

        /// <summary>Variance with the given correction (1 = unbiased, PyTorch's default).</summary>
        public Tensor Var(int[]? dims = null, double correction = 1, bool keepDim = false)
        {
            var d = NormDims(x, dims, "var");
            var y = ReduceRaw(ReduceOp.Var, x, d, keepDim, correction);
            if (!Graph.NeedsGrad(x)) return y;
            int[] ks = KeepShape(x, d), xs = x.Shape;
            double n = d.Aggregate(1.0, (a, i) => a * xs[i]);
            return Graph.Record(y, "var", [x], [x], (gy, s) =>
            {
                // d var / dx = 2 (x − mean) / (n − correction)
                using var mean = s[0]!.Mean(d, keepDim: true);
                using var diff = s[0]!.Sub(mean);
                using var e = Unreduce(gy, ks, xs);
                using var t = diff.Mul(e);
                return [t.MulScalar(2.0 / Math.Max(n - correction, 0))];
            });
        }

        /// <summary>Max over one dim: values and first arg-max (Int64). The gradient goes to the arg-max.</summary>
        public (Tensor Values, Tensor Indices) Max(int dim, bool keepDim = false) => ExtremumDim(x, ReduceOp.Max, dim, keepDim);
        public (Tensor Values, Tensor Indices) Min(int dim, bool keepDim = false) => ExtremumDim(x, ReduceOp.Min, dim, keepDim);

        /// <summary>Max over all elements (gradient split evenly among ties, as PyTorch).</summary>
        public Tensor Max() => ExtremumAll(x, ReduceOp.Max);
        public Tensor Min() => ExtremumAll(x, ReduceOp.Min);

        public Tensor ArgMax(int dim, bool keepDim = false) { var (v, i) = ExtremumDimRaw(x, ReduceOp.Max, dim, keepDim); v.Dispose(); return i; }
        public Tensor ArgMin(int dim, bool keepDim = false) { var (v, i) = ExtremumDimRaw(x, ReduceOp.Min, dim, keepDim); v.Dispose(); return i; }
    }

    private static (Tensor, Tensor) ExtremumDimRaw(Tensor x, ReduceOp op, int dim, bool keepDim)
    {
        int d = Shape.Dim(dim, x.Rank, op.ToString().ToLowerInvariant());
        var keep = KeepShape(x, [d]);
        var idx = Tensor.Empty(keep, DType.Int64, x.Device);
        var y = ReduceRaw(op, x, [d], true, 0, idx);
        if (keepDim) return (y, idx);
        var shape = DropShape(x, [d]);
        var yv = y.AsStrided(shape, Shape.ContiguousStrides(shape), 0); y.Dispose();
        var iv = idx.AsStrided(shape, Shape.ContiguousStrides(shape), 0); idx.Dispose();
        return (yv, iv);
    }

    private static (Tensor, Tensor) ExtremumDim(Tensor x, ReduceOp op, int dim, bool keepDim)
    {
        var (y, idx) = ExtremumDimRaw(x, op, dim, keepDim);
        if (!Graph.NeedsGrad(x)) return (y, idx);
        int d = Shape.Dim(dim, x.Rank, "max");
        int[] ks = KeepShape(x, [d]), xs = x.Shape;
        Graph.Record(y, op == ReduceOp.Max ? "max" : "min", [x], [idx], (gy, s) =>
        {
            // One-hot along d: positions whose coordinate equals the saved index get gy.
            using var ar = Tensor.Arange(xs[d], DType.Int64, gy.Device);
            var arShape = Enumerable.Repeat(1, xs.Length).ToArray(); arShape[d] = xs[d];
            using var arv = ar.AsStrided(arShape, Shape.ContiguousStrides(arShape), 0);
            using var iv = s[0]!.AsStrided(ks, Shape.ContiguousStrides(ks), s[0]!.Offset);
            using var hit = arv.Eq(iv);
            using var g = Unreduce(gy, ks, xs);
            using var zero = Tensor.Zeros([], gy.DType, gy.Device);
            using var w = Where(hit, g, zero);
            return [w.ContiguousRaw()];
        });
        return (y, idx);
    }

    private static Tensor ExtremumAll(Tensor x, ReduceOp op)
    {
        if (x.Numel == 0) throw new ArgumentException($"{op.ToString().ToLowerInvariant()}: tensor {x.ShapeString} is empty");
        var all = Enumerable.Range(0, x.Rank).ToArray();
        var y = ReduceRaw(op, x, all, false);
        return Graph.Record(y, op == ReduceOp.Max ? "max" : "min", [x], [x, y], (gy, s) =>
        {
            using var hit = s[0]!.Eq(s[1]!);
            using var hf = hit.To(gy.DType);
            using var cnt = hf.Sum();
            using var share = gy.Div(cnt);
            using var g = hf.Mul(share);
            return [g.ContiguousRaw()];
        });
    }
}
