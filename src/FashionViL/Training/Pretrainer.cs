using System.Diagnostics;
using System.Globalization;
using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Datasets;
using FashionViL.Data.Loading;
using FashionViL.Eval;
using FashionViL.Model;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Models;
using FashionViL.Nn.Optim;

namespace FashionViL.Training;

/// <summary>A training run stopped because a loss was NaN or infinite; the last good checkpoint is untouched.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>What a finished (or stopped) pre-training run leaves behind.</summary>
public sealed record PretrainResult(
    string RunDirectory, long Steps, string? CurrentCheckpoint, string? BestCheckpoint, string? PlotPath,
    RetrievalResult? LastGeneral, RetrievalResult? LastKaleido, IReadOnlyDictionary<string, (double First, double Last, int Count)> TaskLosses,
    double SecondsPerStep);

/// <summary>
/// FashionViL pre-training (spec §2, §6): one task per update drawn with the configured ratios, AdamW with the
/// reference parameter groups and warm-up + multi-step schedule, gradient accumulation, periodic ITC retrieval
/// evaluation, atomic best/current/periodic checkpoints, exact resume, and a stop on a non-finite loss.
/// </summary>
public sealed class Pretrainer
{
    private readonly FvConfig _c;
    private readonly TextWriter _out;

    /// <summary>Test hook: runs before each update with the model and the update index about to run.</summary>
    internal Action<FashionViLPretraining, long>? BeforeUpdate { get; set; }

    public Pretrainer(FvConfig config, TextWriter output)
    {
        _c = config;
        _out = output;
    }

    /// <summary>Files in the run directory.</summary>
    public const string CurrentName = "current.ckpt", BestName = "best.ckpt", ConfigName = "config.yaml", PlotName = "plot.png";

    public PretrainResult Run(CancellationToken cancel = default)
    {
        var c = _c;
        var runType = c.GetString("run_type");
        if (runType is not ("train" or "train_val" or "val" or "test"))
            throw new ConfigException($"run_type = '{runType}': expected train, val, test or train_val");
        var device = PretrainSetup.ParseDevice(c.GetString("env.device"));
        var runDir = Path.Combine(c.GetString("env.save_dir"), c.GetString("training.experiment_name"));
        Directory.CreateDirectory(runDir);
        WriteAtomic(Path.Combine(runDir, ConfigName), c.ToYaml());

        long seed = c.GetInt("training.seed");
        // The GEMM/conv operand precision (Tensors.MatMulPrecision) for everything this run computes.
        using var precision = MatMulPrecision.Use(MatMulPrecision.Parse(c.GetString("training.precision"), "training.precision"));
        var mc = PretrainSetup.ModelConfig(c);
        var gModel = new Generator((ulong)seed);
        var gTask = new Generator((ulong)seed + 1);
        var gInit = new Generator((ulong)seed + 2);
        var sw = Stopwatch.StartNew();
        // gModel draws the fresh init, then dropout masks and the ITM/MVC choices; the VQ-VAE's init has its own stream.
        var model = PretrainSetup.BuildModel(c, mc, gModel, _out);
        var tokenizer = PretrainSetup.BuildTokenizer(c, mc, gInit, _out);
        if (device != Device.Cpu) { model.To(device); tokenizer?.To(device); }
        _out.WriteLine($"model: {Count(model):N0} parameters ({mc.Bert.NumHiddenLayers}-layer BERT {mc.Bert.HiddenSize}, ResNet blocks [{string.Join(",", mc.ResNet.Blocks)}] width {mc.ResNet.BaseWidth}, {mc.ImageSize}px → {mc.GridSize} visual tokens) on {device}, built in {sw.Elapsed.TotalSeconds:F1} s");

        var valProducts = runType is "train" ? null : PretrainSetup.Products(c, "val");
        int maxEval = c.GetInt("evaluation.max_items");
        if (valProducts is not null && maxEval > 0 && valProducts.Count > maxEval) valProducts = valProducts.Take(maxEval).ToList();

        if (runType is "val" or "test")
        {
            var data0 = new PretrainData(c, valProducts!, mc.GridSide, seed);
            var (g0, k0) = Evaluate(model, data0, valProducts!, device, seed);
            PrintEval(0, g0, k0);
            return new PretrainResult(runDir, 0, null, null, null, g0, k0, new Dictionary<string, (double, double, int)>(), 0);
        }

        var train = PretrainSetup.Products(c, "train");
        var data = new PretrainData(c, train, mc.GridSide, seed);
        var evalData = valProducts is null ? null : new PretrainData(c, valProducts, mc.GridSide, seed);
        int batch = c.GetInt("training.batch_size");
        int micro = c.GetInt("training.update_batch_size");
        if (micro <= 0) micro = batch;
        if (batch <= 0 || batch % micro != 0)
            throw new ConfigException($"training.batch_size ({batch}) must be a positive multiple of training.update_batch_size ({micro})");
        if (mc.Tasks.Contains("mpfc") && micro % 8 != 0 && micro > 8)
            _out.WriteLine($"note: the reference runs the VQ-VAE in chunks of 8 and needs batches that are multiples of 8; here any size works");
        if (train.Count < batch)
            throw new ConfigException($"training.batch_size {batch} is larger than the training set ({train.Count} products)");

        var optimizer = PretrainSetup.Optimizer(c, model);
        var schedule = PretrainSetup.Schedule(c);
        var sampler = new TaskSampler(mc.Tasks, mc.TaskProbabilities);
        int maxUpdates = c.GetInt("training.max_updates");
        int logEvery = Math.Max(1, c.GetInt("training.log_interval"));
        int evalEvery = c.GetInt("training.evaluation_interval");
        int ckptEvery = c.GetInt("training.checkpoint_interval");
        int keep = c.GetInt("checkpoint.max_to_keep");
        var (criterionMetric, criterionKey) = ParseCriterion(c.GetString("training.early_stop.criteria"));
        bool minimize = c.GetBool("training.early_stop.minimize");

        // ---------------------------------------------------------------- resume
        long step = 0;
        var start = default(LoaderPosition);
        double? best = null;
        var resumeFile = c.GetStringOrNull("checkpoint.resume_file");
        if (resumeFile is null && c.GetBool("checkpoint.resume") && File.Exists(Path.Combine(runDir, CurrentName)))
            resumeFile = Path.Combine(runDir, CurrentName);
        if (resumeFile is not null)
        {
            PretrainSetup.RequireFile(resumeFile, "checkpoint.resume_file");
            var state = TrainingCheckpoint.Load(resumeFile, model, optimizer);
            step = state.GlobalStep;
            state.RestoreRng("model", gModel);
            state.RestoreRng("task", gTask);
            start = new LoaderPosition((int)state.DataPosition["epoch"], (int)state.DataPosition["batch"]);
            if (state.Metadata.TryGetValue("best", out var b)) best = double.Parse(b, CultureInfo.InvariantCulture);
            _out.WriteLine($"resumed from {resumeFile} at update {step} ({start})");
        }

        using var log = new RunLog(runDir, resumeStep: step);
        using var loader = new PrefetchLoader<PretrainBatch>(train.Count, data.Build, new PrefetchLoaderOptions
        {
            BatchSize = batch, Shuffle = true, DropLast = true, Seed = seed,
            Workers = Math.Max(1, c.GetInt("dataset_config.fashionall.num_workers")),
            OnBadSample = c.GetBool("dataset_config.fashionall.skip_bad_files") ? BadSamplePolicy.Replace : BadSamplePolicy.Throw,
            PinMemory = device != Device.Cpu,
        }, start);

        _out.WriteLine($"training on {train.Count:N0} products, batch {batch}" + (micro < batch ? $" ({batch / micro} micro-batches of {micro})" : "") +
                       $", {maxUpdates:N0} updates, tasks {string.Join(" ", mc.Tasks.Zip(mc.TaskProbabilities, (t, p) => $"{t}:{p:0.##}"))}; run directory {runDir}" +
                       (MatMulPrecision.Current != Precision.Fp32 ? $"; GEMM operands in {MatMulPrecision.Current.Name()}" : ""));
        var taskLoss = new Dictionary<string, (double First, double Last, int Count)>(StringComparer.Ordinal);
        var recent = new Dictionary<string, (double Sum, int N)>(StringComparer.Ordinal);
        RetrievalResult? lastGeneral = null, lastKaleido = null;
        string? bestPath = File.Exists(Path.Combine(runDir, BestName)) && resumeFile is not null ? Path.Combine(runDir, BestName) : null;
        string? currentPath = null;
        var clock = Stopwatch.StartNew();
        long firstStep = step;
        double samplesSinceLog = 0; var logClock = Stopwatch.StartNew();

        void SaveCheckpoint(string path)
        {
            var st = new TrainingState { GlobalStep = step, SchedulerStep = step, Config = c.ToYaml() };
            st.CaptureRng("model", gModel).CaptureRng("task", gTask);
            st.DataPosition["epoch"] = loader.Position.Epoch;
            st.DataPosition["batch"] = loader.Position.Batch;
            if (best is { } bv) st.Metadata["best"] = bv.ToString("R", CultureInfo.InvariantCulture);
            st.Metadata["experiment"] = c.GetString("training.experiment_name");
            TrainingCheckpoint.Save(path, model, optimizer, st);
        }

        while (step < maxUpdates)
        {
            cancel.ThrowIfCancellationRequested();
            BeforeUpdate?.Invoke(model, step + 1);
            using var scope = Tensor.Scope();
            var task = sampler.Sample(gTask);
            schedule.Apply(optimizer, (int)step);
            using var full = loader.Next();
            double lossSum = 0;
            for (int m0 = 0; m0 < full.Size; m0 += micro)
            {
                int n = Math.Min(micro, full.Size - m0);
                using var mb = Slice(full, m0, n, device);
                Tensor? vq = null;
                if (task == "mpfc")
                {
                    using var _ = GradMode.NoGrad();
                    vq = tokenizer!.Tokenize(mb.Image);
                }
                var loss = model.Forward(task, mb, vq, gModel);
                // Backward is enqueued before the loss is read: reading it first would make the host wait for the forward
                // and leave a GPU idle while backward's first kernels are enqueued. The check still comes before any
                // parameter changes (the optimizer steps below), so a non-finite loss stops the run with nothing updated.
                if (n == full.Size) loss.Backward();
                else { using var scaled = loss * ((double)n / full.Size); scaled.Backward(); }
                double value = loss.Item();
                if (!double.IsFinite(value))
                {
                    var last = currentPath ?? bestPath;
                    throw new TrainingDivergedException($"update {step + 1}: task '{task}' gave a non-finite loss ({value}); stopped without saving. " +
                        (last is not null ? $"The last good checkpoint is {last}." : "No checkpoint had been written yet."));
                }
                lossSum += value * n / full.Size;
                vq?.Dispose();
            }
            optimizer.Step();
            optimizer.ZeroGrad();
            step++;
            samplesSinceLog += full.Size;

            taskLoss[task] = taskLoss.TryGetValue(task, out var tl) ? (tl.First, lossSum, tl.Count + 1) : (lossSum, lossSum, 1);
            recent[task] = recent.TryGetValue(task, out var r) ? (r.Sum + lossSum, r.N + 1) : (lossSum, 1);
            double lr = optimizer.Groups[0].Lr;
            log.Add(new LogRecord("train", step, new Dictionary<string, double>
            {
                ["loss"] = lossSum, ["lr"] = optimizer.Groups.Min(g => g.Lr), ["lr_max"] = optimizer.Groups.Max(g => g.Lr),
                ["samples_per_s"] = full.Size / Math.Max(1e-9, logClock.Elapsed.TotalSeconds / Math.Max(1, samplesSinceLog / full.Size)),
                ["elapsed_s"] = clock.Elapsed.TotalSeconds,
            }, task));
            if (step % logEvery == 0 || step == maxUpdates)
            {
                double rate = samplesSinceLog / Math.Max(1e-9, logClock.Elapsed.TotalSeconds);
                double perStep = clock.Elapsed.TotalSeconds / Math.Max(1, step - firstStep);
                var eta = TimeSpan.FromSeconds(perStep * (maxUpdates - step));
                var avg = string.Join(" ", recent.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => $"{k.Key} {k.Value.Sum / k.Value.N:F3}"));
                _out.WriteLine($"{Bar(step, maxUpdates)} {step,6}/{maxUpdates} | {avg} | lr {optimizer.Groups.Min(g => g.Lr):0.0e+0}–{optimizer.Groups.Max(g => g.Lr):0.0e+0} | {rate,6:F1} samples/s | ETA {Fmt(eta)}");
                recent.Clear(); samplesSinceLog = 0; logClock.Restart();
            }
            if (evalData is not null && evalEvery > 0 && (step % evalEvery == 0 || step == maxUpdates))
            {
                (lastGeneral, lastKaleido) = Evaluate(model, evalData, valProducts!, device, seed);
                var values = new Dictionary<string, double>(StringComparer.Ordinal);
                foreach (var (k, v) in lastGeneral) values["r@k_general/" + k] = v;
                foreach (var (k, v) in lastKaleido) values["r@k_kaleido/" + k] = v;
                log.Add(new LogRecord("eval", step, values));
                PrintEval(step, lastGeneral, lastKaleido);
                var crit = (criterionMetric == "r@k_kaleido" ? lastKaleido : lastGeneral).GetValueOrDefault(criterionKey, double.NaN);
                if (double.IsFinite(crit) && (best is null || (minimize ? crit < best : crit > best)))
                {
                    best = crit;
                    bestPath = Path.Combine(runDir, BestName);
                    SaveCheckpoint(bestPath);
                    _out.WriteLine($"  new best {criterionMetric}/{criterionKey} = {100 * crit:F2} → {bestPath}");
                }
            }
            if ((ckptEvery > 0 && step % ckptEvery == 0) || step == maxUpdates)
            {
                currentPath = Path.Combine(runDir, CurrentName);
                SaveCheckpoint(currentPath);
                if (ckptEvery > 0 && step % ckptEvery == 0 && keep > 0) KeepPeriodic(runDir, currentPath, step, keep);
            }
        }

        if (loader.SkippedCount > 0)
            _out.WriteLine($"skipped {loader.SkippedCount} unreadable image file(s) (dataset_config.fashionall.skip_bad_files), e.g. {string.Join(", ", loader.SkippedPaths.Take(3))}");
        if (!device.IsCpu && Kernels.Cuda.KernelTuner.Mode == Kernels.Cuda.TuneMode.On)
        {
            var ts = Kernels.Cuda.KernelTuner.Stats(Kernels.Cuda.CudaRuntime.Get(device.Index).Accelerator);
            _out.WriteLine($"kernel tuning (FVL_TUNE): {ts.Tuned} shape(s) timed in this run ({ts.TuningMs / 1000:F1} s), {ts.DifferFromRule} pick(s) away " +
                           $"from the rules, {ts.Entries} choices in {ts.CacheFile}{(ts.SaveError is null ? "" : " (not written: kept in memory only)")}");
        }
        var plot = log.Records.Count > 0 ? TrainingPlot.Save(log.Records, Path.Combine(runDir, PlotName), c.GetString("training.experiment_name")) : null;
        double secPerStep = clock.Elapsed.TotalSeconds / Math.Max(1, step - firstStep);
        return new PretrainResult(runDir, step, currentPath, bestPath, plot, lastGeneral, lastKaleido, taskLoss, secPerStep);
    }

    /// <summary>ITC retrieval on the validation products: r@k_general (full gallery) and r@k_kaleido (1 + 100 candidates).</summary>
    public static (RetrievalResult General, RetrievalResult Kaleido) Evaluate(FashionViLPretraining model, PretrainData data,
        IReadOnlyList<ProductRecord> products, Device device, long seed, int batch = 64)
    {
        bool wasTraining = model.IsTraining;
        model.Eval();
        try
        {
            var imgs = new List<Tensor>(); var txts = new List<Tensor>();
            for (int i = 0; i < products.Count; i += batch)
            {
                var chunk = products.Skip(i).Take(batch).ToList();
                var (im, ids, seg, mask) = data.BuildEval(chunk);
                using (im) using (ids) using (seg) using (mask)
                {
                    using var imD = im.To(device); using var idsD = ids.To(device); using var segD = seg.To(device); using var maskD = mask.To(device);
                    using var ei = model.EmbedImages(imD);
                    using var et = model.EmbedTexts(idsD, segD, maskD);
                    imgs.Add(ei.To(Device.Cpu)); txts.Add(et.To(Device.Cpu));
                }
            }
            using var allI = Ops.Cat(imgs.ToArray(), 0);
            using var allT = Ops.Cat(txts.ToArray(), 0);
            foreach (var t in imgs.Concat(txts)) t.Dispose();
            var ids2 = products.Select(p => p.Id).ToArray();
            var subs = products.Select(p => (long)(p.SubcategoryId ?? p.CategoryId ?? 0)).ToArray();
            return (RetrievalMetrics.General(allI, ids2, allT, ids2),
                RetrievalMetrics.Kaleido(allI, ids2, subs, allT, ids2, subs, (int)seed));
        }
        finally { if (wasTraining) model.Train(); }
    }

    private void PrintEval(long step, RetrievalResult g, RetrievalResult k)
    {
        _out.WriteLine($"  eval @ {step}: r@k_general  i2t R@1/5/10 {P(g, "i2t")}  t2i {P(g, "t2i")}  avg {100 * g["avg"]:F1}");
        _out.WriteLine($"              r@k_kaleido  i2t R@1/5/10 {P(k, "i2t")}  t2i {P(k, "t2i")}  avg {100 * k["avg"]:F1}");
        static string P(RetrievalResult r, string d) => $"{100 * r[d + "_r@1"]:F1}/{100 * r[d + "_r@5"]:F1}/{100 * r[d + "_r@10"]:F1}";
    }

    private static PretrainBatch Slice(PretrainBatch b, int start, int n, Device device)
    {
        Tensor S(Tensor t)
        {
            using var view = t.Narrow(0, start, n);
            return view.To(device);
        }
        return new PretrainBatch
        {
            Image = S(b.Image), DvImage = S(b.DvImage), InputIds = S(b.InputIds), InputIdsMasked = S(b.InputIdsMasked),
            InputMask = S(b.InputMask), SegmentIds = S(b.SegmentIds), LmLabelIds = S(b.LmLabelIds),
            AttributeLabels = S(b.AttributeLabels), ImageMasks = S(b.ImageMasks), Ids = b.Ids[start..(start + n)],
            LmLabelIdsHost = device.IsCpu ? null : HostLabels(b.LmLabelIds, start, n),
            ImageMasksHost = device.IsCpu ? null : HostLabels(b.ImageMasks, start, n),
        };
    }

    private static long[] HostLabels(Tensor labels, int start, int n)
    {
        using var view = labels.Narrow(0, start, n);
        return view.ToArray<long>();
    }

    internal static (string Metric, string Key) ParseCriterion(string criteria)
    {
        var parts = criteria.Split('/');
        if (parts.Length < 2 || parts[^2] is not ("r@k_general" or "r@k_kaleido"))
            throw new ConfigException($"training.early_stop.criteria = '{criteria}': expected <dataset>/r@k_general/<key> or <dataset>/r@k_kaleido/<key>");
        return (parts[^2], parts[^1]);
    }

    private static long Count(FashionViLPretraining m) => m.NamedParameters().Sum(p => (long)p.Tensor.Numel);

    /// <summary>Copies the current checkpoint to model_&lt;step&gt;.ckpt (atomically) and keeps the newest <paramref name="keep"/>.</summary>
    internal static void KeepPeriodic(string runDir, string currentPath, long step, int keep)
    {
        var final = Path.Combine(runDir, $"model_{step}.ckpt");
        File.Copy(currentPath, final + ".tmp", overwrite: true);
        File.Move(final + ".tmp", final, overwrite: true);
        foreach (var old in Directory.GetFiles(runDir, "model_*.ckpt")
                     .Select(p => (p, s: long.TryParse(Path.GetFileNameWithoutExtension(p)[6..], out var v) ? v : -1))
                     .Where(x => x.s >= 0).OrderByDescending(x => x.s).Skip(keep))
            File.Delete(old.p);
    }

    internal static string Bar(long step, long total)
    {
        int w = 20, filled = (int)(w * step / Math.Max(1, total));
        return "[" + new string('#', filled) + new string('.', w - filled) + "]";
    }

    internal static string Fmt(TimeSpan t) => t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" : $"{t.Minutes}m{t.Seconds:00}s";

    internal static void WriteAtomic(string path, string text)
    {
        var tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}
