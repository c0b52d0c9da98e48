// Generated once from an op table (one struct per op, one overload per element type); edit by hand.
#pragma warning disable IDE0060
namespace FashionViL.Kernels.Cuda;

/// <summary>y = f(x), compiled into the strided map kernel.</summary>
public interface IUnaryOp<T, TR> where T : unmanaged where TR : unmanaged { TR Apply(T v); }
/// <summary>y = f(a, b), compiled into the strided binary kernel.</summary>
public interface IBinaryOp<T, TR> where T : unmanaged where TR : unmanaged { TR Apply(T a, T b); }
/// <summary>gx = f(x, y, gy) for a unary op, compiled into the contiguous gradient kernel.</summary>
public interface IGradOp<T> where T : unmanaged { T Grad(T x, T y, T g); }

/// <summary>Unary ops: one struct each, float32 and float64 overloads; P0/P1 are the op parameters.</summary>
public static class UnaryOps
{
    public struct Neg : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => -v;
        public readonly double Apply(double v) => -v;
        public readonly float Grad(float x, float y, float g) => -g;
        public readonly double Grad(double x, double y, double g) => -g;
    }
    public struct Abs : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Abs(v);
        public readonly double Apply(double v) => Math.Abs(v);
        public readonly float Grad(float x, float y, float g) => g * KMath.SignF(x);
        public readonly double Grad(double x, double y, double g) => g * KMath.Sign(x);
    }
    public struct Exp : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Exp(v);
        public readonly double Apply(double v) => Math.Exp(v);
        public readonly float Grad(float x, float y, float g) => g * y;
        public readonly double Grad(double x, double y, double g) => g * y;
    }
    public struct Log : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Log(v);
        public readonly double Apply(double v) => Math.Log(v);
        public readonly float Grad(float x, float y, float g) => g / x;
        public readonly double Grad(double x, double y, double g) => g / x;
    }
    public struct Sqrt : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Sqrt(v);
        public readonly double Apply(double v) => Math.Sqrt(v);
        public readonly float Grad(float x, float y, float g) => g * 0.5f / y;
        public readonly double Grad(double x, double y, double g) => g * 0.5 / y;
    }
    public struct Rsqrt : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => 1f / MathF.Sqrt(v);
        public readonly double Apply(double v) => 1.0 / Math.Sqrt(v);
        public readonly float Grad(float x, float y, float g) => -g * 0.5f * y * y * y;
        public readonly double Grad(double x, double y, double g) => -g * 0.5 * y * y * y;
    }
    public struct Sin : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Sin(v);
        public readonly double Apply(double v) => Math.Sin(v);
        public readonly float Grad(float x, float y, float g) => g * MathF.Cos(x);
        public readonly double Grad(double x, double y, double g) => g * Math.Cos(x);
    }
    public struct Cos : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Cos(v);
        public readonly double Apply(double v) => Math.Cos(v);
        public readonly float Grad(float x, float y, float g) => -g * MathF.Sin(x);
        public readonly double Grad(double x, double y, double g) => -g * Math.Sin(x);
    }
    public struct Tanh : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.TanhF(v);
        public readonly double Apply(double v) => Math.Tanh(v);
        public readonly float Grad(float x, float y, float g) => g * (1f - y * y);
        public readonly double Grad(double x, double y, double g) => g * (1.0 - y * y);
    }
    public struct Sigmoid : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.SigmoidF(v);
        public readonly double Apply(double v) => KMath.Sigmoid(v);
        public readonly float Grad(float x, float y, float g) => g * y * (1f - y);
        public readonly double Grad(double x, double y, double g) => g * y * (1.0 - y);
    }
    public struct Relu : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => v > 0f ? v : (KMath.IsNaN(v) ? v : 0f);
        public readonly double Apply(double v) => v > 0.0 ? v : (KMath.IsNaN(v) ? v : 0.0);
        public readonly float Grad(float x, float y, float g) => x > 0f ? g : 0f;
        public readonly double Grad(double x, double y, double g) => x > 0.0 ? g : 0.0;
    }
    public struct Gelu : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.GeluF(v);
        public readonly double Apply(double v) => KMath.Gelu(v);
        public readonly float Grad(float x, float y, float g) => g * KMath.GeluGradF(x);
        public readonly double Grad(double x, double y, double g) => g * KMath.GeluGrad(x);
    }
    public struct Silu : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => v * KMath.SigmoidF(v);
        public readonly double Apply(double v) => v * KMath.Sigmoid(v);
        public readonly float Grad(float x, float y, float g) => g * KMath.SiluGradF(x);
        public readonly double Grad(double x, double y, double g) => g * KMath.SiluGrad(x);
    }
    public struct Erf : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.ErfF(v);
        public readonly double Apply(double v) => KMath.Erf(v);
        public readonly float Grad(float x, float y, float g) => g * 1.1283791670955126f * MathF.Exp(-x * x);
        public readonly double Grad(double x, double y, double g) => g * 1.1283791670955126 * Math.Exp(-x * x);
    }
    public struct Square : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => v * v;
        public readonly double Apply(double v) => v * v;
        public readonly float Grad(float x, float y, float g) => g * 2f * x;
        public readonly double Grad(double x, double y, double g) => g * 2.0 * x;
    }
    public struct Reciprocal : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => 1f / v;
        public readonly double Apply(double v) => 1.0 / v;
        public readonly float Grad(float x, float y, float g) => -g * y * y;
        public readonly double Grad(double x, double y, double g) => -g * y * y;
    }
    public struct Sign : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.IsNaN(v) ? v : (v > 0f ? 1f : (v < 0f ? -1f : 0f));
        public readonly double Apply(double v) => KMath.IsNaN(v) ? v : (v > 0.0 ? 1.0 : (v < 0.0 ? -1.0 : 0.0));
        public readonly float Grad(float x, float y, float g) => 0f;
        public readonly double Grad(double x, double y, double g) => 0.0;
    }
    public struct Floor : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Floor(v);
        public readonly double Apply(double v) => Math.Floor(v);
        public readonly float Grad(float x, float y, float g) => 0f;
        public readonly double Grad(double x, double y, double g) => 0.0;
    }
    public struct PowScalar : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => MathF.Pow(v, (float)P0);
        public readonly double Apply(double v) => Math.Pow(v, P0);
        public readonly float Grad(float x, float y, float g) => (float)P0 == 0f ? 0f : g * (float)P0 * MathF.Pow(x, (float)P0 - 1f);
        public readonly double Grad(double x, double y, double g) => P0 == 0.0 ? 0.0 : g * P0 * Math.Pow(x, P0 - 1.0);
    }
    public struct Clamp : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => KMath.IsNaN(v) ? v : (v < (float)P0 ? (float)P0 : (v > (float)P1 ? (float)P1 : v));
        public readonly double Apply(double v) => KMath.IsNaN(v) ? v : (v < P0 ? P0 : (v > P1 ? P1 : v));
        public readonly float Grad(float x, float y, float g) => x >= (float)P0 && x <= (float)P1 ? g : 0f;
        public readonly double Grad(double x, double y, double g) => x >= P0 && x <= P1 ? g : 0.0;
    }
    public struct AddScalar : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => v + (float)P0;
        public readonly double Apply(double v) => v + P0;
        public readonly float Grad(float x, float y, float g) => g;
        public readonly double Grad(double x, double y, double g) => g;
    }
    public struct MulScalar : IUnaryOp<float, float>, IUnaryOp<double, double>, IGradOp<float>, IGradOp<double>
    {
        public double P0, P1;
        public readonly float Apply(float v) => v * (float)P0;
        public readonly double Apply(double v) => v * P0;
        public readonly float Grad(float x, float y, float g) => g * (float)P0;
        public readonly double Grad(double x, double y, double g) => g * P0;
    }
    /// <summary>Bool negation (bytes 0/1).</summary>
    public struct LogicalNot : IUnaryOp<byte, byte> { public readonly byte Apply(byte v) => v == 0 ? (byte)1 : (byte)0; }
}

/// <summary>Binary ops: one struct each, an overload per element type; comparisons and logic give bool bytes.</summary>
public static class BinaryOps
{
    public struct Add : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => a + b;
        public readonly double Apply(double a, double b) => a + b;
        public readonly int Apply(int a, int b) => a + b;
        public readonly long Apply(long a, long b) => a + b;
        public readonly byte Apply(byte a, byte b) => (byte)(a + b);
    }
    public struct Sub : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => a - b;
        public readonly double Apply(double a, double b) => a - b;
        public readonly int Apply(int a, int b) => a - b;
        public readonly long Apply(long a, long b) => a - b;
        public readonly byte Apply(byte a, byte b) => (byte)(a - b);
    }
    public struct Mul : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => a * b;
        public readonly double Apply(double a, double b) => a * b;
        public readonly int Apply(int a, int b) => a * b;
        public readonly long Apply(long a, long b) => a * b;
        public readonly byte Apply(byte a, byte b) => (byte)(a * b);
    }
    public struct Div : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => a / b;
        public readonly double Apply(double a, double b) => a / b;
        public readonly int Apply(int a, int b) => b == 0 ? 0 : (b == -1 ? -a : a / b);
        public readonly long Apply(long a, long b) => b == 0 ? 0L : (b == -1L ? -a : a / b);
        public readonly byte Apply(byte a, byte b) => (byte)(b == 0 ? (byte)0 : a / b);
    }
    public struct Pow : IBinaryOp<float, float>, IBinaryOp<double, double>
    {
        public readonly float Apply(float a, float b) => MathF.Pow(a, b);
        public readonly double Apply(double a, double b) => Math.Pow(a, b);
    }
    public struct Maximum : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => KMath.IsNaN(a) ? a : (KMath.IsNaN(b) ? b : (a > b ? a : b));
        public readonly double Apply(double a, double b) => KMath.IsNaN(a) ? a : (KMath.IsNaN(b) ? b : (a > b ? a : b));
        public readonly int Apply(int a, int b) => a > b ? a : b;
        public readonly long Apply(long a, long b) => a > b ? a : b;
        public readonly byte Apply(byte a, byte b) => a > b ? a : b;
    }
    public struct Minimum : IBinaryOp<float, float>, IBinaryOp<double, double>, IBinaryOp<int, int>, IBinaryOp<long, long>, IBinaryOp<byte, byte>
    {
        public readonly float Apply(float a, float b) => KMath.IsNaN(a) ? a : (KMath.IsNaN(b) ? b : (a < b ? a : b));
        public readonly double Apply(double a, double b) => KMath.IsNaN(a) ? a : (KMath.IsNaN(b) ? b : (a < b ? a : b));
        public readonly int Apply(int a, int b) => a < b ? a : b;
        public readonly long Apply(long a, long b) => a < b ? a : b;
        public readonly byte Apply(byte a, byte b) => a < b ? a : b;
    }
    public struct Eq : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a == b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a == b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a == b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a == b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a == b ? (byte)1 : (byte)0;
    }
    public struct Ne : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a != b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a != b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a != b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a != b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a != b ? (byte)1 : (byte)0;
    }
    public struct Lt : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a < b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a < b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a < b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a < b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a < b ? (byte)1 : (byte)0;
    }
    public struct Le : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a <= b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a <= b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a <= b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a <= b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a <= b ? (byte)1 : (byte)0;
    }
    public struct Gt : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a > b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a > b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a > b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a > b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a > b ? (byte)1 : (byte)0;
    }
    public struct Ge : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a >= b ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a >= b ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a >= b ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a >= b ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a >= b ? (byte)1 : (byte)0;
    }
    public struct LogicalAnd : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a != 0f && b != 0f ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a != 0.0 && b != 0.0 ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a != 0 && b != 0 ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a != 0 && b != 0 ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a != 0 && b != 0 ? (byte)1 : (byte)0;
    }
    public struct LogicalOr : IBinaryOp<float, byte>, IBinaryOp<double, byte>, IBinaryOp<int, byte>, IBinaryOp<long, byte>, IBinaryOp<byte, byte>
    {
        public readonly byte Apply(float a, float b) => a != 0f || b != 0f ? (byte)1 : (byte)0;
        public readonly byte Apply(double a, double b) => a != 0.0 || b != 0.0 ? (byte)1 : (byte)0;
        public readonly byte Apply(int a, int b) => a != 0 || b != 0 ? (byte)1 : (byte)0;
        public readonly byte Apply(long a, long b) => a != 0 || b != 0 ? (byte)1 : (byte)0;
        public readonly byte Apply(byte a, byte b) => a != 0 || b != 0 ? (byte)1 : (byte)0;
    }
}
