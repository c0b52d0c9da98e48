using FashionViL.Tensors;
using ILGPU;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Batch/group norm, embedding backward, index select, gather/scatter and VQ lookup on the device
/// (<see cref="NormKernels"/>, <see cref="IndexKernels"/>). Index values live on the device: checking their range
/// would stall the stream, so out-of-range ids never read or write out of bounds but give NaN (selects, gathers)
/// or are skipped (scatters, embedding gradients) instead of the CPU backend's exception.
/// </summary>
public sealed partial class CudaBackend
{
    private static (int N, int C, int S) Ncs(Tensor x, string op)
    {
        if (x.Rank < 2) throw new ArgumentException($"cuda: {op}: input {x.ShapeString} must be [N, C, *]");
        int s = 1;
        for (int i = 2; i < x.Rank; i++) s *= x.Sizes[i];
        return (x.Sizes[0], x.Sizes[1], s);
    }

    private void RequireIndex(string op, Tensor index)
    {
        RequireHere(index, op);
        if (index.DType != DType.Int64) throw new NotSupportedException($"cuda: {op}: index {index.ShapeString} must be int64 on the device, got {index.DType.Name()}");
    }

    public void BatchNormForward(Tensor x, Tensor? weight, Tensor? bias, Tensor? runningMean, Tensor? runningVar,
        bool training, double momentum, double eps, Tensor y, Tensor saveMean, Tensor saveInvStd, Tensor? residual = null, bool relu = false)
    {
        const string op = "batch_norm";
        RequireF32(op, x, weight, bias, runningMean, runningVar, y, saveMean, saveInvStd, residual);
        RequireHere(x, op);
        if (residual is not null) { RequireHere(residual, op); RequireSameShape(x, residual, op); }
        RequireDense(op, (weight, "weight"), (bias, "bias"), (runningMean, "running_mean"), (runningVar, "running_var"), (y, "y"), (saveMean, "save_mean"), (saveInvStd, "save_invstd"));
        using var xc = Dense(x);
        using var rc = residual is null ? null : Dense(residual);
        var (n, c, s) = Ncs(xc, op);
        // few, long channels: each is cut into slices whose partial sums need a workspace (from the caching allocator)
        using var work = BatchNormWorkspace(c, (long)n * s, training);
        NormKernels.BatchNormForward(Acc, Stream, View<float>(xc), ViewOrNull(weight), ViewOrNull(bias), ViewOrNull(runningMean), ViewOrNull(runningVar),
            training, (float)momentum, (float)eps, View<float>(y), View<float>(saveMean), View<float>(saveInvStd), n, c, s, 0, ViewOrNull(rc), relu,
            work is null ? null : View<double>(work));
    }

    public void BatchNormBackward(Tensor x, Tensor gy, Tensor? weight, Tensor saveMean, Tensor saveInvStd, bool training, Tensor gx, Tensor? gw, Tensor? gb,
        Tensor? reluOutput = null, Tensor? gResidual = null)
    {
        const string op = "batch_norm backward";
        RequireF32(op, x, gy, weight, saveMean, saveInvStd, gx, gw, gb, reluOutput, gResidual);
        RequireHere(x, op); RequireHere(gy, op);
        if (reluOutput is not null) { RequireHere(reluOutput, op); RequireSameShape(x, reluOutput, op); }
        if (gResidual is not null) RequireSameShape(x, gResidual, op);
        RequireDense(op, (weight, "weight"), (saveMean, "save_mean"), (saveInvStd, "save_invstd"), (gx, "gx"), (gw, "gw"), (gb, "gb"), (gResidual, "residual gradient"));
        using var xc = Dense(x); using var gyc = Dense(gy);
        using var yc = reluOutput is null ? null : Dense(reluOutput);
        var (n, c, s) = Ncs(xc, op);
        using var work = BatchNormWorkspace(c, (long)n * s, true);
        NormKernels.BatchNormBackward(Acc, Stream, View<float>(xc), View<float>(gyc), ViewOrNull(weight), View<float>(saveMean), View<float>(saveInvStd),
            training, View<float>(gx), ViewOrNull(gw), ViewOrNull(gb), n, c, s, 0, ViewOrNull(yc), ViewOrNull(gResidual), work is null ? null : View<double>(work));
    }

    /// <summary>The split batch norm's workspace (float64 partial sums, <see cref="NormKernels.BatchNormWorkspace"/>) when
    /// <see cref="NormKernels.BatchNormSplitFor"/> splits c channels of <paramref name="count"/> values; null otherwise.</summary>
    private Tensor? BatchNormWorkspace(int c, long count, bool needsStatistics)
    {
        long need = NormKernels.BatchNormWorkspace(c, NormKernels.BatchNormSplitFor(Acc, c, count), needsStatistics);
        return need == 0 ? null : Tensor.Empty([checked((int)need)], DType.Float64, Device);
    }

    public void GroupNormForward(Tensor x, Tensor? weight, Tensor? bias, int groups, double eps, Tensor y, Tensor mean, Tensor rstd, bool silu = false)
    {
        const string op = "group_norm";
        RequireF32(op, x, weight, bias, y, mean, rstd);
        RequireHere(x, op);
        RequireDense(op, (weight, "weight"), (bias, "bias"), (y, "y"), (mean, "mean"), (rstd, "rstd"));
        using var xc = Dense(x);
        var (n, c, s) = Ncs(xc, op);
        NormKernels.GroupNormForward(Acc, Stream, View<float>(xc), ViewOrNull(weight), ViewOrNull(bias), groups, (float)eps, View<float>(y), View<float>(mean), View<float>(rstd), n, c, s, silu: silu);
    }

    public void GroupNormBackward(Tensor x, Tensor gy, Tensor? weight, int groups, Tensor mean, Tensor rstd, Tensor gx, Tensor? gw, Tensor? gb)
    {
        const string op = "group_norm backward";
        RequireF32(op, x, gy, weight, mean, rstd, gx, gw, gb);
        RequireHere(x, op); RequireHere(gy, op);
        RequireDense(op, (weight, "weight"), (mean, "mean"), (rstd, "rstd"), (gx, "gx"), (gw, "gw"), (gb, "gb"));
        using var xc = Dense(x); using var gyc = Dense(gy);
        var (n, c, s) = Ncs(xc, op);
        NormKernels.GroupNormBackward(Acc, Stream, View<float>(xc), View<float>(gyc), ViewOrNull(weight), groups, View<float>(mean), View<float>(rstd),
            View<float>(gx), ViewOrNull(gw), ViewOrNull(gb), n, c, s);
    }

    public void EmbeddingBackward(Tensor ids, Tensor gy, Tensor gWeight, int paddingIdx)
    {
        const string op = "embedding backward";
        RequireF32(op, gy, gWeight);
        RequireIndex(op, ids);
        RequireHere(gy, op);
        RequireDense(op, (gWeight, "gWeight"));
        if (gWeight.Rank != 2) throw new ArgumentException($"cuda: {op}: weight gradient {gWeight.ShapeString} must be [V, D]");
        using var idc = Dense(ids); using var gyc = Dense(gy);
        int d = gWeight.Sizes[1];
        if (gyc.Numel != idc.Numel * d) throw new ArgumentException($"cuda: {op}: gradient {gy.ShapeString} does not match ids {ids.ShapeString} × {d}");
        IndexKernels.EmbeddingBackward(Acc, Stream, View<long>(idc), View<float>(gyc), View<float>(gWeight), idc.Numel, d, gWeight.Sizes[0], paddingIdx);
    }

    public void IndexSelect(Tensor x, int dim, Tensor index, Tensor y)
    {
        const string op = "index_select";
        // A select only moves elements: 4- and 8-byte data of any type (int64 token ids, for ITM's re-paired texts) go
        // through the float kernel as 1 or 2 words per element, bit for bit.
        int words = x.DType.Size() / 4;
        if (x.DType != y.DType || x.DType.Size() % 4 != 0 || words < 1) throw Todo($"{op} of {x.DType.Name()} data");
        RequireIndex(op, index);
        RequireHere(x, op);
        RequireDense(op, (y, "y"));
        using var xc = Dense(x); using var ic = Dense(index);
        var (outer, size, inner) = IndexKernels.Split(xc.Sizes, dim);
        if (y.Numel != (long)outer * ic.Numel * inner) throw new ArgumentException($"cuda: {op}: output {y.ShapeString} does not match {x.ShapeString} selected by {index.ShapeString} on dim {dim}");
        var xv = words == 1 && x.DType == DType.Float32 ? View<float>(xc) : RawBytes(xc, (long)xc.Numel * xc.DType.Size()).Cast<float>();
        var yv = words == 1 && y.DType == DType.Float32 ? View<float>(y) : RawBytes(y, (long)y.Numel * y.DType.Size()).Cast<float>();
        IndexKernels.IndexSelect(Acc, Stream, xv, View<long>(ic), yv, outer, size, ic.Numel, inner * words);
    }

    /// <summary>index_add as a scatter-add: the [n] index is broadcast to [outer, n, inner] (materialised on the device).</summary>
    public void IndexAdd(Tensor dst, int dim, Tensor index, Tensor src)
    {
        const string op = "index_add";
        if (dst.DType != DType.Float32 || src.DType != DType.Float32) throw Todo($"{op} of {dst.DType.Name()} data");
        RequireIndex(op, index); RequireHere(src, op);
        RequireDense(op, (dst, "dst"));
        if (index.Rank != 1 || src.Rank != dst.Rank || src.Sizes[dim] != index.Numel)
            throw new ArgumentException($"cuda: {op}: index {index.ShapeString} and source {src.ShapeString} do not fit destination {dst.ShapeString} on dim {dim}");
        var (outer, nd, inner) = IndexKernels.Split(dst.Sizes, dim);
        int n = index.Numel;
        using var idx3 = index.AsStrided([1, n, 1], [0, index.Strides[0], 0], index.Offset);
        using var wide = idx3.AsStrided([outer, n, inner], [0, index.Strides[0], 0], index.Offset);
        using var ic = Dense(wide);
        using var sc = Dense(src);
        IndexKernels.Scatter(Acc, Stream, View<float>(dst), View<long>(ic), View<float>(sc), outer, nd, n, n, inner, add: true);
    }

    /// <summary>The device kernels need x and index to agree outside <paramref name="dim"/> (the common case); other shapes are not on the device yet.</summary>
    private static (int Outer, int Inner) SameOutside(string op, Tensor a, Tensor index, int dim)
    {
        for (int i = 0; i < a.Rank; i++)
            if (i != dim && a.Sizes[i] != index.Sizes[i])
                throw new NotSupportedException($"cuda: {op}: index {index.ShapeString} smaller than {a.ShapeString} outside dim {dim} is not implemented yet");
        var (outer, _, inner) = IndexKernels.Split(a.Sizes, dim);
        return (outer, inner);
    }

    public void Gather(Tensor x, int dim, Tensor index, Tensor y)
    {
        const string op = "gather";
        if (x.DType != DType.Float32 || y.DType != DType.Float32) throw Todo($"{op} of {x.DType.Name()} data");
        RequireIndex(op, index); RequireHere(x, op);
        RequireDense(op, (y, "y"));
        var (outer, inner) = SameOutside(op, x, index, dim);
        using var xc = Dense(x); using var ic = Dense(index);
        IndexKernels.Gather(Acc, Stream, View<float>(xc), View<long>(ic), View<float>(y), outer, x.Sizes[dim], index.Sizes[dim], inner);
    }

    public void Scatter(Tensor dst, int dim, Tensor index, Tensor src, bool add)
    {
        string op = add ? "scatter_add" : "scatter";
        if (dst.DType != DType.Float32 || src.DType != DType.Float32) throw Todo($"{op} of {dst.DType.Name()} data");
        RequireIndex(op, index); RequireHere(src, op);
        RequireDense(op, (dst, "dst"));
        var (outer, inner) = SameOutside(op, dst, index, dim);
        SameOutside(op, src, index, dim);
        using var ic = Dense(index); using var sc = Dense(src);
        IndexKernels.Scatter(Acc, Stream, View<float>(dst), View<long>(ic), View<float>(sc), outer, dst.Sizes[dim], index.Sizes[dim], src.Sizes[dim], inner, add);
    }

    public void VqLookup(Tensor z, Tensor codebook, Tensor ids)
    {
        const string op = "vq_lookup";
        RequireF32(op, z, codebook);
        RequireHere(z, op); RequireHere(codebook, op);
        RequireIndex(op, ids);
        RequireDense(op, (ids, "ids"));
        if (z.Rank != 2 || codebook.Rank != 2 || z.Sizes[1] != codebook.Sizes[1])
            throw new ArgumentException($"cuda: {op}: z {z.ShapeString} and codebook {codebook.ShapeString} must be [N, D] and [K, D]");
        using var zc = Dense(z); using var ec = Dense(codebook);
        IndexKernels.VqLookup(Acc, Stream, View<float>(zc), View<float>(ec), View<long>(ids), z.Sizes[0], codebook.Sizes[0], z.Sizes[1]);
    }
}
