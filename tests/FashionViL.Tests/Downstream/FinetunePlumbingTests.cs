using FashionViL.Config;
using FashionViL.Data.Loading;
using FashionViL.Downstream;
using FashionViL.Downstream.FashionGen;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Synth;
using FashionViL.Tests.Downstream.FashionGen;
using FashionViL.Tests.Downstream.FashionIq;
using FashionViL.Tests.Downstream.Ocir;

namespace FashionViL.Tests.Downstream;

/// <summary>
/// Fine-tuning plumbing on generated data with micro models: bitwise resume of the FashionIQ and OCIR tasks, gradient
/// accumulation (<c>training.update_batch_size</c>), and resume with accumulation.
/// </summary>
[NonParallelizable]
public class FinetunePlumbingTests
{
    private static string _data = "";
    private string _save = "";

    [OneTimeSetUp]
    public static void MakeData()
    {
        _data = Path.Combine(Path.GetTempPath(), "fv-ftplumb-data-" + Guid.NewGuid().ToString("N"));
        SyntheticDatasets.Generate(new SynthOptions(_data, 48, 7, 48, 0));
    }

    [OneTimeTearDown]
    public static void DropData() { if (Directory.Exists(_data)) Directory.Delete(_data, true); }

    [SetUp] public void SetUp() => _save = Path.Combine(Path.GetTempPath(), "fv-ftplumb-save-" + Guid.NewGuid().ToString("N"));
    [TearDown] public void TearDown() { if (Directory.Exists(_save)) Directory.Delete(_save, true); }

    private static string[] Run(string save, string experiment, string criteria, int batch, int updates, params string[] extra) =>
    [
        $"env.save_dir={save}", "run_type=train", $"training.experiment_name={experiment}", $"training.batch_size={batch}",
        $"training.max_updates={updates}", "training.checkpoint_interval=1", "training.log_interval=1", "training.evaluation_interval=0",
        $"training.early_stop.criteria={criteria}", "checkpoint.resume_pretrained=false", "scheduler.params.use_warmup=false",
        "optimizer.params.lr=1e-3", .. extra,
    ];

    /// <summary>Smaller than the task tests' micro models (seconds per test): ResNet width 4, 32-px images (1 visual token), 16 tokens.</summary>
    private static readonly string[] Smaller =
    [
        "model_config.fashionvil.image_encoder.params.base_width=4",
        "dataset_config.fashiongen.processors.image_processor.resize=36", "dataset_config.fashiongen.processors.image_processor.crop=32",
        "dataset_config.fashiongen.processors.text_processor.max_seq_length=16", "dataset_config.fashiongen.num_workers=1",
        "dataset_config.fashioniq.processors.image_processor.size=32", "dataset_config.fashioniq.num_workers=1",
        "dataset_config.fashioniq.processors.text_processor.params.max_seq_length=16",
    ];

    private static FvConfig Scr(params string[] extra) => FashionGenTaskTests.Micro(_data, "classification", [.. Smaller, .. extra]);

    private static Dictionary<string, float[]> Weights(string ckpt)
    {
        using var f = TrainingCheckpoint.Read(ckpt);
        return f.Model.Where(kv => kv.Value.DType == DType.Float32).ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>());
    }

    /// <summary>Rewrites a checkpoint's training state (e.g. to undo what resume must restore).</summary>
    private static void Tamper(string ckpt, Action<TrainingState> edit)
    {
        var tmp = ckpt + ".edit";
        using (var f = TrainingCheckpoint.Read(ckpt))
        {
            edit(f.State);
            TrainingCheckpoint.Save(tmp, f.Model, f.Optimizer, f.State);
        }
        File.Move(tmp, ckpt, overwrite: true);
    }

    /// <summary>
    /// N + N updates (N = 2) with a resume in between against 2N straight updates, through <see cref="DownstreamTasks.Run"/>; then,
    /// as a control, the same resume from a checkpoint whose state <paramref name="tamper"/> spoils: it must differ.
    /// Returns (straight weights, resumed weights, tampered weights, weights after N updates).
    /// </summary>
    private const int N = 2;

    private (Dictionary<string, float[]> Straight, Dictionary<string, float[]> Resumed, Dictionary<string, float[]> Control, Dictionary<string, float[]> Mid)
        ResumeCase(Func<string[], FvConfig> config, string criteria, int batch, Action<TrainingState> tamper, params string[] extra)
    {
        var a = DownstreamTasks.Run(config(Run(_save, "a", criteria, batch, 2 * N, extra)), TextWriter.Null);
        DownstreamTasks.Run(config(Run(_save, "b", criteria, batch, N, extra)), TextWriter.Null);
        var mid = Weights(Path.Combine(_save, "b", "current.ckpt"));
        // The control resumes from a tampered copy of the same 2-update run.
        Directory.CreateDirectory(Path.Combine(_save, "c"));
        File.Copy(Path.Combine(_save, "b", "current.ckpt"), Path.Combine(_save, "c", "current.ckpt"));
        Tamper(Path.Combine(_save, "c", "current.ckpt"), tamper);
        var b = DownstreamTasks.Run(config(Run(_save, "b", criteria, batch, 2 * N, [.. extra, "checkpoint.resume=true"])), TextWriter.Null);
        var c = DownstreamTasks.Run(config(Run(_save, "c", criteria, batch, 2 * N, [.. extra, "checkpoint.resume=true"])), TextWriter.Null);
        Assert.That((a.Steps, b.Steps, c.Steps), Is.EqualTo((2L * N, 2L * N, 2L * N)));
        return (Weights(a.CurrentCheckpoint!), Weights(b.CurrentCheckpoint!), Weights(c.CurrentCheckpoint!), mid);
    }

    private static void AssertBitwise(Dictionary<string, float[]> straight, Dictionary<string, float[]> resumed, Dictionary<string, float[]> mid, int minChanged)
    {
        Assert.That(resumed.Keys, Is.EquivalentTo(straight.Keys));
        foreach (var (k, v) in straight) Assert.That(resumed[k], Is.EqualTo(v), $"{k} differs between {N} + {N} resumed and {2 * N} straight updates");
        // Updates N+1..2N moved the weights (the comparison is not between two untouched models).
        Assert.That(straight.Count(kv => !kv.Value.SequenceEqual(mid[kv.Key])), Is.GreaterThanOrEqualTo(minChanged));
    }

    private static int Differing(Dictionary<string, float[]> a, Dictionary<string, float[]> b) => a.Count(kv => !kv.Value.SequenceEqual(b[kv.Key]));

    // ------------------------------------------------------------------ 1. bitwise resume

    [Test]
    public void FashionIqResumeEqualsAStraightRunBitwiseAndNeedsTheGeneratorState()
    {
        // Dropout 0.1 (the default) in BERT: the masks of updates 3 and 4 must come from the checkpointed loop generator.
        var (straight, resumed, control, mid) = ResumeCase(extra => FashionIqTaskTests.Micro(_data, [.. Smaller, .. extra]),
            "fashioniq/r@k_fashioniq/avg", 4,
            st => st.Rng["task"] = new GeneratorState(st.Rng["task"].Seed, 0));   // as if the generator were not restored
        AssertBitwise(straight, resumed, mid, straight.Count / 2);
        Assert.That(Differing(control, straight), Is.GreaterThan(straight.Count / 2),
            "control: resuming with the loop generator reset must change the dropout masks and so the weights");
    }

    [Test]
    public void OcirResumeEqualsAStraightRunBitwise()
    {
        // CSA-Net draws nothing in its forward (no dropout, frozen BatchNorms), so the generator is not what a resume can get
        // wrong here; the control spoils the data position instead (the next batch of the epoch order is skipped).
        var (straight, resumed, control, mid) = ResumeCase(extra => OcirTaskTests.Micro(_data, extra), "polyvore_ocir/r@k_ocir/avg", 2,
            st => st.DataPosition["batch"] += 1);
        int trainable;
        using (var t = FashionViL.Downstream.Ocir.OcirTask.Create(OcirTaskTests.Micro(_data), TextWriter.Null))
            trainable = t.Net.NamedParameters().Count(p => p.Tensor.RequiresGrad);
        AssertBitwise(straight, resumed, mid, trainable);
        Assert.That(Differing(control, straight), Is.GreaterThanOrEqualTo(trainable), "control: a wrong data position must change the weights");
    }

    [Test]
    public void LoopRandomDrawsFromTheLoopGeneratorAndHandsTheStateBack()
    {
        // A model generator at another seed and offset; inside Run it draws what the loop generator would have drawn next.
        var loop = new Generator(77); using (loop.Uniform([5])) { }
        var model = new Generator(3); using (model.Uniform([9])) { }
        var expected = new Generator(77); expected.SetState(loop.Seed, loop.Offset);
        using var want = expected.Uniform([4]);
        using (var got = LoopRandom.Run(model, loop, () => model.Uniform([4])))
            Assert.That(got.ToArray<float>(), Is.EqualTo(want.ToArray<float>()));
        Assert.That((loop.Seed, loop.Offset), Is.EqualTo((expected.Seed, expected.Offset)), "the loop generator moved past the draw");
        // ...also when the forward throws after drawing.
        using (expected.Uniform([2])) { }
        Assert.Throws<InvalidOperationException>(() => LoopRandom.Run<int>(model, loop, () => { using (model.Uniform([2])) { } throw new InvalidOperationException("boom"); }));
        Assert.That((loop.Seed, loop.Offset), Is.EqualTo((expected.Seed, expected.Offset)));
        Assert.That(expected.Offset, Is.Not.EqualTo(new Generator(77).Offset), "draws move the offset (the checks above are not vacuous)");
    }

    [Test]
    public void MicroBatchesSplitTheUpdatesIndicesInOrder()
    {
        var options = new PrefetchLoaderOptions { BatchSize = 7, Shuffle = true, Seed = 9, Workers = 1, DropLast = true };
        using var whole = new PrefetchLoader<IndexBatch>(20, c => new IndexBatch(c.Indices.ToArray(), c.Epoch), options);
        using var split = new PrefetchLoader<MicroBatches<IndexBatch>>(20, MicroBatches<IndexBatch>.Builder(c => new IndexBatch(c.Indices.ToArray(), c.Epoch), 3, options), options);
        for (int b = 0; b < 4; b++)   // crosses into the second epoch
        {
            using var w = whole.Next();
            using var s = split.Next();
            Assert.That(s.Sizes, Is.EqualTo(new[] { 3, 3, 1 }));
            Assert.That(s.Total, Is.EqualTo(7));
            Assert.That(s.Parts.SelectMany(p => p.Indices), Is.EqualTo(w.Indices), $"batch {b}");
            Assert.That(s.Parts.Select(p => p.Epoch), Is.All.EqualTo(w.Epoch));
        }
        Assert.That(split.Position, Is.EqualTo(whole.Position));
    }

    private sealed record IndexBatch(int[] Indices, int Epoch) : IDisposable { public void Dispose() { } }

    [Test]
    public void MicroBatchSizesCountTheSamplesPresentUnderSkip()
    {
        // Indices 0..7 in order (no shuffle), micro-batches of 4; the "bad" indices fail to load.
        static MicroBatches<IndexBatch> First(BadSamplePolicy policy, int[] bad, bool throwWhenEmpty, out int skipped)
        {
            var options = new PrefetchLoaderOptions { BatchSize = 8, Shuffle = false, Workers = 1, OnBadSample = policy };
            IndexBatch Build(BatchContext c)
            {
                var got = c.LoadSamples((idx, _) => bad.Contains(idx) ? throw new FashionViL.Data.Images.ImageLoadException($"img{idx}.jpg", "corrupt") : idx);
                if (got.Count == 0 && throwWhenEmpty) throw new InvalidDataException("empty");
                return new IndexBatch([.. got], c.Epoch);
            }
            using var loader = new PrefetchLoader<MicroBatches<IndexBatch>>(8, MicroBatches<IndexBatch>.Builder(Build, 4, options), options);
            var b = loader.Next();
            skipped = loader.SkippedCount;
            return b;
        }

        using (var b = First(BadSamplePolicy.Skip, [5], false, out int skipped))
        {
            Assert.That(b.Sizes, Is.EqualTo(new[] { 4, 3 }));
            Assert.That(b.Total, Is.EqualTo(7));
            Assert.That(b.Parts.Select(p => p.Indices), Is.EqualTo(new[] { new[] { 0, 1, 2, 3 }, new[] { 4, 6, 7 } }));
            Assert.That(skipped, Is.EqualTo(1));
        }
        using (var b = First(BadSamplePolicy.Replace, [5], false, out _))
            Assert.That(b.Sizes, Is.EqualTo(new[] { 4, 4 }), "a replaced sample keeps its micro-batch full");
        foreach (bool throws in new[] { false, true })   // a micro-batch with nothing left is left out, whether its builder throws or not
            using (var b = First(BadSamplePolicy.Skip, [1, 4, 5, 6, 7], throws, out int skipped))
            {
                Assert.That(b.Sizes, Is.EqualTo(new[] { 3 }), $"builder throws on empty: {throws}");
                Assert.That(b.Parts.Single().Indices, Is.EqualTo(new[] { 0, 2, 3 }));
                Assert.That(skipped, Is.EqualTo(5));
            }
        var e = Assert.Throws<InvalidDataException>(() => First(BadSamplePolicy.Skip, [0, 1, 2, 3, 4, 5, 6, 7], true, out _))!;
        Assert.That(e.Message, Is.EqualTo("empty"), "an update with no sample left fails with its builder's own error");
    }

    // ------------------------------------------------------------------ 2. gradient accumulation

    /// <summary>SCR classification without dropout, BatchNorms in eval mode: the loss is a mean of per-sample terms.</summary>
    private static FashionGenClassificationTask PerSampleScr()
    {
        var task = FashionGenClassificationTask.Create(Scr(
            "model_config.fashionvil.bert.hidden_dropout_prob=0", "model_config.fashionvil.bert.attention_probs_dropout_prob=0"), TextWriter.Null);
        task.Model.Train();
        foreach (var (_, m) in task.Model.NamedModules()) if (m is BatchNorm2d) m.Eval();
        return task;
    }

    /// <summary>The gradients of the loader's first update built as micro-batches of <paramref name="micro"/>, accumulated.</summary>
    private static Dictionary<string, double[]> AccumulatedGradients(FashionGenClassificationTask task, PrefetchLoaderOptions options, int micro,
        out double loss, out int[] sizes)
    {
        using var loader = new PrefetchLoader<MicroBatches<FashionGenBatch>>(task.TrainCount, MicroBatches<FashionGenBatch>.Builder(task.BuildTrainBatch, micro, options), options);
        using var b = loader.Next();
        sizes = [.. b.Sizes];
        task.Model.ZeroGrad();
        using (Tensor.Scope()) loss = Finetuner<FashionGenBatch>.AccumulateGradients(task, b, Device.Cpu, new Generator(1));
        var r = task.Model.NamedParameters().Where(p => p.Tensor.Grad is not null)
            .ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToArray<float>().Select(v => (double)v).ToArray());
        task.Model.ZeroGrad();
        return r;
    }

    /// <summary>Accumulated against whole-batch gradients and losses: float32 sums in a different order, so relative 1e-5 of each
    /// tensor's largest entry (the scaling errors these tests guard against are factors like 2 or 8/7).</summary>
    private static void AssertSameGradients(Dictionary<string, double[]> one, double lossOne, Dictionary<string, double[]> acc, double lossAcc)
    {
        Assert.That(lossAcc, Is.EqualTo(lossOne).Within(1e-6 * Math.Abs(lossOne)), "accumulated loss = Σ n_i/Σn · mean(part i)");
        Assert.That(acc.Keys, Is.EquivalentTo(one.Keys));
        Assert.That(one.Count, Is.GreaterThan(20));
        foreach (var (k, g) in one)
        {
            double scale = g.Max(Math.Abs);
            for (int i = 0; i < g.Length; i++)
                Assert.That(acc[k][i], Is.EqualTo(g[i]).Within(1e-5 * scale + 1e-12), $"{k}[{i}]");
        }
    }

    [Test]
    public void AccumulatingTwoMicroBatchesGivesTheGradientOfOneBatch()
    {
        // The gradient of one batch of 8 is the 4/8-weighted sum of the gradients of its two halves (MMF: each mean / update_frequency).
        using var task = PerSampleScr();
        var options = new PrefetchLoaderOptions { BatchSize = 8, Shuffle = true, DropLast = true, Seed = 3, Workers = 1 };
        var one = AccumulatedGradients(task, options, 8, out var lossOne, out var s1);
        var acc = AccumulatedGradients(task, options, 4, out var lossAcc, out var s2);
        var again = AccumulatedGradients(task, options, 8, out _, out _);   // the same batch again: the reference is reproducible
        Assert.That((s1, s2), Is.EqualTo((new[] { 8 }, new[] { 4, 4 })));
        foreach (var (k, g) in one) Assert.That(again[k], Is.EqualTo(g), $"{k}: the reference gradient is deterministic");
        AssertSameGradients(one, lossOne, acc, lossAcc);
    }

    [Test]
    public void UnevenMicroBatchesAfterSkippedSamplesGiveTheGradientOfTheBatchUsed()
    {
        // Under BadSamplePolicy.Skip a product whose images are all corrupt drops out of its micro-batch: the update is 8 indices
        // but 7 samples, as micro-batches of 4 and 3. The accumulated gradient must be that of the 7-sample batch (weights 4/7
        // and 3/7), not 1/2 each.
        using var task = PerSampleScr();
        var options = new PrefetchLoaderOptions { BatchSize = 8, Shuffle = true, DropLast = true, Seed = 3, Workers = 1, OnBadSample = BadSamplePolicy.Skip };
        int[] order;
        using (var probe = new PrefetchLoader<int>(task.TrainCount, _ => 0, options)) order = probe.EpochOrder(0);
        var bad = task.Data.Split("train")[order[5]].Images;   // in the second micro-batch of the first update
        var saved = bad.Select(File.ReadAllBytes).ToList();
        try
        {
            foreach (var path in bad) File.WriteAllBytes(path, [1, 2, 3, 4, 5, 6, 7, 8]);
            var one = AccumulatedGradients(task, options, 8, out var lossOne, out var s1);
            var acc = AccumulatedGradients(task, options, 4, out var lossAcc, out var s2);
            Assert.That(s2, Is.EqualTo(new[] { 4, 3 }), "micro-batch sizes count the samples present");
            Assert.That(s1, Is.EqualTo(new[] { 7 }));
            AssertSameGradients(one, lossOne, acc, lossAcc);
        }
        finally
        {
            for (int i = 0; i < bad.Count; i++) File.WriteAllBytes(bad[i], saved[i]);
        }
    }

    [Test]
    public void AccumulationResumesBitwiseAndIsValidated()
    {
        // Batch 4 as 2 micro-batches of 2, dropout on (the loop generator is drawn from micro-batch by micro-batch).
        var log = new StringWriter();
        var (straight, resumed, control, mid) = ResumeCase(extra => Scr(extra), "fashiongen/accuracy", 4,
            st => st.Rng["task"] = new GeneratorState(st.Rng["task"].Seed, 0), "training.update_batch_size=2");
        AssertBitwise(straight, resumed, mid, straight.Count / 2);
        Assert.That(Differing(control, straight), Is.GreaterThan(straight.Count / 2), "control: the loop generator must be restored");

        // The run says it accumulates; a batch that is not a multiple of the micro-batch is refused, naming both keys.
        DownstreamTasks.Run(Scr(Run(_save, "d", "fashiongen/accuracy", 4, 1, "training.update_batch_size=2")), log);
        Assert.That(log.ToString(), Does.Contain("2 micro-batches of 2"));
        var e = Assert.Throws<ConfigException>(() => DownstreamTasks.Run(Scr(
            Run(_save, "e", "fashiongen/accuracy", 4, 1, "training.update_batch_size=3")), TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain("training.batch_size").And.Contain("training.update_batch_size"));
    }
}
