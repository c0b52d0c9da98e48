using FashionViL.Tensors;
using ILGPU;
using Device = FashionViL.Tensors.Device;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Cuda;

/// <summary>
/// Device memory for one <see cref="CudaRuntime"/>: the base class buckets sizes, reuses freed blocks and
/// keeps live/peak/reserved counts; this class maps its nint handles to ILGPU byte buffers through a
/// handle table (handle = table key, never an address).
/// </summary>
public sealed class CudaAllocator : CachingAllocator
{
    private readonly CudaRuntime _rt;
    private readonly Dictionary<nint, MemoryBuffer1D<byte, Stride1D.Dense>> _buffers = new();
    private readonly object _lock = new();
    private long _next;

    internal CudaAllocator(CudaRuntime rt) => _rt = rt;

    public override Device Device => _rt.Device;

    /// <summary>Buffers currently held from the device (live plus cached).</summary>
    public int BufferCount { get { lock (_lock) return _buffers.Count; } }

    private long _driverAllocs, _driverFrees;

    /// <summary>Device allocations made so far (requests the cache could not serve).</summary>
    public long DriverAllocations => Interlocked.Read(ref _driverAllocs);
    /// <summary>Device blocks returned to the driver so far.</summary>
    public long DriverFrees => Interlocked.Read(ref _driverFrees);

    protected override nint RawAllocate(long bytes)
    {
        Interlocked.Increment(ref _driverAllocs);
        MemoryBuffer1D<byte, Stride1D.Dense> buf;
        try { buf = _rt.Accelerator.Allocate1D<byte>(bytes); }
        catch (Exception e) when (e is not OutOfMemoryException and not AccessViolationException)
        {
            // ILGPU reports device exhaustion as an accelerator exception; the base class retries after EmptyCache on OOM.
            throw new OutOfMemoryException($"{Device}: could not allocate {bytes} bytes ({e.Message})", e);
        }
        lock (_lock)
        {
            nint h = (nint)Interlocked.Increment(ref _next);
            _buffers[h] = buf;
            return h;
        }
    }

    protected override void RawFree(nint handle, long bytes)
    {
        MemoryBuffer1D<byte, Stride1D.Dense>? buf;
        lock (_lock) { if (!_buffers.Remove(handle, out buf)) return; }
        Interlocked.Increment(ref _driverFrees);
        buf.Dispose();
    }

    /// <summary>The whole block behind a storage handle.</summary>
    public ArrayView<byte> Buffer(nint handle)
    {
        lock (_lock)
        {
            if (!_buffers.TryGetValue(handle, out var buf)) throw new ObjectDisposedException(nameof(CudaAllocator), $"{Device}: storage handle {handle} is not live");
            return buf.View;
        }
    }

    /// <summary>Disposes every buffer, live or cached (runtime shutdown).</summary>
    internal void ReleaseAll()
    {
        lock (_lock)
        {
            foreach (var b in _buffers.Values) b.Dispose();
            _buffers.Clear();
        }
    }
}
