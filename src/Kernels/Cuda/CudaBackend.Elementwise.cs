using FashionViL.Tensors;
using ILGPU;
using Device = FashionViL.Tensors.Device;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>Reads an element as double and writes one from double (the casting copy; bool is a 0/1 byte).</summary>
public interface IElem<T> where T : unmanaged { double ToDouble(T v); T FromDouble(double v); }

public static class Elems
{
    public struct F32 : IElem<float> { public readonly double ToDouble(float v) => v; public readonly float FromDouble(double v) => (float)v; }
    public struct F64 : IElem<double> { public readonly double ToDouble(double v) => v; public readonly double FromDouble(double v) => v; }
    public struct I32 : IElem<int> { public readonly double ToDouble(int v) => v; public readonly int FromDouble(double v) => (int)v; }
    public struct I64 : IElem<long> { public readonly double ToDouble(long v) => v; public readonly long FromDouble(double v) => (long)v; }
    public struct U8 : IElem<byte> { public readonly double ToDouble(byte v) => v; public readonly byte FromDouble(double v) => (byte)v; }
    /// <summary>
    /// float16 bits, converted by hand with round-to-nearest-even straight from double (as System.Half does;
    /// ILGPU.Half's conversion on the CPU emulator truncates, and System.Half does not compile into kernels).
    /// </summary>
    public struct F16 : IElem<ushort>
    {
        public readonly double ToDouble(ushort h)
        {
            int e = (h >> 10) & 0x1F, m = h & 0x3FF;
            double mag = e == 0 ? m * 5.9604644775390625E-8
                : e == 31 ? (m == 0 ? double.PositiveInfinity : double.NaN)
                : (1024 + m) * Interop.IntAsFloat((ulong)(e - 25 + 1023) << 52);
            return (h & 0x8000) != 0 ? -mag : mag;
        }

        public readonly ushort FromDouble(double v)
        {
            ulong x = Interop.FloatAsInt(v);
            uint sign = (uint)(x >> 48) & 0x8000;
            ulong abs = x & 0x7FFF_FFFF_FFFF_FFFFUL;
            int exp = (int)(abs >> 52);
            ulong mant = abs & 0xF_FFFF_FFFF_FFFFUL;
            if (exp == 0x7FF) return (ushort)(sign | (mant != 0 ? 0x7E00u : 0x7C00u));
            int e = exp - 1023;
            if (e >= 16) return (ushort)(sign | 0x7C00);
            ulong r, rem, halfway;
            if (e >= -14)
            {
                r = ((ulong)(e + 15) << 10) | (mant >> 42);
                rem = mant & ((1UL << 42) - 1); halfway = 1UL << 41;
            }
            else
            {
                int shift = 28 - e;
                if (shift > 60) return (ushort)sign;
                ulong m = mant | (1UL << 52);
                r = m >> shift;
                rem = m & ((1UL << shift) - 1); halfway = 1UL << (shift - 1);
            }
            if (rem > halfway || (rem == halfway && (r & 1) != 0)) r++;
            return (ushort)(sign | (uint)r);
        }
    }
    /// <summary>bfloat16 bits: the upper half of a float32, rounded to nearest even (NaN stays NaN), as <see cref="FashionViL.Tensors.BFloat16"/>.</summary>
    public struct BF16 : IElem<ushort>
    {
        public readonly double ToDouble(ushort v) => Interop.IntAsFloat((uint)v << 16);
        public readonly ushort FromDouble(double v)
        {
            float f = (float)v;
            uint u = Interop.FloatAsInt(f);
            if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
            return (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
        }
    }
    public struct Bool : IElem<byte> { public readonly double ToDouble(byte v) => v != 0 ? 1.0 : 0.0; public readonly byte FromDouble(double v) => v != 0 ? (byte)1 : (byte)0; }
}

/// <summary>x → x (the same-dtype copy).</summary>
public struct IdentityOp<T> : IUnaryOp<T, T> where T : unmanaged { public readonly T Apply(T v) => v; }

/// <summary>Dtype conversion through double, as the CPU backend's casting copy.</summary>
public struct CastOp<TS, TD, TIn, TOut> : IUnaryOp<TS, TD>
    where TS : unmanaged where TD : unmanaged where TIn : struct, IElem<TS> where TOut : struct, IElem<TD>
{
    public readonly TD Apply(TS v) => default(TOut).FromDouble(default(TIn).ToDouble(v));
}

/// <summary>
/// The elementwise kernels: one generic strided kernel per arity, specialised by op struct. All are
/// grid-stride loops over the row-major element index, explicitly grouped (group shape is a launch parameter).
/// </summary>
internal static class ElementwiseKernels
{
    // Each thread takes its grid-stride elements four at a time (i, i + s, i + 2s, i + 3s: the same elements in the same
    // order as one at a time) and loads all four before it stores any. One element per iteration keeps one load per operand
    // in flight per thread, because the next iteration's load issues only after this iteration's store, which waits for its
    // load: with 2,048 threads per SM that is 8 KB of 4-byte loads per SM, about a quarter of what an H200 needs in flight
    // to reach its bandwidth. Every element is still computed by itself, so the values are those of the one-at-a-time loop.

    public static void Map<T, TR, TOp>(ArrayView<T> x, ArrayView<TR> y, Strided3 l, int n, TOp op)
        where T : unmanaged where TR : unmanaged where TOp : struct, IUnaryOp<T, TR>
    {
        for (int i0 = Grid.GlobalIndex.X; i0 < n;)
        {
            int i1 = KMath.NextGridStride(i0, n), i2 = KMath.NextGridStride(i1, n), i3 = KMath.NextGridStride(i2, n);
            l.Offsets(i0, out int a0, out int y0, out _);
            int a1 = 0, a2 = 0, a3 = 0, y1 = 0, y2 = 0, y3 = 0;
            T x0 = x[a0], x1 = default, x2 = default, x3 = default;
            if (i1 < n) { l.Offsets(i1, out a1, out y1, out _); x1 = x[a1]; }
            if (i2 < n) { l.Offsets(i2, out a2, out y2, out _); x2 = x[a2]; }
            if (i3 < n) { l.Offsets(i3, out a3, out y3, out _); x3 = x[a3]; }
            y[y0] = op.Apply(x0);
            if (i1 < n) y[y1] = op.Apply(x1);
            if (i2 < n) y[y2] = op.Apply(x2);
            if (i3 < n) y[y3] = op.Apply(x3);
            i0 = KMath.NextGridStride(i3, n);
        }
    }

    public static void Zip<T, TR, TOp>(ArrayView<T> a, ArrayView<T> b, ArrayView<TR> y, Strided3 l, int n, TOp op)
        where T : unmanaged where TR : unmanaged where TOp : struct, IBinaryOp<T, TR>
    {
        for (int i0 = Grid.GlobalIndex.X; i0 < n;)
        {
            int i1 = KMath.NextGridStride(i0, n), i2 = KMath.NextGridStride(i1, n), i3 = KMath.NextGridStride(i2, n);
            l.Offsets(i0, out int a0, out int b0, out int y0);
            int a1 = 0, a2 = 0, a3 = 0, b1 = 0, b2 = 0, b3 = 0, y1 = 0, y2 = 0, y3 = 0;
            T u0 = a[a0], v0 = b[b0], u1 = default, v1 = default, u2 = default, v2 = default, u3 = default, v3 = default;
            if (i1 < n) { l.Offsets(i1, out a1, out b1, out y1); u1 = a[a1]; v1 = b[b1]; }
            if (i2 < n) { l.Offsets(i2, out a2, out b2, out y2); u2 = a[a2]; v2 = b[b2]; }
            if (i3 < n) { l.Offsets(i3, out a3, out b3, out y3); u3 = a[a3]; v3 = b[b3]; }
            y[y0] = op.Apply(u0, v0);
            if (i1 < n) y[y1] = op.Apply(u1, v1);
            if (i2 < n) y[y2] = op.Apply(u2, v2);
            if (i3 < n) y[y3] = op.Apply(u3, v3);
            i0 = KMath.NextGridStride(i3, n);
        }
    }

    /// <summary>y (contiguous, from yOff) ← c ? a : b.</summary>
    public static void Where<T>(ArrayView<byte> c, ArrayView<T> a, ArrayView<T> b, ArrayView<T> y, Strided3 l, int n, int yOff) where T : unmanaged
    {
        for (int i0 = Grid.GlobalIndex.X; i0 < n;)
        {
            int i1 = KMath.NextGridStride(i0, n), i2 = KMath.NextGridStride(i1, n), i3 = KMath.NextGridStride(i2, n);
            l.Offsets(i0, out int c0, out int a0, out int b0);
            int c1 = 0, c2 = 0, c3 = 0, a1 = 0, a2 = 0, a3 = 0, b1 = 0, b2 = 0, b3 = 0;
            if (i1 < n) l.Offsets(i1, out c1, out a1, out b1);
            if (i2 < n) l.Offsets(i2, out c2, out a2, out b2);
            if (i3 < n) l.Offsets(i3, out c3, out a3, out b3);
            byte k0 = c[c0], k1 = i1 < n ? c[c1] : (byte)0, k2 = i2 < n ? c[c2] : (byte)0, k3 = i3 < n ? c[c3] : (byte)0;
            T v0 = k0 != 0 ? a[a0] : b[b0], v1 = default, v2 = default, v3 = default;
            if (i1 < n) v1 = k1 != 0 ? a[a1] : b[b1];
            if (i2 < n) v2 = k2 != 0 ? a[a2] : b[b2];
            if (i3 < n) v3 = k3 != 0 ? a[a3] : b[b3];
            y[yOff + i0] = v0;
            if (i1 < n) y[yOff + i1] = v1;
            if (i2 < n) y[yOff + i2] = v2;
            if (i3 < n) y[yOff + i3] = v3;
            i0 = KMath.NextGridStride(i3, n);
        }
    }

    public static void Fill<T>(ArrayView<T> y, Strided3 l, int n, T v) where T : unmanaged
    {
        for (int i = Grid.GlobalIndex.X; i < n; i = KMath.NextGridStride(i, n))
        {
            l.Offsets(i, out int o0, out _, out _);
            y[o0] = v;
        }
    }

    /// <summary>gx ← op.Grad(x, y, gy), all contiguous views of n elements.</summary>
    public static void Grad<T, TOp>(ArrayView<T> x, ArrayView<T> y, ArrayView<T> gy, ArrayView<T> gx, int n, TOp op)
        where T : unmanaged where TOp : struct, IGradOp<T>
    {
        for (int i0 = Grid.GlobalIndex.X; i0 < n;)
        {
            int i1 = KMath.NextGridStride(i0, n), i2 = KMath.NextGridStride(i1, n), i3 = KMath.NextGridStride(i2, n);
            T x0 = x[i0], y0 = y[i0], g0 = gy[i0], x1 = default, y1 = default, g1 = default;
            T x2 = default, y2 = default, g2 = default, x3 = default, y3 = default, g3 = default;
            if (i1 < n) { x1 = x[i1]; y1 = y[i1]; g1 = gy[i1]; }
            if (i2 < n) { x2 = x[i2]; y2 = y[i2]; g2 = gy[i2]; }
            if (i3 < n) { x3 = x[i3]; y3 = y[i3]; g3 = gy[i3]; }
            gx[i0] = op.Grad(x0, y0, g0);
            if (i1 < n) gx[i1] = op.Grad(x1, y1, g1);
            if (i2 < n) gx[i2] = op.Grad(x2, y2, g2);
            if (i3 < n) gx[i3] = op.Grad(x3, y3, g3);
            i0 = KMath.NextGridStride(i3, n);
        }
    }
}

public sealed partial class CudaBackend
{
    // ------------------------------------------------------------------ launchers (each kernel loaded once per runtime)

    private void LaunchMap<T, TR, TOp>(ArrayView<T> x, ArrayView<TR> y, Strided3 l, int n, TOp op)
        where T : unmanaged where TR : unmanaged where TOp : struct, IUnaryOp<T, TR>
    {
        var k = Runtime.Kernel(("map", typeof(T), typeof(TR), typeof(TOp)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<TR>, Strided3, int, TOp>(ElementwiseKernels.Map<T, TR, TOp>));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(n), x, y, l, n, op);
    }

    /// <summary>y ← op(x) elementwise; x and y any strides, same shape.</summary>
    internal void Map<T, TR, TOp>(Tensor x, Tensor y, TOp op, string name)
        where T : unmanaged where TR : unmanaged where TOp : struct, IUnaryOp<T, TR>
    {
        if (y.Numel == 0) return;
        var (xv, xb) = Strided<T>(x);
        var (yv, yb) = Strided<TR>(y);
        LaunchMap(xv, yv, Strided3.Plan(y.Sizes, [x, y], [xb, yb], name), y.Numel, op);
    }

    private void MapFloat<TOp>(Tensor x, Tensor y, TOp op) where TOp : struct, IUnaryOp<float, float>, IUnaryOp<double, double>
    {
        if (x.DType == DType.Float32) Map<float, float, TOp>(x, y, op, "unary");
        else Map<double, double, TOp>(x, y, op, "unary");
    }

    private void Zip<T, TR, TOp>(Tensor a, Tensor b, Tensor y, TOp op)
        where T : unmanaged where TR : unmanaged where TOp : struct, IBinaryOp<T, TR>
    {
        var (av, ab) = Strided<T>(a);
        var (bv, bb) = Strided<T>(b);
        var (yv, yb) = Strided<TR>(y);
        var l = Strided3.Plan(y.Sizes, [a, b, y], [ab, bb, yb], "binary");
        var k = Runtime.Kernel(("zip", typeof(T), typeof(TR), typeof(TOp)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<TR>, Strided3, int, TOp>(ElementwiseKernels.Zip<T, TR, TOp>));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(y.Numel), av, bv, yv, l, y.Numel, op);
    }

    private void GradFloat<TOp>(Tensor x, Tensor y, Tensor gy, Tensor gx, TOp op) where TOp : struct, IGradOp<float>, IGradOp<double>
    {
        if (gx.DType == DType.Float32) GradT<float, TOp>(x, y, gy, gx, op);
        else GradT<double, TOp>(x, y, gy, gx, op);
    }

    private void GradT<T, TOp>(Tensor x, Tensor y, Tensor gy, Tensor gx, TOp op) where T : unmanaged where TOp : struct, IGradOp<T>
    {
        int n = gx.Numel;
        var k = Runtime.Kernel(("grad", typeof(T), typeof(TOp), typeof(void)),
            acc => acc.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, TOp>(ElementwiseKernels.Grad<T, TOp>));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(n), Dense<T>(x), Dense<T>(y), Dense<T>(gy), Dense<T>(gx), n, op);
    }

    /// <summary>The n elements of a contiguous tensor.</summary>
    private ArrayView<T> Dense<T>(Tensor t) where T : unmanaged => View<T>(t).SubView(0, t.Numel);

    // ------------------------------------------------------------------ copies and fills

    public void Copy(Tensor src, Tensor dst)
    {
        RequireSameShape(src, dst, "copy");
        RequireHere(src, "copy"); RequireHere(dst, "copy");
        if (src.Numel == 0) return;
        if (src.DType == dst.DType)
        {
            switch (src.DType.Size())
            {
                case 1: Map<byte, byte, IdentityOp<byte>>(src, dst, default, "copy"); break;
                case 2: Map<short, short, IdentityOp<short>>(src, dst, default, "copy"); break;
                case 4: Map<int, int, IdentityOp<int>>(src, dst, default, "copy"); break;
                default: Map<long, long, IdentityOp<long>>(src, dst, default, "copy"); break;
            }
            return;
        }
        switch (src.DType)
        {
            case DType.Float32: CopyFrom<float, Elems.F32>(src, dst); break;
            case DType.Float64: CopyFrom<double, Elems.F64>(src, dst); break;
            case DType.Int32: CopyFrom<int, Elems.I32>(src, dst); break;
            case DType.Int64: CopyFrom<long, Elems.I64>(src, dst); break;
            case DType.UInt8: CopyFrom<byte, Elems.U8>(src, dst); break;
            case DType.Bool: CopyFrom<byte, Elems.Bool>(src, dst); break;
            case DType.Float16: CopyFrom<ushort, Elems.F16>(src, dst); break;
            case DType.BFloat16: CopyFrom<ushort, Elems.BF16>(src, dst); break;
            default: throw new NotSupportedException($"cuda: copy {src.DType.Name()} → {dst.DType.Name()} is not implemented yet");
        }
    }

    private void CopyFrom<TS, TIn>(Tensor src, Tensor dst) where TS : unmanaged where TIn : struct, IElem<TS>
    {
        switch (dst.DType)
        {
            case DType.Float32: Map<TS, float, CastOp<TS, float, TIn, Elems.F32>>(src, dst, default, "copy"); break;
            case DType.Float64: Map<TS, double, CastOp<TS, double, TIn, Elems.F64>>(src, dst, default, "copy"); break;
            case DType.Int32: Map<TS, int, CastOp<TS, int, TIn, Elems.I32>>(src, dst, default, "copy"); break;
            case DType.Int64: Map<TS, long, CastOp<TS, long, TIn, Elems.I64>>(src, dst, default, "copy"); break;
            case DType.UInt8: Map<TS, byte, CastOp<TS, byte, TIn, Elems.U8>>(src, dst, default, "copy"); break;
            case DType.Bool: Map<TS, byte, CastOp<TS, byte, TIn, Elems.Bool>>(src, dst, default, "copy"); break;
            case DType.Float16: Map<TS, ushort, CastOp<TS, ushort, TIn, Elems.F16>>(src, dst, default, "copy"); break;
            case DType.BFloat16: Map<TS, ushort, CastOp<TS, ushort, TIn, Elems.BF16>>(src, dst, default, "copy"); break;
            default: throw new NotSupportedException($"cuda: copy {src.DType.Name()} → {dst.DType.Name()} is not implemented yet");
        }
    }

    public unsafe void Transfer(Tensor src, Tensor dst)
    {
        RequireSameShape(src, dst, "transfer");
        if (src.DType != dst.DType) throw new ArgumentException($"cuda: transfer: dtypes {src.DType.Name()} and {dst.DType.Name()} differ");
        RequireContiguous(src, "transfer", "source"); RequireContiguous(dst, "transfer", "destination");
        long bytes = (long)src.Numel * src.DType.Size();
        if (bytes == 0) return;
        if (src.Device.IsCpu && dst.Device == Device) Upload((byte*)src.DataPtrRaw(), RawBytes(dst, bytes), bytes);
        else if (src.Device == Device && dst.Device.IsCpu) Download(RawBytes(src, bytes), (byte*)dst.DataPtrRaw(), bytes);
        else if (src.Device == Device && dst.Device == Device) Copy(src, dst);
        else throw new NotSupportedException($"cuda: transfer {src.Device} → {dst.Device} is not implemented yet");
    }

    /// <summary>
    /// Host → device. Through the page-locked staging buffer (when <see cref="CudaRuntime.UsePageLockedStaging"/>):
    /// the host bytes are copied into pinned memory and the device copy is queued asynchronously, so the call
    /// returns before the copy lands; the next use of the staging buffer waits for it. Otherwise a pageable copy.
    /// </summary>
    private unsafe void Upload(byte* host, ArrayView<byte> dev, long bytes)
    {
        var staging = Runtime.Staging;
        if (staging is null)
        {
            for (long o = 0; o < bytes; o += Chunk)
            {
                int len = (int)Math.Min(Chunk, bytes - o);
                dev.SubView(o, len).CopyFromCPU(Stream, new ReadOnlySpan<byte>(host + o, len));
            }
            Runtime.Synchronize(); // the host buffer may be freed as soon as we return
            return;
        }
        lock (staging)
        {
            long half = staging.Length / 2;
            if (bytes <= half)
            {
                UploadRing(staging, host, dev, (int)bytes, half);
                return;
            }
            long cap = staging.Length;
            for (long o = 0; o < bytes; o += cap)
            {
                int len = (int)Math.Min(cap, bytes - o);
                if (Runtime.StagingBusy) Runtime.Synchronize();
                new ReadOnlySpan<byte>(host + o, len).CopyTo(staging.Span);
                dev.SubView(o, len).CopyFrom(Stream, staging.ArrayView.SubView(0, len));
                Runtime.StagingBusy = true;
            }
            // The last piece may still be in flight: the next small upload waits for exactly that copy.
            Runtime.RingLargeDone?.Dispose();
            Runtime.RingLargeDone = Stream.AddProfilingMarker();
        }
    }

    /// <summary>
    /// A small upload through the staging buffer used as two halves: uploads fill the current half back to back without
    /// waiting; when it is full, a marker records the end of its copies and the other half is taken, waiting only for that
    /// half's marker (recorded a whole half-buffer of uploads earlier, normally long done). After a full
    /// <see cref="CudaRuntime.Synchronize"/> the ring starts empty, so a step that uploads less than half the buffer
    /// between synchronisations never waits.
    /// </summary>
    private unsafe void UploadRing(PageLockedArray1D<byte> staging, byte* host, ArrayView<byte> dev, int len, long half)
    {
        var rt = Runtime;
        if (rt.RingLargeDone is { } large)
        {
            rt.CountHostWait();
            large.Synchronize();
            large.Dispose();
            rt.RingLargeDone = null;
        }
        if (rt.RingOffset + len > (rt.RingHalf + 1) * half)
        {
            rt.RingDone[rt.RingHalf]?.Dispose();
            rt.RingDone[rt.RingHalf] = Stream.AddProfilingMarker();
            rt.RingHalf ^= 1;
            rt.RingOffset = rt.RingHalf * half;
            if (rt.RingDone[rt.RingHalf] is { } prev)
            {
                rt.CountHostWait();
                prev.Synchronize();
                prev.Dispose();
                rt.RingDone[rt.RingHalf] = null;
            }
        }
        long off = rt.RingOffset;
        new ReadOnlySpan<byte>(host, len).CopyTo(staging.Span.Slice((int)off, len));
        dev.CopyFrom(Stream, staging.ArrayView.SubView(off, len));
        rt.RingOffset = off + ((len + 255) & ~255L);
        rt.StagingBusy = true;
    }

    /// <summary>Device → host: waits for the queued work (the host reads the values).</summary>
    private unsafe void Download(ArrayView<byte> dev, byte* host, long bytes)
    {
        Runtime.CountRead();
        var staging = Runtime.Staging;
        if (staging is null)
        {
            for (long o = 0; o < bytes; o += Chunk)
            {
                int len = (int)Math.Min(Chunk, bytes - o);
                dev.SubView(o, len).CopyToCPU(Stream, new Span<byte>(host + o, len));
            }
            Runtime.Synchronize();
            return;
        }
        lock (staging)
        {
            long cap = staging.Length;
            for (long o = 0; o < bytes; o += cap)
            {
                int len = (int)Math.Min(cap, bytes - o);
                staging.ArrayView.SubView(0, len).CopyFrom(Stream, dev.SubView(o, len));
                Runtime.Synchronize();
                Runtime.StagingBusy = false;
                staging.Span[..len].CopyTo(new Span<byte>(host + o, len));
            }
        }
    }

    private const int Chunk = 1 << 30;

    private ArrayView<byte> RawBytes(Tensor t, long bytes)
        => Runtime.Allocator.Buffer(t.Storage.Pointer).SubView((long)t.Offset * t.DType.Size(), bytes);

    public void Fill(Tensor dst, double value)
    {
        RequireHere(dst, "fill");
        if (dst.Numel == 0) return;
        switch (dst.DType)
        {
            case DType.Float32: FillT(dst, BitConverter.SingleToInt32Bits((float)value)); break;
            case DType.Float64: FillT(dst, BitConverter.DoubleToInt64Bits(value)); break;
            case DType.Int32: FillT(dst, checked((int)value)); break;
            case DType.Int64: FillT(dst, checked((long)value)); break;
            case DType.Bool: FillT(dst, (byte)(value != 0 ? 1 : 0)); break;
            case DType.UInt8: FillT(dst, checked((byte)value)); break;
            case DType.Float16: FillT(dst, BitConverter.HalfToInt16Bits((System.Half)value)); break;
            case DType.BFloat16: FillT(dst, (short)((BFloat16)(float)value).Bits); break;
        }
    }

    private void FillT<T>(Tensor dst, T v) where T : unmanaged
    {
        var (yv, yb) = Strided<T>(dst);
        var l = Strided3.Plan(dst.Sizes, [dst], [yb], "fill");
        var k = Runtime.Kernel(("fill", typeof(T), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<T>, Strided3, int, T>(ElementwiseKernels.Fill<T>));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(dst.Numel), yv, l, dst.Numel, v);
    }

    // ------------------------------------------------------------------ elementwise

    public void Unary(UnaryOp op, Tensor x, Tensor y, double p0 = 0, double p1 = 0)
    {
        RequireSameShape(x, y, $"unary {op}");
        RequireContiguous(y, $"unary {op}", "output");
        if (x.Numel == 0) return;
        if (op == UnaryOp.LogicalNot)
        {
            if (x.DType != DType.Bool || y.DType != DType.Bool) throw new NotSupportedException($"cuda: logical_not needs bool tensors, got {x.DType.Name()}");
            Map<byte, byte, UnaryOps.LogicalNot>(x, y, default, "logical_not");
            return;
        }
        RequireFloat(x, $"unary {op}");
        if (x.DType != y.DType) throw new ArgumentException($"cuda: unary {op}: input {x.DType.Name()} and output {y.DType.Name()} differ");
        DispatchUnary(op, x, y, p0, p1);
    }

    public void UnaryBackward(UnaryOp op, Tensor x, Tensor y, Tensor gy, Tensor gx, double p0 = 0, double p1 = 0)
    {
        RequireFloat(gy, $"unary {op} backward");
        foreach (var t in new[] { x, y, gy, gx })
        {
            RequireSameShape(t, gx, $"unary {op} backward");
            RequireContiguous(t, $"unary {op} backward", "operand");
            if (t.DType != gx.DType) throw new ArgumentException($"cuda: unary {op} backward: dtypes {t.DType.Name()} and {gx.DType.Name()} differ");
        }
        if (gx.Numel == 0) return;
        DispatchGrad(op, x, y, gy, gx, p0, p1);
    }

    public void Binary(BinaryOp op, Tensor a, Tensor b, Tensor y)
    {
        RequireSameShape(a, y, $"binary {op}");
        RequireSameShape(b, y, $"binary {op}");
        RequireContiguous(y, $"binary {op}", "output");
        if (a.DType != b.DType) throw new ArgumentException($"cuda: binary {op}: operand dtypes {a.DType.Name()} and {b.DType.Name()} differ");
        var want = op >= BinaryOp.Eq ? DType.Bool : a.DType;
        if (y.DType != want) throw new ArgumentException($"cuda: binary {op}: output must be {want.Name()}, got {y.DType.Name()}");
        if (y.Numel == 0) return;
        switch (a.DType)
        {
            case DType.Float32: DispatchBinaryF32(op, a, b, y); break;
            case DType.Float64: DispatchBinaryF64(op, a, b, y); break;
            case DType.Int32: DispatchBinaryI32(op, a, b, y); break;
            case DType.Int64: DispatchBinaryI64(op, a, b, y); break;
            case DType.Bool:
            case DType.UInt8: DispatchBinaryU8(op, a, b, y); break;
            default: throw new NotSupportedException($"cuda: binary {op} on {a.DType.Name()} is not implemented yet");
        }
    }

    public void Where(Tensor cond, Tensor a, Tensor b, Tensor y)
    {
        if (cond.DType != DType.Bool) throw new ArgumentException($"cuda: where: condition must be bool, got {cond.DType.Name()}");
        RequireSameShape(cond, y, "where"); RequireSameShape(a, y, "where"); RequireSameShape(b, y, "where");
        RequireContiguous(y, "where", "output");
        if (a.DType != y.DType || b.DType != y.DType) throw new ArgumentException($"cuda: where: dtypes {a.DType.Name()}, {b.DType.Name()} → {y.DType.Name()} differ");
        if (y.Numel == 0) return;
        switch (y.DType.Size())
        {
            case 1: WhereT<byte>(cond, a, b, y); break;
            case 2: WhereT<short>(cond, a, b, y); break;
            case 4: WhereT<int>(cond, a, b, y); break;
            default: WhereT<long>(cond, a, b, y); break;
        }
    }

    private void WhereT<T>(Tensor c, Tensor a, Tensor b, Tensor y) where T : unmanaged
    {
        var (cv, cb) = Strided<byte>(c);
        var (av, ab) = Strided<T>(a);
        var (bv, bb) = Strided<T>(b);
        var l = Strided3.Plan(y.Sizes, [c, a, b], [cb, ab, bb], "where");
        var k = Runtime.Kernel(("where", typeof(T), typeof(void), typeof(void)),
            acc => acc.LoadKernel<ArrayView<byte>, ArrayView<T>, ArrayView<T>, ArrayView<T>, Strided3, int, int>(ElementwiseKernels.Where<T>));
        CudaRuntime.CountLaunch();
        k(Stream, Runtime.Grid(y.Numel), cv, av, bv, Dense<T>(y), l, y.Numel, 0);
    }
}
