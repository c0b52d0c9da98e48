using System.CommandLine;
using FashionViL.Cli;

// `fashionvil <command>`: every command lives in its own file under Commands/ and registers itself here.
var root = new RootCommand("FashionViL.Native: pre-train, evaluate and use FashionViL on a .NET tensor engine (CPU or CUDA).");
foreach (var command in CommandCatalog.All())
    root.Subcommands.Add(command);
// A bad FVL_TUNE, FVL_ATTENTION, FVL_TC_TILE, FVL_TC_CONV_TILE, FVL_SGEMM, FVL_WINOGRAD, FVL_TF32_WGRAD, FVL_CONV1X1, FVL_TC_ASYNC or FVL_TC_CONV_FWD is said at once, not from inside the first GPU matmul or attention of a run.
try { _ = FashionViL.Kernels.Cuda.KernelTuner.Mode; _ = FashionViL.Kernels.Cuda.CudaBackend.ComposedAttention; _ = FashionViL.Kernels.Cuda.CudaBackend.GemmTileOverride;
      _ = FashionViL.Kernels.Cuda.ConvKernels.ConvTileOverride;
      _ = FashionViL.Kernels.Cuda.CudaBackend.SgemmOverride; _ = FashionViL.Kernels.Cuda.CudaBackend.Winograd;
      _ = FashionViL.Kernels.Cuda.ConvKernels.Tf32WeightGradientsOnTensorCores; _ = FashionViL.Kernels.Cuda.CudaBackend.Conv1x1AsGemm;
      _ = FashionViL.Kernels.Cuda.TensorCoreGemm.AsyncStages; _ = FashionViL.Kernels.Cuda.ConvKernels.Tc3ForwardPath; }
catch (ArgumentException e)
{
    Console.Error.WriteLine($"fashionvil: {e.Message}");
    return 2;
}
return await root.Parse(args).InvokeAsync();
