using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

[assembly: InternalsVisibleTo("FashionViL.Kernels")]
[assembly: InternalsVisibleTo("FashionViL.Autograd")]
[assembly: InternalsVisibleTo("FashionViL.Tensor.Tests")]

namespace FashionViL.Tensors;

/// <summary>
/// An n-dimensional, strided view onto reference-counted <see cref="Storage"/>, plus the autograd fields
/// (<see cref="RequiresGrad"/>, <see cref="Grad"/>, <see cref="GradFn"/>). Differentiable maths lives in
/// <c>FashionViL.Autograd</c> as extension members; this class holds data, views and creation.
/// Handles are cheap; storage is freed deterministically when the last handle is disposed, which the
/// step scope (<see cref="Scope"/>) does for every intermediate.
/// </summary>
public sealed partial class Tensor : IDisposable
{
    private readonly Storage _storage;
    private readonly int[] _shape;
    private readonly int[] _strides;
    private int _disposed;
    private bool _requiresGrad;

    internal TensorScope? OwnerScope;

    internal Tensor(Storage storage, int[] shape, int[] strides, int offset, DType dtype)
    {
        _storage = storage;
        _shape = shape;
        _strides = strides;
        Offset = offset;
        DType = dtype;
        Numel = Tensors.Shape.Numel(shape);
        TensorScope.Current?.Track(this);
    }

    ~Tensor() { if (Interlocked.Exchange(ref _disposed, 1) == 0) _storage.Release(); }

    // ---------------------------------------------------------------- metadata

    public DType DType { get; }
    public Device Device => _storage.Device;
    public Storage Storage => _storage;
    /// <summary>Offset of element [0,...,0] in elements of <see cref="DType"/>.</summary>
    public int Offset { get; }
    public int Numel { get; }
    public int Rank => _shape.Length;
    /// <summary>A copy of the shape.</summary>
    public int[] Shape => (int[])_shape.Clone();
    public ReadOnlySpan<int> Sizes => _shape;
    public ReadOnlySpan<int> Strides => _strides;
    public int Size(int dim) => _shape[Tensors.Shape.Dim(dim, Rank, "size")];
    public int Stride(int dim) => _strides[Tensors.Shape.Dim(dim, Rank, "stride")];
    public string ShapeString => Tensors.Shape.Format(_shape);
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>True when the elements are laid out row-major without gaps (size-1 dims may have any stride).</summary>
    public bool IsContiguous
    {
        get
        {
            if (Numel == 0) return true;   // an empty tensor has no layout to violate
            int expected = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (_shape[i] == 1) continue;
                if (_strides[i] != expected) return false;
                expected *= _shape[i];
            }
            return true;
        }
    }

    // ---------------------------------------------------------------- autograd fields

    /// <summary>Whether gradients flow to this tensor. Only leaves of floating dtype may set it.</summary>
    public bool RequiresGrad
    {
        get => _requiresGrad;
        set
        {
            if (!value && GradFn is not null)
                throw new InvalidOperationException($"RequiresGrad can only be turned off on a leaf; this tensor was made by {GradFn.Name} (use Detach())");
            if (value && !DType.IsFloating())
                throw new InvalidOperationException($"only floating-point tensors can require gradients, not {DType.Name()}");
            _requiresGrad = value;
        }
    }

    private Tensor? _grad;
    private bool _gradOwned;

    /// <summary>
    /// The accumulated gradient of a leaf after Backward(); null before. The buffer that backward
    /// creates belongs to this tensor: replacing it (e.g. <c>p.Grad = null</c> between steps) frees it, so
    /// a training loop needs no Dispose. Clone it to keep a copy. A gradient assigned by the caller stays
    /// the caller's.
    /// </summary>
    public Tensor? Grad
    {
        get => _grad;
        set
        {
            if (ReferenceEquals(value, _grad)) return;
            if (_gradOwned) _grad?.Dispose();
            _grad = value;
            _gradOwned = false;
        }
    }

    /// <summary>True when <see cref="Grad"/> is the buffer backward created (and may update in place).</summary>
    internal bool OwnsGrad => _gradOwned && _grad is { IsDisposed: false };

    /// <summary>Installs a gradient buffer owned by this tensor (used by the backward engine).</summary>
    internal void SetOwnedGrad(Tensor grad)
    {
        Grad = grad;
        _gradOwned = true;
    }

    /// <summary>The node that produced this tensor (null for leaves).</summary>
    public GradNode? GradFn { get; private set; }

    public bool IsLeaf => GradFn is null;

    /// <summary>Marks this tensor as the output of <paramref name="node"/> (used by differentiable ops).</summary>
    public Tensor AttachGradFn(GradNode node)
    {
        GradFn = node;
        _requiresGrad = true;
        node.OutputShape = _shape;
        node.OutputDType = DType;
        return this;
    }

    // ---------------------------------------------------------------- lifetime

    /// <summary>Opens a step scope: every tensor created until it is disposed is freed then, unless kept.</summary>
    public static TensorScope Scope() => new();

    /// <summary>Moves this tensor out of its step scope into the enclosing one (or makes it untracked).</summary>
    public Tensor Keep() { OwnerScope?.Keep(this); return this; }

    /// <summary>Removes this tensor from every scope; it lives until disposed (or collected).</summary>
    public Tensor Persist() { OwnerScope = null; return this; }

    /// <summary>Releases this handle's reference to the storage (idempotent). Other views stay valid.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _storage.Release();
        GC.SuppressFinalize(this);
    }

    private void ThrowIfDisposed()
    {
        if (IsDisposed) throw new ObjectDisposedException(nameof(Tensor), $"tensor {ShapeString} {DType.Name()} was disposed (did its step scope close?)");
    }

    // ---------------------------------------------------------------- raw views (no autograd)

    /// <summary>A new handle onto the same storage with the given geometry. No bounds beyond the storage are allowed.</summary>
    public Tensor AsStrided(int[] shape, int[] strides, int offset)
    {
        ThrowIfDisposed();
        if (shape.Length != strides.Length) throw new ArgumentException($"as_strided: shape {Tensors.Shape.Format(shape)} and strides {Tensors.Shape.Format(strides)} differ in rank");
        long lo = offset, hi = offset;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0) throw new ArgumentException($"as_strided: negative size in {Tensors.Shape.Format(shape)}");
            if (shape[i] == 0) { hi = lo - 1; break; }
            long ext = (long)(shape[i] - 1) * strides[i];
            if (ext < 0) lo += ext; else hi += ext;
        }
        long capacity = _storage.Bytes / DType.Size();
        if (hi >= lo && (lo < 0 || hi >= capacity))
            throw new ArgumentOutOfRangeException(nameof(shape), $"as_strided: view {Tensors.Shape.Format(shape)} strides {Tensors.Shape.Format(strides)} offset {offset} reaches outside storage of {capacity} elements");
        _storage.AddRef();
        return new Tensor(_storage, (int[])shape.Clone(), (int[])strides.Clone(), offset, DType);
    }

    /// <summary>Another handle onto exactly this view (used to save activations independently of the caller's handle).</summary>
    public Tensor Alias() => AsStrided(_shape, _strides, Offset);

    /// <summary>A new leaf sharing this tensor's data, cut from the graph.</summary>
    public Tensor Detach() => Alias();

    // ---------------------------------------------------------------- creation

    public static Tensor Empty(int[] shape, DType dtype = DType.Float32, Device device = default)
    {
        int n = Tensors.Shape.Numel(shape);
        var alloc = Backends.Get(device).Allocator;
        var storage = new Storage(alloc, Math.Max((long)n * dtype.Size(), 1));
        return new Tensor(storage, (int[])shape.Clone(), Tensors.Shape.ContiguousStrides(shape), 0, dtype);
    }

    public static Tensor Full(int[] shape, double value, DType dtype = DType.Float32, Device device = default)
    {
        var t = Empty(shape, dtype, device);
        t.Backend.Fill(t, value);
        return t;
    }

    public static Tensor Zeros(int[] shape, DType dtype = DType.Float32, Device device = default) => Full(shape, 0, dtype, device);
    public static Tensor Ones(int[] shape, DType dtype = DType.Float32, Device device = default) => Full(shape, 1, dtype, device);
    public static Tensor Scalar(double value, DType dtype = DType.Float32, Device device = default) => Full([], value, dtype, device);

    /// <summary>Same shape, dtype and device as <paramref name="like"/>, uninitialised.</summary>
    public static Tensor EmptyLike(Tensor like) => Empty(like._shape, like.DType, like.Device);
    public static Tensor ZerosLike(Tensor like) => Full(like._shape, 0, like.DType, like.Device);

    /// <summary>Copies <paramref name="data"/> (row-major) into a new tensor of the given shape.</summary>
    public static unsafe Tensor FromArray<T>(T[] data, int[]? shape = null, Device device = default) where T : unmanaged
    {
        shape ??= [data.Length];
        int n = Tensors.Shape.Numel(shape);
        if (n != data.Length) throw new ArgumentException($"from_array: {data.Length} values cannot fill shape {Tensors.Shape.Format(shape)} ({n} elements)");
        var dtype = DTypeInfo.Of<T>();
        var host = Empty(shape, dtype, Device.Cpu);
        data.AsSpan().CopyTo(new Span<T>((void*)host._storage.Pointer, n));
        if (device.IsCpu) return host;
        var dev = host.To(device);
        host.Dispose();
        return dev;
    }

    public static Tensor FromArray<T>(T[] data, params int[] shape) where T : unmanaged => FromArray(data, shape, default);

    /// <summary>0, 1, ..., n-1.</summary>
    public static Tensor Arange(int n, DType dtype = DType.Int64, Device device = default)
    {
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = i;
        using var d = FromArray(v, [n]);
        return d.To(dtype, device);
    }

    // ---------------------------------------------------------------- data access

    internal IBackend Backend => Backends.Get(Device);

    /// <summary>Address of element [0,...,0] (CPU only).</summary>
    public unsafe T* DataPtr<T>() where T : unmanaged
    {
        ThrowIfDisposed();
        if (!Device.IsCpu) throw new InvalidOperationException($"DataPtr: tensor is on {Device}; copy it to the CPU first");
        if (sizeof(T) != DType.Size()) throw new InvalidOperationException($"DataPtr<{typeof(T).Name}> on a {DType.Name()} tensor");
        return (T*)_storage.Pointer + Offset;
    }

    /// <summary>The elements of a contiguous CPU tensor, in place.</summary>
    public unsafe Span<T> AsSpan<T>() where T : unmanaged
    {
        if (DTypeInfo.Of<T>() != DType && !(typeof(T) == typeof(byte) && DType == DType.Bool))
            throw new InvalidOperationException($"AsSpan<{typeof(T).Name}> on a {DType.Name()} tensor");
        if (!IsContiguous) throw new InvalidOperationException($"AsSpan: tensor {ShapeString} with strides {Tensors.Shape.Format(_strides)} is not contiguous; call Contiguous() first");
        return new Span<T>(DataPtr<T>(), Numel);
    }

    /// <summary>This tensor if already contiguous (a new handle), else a contiguous copy. Not recorded by autograd.</summary>
    public Tensor ContiguousRaw()
    {
        if (IsContiguous) return Alias();
        var y = Empty(_shape, DType, Device);
        Backend.Copy(this, y);
        return y;
    }

    /// <summary>Copies (and converts) to another dtype and/or device. The result is a new leaf.</summary>
    public Tensor To(DType dtype, Device device)
    {
        ThrowIfDisposed();
        if (device == Device)
        {
            var y = Empty(_shape, dtype, device);
            Backend.Copy(this, y);
            return y;
        }
        using var src = DType == dtype ? ContiguousRaw() : To(dtype, Device);
        var dst = Empty(_shape, dtype, device);
        // The non-CPU side performs the transfer.
        (device.IsCpu ? Backend : dst.Backend).Transfer(src, dst);
        return dst;
    }

    public Tensor To(DType dtype) => To(dtype, Device);
    public Tensor To(Device device) => To(DType, device);

    /// <summary>Flat row-major copy of the values as <typeparamref name="T"/> (converting the dtype if needed).</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        var want = DTypeInfo.Of<T>();
        using var host = (DType == want && Device.IsCpu) ? ContiguousRaw() : To(want, Device.Cpu);
        return host.AsSpan<T>().ToArray();
    }

    /// <summary>The single value of a one-element tensor, as double.</summary>
    public double Item()
    {
        if (Numel != 1) throw new InvalidOperationException($"item: tensor {ShapeString} has {Numel} elements, not 1");
        return ToArray<double>()[0];
    }

    public override string ToString()
    {
        if (IsDisposed) return $"tensor({ShapeString}, {DType.Name()}, {Device}, disposed)";
        var sb = new StringBuilder();
        sb.Append("tensor(").Append(ShapeString).Append(", ").Append(DType.Name()).Append(", ").Append(Device);
        if (GradFn is not null) sb.Append(", grad_fn=").Append(GradFn);
        else if (RequiresGrad) sb.Append(", requires_grad");
        sb.Append(')');
        if (Numel == 0) return sb.Append(" []").ToString();
        var v = ToArray<double>();
        const int show = 6;
        sb.Append(" [");
        for (int i = 0; i < Math.Min(show, v.Length); i++)
        {
            if (i > 0) sb.Append(", ");
            sb.Append(v[i].ToString("G6", CultureInfo.InvariantCulture));
        }
        if (v.Length > show) sb.Append(", …");
        sb.Append(']');
        if (v.Length > 1)
        {
            double min = double.PositiveInfinity, max = double.NegativeInfinity, sum = 0; int nan = 0;
            foreach (var x in v) { if (double.IsNaN(x)) { nan++; continue; } min = Math.Min(min, x); max = Math.Max(max, x); sum += x; }
            int ok = v.Length - nan;
            sb.Append(CultureInfo.InvariantCulture, $" min={min:G6} max={max:G6} mean={(ok > 0 ? sum / ok : double.NaN):G6}");
            if (nan > 0) sb.Append(" nan=").Append(nan);
        }
        return sb.ToString();
    }
}

public sealed partial class Tensor
{
    /// <summary>Address of element [0,...,0] regardless of dtype (CPU only).</summary>
    public unsafe void* DataPtrRaw()
    {
        ThrowIfDisposed();
        if (!Device.IsCpu) throw new InvalidOperationException($"DataPtr: tensor is on {Device}; copy it to the CPU first");
        return (byte*)_storage.Pointer + (long)Offset * DType.Size();
    }
}
