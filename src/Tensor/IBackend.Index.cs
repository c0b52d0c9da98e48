namespace FashionViL.Tensors;

public partial interface IBackend
{
    /// <summary>y ← x.index_select(dim, index); index Int64 or Int32 [n]; out-of-range indices throw naming the value.</summary>
    void IndexSelect(Tensor x, int dim, Tensor index, Tensor y);
    /// <summary>dst.index_add_(dim, index, src): dst[..., index[i], ...] += src[..., i, ...] (dst is accumulated, not cleared).</summary>
    void IndexAdd(Tensor dst, int dim, Tensor index, Tensor src);
    /// <summary>y ← x.gather(dim, index) with index of y's shape.</summary>
    void Gather(Tensor x, int dim, Tensor index, Tensor y);
    /// <summary>dst.scatter_add_(dim, index, src) (accumulates); <paramref name="add"/> false gives scatter_ (last write wins is unspecified for duplicates).</summary>
    void Scatter(Tensor dst, int dim, Tensor index, Tensor src, bool add);
    /// <summary>y [count] ← elements of x where mask (Bool, x's shape, broadcast views allowed) is true, in row-major order.</summary>
    void MaskedSelect(Tensor x, Tensor mask, Tensor y);
    /// <summary>dst[mask] ← src (consumed in row-major order); the inverse of <see cref="MaskedSelect"/>.</summary>
    void MaskedScatter(Tensor dst, Tensor mask, Tensor src);
    /// <summary>gWeight [V, D] += Σ rows of gy [N, D] by ids [N]; rows whose id equals <paramref name="paddingIdx"/> are skipped (−1: none).</summary>
    void EmbeddingBackward(Tensor ids, Tensor gy, Tensor gWeight, int paddingIdx);
}
