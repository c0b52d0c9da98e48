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
    // Installed interceptions per device, oldest first (absent when none).
    private static readonly Dictionary<Device, List<Layer>> _chains = new();
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
            if (_chains.TryGetValue(device, out var chain)) return chain[^1].Built;
            return Base(device);
        }
    }

    // The undecorated backend of a device (under _lock).
    private static IBackend Base(Device device)
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

    // One installed interception: its wrap function and the decorator it built around the layer below.
    private sealed class Layer(Func<IBackend, IBackend> wrap)
    {
        public readonly Func<IBackend, IBackend> Wrap = wrap;
        public IBackend Built = null!;
    }

    private static IBackend Build(Device device, Layer layer, IBackend inner)
        => layer.Wrap(inner) ?? throw new ArgumentException($"backends: the interceptor for {device} returned null");

    /// <summary>
    /// Routes every later <see cref="Get"/> for <paramref name="device"/> to <c>wrap(current backend)</c> (a decorator,
    /// e.g. a profiler) until the returned handle is disposed. Interceptions stack: the newest wraps the ones before it.
    /// Disposing a handle removes exactly its own layer, in any order: the layers above it are rebuilt by calling their
    /// <c>wrap</c> again on what is now below them, so the chain always ends at the plain backend and no removed layer
    /// stays in it (a decorator obtained before the removal still wraps the old chain: call <see cref="Get"/> again).
    /// Disposing twice does nothing. <c>wrap</c> runs under the registry's lock (it may call <see cref="Get"/> on the same
    /// thread). Nothing is installed when unused: <see cref="Get"/> hands out the plain backend.
    /// </summary>
    public static IDisposable Intercept(Device device, Func<IBackend, IBackend> wrap)
    {
        ArgumentNullException.ThrowIfNull(wrap);
        lock (_lock)
        {
            var inner = Get(device);
            var layer = new Layer(wrap);
            layer.Built = Build(device, layer, inner);
            if (!_chains.TryGetValue(device, out var chain)) _chains[device] = chain = [];
            chain.Add(layer);
            return new Removal(device, layer);
        }
    }

    private sealed class Removal(Device device, Layer layer) : IDisposable
    {
        private bool _done;
        public void Dispose()
        {
            lock (_lock)
            {
                if (_done) return;
                var chain = _chains[device];
                int at = chain.IndexOf(layer);
                // Rebuild the layers above first: if a wrap throws, the chain is left as it was (and this handle still live).
                var below = at == 0 ? Base(device) : chain[at - 1].Built;
                var rebuilt = new IBackend[chain.Count - at - 1];
                for (int i = 0; i < rebuilt.Length; i++) below = rebuilt[i] = Build(device, chain[at + 1 + i], below);
                for (int i = 0; i < rebuilt.Length; i++) chain[at + 1 + i].Built = rebuilt[i];
                chain.RemoveAt(at);
                if (chain.Count == 0) _chains.Remove(device);
                _done = true;
            }
        }
    }

    /// <summary>Allocator statistics of a device.</summary>
    public static MemoryStats MemoryStats(Device device) => Get(device).Allocator.Stats;
}
