using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>
    /// a, b and c may also be rank 2 (one matrix); a rank-2 a or b is then shared by every batch of c (batch
    /// stride 0). float32 and float64 both run the packed, blocked engine in <see cref="Gemm{T}"/>.
    /// </remarks>
    public unsafe void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha = 1, double beta = 0, Tensor? bias = null)
    {
        RequireFloat(a, "matmul");
        var plan = MatMulPlan.Create(a, b, c, transA, transB, bias);
        if (c.Numel == 0) return;

        if (a.DType == DType.Float32) Run<float>(a, b, c, plan, transA, transB, (float)alpha, (float)beta, bias);
        else Run<double>(a, b, c, plan, transA, transB, alpha, beta, bias);
    }

    private static unsafe void Run<T>(Tensor a, Tensor b, Tensor c, MatMulPlan p, bool transA, bool transB, T alpha, T beta, Tensor? bias)
        where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var g = new GemmArgs<T>
        {
            A = a.DataPtr<T>(), B = b.DataPtr<T>(), C = c.DataPtr<T>(), Bias = bias is null ? null : bias.DataPtr<T>(),
            M = p.M, N = p.N, K = p.K, Batch = p.Batch,
            Lda = p.Lda, Ldb = p.Ldb, Ldc = p.N,
            StrideA = p.StrideA, StrideB = p.StrideB, StrideC = (long)p.M * p.N,
            TransA = transA, TransB = transB, Alpha = alpha, Beta = beta,
        };
        Gemm<T>.Run(g);
    }
}
