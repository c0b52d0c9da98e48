using FashionViL.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>Random numbers from the shared Philox stream (<see cref="Philox"/> compiles into the kernels unchanged).</summary>
internal static class RandomKernels
{
    /// <summary>
    /// Value i of a draw, in float64, exactly as the CPU backend computes it. kind: 0 uniform, 1 normal,
    /// 2 bernoulli, 3 randint. For float32 uniform output, values that round up to b are replaced by cap.
    /// </summary>
    public static void Draw(ArrayView<double> y, int n, ulong seed, ulong offset, int kind, double a, double b, int f32, double cap)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i = KMath.NextGridStride(i, n))
        {
            double v;
            if (kind == 0)
            {
                v = a + (b - a) * Philox.Uniform(seed, offset, i);
                if (f32 != 0 && (float)v >= (float)b) v = cap;
            }
            else if (kind == 1) v = a + b * Philox.Normal(seed, offset, i);
            else if (kind == 2) v = Philox.Uniform(seed, offset, i) < a ? 1.0 : 0.0;
            else v = a + (long)(((ulong)Philox.Word(seed, offset, i) * (ulong)(b - a)) >> 32);
            y[i] = v;
        }
    }

    /// <summary>Sort keys of randperm: (Philox word i) · 2³² + i.</summary>
    public static void PermKeys(ArrayView<ulong> keys, int n, ulong seed, ulong offset)
    {
        for (int i = Grid.GlobalIndex.X; i < n; i = KMath.NextGridStride(i, n))
            keys[i] = ((ulong)Philox.Word(seed, offset, i) << 32) | (uint)i;
    }

    /// <summary>Inverted dropout: keep ⇔ (word &gt;&gt; 8) ≥ thr (mode 0), keep all (1) or none (2); y = keep ? op(x) : 0.</summary>
    public static void Dropout<T, TOp>(ArrayView<T> x, ArrayView<T> y, ArrayView<byte> mask, int n, ulong seed, ulong offset, uint thr, int mode, TOp scale)
        where T : unmanaged where TOp : struct, IUnaryOp<T, T>
    {
        for (int i = Grid.GlobalIndex.X; i < n; i = KMath.NextGridStride(i, n))
        {
            bool keep = mode == 1 || (mode == 0 && (Philox.Word(seed, offset, i) >> 8) >= thr);
            mask[i] = keep ? (byte)1 : (byte)0;
            y[i] = keep ? scale.Apply(x[i]) : default;
        }
    }
}

public sealed partial class CudaBackend
{
    public void Random(RandomKind kind, Tensor dst, ulong seed, ulong offset, double a = 0, double b = 1)
    {
        RequireHere(dst, "random");
        RequireContiguous(dst, "random", "output");
        if (kind is RandomKind.Uniform or RandomKind.Normal && !dst.DType.IsFloating())
            throw new ArgumentException($"cuda: random {kind}: output must be floating point, got {dst.DType.Name()}");
        int n = dst.Numel;
        if (n == 0) return;
        var k = Runtime.Kernel(("random", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<double>, int, ulong, ulong, int, double, double, int, double>(RandomKernels.Draw));
        bool f32 = dst.DType == DType.Float32;
        double cap = Math.BitDecrement((float)b);
        if (dst.DType == DType.Float64)
        {
            CudaRuntime.CountLaunch();
            k(Stream, Runtime.Grid(n), Dense<double>(dst), n, seed, offset, (int)kind, a, b, 0, cap);
            return;
        }
        using var tmp = Tensor.Empty(dst.Shape, DType.Float64, Device);
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(n), Dense<double>(tmp), n, seed, offset, (int)kind, a, b, f32 ? 1 : 0, cap);
        Copy(tmp, dst);
    }

    public void RandPerm(Tensor dst, ulong seed, ulong offset)
    {
        RequireHere(dst, "randperm");
        if (dst.DType != DType.Int64 || dst.Rank != 1) throw new ArgumentException($"cuda: randperm: output must be int64 [n], got {dst.DType.Name()} {dst.ShapeString}");
        int n = dst.Numel;
        if (n == 0) return;
        // Keys on the device; the sort runs on the host for now (a device radix sort is owed).
        using var keysT = Tensor.Empty([n], DType.Int64, Device);
        var k = Runtime.Kernel(("permkeys", typeof(void), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<ulong>, int, ulong, ulong>(RandomKernels.PermKeys));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(n), Dense<ulong>(keysT), n, seed, offset);
        var keys = new ulong[n];
        Runtime.CountRead();
        Dense<ulong>(keysT).CopyToCPU(Stream, keys);
        Runtime.Synchronize();
        Array.Sort(keys);
        var perm = new long[n];
        for (int i = 0; i < n; i++) perm[i] = (long)(keys[i] & 0xFFFFFFFF);
        Dense<long>(dst).CopyFromCPU(Stream, perm);
        Runtime.Synchronize();
    }

    public void Dropout(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset)
    {
        const string op = "dropout";
        RequireFloat(x, op);
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"cuda: {op}: probability {p} must be in [0, 1]");
        RequireSameShape(x, y, op); RequireSameShape(x, mask, op);
        if (x.DType != y.DType) throw new ArgumentException($"cuda: {op}: dtypes {x.DType.Name()} and {y.DType.Name()} differ");
        if (mask.DType is not (DType.UInt8 or DType.Bool)) throw new ArgumentException($"cuda: {op}: mask must be uint8, got {mask.DType.Name()} {mask.ShapeString}");
        RequireContiguous(y, op, "output"); RequireContiguous(mask, op, "mask");
        if (x.Numel == 0) return;
        using var xc = x.ContiguousRaw();
        int mode = p <= 0 ? 1 : p >= 1 ? 2 : 0;
        uint thr = mode == 0 ? (uint)Math.Ceiling(p * 16777216.0) : 0;
        double scale = p >= 1 ? 0 : 1.0 / (1.0 - p);
        var s = new UnaryOps.MulScalar { P0 = scale };
        if (x.DType == DType.Float32) DropoutT<float>(xc, y, mask, p, seed, offset, thr, mode, s);
        else DropoutT<double>(xc, y, mask, p, seed, offset, thr, mode, s);
    }

    private void DropoutT<T>(Tensor x, Tensor y, Tensor mask, double p, ulong seed, ulong offset, uint thr, int mode, UnaryOps.MulScalar s) where T : unmanaged
    {
        int n = x.Numel;
        if (typeof(T) == typeof(float))
        {
            // One Philox block per four elements (DropoutKernels): the same words, threshold and scale as the one-word-per-
            // element form below, so the same mask and values bit for bit, with a quarter of the generator work.
            DropoutKernels.Dropout(Acc, Stream, Dense<float>(x), Dense<float>(y), Dense<byte>(mask), n, p, seed, offset);
        }
        else
        {
            var k = Runtime.Kernel(("dropout", typeof(double), typeof(void), typeof(void)),
                acc => acc.LoadKernel<ArrayView<double>, ArrayView<double>, ArrayView<byte>, int, ulong, ulong, uint, int, UnaryOps.MulScalar>(RandomKernels.Dropout<double, UnaryOps.MulScalar>));
            CudaRuntime.CountLaunch();
            k(Stream, Runtime.Grid(n), Dense<double>(x), Dense<double>(y), Dense<byte>(mask), n, seed, offset, thr, mode, s);
        }
    }
}
