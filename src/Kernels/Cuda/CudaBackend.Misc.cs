using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// SGD, sort / top-k and masked select / scatter on the device (<see cref="MiscKernels"/>). Float32 data, int64 indices.
/// The masked ops do not read the mask's true count back (that would stall the stream): the caller sizes the
/// output; a too-small output or source is never written or read past its end (the CPU backend throws instead).
/// </summary>
public sealed partial class CudaBackend
{
    private static NotSupportedException NotF32(string op, Tensor t)
        => new($"cuda: {op} of {t.DType.Name()} data is not supported on the device (float32 only; use the CPU backend)");

    public void SgdStep(Tensor param, Tensor grad, Tensor? momentumBuffer, SgdParams p, bool firstStep)
    {
        const string op = "sgd";
        foreach (var t in new[] { param, grad, momentumBuffer })
            if (t is not null && t.DType != DType.Float32) throw NotF32(op, t);
        RequireDense(op, (param, "param"), (grad, "grad"), (momentumBuffer, "momentum_buffer"));
        RequireSameShape(param, grad, op);
        if (momentumBuffer is not null) RequireSameShape(param, momentumBuffer, op);
        if (p.Momentum != 0 && momentumBuffer is null) throw new ArgumentException($"cuda: {op}: momentum {p.Momentum} needs a momentum buffer for param {param.ShapeString}");
        if (p.Nesterov && (p.Momentum <= 0 || p.Dampening != 0)) throw new ArgumentException($"cuda: {op}: nesterov needs momentum > 0 and dampening 0 (got momentum {p.Momentum}, dampening {p.Dampening})");
        int n = param.Numel;
        if (n == 0) return;
        var h = new SgdScalars
        {
            Wd = (float)p.WeightDecay, Mom = (float)p.Momentum, Damp = (float)(1.0 - p.Dampening), NegLr = (float)(-p.Lr),
            UseWd = p.WeightDecay != 0 ? 1 : 0, UseMom = p.Momentum != 0 ? 1 : 0, Nesterov = p.Nesterov ? 1 : 0, First = firstStep ? 1 : 0,
        };
        var pv = Dense<float>(param);
        var bv = momentumBuffer is null ? pv : Dense<float>(momentumBuffer);
        var k = Runtime.Kernel(("misc.sgd", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, SgdScalars>(MiscKernels.SgdKernel));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(n), pv, Dense<float>(grad), bv, n, h);
    }

    public void TopK(Tensor x, int k, bool largest, Tensor values, Tensor indices)
    {
        const string op = "topk";
        if (x.Rank == 0) throw new ArgumentException($"cuda: {op}: input must have at least one dim, got {x.ShapeString}");
        int c = x.Sizes[^1];
        if (k < 0 || k > c) throw new ArgumentException($"cuda: {op}: k = {k} is out of range for {c} elements in the last dim of {x.ShapeString}");
        SortRowsDevice(op, x, k, largest, values, indices);
    }

    public void Sort(Tensor x, bool descending, Tensor values, Tensor indices)
    {
        const string op = "sort";
        if (x.Rank == 0) throw new ArgumentException($"cuda: {op}: input must have at least one dim, got {x.ShapeString}");
        SortRowsDevice(op, x, x.Sizes[^1], descending, values, indices);
    }

    private void SortRowsDevice(string op, Tensor x, int k, bool descending, Tensor values, Tensor indices)
    {
        if (x.DType != DType.Float32) throw NotF32(op, x);
        if (values.DType != DType.Float32) throw NotF32(op, values);
        var want = x.Shape; want[^1] = k;
        if (!values.Sizes.SequenceEqual(want) || !indices.Sizes.SequenceEqual(want))
            throw new ArgumentException($"cuda: {op}: values {values.ShapeString} and indices {indices.ShapeString} must be {Shape.Format(want)} for input {x.ShapeString}");
        if (indices.DType != DType.Int64) throw new NotSupportedException($"cuda: {op}: indices must be int64, got {indices.DType.Name()}");
        RequireHere(x, op);
        int c = x.Sizes[^1];
        if (c == 0 || x.Numel == 0 || k == 0) return;
        RequireDense(op, (values, "values"), (indices, "indices"));
        int rows = x.Numel / c;
        int p = 1;
        while (p < c) p <<= 1;
        var s = new SortShape { Rows = rows, C = c, K = k, P = p };
        int desc = descending ? 1 : 0;   // its own parameter, folded into the keys at load
        int gs = Math.Max(1, Math.Min(Math.Min(256, Acc.MaxNumThreadsPerGroup), Math.Max(1, p / 2)));
        using var xc = Dense(x);
        if (p <= MiscKernels.SharedSortCap)
        {
            var kern = Runtime.Kernel(("misc.sort.shared", typeof(void), typeof(void), typeof(void)),
                acc => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, SortShape, int>(MiscKernels.SortSharedKernel));
            CudaRuntime.CountLaunch();
            kern(Stream, new KernelConfig(Math.Min(rows, 65535), gs), Dense<float>(xc), Dense<float>(values), Dense<long>(indices), s, desc);
        }
        else
        {
            int groups = (int)Math.Clamp((1L << 26) / p, 1, Math.Min(rows, 1024));
            using var keys = Tensor.Empty([groups * p], DType.Int32, Device);
            using var ids = Tensor.Empty([groups * p], DType.Int32, Device);
            var kern = Runtime.Kernel(("misc.sort.global", typeof(void), typeof(void), typeof(void)),
                acc => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, ArrayView<uint>, ArrayView<int>, SortShape, int>(MiscKernels.SortGlobalKernel));
            CudaRuntime.CountLaunch();
            kern(Stream, new KernelConfig(groups, gs), Dense<float>(xc), Dense<float>(values), Dense<long>(indices), Dense<int>(keys).Cast<uint>(), Dense<int>(ids), s, desc);
        }
    }

    /// <summary>The mask as dense bytes plus the exclusive per-chunk start offsets (device scratch of chunks + 1 ints).</summary>
    private (Tensor Mask, Tensor Start, int Chunks) MaskStarts(string op, Tensor mask, Tensor like)
    {
        CheckMask(op, mask, like);
        var m = Dense(mask);
        int n = m.Numel;
        int chunks = (n + MiscKernels.MaskChunk - 1) / MiscKernels.MaskChunk;
        var start = Tensor.Empty([chunks + 1], DType.Int32, Device);
        var sv = Dense<int>(start);
        var mv = Dense<byte>(m);
        var count = Runtime.Kernel(("misc.mask.count", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<byte>, ArrayView<int>, int, int>(MiscKernels.MaskCountKernel));
        CudaRuntime.CountLaunch();
        count(Stream, Runtime.Grid(chunks), mv, sv, n, chunks);
        var scan = Runtime.Kernel(("misc.mask.scan", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<int>, int>(MiscKernels.MaskScanKernel));
        CudaRuntime.CountLaunch();
        scan(Stream, new KernelConfig(1, 1), sv, chunks);
        return (m, start, chunks);
    }

    private void MaskCopy(Tensor m, Tensor start, int chunks, ArrayView<float> full, ArrayView<float> packed, bool select)
    {
        var copy = Runtime.Kernel(("misc.mask.copy", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<byte>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int>(MiscKernels.MaskCopyKernel));
        CudaRuntime.CountLaunch();
        copy(Stream, Runtime.Grid(chunks), Dense<byte>(m), Dense<int>(start), full, packed, m.Numel, chunks, select ? 1 : 0);
    }

    public void MaskedSelect(Tensor x, Tensor mask, Tensor y)
    {
        const string op = "masked_select";
        if (x.DType != DType.Float32) throw NotF32(op, x);
        if (y.DType != DType.Float32) throw NotF32(op, y);
        if (y.Rank != 1) throw new ArgumentException($"cuda: {op}: output {y.ShapeString} must be 1-d");
        RequireHere(x, op); RequireHere(y, op);
        if (x.Numel == 0 || y.Numel == 0)
        {
            CheckMask(op, mask, x);
            return;
        }
        var (m, start, chunks) = MaskStarts(op, mask, x);
        using var _m = m; using var _s = start;
        using var xc = Dense(x);
        MaskCopy(m, start, chunks, Dense<float>(xc), Dense<float>(y), select: true);
    }

    public void MaskedScatter(Tensor dst, Tensor mask, Tensor src)
    {
        const string op = "masked_scatter";
        if (dst.DType != DType.Float32) throw NotF32(op, dst);
        if (src.DType != DType.Float32) throw NotF32(op, src);
        RequireHere(src, op);
        RequireDense(op, (dst, "dst"));
        if (dst.Numel == 0 || src.Numel == 0)
        {
            CheckMask(op, mask, dst);
            return;
        }
        var (m, start, chunks) = MaskStarts(op, mask, dst);
        using var _m = m; using var _s = start;
        using var sc = Dense(src);
        MaskCopy(m, start, chunks, Dense<float>(dst), Dense<float>(sc), select: false);
    }

    private void CheckMask(string op, Tensor mask, Tensor like)
    {
        if (mask.DType != DType.Bool) throw new ArgumentException($"cuda: {op}: mask {mask.ShapeString} must be bool, got {mask.DType.Name()}");
        if (!mask.Sizes.SequenceEqual(like.Sizes)) throw new ArgumentException($"cuda: {op}: mask {mask.ShapeString} must have the shape of {like.ShapeString} (expand it first)");
        RequireHere(mask, op);
    }
}
