using FashionViL.Kernels.Cpu;
using FashionViL.Testing;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Shared fixture of the kernel-level ILGPU tests: one Context and one CPU accelerator (2-thread groups, warp size 2)
/// per fixture, plus optionally a second one with 4 warps of 2 (<see cref="Multi"/>) for the cross-warp paths, and the
/// upload / poison / download helpers. <paramref name="cudaVariable"/>, when set to 1 in the environment, runs the
/// fixture on the first CUDA device instead (then <see cref="Multi"/> is the same accelerator).
/// </summary>
/// <param name="assertions">Compile the kernels with ILGPU assertions (bounds-checked views).</param>
/// <param name="multiWarp">Also create the 4-warp accelerator <see cref="Multi"/>.</param>
/// <param name="cudaVariable">Environment variable that switches the fixture to a real CUDA device, or null.</param>
public abstract class EmulatorKernelTestBase(bool assertions, bool multiWarp = false, string? cudaVariable = null)
{
    protected Context Ctx { get; private set; } = null!;
    protected Accelerator Acc { get; private set; } = null!;
    protected Accelerator Multi => _multi ?? throw new InvalidOperationException($"{GetType().Name} did not ask for the multi-warp accelerator");
    private Accelerator? _multi;

    protected static CpuBackend Cpu => CpuBackend.Instance;

    [OneTimeSetUp]
    public void CreateAccelerators()
    {
        if (cudaVariable is not null && Environment.GetEnvironmentVariable(cudaVariable)?.Trim() == "1")
        {
            Ctx = Context.Create(b => b.Cuda().EnableAlgorithms());
            if (Ctx.GetCudaDevices().Count == 0)
            {
                Ctx.Dispose();
                throw new InvalidOperationException($"no CUDA device: {cudaVariable}=1 asks for one and ILGPU found none");
            }
            Acc = Ctx.CreateCudaAccelerator(0);
            _multi = Acc;   // warp 32, default groups of 128–512 threads: the cross-warp step runs everywhere
            TestContext.Progress.WriteLine($"{GetType().Name} on {Acc.Name}");
            return;
        }
        Ctx = assertions
            ? Context.Create(b => b.CPU(new CPUDevice(2, 1, 2)).EnableAlgorithms().Assertions())
            : Context.Create(b => b.CPU(new CPUDevice(2, 1, 2)).EnableAlgorithms());
        Acc = Ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        if (multiWarp) _multi = new CPUDevice(2, 4, 1).CreateCPUAccelerator(Ctx, CPUAcceleratorMode.Parallel);
    }

    [OneTimeTearDown]
    public void DisposeAccelerators()
    {
        if (_multi is not null && !ReferenceEquals(_multi, Acc)) _multi.Dispose();
        Acc.Dispose();
        Ctx.Dispose();
    }

    /// <summary>A device copy of <paramref name="a"/> (one element when empty: ILGPU views need a buffer).</summary>
    protected static MemoryBuffer1D<float, Stride1D.Dense> Up(Accelerator acc, float[] a) => acc.Allocate1D(a.Length == 0 ? new float[1] : a);

    /// <summary>A device copy of the tensor's values in row-major order.</summary>
    protected static MemoryBuffer1D<float, Stride1D.Dense> Up(Accelerator acc, Tensor t) => Up(acc, t.ToArray<float>());

    protected static MemoryBuffer1D<long, Stride1D.Dense> UpL(Accelerator acc, long[] v) => acc.Allocate1D(v.Length == 0 ? new long[1] : v);

    /// <summary>An output buffer of <paramref name="n"/> NaNs, so an element the kernel forgets fails the comparison.</summary>
    protected static MemoryBuffer1D<float, Stride1D.Dense> Poisoned(Accelerator acc, long n)
    {
        var nan = new float[Math.Max(n, 1)];
        Array.Fill(nan, float.NaN);
        return acc.Allocate1D(nan);
    }

    /// <summary>The first <paramref name="n"/> values of a device buffer, as double.</summary>
    protected static double[] D(MemoryBuffer1D<float, Stride1D.Dense> b, long n) => b.GetAsArray1D().Take((int)n).Select(v => (double)v).ToArray();

    protected static double[] D(float[] a) => a.Select(v => (double)v).ToArray();

    protected static Tensor Rand(int[] shape, ulong seed, double lo = -1, double hi = 1) => OpCheck.Rand(shape, seed, DType.Float32, lo, hi);
}
