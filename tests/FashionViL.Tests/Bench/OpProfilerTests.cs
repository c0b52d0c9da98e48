using System.Diagnostics;
using System.Reflection;
using FashionViL.Autograd;
using FashionViL.Bench;

namespace FashionViL.Tests.Bench;

[NonParallelizable]
public class OpProfilerTests
{
    [Test]
    public void TheKindTableListsEveryBackendMemberExplicitly()
    {
        var members = typeof(IBackend).GetMethods().Select(m => m.Name).ToList();
        Assert.That(members, Is.Unique, "IBackend overloads would make the by-name table ambiguous");
        var missing = members.Where(n => !OpKinds.Table.ContainsKey(n)).ToList();
        Assert.That(missing, Is.Empty, "IBackend members without a kind in OpKinds.Table (they would land in 'other' silently)");
        var stale = OpKinds.Table.Keys.Where(k => !members.Contains(k)).ToList();
        Assert.That(stale, Is.Empty, "OpKinds.Table names members IBackend does not have");
        // Spot checks of the classification.
        Assert.That(OpKinds.Table["MatMul"], Is.EqualTo(OpKind.Gemm));
        Assert.That(OpKinds.Table["Conv2dBackwardWeight"], Is.EqualTo(OpKind.Conv));
        Assert.That(OpKinds.Table["LayerNormBackward"], Is.EqualTo(OpKind.Norm));
        Assert.That(OpKinds.Table["AttentionForward"], Is.EqualTo(OpKind.Attention));
        Assert.That(OpKinds.Table["AdamWStep"], Is.EqualTo(OpKind.Optimizer));
        Assert.That(OpKinds.Table["Binary"], Is.EqualTo(OpKind.Elementwise));
    }

    [Test]
    public void ProfilerOffMeansThePlainBackend()
    {
        var plain = Backends.Get(Device.Cpu);
        Assert.That(plain, Is.Not.InstanceOf<ProfilingBackend>());
        using (var p = OpProfiler.Install(Device.Cpu))
        {
            var wrapped = Backends.Get(Device.Cpu);
            Assert.That(wrapped, Is.InstanceOf<ProfilingBackend>());
            Assert.That(((ProfilingBackend)(object)wrapped).Inner, Is.SameAs(plain));
            Assert.That(wrapped.Allocator, Is.SameAs(plain.Allocator));
        }
        Assert.That(Backends.Get(Device.Cpu), Is.SameAs(plain), "disposing the profiler restores the undecorated instance");
    }

    /// <summary>A backend whose MatMul and Fill take a known time (sleeps); everything else is unused.</summary>
    public class SleepyBackend : DispatchProxy
    {
        protected override object? Invoke(MethodInfo? m, object?[]? args)
        {
            switch (m!.Name)
            {
                case "MatMul": Thread.Sleep(30); return null;
                case "Fill": Thread.Sleep(10); return null;
                case "get_Device": return Device.Cpu;
                case "Transfer": throw new InvalidOperationException("sleepy: transfer refused");
                default: return null;
            }
        }
    }

    [Test]
    public void TimesEachCallByKindAgainstAnOuterClock()
    {
        var stub = DispatchProxy.Create<IBackend, SleepyBackend>();
        var (b, prof) = OpProfiler.Wrap(stub, new StopwatchTimer());
        using var x = Tensor.Zeros([1]);
        double outerGemm = 0, outerFill = 0;
        for (int i = 0; i < 2; i++)
        {
            var sw = Stopwatch.StartNew();
            b.MatMul(x, x, x, false, false);
            outerGemm += sw.Elapsed.TotalMilliseconds;
        }
        var sw2 = Stopwatch.StartNew();
        b.Fill(x, 1);
        outerFill += sw2.Elapsed.TotalMilliseconds;
        Assert.That(b.Device, Is.EqualTo(Device.Cpu));
        var e = Assert.Throws<InvalidOperationException>(() => b.Transfer(x, x));
        Assert.That(e!.Message, Does.Contain("sleepy"), "the inner exception comes through unwrapped");
        prof.Collect();
        var k = prof.ByKind();
        Assert.That(k[OpKind.Gemm].Calls, Is.EqualTo(2));
        Assert.That(k[OpKind.Elementwise].Calls, Is.EqualTo(1));
        Assert.That(k[OpKind.Gemm].Ms, Is.InRange(60.0, outerGemm), "two 30 ms sleeps, inside the caller's own clock");
        Assert.That(k[OpKind.Elementwise].Ms, Is.InRange(10.0, outerFill));
        Assert.That(k[OpKind.Conv].Calls, Is.Zero);
        Assert.That(prof.ByOp.ContainsKey("get_Device"), Is.False, "property reads are not timed");
    }

    [Test]
    public void NestedBackendCallsAreNotCountedTwice()
    {
        // A real CPU step through the registry: Σ kinds must stay within the wall time of the profiled region.
        var g = new Generator(5);
        using var w = g.Normal([64, 64]); w.RequiresGrad = true;
        using var x = g.Normal([32, 64]);
        using var p = OpProfiler.Install(Device.Cpu);
        var sw = Stopwatch.StartNew();
        using (var scope = Tensor.Scope())
        {
            using var xt = x.Transpose(0, 1);   // a non-contiguous operand makes backends copy inside their calls
            var y = xt.Transpose(0, 1).Matmul(w).Relu().Sum();
            y.Backward();
        }
        double wall = sw.Elapsed.TotalMilliseconds;
        p.Collect();
        var k = p.ByKind();
        double sum = k.Values.Sum(v => v.Ms);
        Assert.That(k[OpKind.Gemm].Calls, Is.GreaterThanOrEqualTo(2), "forward and weight-gradient matmuls");
        Assert.That(sum, Is.GreaterThan(0).And.LessThanOrEqualTo(wall));
        w.Grad?.Dispose(); w.Grad = null;
    }

    /// <summary>A timer whose marks are consecutive numbers; it tracks which marks are still unreleased.</summary>
    private sealed class CountingTimer : IOpTimer
    {
        private long _next;
        private readonly HashSet<long> _live = [];
        public string Method => "counting";
        public int Live { get { lock (_live) return _live.Count; } }
        private object Mark() { lock (_live) { long t = ++_next; _live.Add(t); return t; } }
        public object Begin() => Mark();
        public object End(object begin) => Mark();
        public double Milliseconds(object begin, object end) => (long)end - (long)begin;
        public void Release(object token)
        {
            lock (_live) Assert.That(_live.Remove((long)token), Is.True, $"mark {token} released twice or never made");
        }
    }

    [Test]
    public void ACallThatThrowsIsDroppedAndReleasesItsBeginMark()
    {
        var stub = DispatchProxy.Create<IBackend, SleepyBackend>();
        var timer = new CountingTimer();
        var (b, prof) = OpProfiler.Wrap(stub, timer);
        using var x = Tensor.Zeros([1]);
        b.MatMul(x, x, x, false, false);                                    // marks 1, 2
        Assert.Throws<InvalidOperationException>(() => b.Transfer(x, x));   // mark 3, released
        b.Fill(x, 1);                                                       // marks 4, 5
        b.Fill(x, 1);                                                       // marks 6, 7
        prof.Collect();
        Assert.That(timer.Live, Is.Zero, "every mark is released after Collect (none left by the call that threw)");
        var ops = prof.ByOp;
        Assert.That(ops.ContainsKey("Transfer"), Is.False, "the call that threw is not counted");
        Assert.That(ops["MatMul"].Calls, Is.EqualTo(1));
        Assert.That(ops["Fill"].Calls, Is.EqualTo(2));
        Assert.That(ops["Fill"].Ms, Is.EqualTo(2.0), "each later call is measured between its own begin and end (1 tick each)");
        Assert.That(ops["MatMul"].Ms, Is.EqualTo(1.0));
        prof.Dispose();
        Assert.That(timer.Live, Is.Zero);
    }

    [Test]
    public void ConcurrentCallsFromTwoThreadsAreAllCounted()
    {
        const int n = 3000;
        using var a = Tensor.Zeros([4]);
        using var c = Tensor.Zeros([4]);
        using var y = Tensor.Zeros([4]);
        using var p = OpProfiler.Install(Device.Cpu);
        using var start = new Barrier(2);
        Exception? error = null;
        void Run(Action<IBackend> op)
        {
            try
            {
                start.SignalAndWait();
                for (int i = 0; i < n; i++) op(Backends.Get(Device.Cpu));
            }
            catch (Exception e) { error ??= e; }
        }
        var t1 = new Thread(() => Run(be => be.Fill(a, 1)));
        var t2 = new Thread(() => Run(be => be.Binary(BinaryOp.Add, c, c, y)));
        t1.Start(); t2.Start();
        t1.Join(); t2.Join();
        Assert.That(error, Is.Null);
        p.Collect();
        var ops = p.ByOp;
        Assert.That(ops["Fill"].Calls, Is.EqualTo(n), "fills (thread 1)");
        Assert.That(ops["Binary"].Calls, Is.EqualTo(n), "adds (thread 2)");
        Assert.That(p.ByKind()[OpKind.Elementwise].Calls, Is.EqualTo(2 * n));
        Assert.That(a.ToArray<float>(), Is.All.EqualTo(1f));
    }
}
