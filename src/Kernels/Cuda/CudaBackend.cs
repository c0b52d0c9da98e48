using FashionViL.Tensors;
using ILGPU;
using Device = FashionViL.Tensors.Device;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// The CUDA backend: ILGPU kernels on one <see cref="CudaRuntime"/> (a real GPU, or the CPU emulator when
/// FASHIONVIL_CUDA_EMULATOR=cpu). Launches are queued on the runtime's stream; the host waits only when a
/// value is read back (<see cref="Transfer"/> to the CPU, <see cref="Synchronize"/>).
/// Implemented so far: copies, transfers, fills, the elementwise family, reductions, random numbers and
/// dropout. The other members throw NotSupportedException("cuda: X is not implemented yet").
/// </summary>
public sealed partial class CudaBackend : IBackend
{
    public CudaRuntime Runtime { get; }

    public CudaBackend(CudaRuntime runtime) => Runtime = runtime;

    public Device Device => Runtime.Device;
    public CachingAllocator Allocator => Runtime.Allocator;
    private Accelerator Acc => Runtime.Accelerator;
    private AcceleratorStream Stream => Runtime.Stream;

    public void Synchronize() => Runtime.Synchronize();

    // ------------------------------------------------------------------ views

    private void RequireHere(Tensor t, string op)
    {
        if (t.Device != Device) throw new ArgumentException($"cuda: {op}: tensor {t.ShapeString} is on {t.Device}, expected {Device}");
    }

    /// <summary>
    /// The device view of a tensor's elements, starting at its offset, long enough to cover its strided
    /// footprint (non-negative strides; use <see cref="Strided{T}"/> for any strides).
    /// </summary>
    public ArrayView<T> View<T>(Tensor t) where T : unmanaged
    {
        var (v, baseOff) = Strided<T>(t);
        return baseOff == 0 ? v : v.SubView(baseOff);
    }

    /// <summary>
    /// The smallest device view that holds every element of <paramref name="t"/> (any strides, negative
    /// included) and the element offset of t[0,…,0] inside it.
    /// </summary>
    public (ArrayView<T> View, int Base) Strided<T>(Tensor t) where T : unmanaged
    {
        RequireHere(t, "view");
        unsafe { if (sizeof(T) != t.DType.Size()) throw new ArgumentException($"cuda: view<{typeof(T).Name}> of a {t.DType.Name()} tensor"); }
        long lo = t.Offset, hi = t.Offset;
        if (t.Numel == 0) hi = lo - 1;
        else
            for (int d = 0; d < t.Rank; d++)
            {
                long ext = (long)(t.Sizes[d] - 1) * t.Strides[d];
                if (ext < 0) lo += ext; else hi += ext;
            }
        var all = Runtime.Allocator.Buffer(t.Storage.Pointer).Cast<T>();
        long len = Math.Max(hi - lo + 1, 0);
        if (len == 0) lo = Math.Min(lo, all.Length);
        return (all.SubView(lo, len), (int)(t.Offset - lo));
    }

    private static NotSupportedException Todo(string op) => new($"cuda: {op} is not implemented yet");

    internal static void RequireSameShape(Tensor a, Tensor b, string op)
    {
        if (!a.Sizes.SequenceEqual(b.Sizes)) throw new ArgumentException($"cuda: {op}: shapes {a.ShapeString} and {b.ShapeString} differ");
    }

    internal static void RequireContiguous(Tensor t, string op, string name)
    {
        if (!t.IsContiguous) throw new ArgumentException($"cuda: {op}: {name} {t.ShapeString} must be contiguous");
    }

    internal static void RequireFloat(Tensor t, string op)
    {
        if (t.DType is not (DType.Float32 or DType.Float64))
            throw new NotSupportedException($"cuda: {op}: the CUDA backend computes in float32 or float64, got {t.DType.Name()} for {t.ShapeString}");
    }

}

/// <summary>Registers the CUDA backend (the CPU one registers itself in Cpu/CpuBackend.cs).</summary>
internal static class CudaRegistration
{
#pragma warning disable CA2255 // registering the backend on load is the point: see Backends.Get
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void Init() => Backends.Register(DeviceType.Cuda, idx => new CudaBackend(CudaRuntime.Get(idx)));
}
