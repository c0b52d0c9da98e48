using System.Reflection;
using System.Runtime.ExceptionServices;

namespace FashionViL.TensorTests;

/// <summary><see cref="Backends.Intercept"/>: stacked decorators and their removal in and out of order.</summary>
[NonParallelizable]   // the tests change the process-wide registry of the CPU device
public class BackendsInterceptTests
{
    /// <summary>A named decorator that forwards every call to the backend it wraps and counts the calls it saw.</summary>
    public class Tag : DispatchProxy
    {
        public string Name = "";
        public IBackend Inner = null!;
        public int Calls;

        public static IBackend Around(IBackend inner, string name, List<string> built)
        {
            var p = Create<IBackend, Tag>();
            var t = (Tag)(object)p;
            t.Name = name; t.Inner = inner;
            built.Add(name);
            return p;
        }

        protected override object? Invoke(MethodInfo? m, object?[]? args)
        {
            Interlocked.Increment(ref Calls);
            try { return m!.Invoke(Inner, args); }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }
    }

    private IBackend _plain = null!;

    [SetUp]
    public void TakeThePlainBackend()
    {
        _plain = Backends.Get(Device.Cpu);
        Assert.That(_plain, Is.Not.InstanceOf<Tag>(), "a previous test left a decorator installed");
    }

    /// <summary>The chain that <see cref="Backends.Get"/> hands out, outermost first ("plain" for the undecorated backend).</summary>
    private List<string> Chain()
    {
        var names = new List<string>();
        var b = Backends.Get(Device.Cpu);
        while (b is Tag t) { names.Add(t.Name); b = t.Inner; }
        Assert.That(b, Is.SameAs(_plain), "every chain ends at the plain backend");
        names.Add("plain");
        return names;
    }

    private readonly List<IDisposable> _handles = [];

    private IDisposable Install(string name, List<string> built)
    {
        var h = Backends.Intercept(Device.Cpu, inner => Tag.Around(inner, name, built));
        _handles.Add(h);
        return h;
    }

    /// <summary>Whatever a failed test left installed goes, newest first, so the next test starts from the plain backend.</summary>
    [TearDown]
    public void RemoveLeftovers()
    {
        for (int i = _handles.Count - 1; i >= 0; i--) _handles[i].Dispose();
        _handles.Clear();
    }

    [Test]
    public void InOrderDisposalUnwindsLayerByLayer()
    {
        var built = new List<string>();
        var a = Install("A", built);
        var b = Install("B", built);
        Assert.That(Chain(), Is.EqualTo(new[] { "B", "A", "plain" }));
        b.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "A", "plain" }));
        a.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "plain" }));
        Assert.That(built, Is.EqualTo(new[] { "A", "B" }), "in-order disposal rebuilds nothing");
    }

    [Test]
    public void OutOfOrderDisposalRemovesExactlyItsOwnLayer()
    {
        var built = new List<string>();
        var a = Install("A", built);
        var b = Install("B", built);
        a.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "B", "plain" }), "B stays installed, now directly around the plain backend; A is gone");
        using (var t = Tensor.Zeros([3]))
        {
            var top = (Tag)(object)Backends.Get(Device.Cpu);
            int before = top.Calls;
            Backends.Get(Device.Cpu).Fill(t, 2);
            Assert.That(t.ToArray<float>(), Is.All.EqualTo(2f), "calls go through the rebuilt chain");
            Assert.That(top.Calls, Is.GreaterThan(before));
        }
        b.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "plain" }), "disposing B does not bring A back");
        Assert.That(built, Is.EqualTo(new[] { "A", "B", "B" }), "B was rebuilt once, around the plain backend");
    }

    [Test]
    public void RemovingAMiddleLayerKeepsTheOthersInOrder()
    {
        var built = new List<string>();
        using var a = Install("A", built);
        var b = Install("B", built);
        using var c = Install("C", built);
        b.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "C", "A", "plain" }));
        var d = Install("D", built);
        Assert.That(Chain(), Is.EqualTo(new[] { "D", "C", "A", "plain" }));
        d.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "C", "A", "plain" }));
    }

    [Test]
    public void DisposingTwiceDoesNothing()
    {
        var built = new List<string>();
        var a = Install("A", built);
        var b = Install("B", built);
        a.Dispose();
        a.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "B", "plain" }));
        b.Dispose();
        b.Dispose();
        a.Dispose();
        Assert.That(Chain(), Is.EqualTo(new[] { "plain" }));
        Assert.That(built, Is.EqualTo(new[] { "A", "B", "B" }), "a second dispose rebuilds nothing");
    }

    [Test]
    public void AnInterceptorReturningNullIsRefusedAndInstallsNothing()
    {
        var e = Assert.Throws<ArgumentException>(() => Backends.Intercept(Device.Cpu, _ => null!))!;
        Assert.That(e.Message, Does.Contain("returned null").And.Contain(Device.Cpu.ToString()));
        Assert.That(Chain(), Is.EqualTo(new[] { "plain" }));
    }
}
