using System.Reflection;
using System.Runtime.ExceptionServices;
using FashionViL.Bench;
using FashionViL.Config;
using FashionViL.Kernels.Cuda;
using FashionViL.Training;

namespace FashionViL.Tests.Bench;

/// <summary>
/// Whole training steps with the multi-tensor AdamW against the same steps with one AdamWStep per parameter (a backend
/// decorator turns each AdamWStepMany call back into per-tensor calls): every parameter bit for bit, and the optimizer's
/// launches per step. Explicit: three nano ITC steps twice on the emulator take about half a minute.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable, Explicit("about 30 s on the emulator; run by name")]
public class AdamWStepEquivalenceTests
{
    private static readonly Device Gpu = Device.Cuda(0);

    /// <summary>Forwards everything to the wrapped backend, except that AdamWStepMany becomes one AdamWStep per item.</summary>
    public class PerTensorAdamW : DispatchProxy
    {
        public IBackend Inner = null!;

        protected override object? Invoke(MethodInfo? m, object?[]? args)
        {
            if (m!.Name == nameof(IBackend.AdamWStepMany))
            {
                foreach (var it in (IReadOnlyList<AdamWItem>)args![0]!) Inner.AdamWStep(it.Param, it.Grad, it.ExpAvg, it.ExpAvgSq, it.Hp);
                return null;
            }
            try { return m.Invoke(Inner, args); }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Capture(e.InnerException).Throw();
                throw;
            }
        }
    }

    private static (Dictionary<string, float[]> Params, long Launches) Run(bool perTensor)
    {
        var cfg = FvConfig.Load(BenchTestUtil.Nano);
        var mc = PretrainSetup.ModelConfig(cfg);
        mc = mc with { Bert = mc.Bert with { VocabSize = 512 } };
        using var hook = perTensor ? Backends.Intercept(Gpu, inner =>
        {
            var p = DispatchProxy.Create<IBackend, PerTensorAdamW>();
            ((PerTensorAdamW)(object)p).Inner = inner;
            return p;
        }) : null;
        using var runner = new StepRunner(mc, null, "itc", 2, 16, Gpu, seed: 5);
        runner.Step(); runner.Step();
        Backends.Get(Gpu).Synchronize();
        var c0 = CudaRuntime.Get(0).Counters;
        runner.Step();
        long launches = (CudaRuntime.Get(0).Counters - c0).KernelLaunches;
        return (runner.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.ToArray<float>()), launches);
    }

    [Test]
    public void ThreeStepsLeaveEveryParameterBitForBitAsPerTensorAdamW()
    {
        CudaRuntime.EmulatorEnabled = !string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);
        var (many, lm) = Run(perTensor: false);
        var (one, l1) = Run(perTensor: true);
        Assert.That(many.Keys, Is.EquivalentTo(one.Keys));
        foreach (var (name, v) in one) Assert.That(many[name], Is.EqualTo(v), name);
        TestContext.Out.WriteLine($"launches per step: multi-tensor {lm}, per-tensor {l1}; {many.Count} parameter tensors");
        // n updated tensors: n launches per tensor against ⌈n/32⌉, so the difference d = n − ⌈n/32⌉ (n ≤ the parameter count)
        long d = l1 - lm;
        Assert.That(Enumerable.Range(1, many.Count).Any(n => n - (n + 31) / 32 == d), Is.True, $"{d} fewer launches is n − ⌈n/32⌉ for some n ≤ {many.Count}");
        Assert.That(d, Is.GreaterThan(32), "the per-tensor optimizer launches once per parameter");
    }
}
