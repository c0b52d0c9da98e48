using System.Collections.Concurrent;
using FashionViL.Tensors;
using ILGPU;
using Device = FashionViL.Tensors.Device;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Kernels.Cuda;

/// <summary>Counters of a <see cref="CudaRuntime"/> (see <see cref="CudaRuntime.Counters"/>).</summary>
public readonly record struct CudaCounters(long KernelLaunches, long HostSyncs, long DeviceToHostReads, long DriverAllocations, long DriverFrees)
{
    public static CudaCounters operator -(CudaCounters a, CudaCounters b) => new(a.KernelLaunches - b.KernelLaunches,
        a.HostSyncs - b.HostSyncs, a.DeviceToHostReads - b.DeviceToHostReads, a.DriverAllocations - b.DriverAllocations, a.DriverFrees - b.DriverFrees);
}

/// <summary>
/// One CUDA device as the backend sees it: an ILGPU <see cref="Context"/>, the accelerator for device n,
/// one <see cref="AcceleratorStream"/> that every launch and copy is queued on, the caching allocator and
/// the kernel registry (each kernel is compiled once per accelerator and its typed delegate is kept alive).
/// With <see cref="EmulatorEnabled"/> (environment FASHIONVIL_CUDA_EMULATOR=cpu, or set by tests before first
/// use) the accelerator is ILGPU's CPU emulator, <c>new CPUDevice(2, 1, 2)</c> in parallel mode, so CI runs
/// the same kernels. Runtimes live until process exit.
/// </summary>
public sealed class CudaRuntime : IDisposable
{
    /// <summary>The environment variable that selects the CPU emulator ("cpu").</summary>
    public const string EmulatorVariable = "FASHIONVIL_CUDA_EMULATOR";

    private static readonly ConcurrentDictionary<int, Lazy<CudaRuntime>> _runtimes = new();
    private static bool? _emulatorOverride;

    /// <summary>
    /// Whether <c>Device.Cuda(n)</c> runs on the CPU emulator. Defaults to FASHIONVIL_CUDA_EMULATOR=cpu;
    /// tests set it to true before the first CUDA tensor is created (runtimes already opened keep their kind).
    /// </summary>
    public static bool EmulatorEnabled
    {
        get => _emulatorOverride ?? EmulatorRequestedByEnvironment;
        set => _emulatorOverride = value;
    }

    /// <summary>True when FASHIONVIL_CUDA_EMULATOR is "cpu" (case-insensitive).</summary>
    public static bool EmulatorRequestedByEnvironment
        => string.Equals(Environment.GetEnvironmentVariable(EmulatorVariable)?.Trim(), "cpu", StringComparison.OrdinalIgnoreCase);

    private readonly ConcurrentDictionary<object, object> _kernels = new();
    private int _disposed;

    public int Index { get; }
    public Device Device => Device.Cuda(Index);
    public bool IsEmulated { get; }
    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public AcceleratorStream Stream { get; }
    public CudaAllocator Allocator { get; }

    /// <summary>Whether new runtimes stage host↔device copies through a page-locked buffer (default true).</summary>
    public static bool UsePageLockedStaging { get; set; } = true;

    /// <summary>Bytes of the page-locked staging buffer (copies larger than this go through it in pieces).</summary>
    public const int StagingBytes = 4 << 20;

    private PageLockedArray1D<byte>? _staging;
    private bool _stagingFailed;

    /// <summary>The page-locked staging buffer (created on first use), or null when staging is off or unavailable.</summary>
    internal PageLockedArray1D<byte>? Staging
    {
        get
        {
            if (!UsePageLockedStaging || _stagingFailed) return null;
            if (_staging is not null) return _staging;
            lock (_kernels)
            {
                if (_staging is null && !_stagingFailed)
                {
                    try { _staging = Accelerator.AllocatePageLocked1D<byte>(StagingBytes); }
                    catch (Exception e) when (e is not OutOfMemoryException) { _stagingFailed = true; }
                }
                return _staging;
            }
        }
    }

    /// <summary>True while an asynchronous upload may still read the staging buffer.</summary>
    internal bool StagingBusy { get; set; }

    // Small uploads use the staging buffer as a ring of two halves (CudaBackend.UploadRing); guarded by the staging lock.
    internal long RingOffset;
    internal int RingHalf;
    internal readonly ProfilingMarker?[] RingDone = new ProfilingMarker?[2];
    internal ProfilingMarker? RingLargeDone;

    /// <summary>After a full stream synchronisation nothing reads the staging buffer any more: the ring starts empty.</summary>
    private void ResetStaging()
    {
        var staging = _staging;
        if (staging is null) { StagingBusy = false; return; }
        lock (staging)
        {
            StagingBusy = false;
            RingOffset = 0;
            RingHalf = 0;
            for (int i = 0; i < RingDone.Length; i++) { RingDone[i]?.Dispose(); RingDone[i] = null; }
            RingLargeDone?.Dispose();
            RingLargeDone = null;
        }
    }

    /// <summary>Counts a host wait that is not a full <see cref="Synchronize"/> (waiting for one staging copy).</summary>
    internal void CountHostWait() => Interlocked.Increment(ref _hostSyncs);

    /// <summary>Threads per group for elementwise launches (256 on a GPU, the emulator's group size on the CPU).</summary>
    public int GroupSize { get; }
    /// <summary>Groups that fill the device once (grid-stride loops cover the rest).</summary>
    public int MaxGroups { get; }

    private CudaRuntime(int index, bool emulate)
    {
        Index = index;
        IsEmulated = emulate;
        if (emulate)
        {
            var dev = new CPUDevice(2, 1, 2);
            Context = Context.Create(b => b.CPU(dev).EnableAlgorithms().Profiling());
            Accelerator = dev.CreateCPUAccelerator(Context, CPUAcceleratorMode.Parallel);
        }
        else
        {
            var reason = "";
            Context? ctx = null;
            try
            {
                ctx = Context.Create(b => b.Cuda().EnableAlgorithms().Profiling());
                var devices = ctx.GetCudaDevices();
                if (devices.Count == 0) reason = DriverReason();
                else if (index >= devices.Count) reason = $"cuda:{index} requested but the driver reports {devices.Count} device(s)";
                else
                    Accelerator = devices[index].CreateAccelerator(ctx);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                reason = e is NotSupportedException ? e.Message : $"{e.GetType().Name}: {e.Message}";
            }
            if (Accelerator is null)
            {
                ctx?.Dispose();
                throw NoDevice(index, reason);
            }
            Context = ctx!;
        }
        Stream = Accelerator.DefaultStream;
        GroupSize = Math.Min(256, Accelerator.MaxNumThreadsPerGroup);
        MaxGroups = Math.Max(1, Accelerator.NumMultiprocessors * Math.Max(1, Accelerator.MaxNumThreadsPerMultiprocessor / GroupSize));
        Allocator = new CudaAllocator(this);
    }

    internal static NotSupportedException NoDevice(int index, string reason)
        => new($"cuda:{index}: no CUDA device: {reason}; set {EmulatorVariable}=cpu to run CUDA kernels on the CPU");

    private static string DriverReason()
    {
        try
        {
            var api = CudaAPI.CurrentAPI;
            if (api is null) return "the CUDA driver library (libcuda) could not be loaded";
            var err = api.GetDeviceCount(out int n);
            if (err != CudaError.CUDA_SUCCESS) return $"the CUDA driver reports {err} ({api.GetErrorString(err)})";
            return n == 0 ? "the CUDA driver reports 0 devices" : $"ILGPU found none of the driver's {n} device(s) usable";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or BadImageFormatException or InvalidOperationException)
        {
            return $"the CUDA driver library (libcuda) could not be loaded ({e.GetType().Name}: {e.Message})";
        }
    }

    /// <summary>The process-wide runtime of device <paramref name="index"/> (created on first use).</summary>
    public static CudaRuntime Get(int index)
    {
        var lazy = _runtimes.GetOrAdd(index, i => new Lazy<CudaRuntime>(() => Open(i, EmulatorEnabled)));
        try { return lazy.Value; }
        catch
        {
            // Do not cache a failure: the switch may be set later (e.g. by a test fixture).
            _runtimes.TryRemove(new KeyValuePair<int, Lazy<CudaRuntime>>(index, lazy));
            throw;
        }
    }

    /// <summary>
    /// A new runtime (not shared) for device <paramref name="index"/>: the CPU emulator when
    /// <paramref name="emulate"/>, else the CUDA device, or NotSupportedException("no CUDA device: ...").
    /// </summary>
    public static CudaRuntime Open(int index, bool emulate)
    {
        var rt = new CudaRuntime(index, emulate);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => rt.Dispose();
        return rt;
    }

    /// <summary>The kernel registry: compiles <paramref name="load"/> once per key and keeps the delegate.</summary>
    internal TDelegate Kernel<TDelegate>(object key, Func<Accelerator, TDelegate> load) where TDelegate : class
        => (TDelegate)_kernels.GetOrAdd(key, _ => load(Accelerator));

    /// <summary>Grid for an elementwise grid-stride launch over <paramref name="n"/> items.</summary>
    internal KernelConfig Grid(long n)
    {
        long groups = Math.Clamp((n + GroupSize - 1) / GroupSize, 1, MaxGroups);
        return new KernelConfig((int)groups, GroupSize);
    }

    /// <summary>Kernels compiled and held by the registry so far.</summary>
    public int KernelCount => _kernels.Count;

    /// <summary>Waits for every queued launch and copy (counted in <see cref="Counters"/> as a host sync).</summary>
    public void Synchronize()
    {
        Interlocked.Increment(ref _hostSyncs);
        if (TraceSyncs) Console.Error.WriteLine($"{TraceSyncVariable}: host sync at{Environment.NewLine}{Environment.StackTrace}");
        // Under the staging lock: an upload from another thread cannot slip in between the wait and the ring reset
        // (its region would then be handed out again while its copy is still queued). The lock is re-entrant.
        var staging = _staging;
        if (staging is null) { Stream.Synchronize(); ResetStaging(); return; }
        lock (staging)
        {
            Stream.Synchronize();
            ResetStaging();
        }
    }

    /// <summary>FASHIONVIL_CUDA_TRACE_SYNC=1 prints a stack trace to stderr at every <see cref="Synchronize"/> (finding host syncs in a step).</summary>
    public const string TraceSyncVariable = "FASHIONVIL_CUDA_TRACE_SYNC";
    private static readonly bool TraceSyncs = Environment.GetEnvironmentVariable(TraceSyncVariable) == "1";

    private static long _launches;
    private long _hostSyncs, _reads;

    /// <summary>Counts one kernel launch (called next to every launch site; process-wide over all devices).</summary>
    internal static void CountLaunch() => Interlocked.Increment(ref _launches);

    /// <summary>Counts one device→host read (a download the host waits for).</summary>
    internal void CountRead() => Interlocked.Increment(ref _reads);

    /// <summary>
    /// Running totals since process start: kernel launches (all CUDA devices of the process), host waits
    /// (<see cref="Synchronize"/> calls, each download waits once, and the waits of <see cref="KernelTuner"/> while it times
    /// candidates), device→host reads, and driver allocations / frees
    /// (caching-allocator misses that reached the device allocator, and blocks returned to it). Take a snapshot before
    /// and after a region and subtract (<see cref="CudaCounters.operator -"/>).
    /// </summary>
    public CudaCounters Counters => new(Interlocked.Read(ref _launches), Interlocked.Read(ref _hostSyncs) + KernelTuner.HostWaits(Accelerator), Interlocked.Read(ref _reads),
        Allocator.DriverAllocations, Allocator.DriverFrees);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            Stream.Synchronize();
            ResetStaging();                 // disposes the ring's event markers while the context is alive
            Allocator.ReleaseAll();
            _staging?.Dispose();
            _kernels.Clear();
            Accelerator.Dispose();
            Context.Dispose();
        }
        catch (Exception) when (Environment.HasShutdownStarted) { }
    }
}
