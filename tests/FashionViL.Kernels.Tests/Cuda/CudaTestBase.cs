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

    protected static void AssertBitEqual<T>(Tensor got, Tensor want, string what) where T : unmanaged
        => Assert.That(got.ToArray<T>(), Is.EqualTo(want.ToArray<T>()), what);
}
