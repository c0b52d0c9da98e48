using FashionViL.Testing;
using FashionViL.Kernels.Cuda;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// Ops.Attention on the CUDA backend (the emulator in CI) asks for the output only in the forward and for the probabilities
/// only in the backward's recompute: output and gradients must be bitwise those of the full passes (both outputs, both
/// times), including S &gt; <see cref="AttentionKernels.SCap"/> where the backend lends the kernel a scratch for the scores.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]   // flips the process-wide Ops.AttentionFullPasses switch
public class CudaAttentionModesTests : CudaTestBase
{
    [Test]
    public void OpOutputAndGradientsAreBitwiseThoseOfTheFullPasses([Values(0.0, 0.2)] double p, [Values(33, AttentionKernels.SCap + 44)] int s)
        => AttentionPasses.AssertSame(Gpu, DType.Float32, p, s);
}
