using FashionViL.Autograd;
using FashionViL.Config;
using FashionViL.Data;
using FashionViL.Data.Loading;
using FashionViL.Downstream.FashionGen;
using FashionViL.Synth;

namespace FashionViL.Tests.Downstream.FashionGen;

/// <summary>The two FashionGen tasks on small generated data with a micro model (1-layer 32-wide BERT, ResNet width 8, 64-px crops).</summary>
[NonParallelizable]
public class FashionGenTaskTests
{
    private static string _data = "";

    [OneTimeSetUp]
    public static void MakeData()
    {
        _data = Path.Combine(Path.GetTempPath(), "fv-fashiongen-data-" + Guid.NewGuid().ToString("N"));
        SyntheticDatasets.Generate(new SynthOptions(_data, 40, 11, 64, 0));
    }

    [OneTimeTearDown]
    public static void DropData() { if (Directory.Exists(_data)) Directory.Delete(_data, true); }

    internal static FvConfig Micro(string data, string head, params string[] extra)
    {
        var o = new List<string>
        {
            $"env.data_dir={data}", "datasets=fashiongen",
            "dataset_config.fashiongen.num_workers=2",
            "dataset_config.fashiongen.processors.image_processor.resize=72", "dataset_config.fashiongen.processors.image_processor.crop=64",
            "dataset_config.fashiongen.processors.text_processor.max_seq_length=24",
            "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,1]", "model_config.fashionvil.image_encoder.params.base_width=8",
            "model_config.fashionvil.bert.hidden_size=32", "model_config.fashionvil.bert.num_hidden_layers=1",
            "model_config.fashionvil.bert.num_attention_heads=2", "model_config.fashionvil.bert.intermediate_size=64",
            $"model_config.fashionvil.training_head_type={head}", "evaluation.batch_size=16", "training.seed=5",
        };
        o.AddRange(extra);
        return FvConfig.Load(null, o);
    }

    private static string RepoFile(string rel)
    {
        var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FashionViL.Native.sln"))) dir = dir.Parent;
        return Path.Combine(dir?.FullName ?? throw new DirectoryNotFoundException("repository root"), rel);
    }

    private static PrefetchLoader<FashionGenBatch> Loader(IFinetuneTaskLike t, int batch, long seed = 3) =>
        new(t.TrainCount, t.Build, new PrefetchLoaderOptions { BatchSize = batch, Workers = 2, Seed = seed });

    /// <summary>The bits of a task the loader needs (both tasks share the batch type).</summary>
    private sealed record IFinetuneTaskLike(int TrainCount, Func<BatchContext, FashionGenBatch> Build);

    // ------------------------------------------------------------------ configs

    [Test]
    public void ConfigsLoadAndMirrorTheReference()
    {
        var r = FvConfig.Load(RepoFile("configs/e2e_contrastive.yaml"));
        Assert.That(r.GetString("run_type"), Is.EqualTo("test"), "the released file says test");
        Assert.That(r.GetString("model_config.fashionvil.training_head_type"), Is.EqualTo("contrastive"));
        Assert.That(r.GetString("training.early_stop.criteria"), Is.EqualTo("fashiongen/r@k_general/avg"));
        Assert.That(r.GetInt("training.batch_size"), Is.EqualTo(64));
        Assert.That(r.GetInt("training.max_updates"), Is.EqualTo(75120));
        Assert.That(r.GetIntList("scheduler.params.lr_steps"), Is.EqualTo(new[] { 28170, 56340 }));
        Assert.That(r.GetDouble("optimizer.params.lr"), Is.EqualTo(1e-5));
        Assert.That(r.GetBool("checkpoint.resume_pretrained"), Is.True);
        Assert.That(r.GetStringMap("checkpoint.pretrained_state_mapping"),
            Is.EquivalentTo(new Dictionary<string, string?> { ["image_encoder"] = "image_encoder", ["model.bert"] = "model.bert" }));
        Assert.That(r.GetInt("dataset_config.fashiongen.processors.text_processor.max_seq_length"), Is.EqualTo(75));
        var rt = FvConfig.Load(RepoFile("configs/e2e_contrastive.yaml"), ["run_type=train_val"]);
        Assert.That(rt.GetString("run_type"), Is.EqualTo("train_val"));

        var c = FvConfig.Load(RepoFile("configs/e2e_classification.yaml"));
        Assert.That(c.GetString("run_type"), Is.EqualTo("train_val"));
        Assert.That(c.GetString("model_config.fashionvil.training_head_type"), Is.EqualTo("classification"));
        Assert.That(c.GetInt("model_config.fashionvil.num_labels"), Is.EqualTo(121));
        Assert.That(c.GetDouble("optimizer.params.lr"), Is.EqualTo(2e-5));
        Assert.That(c.GetBool("scheduler.params.use_warmup"), Is.False);
        Assert.That(c.GetString("training.early_stop.criteria"), Is.EqualTo("fashiongen/accuracy"));
        Assert.That(c.GetInt("training.batch_size"), Is.EqualTo(32));
        Assert.That(c.GetIntList("scheduler.params.lr_steps").Min(), Is.GreaterThan(c.GetInt("training.max_updates")), "constant lr in effect");
    }

    [Test]
    public void WrongHeadLossOrMissingDataIsNamed()
    {
        var e = Assert.Throws<ConfigException>(() => FashionGenRetrievalTask.Create(Micro(_data, "classification"), TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain("training_head_type").And.Contain("contrastive"));
        e = Assert.Throws<ConfigException>(() => FashionGenClassificationTask.Create(Micro(_data, "classification", "model_config.fashionvil.losses=[{type: contrastive_loss}]"), TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain("losses[0].type").And.Contain("cross_entropy"));
        var missing = Path.Combine(_data, "nowhere");
        using var t = FashionGenRetrievalTask.Create(Micro(missing, "contrastive"), TextWriter.Null);
        var f = Assert.Throws<FileNotFoundException>(() => _ = t.TrainCount)!;
        Assert.That(f.Message, Does.Contain(Path.Combine(missing, "datasets", "FashionGen/train_info.json")));
    }

    // ------------------------------------------------------------------ model names and parameter groups

    [Test]
    public void StateDictNamesAreTheReferenceOnes()
    {
        using var r = FashionGenRetrievalTask.Create(Micro(_data, "contrastive"), TextWriter.Null);
        var rs = r.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor);
        Assert.That(rs["model.norm_layer.norm_s"].ToArray<float>(), Is.EqualTo(new[] { 4f }));
        Assert.That(rs.Keys.Count(k => k.Contains("norm_s")), Is.EqualTo(1), "one NormalizationLayer shared by both towers");
        Assert.That(rs["model.bert.embeddings.projection.weight"].Shape, Is.EqualTo(new[] { 32, 256 }));
        Assert.That(rs.Keys.Where(k => !k.StartsWith("image_encoder.model.") && !k.StartsWith("model.bert.")), Is.EquivalentTo(new[] { "model.norm_layer.norm_s" }));

        using var c = FashionGenClassificationTask.Create(Micro(_data, "classification"), TextWriter.Null);
        var cs = c.Model.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Shape);
        Assert.That(cs.Keys.Where(k => !k.StartsWith("image_encoder.model.") && !k.StartsWith("model.bert.")), Is.EquivalentTo(new[]
        {
            "model.classifier.0.dense.weight", "model.classifier.0.dense.bias", "model.classifier.0.LayerNorm.weight", "model.classifier.0.LayerNorm.bias",
            "model.classifier.1.weight", "model.classifier.1.bias",
        }));
        Assert.That(cs["model.classifier.1.weight"], Is.EqualTo(new[] { 121, 32 }));
        Assert.That(c.Net.Model.Classifier[0] is FashionViL.Nn.Models.BertPredictionHeadTransform h && h.LayerNorm.Eps == 1e-12);
        // PyTorch default Linear init: U(±1/√fan_in) for weight and bias (not HF's N(0, 0.02) with zero bias).
        var w = c.Net.Model.Classifier.NamedParameters().First(p => p.Name == "1.bias").Tensor.ToArray<float>();
        Assert.That(w.All(v => Math.Abs(v) <= 1 / Math.Sqrt(32) + 1e-7) && w.Count(v => v != 0) > 100);
    }

    [Test]
    public void ParameterGroupsFollowTheReference()
    {
        using var r = FashionGenRetrievalTask.Create(Micro(_data, "contrastive"), TextWriter.Null);
        var rg = r.ParameterGroups(1e-5, 1e-4, 20).SelectMany(g => g.Names.Select(n => (n, g.LrMultiplier, g.WeightDecay))).ToDictionary(x => x.n);
        Assert.That(rg.Count, Is.EqualTo(r.Model.NamedParameters().Count()));
        Assert.That(rg["image_encoder.model.0.weight"], Is.EqualTo(("image_encoder.model.0.weight", 20.0, 1e-4)));
        Assert.That(rg["image_encoder.model.1.bias"], Is.EqualTo(("image_encoder.model.1.bias", 20.0, 1e-4)), "ResNet biases/BN keep the decay");
        Assert.That(rg["model.bert.embeddings.projection.weight"].Item2, Is.EqualTo(20.0));
        Assert.That(rg["model.bert.embeddings.projection.bias"], Is.EqualTo(("model.bert.embeddings.projection.bias", 20.0, 0.0)));
        Assert.That(rg["model.norm_layer.norm_s"], Is.EqualTo(("model.norm_layer.norm_s", 1.0, 1e-4)));
        Assert.That(rg["model.bert.encoder.layer.0.attention.self.query.weight"], Is.EqualTo(("model.bert.encoder.layer.0.attention.self.query.weight", 1.0, 1e-4)));
        Assert.That(rg["model.bert.embeddings.LayerNorm.weight"], Is.EqualTo(("model.bert.embeddings.LayerNorm.weight", 1.0, 0.0)));

        using var c = FashionGenClassificationTask.Create(Micro(_data, "classification"), TextWriter.Null);
        var cg = c.ParameterGroups(2e-5, 1e-4, 20).SelectMany(g => g.Names.Select(n => (n, g.LrMultiplier, g.WeightDecay))).ToDictionary(x => x.n);
        Assert.That(cg["model.classifier.0.dense.weight"], Is.EqualTo(("model.classifier.0.dense.weight", 20.0, 1e-4)));
        Assert.That(cg["model.classifier.0.LayerNorm.weight"], Is.EqualTo(("model.classifier.0.LayerNorm.weight", 20.0, 0.0)));
        Assert.That(cg["model.classifier.1.bias"], Is.EqualTo(("model.classifier.1.bias", 20.0, 0.0)));
        Assert.That(cg["model.bert.pooler.dense.weight"], Is.EqualTo(("model.bert.pooler.dense.weight", 1.0, 1e-4)));
    }

    // ------------------------------------------------------------------ data

    [Test]
    public void TrainBatchHoldsOneImageAndTheTextOfEachProductDeterministically()
    {
        using var t = FashionGenClassificationTask.Create(Micro(_data, "classification"), TextWriter.Null);
        var products = t.Data.Split("train");
        var like = new IFinetuneTaskLike(t.TrainCount, t.BuildTrainBatch);
        using var l1 = Loader(like, 8);
        using var l2 = Loader(like, 8);
        var order = l1.EpochOrder(0).Take(8).ToArray();
        using var b = l1.Next();
        using var b2 = l2.Next();
        Assert.That(b.Image.Shape, Is.EqualTo(new[] { 8, 3, 64, 64 }));
        Assert.That(b.InputIds.Shape, Is.EqualTo(new[] { 8, 24 }));
        Assert.That(b.InputMask.Shape, Is.EqualTo(new[] { 8, 24 }));
        Assert.That(b.Ids, Is.EqualTo(order.Select(i => products[i].Id)));
        Assert.That(b.Targets.ToArray<long>(), Is.EqualTo(order.Select(i => (long)products[i].SubcategoryId!.Value)));
        var ids = b.InputIds.ToArray<long>();
        var mask = b.InputMask.ToArray<long>();
        for (int r = 0; r < 8; r++)
        {
            var enc = BertTextTokenizer.Default.Encode(products[order[r]].Text, 24);
            Assert.That(ids.Skip(r * 24).Take(24), Is.EqualTo(enc.InputIds), $"row {r}: unmasked text of its product");
            Assert.That(mask.Skip(r * 24).Take(24), Is.EqualTo(enc.InputMask));
            Assert.That(ids[r * 24], Is.EqualTo(101L));
        }
        Assert.That(b2.Image.ToArray<float>(), Is.EqualTo(b.Image.ToArray<float>()), "same seed and position → same batch");
        using var l3 = Loader(like, 8, seed: 4);
        using var b3 = l3.Next();
        Assert.That(b3.Image.ToArray<float>(), Is.Not.EqualTo(b.Image.ToArray<float>()));
    }

    [Test]
    public void EvaluationHasARowForEveryImageWithItsProductText()
    {
        using var t = FashionGenClassificationTask.Create(Micro(_data, "classification", "evaluation.max_items=4"), TextWriter.Null);
        var products = t.Data.Split("val");
        var rows = FashionGenData.EvalRows(products);
        int images = products.Sum(p => p.Images.Count);
        Assert.That(rows.Count, Is.EqualTo(images));
        Assert.That(images, Is.GreaterThan(products.Count), "the generated products have several images");
        var multi = products.Select((p, i) => (p, i)).First(x => x.p.Images.Count > 1).i;
        var sel = rows.Where(r => r.Product == multi).ToList();
        using var b = t.Data.BuildEvalBatch(products, sel);
        Assert.That(b.Ids, Is.All.EqualTo(products[multi].Id));
        var ids = b.InputIds.ToArray<long>();
        int len = 24;
        for (int k = 1; k < sel.Count; k++) Assert.That(ids.Skip(k * len).Take(len), Is.EqualTo(ids.Take(len)), "text repeated per image");
        var img = b.Image.ToArray<float>();
        int n = 3 * 64 * 64;
        Assert.That(img.Skip(n).Take(n), Is.Not.EqualTo(img.Take(n)), "different images of the product");

        var (yTrue, yPred) = t.Predict("val", Device.Cpu);
        Assert.That(yTrue.Length, Is.EqualTo(images));
        Assert.That(yPred.Length, Is.EqualTo(images));
        Assert.That(yTrue, Is.EqualTo(rows.Select(r => (long)products[r.Product].SubcategoryId!.Value)));
        var m = t.Evaluate("val", Device.Cpu, 1);
        Assert.That(m.Keys, Is.EquivalentTo(new[] { "accuracy", "macro_f1" }));
        Assert.That(m["accuracy"], Is.EqualTo(yTrue.Zip(yPred).Count(x => x.First == x.Second) / (double)images).Within(1e-12));
    }

    [Test]
    public void RetrievalEvaluationEmbedsEveryImageAndEveryTextOnce()
    {

        using var rt = FashionGenRetrievalTask.Create(Micro(_data, "contrastive", "evaluation.max_items=5"), TextWriter.Null);
        var vp = rt.Data.Split("val");
        Assert.That(vp.Count, Is.EqualTo(5), "evaluation.max_items cuts the products");
        var vrows = FashionGenData.EvalRows(vp);
        var (ie, te) = rt.Embed(vp, vrows, Device.Cpu);
        using (ie) using (te)
        {
            Assert.That(ie.Shape, Is.EqualTo(new[] { vp.Sum(p => p.Images.Count), 32 }));
            Assert.That(te.Shape, Is.EqualTo(new[] { 5, 32 }));
            var norms = ie.ToArray<float>().Chunk(32).Select(r => Math.Sqrt(r.Sum(x => (double)x * x)));
            Assert.That(norms, Is.All.EqualTo(4.0).Within(1e-4), "rows are s·unit vectors with s = 4");
        }
        var rm = rt.Evaluate("val", Device.Cpu, 1);
        var keys = new[] { "i2t_r@1", "i2t_r@5", "i2t_r@10", "t2i_r@1", "t2i_r@5", "t2i_r@10", "avg" };
        Assert.That(rm.Keys, Is.EquivalentTo(keys.Select(k => "r@k_kaleido/" + k).Concat(keys.Select(k => "r@k_general/" + k))));
        // 5 products: the text gallery (5 rows) fits in the top 10, so image→text R@10 is 1 in the full-gallery protocol.
        Assert.That(rm["r@k_general/i2t_r@10"], Is.EqualTo(1.0));
    }

    // ------------------------------------------------------------------ losses

    [Test]
    public void ContrastiveLossIsSymmetricInfoNceOfTheTwoTowers()
    {
        using var t = FashionGenRetrievalTask.Create(Micro(_data, "contrastive"), TextWriter.Null);
        using var loader = Loader(new IFinetuneTaskLike(t.TrainCount, t.BuildTrainBatch), 6);
        using var b = loader.Next();
        t.Model.Eval();   // no dropout: the loss must equal the float64 reference on the same vectors
        using var v = t.Net.ImageVectors(b.Image);
        using var x = t.Net.TextVectors(b.InputIds, b.SegmentIds, b.InputMask);
        double expected = InfoNce(v.ToArray<float>(), x.ToArray<float>(), 6, 32);
        using var loss = t.Loss(b, Device.Cpu, new Generator(1));
        Assert.That(loss.Shape, Is.Empty);
        Assert.That(loss.Item(), Is.EqualTo(expected).Within(1e-4 * Math.Max(1, expected)));

        t.Model.Train();
        var g = new Generator(9);
        using var l2 = t.Loss(b, Device.Cpu, g);
        Assert.That(g.Offset, Is.GreaterThan(0UL), "dropout draws advance the generator passed in");
        l2.Backward();
        foreach (var name in new[] { "image_encoder.model.0.weight", "model.bert.embeddings.projection.weight", "model.norm_layer.norm_s", "model.bert.encoder.layer.0.output.dense.weight" })
        {
            var p = t.Model.NamedParameters().First(q => q.Name == name).Tensor;
            Assert.That(p.Grad, Is.Not.Null, name);
            Assert.That(p.Grad!.ToArray<float>().Any(z => z != 0), name);
        }
    }

    private static double InfoNce(float[] a, float[] b, int n, int d)
    {
        double Dir(float[] q, float[] k)
        {
            double total = 0;
            for (int i = 0; i < n; i++)
            {
                var logits = new double[n];
                for (int j = 0; j < n; j++) for (int e = 0; e < d; e++) logits[j] += (double)q[i * d + e] * k[j * d + e];
                double m = logits.Max();
                total += -(logits[i] - m - Math.Log(logits.Sum(z => Math.Exp(z - m))));
            }
            return total / n;
        }
        return 0.5 * (Dir(a, b) + Dir(b, a));
    }

    [Test]
    public void ClassificationLossIsCrossEntropyOfTheJointPooledHead()
    {
        using var t = FashionGenClassificationTask.Create(Micro(_data, "classification"), TextWriter.Null);
        using var loader = Loader(new IFinetuneTaskLike(t.TrainCount, t.BuildTrainBatch), 4);
        using var b = loader.Next();
        t.Model.Eval();
        using var logits = t.Net.Logits(b.Image, b.InputIds, b.SegmentIds, b.InputMask);
        Assert.That(logits.Shape, Is.EqualTo(new[] { 4, 121 }));
        var z = logits.ToArray<float>();
        var y = b.Targets.ToArray<long>();
        double expected = 0;
        for (int i = 0; i < 4; i++)
        {
            var row = z.Skip(i * 121).Take(121).Select(v => (double)v).ToArray();
            double m = row.Max();
            expected += -(row[y[i]] - m - Math.Log(row.Sum(v => Math.Exp(v - m))));
        }
        expected /= 4;
        using var loss = t.Loss(b, Device.Cpu, new Generator(1));
        Assert.That(loss.Item(), Is.EqualTo(expected).Within(1e-5 * expected));
        // Fresh head: logits are small (LayerNorm output times U(±1/√32) weights: std ≈ 0.6), so the loss is near ln 121 = 4.80.
        Assert.That(expected, Is.InRange(Math.Log(121) - 0.5, Math.Log(121) + 1.5));

        // Image tokens change the logits: the text [CLS] attends to the visual tokens (joint mask [input_mask, ones]).
        using var rev = Tensor.FromArray(new long[] { 3, 2, 1, 0 }, [4], Device.Cpu);
        using var other = b.Image.IndexSelect(0, rev);
        using var logits2 = t.Net.Logits(other, b.InputIds, b.SegmentIds, b.InputMask);
        Assert.That(logits2.ToArray<float>(), Is.Not.EqualTo(z));
    }

    // ------------------------------------------------------------------ through the generic loop

    [Test]
    public void FinetuneRunsTheClassificationTaskThroughTheGenericLoop()
    {
        var save = Path.Combine(Path.GetTempPath(), "fv-fashiongen-save-" + Guid.NewGuid().ToString("N"));
        try
        {
            var c = Micro(_data, "classification", $"env.save_dir={save}", "model=fashionvil", "run_type=train_val", "training.experiment_name=fg",
                "training.batch_size=2", "training.max_updates=2", "training.evaluation_interval=2", "training.checkpoint_interval=2",
                "training.log_interval=1", "training.early_stop.criteria=fashiongen/accuracy", "evaluation.max_items=2",
                "checkpoint.resume_pretrained=false", "scheduler.params.use_warmup=false", "model_config.fashionvil.losses=[{type: cross_entropy}]");
            var r = FashionViL.Downstream.DownstreamTasks.Run(c, TextWriter.Null);
            Assert.That(r.Steps, Is.EqualTo(2));
            Assert.That(r.Test!.Keys, Is.SupersetOf(new[] { "accuracy", "macro_f1" }));
            Assert.That(r.BestCheckpoint, Does.Exist);
        }
        finally { if (Directory.Exists(save)) Directory.Delete(save, true); }
    }
}
