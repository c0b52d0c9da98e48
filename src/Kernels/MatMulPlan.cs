using FashionViL.Tensors;

namespace FashionViL.Kernels;

/// <summary>
/// Validated geometry of one <see cref="IBackend.MatMul"/> call, shared by every backend so they accept and
/// refuse exactly the same inputs: rank 2 or 3 operands, stride 1 in the last dim, row strides at least the
/// row length, a contiguous c, an optional contiguous [N] bias. A rank-2 operand (or batch 1) is shared by
/// every batch (batch stride 0).
/// </summary>
internal readonly record struct MatMulPlan(int Batch, int M, int N, int K, int Lda, int Ldb, long StrideA, long StrideB)
{
    public static MatMulPlan Create(Tensor a, Tensor b, Tensor c, bool transA, bool transB, Tensor? bias, string op = "matmul")
    {
        if (a.DType != b.DType || a.DType != c.DType || (bias is not null && bias.DType != a.DType))
            throw new ArgumentException($"{op}: dtypes differ (a {a.ShapeString} {a.DType.Name()}, b {b.ShapeString} {b.DType.Name()}, c {c.ShapeString} {c.DType.Name()}"
                + (bias is null ? ")" : $", bias {bias.ShapeString} {bias.DType.Name()})"));
        if (a.Rank is not (2 or 3) || b.Rank is not (2 or 3) || c.Rank is not (2 or 3))
            throw new ArgumentException($"{op}: a {a.ShapeString}, b {b.ShapeString} and c {c.ShapeString} must be rank 3 [batch, rows, cols] (or rank 2)");
        if (a.Device != c.Device || b.Device != c.Device || (bias is not null && bias.Device != c.Device))
            throw new ArgumentException($"{op}: operands are on different devices (a {a.Device}, b {b.Device}, c {c.Device})");

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
        if (!c.IsContiguous) throw new ArgumentException($"{op}: c {c.ShapeString} must be contiguous");
        if (aCols > 1 && a.Strides[^1] != 1) throw new ArgumentException($"{op}: a {a.ShapeString} with strides {Shape.Format(a.Strides)} needs stride 1 in its last dim");
        if (bCols > 1 && b.Strides[^1] != 1) throw new ArgumentException($"{op}: b {b.ShapeString} with strides {Shape.Format(b.Strides)} needs stride 1 in its last dim");
        if ((aRows > 1 && a.Strides[^2] < aCols) || (bRows > 1 && b.Strides[^2] < bCols))
            throw new ArgumentException($"{op}: row strides of a {a.ShapeString} {Shape.Format(a.Strides)} / b {b.ShapeString} {Shape.Format(b.Strides)} must be at least the row length");
        if (bias is not null && (bias.Rank != 1 || bias.Sizes[0] != N || !bias.IsContiguous))
            throw new ArgumentException($"{op}: bias {bias.ShapeString} must be a contiguous [{N}] vector for c {c.ShapeString}");
        return new MatMulPlan(batch, M, N, K,
            // A row stride only matters with more than one row; keep it valid for address arithmetic anyway.
            Lda: aRows > 1 ? a.Strides[^2] : aCols,
            Ldb: bRows > 1 ? b.Strides[^2] : bCols,
            StrideA: a.Rank == 3 && a.Sizes[0] > 1 ? a.Strides[0] : 0,
            StrideB: b.Rank == 3 && b.Sizes[0] > 1 ? b.Strides[0] : 0);
    }
}
