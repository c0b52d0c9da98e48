using System.CommandLine;
using FashionViL.Bench;

namespace FashionViL.Cli;

/// <summary>`fashionvil bench step ...`: time full FashionViL training steps (issue 7).</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var task = new Option<string>("--task") { Description = "itc | itm | mlm | mpfc | icc | pac", DefaultValueFactory = _ => "itc" };
        var batch = new Option<int>("--batch") { Description = "images per step", DefaultValueFactory = _ => 64 };
        var device = new Option<string>("--device") { Description = "cpu | cuda | cuda:N", DefaultValueFactory = _ => "cpu" };
        var steps = new Option<int>("--steps") { Description = "measured steps (median, min, max)", DefaultValueFactory = _ => 10 };
        var warmup = new Option<int>("--warmup") { Description = "warm-up steps before measuring", DefaultValueFactory = _ => 3 };
        var profile = new Option<int>("--profile-steps") { Description = "steps run again with the per-op profiler (the breakdown; 0 = none)", DefaultValueFactory = _ => 3 };
        var config = new Option<string>("--config") { Description = "model sizes: configs/pretrain.yaml (full size) or configs/tiny.yaml", DefaultValueFactory = _ => "configs/pretrain.yaml" };
        var json = new Option<string?>("--json") { Description = "also write the result as JSON to this file (atomic)" };
        var precision = new Option<string>("--precision") { Description = "fp32 | tf32 | bf16: GEMM operands rounded to TF32 / bf16, fp32 accumulation (MatMulPrecision)", DefaultValueFactory = _ => "fp32" };
        var seed = new Option<int>("--seed") { Description = "seed of the random weights and inputs", DefaultValueFactory = _ => 0 };
        var mlmRows = new Option<string>("--mlm-head-rows")
        {
            Description = "mlm: labelled (the head on the labelled text rows, as the model trains) | all (on every text row, " +
                          "the unlabelled ones ignored by the loss, as the PyTorch step script does: use it to compare with PyTorch)",
            DefaultValueFactory = _ => "labelled",
        };

        var tune = new Option<string?>("--tune")
        {
            Description = "off | on (CUDA): time the kernel candidates that give the same bits for each new shape and keep the fastest " +
                          "(cached in FVL_TUNE_CACHE or ~/.cache/fashionvil/tuning/); default: FVL_TUNE, else off",
        };
        var step = new Command("step", "Time full FashionViL training steps (forward, backward, AdamW) on random inputs: ms/step, images/s, " +
            "peak memory, launches/allocations/host syncs per step, and the time per op kind.")
            { task, batch, device, steps, warmup, profile, config, json, precision, seed, mlmRows, tune };
        step.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                if (parse.GetValue(seed) < 0)
                    throw new ArgumentException($"bench step: --seed must be ≥ 0, got {parse.GetValue(seed)}");
                var opts = new StepBenchOptions
                {
                    Task = parse.GetValue(task)!, Batch = parse.GetValue(batch), Device = parse.GetValue(device)!,
                    Steps = parse.GetValue(steps), Warmup = parse.GetValue(warmup), ProfileSteps = parse.GetValue(profile),
                    Config = parse.GetValue(config)!, Precision = parse.GetValue(precision)!, Seed = (ulong)parse.GetValue(seed),
                    MlmHeadRows = parse.GetValue(mlmRows)!, Tune = parse.GetValue(tune),
                };
                var r = StepBenchmark.Run(opts, o);
                o.Write(StepBenchmark.Format(r));
                if (parse.GetValue(json) is { } path)
                {
                    StepBenchmark.WriteJson(path, r);
                    o.WriteLine($"  json        {path}");
                }
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine(e.Message.StartsWith("bench step:", StringComparison.Ordinal) ? $"fashionvil {e.Message}" : $"fashionvil bench step: {e.Message}");
                return 1;
            }
        });
        return new Command("bench", "Benchmarks (issue 7): `bench step` times FashionViL training steps; `bench ptx` checks the CUDA kernels offline; " +
                                    "`bench tuning` reports a kernel tuning cache; `bench dissect` times the TF32 tiles whole and in parts.")
            { step, BenchPtxCommand.Create(), TuningCommand(), BenchDissectCommand.Create() };
    }

    /// <summary>`fashionvil bench tuning [--cache FILE] [--top N]`: what a kernel tuning cache says.</summary>
    private static Command TuningCommand()
    {
        var cache = new Option<string?>("--cache") { Description = "the cache file (default: FVL_TUNE_CACHE, else the cuda:0 device's file under ~/.cache/fashionvil/tuning/)" };
        var top = new Option<int>("--top") { Description = "picks away from the rule to list", DefaultValueFactory = _ => 20 };
        var cmd = new Command("tuning", "Report a kernel tuning cache (FVL_TUNE=1 / bench step --tune on): shapes per decision, picks away from the " +
                                        "built-in rules and the time each saves per call.") { cache, top };
        cmd.SetAction(parse =>
        {
            var o = parse.InvocationConfiguration.Output;
            var err = parse.InvocationConfiguration.Error;
            try
            {
                if (parse.GetValue(top) < 1) throw new ArgumentException($"--top must be at least 1, got {parse.GetValue(top)}");
                string path = parse.GetValue(cache) ?? Kernels.Cuda.KernelTuner.CacheFile ?? DevicePath();
                o.Write(TuningReport.Format(Kernels.Cuda.KernelTuner.ReadCache(path), parse.GetValue(top)));
                return 0;
            }
            catch (Exception e) when (PretrainCommand.IsUserError(e))
            {
                err.WriteLine($"fashionvil bench tuning: {e.Message}");
                return 1;
            }
        });
        return cmd;

        static string DevicePath()
        {
            try
            {
                Backends.Get(Device.Cuda(0));
                return Kernels.Cuda.KernelTuner.CachePathFor(Kernels.Cuda.CudaRuntime.Get(0).Accelerator);
            }
            catch (Exception e) when (e is NotSupportedException or InvalidOperationException)
            {
                throw new ArgumentException($"no --cache given and no CUDA device to name the default cache ({e.Message})");
            }
        }
    }
}
