using System.Numerics;
using System.Numerics.Tensors;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    // ------------------------------------------------------------------ unary

    public void Unary(UnaryOp op, Tensor x, Tensor y, double p0 = 0, double p1 = 0)
    {
        RequireSameShape(x, y, $"unary {op}");
        RequireContiguous(y, $"unary {op}", "output");
        if (x.Numel == 0) return;
        if (op == UnaryOp.LogicalNot)
        {
            if (x.DType != DType.Bool || y.DType != DType.Bool) throw new NotSupportedException($"logical_not needs bool tensors, got {x.DType.Name()}");
            MapRows<byte, byte>(x, y, static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = (byte)(s[i * ss] == 0 ? 1 : 0); }, 0, 0);
            return;
        }
        RequireFloat(x, $"unary {op}");
        if (x.DType != y.DType) throw new ArgumentException($"unary {op}: input {x.DType.Name()} and output {y.DType.Name()} differ");
        if (x.DType == DType.Float32) MapRows<float, float>(x, y, UnaryRowF(op), (float)p0, (float)p1);
        else MapRows<double, double>(x, y, UnaryRowD(op), p0, p1);
    }

    private delegate void RowFn<TS, TD>(TS* src, int srcStride, TD* dst, int n, TD p0, TD p1) where TS : unmanaged where TD : unmanaged;

    private static void MapRows<TS, TD>(Tensor x, Tensor y, RowFn<TS, TD> fn, TD p0, TD p1) where TS : unmanaged where TD : unmanaged
    {
        var plan = new StridedPlan(x.Sizes, x, y);
        TS* px = (TS*)x.Storage.Pointer; TD* py = (TD*)y.Storage.Pointer;
        int sx = plan.InnerStride(0), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++) fn(px + plan.RowOffset(0, r), sx, py + plan.RowOffset(1, r), inner, p0, p1);
        }, 8);
    }

    /// <summary>float32 rows: TensorPrimitives where it has the function and the row is dense.</summary>
    private static RowFn<float, float> UnaryRowF(UnaryOp op)
    {
        RowFn<float, float> scalar = UnaryRowGeneric<float>(op);
        RowFn<float, float>? dense = op switch
        {
            UnaryOp.Neg => static (s, _, d, n, _, _) => TensorPrimitives.Negate(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Abs => static (s, _, d, n, _, _) => TensorPrimitives.Abs(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Exp => static (s, _, d, n, _, _) => TensorPrimitives.Exp(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Log => static (s, _, d, n, _, _) => TensorPrimitives.Log(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Sqrt => static (s, _, d, n, _, _) => TensorPrimitives.Sqrt(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Tanh => static (s, _, d, n, _, _) => TensorPrimitives.Tanh(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Sigmoid => static (s, _, d, n, _, _) => TensorPrimitives.Sigmoid(new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.Square => static (s, _, d, n, _, _) => TensorPrimitives.Multiply(new ReadOnlySpan<float>(s, n), new ReadOnlySpan<float>(s, n), new Span<float>(d, n)),
            UnaryOp.AddScalar => static (s, _, d, n, a, _) => TensorPrimitives.Add(new ReadOnlySpan<float>(s, n), a, new Span<float>(d, n)),
            UnaryOp.MulScalar => static (s, _, d, n, a, _) => TensorPrimitives.Multiply(new ReadOnlySpan<float>(s, n), a, new Span<float>(d, n)),
            UnaryOp.Relu => static (s, _, d, n, _, _) => TensorPrimitives.Max(new ReadOnlySpan<float>(s, n), 0f, new Span<float>(d, n)),
            UnaryOp.Gelu => static (s, _, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = ScalarMath.GeluF(s[i]); },
            UnaryOp.Erf => static (s, _, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = ScalarMath.ErfF(s[i]); },
            _ => null,
        };
        if (dense is null) return scalar;
        return (s, ss, d, n, a, b) => { if (ss == 1) dense(s, 1, d, n, a, b); else scalar(s, ss, d, n, a, b); };
    }

    private static RowFn<double, double> UnaryRowD(UnaryOp op) => op switch
    {
        UnaryOp.Gelu => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = ScalarMath.Gelu(s[i * ss]); },
        UnaryOp.Erf => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = ScalarMath.Erf(s[i * ss]); },
        _ => UnaryRowGeneric<double>(op),
    };

    private static RowFn<T, T> UnaryRowGeneric<T>(UnaryOp op) where T : unmanaged, IFloatingPointIeee754<T> => op switch
    {
        UnaryOp.Neg => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = -s[i * ss]; },
        UnaryOp.Abs => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Abs(s[i * ss]); },
        UnaryOp.Exp => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Exp(s[i * ss]); },
        UnaryOp.Log => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Log(s[i * ss]); },
        UnaryOp.Sqrt => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Sqrt(s[i * ss]); },
        UnaryOp.Rsqrt => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.One / T.Sqrt(s[i * ss]); },
        UnaryOp.Sin => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Sin(s[i * ss]); },
        UnaryOp.Cos => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Cos(s[i * ss]); },
        UnaryOp.Tanh => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Tanh(s[i * ss]); },
        UnaryOp.Sigmoid => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.CreateTruncating(ScalarMath.Sigmoid(double.CreateTruncating(s[i * ss]))); },
        UnaryOp.Relu => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) { var v = s[i * ss]; d[i] = v > T.Zero ? v : (T.IsNaN(v) ? v : T.Zero); } },
        UnaryOp.Gelu => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.CreateTruncating(ScalarMath.Gelu(double.CreateTruncating(s[i * ss]))); },
        UnaryOp.Erf => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.CreateTruncating(ScalarMath.Erf(double.CreateTruncating(s[i * ss]))); },
        UnaryOp.Silu => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) { var v = s[i * ss]; d[i] = v * T.CreateTruncating(ScalarMath.Sigmoid(double.CreateTruncating(v))); } },
        UnaryOp.Square => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) { var v = s[i * ss]; d[i] = v * v; } },
        UnaryOp.Reciprocal => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.One / s[i * ss]; },
        UnaryOp.Sign => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) { var v = s[i * ss]; d[i] = T.IsNaN(v) ? v : T.CreateTruncating(T.Sign(v)); } },
        UnaryOp.Floor => static (s, ss, d, n, _, _) => { for (int i = 0; i < n; i++) d[i] = T.Floor(s[i * ss]); },
        UnaryOp.PowScalar => static (s, ss, d, n, p, _) => { for (int i = 0; i < n; i++) d[i] = T.Pow(s[i * ss], p); },
        UnaryOp.Clamp => static (s, ss, d, n, lo, hi) => { for (int i = 0; i < n; i++) { var v = s[i * ss]; d[i] = T.IsNaN(v) ? v : (v < lo ? lo : (v > hi ? hi : v)); } },
        UnaryOp.AddScalar => static (s, ss, d, n, a, _) => { for (int i = 0; i < n; i++) d[i] = s[i * ss] + a; },
        UnaryOp.MulScalar => static (s, ss, d, n, a, _) => { for (int i = 0; i < n; i++) d[i] = s[i * ss] * a; },
        _ => throw new NotSupportedException($"unary op {op}"),
    };

    public void UnaryBackward(UnaryOp op, Tensor x, Tensor y, Tensor gy, Tensor gx, double p0 = 0, double p1 = 0)
    {
        RequireFloat(gy, $"unary {op} backward");
        foreach (var t in new[] { x, y, gy, gx }) { RequireSameShape(t, gx, $"unary {op} backward"); RequireContiguous(t, $"unary {op} backward", "operand"); }
        if (gx.DType == DType.Float32) UnaryGrad<float>(op, x, y, gy, gx, (float)p0, (float)p1);
        else UnaryGrad<double>(op, x, y, gy, gx, p0, p1);
    }

    private static void UnaryGrad<T>(UnaryOp op, Tensor xt, Tensor yt, Tensor gyt, Tensor gxt, T p0, T p1) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T* x = xt.DataPtr<T>(), y = yt.DataPtr<T>(), gy = gyt.DataPtr<T>(), gx = gxt.DataPtr<T>();
        T two = T.CreateTruncating(2), half = T.CreateTruncating(0.5);
        bool f32 = typeof(T) == typeof(float);
        Parallelism.For(gxt.Numel, 16, (s, e) =>
        {
            for (int i = s; i < e; i++)
            {
                T g = gy[i], xi = x[i], yi = y[i];
                gx[i] = op switch
                {
                    UnaryOp.Neg => -g,
                    UnaryOp.Abs => g * T.CreateTruncating(T.Sign(xi)),
                    UnaryOp.Exp => g * yi,
                    UnaryOp.Log => g / xi,
                    UnaryOp.Sqrt => g * half / yi,
                    UnaryOp.Rsqrt => -g * half * yi * yi * yi,
                    UnaryOp.Sin => g * T.Cos(xi),
                    UnaryOp.Cos => -g * T.Sin(xi),
                    UnaryOp.Tanh => g * (T.One - yi * yi),
                    UnaryOp.Sigmoid => g * yi * (T.One - yi),
                    UnaryOp.Relu => xi > T.Zero ? g : T.Zero,
                    UnaryOp.Gelu => g * (f32 ? T.CreateTruncating(ScalarMath.GeluGradF(float.CreateTruncating(xi))) : T.CreateTruncating(ScalarMath.GeluGrad(double.CreateTruncating(xi)))),
                    UnaryOp.Silu => SiluGrad(g, xi),
                    UnaryOp.Erf => g * T.CreateTruncating(1.1283791670955126) * T.Exp(-xi * xi),
                    UnaryOp.Square => g * two * xi,
                    UnaryOp.Reciprocal => -g * yi * yi,
                    UnaryOp.Sign or UnaryOp.Floor => T.Zero,
                    UnaryOp.PowScalar => p0 == T.Zero ? T.Zero : g * p0 * T.Pow(xi, p0 - T.One),
                    UnaryOp.Clamp => xi >= p0 && xi <= p1 ? g : T.Zero,
                    UnaryOp.AddScalar => g,
                    UnaryOp.MulScalar => g * p0,
                    _ => throw new NotSupportedException($"unary op {op} has no gradient"),
                };
            }
        });

        static T SiluGrad(T g, T x)
        {
            T s = T.CreateTruncating(ScalarMath.Sigmoid(double.CreateTruncating(x)));
            return g * (s + x * s * (T.One - s));
        }
    }

    // ------------------------------------------------------------------ binary

    public void Binary(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        RequireSameShape(a, y, $"binary {op}");
        RequireSameShape(b, y, $"binary {op}");
        RequireContiguous(y, $"binary {op}", "output");
        if (a.DType != b.DType) throw new ArgumentException($"binary {op}: operand dtypes {a.DType.Name()} and {b.DType.Name()} differ");
        bool cmp = op >= BinaryOp.Eq;
        var want = cmp ? DType.Bool : a.DType;
        if (y.DType != want) throw new ArgumentException($"binary {op}: output must be {want.Name()}, got {y.DType.Name()}");
        if (y.Numel == 0) return;
        switch (a.DType)
        {
            case DType.Float32: BinaryT<float>(op, a, b, y); break;
            case DType.Float64: BinaryT<double>(op, a, b, y); break;
            case DType.Int32: BinaryT<int>(op, a, b, y); break;
            case DType.Int64: BinaryT<long>(op, a, b, y); break;
            case DType.Bool:
            case DType.UInt8: BinaryT<byte>(op, a, b, y); break;
            default: throw new NotSupportedException($"binary {op} on {a.DType.Name()}");
        }
    }

    private static void BinaryT<T>(BinaryOp op, Tensor at, Tensor bt, Tensor yt) where T : unmanaged, INumber<T>
    {
        var plan = new StridedPlan(yt.Sizes, at, bt, yt);
        T* pa = (T*)at.Storage.Pointer, pb = (T*)bt.Storage.Pointer;
        byte* py = (byte*)yt.Storage.Pointer;
        int sa = plan.InnerStride(0), sb = plan.InnerStride(1), inner = plan.Inner;
        bool isFloat = typeof(T) == typeof(float);
        if (op is BinaryOp.Pow && !(typeof(T) == typeof(float) || typeof(T) == typeof(double)))
            throw new NotSupportedException($"pow on {at.DType.Name()}");
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                T* a = pa + plan.RowOffset(0, r), b = pb + plan.RowOffset(1, r);
                if (op >= BinaryOp.Eq)
                {
                    byte* d = py + plan.RowOffset(2, r);
                    for (int i = 0; i < inner; i++) d[i] = Compare(op, a[i * sa], b[i * sb]) ? (byte)1 : (byte)0;
                    continue;
                }
                T* y = (T*)py + plan.RowOffset(2, r);
                if (isFloat && TryDenseF(op, (float*)a, sa, (float*)b, sb, (float*)y, inner)) continue;
                switch (op)
                {
                    case BinaryOp.Add: for (int i = 0; i < inner; i++) y[i] = a[i * sa] + b[i * sb]; break;
                    case BinaryOp.Sub: for (int i = 0; i < inner; i++) y[i] = a[i * sa] - b[i * sb]; break;
                    case BinaryOp.Mul: for (int i = 0; i < inner; i++) y[i] = a[i * sa] * b[i * sb]; break;
                    case BinaryOp.Div: for (int i = 0; i < inner; i++) y[i] = a[i * sa] / b[i * sb]; break;
                    case BinaryOp.Maximum: for (int i = 0; i < inner; i++) { T u = a[i * sa], v = b[i * sb]; y[i] = T.IsNaN(u) || T.IsNaN(v) ? (T.IsNaN(u) ? u : v) : T.Max(u, v); } break;
                    case BinaryOp.Minimum: for (int i = 0; i < inner; i++) { T u = a[i * sa], v = b[i * sb]; y[i] = T.IsNaN(u) || T.IsNaN(v) ? (T.IsNaN(u) ? u : v) : T.Min(u, v); } break;
                    case BinaryOp.Pow: for (int i = 0; i < inner; i++) y[i] = T.CreateTruncating(Math.Pow(double.CreateTruncating(a[i * sa]), double.CreateTruncating(b[i * sb]))); break;
                    default: throw new NotSupportedException($"binary op {op}");
                }
            }
        }, 2);
    }

    private static bool TryDenseF(BinaryOp op, float* a, int sa, float* b, int sb, float* y, int n)
    {
        var ys = new Span<float>(y, n);
        if (sa == 1 && sb == 1)
        {
            var x1 = new ReadOnlySpan<float>(a, n); var x2 = new ReadOnlySpan<float>(b, n);
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(x1, x2, ys); return true;
                case BinaryOp.Sub: TensorPrimitives.Subtract(x1, x2, ys); return true;
                case BinaryOp.Mul: TensorPrimitives.Multiply(x1, x2, ys); return true;
                case BinaryOp.Div: TensorPrimitives.Divide(x1, x2, ys); return true;
            }
        }
        else if (sa == 1 && sb == 0)
        {
            var x1 = new ReadOnlySpan<float>(a, n); float s = *b;
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(x1, s, ys); return true;
                case BinaryOp.Sub: TensorPrimitives.Subtract(x1, s, ys); return true;
                case BinaryOp.Mul: TensorPrimitives.Multiply(x1, s, ys); return true;
                case BinaryOp.Div: TensorPrimitives.Divide(x1, s, ys); return true;
            }
        }
        else if (sa == 0 && sb == 1)
        {
            var x2 = new ReadOnlySpan<float>(b, n); float s = *a;
            switch (op)
            {
                case BinaryOp.Add: TensorPrimitives.Add(x2, s, ys); return true;
                case BinaryOp.Mul: TensorPrimitives.Multiply(x2, s, ys); return true;
                case BinaryOp.Sub: TensorPrimitives.Subtract(s, x2, ys); return true;
                case BinaryOp.Div: TensorPrimitives.Divide(s, x2, ys); return true;
            }
        }
        return false;
    }

    private static bool Compare<T>(BinaryOp op, T a, T b) where T : INumber<T> => op switch
    {
        BinaryOp.Eq => a == b,
        BinaryOp.Ne => a != b,
        BinaryOp.Lt => a < b,
        BinaryOp.Le => a <= b,
        BinaryOp.Gt => a > b,
        BinaryOp.Ge => a >= b,
        BinaryOp.LogicalAnd => a != T.Zero && b != T.Zero,
        BinaryOp.LogicalOr => a != T.Zero || b != T.Zero,
        _ => throw new NotSupportedException($"comparison {op}"),
    };

    public void Where(Tensor cond, Tensor a, Tensor b, Tensor y)
    {
        if (cond.DType != DType.Bool) throw new ArgumentException($"where: condition must be bool, got {cond.DType.Name()}");
        RequireSameShape(cond, y, "where"); RequireSameShape(a, y, "where"); RequireSameShape(b, y, "where");
        RequireContiguous(y, "where", "output");
        if (a.DType != y.DType || b.DType != y.DType) throw new ArgumentException($"where: dtypes {a.DType.Name()}, {b.DType.Name()} → {y.DType.Name()} differ");
        switch (y.DType.Size())
        {
            case 1: WhereT<byte>(cond, a, b, y); break;
            case 2: WhereT<short>(cond, a, b, y); break;
            case 4: WhereT<int>(cond, a, b, y); break;
            default: WhereT<long>(cond, a, b, y); break;
        }
    }

    private static void WhereT<T>(Tensor ct, Tensor at, Tensor bt, Tensor yt) where T : unmanaged
    {
        if (yt.Numel == 0) return;
        var plan = new StridedPlan(yt.Sizes, ct, at, bt, yt);
        byte* pc = (byte*)ct.Storage.Pointer; T* pa = (T*)at.Storage.Pointer, pb = (T*)bt.Storage.Pointer, py = (T*)yt.Storage.Pointer;
        int sc = plan.InnerStride(0), sa = plan.InnerStride(1), sb = plan.InnerStride(2), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                byte* c = pc + plan.RowOffset(0, r); T* a = pa + plan.RowOffset(1, r), b = pb + plan.RowOffset(2, r), y = py + plan.RowOffset(3, r);
                for (int i = 0; i < inner; i++) y[i] = c[i * sc] != 0 ? a[i * sa] : b[i * sb];
            }
        });
    }
}
