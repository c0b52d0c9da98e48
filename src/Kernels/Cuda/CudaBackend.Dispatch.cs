// Generated once from the op table in ElementwiseOps.cs (enum → op struct); edit by hand.
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cuda;

public sealed partial class CudaBackend
{
    private void DispatchUnary(UnaryOp op, Tensor x, Tensor y, double p0, double p1)
    {
        switch (op)
        {
            case UnaryOp.Neg: MapFloat(x, y, new UnaryOps.Neg { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Abs: MapFloat(x, y, new UnaryOps.Abs { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Exp: MapFloat(x, y, new UnaryOps.Exp { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Log: MapFloat(x, y, new UnaryOps.Log { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sqrt: MapFloat(x, y, new UnaryOps.Sqrt { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Rsqrt: MapFloat(x, y, new UnaryOps.Rsqrt { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sin: MapFloat(x, y, new UnaryOps.Sin { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Cos: MapFloat(x, y, new UnaryOps.Cos { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Tanh: MapFloat(x, y, new UnaryOps.Tanh { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sigmoid: MapFloat(x, y, new UnaryOps.Sigmoid { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Relu: MapFloat(x, y, new UnaryOps.Relu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Gelu: MapFloat(x, y, new UnaryOps.Gelu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Silu: MapFloat(x, y, new UnaryOps.Silu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Erf: MapFloat(x, y, new UnaryOps.Erf { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Square: MapFloat(x, y, new UnaryOps.Square { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Reciprocal: MapFloat(x, y, new UnaryOps.Reciprocal { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sign: MapFloat(x, y, new UnaryOps.Sign { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Floor: MapFloat(x, y, new UnaryOps.Floor { P0 = p0, P1 = p1 }); break;
            case UnaryOp.PowScalar: MapFloat(x, y, new UnaryOps.PowScalar { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Clamp: MapFloat(x, y, new UnaryOps.Clamp { P0 = p0, P1 = p1 }); break;
            case UnaryOp.AddScalar: MapFloat(x, y, new UnaryOps.AddScalar { P0 = p0, P1 = p1 }); break;
            case UnaryOp.MulScalar: MapFloat(x, y, new UnaryOps.MulScalar { P0 = p0, P1 = p1 }); break;
            default: throw new NotSupportedException($"cuda: unary {op} is not implemented yet");
        }
    }

    private void DispatchGrad(UnaryOp op, Tensor x, Tensor y, Tensor gy, Tensor gx, double p0, double p1)
    {
        switch (op)
        {
            case UnaryOp.Neg: GradFloat(x, y, gy, gx, new UnaryOps.Neg { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Abs: GradFloat(x, y, gy, gx, new UnaryOps.Abs { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Exp: GradFloat(x, y, gy, gx, new UnaryOps.Exp { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Log: GradFloat(x, y, gy, gx, new UnaryOps.Log { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sqrt: GradFloat(x, y, gy, gx, new UnaryOps.Sqrt { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Rsqrt: GradFloat(x, y, gy, gx, new UnaryOps.Rsqrt { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sin: GradFloat(x, y, gy, gx, new UnaryOps.Sin { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Cos: GradFloat(x, y, gy, gx, new UnaryOps.Cos { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Tanh: GradFloat(x, y, gy, gx, new UnaryOps.Tanh { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sigmoid: GradFloat(x, y, gy, gx, new UnaryOps.Sigmoid { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Relu: GradFloat(x, y, gy, gx, new UnaryOps.Relu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Gelu: GradFloat(x, y, gy, gx, new UnaryOps.Gelu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Silu: GradFloat(x, y, gy, gx, new UnaryOps.Silu { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Erf: GradFloat(x, y, gy, gx, new UnaryOps.Erf { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Square: GradFloat(x, y, gy, gx, new UnaryOps.Square { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Reciprocal: GradFloat(x, y, gy, gx, new UnaryOps.Reciprocal { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Sign: GradFloat(x, y, gy, gx, new UnaryOps.Sign { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Floor: GradFloat(x, y, gy, gx, new UnaryOps.Floor { P0 = p0, P1 = p1 }); break;
            case UnaryOp.PowScalar: GradFloat(x, y, gy, gx, new UnaryOps.PowScalar { P0 = p0, P1 = p1 }); break;
            case UnaryOp.Clamp: GradFloat(x, y, gy, gx, new UnaryOps.Clamp { P0 = p0, P1 = p1 }); break;
            case UnaryOp.AddScalar: GradFloat(x, y, gy, gx, new UnaryOps.AddScalar { P0 = p0, P1 = p1 }); break;
            case UnaryOp.MulScalar: GradFloat(x, y, gy, gx, new UnaryOps.MulScalar { P0 = p0, P1 = p1 }); break;
            default: throw new NotSupportedException($"cuda: unary {op} backward is not implemented yet");
        }
    }

    private void DispatchBinaryF32(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        switch (op)
        {
            case BinaryOp.Add: Zip<float, float, BinaryOps.Add>(a, b, y, default); break;
            case BinaryOp.Sub: Zip<float, float, BinaryOps.Sub>(a, b, y, default); break;
            case BinaryOp.Mul: Zip<float, float, BinaryOps.Mul>(a, b, y, default); break;
            case BinaryOp.Div: Zip<float, float, BinaryOps.Div>(a, b, y, default); break;
            case BinaryOp.Pow: Zip<float, float, BinaryOps.Pow>(a, b, y, default); break;
            case BinaryOp.Maximum: Zip<float, float, BinaryOps.Maximum>(a, b, y, default); break;
            case BinaryOp.Minimum: Zip<float, float, BinaryOps.Minimum>(a, b, y, default); break;
            case BinaryOp.Eq: Zip<float, byte, BinaryOps.Eq>(a, b, y, default); break;
            case BinaryOp.Ne: Zip<float, byte, BinaryOps.Ne>(a, b, y, default); break;
            case BinaryOp.Lt: Zip<float, byte, BinaryOps.Lt>(a, b, y, default); break;
            case BinaryOp.Le: Zip<float, byte, BinaryOps.Le>(a, b, y, default); break;
            case BinaryOp.Gt: Zip<float, byte, BinaryOps.Gt>(a, b, y, default); break;
            case BinaryOp.Ge: Zip<float, byte, BinaryOps.Ge>(a, b, y, default); break;
            case BinaryOp.LogicalAnd: Zip<float, byte, BinaryOps.LogicalAnd>(a, b, y, default); break;
            case BinaryOp.LogicalOr: Zip<float, byte, BinaryOps.LogicalOr>(a, b, y, default); break;
            default: throw new NotSupportedException($"cuda: binary {op} on float is not supported");
        }
    }

    private void DispatchBinaryF64(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        switch (op)
        {
            case BinaryOp.Add: Zip<double, double, BinaryOps.Add>(a, b, y, default); break;
            case BinaryOp.Sub: Zip<double, double, BinaryOps.Sub>(a, b, y, default); break;
            case BinaryOp.Mul: Zip<double, double, BinaryOps.Mul>(a, b, y, default); break;
            case BinaryOp.Div: Zip<double, double, BinaryOps.Div>(a, b, y, default); break;
            case BinaryOp.Pow: Zip<double, double, BinaryOps.Pow>(a, b, y, default); break;
            case BinaryOp.Maximum: Zip<double, double, BinaryOps.Maximum>(a, b, y, default); break;
            case BinaryOp.Minimum: Zip<double, double, BinaryOps.Minimum>(a, b, y, default); break;
            case BinaryOp.Eq: Zip<double, byte, BinaryOps.Eq>(a, b, y, default); break;
            case BinaryOp.Ne: Zip<double, byte, BinaryOps.Ne>(a, b, y, default); break;
            case BinaryOp.Lt: Zip<double, byte, BinaryOps.Lt>(a, b, y, default); break;
            case BinaryOp.Le: Zip<double, byte, BinaryOps.Le>(a, b, y, default); break;
            case BinaryOp.Gt: Zip<double, byte, BinaryOps.Gt>(a, b, y, default); break;
            case BinaryOp.Ge: Zip<double, byte, BinaryOps.Ge>(a, b, y, default); break;
            case BinaryOp.LogicalAnd: Zip<double, byte, BinaryOps.LogicalAnd>(a, b, y, default); break;
            case BinaryOp.LogicalOr: Zip<double, byte, BinaryOps.LogicalOr>(a, b, y, default); break;
            default: throw new NotSupportedException($"cuda: binary {op} on double is not supported");
        }
    }

    private void DispatchBinaryI32(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        switch (op)
        {
            case BinaryOp.Add: Zip<int, int, BinaryOps.Add>(a, b, y, default); break;
            case BinaryOp.Sub: Zip<int, int, BinaryOps.Sub>(a, b, y, default); break;
            case BinaryOp.Mul: Zip<int, int, BinaryOps.Mul>(a, b, y, default); break;
            case BinaryOp.Div: Zip<int, int, BinaryOps.Div>(a, b, y, default); break;
            case BinaryOp.Maximum: Zip<int, int, BinaryOps.Maximum>(a, b, y, default); break;
            case BinaryOp.Minimum: Zip<int, int, BinaryOps.Minimum>(a, b, y, default); break;
            case BinaryOp.Eq: Zip<int, byte, BinaryOps.Eq>(a, b, y, default); break;
            case BinaryOp.Ne: Zip<int, byte, BinaryOps.Ne>(a, b, y, default); break;
            case BinaryOp.Lt: Zip<int, byte, BinaryOps.Lt>(a, b, y, default); break;
            case BinaryOp.Le: Zip<int, byte, BinaryOps.Le>(a, b, y, default); break;
            case BinaryOp.Gt: Zip<int, byte, BinaryOps.Gt>(a, b, y, default); break;
            case BinaryOp.Ge: Zip<int, byte, BinaryOps.Ge>(a, b, y, default); break;
            case BinaryOp.LogicalAnd: Zip<int, byte, BinaryOps.LogicalAnd>(a, b, y, default); break;
            case BinaryOp.LogicalOr: Zip<int, byte, BinaryOps.LogicalOr>(a, b, y, default); break;
            default: throw new NotSupportedException($"cuda: binary {op} on int is not supported");
        }
    }

    private void DispatchBinaryI64(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        switch (op)
        {
            case BinaryOp.Add: Zip<long, long, BinaryOps.Add>(a, b, y, default); break;
            case BinaryOp.Sub: Zip<long, long, BinaryOps.Sub>(a, b, y, default); break;
            case BinaryOp.Mul: Zip<long, long, BinaryOps.Mul>(a, b, y, default); break;
            case BinaryOp.Div: Zip<long, long, BinaryOps.Div>(a, b, y, default); break;
            case BinaryOp.Maximum: Zip<long, long, BinaryOps.Maximum>(a, b, y, default); break;
            case BinaryOp.Minimum: Zip<long, long, BinaryOps.Minimum>(a, b, y, default); break;
            case BinaryOp.Eq: Zip<long, byte, BinaryOps.Eq>(a, b, y, default); break;
            case BinaryOp.Ne: Zip<long, byte, BinaryOps.Ne>(a, b, y, default); break;
            case BinaryOp.Lt: Zip<long, byte, BinaryOps.Lt>(a, b, y, default); break;
            case BinaryOp.Le: Zip<long, byte, BinaryOps.Le>(a, b, y, default); break;
            case BinaryOp.Gt: Zip<long, byte, BinaryOps.Gt>(a, b, y, default); break;
            case BinaryOp.Ge: Zip<long, byte, BinaryOps.Ge>(a, b, y, default); break;
            case BinaryOp.LogicalAnd: Zip<long, byte, BinaryOps.LogicalAnd>(a, b, y, default); break;
            case BinaryOp.LogicalOr: Zip<long, byte, BinaryOps.LogicalOr>(a, b, y, default); break;
            default: throw new NotSupportedException($"cuda: binary {op} on long is not supported");
        }
    }

    private void DispatchBinaryU8(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        switch (op)
        {
            case BinaryOp.Add: Zip<byte, byte, BinaryOps.Add>(a, b, y, default); break;
            case BinaryOp.Sub: Zip<byte, byte, BinaryOps.Sub>(a, b, y, default); break;
            case BinaryOp.Mul: Zip<byte, byte, BinaryOps.Mul>(a, b, y, default); break;
            case BinaryOp.Div: Zip<byte, byte, BinaryOps.Div>(a, b, y, default); break;
            case BinaryOp.Maximum: Zip<byte, byte, BinaryOps.Maximum>(a, b, y, default); break;
            case BinaryOp.Minimum: Zip<byte, byte, BinaryOps.Minimum>(a, b, y, default); break;
            case BinaryOp.Eq: Zip<byte, byte, BinaryOps.Eq>(a, b, y, default); break;
            case BinaryOp.Ne: Zip<byte, byte, BinaryOps.Ne>(a, b, y, default); break;
            case BinaryOp.Lt: Zip<byte, byte, BinaryOps.Lt>(a, b, y, default); break;
            case BinaryOp.Le: Zip<byte, byte, BinaryOps.Le>(a, b, y, default); break;
            case BinaryOp.Gt: Zip<byte, byte, BinaryOps.Gt>(a, b, y, default); break;
            case BinaryOp.Ge: Zip<byte, byte, BinaryOps.Ge>(a, b, y, default); break;
            case BinaryOp.LogicalAnd: Zip<byte, byte, BinaryOps.LogicalAnd>(a, b, y, default); break;
            case BinaryOp.LogicalOr: Zip<byte, byte, BinaryOps.LogicalOr>(a, b, y, default); break;
            default: throw new NotSupportedException($"cuda: binary {op} on byte is not supported");
        }
    }

}
