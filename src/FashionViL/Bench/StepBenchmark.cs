using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Kernels.Cuda;
using FashionViL.Model;
using FashionViL.Nn.Models;
using FashionViL.Training;

namespace FashionViL.Bench;

/// <summary>What <see cref="StepBenchmark.Run"/> measures.</summary>
public sealed record StepBenchOptions
{
    /// <summary>itc, itm, mlm, mpfc, icc or pac.</summary>
    public string Task { get; init; } = "itc";
    public int Batch { get; init; } = 64;
    /// <summary>cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>Measured steps (each timed on its own; median, min, max).</summary>
    public int Steps { get; init; } = 10;
    public int Warmup { get; init; } = 3;
    /// <summary>Steps run again with the per-op profiler installed (the breakdown); 0 = none.</summary>
    public int ProfileSteps { get; init; } = 3;
    /// <summary>The model config (sizes only; pretrained paths are ignored: weights are random).</summary>
    public string Config { get; init; } = "configs/pretrain.yaml";
    /// <summary>fp32, tf32 or bf16: <see cref="MatMulPrecision"/> for every step (TF32/bf16 GEMM operands, fp32 accumulation).</summary>
    public string Precision { get; init; } = "fp32";
    public ulong Seed { get; init; } = 0;
    /// <summary>MLM only: "labelled" (the head on the labelled text rows, as the model trains) or "all" (the head on every
    /// text row, unlabelled ones ignored by the cross-entropy, as torch_fashionvil_step.py does: the fair comparison).</summary>
    public string MlmHeadRows { get; init; } = "labelled";
    /// <summary>off | on (CUDA only): <see cref="KernelTuner"/> times the same-bits kernel candidates of each new shape and
    /// remembers the fastest (its cache file); off leaves the built-in rules. Unset: <c>FVL_TUNE</c>.</summary>
    public string? Tune { get; init; }
}

/// <summary>What the kernel tuner did during a benchmark (CUDA only).</summary>
/// <param name="Mode">off or on</param>
/// <param name="CacheFile">its cache file (null when off)</param>
/// <param name="Entries">choices known at the end</param>
/// <param name="TunedInWarmup">shapes timed during the warm-up steps</param>
/// <param name="TunedWhileMeasuring">shapes timed during the measured steps (0 unless a shape first appeared there)</param>
/// <param name="DifferFromRule">shapes timed in this run whose fastest candidate is not the rule's pick</param>
/// <param name="TuningMs">wall time spent timing candidates in this run</param>
public sealed record TuningSummary(string Mode, string? CacheFile, int Entries, long TunedInWarmup, long TunedWhileMeasuring, long DifferFromRule, double TuningMs);

public sealed record MsStats(double Median, double Min, double Max);

public sealed record KindTime(string Kind, double Ms, double Pct, double CallsPerStep);

public sealed record OpTime(string Op, string Kind, double Ms, double CallsPerStep);

/// <summary>Per-op-kind time of the profiled steps, per step. Σ kinds + host = profiled step time.</summary>
public sealed record StepBreakdown(
    int ProfiledSteps, string Timing, double ProfiledStepMs, IReadOnlyList<KindTime> Kinds, double KindsMs,
    double HostMs, double HostPct, IReadOnlyList<OpTime> TopOps);

public sealed record StepBenchResult
{
    public required string Task { get; init; }
    public required string Device { get; init; }
    public required string DeviceName { get; init; }
    public required string Config { get; init; }
    public required string Precision { get; init; }
    /// <summary>"labelled" or "all": the text rows the MLM head ran on (see <see cref="StepBenchOptions.MlmHeadRows"/>).</summary>
    public string MlmHeadRows { get; init; } = "labelled";
    public required int Batch { get; init; }
    public required int Steps { get; init; }
    public required int Warmup { get; init; }
    public required long Parameters { get; init; }
    /// <summary>Text tokens, visual tokens, image side.</summary>
    public required int TextTokens { get; init; }
    public required int VisualTokens { get; init; }
    public required int ImageSize { get; init; }
    public required MsStats MsPerStep { get; init; }
    public required double ImagesPerS { get; init; }
    /// <summary>Allocator high-water mark during the measured steps (bytes; block-rounded sizes, weights and optimizer state included).</summary>
    public required long PeakMemoryBytes { get; init; }
    public double PeakMemoryGib => PeakMemoryBytes / (double)(1L << 30);
    /// <summary>High-water mark of the bytes the storages asked for, before bucket rounding: the figure comparable to
    /// PyTorch's max_memory_allocated (which rounds to 512 bytes).</summary>
    public long PeakRequestedBytes { get; init; }
    /// <summary>Bytes the allocator held from the system at the end (live plus cached free blocks).</summary>
    public long ReservedBytes { get; init; }
    /// <summary>Kernel launches per step (CUDA; null on the CPU).</summary>
    public double? KernelLaunchesPerStep { get; init; }
    /// <summary>Allocator cache misses per step (requests that reached the device/system allocator).</summary>
    public required double DeviceAllocationsPerStep { get; init; }
    /// <summary>Host waits for the device per step (CUDA; null on the CPU, where every call is synchronous).</summary>
    public double? HostSyncsPerStep { get; init; }
    public double? DeviceToHostReadsPerStep { get; init; }
    public required double Loss { get; init; }
    public StepBreakdown? Breakdown { get; init; }
    /// <summary>CUDA only: the kernel tuner's work in this run (null on the CPU).</summary>
    public TuningSummary? Tuning { get; init; }
    public required string Date { get; init; }
    public string? LoadAverage { get; init; }
}

/// <summary>
/// <c>fashionvil bench step</c>: full FashionViL training steps (forward, backward, AdamW with the reference parameter
/// groups) at a config's sizes with random weights and random inputs, shaped like the PyTorch step
/// (<c>torch_fashionvil_step.py</c>): T text tokens (the config's masked_token_processor max_seq_length, 75), the grid of
/// the config's crop (49 tokens at 224²), ids in [200, V) with [CLS] first, the last third padded, MLM labels on
/// positions 1..11, MPFC on the first 8 of 49 cells.
/// </summary>
public static class StepBenchmark
{
    public static IReadOnlyList<string> Tasks { get; } = ["itc", "itm", "mlm", "mpfc", "icc", "pac"];
    public static IReadOnlyList<string> Precisions { get; } = ["fp32", "tf32", "bf16"];
    public static IReadOnlyList<string> MlmHeadRowsModes { get; } = ["labelled", "all"];

    /// <summary>"labelled" | "all" → <see cref="Model.MlmHeadRows"/>.</summary>
    public static MlmHeadRows ParseMlmHeadRows(string text) => text switch
    {
        "labelled" => Model.MlmHeadRows.Labelled,
        "all" => Model.MlmHeadRows.All,
        _ => throw new ArgumentException($"bench step: --mlm-head-rows '{text}' is not a mode (known: {string.Join(", ", MlmHeadRowsModes)})"),
    };

    public static Device ParseDevice(string text)
    {
        try { return PretrainSetup.ParseDevice(text); }
        catch (ConfigException) { throw new ArgumentException($"bench step: --device '{text}': expected cpu, cuda or cuda:N"); }
    }

    /// <summary>Checks the options; every error names the option and the bad value.</summary>
    public static void Validate(StepBenchOptions o)
    {
        if (!Tasks.Contains(o.Task)) throw new ArgumentException($"bench step: --task '{o.Task}' is not a task (known: {string.Join(", ", Tasks)})");
        if (o.Batch < 1) throw new ArgumentException($"bench step: --batch {o.Batch} must be at least 1");
        if (o.Steps < 1) throw new ArgumentException($"bench step: --steps {o.Steps} must be at least 1");
        if (o.Warmup < 0) throw new ArgumentException($"bench step: --warmup {o.Warmup} must be 0 or more");
        if (o.ProfileSteps < 0) throw new ArgumentException($"bench step: --profile-steps {o.ProfileSteps} must be 0 or more");
        if (!Precisions.Contains(o.Precision)) throw new ArgumentException($"bench step: --precision '{o.Precision}' is not a mode (known: {string.Join(", ", Precisions)})");
        ParseMlmHeadRows(o.MlmHeadRows);
        var dev = ParseDevice(o.Device);
        if (o.Tune is not null && KernelTuner.ParseMode(o.Tune, "bench step: --tune") == TuneMode.On && dev.IsCpu)
            throw new ArgumentException("bench step: --tune on picks CUDA kernels; it needs --device cuda");
        if (!File.Exists(o.Config)) throw new FileNotFoundException($"bench step: --config: file not found: {o.Config}", o.Config);
    }

    public static StepBenchResult Run(StepBenchOptions o, TextWriter? log = null)
    {
        Validate(o);
        var device = ParseDevice(o.Device);
        var cfg = FvConfig.Load(o.Config);
        var mc = PretrainSetup.ModelConfig(cfg);
        int t = cfg.GetInt("dataset_config.fashionall.processors.masked_token_processor.params.max_seq_length");
        int b = o.Batch, s = mc.ImageSize, gsz = mc.GridSize;
        var backend = Backends.Get(device);   // opens the device (or says why not) before any work

        VqVaeConfig? vc = null;
        if (o.Task == "mpfc")
        {
            vc = PretrainSetup.TokenizerConfig(cfg);
            if (vc.GridSize != mc.GridSide)
                throw new ArgumentException($"bench step: {o.Config}: the tokenizer's {vc.GridSize}×{vc.GridSize} grid does not match the image grid {mc.GridSide}×{mc.GridSide}");
        }
        var betas = cfg.GetDoubleList("optimizer.params.betas");
        var opt = new StepOptimizer(cfg.GetDouble("optimizer.params.lr"), cfg.GetDouble("optimizer.params.weight_decay"),
            cfg.GetDouble("model_config.fashionvil.lr_multiplier"), betas[0], betas[1], cfg.GetDouble("optimizer.params.eps"));
        using var runner = new StepRunner(mc, vc, o.Task, b, t, device, o.Seed, opt, ParseMlmHeadRows(o.MlmHeadRows));
        long parameters = runner.Parameters;
        log?.WriteLine($"bench step: {o.Task} on {device}, batch {b}, {parameters:N0} trainable parameters, T={t}, {gsz} visual tokens, {s}² images ({o.Config})" +
                       (o.Task == "mlm" ? $", MLM head on {o.MlmHeadRows} text rows" : ""));
        void Step() => runner.Step();

        using var precisionScope = MatMulPrecision.Use(MatMulPrecision.Parse(o.Precision, "--precision"));
        var cuda = device.IsCpu ? null : CudaRuntime.Get(device.Index);
        var savedMode = KernelTuner.ModeSetting;   // null: FVL_TUNE decides (not read here when --tune is given)
        if (o.Tune is not null) KernelTuner.Mode = KernelTuner.ParseMode(o.Tune, "bench step: --tune");
        try
        {
            var tune0 = cuda is null ? default : KernelTuner.Stats(cuda.Accelerator);
            for (int i = 0; i < o.Warmup; i++) Step();
            backend.Synchronize();
            var tune1 = cuda is null ? default : KernelTuner.Stats(cuda.Accelerator);
            var alloc = backend.Allocator;
            alloc.ResetPeak();
            var times = new double[o.Steps];
            long misses = 0;
            var counters = default(CudaCounters);
            for (int i = 0; i < o.Steps; i++)
            {
                var m0 = alloc.Stats;
                var c0 = cuda?.Counters ?? default;
                long t0 = Stopwatch.GetTimestamp();
                Step();
                var c1 = cuda?.Counters ?? default;
                var m1 = alloc.Stats;
                backend.Synchronize();
                times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                misses += (m1.Allocations - m1.CacheHits) - (m0.Allocations - m0.CacheHits);
                var d = c1 - c0;
                counters = new CudaCounters(counters.KernelLaunches + d.KernelLaunches, counters.HostSyncs + d.HostSyncs,
                    counters.DeviceToHostReads + d.DeviceToHostReads, counters.DriverAllocations + d.DriverAllocations, counters.DriverFrees + d.DriverFrees);
            }
            var memAfter = alloc.Stats;
            long peak = memAfter.Peak;
            var tune2 = cuda is null ? default : KernelTuner.Stats(cuda.Accelerator);

            StepBreakdown? breakdown = null;
            if (o.ProfileSteps > 0)
            {
                using var prof = OpProfiler.Install(device);
                double wall = 0;
                for (int i = 0; i < o.ProfileSteps; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    Step();
                    backend.Synchronize();
                    wall += Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    prof.Collect();
                }
                breakdown = Summarise(prof, o.ProfileSteps, wall);
            }
            double loss = runner.LastLoss;

            var sorted = times.Order().ToArray();
            double median = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : 0.5 * (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]);
            int n = o.Steps;
            return new StepBenchResult
            {
                Task = o.Task, Device = device.ToString(), DeviceName = DeviceName(device), Config = o.Config, Precision = o.Precision, MlmHeadRows = o.MlmHeadRows,
                Batch = b, Steps = n, Warmup = o.Warmup, Parameters = parameters, TextTokens = t, VisualTokens = gsz, ImageSize = s,
                MsPerStep = new MsStats(median, sorted[0], sorted[^1]), ImagesPerS = b / (median / 1000.0), PeakMemoryBytes = peak,
                PeakRequestedBytes = memAfter.PeakRequested, ReservedBytes = memAfter.Reserved,
                KernelLaunchesPerStep = cuda is null ? null : counters.KernelLaunches / (double)n,
                DeviceAllocationsPerStep = misses / (double)n,
                HostSyncsPerStep = cuda is null ? null : counters.HostSyncs / (double)n,
                DeviceToHostReadsPerStep = cuda is null ? null : counters.DeviceToHostReads / (double)n,
                Loss = loss, Breakdown = breakdown,
                Tuning = cuda is null ? null : new TuningSummary(KernelTuner.Mode == TuneMode.On ? "on" : "off",
                    KernelTuner.Mode == TuneMode.On ? KernelTuner.CachePathFor(cuda.Accelerator) : null, KernelTuner.Stats(cuda.Accelerator).Entries,
                    tune1.Tuned - tune0.Tuned, tune2.Tuned - tune1.Tuned, KernelTuner.Stats(cuda.Accelerator).DifferFromRule - tune0.DifferFromRule,
                    KernelTuner.Stats(cuda.Accelerator).TuningMs - tune0.TuningMs),
                Date = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture), LoadAverage = LoadAverage(),
            };
        }
        finally
        {
            KernelTuner.ModeSetting = savedMode;
        }
    }

    internal static StepBreakdown Summarise(OpProfiler prof, int steps, double wallMs)
    {
        double step = wallMs / steps;
        var byKind = prof.ByKind();
        var kinds = OpKinds.Reported.Select(k => new KindTime(OpKinds.Name(k), byKind[k].Ms / steps, step > 0 ? 100 * byKind[k].Ms / steps / step : 0, byKind[k].Calls / (double)steps)).ToList();
        double sum = kinds.Sum(k => k.Ms);
        var top = prof.ByOp.OrderByDescending(kv => kv.Value.Ms).Take(12)
            .Select(kv => new OpTime(kv.Key, OpKinds.Name(kv.Value.Kind), kv.Value.Ms / steps, kv.Value.Calls / (double)steps)).ToList();
        return new StepBreakdown(steps, prof.TimingMethod, step, kinds, sum, step - sum, step > 0 ? 100 * (step - sum) / step : 0, top);
    }

    /// <summary>Random inputs shaped like the PyTorch step, on <paramref name="device"/>.</summary>
    public static PretrainBatch MakeBatch(FashionViLConfig mc, int b, int t, Device device, ulong seed)
    {
        int s = mc.ImageSize, gsz = mc.GridSize, v = mc.Bert.VocabSize;
        var rng = new Random(unchecked((int)seed) ^ 0x5eed);
        var gen = new Generator(seed + 3);
        var ids = new long[b * t];
        var masked = new long[b * t];
        var mask = new long[b * t];
        var labels = new long[b * t];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < t; j++)
            {
                long id = j == 0 ? 101 : rng.NextInt64(Math.Min(200, v - 1), v);
                int k = i * t + j;
                ids[k] = id;
                mask[k] = j < t * 2 / 3 ? 1 : 0;
                bool lab = j >= 1 && j < 12;
                labels[k] = lab ? id : -1;
                masked[k] = lab ? 103 : id;
            }
        var attrs = new float[b * mc.NumAttributes];
        for (int i = 0; i < b; i++)
            for (int k = 0; k < 3; k++) attrs[i * mc.NumAttributes + rng.Next(mc.NumAttributes)] += 1f / 3;
        int cells = gsz == 49 ? 8 : Math.Max(1, (int)Math.Round(8.0 * gsz / 49));
        var imask = new long[b * gsz];
        for (int i = 0; i < b; i++) for (int c = 0; c < cells; c++) imask[i * gsz + c] = 1;
        return new PretrainBatch
        {
            Image = gen.Normal([b, 3, s, s], device: device),
            DvImage = gen.Normal([b, 3, s, s], device: device),
            InputIds = Tensor.FromArray(ids, [b, t], device),
            InputIdsMasked = Tensor.FromArray(masked, [b, t], device),
            InputMask = Tensor.FromArray(mask, [b, t], device),
            SegmentIds = Tensor.Zeros([b, t], DType.Int64, device),
            LmLabelIds = Tensor.FromArray(labels, [b, t], device),
            LmLabelIdsHost = device.IsCpu ? null : labels,
            AttributeLabels = Tensor.FromArray(attrs, [b, mc.NumAttributes], device),
            ImageMasks = Tensor.FromArray(imask, [b, gsz], device),
            ImageMasksHost = device.IsCpu ? null : imask,
            Ids = Enumerable.Range(0, b).Select(i => (long)i).ToArray(),
        };
    }

    private static string DeviceName(Device d)
    {
        if (!d.IsCpu)
        {
            var rt = CudaRuntime.Get(d.Index);
            return rt.IsEmulated ? $"ILGPU CPU accelerator (CUDA emulator; timings say nothing about a GPU)" : rt.Accelerator.Name;
        }
        string model = "cpu";
        try
        {
            var line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
            if (line is not null) model = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return $"{model}, {Environment.ProcessorCount} threads";
    }

    private static string? LoadAverage()
    {
        try { return File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : null; }
        catch (IOException) { return null; }
    }

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string ToJson(StepBenchResult r) => JsonSerializer.Serialize(r, Json);

    /// <summary>Writes the JSON atomically (temp file in the same folder, then rename).</summary>
    public static void WriteJson(string path, StepBenchResult r)
        => BenchFiles.WriteAtomically("bench step", path, ToJson(r));

    /// <summary>The human-readable report.</summary>
    public static string Format(StepBenchResult r)
    {
        var sb = new StringBuilder();
        var ci = CultureInfo.InvariantCulture;
        string rows = r.Task == "mlm" ? $"  mlm-head-rows {r.MlmHeadRows}" : "";
        sb.AppendLine(ci, $"task {r.Task}  device {r.Device} ({r.DeviceName})  precision {r.Precision}  batch {r.Batch}  config {r.Config}{rows}");
        sb.AppendLine(ci, $"  {r.Parameters:N0} trainable parameters; T={r.TextTokens} text + {r.VisualTokens} visual tokens, {r.ImageSize}² images; {r.Steps} steps after {r.Warmup} warm-up");
        sb.AppendLine(ci, $"  ms/step     median {r.MsPerStep.Median:F2}  (min {r.MsPerStep.Min:F2}, max {r.MsPerStep.Max:F2})");
        sb.AppendLine(ci, $"  images/s    {r.ImagesPerS:F1}");
        sb.AppendLine(ci, $"  peak memory {r.PeakMemoryGib:F3} GiB ({r.PeakMemoryBytes:N0} bytes, allocator high-water mark; requested before rounding " +
            $"{r.PeakRequestedBytes / (double)(1L << 30):F3} GiB; reserved {r.ReservedBytes / (double)(1L << 30):F3} GiB)");
        sb.AppendLine(ci, $"  per step    kernel launches {Opt(r.KernelLaunchesPerStep)}, allocations (cache misses) {r.DeviceAllocationsPerStep:0.##}, host syncs {Opt(r.HostSyncsPerStep)}, device→host reads {Opt(r.DeviceToHostReadsPerStep)}");
        sb.AppendLine(ci, $"  loss        {r.Loss:G6} (last step)");
        if (r.Tuning is { Mode: "on" } tu)
            sb.AppendLine(ci, $"  tuning      on: {tu.TunedInWarmup} shapes timed in warm-up, {tu.TunedWhileMeasuring} while measuring, {tu.DifferFromRule} away from the rule, " +
                $"{tu.TuningMs / 1000:F1} s; {tu.Entries} choices in {tu.CacheFile}");
        if (r.Breakdown is { } bd)
        {
            sb.AppendLine(ci, $"  breakdown over {bd.ProfiledSteps} profiled step(s), {bd.Timing}, {bd.ProfiledStepMs:F2} ms/step:");
            sb.AppendLine("    kind           ms/step      %   calls/step");
            foreach (var k in bd.Kinds) sb.AppendLine(ci, $"    {k.Kind,-12} {k.Ms,9:F2} {k.Pct,6:F1} {k.CallsPerStep,10:0.#}");
            sb.AppendLine(ci, $"    {"host/idle",-12} {bd.HostMs,9:F2} {bd.HostPct,6:F1}");
            sb.AppendLine("    top ops: " + string.Join(", ", bd.TopOps.Take(6).Select(x => string.Create(ci, $"{x.Op} {x.Ms:F2} ms ({x.CallsPerStep:0.#}×)"))));
        }
        if (r.LoadAverage is not null) sb.AppendLine(ci, $"  load average at the end: {r.LoadAverage}");
        return sb.ToString();

        static string Opt(double? v) => v is null ? "n/a" : v.Value.ToString("0.##", CultureInfo.InvariantCulture);
    }
}
