using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Offline PTX compilation for sm_90 (ISA 8.8) without a GPU, for the kernel-level "compiles to PTX" tests: catches kernel
/// code the CPU accelerator accepts but CUDA does not. FVL_DUMP_PTX (or FVL_PTX_DUMP) = a folder writes each PTX there.
/// </summary>
internal sealed class Sm90Ptx : IDisposable
{
    private readonly Context _ctx = Context.Create(b => b.CPU(new CPUDevice(2, 1, 1)).EnableAlgorithms());
    private readonly PTXBackend _backend;

    public Sm90Ptx() => _backend = new PTXBackend(_ctx, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null);

    /// <summary>The PTX of one explicitly grouped kernel method; dumped as <paramref name="dumpName"/>.ptx when asked.</summary>
    public string Compile(MethodInfo kernel, string dumpName)
    {
        var ptx = ((PTXCompiledKernel)_backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), default)).PTXAssembly;
        if ((Environment.GetEnvironmentVariable("FVL_DUMP_PTX") ?? Environment.GetEnvironmentVariable("FVL_PTX_DUMP")) is { Length: > 0 } dir)
            File.WriteAllText(Path.Combine(dir, dumpName + ".ptx"), ptx);
        return ptx;
    }

    public void Dispose()
    {
        _backend.Dispose();
        _ctx.Dispose();
    }
}
