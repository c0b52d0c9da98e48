using System.CommandLine;
using FashionViL.Model;
using FashionViL.Nn.Models;

namespace FashionViL.Cli;

/// <summary>`fashionvil info`: the compute devices this machine offers and the model sizes.</summary>
public static class InfoCommand
{
    /// <summary>The kernel A/B switches in effect (each read from its environment variable; the CLI refused bad values at start).</summary>
    internal static string KernelChoices()
    {
        static string Tile(Kernels.Cuda.TensorCoreTile? t) => t is { } x ? x.ToString() : "rule";
        var sgemm = Kernels.Cuda.CudaBackend.SgemmOverride;
        return $"fp32 SGEMM {(sgemm is { } v ? $"{v} (FVL_SGEMM)" : $"{Kernels.Cuda.GemmKernels.Best} (rule; FVL_SGEMM)")}, " +
               $"tensor-core GEMM tile {Tile(Kernels.Cuda.CudaBackend.GemmTileOverride)} (FVL_TC_TILE), " +
               $"128×128 stages {(Kernels.Cuda.TensorCoreGemm.AsyncStages ? "cp.async" : "register prefetch")} (FVL_TC_ASYNC), " +
               $"conv tile {Tile(Kernels.Cuda.ConvKernels.ConvTileOverride)} (FVL_TC_CONV_TILE), " +
               $"128×128 conv forward staging {(Kernels.Cuda.ConvKernels.Tc3ForwardPath ? "vec" : "table")} (FVL_TC_CONV_FWD), " +
               $"attention {(Kernels.Cuda.CudaBackend.ComposedAttention ? "composed" : "fused")} (FVL_ATTENTION), " +
               $"Winograd 3×3 {Kernels.Cuda.CudaBackend.Winograd switch { Kernels.Cuda.WinogradMode.F2x2 => "f2", Kernels.Cuda.WinogradMode.F4x4 => "f4", _ => "off" }} (FVL_WINOGRAD), " +
               $"tf32 weight gradients {(Kernels.Cuda.ConvKernels.Tf32WeightGradientsOnTensorCores ? "tc" : "rule")} (FVL_TF32_WGRAD), " +
               $"1×1 convolutions {(Kernels.Cuda.CudaBackend.Conv1x1AsGemm ? "gemm" : "direct")} (FVL_CONV1X1), " +
               $"operand pre-rounding {(Kernels.Cuda.CudaBackend.PreRoundOperands ? "on" : "off")} (FVL_PREROUND)";
    }

    public static Command Create()
    {
        var command = new Command("info", "List compute devices and the FashionViL model sizes (reference and tiny).");
        command.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            o.WriteLine($"FashionViL.Native on .NET {Environment.Version}, {Environment.OSVersion}");
            o.WriteLine($"cpu      : {Environment.ProcessorCount} hardware threads");
            try
            {
                Backends.Get(Device.Cuda(0));   // opens the device, or says why not
                var rt = Kernels.Cuda.CudaRuntime.Get(0);
                var acc = rt.Accelerator;
                o.WriteLine($"cuda:0   : {acc.Name}{(rt.IsEmulated ? " (CPU emulator: ILGPU's CPU accelerator runs the CUDA kernels)" : "")}, " +
                            $"{acc.NumMultiprocessors} multiprocessors, {acc.MemorySize / (double)(1L << 30):F1} GiB");
                string tuning;
                try { tuning = Kernels.Cuda.KernelTuner.Mode == Kernels.Cuda.TuneMode.On ? "on" : "off"; }
                catch (ArgumentException e) { tuning = e.Message; }
                string cache = Kernels.Cuda.KernelTuner.CachePathFor(acc);
                string known;
                try { known = $"{Kernels.Cuda.KernelTuner.KnownChoices(acc)} choices"; }
                catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { known = e.Message; }
                o.WriteLine($"tuning   : {tuning} ({Kernels.Cuda.KernelTuner.ModeVariable}); cache {cache}: {(File.Exists(cache) ? known : "none yet")}");
                o.WriteLine($"kernels  : {KernelChoices()}");
            }
            catch (Exception e) when (e is NotSupportedException or InvalidOperationException)
            {
                o.WriteLine($"cuda     : not available ({e.Message})");
            }
            o.WriteLine("models (parameters):");
            foreach (var (name, c) in new[] { ("reference (configs/pretrain.yaml)", FashionViLConfig.Reference), ("tiny (configs/tiny.yaml)", FashionViLConfig.Tiny) })
                o.WriteLine($"  {name,-34} {ModelSizes.Describe(c)}");
            o.WriteLine($"  {"VQ-VAE tokenizer (frozen)",-34} {ModelSizes.VqVae(VqVaeConfig.Reference):N0} (reference config)");
            return 0;
        });
        return command;
    }
}
