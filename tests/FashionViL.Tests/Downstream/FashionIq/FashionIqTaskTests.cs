using System.Text.Json;
using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Loading;
using FashionViL.Downstream.FashionIq;
using FashionViL.Nn.Optim;
using FashionViL.Synth;

namespace FashionViL.Tests.Downstream.FashionIq;

/// <summary>The FashionIQ composition task on small generated data with a micro model (seconds per test).</summary>
[NonParallelizable]
public class FashionIqTaskTests
{
    private static string _data = "";

    [OneTimeSetUp]
    public static void MakeData()
    {
        _data = Path.Combine(Path.GetTempPath(), "fv-fiq-data-" + Guid.NewGuid().ToString("N"));
        SyntheticDatasets.Generate(new SynthOptions(_data, 40, 11, 64, 0));
    }

    [OneTimeTearDown]
    public static void DropData() { if (Directory.Exists(_data)) Directory.Delete(_data, true); }

    /// <summary>A 1-layer 32-wide BERT, ResNet width 8, 64-pixel images (2×2 grid), 24 tokens.</summary>
    internal static FvConfig Micro(string data, params string[] extra)
    {
        var o = new List<string>
        {
            $"env.data_dir={data}", "datasets=fashioniq", "model_config.fashionvil.training_head_type=composition",
            "dataset_config.fashioniq.processors.image_processor.size=64",
            "dataset_config.fashioniq.processors.text_processor.params.max_seq_length=24",
            "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,1]", "model_config.fashionvil.image_encoder.params.base_width=8",
            "model_config.fashionvil.bert.hidden_size=32", "model_config.fashionvil.bert.num_hidden_layers=1",
            "model_config.fashionvil.bert.num_attention_heads=2", "model_config.fashionvil.bert.intermediate_size=64",
            "evaluation.batch_size=16",
        };
        o.AddRange(extra);
        return FvConfig.Load(null, o);
    }

    private static FashionIqBatch FirstBatch(FashionIqTask task, int batch = 4, long seed = 3)
    {
        using var loader = new PrefetchLoader<FashionIqBatch>(task.TrainCount, task.BuildTrainBatch,
            new PrefetchLoaderOptions { BatchSize = batch, Shuffle = false, Seed = seed, Workers = 1 });
        return loader.Next();
    }

    private static string RepoFile(string rel)
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new DirectoryNotFoundException("repository root"), rel);
    }

    [Test]
    public void ReferenceConfigLoadsWithTheReferenceValues()
    {
        var c = FvConfig.Load(RepoFile("configs/e2e_composition.yaml"));
        Assert.That(c.GetString("model_config.fashionvil.training_head_type"), Is.EqualTo("composition"));
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(32));
        Assert.That(c.GetInt("training.max_updates"), Is.EqualTo(44960));
        Assert.That(c.GetInt("training.evaluation_interval"), Is.EqualTo(562));
        Assert.That(c.GetDouble("optimizer.params.lr"), Is.EqualTo(1e-5));
        Assert.That(c.GetDouble("model_config.fashionvil.lr_multiplier"), Is.EqualTo(20));
        Assert.That(c.GetIntList("scheduler.params.lr_steps"), Is.EqualTo(new[] { 16860, 28100 }));
        Assert.That(c.GetInt("scheduler.params.warmup_iterations"), Is.EqualTo(2810));
        Assert.That(c.GetDouble("scheduler.params.warmup_factor"), Is.EqualTo(0.25));
        Assert.That(c.GetString("training.early_stop.criteria"), Is.EqualTo("fashioniq/r@k_fashioniq/avg"));
        Assert.That(c.GetStringMap("checkpoint.pretrained_state_mapping"),
            Is.EquivalentTo(new Dictionary<string, string?> { ["image_encoder"] = "image_encoder", ["model.bert"] = "model.bert" }));
        Assert.That(c.GetInt("dataset_config.fashioniq.processors.text_processor.params.max_seq_length"), Is.EqualTo(50));
        Assert.That(c.GetInt("dataset_config.fashioniq.processors.image_processor.size"), Is.EqualTo(224));
        Assert.That(c.GetString("dataset_config.fashioniq.garment_class"), Is.EqualTo("all"));
    }

    [Test]
    public void CreateRejectsOtherHeadsAndFeatures()
    {
        var e = Assert.Throws<ConfigException>(() => FashionIqTask.Create(Micro(_data, "model_config.fashionvil.training_head_type=pretraining"), TextWriter.Null));
        Assert.That(e!.Message, Does.Contain("training_head_type"));
        var e2 = Assert.Throws<ConfigException>(() => FashionIqTask.Create(Micro(_data, "dataset_config.fashioniq.use_features=true"), TextWriter.Null));
        Assert.That(e2!.Message, Does.Contain("use_features"));
        var e3 = Assert.Throws<FashionViL.Data.Datasets.DatasetFormatException>(() => FashionIqTask.Create(Micro(_data + "-missing"), TextWriter.Null));
        Assert.That(e3!.Message, Does.Contain("-missing").And.Contain("cap.shirt.train.json"));
    }

    [Test]
    public void TrainBatchJoinsTheTwoCaptionsAndHasTheConfiguredShapes()
    {
        var task = FashionIqTask.Create(Micro(_data), TextWriter.Null);
        // All three classes, shirt + dress + toptee train files.
        int expected = 0;
        foreach (var cls in new[] { "shirt", "dress", "toptee" })
            expected += JsonDocument.Parse(File.ReadAllText(Path.Combine(_data, "datasets", "FashionIQ", "captions", $"cap.{cls}.train.json"))).RootElement.GetArrayLength();
        Assert.That(task.TrainCount, Is.EqualTo(expected));
        using var b = FirstBatch(task);
        Assert.That(b.InputIds.Shape, Is.EqualTo(new[] { 4, 24 }));
        Assert.That(b.InputMask.Shape, Is.EqualTo(new[] { 4, 24 }));
        Assert.That(b.SegmentIds.Shape, Is.EqualTo(new[] { 4, 24 }));
        Assert.That(b.RefImage.Shape, Is.EqualTo(new[] { 4, 3, 64, 64 }));
        Assert.That(b.TarImage.Shape, Is.EqualTo(new[] { 4, 3, 64, 64 }));
        // Unshuffled: rows are the first four triplets of cap.shirt.train.json; the text is captions[0] + ", " + captions[1].
        var items = JsonDocument.Parse(File.ReadAllText(Path.Combine(_data, "datasets", "FashionIQ", "captions", "cap.shirt.train.json"))).RootElement;
        var ids = b.InputIds.ToArray<long>();
        var seg = b.SegmentIds.ToArray<long>();
        for (int i = 0; i < 4; i++)
        {
            var caps = items[i].GetProperty("captions").EnumerateArray().Select(x => x.GetString()!).ToArray();
            Assert.That(caps, Has.Length.EqualTo(2));
            var want = BertTextTokenizer.Default.Encode(caps[0] + ", " + caps[1], 24).InputIds;
            Assert.That(ids.AsSpan(i * 24, 24).ToArray(), Is.EqualTo(want), $"row {i}");
            Assert.That(ids[i * 24], Is.EqualTo(101L), "[CLS]");
            Assert.That(ids.AsSpan(i * 24, 24).ToArray(), Does.Contain(1010L), "the ',' joining the captions");
        }
        Assert.That(seg, Is.All.EqualTo(0L));
        // Reference and target images differ (different products), and both are normalised images (not all zero).
        Assert.That(b.RefImage.ToArray<float>(), Is.Not.EqualTo(b.TarImage.ToArray<float>()));
    }

    [Test]
    public void BbcLossIsOneDirectionalCrossEntropyOverTheBatch()
    {
        // c = [[1,0],[0,2],[1,1]], t = [[1,1],[0,1],[3,0]]: c·tᵀ = [[1,0,3],[2,2,0],[2,1,3]] (not symmetric in direction).
        double[,] c = { { 1, 0 }, { 0, 2 }, { 1, 1 } };
        double[,] t = { { 1, 1 }, { 0, 1 }, { 3, 0 } };
        // Float64 reference: mean over rows i of logsumexp_j(c_i·t_j) − c_i·t_i.
        double Loss(double[,] a, double[,] b)
        {
            double s = 0;
            for (int i = 0; i < 3; i++)
            {
                var l = Enumerable.Range(0, 3).Select(j => a[i, 0] * b[j, 0] + a[i, 1] * b[j, 1]).ToArray();
                double m = l.Max();
                s += m + Math.Log(l.Sum(v => Math.Exp(v - m))) - l[i];
            }
            return s / 3;
        }
        using var ct = Tensor.FromArray(new float[] { 1, 0, 0, 2, 1, 1 }, [3, 2]);
        using var tt = Tensor.FromArray(new float[] { 1, 1, 0, 1, 3, 0 }, [3, 2]);
        using var loss = FashionViLComposition.BbcLoss(ct, tt);
        double got = loss.ToArray<float>()[0];
        Assert.That(got, Is.EqualTo(Loss(c, t)).Within(1e-5));
        // One direction: the target → query loss differs here, and the symmetric average is not what we compute.
        Assert.That(Math.Abs(Loss(t, c) - Loss(c, t)), Is.GreaterThan(0.05));
        Assert.That(got, Is.Not.EqualTo(0.5 * (Loss(c, t) + Loss(t, c))).Within(1e-3));
    }

    [Test]
    public void EmbeddingsFollowTheReferenceFormulas()
    {
        var task = FashionIqTask.Create(Micro(_data), TextWriter.Null);
        var m = task.Composition;
        m.Eval();
        using var b = FirstBatch(task, 3);
        using var _ = GradMode.NoGrad();
        // Target: s · normalize(mean_g(W f_g + b)), by hand in float64 from the grid features.
        using var grid = m.ImageEncoder.Forward(b.TarImage);
        int g = grid.Size(1), cdim = grid.Size(2), h = 32;
        Assert.That(g, Is.EqualTo(4), "64 px → 2×2 grid");
        var f = grid.ToArray<float>();
        var w = m.Bert.Embeddings.Projection.Weight.ToArray<float>();
        var bias = m.Bert.Embeddings.Projection.Bias!.ToArray<float>();
        using var tgt = m.EmbedTargets(b.TarImage);
        var got = tgt.ToArray<float>();
        for (int i = 0; i < 3; i++)
        {
            var mean = new double[h];
            for (int k = 0; k < g; k++)
                for (int o = 0; o < h; o++)
                {
                    double s = bias[o];
                    for (int q = 0; q < cdim; q++) s += (double)w[o * cdim + q] * f[(i * g + k) * cdim + q];
                    mean[o] += s / g;
                }
            double norm = Math.Sqrt(mean.Sum(v => v * v));
            for (int o = 0; o < h; o++) Assert.That(got[i * h + o], Is.EqualTo(4.0 * mean[o] / norm).Within(1e-4), $"target {i},{o}");
        }
        // Query: 4 · normalize(mean of the last G positions of the joint sequence).
        using var refGrid = m.ImageEncoder.Forward(b.RefImage);
        using var mask = FashionViL.Model.FashionViLPretraining.JointMask(b.InputMask, g);
        var (seq, pooled) = m.Bert.JointEmbedding(b.InputIds, b.SegmentIds, refGrid, mask);
        int len = seq.Size(1);
        var sv = seq.ToArray<float>();
        seq.Dispose(); pooled.Dispose();
        using var comp = m.Compose(b.InputIds, b.SegmentIds, b.InputMask, b.RefImage);
        var cv = comp.ToArray<float>();
        for (int i = 0; i < 3; i++)
        {
            var mean = new double[h];
            for (int k = len - g; k < len; k++) for (int o = 0; o < h; o++) mean[o] += sv[(i * len + k) * h + o] / (double)g;
            double norm = Math.Sqrt(mean.Sum(v => v * v));
            for (int o = 0; o < h; o++) Assert.That(cv[i * h + o], Is.EqualTo(4.0 * mean[o] / norm).Within(1e-4), $"query {i},{o}");
        }
        // Padding positions are masked out: changing the ids there leaves the query unchanged.
        var ids = b.InputIds.ToArray<long>();
        var msk = b.InputMask.ToArray<long>();
        Assert.That(msk, Does.Contain(0L), "the batch has padding");
        for (int k = 0; k < ids.Length; k++) if (msk[k] == 0) ids[k] = 2000;
        using var ids2 = Tensor.FromArray(ids, b.InputIds.Shape);
        using var comp2 = m.Compose(ids2, b.SegmentIds, b.InputMask, b.RefImage);
        var c2 = comp2.ToArray<float>();
        for (int k = 0; k < cv.Length; k++) Assert.That(c2[k], Is.EqualTo(cv[k]).Within(1e-5));
    }

    [Test]
    public void StateDictHasTheReferenceNamesAndGroupsFollowTheReference()
    {
        var task = FashionIqTask.Create(Micro(_data), TextWriter.Null);
        var names = task.Model.NamedParameters().Select(p => p.Name).ToList();
        Assert.That(names, Does.Contain("model.norm_layer.norm_s"));
        Assert.That(names, Does.Contain("model.bert.embeddings.projection.weight"));
        Assert.That(names, Does.Contain("image_encoder.model.0.weight"));
        Assert.That(names, Does.Contain("model.bert.encoder.layer.0.attention.self.query.weight"));
        Assert.That(names.Where(n => !n.StartsWith("image_encoder.model.", StringComparison.Ordinal) && !n.StartsWith("model.bert.", StringComparison.Ordinal)),
            Is.EqualTo(new[] { "model.norm_layer.norm_s" }), "no heads besides the one normalisation layer");
        Assert.That(task.Composition.Model.NormLayer.Scale.ToArray<float>(), Is.EqualTo(new[] { 4f }));
        var groups = task.ParameterGroups(1e-5, 1e-4, 20);
        ParamGroup Of(string n) => groups.Single(gr => gr.Names.Contains(n));
        Assert.That(Of("image_encoder.model.0.weight").Lr, Is.EqualTo(2e-4).Within(1e-15));
        Assert.That(Of("image_encoder.model.1.bias").WeightDecay, Is.EqualTo(1e-4), "ResNet biases keep the default decay");
        Assert.That(Of("model.bert.embeddings.projection.weight").Lr, Is.EqualTo(2e-4).Within(1e-15));
        Assert.That(Of("model.bert.embeddings.projection.bias").WeightDecay, Is.EqualTo(0.0));
        Assert.That(Of("model.norm_layer.norm_s").Lr, Is.EqualTo(1e-5));
        Assert.That(Of("model.norm_layer.norm_s").WeightDecay, Is.EqualTo(1e-4));
        Assert.That(Of("model.bert.embeddings.LayerNorm.weight").WeightDecay, Is.EqualTo(0.0));
        Assert.That(Of("model.bert.encoder.layer.0.attention.self.query.weight").Lr, Is.EqualTo(1e-5));
        Assert.That(groups.Sum(gr => gr.Params.Count), Is.EqualTo(names.Count));
    }

    [Test]
    public void LossBackpropagatesAndFallsWhenFittingOneBatch()
    {
        // 32-pixel images (a 1×1 grid) keep this test fast; the path is the same.
        var task = FashionIqTask.Create(Micro(_data, "dataset_config.fashioniq.processors.image_processor.size=32"), TextWriter.Null);
        using var b = FirstBatch(task, 4);
        using var opt = new AdamW(task.ParameterGroups(2e-3, 0, 1));
        var gen = new Generator(5);
        double first = 0, last = 0;
        for (int s = 0; s < 5; s++)
        {
            opt.ZeroGrad();
            using var loss = task.Loss(b, Device.Cpu, gen);
            double v = loss.ToArray<float>()[0];
            Assert.That(double.IsFinite(v), $"step {s} loss {v}");
            loss.Backward();
            if (s == 0)
            {
                first = v;
                foreach (var n in new[] { "image_encoder.model.0.weight", "model.bert.embeddings.projection.weight", "model.norm_layer.norm_s", "model.bert.embeddings.word_embeddings.weight" })
                {
                    var p = task.Model.NamedParameters().Single(x => x.Name == n).Tensor;
                    Assert.That(p.Grad, Is.Not.Null, n);
                    Assert.That(p.Grad!.ToArray<float>().Any(x => x != 0), n + " has a non-zero gradient");
                }
                // Chance level of a 4-way classification: the first loss is near ln 4 with norm_s = 4 (|logits| ≤ 16).
                Assert.That(first, Is.LessThan(20));
            }
            last = v;
            opt.Step();
        }
        Assert.That(last, Is.LessThan(first * 0.7), $"loss {first} → {last} after 5 steps on one batch");
    }

    [Test]
    public void EvaluateReturnsTheSevenReferenceKeys()
    {
        var task = FashionIqTask.Create(Micro(_data), TextWriter.Null);
        var r = task.Evaluate("val", Device.Cpu, 0);
        Assert.That(r.Keys, Is.EquivalentTo(new[]
        {
            "r@k_fashioniq/dress_r@10", "r@k_fashioniq/dress_r@50", "r@k_fashioniq/shirt_r@10", "r@k_fashioniq/shirt_r@50",
            "r@k_fashioniq/toptee_r@10", "r@k_fashioniq/toptee_r@50", "r@k_fashioniq/avg",
        }));
        Assert.That(r.Values, Is.All.InRange(0.0, 1.0));
        Assert.That(task.Model.IsTraining, Is.True, "training mode restored");
        // Deterministic: the same numbers twice (test reads val).
        Assert.That(task.Evaluate("test", Device.Cpu, 1), Is.EquivalentTo(r));
    }
    [Test]
    public void FinetuneRunsTheCompositionTaskThroughTheGenericLoop()
    {
        var save = Path.Combine(Path.GetTempPath(), "fv-fashioniq-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            var c = Micro(_data, $"env.save_dir={save}", "model=fashionvil", "run_type=train_val", "training.experiment_name=fiq",
                "dataset_config.fashioniq.processors.image_processor.size=32", "dataset_config.fashioniq.num_workers=1",
                "training.batch_size=4", "training.max_updates=2", "training.evaluation_interval=2", "training.checkpoint_interval=2",
                "training.log_interval=1", "training.early_stop.criteria=fashioniq/r@k_fashioniq/avg",
                "checkpoint.resume_pretrained=false", "scheduler.params.use_warmup=false", "model_config.fashionvil.losses=[{type: bbc_loss}]");
            var r = FashionViL.Downstream.DownstreamTasks.Run(c, TextWriter.Null);
            Assert.That(r.Steps, Is.EqualTo(2));
            Assert.That(r.Test!.Keys, Is.SupersetOf(new[] { "r@k_fashioniq/avg", "r@k_fashioniq/dress_r@10", "r@k_fashioniq/toptee_r@50" }));
            Assert.That(r.BestCheckpoint, Does.Exist);
        }
        finally { if (Directory.Exists(save)) Directory.Delete(save, true); }
    }
}
