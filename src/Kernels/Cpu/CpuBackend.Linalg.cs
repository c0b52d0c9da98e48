using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>
    /// a, b and c may also be rank 2 (one matrix); a rank-2 a or b is then shared by every batch of c (batch
    /// stride 0). float32 and float64 both run the packed, blocked engine in <see cref="Gemm{T}"/>. Float32 operands
    /// are rounded as <see cref="MatMulPrecision.Current"/> says (TF32 / bfloat16 while packing; fp32 accumulation).
    /// </remarks>
    public void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha = 1, double beta = 0, Tensor? bias = null)
        => MatMul(a, b, c, transA, transB, alpha, beta, bias, MatMulPrecision.Current);

    /// <summary><see cref="MatMul(Tensor, Tensor, Tensor, bool, bool, double, double, Tensor?)"/> at an explicit operand precision (float32 only).</summary>
    internal unsafe void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha, double beta, Tensor? bias, Precision precision)
    {
        RequireFloat(a, "matmul");
        var plan = MatMulPlan.Create(a, b, c, transA, transB, bias);
        if (c.Numel == 0) return;

        if (a.DType == DType.Float32) Run<float>(a, b, c, plan, transA, transB, (float)alpha, (float)beta, bias, precision);
        else Run<double>(a, b, c, plan, transA, transB, alpha, beta, bias, Precision.Fp32);
    }

    private static unsafe void Run<T>(Tensor a, Tensor b, Tensor c, MatMulPlan p, bool transA, bool transB, T alpha, T beta, Tensor? bias, Precision precision)
        where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var g = new GemmArgs<T>
        {
            A = a.DataPtr<T>(), B = b.DataPtr<T>(), C = c.DataPtr<T>(), Bias = bias is null ? null : bias.DataPtr<T>(),
            M = p.M, N = p.N, K = p.K, Batch = p.Batch,
            Lda = p.Lda, Ldb = p.Ldb, Ldc = p.N,
            StrideA = p.StrideA, StrideB = p.StrideB, StrideC = (long)p.M * p.N,
            TransA = transA, TransB = transB, Alpha = alpha, Beta = beta, Precision = precision,
        };
        Gemm<T>.Run(g);
    }
}
