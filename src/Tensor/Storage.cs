namespace FashionViL.Tensors;

/// <summary>
/// A reference-counted block of device memory. Tensors are handles (views) onto a storage; the block
/// goes back to its allocator when the last handle is released. On the CPU, <see cref="Pointer"/> is the address.
/// </summary>
public sealed class Storage
{
    private int _refs = 1;
    private nint _handle;
    public CachingAllocator Allocator { get; }
    /// <summary>Bytes asked for (the block may be larger).</summary>
    public long Bytes { get; }
    private readonly long _blockSize;

    internal Storage(CachingAllocator allocator, long bytes)
    {
        Allocator = allocator;
        Bytes = bytes;
        (_handle, _blockSize) = allocator.Allocate(bytes);
    }

    public Device Device => Allocator.Device;
    public bool IsAlive => Volatile.Read(ref _refs) > 0;
    public int RefCount => Volatile.Read(ref _refs);

    /// <summary>Raw handle: host address on the CPU, an allocator-defined handle elsewhere.</summary>
    public nint Pointer
    {
        get
        {
            if (Volatile.Read(ref _refs) <= 0) throw new ObjectDisposedException(nameof(Storage), "tensor storage was already released (was the tensor disposed, or its step scope closed?)");
            return _handle;
        }
    }

    internal void AddRef()
    {
        if (Interlocked.Increment(ref _refs) <= 1) throw new ObjectDisposedException(nameof(Storage), "cannot take a new view of released storage");
    }

    internal void Release()
    {
        int r = Interlocked.Decrement(ref _refs);
        if (r == 0) { Allocator.Free(_handle, _blockSize); _handle = 0; }
    }
}
