using System.Runtime.CompilerServices;
using FashionViL.Tensors;

namespace FashionViL.Kernels.Cpu;

/// <summary>
/// The reference backend: managed code, SIMD through System.Numerics.Tensors and Vector256/512, and
/// <see cref="Parallelism"/> over the machine's cores. Split by op family into partial files.
/// </summary>
public sealed partial class CpuBackend : IBackend
{
    public static readonly CpuBackend Instance = new();
    public Device Device => Device.Cpu;
    public CachingAllocator Allocator => CpuAllocator.Instance;
    public void Synchronize() { }

    internal static void RequireFloat(Tensor t, string op)
    {
        if (t.DType is not (DType.Float32 or DType.Float64))
            throw new NotSupportedException($"{op}: the CPU backend computes in float32 or float64, got {t.DType.Name()} for {t.ShapeString}");
    }

    internal static void RequireSameShape(Tensor a, Tensor b, string op)
    {
        if (!a.Sizes.SequenceEqual(b.Sizes)) throw new ArgumentException($"{op}: shapes {a.ShapeString} and {b.ShapeString} differ");
    }

    internal static void RequireContiguous(Tensor t, string op, string name)
    {
        if (!t.IsContiguous) throw new ArgumentException($"{op}: {name} {t.ShapeString} must be contiguous");
    }
}

/// <summary>Registers the CPU backend when this assembly loads.</summary>
internal static class Registration
{
#pragma warning disable CA2255 // registering the backend on load is the point: see Backends.Get
    [ModuleInitializer]
    internal static void Init() => Backends.Register(DeviceType.Cpu, _ => CpuBackend.Instance);
}
