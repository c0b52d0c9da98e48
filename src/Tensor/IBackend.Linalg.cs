namespace FashionViL.Tensors;

public partial interface IBackend
{
    /// <summary>
    /// Strided batched GEMM: c[i] ← alpha · op(a[i]) · op(b[i]) + beta · c[i] (+ bias broadcast over rows).
    /// a is [B, M, K] ([B, K, M] when <paramref name="transA"/>), b is [B, K, N] ([B, N, K] when
    /// <paramref name="transB"/>), c is [B, M, N] contiguous. For a and b the last dim has stride 1 and the
    /// row stride is at least the row length; the batch stride may be anything, including 0 (broadcast).
    /// bias, if given, is a contiguous [N] vector.
    /// </summary>
    void MatMul(Tensor a, Tensor b, Tensor c, bool transA, bool transB, double alpha = 1, double beta = 0, Tensor? bias = null);
}
