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
        const string op = "matmul";
        RequireFloat(a, op);
        if (a.DType != b.DType || a.DType != c.DType || (bias is not null && bias.DType != a.DType))
            throw new ArgumentException($"{op}: dtypes differ (a {a.ShapeString} {a.DType.Name()}, b {b.ShapeString} {b.DType.Name()}, c {c.ShapeString} {c.DType.Name()}"
                + (bias is null ? ")" : $", bias {bias.ShapeString} {bias.DType.Name()})"));
        if (a.Rank is not (2 or 3) || b.Rank is not (2 or 3) || c.Rank is not (2 or 3))
            throw new ArgumentException($"{op}: a {a.ShapeString}, b {b.ShapeString} and c {c.ShapeString} must be rank 3 [batch, rows, cols] (or rank 2)");
        if (!a.Device.IsCpu || !b.Device.IsCpu || !c.Device.IsCpu || (bias is not null && !bias.Device.IsCpu))
            throw new ArgumentException($"{op}: the CPU backend got a tensor on another device");

        int batch = c.Rank == 3 ? c.Sizes[0] : 1;
        int M = c.Sizes[^2], N = c.Sizes[^1];
        int aRows = a.Sizes[^2], aCols = a.Sizes[^1], bRows = b.Sizes[^2], bCols = b.Sizes[^1];
        int am = transA ? aCols : aRows, K = transA ? aRows : aCols;
        int bk = transB ? bCols : bRows, bn = transB ? bRows : bCols;
        string Desc() => $"a {a.ShapeString}{(transA ? "ᵀ" : "")}, b {b.ShapeString}{(transB ? "ᵀ" : "")}, c {c.ShapeString}";
        if (am != M || bn != N || bk != K)
            throw new ArgumentException($"{op}: shapes do not agree: {Desc()} (op(a) is [{am},{K}], op(b) is [{bk},{bn}], c needs [{am},{bn}])");
        if ((a.Rank == 3 && a.Sizes[0] != batch) || (b.Rank == 3 && b.Sizes[0] != batch))
            throw new ArgumentException($"{op}: batch sizes differ: {Desc()}");
        RequireContiguous(c, op, "c");
        if (aCols > 1 && a.Strides[^1] != 1) throw new ArgumentException($"{op}: a {a.ShapeString} with strides {Shape.Format(a.Strides)} needs stride 1 in its last dim");
        if (bCols > 1 && b.Strides[^1] != 1) throw new ArgumentException($"{op}: b {b.ShapeString} with strides {Shape.Format(b.Strides)} needs stride 1 in its last dim");
        if ((aRows > 1 && a.Strides[^2] < aCols) || (bRows > 1 && b.Strides[^2] < bCols))
            throw new ArgumentException($"{op}: row strides of a {a.ShapeString} {Shape.Format(a.Strides)} / b {b.ShapeString} {Shape.Format(b.Strides)} must be at least the row length");
        if (bias is not null && (bias.Rank != 1 || bias.Sizes[0] != N || !bias.IsContiguous))
            throw new ArgumentException($"{op}: bias {bias.ShapeString} must be a contiguous [{N}] vector for c {c.ShapeString}");
        if (c.Numel == 0) return;

        if (a.DType == DType.Float32) Run<float>(a, b, c, M, N, K, batch, transA, transB, (float)alpha, (float)beta, bias);
        else Run<double>(a, b, c, M, N, K, batch, transA, transB, alpha, beta, bias);
    }

    private static unsafe void Run<T>(Tensor a, Tensor b, Tensor c, int M, int N, int K, int batch, bool transA, bool transB, T alpha, T beta, Tensor? bias)
        where T : unmanaged, System.Numerics.IFloatingPointIeee754<T>
    {
        var g = new GemmArgs<T>
        {
            A = a.DataPtr<T>(), B = b.DataPtr<T>(), C = c.DataPtr<T>(), Bias = bias is null ? null : bias.DataPtr<T>(),
            M = M, N = N, K = K, Batch = batch,
            // A row stride only matters with more than one row; keep it valid for pointer arithmetic anyway.
            Lda = a.Sizes[^2] > 1 ? a.Strides[^2] : a.Sizes[^1],
            Ldb = b.Sizes[^2] > 1 ? b.Strides[^2] : b.Sizes[^1],
            Ldc = N,
            StrideA = a.Rank == 3 && a.Sizes[0] > 1 ? a.Strides[0] : 0,
            StrideB = b.Rank == 3 && b.Sizes[0] > 1 ? b.Strides[0] : 0,
            StrideC = (long)M * N,
            TransA = transA, TransB = transB, Alpha = alpha, Beta = beta,
        };
        Gemm<T>.Run(g);
    }
}
