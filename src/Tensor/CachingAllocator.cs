using System.Runtime.InteropServices;

namespace FashionViL.Tensors;

/// <summary>Snapshot of an allocator's counters, in bytes.</summary>
/// <param name="Live">bytes held by storages that are alive now</param>
/// <param name="Peak">highest <paramref name="Live"/> since the last <see cref="CachingAllocator.ResetPeak"/></param>
/// <param name="Reserved">bytes obtained from the system: live plus cached free blocks</param>
/// <param name="LiveRequested">bytes the live storages asked for (before rounding to buckets)</param>
/// <param name="PeakRequested">highest <paramref name="LiveRequested"/> since the last reset: the figure comparable to
/// PyTorch's torch.cuda.max_memory_allocated, which rounds only to 512 bytes</param>
public readonly record struct MemoryStats(long Live, long Peak, long Reserved, long Allocations, long CacheHits, long LiveRequested = 0, long PeakRequested = 0);

/// <summary>
/// Per-device caching allocator: freed blocks go to a free list keyed by their rounded size and are
/// handed out again, so a steady-state training step never calls the system allocator.
/// Subclasses supply the raw allocation (native memory on the CPU, device buffers on CUDA).
/// Thread-safe: storages may be released by the finalizer thread.
/// </summary>
public abstract class CachingAllocator
{
    private readonly Dictionary<long, Stack<nint>> _free = new();
    private readonly Dictionary<nint, long> _requested = new();
    private readonly object _lock = new();
    private long _live, _peak, _reserved, _allocs, _hits, _liveRequested, _peakRequested;

    public abstract Device Device { get; }
    protected abstract nint RawAllocate(long bytes);
    protected abstract void RawFree(nint handle, long bytes);

    /// <summary>
    /// Rounds a request to its bucket: 512-byte granules below 1 MiB, then 1/64 of the power of two at or below it (at most
    /// 1.6 % over the request; 2 MiB steps from 128 MiB, PyTorch's large-segment rounding). Free blocks are reused by exact
    /// bucket, which a training step's repeating sizes always find after warm-up. (Until issue 7 the step was 1/8: up to
    /// 12.5 % over.)
    /// </summary>
    public static long RoundSize(long bytes)
    {
        if (bytes <= 0) return 512;
        if (bytes < (1 << 20)) return (bytes + 511) & ~511L;
        long p = 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)bytes));
        long step = p / 64;
        return (bytes + step - 1) / step * step;
    }

    public (nint Handle, long Size) Allocate(long bytes)
    {
        long size = RoundSize(bytes);
        lock (_lock)
        {
            _allocs++;
            nint h;
            if (_free.TryGetValue(size, out var st) && st.Count > 0) { h = st.Pop(); _hits++; }
            else
            {
                try { h = RawAllocate(size); }
                catch (OutOfMemoryException)
                {
                    EmptyCacheLocked();
                    h = RawAllocate(size);
                }
                _reserved += size;
            }
            _live += size;
            if (_live > _peak) _peak = _live;
            _requested[h] = Math.Max(bytes, 0);
            _liveRequested += Math.Max(bytes, 0);
            if (_liveRequested > _peakRequested) _peakRequested = _liveRequested;
            return (h, size);
        }
    }

    public void Free(nint handle, long size)
    {
        lock (_lock)
        {
            _live -= size;
            if (_requested.Remove(handle, out var asked)) _liveRequested -= asked;
            if (!_free.TryGetValue(size, out var st)) _free[size] = st = new Stack<nint>();
            st.Push(handle);
        }
    }

    /// <summary>Returns every cached (free) block to the system.</summary>
    public void EmptyCache() { lock (_lock) EmptyCacheLocked(); }

    private void EmptyCacheLocked()
    {
        foreach (var (size, st) in _free)
            while (st.Count > 0) { RawFree(st.Pop(), size); _reserved -= size; }
        _free.Clear();
    }

    public MemoryStats Stats { get { lock (_lock) return new(_live, _peak, _reserved, _allocs, _hits, _liveRequested, _peakRequested); } }

    public void ResetPeak() { lock (_lock) { _peak = _live; _peakRequested = _liveRequested; } }
}

/// <summary>Host memory, 64-byte aligned (one cache line, a full Vector512).</summary>
public sealed class CpuAllocator : CachingAllocator
{
    public static readonly CpuAllocator Instance = new();
    public override Device Device => Device.Cpu;
    protected override unsafe nint RawAllocate(long bytes)
    {
        var p = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        if (p == 0) throw new OutOfMemoryException($"cpu: could not allocate {bytes} bytes");
        return p;
    }
    protected override unsafe void RawFree(nint handle, long bytes) => NativeMemory.AlignedFree((void*)handle);
}
