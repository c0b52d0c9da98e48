using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Downstream.Ocir;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Optim;
using FashionViL.Synth;

namespace FashionViL.Tests.Downstream.Ocir;

/// <summary>The OCIR task on generated Polyvore data: config → task, fixed training pairs, outfit-averaged evaluation,
/// a short training run, and (explicit) fine-tuning from the demo's pre-trained checkpoint.</summary>
[NonParallelizable]
public class OcirTaskTests
{
    private static string _data = "";

    [OneTimeSetUp]
    public static void MakeData()
    {
        _data = Path.Combine(Path.GetTempPath(), "fv-ocir-data-" + Guid.NewGuid().ToString("N"));
        SyntheticDatasets.Generate(new SynthOptions(_data, 48, 7, 64, 0));   // 12 outfits (N/4): 9 train, 3 test
    }

    [OneTimeTearDown]
    public static void DropData() { if (Directory.Exists(_data)) Directory.Delete(_data, true); }

    /// <summary>CSA-Net with ResNet [1,1,1,1] width 4 (128 channels) → 16-d, 32-pixel images.</summary>
    internal static FvConfig Micro(string data, params string[] extra)
    {
        var o = new List<string>
        {
            $"env.data_dir={data}", "datasets=polyvore_ocir", "model=csa_net",
            "dataset_config.polyvore_ocir.num_workers=1",
            "dataset_config.polyvore_ocir.processors.train_image_processor.size=32",
            "dataset_config.polyvore_ocir.processors.eval_image_processor.size=32",
            "model_config.csa_net.image_encoder.params.blocks=[1,1,1,1]", "model_config.csa_net.image_encoder.params.base_width=4",
            "model_config.csa_net.image_channel=128", "model_config.csa_net.feature_dim=16",
            "evaluation.batch_size=16", "training.seed=5",
        };
        o.AddRange(extra);
        return FvConfig.Load(null, o);
    }

    [Test]
    public void TrainingPairsAreDrawnOnceFromEachOutfit()
    {
        using var task = OcirTask.Create(Micro(_data), TextWriter.Null);
        var outfits = task.TrainData.Outfits;
        Assert.That(task.TrainCount, Is.EqualTo(outfits.Count).And.GreaterThan(5));
        for (int i = 0; i < outfits.Count; i++)
        {
            var items = outfits[i].Question.Append(outfits[i].Blank).ToList();
            var p = task.Pairs[i];
            Assert.That(items, Does.Contain(p.QuestionId).And.Contain(p.BlankId), $"pair {i} must come from outfit {i}");
            Assert.That(p.QuestionCategory, Is.EqualTo(PolyvoreOcirDatasetIndex(task.TrainData.RawCategory[p.QuestionId])));
            Assert.That(p.BlankCategory, Is.EqualTo(PolyvoreOcirDatasetIndex(task.TrainData.RawCategory[p.BlankId])));
        }
        // Same seed → same pairs; the pairs do not change between epochs (only the augmentation does).
        using var again = OcirTask.Create(Micro(_data), TextWriter.Null);
        Assert.That(again.Pairs, Is.EqualTo(task.Pairs));
        using var loader = new PrefetchLoader<OcirBatch>(task.TrainCount, task.BuildTrainBatch,
            new PrefetchLoaderOptions { BatchSize = task.TrainCount, Shuffle = false, Workers = 1 });
        using var e0 = loader.Next();
        using var e1 = loader.Next();
        Assert.That(e1.QuestionIds, Is.EqualTo(e0.QuestionIds));
        Assert.That(e1.BlankIds, Is.EqualTo(e0.BlankIds));
        Assert.That(e0.QuestionIds, Is.EqualTo(task.Pairs.Select(p => long.Parse(p.QuestionId))));
        Assert.That(e0.QuestionImage.Shape, Is.EqualTo(new[] { task.TrainCount, 3, 32, 32 }));
        Assert.That(e1.QuestionImage.ToArray<float>(), Is.Not.EqualTo(e0.QuestionImage.ToArray<float>()), "augmentation must differ between epochs");
    }

    private static int PolyvoreOcirDatasetIndex(int raw) => Array.IndexOf(FashionViL.Data.Datasets.PolyvoreOcirDataset.CategoryIds, raw);

    [Test]
    public void EvaluationAveragesTheConditionedQuestionFeaturesOfEachOutfit()
    {
        using var task = OcirTask.Create(Micro(_data), TextWriter.Null);
        var data = task.EvalData("test");
        string images = Path.Combine(_data, "datasets", "PolyvoreOutfits", "images");
        var (queries, blanks) = task.Embed(data, images, Device.Cpu);
        var pipe = ImagePipeline.RetrievalEval(32);
        task.Net.Eval();
        int checkedQueries = 0;
        for (int i = 0; i < data.Outfits.Count; i++)
        {
            var o = data.Outfits[i];
            if (o.FakeData == true) { Assert.That(queries[i], Is.Null); continue; }
            // Independently: each question item alone, with condition (its category, the blank's category), then the mean.
            var expect = new double[16];
            using (GradMode.NoGrad())
                for (int k = 0; k < o.Question.Count; k++)
                {
                    using var img = pipe.ApplyToTensor(ImageLoader.LoadWithFallback(Path.Combine(images, o.Question[k] + ".jpg")), new DataRandom(0));
                    using var b = img.Unsqueeze(0);
                    using var c = CsaNet.TwoHot([o.QuestionCategories[k]], [o.BlankCategory], 153);
                    using var f = task.Net.EncodeQuestion(b, c);
                    var a = f.ToArray<float>();
                    for (int d = 0; d < 16; d++) expect[d] += a[d] / o.Question.Count;
                }
            for (int d = 0; d < 16; d++) Assert.That(queries[i]![d], Is.EqualTo(expect[d]).Within(1e-4), $"entry {i} dim {d}");
            using (GradMode.NoGrad())
            {
                using var img = pipe.ApplyToTensor(ImageLoader.LoadWithFallback(Path.Combine(images, o.Blank + ".jpg")), new DataRandom(0));
                using var b = img.Unsqueeze(0);
                using var f = task.Net.EncodeBlank(b);
                Assert.That(blanks[i], Is.EqualTo(f.ToArray<float>()).Within(1e-4));
            }
            checkedQueries++;
        }
        Assert.That(checkedQueries, Is.GreaterThan(0));

        task.Net.Train();
        var r = task.Evaluate("val", Device.Cpu, 0);
        Assert.That(r.Keys, Is.EquivalentTo(new[] { "r@k_ocir/r@10", "r@k_ocir/r@30", "r@k_ocir/r@50", "r@k_ocir/avg" }));
        Assert.That(r.Values.All(v => v is >= 0 and <= 1));
        Assert.That(task.Net.IsTraining, Is.True, "Evaluate restores training mode");
    }

    [Test]
    public void AFewStepsOnOneBatchLowerItsLoss()
    {
        // Overfitting one fixed batch (9 pairs, chance-level loss ≈ ln 9 ≈ 2.2) of 32-pixel images: its loss must fall.
        using var task = OcirTask.Create(Micro(_data), TextWriter.Null);
        using var loader = new PrefetchLoader<OcirBatch>(task.TrainCount, task.BuildTrainBatch,
            new PrefetchLoaderOptions { BatchSize = task.TrainCount, Shuffle = false, Workers = 1 });
        using var batch = loader.Next();
        CalibrateBatchNorm(task.Net, batch.BlankImage, 5);
        using var opt = new AdamW(task.ParameterGroups(3e-3, 0, 20));
        var g = new Generator(1);
        task.Model.Train();
        var losses = new List<double>();
        for (int s = 0; s < 6; s++)
        {
            using var scope = Tensor.Scope();
            var loss = task.Loss(batch, Device.Cpu, g);
            losses.Add(loss.Item());
            loss.Backward();
            opt.Step();
            opt.ZeroGrad();
        }
        using (var scope = Tensor.Scope()) losses.Add(task.Loss(batch, Device.Cpu, g).Item());
        Assert.That(losses[^1], Is.LessThan(losses[0] * 0.7), $"losses {string.Join(", ", losses.Select(v => v.ToString("F3")))}");
    }

    /// <summary>
    /// Stands in for a pre-trained encoder: with its initial BatchNorm statistics (mean 0, variance 1) frozen, a random
    /// ResNet maps every image to nearly the same pooled direction, and the loss sits at ln B. A few no-grad passes with the
    /// BatchNorms briefly in training mode move their running statistics towards the data's; then they are frozen again.
    /// </summary>
    internal static void CalibrateBatchNorm(CsaNet net, Tensor images, int passes)
    {
        var bns = net.ImageEncoder.NamedModules().Select(m => m.Module).Where(m => m is FashionViL.Nn.BatchNorm2d).ToList();
        foreach (var b in bns) { b.Unfreeze(); b.Train(); }
        using (GradMode.NoGrad())
            for (int i = 0; i < passes; i++) { using var f = net.ImageEncoder.Forward(images); }
        foreach (var b in bns) b.Freeze();
        net.Train();
    }

    [Test]
    public void ConfigErrorsNameTheKey()
    {
        Assert.That(() => OcirTask.Create(Micro(_data, "model=fashionvil"), TextWriter.Null),
            Throws.InstanceOf<ConfigException>().With.Message.Contains("model = 'fashionvil'"));
        Assert.That(() => OcirTask.Create(Micro(_data, "model_config.csa_net.image_channel=2048"), TextWriter.Null),
            Throws.InstanceOf<ConfigException>().With.Message.Contains("image_channel 2048"));
        Assert.That(() => OcirTask.Create(Micro(_data, "dataset_config.polyvore_ocir.annotations.train=[PolyvoreOutfits/nope.json]"), TextWriter.Null),
            Throws.InstanceOf<FileNotFoundException>().With.Message.Contains("nope.json"));
    }

    [Test]
    public void TheShippedConfigsLoadWithTheReferenceSettings()
    {
        string root = FindRepoRoot();
        var c = FvConfig.Load(Path.Combine(root, "configs", "ocir_nondisjoint.yaml"));
        Assert.That(c.GetString("model"), Is.EqualTo("csa_net"));
        Assert.That(c.GetStringList("dataset_config.polyvore_ocir.annotations.train"), Is.EqualTo(new[] { "PolyvoreOutfits/ocir_nondisjoint_train.json" }));
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(64));
        Assert.That(c.GetDouble("optimizer.params.lr"), Is.EqualTo(1e-4));
        Assert.That(c.GetDouble("optimizer.params.weight_decay"), Is.EqualTo(0));
        Assert.That(c.GetIntList("scheduler.params.lr_steps"), Is.EqualTo(new[] { 1500, 5000 }));
        Assert.That(c.GetString("training.early_stop.criteria"), Is.EqualTo("polyvore_ocir/r@k_ocir/avg"));
        Assert.That(c.GetStringMap("checkpoint.pretrained_state_mapping"), Is.EquivalentTo(new Dictionary<string, string?> { ["image_encoder"] = "image_encoder" }));
        var d = FvConfig.Load(Path.Combine(root, "configs", "ocir_disjoint.yaml"));
        Assert.That(d.GetStringList("dataset_config.polyvore_ocir.annotations.test"), Is.EqualTo(new[] { "PolyvoreOutfits/ocir_disjoint_test.json" }));
        Assert.That(OcirTask.ModelConfig(d).ImageChannel, Is.EqualTo(2048));
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new DirectoryNotFoundException("repository root (FashionViL.Native.sln) not found above " + AppContext.BaseDirectory);
    }

    /// <summary>AdamW over loader batches for <paramref name="steps"/> updates; returns the mean loss of the first and last
    /// three steps.</summary>
    internal static (double Before, double After) Train(OcirTask task, int steps, double lr, int batch, TextWriter? log = null)
    {
        var groups = task.ParameterGroups(lr, 0, 20);
        using var opt = new AdamW(groups);
        using var loader = new PrefetchLoader<OcirBatch>(task.TrainCount, task.BuildTrainBatch,
            new PrefetchLoaderOptions { BatchSize = Math.Min(batch, task.TrainCount), DropLast = true, Workers = 2, Seed = 1 });
        var g = new Generator(1);
        var losses = new List<double>();
        task.Model.Train();
        for (int s = 0; s < steps; s++)
        {
            using var scope = Tensor.Scope();
            using var b = loader.Next();
            var loss = task.Loss(b, Device.Cpu, g);
            losses.Add(loss.Item());
            loss.Backward();
            opt.Step();
            opt.ZeroGrad();
            log?.WriteLine($"step {s + 1}: loss {losses[^1]:F4}");
        }
        return (losses.Take(3).Average(), losses.TakeLast(3).Average());
    }

    /// <summary>
    /// Fine-tunes from the demo's pre-trained tiny checkpoint (image_encoder.* only) on the demo's generated Polyvore data
    /// and reports r@k_ocir against chance. Needs /tmp/demo2 (see COMMON6.md); minutes on CPU.
    /// </summary>
    [Test, Explicit("minutes on CPU; needs /tmp/demo2")]
    public void FineTuneFromTheDemoCheckpointBeatsChance()
    {
        const string ckpt = "/tmp/demo2/save/fashionvil_tiny/best.ckpt", data = "/tmp/demo2/data";
        if (!File.Exists(ckpt)) Assert.Ignore($"{ckpt} not found");
        int steps = int.Parse(Environment.GetEnvironmentVariable("OCIR_STEPS") ?? "60");
        var c = FvConfig.Load(null,
        [
            $"env.data_dir={data}", "datasets=polyvore_ocir", "model=csa_net", "dataset_config.polyvore_ocir.num_workers=2",
            "dataset_config.polyvore_ocir.processors.train_image_processor.size=96", "dataset_config.polyvore_ocir.processors.eval_image_processor.size=96",
            "model_config.csa_net.image_encoder.params.blocks=[1,1,1,1]", "model_config.csa_net.image_encoder.params.base_width=16",
            "model_config.csa_net.image_channel=512", "evaluation.batch_size=64", "training.seed=42",
        ]);
        using var task = OcirTask.Create(c, TestContext.Out);
        using (var f = TrainingCheckpoint.Read(ckpt))
        {
            var enc = f.Model.Where(kv => kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
            var r = task.Model.LoadStateDict(enc, strict: false);
            Assert.That(r.Unexpected, Is.Empty);
            Assert.That(r.Mismatched, Is.Empty);
            Assert.That(r.Missing.All(k => !k.StartsWith("image_encoder.", StringComparison.Ordinal)), "every image_encoder.* key must load");
            TestContext.Out.WriteLine($"loaded {enc.Count} image_encoder.* tensors from {ckpt}");
        }
        var chance = task.ChanceLevel("test");
        var r0 = task.Evaluate("test", Device.Cpu, 0);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var (before, after) = Train(task, steps, 1e-4, 64, TestContext.Progress);
        sw.Stop();
        var r1 = task.Evaluate("test", Device.Cpu, 0);
        string Row(IReadOnlyDictionary<string, double> m) => string.Join("  ", new[] { "r@10", "r@30", "r@50", "avg" }.Select(k => $"{k} {100 * m["r@k_ocir/" + k]:F1}"));
        TestContext.Out.WriteLine($"chance:                {Row(chance)}");
        TestContext.Out.WriteLine($"before fine-tuning:    {Row(r0)}");
        TestContext.Out.WriteLine($"after {steps} steps:       {Row(r1)}   (loss {before:F3} → {after:F3}, {sw.Elapsed.TotalSeconds:F0} s)");
        Assert.That(r1["r@k_ocir/avg"], Is.GreaterThan(chance["r@k_ocir/avg"]));
    }
}
