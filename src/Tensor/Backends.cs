using System.Reflection;

namespace FashionViL.Tensors;

/// <summary>
/// Maps a device to the backend that implements the primitive ops for it. Implementations live in
/// FashionViL.Kernels, which registers itself; the registry loads that assembly on first use so that a
/// program referencing only the tensor layer still finds the CPU backend.
/// </summary>
public static class Backends
{
    private static readonly Dictionary<DeviceType, Func<int, IBackend>> _factories = new();
    private static readonly Dictionary<Device, IBackend> _instances = new();
    private static readonly object _lock = new();
    private static bool _kernelsLoaded;

    /// <summary>Registers the factory for a device type (called by FashionViL.Kernels).</summary>
    public static void Register(DeviceType type, Func<int, IBackend> factory)
    {
        lock (_lock) _factories[type] = factory;
    }

    public static IBackend Get(Device device)
    {
        lock (_lock)
        {
            if (_instances.TryGetValue(device, out var b)) return b;
            if (!_factories.ContainsKey(device.Type) && !_kernelsLoaded)
            {
                _kernelsLoaded = true;
                var asm = Assembly.Load("FashionViL.Kernels");
                System.Runtime.CompilerServices.RuntimeHelpers.RunModuleConstructor(asm.ManifestModule.ModuleHandle);
            }
            if (!_factories.TryGetValue(device.Type, out var f))
                throw new NotSupportedException($"no backend is registered for {device}");
            b = f(device.Index);
            _instances[device] = b;
            return b;
        }
    }

    /// <summary>
    /// Routes every later <see cref="Get"/> for <paramref name="device"/> to <c>wrap(current backend)</c> (a decorator,
    /// e.g. a profiler) until the returned handle is disposed, which restores the previous instance. Interceptions nest
    /// (dispose them in reverse order). Nothing is installed when unused: <see cref="Get"/> hands out the plain backend.
    /// </summary>
    public static IDisposable Intercept(Device device, Func<IBackend, IBackend> wrap)
    {
        ArgumentNullException.ThrowIfNull(wrap);
        var inner = Get(device);
        var outer = wrap(inner) ?? throw new ArgumentException($"backends: the interceptor for {device} returned null");
        lock (_lock)
        {
            if (!ReferenceEquals(_instances[device], inner))
                throw new InvalidOperationException($"backends: the backend of {device} changed while its interceptor was being built");
            _instances[device] = outer;
        }
        return new Restore(device, inner, outer);
    }

    private sealed class Restore(Device device, IBackend inner, IBackend outer) : IDisposable
    {
        private int _done;
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            lock (_lock)
                if (ReferenceEquals(_instances[device], outer)) _instances[device] = inner;
        }
    }

    /// <summary>Allocator statistics of a device.</summary>
    public static MemoryStats MemoryStats(Device device) => Get(device).Allocator.Stats;
}
