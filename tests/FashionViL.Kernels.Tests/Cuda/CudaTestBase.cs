using FashionViL.Autograd;
using FashionViL.Kernels.Cuda;
using FashionViL.Testing;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Shared set-up of the CUDA tests: the emulator switch is turned on before the first Device.Cuda(0)
/// tensor, so ILGPU's CPU accelerator runs the CUDA kernels (the same runtime serves every fixture) —
/// unless FASHIONVIL_TEST_CUDA=gpu, which runs the same test bodies on the real device.
/// </summary>
public abstract class CudaTestBase
{
    protected static readonly Device Gpu = Device.Cuda(0);
    protected static IBackend Cpu => Backends.Get(Device.Cpu);
    protected static CudaBackend Dev => (CudaBackend)Backends.Get(Gpu);

    /// <summary>FASHIONVIL_TEST_CUDA=gpu runs the same tests on the real device (a machine with a GPU and the SDK).</summary>
    public static bool OnRealGpu => string.Equals(Environment.GetEnvironmentVariable("FASHIONVIL_TEST_CUDA"), "gpu", StringComparison.OrdinalIgnoreCase);

    [OneTimeSetUp]
    public void EnableEmulator() => CudaRuntime.EmulatorEnabled = !OnRealGpu;

    /// <summary>A device copy of a CPU tensor.</summary>
    protected static Tensor Up(Tensor cpu) => cpu.To(Gpu);

    protected static Tensor Rand(int[] shape, ulong seed, DType dtype = DType.Float32, double lo = -2, double hi = 2)
        => OpCheck.Rand(shape, seed, dtype, lo, hi);

    /// <summary>
    /// The same values as <paramref name="t"/> in a permuted (non-contiguous) layout on the tensor's own
    /// device: the storage holds the dims in reverse order.
    /// </summary>
    protected static Tensor Strided(Tensor t) => OpCheck.NonContiguous(t);

    protected static void AssertSame(Tensor got, Tensor want, double rtol, double atol, string what)
    {
        Assert.That(got.Device, Is.EqualTo(Gpu), what);
        OpCheck.AssertClose(got, want, rtol, atol, what, allowNaN: true);
    }

    /// <summary>f on device copies of the inputs under <paramref name="p"/>, then backward with a fixed upstream gradient:
    /// the output's and every input gradient's bits, and the kernel launches it took.</summary>
    protected static (List<int[]> Bits, long Launches) OutputAndGradientBits(Func<Tensor[], Tensor> f, Tensor[] cpu, Precision p)
    {
        var rt = CudaRuntime.Get(0);
        using var scope = Tensor.Scope();
        var dev = cpu.Select(t => { var d = Up(t); d.RequiresGrad = true; return d; }).ToArray();
        Dev.Synchronize();
        var c0 = rt.Counters;
        Tensor y;
        using (MatMulPrecision.Use(p))
        {
            y = f(dev);
            using var w = Up(Rand(y.Shape, 99, DType.Float32, 0.5, 1.5));
            (y * w).Sum().Backward();
        }
        Dev.Synchronize();
        long launches = (rt.Counters - c0).KernelLaunches;
        var bits = new List<int[]> { Bits(y) };
        bits.AddRange(dev.Select(d => Bits(d.Grad!)));
        return (bits, launches);
    }

    /// <summary>The raw bits of a float32 tensor's values.</summary>
    protected static int[] Bits(Tensor t) => t.ToArray<float>().Select(BitConverter.SingleToInt32Bits).ToArray();

    protected static void AssertBitEqual<T>(Tensor got, Tensor want, string what) where T : unmanaged
        => Assert.That(got.ToArray<T>(), Is.EqualTo(want.ToArray<T>()), what);
}
