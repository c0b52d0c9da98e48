using FashionViL.Tensors;

namespace FashionViL.Autograd;

/// <summary>
/// Differentiable tensor operations, as extension members of <see cref="Tensor"/> (<c>x.Exp()</c>, <c>a + b</c>)
/// and static functions (<c>Ops.Cat(...)</c>). Split by family into partial files.
/// </summary>
public static partial class Ops
{
    internal static IBackend B(Tensor t) => Backends.Get(t.Device);

    internal static void SameDevice(string op, Tensor a, Tensor b)
    {
        if (a.Device != b.Device) throw new ArgumentException($"{op}: tensors are on different devices ({a.ShapeString} on {a.Device}, {b.ShapeString} on {b.Device})");
    }

    internal static void SameDType(string op, Tensor a, Tensor b)
    {
        if (a.DType != b.DType) throw new ArgumentException($"{op}: dtypes differ ({a.ShapeString} is {a.DType.Name()}, {b.ShapeString} is {b.DType.Name()}); convert one with To(dtype)");
    }

    /// <summary>A broadcast view of <paramref name="t"/> with the given shape (zero strides on expanded dims).</summary>
    internal static Tensor ExpandRaw(Tensor t, int[] shape)
    {
        int n = shape.Length, off = n - t.Rank;
        if (off < 0) throw new ArgumentException($"expand: cannot expand {t.ShapeString} to fewer dims {Shape.Format(shape)}");
        var strides = new int[n];
        for (int i = 0; i < n; i++)
        {
            int d = i - off;
            int size = d >= 0 ? t.Sizes[d] : 1;
            if (size == shape[i]) strides[i] = d >= 0 ? t.Strides[d] : 0;
            else if (size == 1) strides[i] = 0;
            else throw new ArgumentException($"expand: cannot expand {t.ShapeString} to {Shape.Format(shape)} (dim {i}: {size} vs {shape[i]})");
        }
        return t.AsStrided(shape, strides, t.Offset);
    }

    /// <summary>Sums a broadcast gradient back to <paramref name="shape"/>.</summary>
    internal static Tensor SumTo(Tensor g, int[] shape)
    {
        if (g.Sizes.SequenceEqual(shape)) return g.Alias();
        int off = g.Rank - shape.Length;
        var dims = new List<int>();
        for (int i = 0; i < g.Rank; i++)
            if (i < off || (shape[i - off] == 1 && g.Sizes[i] != 1)) dims.Add(i);
        var keep = g.Shape;
        foreach (var d in dims) keep[d] = 1;
        var r = Tensor.Empty(keep, g.DType, g.Device);
        if (dims.Count > 0) B(g).Reduce(ReduceOp.Sum, g, dims.ToArray(), r); else B(g).Copy(g, r);
        var v = r.AsStrided(shape, Shape.ContiguousStrides(shape), r.Offset);
        r.Dispose();
        return v;
    }

    // ------------------------------------------------------------------ unary

    internal static Tensor UnaryOpT(string name, UnaryOp op, Tensor x, double p0 = 0, double p1 = 0)
    {
        var y = Tensor.Empty(x.Shape, x.DType, x.Device);
        B(x).Unary(op, x, y, p0, p1);
        if (!Graph.NeedsGrad(x)) return y;
        bool needsX = op is not (UnaryOp.Exp or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.Tanh or UnaryOp.Sigmoid or UnaryOp.Reciprocal or UnaryOp.AddScalar or UnaryOp.MulScalar or UnaryOp.Neg);
        bool needsY = op is UnaryOp.Exp or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.Tanh or UnaryOp.Sigmoid or UnaryOp.Reciprocal;
        return Graph.Record(y, name, [x], [needsX ? x : null, needsY ? y : null], (gy, s) =>
        {
            var gx = Tensor.Empty(gy.Shape, gy.DType, gy.Device);
            using var xs = s[0]?.ContiguousRaw();
            // Rules that ignore x or y get gy in their place (the kernel reads but does not use them).
            B(gy).UnaryBackward(op, xs ?? gy, s[1] ?? gy, gy, gx, p0, p1);
            return [gx];
        });
    }

    // ------------------------------------------------------------------ binary

    internal static Tensor BinaryOpT(string name, BinaryOp op, Tensor a, Tensor b)
    {
        SameDevice(name, a, b);
        SameDType(name, a, b);
        var shape = Shape.Broadcast(a.Sizes, b.Sizes, name);
        using var ea = ExpandRaw(a, shape);
        using var eb = ExpandRaw(b, shape);
        var y = Tensor.Empty(shape, op >= BinaryOp.Eq ? DType.Bool : a.DType, a.Device);
        B(a).Binary(op, ea, eb, y);
        if (op >= BinaryOp.Eq || !Graph.NeedsGrad(a, b)) return y;
        int[] sa = a.Shape, sb = b.Shape;
        bool ra = a.RequiresGrad, rb = b.RequiresGrad;
        return op switch
        {
            BinaryOp.Add => Graph.Record(y, name, [a, b], [], (gy, _) => [ra ? SumTo(gy, sa) : null, rb ? SumTo(gy, sb) : null]),
            BinaryOp.Sub => Graph.Record(y, name, [a, b], [], (gy, _) =>
            {
                Tensor? gb = null;
                if (rb) { using var n = gy.Neg(); gb = SumTo(n, sb); }
                return [ra ? SumTo(gy, sa) : null, gb];
            }),
            BinaryOp.Mul => Graph.Record(y, name, [a, b], [rb ? a : null, ra ? b : null], (gy, s) =>
                [ra ? ScaledSum(gy, s[1]!, sa) : null, rb ? ScaledSum(gy, s[0]!, sb) : null]),
            BinaryOp.Div => Graph.Record(y, name, [a, b], [a, b], (gy, s) =>
            {
                Tensor? ga = null, gb = null;
                if (ra) { using var q = gy.Div(s[1]!); ga = SumTo(q, sa); }
                if (rb)
                {
                    // d(a/b)/db = -a/b²
                    using var b2 = s[1]!.Square(); using var q = s[0]!.Div(b2); using var t = gy.Mul(q); using var n = t.Neg();
                    gb = SumTo(n, sb);
                }
                return [ga, gb];
            }),
            BinaryOp.Pow => Graph.Record(y, name, [a, b], [a, b, y], (gy, s) =>
            {
                Tensor? ga = null, gb = null;
                if (ra)
                {
                    // b·a^(b−1)
                    using var bm1 = s[1]!.AddScalar(-1); using var p = s[0]!.Pow(bm1); using var t = p.Mul(s[1]!); using var g = gy.Mul(t);
                    ga = SumTo(g, sa);
                }
                if (rb)
                {
                    // a^b·ln a (0 where a = 0, as PyTorch's masked rule)
                    using var la = s[0]!.Log(); using var t = s[2]!.Mul(la); using var g = gy.Mul(t);
                    using var zero = Tensor.Zeros([], g.DType, g.Device); using var isZero = s[0]!.Eq(zero); using var z = Where(isZero, zero, g);
                    gb = SumTo(z, sb);
                }
                return [ga, gb];
            }),
            BinaryOp.Maximum or BinaryOp.Minimum => Graph.Record(y, name, [a, b], [a, b], (gy, s) =>
            {
                // The gradient goes to the selected operand; ties split it evenly (PyTorch's rule).
                using var sel = op == BinaryOp.Maximum ? s[0]!.Gt(s[1]!) : s[0]!.Lt(s[1]!);
                using var tie = s[0]!.Eq(s[1]!);
                using var zero = Tensor.Zeros([], gy.DType, gy.Device);
                using var half = gy.MulScalar(0.5);
                Tensor? ga = null, gb = null;
                if (ra) { using var t = Where(tie, half, zero); using var g = Where(sel, gy, t); ga = SumTo(g, sa); }
                if (rb) { using var t = Where(tie, half, gy); using var g = Where(sel, zero, t); gb = SumTo(g, sb); }
                return [ga, gb];
            }),
            _ => throw new NotSupportedException($"{name} has no gradient"),
        };

        static Tensor ScaledSum(Tensor gy, Tensor other, int[] shape)
        {
            using var t = gy.Mul(other);
            return SumTo(t, shape);
        }
    }

    /// <summary>Elementwise select: cond ? a : b, with broadcasting. Gradients flow to the selected side.</summary>
    public static Tensor Where(Tensor cond, Tensor a, Tensor b)
    {
        SameDType("where", a, b);
        SameDevice("where", a, b); SameDevice("where", cond, a);
        if (cond.DType != DType.Bool) throw new ArgumentException($"where: condition {cond.ShapeString} must be bool, got {cond.DType.Name()}");
        var shape = Shape.Broadcast(Shape.Broadcast(cond.Sizes, a.Sizes, "where"), b.Sizes, "where");
        using var ec = ExpandRaw(cond, shape); using var ea = ExpandRaw(a, shape); using var eb = ExpandRaw(b, shape);
        var y = Tensor.Empty(shape, a.DType, a.Device);
        B(a).Where(ec, ea, eb, y);
        if (!Graph.NeedsGrad(a, b)) return y;
        int[] sa = a.Shape, sb = b.Shape;
        bool ra = a.RequiresGrad, rb = b.RequiresGrad;
        return Graph.Record(y, "where", [cond, a, b], [cond], (gy, s) =>
        {
            using var zero = Tensor.Zeros([], gy.DType, gy.Device);
            Tensor? ga = null, gb = null;
            if (ra) { using var t = Where(s[0]!, gy, zero); ga = SumTo(t, sa); }
            if (rb) { using var t = Where(s[0]!, zero, gy); gb = SumTo(t, sb); }
            return [null, ga, gb];
        });
    }


    extension(Tensor x)
    {
        public Tensor Add(Tensor other) => BinaryOpT("add", BinaryOp.Add, x, other);
        public Tensor Sub(Tensor other) => BinaryOpT("sub", BinaryOp.Sub, x, other);
        public Tensor Mul(Tensor other) => BinaryOpT("mul", BinaryOp.Mul, x, other);
        public Tensor Div(Tensor other) => BinaryOpT("div", BinaryOp.Div, x, other);
        public Tensor Pow(Tensor exponent) => BinaryOpT("pow", BinaryOp.Pow, x, exponent);
        public Tensor Maximum(Tensor other) => BinaryOpT("maximum", BinaryOp.Maximum, x, other);
        public Tensor Minimum(Tensor other) => BinaryOpT("minimum", BinaryOp.Minimum, x, other);

        public Tensor Eq(Tensor other) => BinaryOpT("eq", BinaryOp.Eq, x, other);
        public Tensor Ne(Tensor other) => BinaryOpT("ne", BinaryOp.Ne, x, other);
        public Tensor Lt(Tensor other) => BinaryOpT("lt", BinaryOp.Lt, x, other);
        public Tensor Le(Tensor other) => BinaryOpT("le", BinaryOp.Le, x, other);
        public Tensor Gt(Tensor other) => BinaryOpT("gt", BinaryOp.Gt, x, other);
        public Tensor Ge(Tensor other) => BinaryOpT("ge", BinaryOp.Ge, x, other);
        public Tensor LogicalAnd(Tensor other) => BinaryOpT("logical_and", BinaryOp.LogicalAnd, x, other);
        public Tensor LogicalOr(Tensor other) => BinaryOpT("logical_or", BinaryOp.LogicalOr, x, other);
        public Tensor LogicalNot()
        {
            var y = Tensor.Empty(x.Shape, DType.Bool, x.Device);
            B(x).Unary(UnaryOp.LogicalNot, x, y);
            return y;
        }

        public Tensor Neg() => UnaryOpT("neg", UnaryOp.Neg, x);
        public Tensor Abs() => UnaryOpT("abs", UnaryOp.Abs, x);
        public Tensor Exp() => UnaryOpT("exp", UnaryOp.Exp, x);
        public Tensor Log() => UnaryOpT("log", UnaryOp.Log, x);
        public Tensor Sqrt() => UnaryOpT("sqrt", UnaryOp.Sqrt, x);
        public Tensor Rsqrt() => UnaryOpT("rsqrt", UnaryOp.Rsqrt, x);
        public Tensor Sin() => UnaryOpT("sin", UnaryOp.Sin, x);
        public Tensor Cos() => UnaryOpT("cos", UnaryOp.Cos, x);
        public Tensor Tanh() => UnaryOpT("tanh", UnaryOp.Tanh, x);
        public Tensor Sigmoid() => UnaryOpT("sigmoid", UnaryOp.Sigmoid, x);
        public Tensor Relu() => UnaryOpT("relu", UnaryOp.Relu, x);
        /// <summary>Exact (erf) GELU, as BERT uses.</summary>
        public Tensor Gelu() => UnaryOpT("gelu", UnaryOp.Gelu, x);
        public Tensor Silu() => UnaryOpT("silu", UnaryOp.Silu, x);
        public Tensor Erf() => UnaryOpT("erf", UnaryOp.Erf, x);
        public Tensor Square() => UnaryOpT("square", UnaryOp.Square, x);
        public Tensor Reciprocal() => UnaryOpT("reciprocal", UnaryOp.Reciprocal, x);
        public Tensor Sign() => UnaryOpT("sign", UnaryOp.Sign, x);
        public Tensor Floor() => UnaryOpT("floor", UnaryOp.Floor, x);
        public Tensor Pow(double exponent) => UnaryOpT("pow", UnaryOp.PowScalar, x, exponent);
        /// <summary>Clamps to [min, max]; pass ±infinity for one side. The gradient passes where min ≤ x ≤ max.</summary>
        public Tensor Clamp(double min = double.NegativeInfinity, double max = double.PositiveInfinity) => UnaryOpT("clamp", UnaryOp.Clamp, x, min, max);
        public Tensor AddScalar(double s) => UnaryOpT("add", UnaryOp.AddScalar, x, s);
        public Tensor MulScalar(double s) => UnaryOpT("mul", UnaryOp.MulScalar, x, s);

        public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
        public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
        public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
        public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
        public static Tensor operator -(Tensor a) => a.Neg();
        public static Tensor operator +(Tensor a, double s) => a.AddScalar(s);
        public static Tensor operator +(double s, Tensor a) => a.AddScalar(s);
        public static Tensor operator -(Tensor a, double s) => a.AddScalar(-s);
        public static Tensor operator -(double s, Tensor a) { using var n = a.Neg(); return n.AddScalar(s); }
        public static Tensor operator *(Tensor a, double s) => a.MulScalar(s);
        public static Tensor operator *(double s, Tensor a) => a.MulScalar(s);
        public static Tensor operator /(Tensor a, double s) => a.MulScalar(1.0 / s);
        public static Tensor operator /(double s, Tensor a) { using var r = a.Reciprocal(); return r.MulScalar(s); }
    }
}
