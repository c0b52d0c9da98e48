using System.Diagnostics;
using System.Reflection;
using System.Runtime.ExceptionServices;
using FashionViL.Kernels.Cuda;
using ILGPU.Runtime;
using Device = FashionViL.Tensors.Device;

namespace FashionViL.Bench;

/// <summary>Times one backend call: host clock (synchronous backends) or device markers on a stream.</summary>
public interface IOpTimer
{
    /// <summary>"stopwatch" or "device-markers".</summary>
    string Method { get; }
    object Begin();
    object End(object begin);
    /// <summary>Milliseconds between a Begin and its End; may wait for the device.</summary>
    double Milliseconds(object begin, object end);
    /// <summary>Releases what Begin/End created.</summary>
    void Release(object token);
}

/// <summary>Host clock around each call: exact for synchronous backends (the CPU backend).</summary>
public sealed class StopwatchTimer : IOpTimer
{
    public string Method => "stopwatch";
    public object Begin() => Stopwatch.GetTimestamp();
    public object End(object begin) => Stopwatch.GetTimestamp();
    public double Milliseconds(object begin, object end) => ((long)end - (long)begin) * 1000.0 / Stopwatch.Frequency;
    public void Release(object token) { }
}

/// <summary>
/// ILGPU stream profiling markers (CUDA events with timing; on the CPU accelerator a timestamp taken when the
/// marker is added, which is exact there because that accelerator runs every launch synchronously). The runtime's
/// context is created with <c>.Profiling()</c>. Measuring waits for the markers, so collect after the step.
/// </summary>
public sealed class DeviceMarkerTimer(AcceleratorStream stream) : IOpTimer
{
    public string Method => "device-markers";
    public object Begin() => stream.AddProfilingMarker();
    public object End(object begin) => stream.AddProfilingMarker();
    public double Milliseconds(object begin, object end) => ((ProfilingMarker)end).MeasureFrom((ProfilingMarker)begin).TotalMilliseconds;
    public void Release(object token) => ((ProfilingMarker)token).Dispose();

    public static DeviceMarkerTimer For(Device device) => new(CudaRuntime.Get(device.Index).Stream);
}

/// <summary>
/// Collects the time of every backend call per <see cref="OpKind"/> while installed (see <see cref="Install"/>).
/// Calls made from inside a backend call (e.g. a contiguous copy a kernel wrapper makes) are part of the outer
/// call's time and are not counted again. Not installed, it costs nothing: the registry hands out the plain backend.
/// A call that throws is dropped (its begin mark released; it is not counted). Calls may come from several threads
/// at once (e.g. a prefetch thread uploading while the step runs): the nesting depth is per thread and recording is
/// locked, so every completed outermost call is counted once; concurrent calls' times overlap (Σ kinds may then exceed
/// the wall time, and device markers on one shared stream bracket whatever the stream ran between them).
/// </summary>
public sealed class OpProfiler : IDisposable
{
    private readonly IOpTimer _timer;
    private readonly object _gate = new();
    private List<(OpKind Kind, string Op, object Begin, object End)> _pending = new();
    private readonly Dictionary<string, (OpKind Kind, double Ms, long Calls)> _byOp = new(StringComparer.Ordinal);
    private IDisposable? _hook;
    // Per-thread nesting depth of calls into this profiler's decorator (outermost calls are the timed ones).
    [ThreadStatic] private static Dictionary<OpProfiler, int>? t_depth;

    private OpProfiler(IOpTimer timer) => _timer = timer;

    public string TimingMethod => _timer.Method;

    /// <summary>Wraps the backend of <paramref name="device"/> (through <see cref="Backends.Intercept"/>) until disposed.</summary>
    public static OpProfiler Install(Device device, IOpTimer? timer = null)
    {
        timer ??= device.IsCpu ? new StopwatchTimer() : DeviceMarkerTimer.For(device);
        var p = new OpProfiler(timer);
        p._hook = Backends.Intercept(device, inner => ProfilingBackend.Wrap(inner, p));
        return p;
    }

    /// <summary>A profiling decorator of <paramref name="inner"/> that reports to a new profiler (tests; not installed anywhere).</summary>
    public static (IBackend Backend, OpProfiler Profiler) Wrap(IBackend inner, IOpTimer timer)
    {
        var p = new OpProfiler(timer);
        return (ProfilingBackend.Wrap(inner, p), p);
    }

    internal void Record(OpKind kind, string op, object begin, object end)
    {
        lock (_gate) _pending.Add((kind, op, begin, end));
    }

    /// <summary>Enters a call on this thread; true when it is the outermost one (the one to time).</summary>
    internal bool Enter()
    {
        var d = t_depth ??= new Dictionary<OpProfiler, int>(ReferenceEqualityComparer.Instance);
        int n = d.GetValueOrDefault(this);
        d[this] = n + 1;
        return n == 0;
    }

    internal void Exit()
    {
        var d = t_depth!;
        int n = d[this] - 1;
        if (n == 0) d.Remove(this); else d[this] = n;
    }

    internal IOpTimer Timer => _timer;

    /// <summary>Resolves the pending marks into per-op totals (waits for the device where marks are device events).</summary>
    public void Collect()
    {
        lock (_gate)
        {
            var marks = _pending;
            _pending = new();
            foreach (var (kind, op, b, e) in marks)
            {
                double ms = _timer.Milliseconds(b, e);
                _timer.Release(b); _timer.Release(e);
                var cur = _byOp.GetValueOrDefault(op, (kind, 0, 0));
                _byOp[op] = (kind, cur.Ms + ms, cur.Calls + 1);
            }
        }
    }

    /// <summary>Totals per op name since install (after <see cref="Collect"/>; a snapshot).</summary>
    public IReadOnlyDictionary<string, (OpKind Kind, double Ms, long Calls)> ByOp
    {
        get { lock (_gate) return new Dictionary<string, (OpKind Kind, double Ms, long Calls)>(_byOp, StringComparer.Ordinal); }
    }

    /// <summary>Totals per kind (after <see cref="Collect"/>); every reported kind is present.</summary>
    public Dictionary<OpKind, (double Ms, long Calls)> ByKind()
    {
        var r = OpKinds.Reported.ToDictionary(k => k, _ => (0.0, 0L));
        foreach (var (_, (kind, ms, calls)) in ByOp)
        {
            var cur = r.GetValueOrDefault(kind);
            r[kind] = (cur.Item1 + ms, cur.Item2 + calls);
        }
        return r;
    }

    public void Reset()
    {
        lock (_gate) { Collect(); _byOp.Clear(); }
    }

    public void Dispose()
    {
        _hook?.Dispose();
        _hook = null;
        lock (_gate)
        {
            foreach (var (_, _, b, e) in _pending) { _timer.Release(b); _timer.Release(e); }
            _pending.Clear();
        }
    }
}

/// <summary>The decorator: forwards every <see cref="IBackend"/> member to the wrapped backend and times the outermost calls.</summary>
public class ProfilingBackend : DispatchProxy
{
    private IBackend _inner = null!;
    private OpProfiler _profiler = null!;
    private static readonly Dictionary<MethodInfo, OpKind> _kinds = new();

    internal static IBackend Wrap(IBackend inner, OpProfiler profiler)
    {
        var proxy = Create<IBackend, ProfilingBackend>();
        var self = (ProfilingBackend)(object)proxy;
        self._inner = inner;
        self._profiler = profiler;
        return proxy;
    }

    /// <summary>The backend behind the decorator.</summary>
    public IBackend Inner => _inner;

    private static OpKind KindOf(MethodInfo m)
    {
        lock (_kinds)
        {
            if (!_kinds.TryGetValue(m, out var k)) _kinds[m] = k = OpKinds.Of(m);
            return k;
        }
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        ArgumentNullException.ThrowIfNull(targetMethod);
        var kind = KindOf(targetMethod);
        if (kind == OpKind.Untimed) return Call(targetMethod, args);
        bool outermost = _profiler.Enter();
        try
        {
            if (!outermost) return Call(targetMethod, args);
            var timer = _profiler.Timer;
            var b = timer.Begin();
            object? r;
            object e;
            try
            {
                r = Call(targetMethod, args);
                e = timer.End(b);
            }
            catch
            {
                timer.Release(b);   // the call is dropped: no unpaired begin mark is left behind
                throw;
            }
            _profiler.Record(kind, targetMethod.Name, b, e);
            return r;
        }
        finally { _profiler.Exit(); }
    }

    private object? Call(MethodInfo m, object?[]? args)
    {
        try { return m.Invoke(_inner, args); }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            throw;
        }
    }
}
