using FashionViL.Config;
using FashionViL.Nn.Checkpoints;
using FashionViL.Synth;
using FashionViL.Training;

namespace FashionViL.Tests.Training;

/// <summary>End-to-end pre-training on generated data with a micro config (seconds per run).</summary>
[NonParallelizable]
public class PretrainerTests
{
    private static string _data = "";
    private string _save = "";

    [OneTimeSetUp]
    public static void MakeData()
    {
        _data = Path.Combine(Path.GetTempPath(), "fv-pretrain-data-" + Guid.NewGuid().ToString("N"));
        SyntheticDatasets.Generate(new SynthOptions(_data, 40, 7, 64, 0));
    }

    [OneTimeTearDown]
    public static void DropData() { if (Directory.Exists(_data)) Directory.Delete(_data, true); }

    [SetUp] public void SetUp() => _save = Path.Combine(Path.GetTempPath(), "fv-pretrain-save-" + Guid.NewGuid().ToString("N"));
    [TearDown] public void TearDown() { if (Directory.Exists(_save)) Directory.Delete(_save, true); }

    /// <summary>All six tasks, a 1-layer 32-wide BERT, ResNet width 8, 64-pixel crops (2×2 grid), a 32-channel VQ-VAE.</summary>
    internal static FvConfig Micro(string data, string save, params string[] extra)
    {
        var o = new List<string>
        {
            $"env.data_dir={data}", $"env.save_dir={save}",
            "dataset_config.fashionall.num_workers=2",
            "dataset_config.fashionall.processors.image_processor.resize=72", "dataset_config.fashionall.processors.image_processor.crop=64",
            "dataset_config.fashionall.processors.masked_image_processor.num_masking_patches=1",
            "dataset_config.fashionall.processors.masked_image_processor.min_num_patches=1",
            "dataset_config.fashionall.processors.masked_image_processor.max_num_patches=1",
            "dataset_config.fashionall.processors.masked_token_processor.params.max_seq_length=24",
            "dataset_config.fashionall.processors.text_processor.max_seq_length=24",
            "model_config.fashionvil.image_encoder.params.pretrained_path=", "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,1]",
            "model_config.fashionvil.image_encoder.params.base_width=8",
            "model_config.fashionvil.bert.pretrained_path=", "model_config.fashionvil.bert.hidden_size=32",
            "model_config.fashionvil.bert.num_hidden_layers=1", "model_config.fashionvil.bert.num_attention_heads=2",
            "model_config.fashionvil.bert.intermediate_size=64",
            "model_config.fashionvil.image_tokenizer.params.pretrained_path=", "model_config.fashionvil.image_tokenizer.params.resolution=64",
            "model_config.fashionvil.image_tokenizer.params.attn_resolutions=[2]", "model_config.fashionvil.image_tokenizer.params.hidden_dim=32",
            "model_config.fashionvil.image_tokenizer.params.ch_mult=[1,1,1,1,1,1]", "model_config.fashionvil.image_tokenizer.params.num_res_blocks=1",
            "model_config.fashionvil.image_tokenizer.params.z_channels=32", "model_config.fashionvil.image_tokenizer.params.codebook_dim=32",
            "optimizer.params.lr=1e-4", "scheduler.params.warmup_iterations=3", "scheduler.params.lr_steps=[6]",
            "training.batch_size=8", "training.max_updates=8", "training.log_interval=4", "training.evaluation_interval=0",
            "training.checkpoint_interval=4", "training.experiment_name=micro", "evaluation.max_items=16",
        };
        o.AddRange(extra);
        return FvConfig.Load(null, o);
    }

    private static Dictionary<string, float[]> Weights(string ckpt)
    {
        using var f = TrainingCheckpoint.Read(ckpt);
        return f.Model.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>());
    }

    [Test]
    public void ResumeInTheMiddleEqualsAStraightRunBitwise()
    {
        // Straight: 20 updates. Split: 10 updates (checkpoint at 10), then a new trainer resuming to 20 (the issue's
        // 10 + 10 against 20). Accumulation (2 micro-batches of 4) is on, so data position and RNG streams must line up.
        string[] common = ["training.update_batch_size=4", "training.max_updates=20", "training.checkpoint_interval=10", "scheduler.params.lr_steps=[15]"];
        var straightDir = Path.Combine(_save, "a");
        var straight = new Pretrainer(Micro(_data, straightDir, common), TextWriter.Null).Run();
        var splitDir = Path.Combine(_save, "b");
        new Pretrainer(Micro(_data, splitDir, [.. common, "training.max_updates=10"]), TextWriter.Null).Run();
        var resumed = new Pretrainer(Micro(_data, splitDir, [.. common, "checkpoint.resume=true"]), TextWriter.Null).Run();
        Assert.That(resumed.Steps, Is.EqualTo(20));
        var a = Weights(straight.CurrentCheckpoint!);
        var b = Weights(resumed.CurrentCheckpoint!);
        Assert.That(b.Keys, Is.EquivalentTo(a.Keys));
        foreach (var (k, v) in a) Assert.That(b[k], Is.EqualTo(v), $"parameter {k} differs after resume");
        // The logs of the resumed run hold each update once.
        var steps = File.ReadAllLines(Path.Combine(splitDir, "micro", "train.csv")).Skip(1).Select(l => long.Parse(l.Split(',')[0])).ToList();
        Assert.That(steps, Is.EqualTo(Enumerable.Range(1, 20).Select(i => (long)i)));
        // ...and training changed the weights at all (the comparison is not between two untouched models).
        var init = new Pretrainer(Micro(_data, Path.Combine(_save, "c"), "training.max_updates=1", "optimizer.params.lr=0", "scheduler.params.warmup_iterations=0"), TextWriter.Null).Run();
        var w0 = Weights(init.CurrentCheckpoint!);
        Assert.That(a.Count(kv => !kv.Value.SequenceEqual(w0[kv.Key])), Is.GreaterThan(a.Count / 2));
    }

    [Test]
    public void NonFiniteLossStopsNamingTaskAndStepAndKeepsTheLastCheckpoint()
    {
        var cfg = Micro(_data, _save);
        var t = new Pretrainer(cfg, TextWriter.Null)
        {
            BeforeUpdate = (model, step) =>
            {
                if (step != 6) return;
                var w = model.Bert.Embeddings.LayerNorm.Weight;   // every task passes through it
                using var nan = Tensor.Full(w!.Shape, float.NaN);
                Backends.Get(w.Device).Copy(nan, w);
            },
        };
        var current = Path.Combine(_save, "micro", Pretrainer.CurrentName);
        var e = Assert.Throws<TrainingDivergedException>(() => t.Run())!;
        Assert.That(e.Message, Does.Contain("update 6").And.Contain("task '").And.Contain(current));
        using var f = TrainingCheckpoint.Read(current);
        Assert.That(f.State.GlobalStep, Is.EqualTo(4), "the checkpoint of update 4 is intact");
        Assert.That(f.Model["model.bert.embeddings.LayerNorm.weight"].ToArray<float>().All(float.IsFinite));
        Assert.That(Directory.GetFiles(Path.Combine(_save, "micro"), "*.tmp"), Is.Empty);
    }

    [Test]
    public void EveryTaskLossFallsOverShortTraining()
    {
        // Each task alone for 12 updates at a high learning rate on a fixed small set: the mean of the last 4 losses is
        // below the mean of the first 4.
        foreach (var task in new[] { "itc", "itm", "mlm", "mpfc", "icc", "pac" })
        {
            var dir = Path.Combine(_save, task);
            var r = new Pretrainer(Micro(_data, dir, $"model_config.fashionvil.tasks=[{task}]", "model_config.fashionvil.tasks_sample_ratio=[1.0]",
                "training.max_updates=12", "optimizer.params.lr=1e-3", "training.checkpoint_interval=0", "training.log_interval=100"), TextWriter.Null).Run();
            var losses = File.ReadAllLines(Path.Combine(dir, "micro", "train.csv")).Skip(1).Select(l => double.Parse(l.Split(',')[2], System.Globalization.CultureInfo.InvariantCulture)).ToList();
            Assert.That(losses, Has.Count.EqualTo(12));
            Assert.That(losses.TakeLast(4).Average(), Is.LessThan(losses.Take(4).Average()), $"{task}: {string.Join(", ", losses.Select(v => v.ToString("F3")))}");
        }
    }

    [Test]
    public void RunWritesLogsPlotAndEvaluation()
    {
        var r = new Pretrainer(Micro(_data, _save, "training.evaluation_interval=4"), TextWriter.Null).Run();
        var dir = Path.Combine(_save, "micro");
        foreach (var f in new[] { "config.yaml", "metrics.jsonl", "train.csv", "eval.csv", "plot.png", Pretrainer.CurrentName, Pretrainer.BestName, "model_4.ckpt", "model_8.ckpt" })
            Assert.That(File.Exists(Path.Combine(dir, f)), f);
        Assert.That(r.LastGeneral!["avg"], Is.InRange(0.0, 1.0));
        Assert.That(File.ReadAllLines(Path.Combine(dir, "eval.csv")), Has.Length.EqualTo(3), "header + evaluations at 4 and 8");
        // config.yaml reloads to the same configuration.
        var again = FvConfig.FromYaml(File.ReadAllText(Path.Combine(dir, "config.yaml")));
        Assert.That(again.GetInt("training.max_updates"), Is.EqualTo(8));
    }

    [Test]
    public void BadInputsGiveNamedErrors()
    {
        var missing = Path.Combine(_save, "no-such-data");
        var e = Assert.Throws<FileNotFoundException>(() => new Pretrainer(Micro(missing, _save), TextWriter.Null).Run())!;
        Assert.That(e.Message, Does.Contain("annotation file not found: " + Path.Combine(missing, "datasets")));
        Assert.Throws<ConfigException>(() => new Pretrainer(Micro(_data, _save, "training.update_batch_size=3"), TextWriter.Null).Run());
        var vq = Assert.Throws<FileNotFoundException>(() => new Pretrainer(Micro(_data, _save, "model_config.fashionvil.image_tokenizer.params.pretrained_path=/nope/vq.pth"), TextWriter.Null).Run())!;
        Assert.That(vq.Message, Does.Contain("/nope/vq.pth").And.Contain("image_tokenizer"));
        var grid = Assert.Throws<ConfigException>(() => new Pretrainer(Micro(_data, _save, "model_config.fashionvil.image_tokenizer.params.resolution=96", "model_config.fashionvil.image_tokenizer.params.attn_resolutions=[3]"), TextWriter.Null).Run())!;
        Assert.That(grid.Message, Does.Contain("grid"));
    }
}
