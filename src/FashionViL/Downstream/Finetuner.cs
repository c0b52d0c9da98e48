using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;
using FashionViL.Training;

namespace FashionViL.Downstream;

/// <summary>What a fine-tuning run (or an evaluation) leaves behind.</summary>
public sealed record FinetuneResult(string RunDirectory, long Steps, string? CurrentCheckpoint, string? BestCheckpoint,
    IReadOnlyDictionary<string, double>? LastVal, IReadOnlyDictionary<string, double>? Test, string? PlotPath);

/// <summary>
/// The generic fine-tuning loop for the downstream tasks (spec §4): <c>run_type</c> train | val | test | train_val;
/// pre-trained weights through <c>checkpoint.resume_pretrained</c> + <c>resume_file</c> + <c>pretrained_state_mapping</c>
/// (heads stay fresh), or a full resume (<c>checkpoint.resume</c> / <c>resume_file</c>); AdamW with the task's
/// parameter groups and the configured schedule; evaluation every <c>training.evaluation_interval</c> with a console table
/// and a JSON report; the best checkpoint on <c>training.early_stop.criteria</c>; atomic checkpoints; a stop on a
/// non-finite loss. With train_val the best checkpoint is evaluated on the test split at the end.
/// </summary>
public sealed class Finetuner<TBatch> where TBatch : IDisposable
{
    private readonly FvConfig _c;
    private readonly IFinetuneTask<TBatch> _task;
    private readonly TextWriter _out;

    public Finetuner(FvConfig config, IFinetuneTask<TBatch> task, TextWriter output)
    {
        _c = config; _task = task; _out = output;
    }

    public FinetuneResult Run(CancellationToken cancel = default)
    {
        var c = _c;
        var model = _task.Model;
        var runType = c.GetString("run_type");
        if (runType is not ("train" or "train_val" or "val" or "test"))
            throw new ConfigException($"run_type = '{runType}': expected train, val, test or train_val");
        var device = PretrainSetup.ParseDevice(c.GetString("env.device"));
        var runDir = Path.Combine(c.GetString("env.save_dir"), c.GetString("training.experiment_name"));
        Directory.CreateDirectory(runDir);
        Pretrainer.WriteAtomic(Path.Combine(runDir, Pretrainer.ConfigName), c.ToYaml());
        int seed = c.GetInt("training.seed");
        // The GEMM/conv operand precision (Tensors.MatMulPrecision) for everything this run computes.
        using var precision = MatMulPrecision.Use(MatMulPrecision.Parse(c.GetString("training.precision"), "training.precision"));
        var g = new Generator((ulong)seed + 11);

        // ---------------------------------------------------------------- weights
        var resumeFile = c.GetStringOrNull("checkpoint.resume_file");
        bool pretrained = c.GetBool("checkpoint.resume_pretrained");
        long step = 0;
        var start = default(LoaderPosition);
        double? best = null;
        TrainingState? resumeState = null;
        if (resumeFile is not null && pretrained)
            LoadPretrained(model, PretrainSetup.RequireFile(resumeFile, "checkpoint.resume_file"), c.GetStringMap("checkpoint.pretrained_state_mapping"), _out);
        else if (resumeFile is null && !(runType is "train" or "train_val" && c.GetBool("checkpoint.resume") && File.Exists(Path.Combine(runDir, Pretrainer.CurrentName))))
            BaseWeights.Load(c, model, _out);   // no FashionViL checkpoint: torchvision ResNet-50 / HF BERT, as the reference builds the model
        if (device != Device.Cpu) model.To(device);

        var (dataset, criterion) = ParseCriterion(c.GetString("training.early_stop.criteria"));
        if (dataset != _task.DatasetName)
            throw new ConfigException($"training.early_stop.criteria = '{c.GetString("training.early_stop.criteria")}' names dataset '{dataset}', but this task is '{_task.DatasetName}'");
        bool minimize = c.GetBool("training.early_stop.minimize");

        if (runType is "val" or "test")
        {
            if (resumeFile is not null && !pretrained) TrainingCheckpoint.Load(resumeFile, model, null);
            var m = Evaluate(runType, device, seed, 0, runDir);
            return new FinetuneResult(runDir, 0, null, null, runType == "val" ? m : null, runType == "test" ? m : null, null);
        }

        int batch = c.GetInt("training.batch_size");
        int micro = c.GetInt("training.update_batch_size");
        if (micro <= 0) micro = batch;
        if (batch <= 0 || _task.TrainCount < batch)
            throw new ConfigException($"training.batch_size {batch} must be positive and at most the {_task.TrainCount} training samples of {_task.DatasetName}");
        if (batch % micro != 0)
            throw new ConfigException($"training.batch_size ({batch}) must be a positive multiple of training.update_batch_size ({micro}): each update accumulates batch_size / update_batch_size micro-batches");
        var betas = c.GetDoubleList("optimizer.params.betas");
        if (c.GetString("optimizer.type") != "adam_w" || betas.Count != 2)
            throw new ConfigException("optimizer: fine-tuning uses optimizer.type adam_w with two betas (spec §4)");
        using var optimizer = new AdamW(_task.ParameterGroups(c.GetDouble("optimizer.params.lr"), c.GetDouble("optimizer.params.weight_decay"),
            c.GetDouble("model_config.fashionvil.lr_multiplier")), betas[0], betas[1], c.GetDouble("optimizer.params.eps"));
        var schedule = PretrainSetup.Schedule(c);
        if (resumeFile is not null && !pretrained)
        {
            resumeState = TrainingCheckpoint.Load(PretrainSetup.RequireFile(resumeFile, "checkpoint.resume_file"), model, optimizer);
        }
        else if (c.GetBool("checkpoint.resume") && File.Exists(Path.Combine(runDir, Pretrainer.CurrentName)))
        {
            resumeFile = Path.Combine(runDir, Pretrainer.CurrentName);
            resumeState = TrainingCheckpoint.Load(resumeFile, model, optimizer);
        }
        if (resumeState is not null)
        {
            step = resumeState.GlobalStep;
            resumeState.RestoreRng("task", g);
            start = new LoaderPosition((int)resumeState.DataPosition["epoch"], (int)resumeState.DataPosition["batch"]);
            if (resumeState.Metadata.TryGetValue("best", out var b)) best = double.Parse(b, CultureInfo.InvariantCulture);
            _out.WriteLine($"resumed from {resumeFile} at update {step} ({start})");
        }

        int maxUpdates = c.GetInt("training.max_updates");
        int logEvery = Math.Max(1, c.GetInt("training.log_interval"));
        int evalEvery = c.GetInt("training.evaluation_interval");
        int ckptEvery = c.GetInt("training.checkpoint_interval");
        int keep = c.GetInt("checkpoint.max_to_keep");
        using var log = new RunLog(runDir, resumeStep: step);
        var loaderOptions = new PrefetchLoaderOptions
        {
            BatchSize = batch, Shuffle = true, DropLast = true, Seed = seed,
            Workers = Math.Max(1, c.GetInt(c.Has($"dataset_config.{_task.DatasetName}.num_workers") ? $"dataset_config.{_task.DatasetName}.num_workers" : "dataset_config.fashionall.num_workers")),
            PinMemory = device != Device.Cpu,
        };
        // The loader's unit is the whole update (batch_size samples), so the data position in a checkpoint does not depend on
        // update_batch_size; each update's batch is built as batch_size / update_batch_size micro-batches.
        using var loader = new PrefetchLoader<MicroBatches<TBatch>>(_task.TrainCount, MicroBatches<TBatch>.Builder(_task.BuildTrainBatch, micro, loaderOptions), loaderOptions, start);
        _out.WriteLine($"fine-tuning {_task.DatasetName}: {_task.TrainCount:N0} training samples, batch {batch}" + (micro < batch ? $" ({batch / micro} micro-batches of {micro})" : "") +
                       $", {maxUpdates:N0} updates on {device}; run directory {runDir}");

        string? currentPath = null, bestPath = resumeState is not null && File.Exists(Path.Combine(runDir, Pretrainer.BestName)) ? Path.Combine(runDir, Pretrainer.BestName) : null;
        IReadOnlyDictionary<string, double>? lastVal = null;
        var clock = Stopwatch.StartNew(); long firstStep = step;
        double recentSum = 0; int recentN = 0; var logClock = Stopwatch.StartNew(); int samples = 0;

        void Save(string path)
        {
            var st = new TrainingState { GlobalStep = step, SchedulerStep = step, Config = c.ToYaml() };
            st.CaptureRng("task", g);
            st.DataPosition["epoch"] = loader.Position.Epoch;
            st.DataPosition["batch"] = loader.Position.Batch;
            if (best is { } bv) st.Metadata["best"] = bv.ToString("R", CultureInfo.InvariantCulture);
            st.Metadata["task"] = _task.DatasetName;
            TrainingCheckpoint.Save(path, model, optimizer, st);
        }

        model.Train();
        while (step < maxUpdates)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = Tensor.Scope();
            schedule.Apply(optimizer, (int)step);
            using var b = loader.Next();
            double value = AccumulateGradients(_task, b, device, g);
            if (!double.IsFinite(value))
            {
                var last = currentPath ?? bestPath;
                throw new TrainingDivergedException($"update {step + 1}: {_task.DatasetName} gave a non-finite loss ({value}); stopped without saving. " +
                    (last is not null ? $"The last good checkpoint is {last}." : "No checkpoint had been written yet."));
            }
            optimizer.Step();
            optimizer.ZeroGrad();
            step++;
            samples += batch;
            recentSum += value; recentN++;
            log.Add(new LogRecord("train", step, new Dictionary<string, double>
            {
                ["loss"] = value, ["lr"] = optimizer.Groups.Min(x => x.Lr), ["lr_max"] = optimizer.Groups.Max(x => x.Lr), ["elapsed_s"] = clock.Elapsed.TotalSeconds,
            }, _task.DatasetName));
            if (step % logEvery == 0 || step == maxUpdates)
            {
                double perStep = clock.Elapsed.TotalSeconds / Math.Max(1, step - firstStep);
                _out.WriteLine($"{Pretrainer.Bar(step, maxUpdates)} {step,6}/{maxUpdates} | loss {recentSum / recentN:F4} | lr {optimizer.Groups.Min(x => x.Lr):0.0e+0}–{optimizer.Groups.Max(x => x.Lr):0.0e+0} | " +
                               $"{samples / Math.Max(1e-9, logClock.Elapsed.TotalSeconds),6:F1} samples/s | ETA {Pretrainer.Fmt(TimeSpan.FromSeconds(perStep * (maxUpdates - step)))}");
                recentSum = 0; recentN = 0; samples = 0; logClock.Restart();
            }
            if (runType == "train_val" && evalEvery > 0 && (step % evalEvery == 0 || step == maxUpdates))
            {
                lastVal = Evaluate("val", device, seed, step, runDir);
                log.Add(new LogRecord("eval", step, lastVal.ToDictionary(kv => kv.Key, kv => kv.Value)));
                if (!lastVal.TryGetValue(criterion, out var crit))
                    throw new ConfigException($"training.early_stop.criteria: {_task.DatasetName} reports no metric '{criterion}' (it reports {string.Join(", ", lastVal.Keys)})");
                if (double.IsFinite(crit) && (best is null || (minimize ? crit < best : crit > best)))
                {
                    best = crit;
                    bestPath = Path.Combine(runDir, Pretrainer.BestName);
                    Save(bestPath);
                    _out.WriteLine($"  new best {dataset}/{criterion} = {100 * crit:F2} → {bestPath}");
                }
                model.Train();
            }
            if ((ckptEvery > 0 && step % ckptEvery == 0) || step == maxUpdates)
            {
                currentPath = Path.Combine(runDir, Pretrainer.CurrentName);
                Save(currentPath);
                if (ckptEvery > 0 && step % ckptEvery == 0 && keep > 0) Pretrainer.KeepPeriodic(runDir, currentPath, step, keep);
            }
        }

        var plot = log.Records.Count > 0 ? TrainingPlot.Save(log.Records, Path.Combine(runDir, Pretrainer.PlotName), c.GetString("training.experiment_name")) : null;
        IReadOnlyDictionary<string, double>? test = null;
        if (runType == "train_val")
        {
            if (bestPath is not null)
            {
                TrainingCheckpoint.Load(bestPath, model, null);
                _out.WriteLine($"test split with the best checkpoint ({bestPath}):");
            }
            test = Evaluate("test", device, seed, step, runDir);
        }
        return new FinetuneResult(runDir, step, currentPath, bestPath, lastVal, test, plot);
    }

    /// <summary>
    /// The forward and backward passes of one update: each micro-batch's mean loss is scaled by its share of the update's
    /// samples present (n_i / Σn, see <see cref="MicroBatches{TBatch}.Sizes"/>: under the Skip policy micro-batches can be
    /// short; n_i / Σn = 1 / k for k equal micro-batches — MMF's <c>extract_loss(report, loss_divisor)</c> with
    /// <c>update_frequency</c> = k) and back-propagated, so the parameters' gradients add up to the gradient of the mean loss
    /// over the whole update for a loss without batch-coupled terms. Dropout draws follow <paramref name="g"/> micro-batch by
    /// micro-batch. Returns the update's loss (Σ n_i/Σn · loss_i), or the first non-finite micro-batch loss (nothing of that
    /// micro-batch is back-propagated). Gradients are accumulated into the existing ones: the caller zeroes them.
    /// </summary>
    public static double AccumulateGradients(IFinetuneTask<TBatch> task, MicroBatches<TBatch> batch, Device device, Generator g)
    {
        double total = 0;
        for (int i = 0; i < batch.Parts.Count; i++)
        {
            var loss = task.Loss(batch.Parts[i], device, g);
            double value = loss.Item();
            if (!double.IsFinite(value)) return value;
            if (batch.Parts.Count == 1) { loss.Backward(); return value; }
            double w = (double)batch.Sizes[i] / batch.Total;
            total += w * value;
            using var scaled = loss * w;
            scaled.Backward();
        }
        return total;
    }

    private IReadOnlyDictionary<string, double> Evaluate(string split, Device device, int seed, long step, string runDir)
    {
        var sw = Stopwatch.StartNew();
        _task.Model.Eval();
        var m = _task.Evaluate(split, device, seed);
        _out.WriteLine($"  {_task.DatasetName} {split} @ {step} ({sw.Elapsed.TotalSeconds:F1} s)");
        foreach (var (k, v) in m.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            _out.WriteLine($"    {k,-36} {100 * v,7:F2}");
        var report = new Dictionary<string, object>
        {
            ["dataset"] = _task.DatasetName, ["split"] = split, ["step"] = step,
            ["metrics"] = m.ToDictionary(kv => kv.Key, kv => kv.Value),
        };
        Pretrainer.WriteAtomic(Path.Combine(runDir, $"report_{split}.json"), JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
        return m;
    }

    /// <summary>
    /// Loads the keys of a pre-trained checkpoint (ours, a plain safetensors state dict, or the reference's .pth) whose names
    /// start with a source prefix of <paramref name="mapping"/>, renamed to the target prefix; everything else keeps its fresh
    /// init. An empty mapping loads every key whose name and shape fit. Fails when nothing matches.
    /// </summary>
    public static int LoadPretrained(Module model, string path, IReadOnlyDictionary<string, string?> mapping, TextWriter log)
    {
        Dictionary<string, Tensor> dict;
        if (path.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
        {
            var f = TrainingCheckpoint.Read(path);
            dict = f.Model;
        }
        else if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) dict = SafeTensors.Load(path);
        else dict = CheckpointMapping.Apply(TorchCheckpoint.Load(path), CheckpointMappings.MmfFashionViL(), path).Tensors;
        var own = model.StateDict();
        var selected = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, t) in dict)
        {
            string? target = null;
            if (mapping.Count == 0) target = k;
            else
                foreach (var (src, dst) in mapping)
                    if (k == src || k.StartsWith(src + ".", StringComparison.Ordinal)) { target = (dst ?? src) + k[src.Length..]; break; }
            if (target is null || !own.TryGetValue(target, out var mine)) continue;
            if (!mine.Shape.SequenceEqual(t.Shape))
                throw new InvalidDataException($"pre-trained checkpoint '{path}': '{k}' has shape {t.ShapeString} but the model's '{target}' is {mine.ShapeString} (do the model sizes in the config match the pre-trained model?)");
            selected[target] = t;
        }
        if (selected.Count == 0)
            throw new InvalidDataException($"pre-trained checkpoint '{path}': no key matches checkpoint.pretrained_state_mapping ({string.Join(", ", mapping.Select(kv => kv.Key + " → " + kv.Value))}); its first keys are {string.Join(", ", dict.Keys.Take(4))}");
        model.LoadStateDict(selected, strict: false);
        log.WriteLine($"loaded {selected.Count} pre-trained tensors from {path}" + (mapping.Count > 0 ? $" ({string.Join(", ", mapping.Keys)})" : "") + "; the rest keeps its fresh init");
        foreach (var t in dict.Values) t.Dispose();
        return selected.Count;
    }

    internal static (string Dataset, string Metric) ParseCriterion(string criteria)
    {
        int slash = criteria.IndexOf('/');
        if (slash <= 0 || slash == criteria.Length - 1)
            throw new ConfigException($"training.early_stop.criteria = '{criteria}': expected <dataset>/<metric>[/<key>]");
        return (criteria[..slash], criteria[(slash + 1)..]);
    }
}
