using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

public sealed unsafe partial class CpuBackend
{
    public void Copy(Tensor src, Tensor dst)
    {
        RequireSameShape(src, dst, "copy");
        if (src.Numel == 0) return;
        if (src.DType == dst.DType)
        {
            switch (src.DType.Size())
            {
                case 1: CopySame<byte>(src, dst); break;
                case 2: CopySame<short>(src, dst); break;
                case 4: CopySame<int>(src, dst); break;
                default: CopySame<long>(src, dst); break;
            }
            return;
        }
        if (src.DType == DType.Float32 && dst.DType == DType.Float64) { CopyCast<float, double>(src, dst, static v => v); return; }
        if (src.DType == DType.Float64 && dst.DType == DType.Float32) { CopyCast<double, float>(src, dst, static v => (float)v); return; }
        var plan = new StridedPlan(src.Sizes, src, dst);
        byte* ps = (byte*)src.Storage.Pointer, pd = (byte*)dst.Storage.Pointer;
        int es = src.DType.Size(), ed = dst.DType.Size();
        DType ts = src.DType, td = dst.DType;
        int ss = plan.InnerStride(0), sd = plan.InnerStride(1), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                int os = plan.RowOffset(0, r), od = plan.RowOffset(1, r);
                for (int i = 0; i < inner; i++)
                    Elem.Write(pd + (long)(od + i * sd) * ed, td, Elem.Read(ps + (long)(os + i * ss) * es, ts));
            }
        });
    }

    private static void CopySame<T>(Tensor src, Tensor dst) where T : unmanaged
    {
        var plan = new StridedPlan(src.Sizes, src, dst);
        T* ps = (T*)src.Storage.Pointer, pd = (T*)dst.Storage.Pointer;
        int ss = plan.InnerStride(0), sd = plan.InnerStride(1), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                T* s = ps + plan.RowOffset(0, r), d = pd + plan.RowOffset(1, r);
                if (ss == 1 && sd == 1) new ReadOnlySpan<T>(s, inner).CopyTo(new Span<T>(d, inner));
                else for (int i = 0; i < inner; i++) d[i * sd] = s[i * ss];
            }
        });
    }

    private static void CopyCast<TS, TD>(Tensor src, Tensor dst, Func<TS, TD> f) where TS : unmanaged where TD : unmanaged
    {
        var plan = new StridedPlan(src.Sizes, src, dst);
        TS* ps = (TS*)src.Storage.Pointer; TD* pd = (TD*)dst.Storage.Pointer;
        int ss = plan.InnerStride(0), sd = plan.InnerStride(1), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                TS* s = ps + plan.RowOffset(0, r); TD* d = pd + plan.RowOffset(1, r);
                for (int i = 0; i < inner; i++) d[i * sd] = f(s[i * ss]);
            }
        });
    }

    public void Transfer(Tensor src, Tensor dst)
    {
        if (!src.Device.IsCpu || !dst.Device.IsCpu) throw new NotSupportedException($"transfer {src.Device} → {dst.Device}: the CPU backend only copies host memory; the device backend performs transfers");
        Copy(src, dst);
    }

    public void Fill(Tensor dst, double value)
    {
        if (dst.Numel == 0) return;
        switch (dst.DType)
        {
            case DType.Float32: FillT(dst, (float)value); break;
            case DType.Float64: FillT(dst, value); break;
            case DType.Int32: FillT(dst, checked((int)value)); break;
            case DType.Int64: FillT(dst, checked((long)value)); break;
            case DType.Bool: FillT(dst, (byte)(value != 0 ? 1 : 0)); break;
            case DType.UInt8: FillT(dst, checked((byte)value)); break;
            case DType.Float16: FillT(dst, (Half)value); break;
            case DType.BFloat16: FillT(dst, (BFloat16)(float)value); break;
        }
    }

    private static void FillT<T>(Tensor dst, T v) where T : unmanaged
    {
        var plan = new StridedPlan(dst.Sizes, dst);
        T* p = (T*)dst.Storage.Pointer;
        int s = plan.InnerStride(0), inner = plan.Inner;
        plan.ForRows((r0, r1) =>
        {
            for (int r = r0; r < r1; r++)
            {
                T* d = p + plan.RowOffset(0, r);
                if (s == 1) new Span<T>(d, inner).Fill(v);
                else for (int i = 0; i < inner; i++) d[i * s] = v;
            }
        });
    }
}

/// <summary>Type-erased element access for the slow (casting) paths.</summary>
internal static unsafe class Elem
{
    public static double Read(byte* p, DType t) => t switch
    {
        DType.Float32 => *(float*)p,
        DType.Float64 => *(double*)p,
        DType.Int32 => *(int*)p,
        DType.Int64 => *(long*)p,
        DType.Bool => *p != 0 ? 1 : 0,
        DType.UInt8 => *p,
        DType.Float16 => (double)*(Half*)p,
        DType.BFloat16 => (float)*(BFloat16*)p,
        _ => throw new NotSupportedException(t.ToString()),
    };

    public static void Write(byte* p, DType t, double v)
    {
        switch (t)
        {
            case DType.Float32: *(float*)p = (float)v; break;
            case DType.Float64: *(double*)p = v; break;
            case DType.Int32: *(int*)p = (int)v; break;
            case DType.Int64: *(long*)p = (long)v; break;
            case DType.Bool: *p = (byte)(v != 0 ? 1 : 0); break;
            case DType.UInt8: *p = (byte)v; break;
            case DType.Float16: *(Half*)p = (Half)v; break;
            case DType.BFloat16: *(BFloat16*)p = (BFloat16)(float)v; break;
        }
    }
}
