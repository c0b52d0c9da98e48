using FashionViL.Tensors;

namespace FashionViL.Autograd;

public static partial class Ops
{
    /// <summary>Records a view: the backward rule maps the output gradient back to the input's shape.</summary>
    private static Tensor ViewOp(string name, Tensor x, Tensor view, Func<Tensor, Tensor> back)
        => Graph.Record(view, name, [x], [], (gy, _) => [back(gy)]);

    private static int[] InferShape(Tensor x, int[] shape, string op)
    {
        var r = (int[])shape.Clone();
        int infer = -1; long known = 1;
        for (int i = 0; i < r.Length; i++)
        {
            if (r[i] == -1) { if (infer >= 0) throw new ArgumentException($"{op}: only one dimension can be -1 in {Shape.Format(shape)}"); infer = i; }
            else if (r[i] < 0) throw new ArgumentException($"{op}: invalid size {r[i]} in {Shape.Format(shape)}");
            else known *= r[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || x.Numel % known != 0) throw new ArgumentException($"{op}: cannot reshape {x.ShapeString} ({x.Numel} elements) to {Shape.Format(shape)}");
            r[infer] = (int)(x.Numel / known);
        }
        else if (known != x.Numel) throw new ArgumentException($"{op}: cannot reshape {x.ShapeString} ({x.Numel} elements) to {Shape.Format(shape)}");
        return r;
    }

    /// <summary>Strides for viewing x as <paramref name="shape"/> without a copy, or null when impossible.</summary>
    private static int[]? ViewStrides(Tensor x, int[] shape)
    {
        if (x.IsContiguous) return Shape.ContiguousStrides(shape);
        // Walk groups of old dims that map onto groups of new dims (PyTorch's computeStride).
        var oldS = x.Sizes.ToArray(); var oldSt = x.Strides.ToArray();
        var st = new int[shape.Length];
        int viewD = shape.Length - 1;
        long chunkBase = oldSt.Length > 0 ? oldSt[^1] : 1;
        long tensorNumel = 1, viewNumel = 1;
        for (int td = oldS.Length - 1; td >= 0; td--)
        {
            tensorNumel *= oldS[td];
            if (td == 0 || (oldS[td - 1] != 1 && oldSt[td - 1] != tensorNumel * chunkBase))
            {
                while (viewD >= 0 && (viewNumel < tensorNumel || shape[viewD] == 1))
                {
                    st[viewD] = (int)(viewNumel * chunkBase);
                    viewNumel *= shape[viewD];
                    viewD--;
                }
                if (viewNumel != tensorNumel) return null;
                if (td > 0) { chunkBase = oldSt[td - 1]; tensorNumel = 1; viewNumel = 1; }
            }
        }
        return viewD == -1 ? st : null;
    }

    extension(Tensor x)
    {
        /// <summary>Same data with a new shape (one dim may be -1). A view when the layout allows, else a copy.</summary>
        public Tensor Reshape(params int[] shape)
        {
            var s = InferShape(x, shape, "reshape");
            var strides = ViewStrides(x, s);
            if (strides is null)
            {
                using var c = x.Contiguous();
                return c.Reshape(s);
            }
            var inShape = x.Shape;
            return ViewOp("reshape", x, x.AsStrided(s, strides, x.Offset), gy => gy.AsStrided(inShape, Shape.ContiguousStrides(inShape), gy.Offset));
        }

        /// <summary>Like <see cref="Reshape"/> but never copies: throws when the layout does not allow a view.</summary>
        public Tensor View(params int[] shape)
        {
            var s = InferShape(x, shape, "view");
            if (ViewStrides(x, s) is null) throw new InvalidOperationException($"view: {x.ShapeString} with strides {Shape.Format(x.Strides)} cannot be viewed as {Shape.Format(s)}; use Reshape");
            return x.Reshape(s);
        }

        public Tensor Flatten(int startDim = 0, int endDim = -1)
        {
            if (x.Rank == 0) return x.Reshape(1);
            int s = Shape.Dim(startDim, x.Rank, "flatten"), e = Shape.Dim(endDim, x.Rank, "flatten");
            var shape = new List<int>();
            for (int i = 0; i < s; i++) shape.Add(x.Sizes[i]);
            int m = 1; for (int i = s; i <= e; i++) m *= x.Sizes[i];
            shape.Add(m);
            for (int i = e + 1; i < x.Rank; i++) shape.Add(x.Sizes[i]);
            return x.Reshape(shape.ToArray());
        }

        public Tensor Permute(params int[] dims)
        {
            if (dims.Length != x.Rank) throw new ArgumentException($"permute: {dims.Length} dims given for a tensor of rank {x.Rank} ({x.ShapeString})");
            var d = dims.Select(v => Shape.Dim(v, x.Rank, "permute")).ToArray();
            if (d.Distinct().Count() != d.Length) throw new ArgumentException($"permute: repeated dim in [{string.Join(",", dims)}]");
            var shape = d.Select(i => x.Sizes[i]).ToArray();
            var strides = d.Select(i => x.Strides[i]).ToArray();
            var inv = new int[d.Length];
            for (int i = 0; i < d.Length; i++) inv[d[i]] = i;
            // The rule is a view itself: it takes the gradient in any layout, and whoever consumes the result gets it
            // contiguous if it needs to (a permute pair around an op that reads strided tensors then costs no copy).
            return Graph.Record(x.AsStrided(shape, strides, x.Offset), "permute", [x], [], stridedGradient: true, rule: (gy, _) => [gy.Permute(inv)]);
        }

        public Tensor Transpose(int dim0, int dim1)
        {
            var p = Enumerable.Range(0, x.Rank).ToArray();
            int a = Shape.Dim(dim0, x.Rank, "transpose"), b = Shape.Dim(dim1, x.Rank, "transpose");
            (p[a], p[b]) = (p[b], p[a]);
            return x.Permute(p);
        }

        /// <summary>Transpose of the last two dims.</summary>
        public Tensor T => x.Transpose(-2, -1);

        /// <summary>Elements [start, start+length) along <paramref name="dim"/> (a view).</summary>
        public Tensor Narrow(int dim, int start, int length)
        {
            int d = Shape.Dim(dim, x.Rank, "narrow");
            if (start < 0) start += x.Sizes[d];
            if (start < 0 || length < 0 || start + length > x.Sizes[d])
                throw new ArgumentOutOfRangeException(nameof(start), $"narrow: [{start}, {start + length}) is outside dim {d} of size {x.Sizes[d]} in {x.ShapeString}");
            var shape = x.Shape; shape[d] = length;
            var inShape = x.Shape;
            return ViewOp("narrow", x, x.AsStrided(shape, x.Strides.ToArray(), x.Offset + start * x.Strides[d]), gy =>
            {
                var gx = Tensor.Zeros(inShape, gy.DType, gy.Device);
                using var slot = gx.AsStrided(shape, gx.Strides.ToArray(), start * gx.Strides[d]);
                B(gy).Copy(gy, slot);
                return gx;
            });
        }

        /// <summary>Python-style slice [start:end) along a dim; negative bounds count from the end.</summary>
        public Tensor Slice(int dim, int start, int end)
        {
            int d = Shape.Dim(dim, x.Rank, "slice"), n = x.Sizes[d];
            if (start < 0) start += n;
            if (end < 0) end += n;
            start = Math.Clamp(start, 0, n); end = Math.Clamp(end, start, n);
            return x.Narrow(d, start, end - start);
        }

        /// <summary>Index <paramref name="index"/> along <paramref name="dim"/>, removing that dim.</summary>
        public Tensor Select(int dim, int index)
        {
            int d = Shape.Dim(dim, x.Rank, "select");
            if (index < 0) index += x.Sizes[d];
            if (index < 0 || index >= x.Sizes[d]) throw new ArgumentOutOfRangeException(nameof(index), $"select: index {index} is out of range for dim {d} of size {x.Sizes[d]} in {x.ShapeString}");
            using var n = x.Narrow(d, index, 1);
            return n.Squeeze(d);
        }

        public Tensor Unsqueeze(int dim)
        {
            int d = Shape.Dim(dim, x.Rank + 1, "unsqueeze");
            var shape = x.Shape.ToList(); shape.Insert(d, 1);
            var strides = x.Strides.ToArray().ToList();
            strides.Insert(d, d < x.Rank ? x.Strides[d] * x.Sizes[d] : 1);
            return ViewOp("unsqueeze", x, x.AsStrided(shape.ToArray(), strides.ToArray(), x.Offset), gy => gy.Squeeze(d));
        }

        /// <summary>Removes <paramref name="dim"/> if it has size 1 (or every size-1 dim when null).</summary>
        public Tensor Squeeze(int? dim = null)
        {
            var keep = new List<int>();
            int? only = dim is null ? null : Shape.Dim(dim.Value, x.Rank, "squeeze");
            for (int i = 0; i < x.Rank; i++)
                if (x.Sizes[i] != 1 || (only is not null && only != i)) keep.Add(i);
            var shape = keep.Select(i => x.Sizes[i]).ToArray();
            var strides = keep.Select(i => x.Strides[i]).ToArray();
            var inShape = x.Shape;
            return ViewOp("squeeze", x, x.AsStrided(shape, strides, x.Offset), gy => gy.AsStrided(inShape, Shape.ContiguousStrides(inShape), gy.Offset));
        }

        /// <summary>Broadcast view to <paramref name="shape"/> (-1 keeps a dim). The gradient is summed back.</summary>
        public Tensor Expand(params int[] shape)
        {
            var s = (int[])shape.Clone();
            int off = s.Length - x.Rank;
            for (int i = 0; i < s.Length; i++) if (s[i] == -1) s[i] = i >= off ? x.Sizes[i - off] : throw new ArgumentException($"expand: -1 is not allowed for new leading dim {i}");
            var inShape = x.Shape;
            return ViewOp("expand", x, ExpandRaw(x, s), gy => SumTo(gy, inShape));
        }

        public Tensor BroadcastTo(params int[] shape) => x.Expand(shape);

        /// <summary>A contiguous tensor with the same values (the same storage when already contiguous).</summary>
        public Tensor Contiguous()
        {
            if (x.IsContiguous) return ViewOp("contiguous", x, x.Alias(), gy => gy.Alias());
            var y = Tensor.Empty(x.Shape, x.DType, x.Device);
            B(x).Copy(x, y);
            return ViewOp("contiguous", x, y, gy => gy.Alias());
        }

        /// <summary>A differentiable copy.</summary>
        public Tensor Clone()
        {
            var y = Tensor.Empty(x.Shape, x.DType, x.Device);
            B(x).Copy(x, y);
            return ViewOp("clone", x, y, gy => gy.Alias());
        }
    }
}
