using FashionViL.Config;
using FashionViL.Downstream;
using FashionViL.Downstream.FashionGen;
using FashionViL.Downstream.FashionIq;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Synth;
using FashionViL.Tests.Downstream.FashionGen;
using FashionViL.Tests.Downstream.FashionIq;
using FashionViL.Training;

namespace FashionViL.Tests.Downstream;

/// <summary>
/// Without a FashionViL checkpoint the FashionViL fine-tunes start from the torchvision ResNet-50 and HF BERT files named by
/// the pre-training keys. The files here are written in the real key layouts (torchvision <c>resnet50</c> state dict names;
/// HF <c>BertForPreTraining</c> <c>model.safetensors</c> names with <c>position_ids</c>, the MLM and NSP heads), with tiny
/// sizes and closed-form values (sin(0.3·i + len(key)), as tools/fixtures/make_mapping_fixtures.py).
/// </summary>
[NonParallelizable]
public class BaseWeightsTests
{
    private const int W = 4, H = 32, I = 64, P = 512, T = 2, V = 30522;   // ResNet width, BERT hidden/intermediate/positions/types/vocab
    private static string _data = "", _dir = "", _resnet = "", _bert = "";

    [OneTimeSetUp]
    public static void MakeFiles()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fv-baseweights-" + Guid.NewGuid().ToString("N"));
        _data = Path.Combine(_dir, "data");
        SyntheticDatasets.Generate(new SynthOptions(_data, 24, 5, 48, 0));
        _resnet = Path.Combine(_dir, "resnet50-tv.safetensors");
        _bert = Path.Combine(_dir, "bert-base-uncased", "model.safetensors");
        Directory.CreateDirectory(Path.GetDirectoryName(_bert)!);
        Write(_resnet, TorchvisionResNet());
        Write(_bert, HfBert());
    }

    [OneTimeTearDown]
    public static void Drop() { if (Directory.Exists(_dir)) Directory.Delete(_dir, true); }

    // ------------------------------------------------------------------ files in the real layouts

    /// <summary>torchvision resnet50 names (conv1, bn1, layerL.b.{conv,bn}{1,2,3}, layerL.0.downsample.{0,1}, fc) for blocks
    /// [1,1,1,3] (layer4.2 exists, as the mapping requires of a ResNet-50 file) and base width <see cref="W"/>.</summary>
    private static List<(string Key, int[] Shape)> TorchvisionResNet()
    {
        var k = new List<(string, int[])> { ("conv1.weight", [W, 3, 7, 7]) };
        void Bn(string p, int c)
        {
            k.Add((p + ".weight", [c])); k.Add((p + ".bias", [c])); k.Add((p + ".running_mean", [c])); k.Add((p + ".running_var", [c]));
            k.Add((p + ".num_batches_tracked", []));
        }
        Bn("bn1", W);
        int[] blocks = [1, 1, 1, 3];
        int inC = W;
        for (int l = 0; l < 4; l++)
        {
            int planes = W << l, outC = 4 * planes;
            for (int b = 0; b < blocks[l]; b++)
            {
                var p = $"layer{l + 1}.{b}.";
                k.Add((p + "conv1.weight", [planes, b == 0 ? inC : outC, 1, 1])); Bn(p + "bn1", planes);
                k.Add((p + "conv2.weight", [planes, planes, 3, 3])); Bn(p + "bn2", planes);
                k.Add((p + "conv3.weight", [outC, planes, 1, 1])); Bn(p + "bn3", outC);
                if (b == 0) { k.Add((p + "downsample.0.weight", [outC, inC, 1, 1])); Bn(p + "downsample.1", outC); }
            }
            inC = outC;
        }
        k.Add(("fc.weight", [1000, inC])); k.Add(("fc.bias", [1000]));
        return k;
    }

    /// <summary>HF BertForPreTraining names (new layout, as in model.safetensors: no tied decoder weight) for a 1-layer BERT.</summary>
    private static List<(string Key, int[] Shape)> HfBert()
    {
        var k = new List<(string, int[])>
        {
            ("bert.embeddings.position_ids", [1, P]),
            ("bert.embeddings.word_embeddings.weight", [V, H]), ("bert.embeddings.position_embeddings.weight", [P, H]),
            ("bert.embeddings.token_type_embeddings.weight", [T, H]),
            ("bert.embeddings.LayerNorm.weight", [H]), ("bert.embeddings.LayerNorm.bias", [H]),
        };
        const string l = "bert.encoder.layer.0.";
        foreach (var q in new[] { "query", "key", "value" }) { k.Add(($"{l}attention.self.{q}.weight", [H, H])); k.Add(($"{l}attention.self.{q}.bias", [H])); }
        k.AddRange([
            ($"{l}attention.output.dense.weight", [H, H]), ($"{l}attention.output.dense.bias", [H]),
            ($"{l}attention.output.LayerNorm.weight", [H]), ($"{l}attention.output.LayerNorm.bias", [H]),
            ($"{l}intermediate.dense.weight", [I, H]), ($"{l}intermediate.dense.bias", [I]),
            ($"{l}output.dense.weight", [H, I]), ($"{l}output.dense.bias", [H]),
            ($"{l}output.LayerNorm.weight", [H]), ($"{l}output.LayerNorm.bias", [H]),
            ("bert.pooler.dense.weight", [H, H]), ("bert.pooler.dense.bias", [H]),
            ("cls.predictions.bias", [V]), ("cls.predictions.decoder.bias", [V]),
            ("cls.predictions.transform.dense.weight", [H, H]), ("cls.predictions.transform.dense.bias", [H]),
            ("cls.predictions.transform.LayerNorm.weight", [H]), ("cls.predictions.transform.LayerNorm.bias", [H]),
            ("cls.seq_relationship.weight", [2, H]), ("cls.seq_relationship.bias", [2]),
        ]);
        return k;
    }

    /// <summary>The value a file holds under <paramref name="key"/> (float keys: sin(0.3·i + len(key)); the tied decoder bias
    /// equals <c>cls.predictions.bias</c>).</summary>
    private static float[] Val(string key, int n)
    {
        if (key == "cls.predictions.decoder.bias") key = "cls.predictions.bias";
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)Math.Sin(0.3 * i + key.Length);
        return a;
    }

    private static void Write(string path, List<(string Key, int[] Shape)> keys, Func<string, bool>? skip = null, Func<string, int[], int[]>? reshape = null)
    {
        var d = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (key, shape0) in keys)
        {
            if (skip?.Invoke(key) == true) continue;
            var shape = reshape?.Invoke(key, shape0) ?? shape0;
            int n = shape.Aggregate(1, (x, y) => x * y);
            d[key] = key.EndsWith("num_batches_tracked", StringComparison.Ordinal) ? Tensor.FromArray([(long)key.Length], shape)
                : key.EndsWith("position_ids", StringComparison.Ordinal) ? Tensor.FromArray(Enumerable.Range(0, n).Select(i => (long)i).ToArray(), shape)
                : Tensor.FromArray(Val(key, n), shape);
        }
        SafeTensors.Save(path, d);
        foreach (var t in d.Values) t.Dispose();
    }

    // ------------------------------------------------------------------ configs

    private static readonly string[] Sizes =
    [
        "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,3]", "model_config.fashionvil.image_encoder.params.base_width=4",
        "dataset_config.fashiongen.processors.image_processor.resize=36", "dataset_config.fashiongen.processors.image_processor.crop=32",
        "dataset_config.fashiongen.processors.text_processor.max_seq_length=16", "dataset_config.fashiongen.num_workers=1",
        "dataset_config.fashioniq.processors.image_processor.size=32", "dataset_config.fashioniq.num_workers=1",
        "dataset_config.fashioniq.processors.text_processor.params.max_seq_length=16",
    ];

    private static string[] Files(string? resnet = null, string? bert = null) =>
        [$"model_config.fashionvil.image_encoder.params.pretrained_path={resnet ?? _resnet}", $"model_config.fashionvil.bert.pretrained_path={bert ?? _bert}"];

    private static FvConfig Gen(string head, params string[] extra) => FashionGenTaskTests.Micro(_data, head, [.. Sizes, .. extra]);

    private static float[] F(Module m, string key) => m.StateDict()[key].ToArray<float>();

    /// <summary>Every image-encoder and BERT tensor holds the file's value under its torchvision / HF name; the visual
    /// tables are copies of the text tables; <paramref name="fresh"/> keys kept their fresh init.</summary>
    private static void AssertLoaded(Module model, Dictionary<string, float[]> freshBefore)
    {
        var sd = model.StateDict();
        var tv = TorchvisionResNet().ToDictionary(k => k.Key, k => k.Shape);
        var map = new Dictionary<string, string> { ["conv1"] = "0", ["bn1"] = "1", ["layer1"] = "4", ["layer2"] = "5", ["layer3"] = "6", ["layer4"] = "7" };
        int n = 0;
        foreach (var (key, shape) in tv)
        {
            if (key.StartsWith("fc.", StringComparison.Ordinal)) continue;
            var dot = key.IndexOf('.');
            var ours = "image_encoder.model." + map[key[..dot]] + key[dot..];
            Assert.That(sd.ContainsKey(ours), ours);
            if (key.EndsWith("num_batches_tracked", StringComparison.Ordinal)) Assert.That(sd[ours].ToArray<long>(), Is.EqualTo(new[] { (long)key.Length }), ours);
            else Assert.That(sd[ours].ToArray<float>(), Is.EqualTo(Val(key, shape.Aggregate(1, (x, y) => x * y))), ours);
            n++;
        }
        Assert.That(sd.Keys.Count(k => k.StartsWith("image_encoder.", StringComparison.Ordinal)), Is.EqualTo(n), "every image-encoder tensor comes from the file");
        foreach (var (key, shape) in HfBert())
        {
            if (!key.StartsWith("bert.", StringComparison.Ordinal) || key.EndsWith("position_ids", StringComparison.Ordinal)) continue;
            var ours = "model." + key;
            Assert.That(sd[ours].ToArray<float>(), Is.EqualTo(Val(key, shape.Aggregate(1, (x, y) => x * y))), ours);
        }
        Assert.That(F(model, "model.bert.embeddings.position_embeddings_visual.weight"), Is.EqualTo(Val("bert.embeddings.position_embeddings.weight", P * H)));
        Assert.That(F(model, "model.bert.embeddings.token_type_embeddings_visual.weight"), Is.EqualTo(Val("bert.embeddings.token_type_embeddings.weight", T * H)));
        foreach (var (k, v) in freshBefore) Assert.That(F(model, k), Is.EqualTo(v), $"{k} keeps its fresh init");
    }

    private static Dictionary<string, float[]> Fresh(Module model) => model.StateDict()
        .Where(kv => kv.Value.DType == DType.Float32 && !kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal) &&
                     (!kv.Key.StartsWith("model.bert.", StringComparison.Ordinal) || kv.Key.Contains("embeddings.projection", StringComparison.Ordinal)))
        .ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>());

    // ------------------------------------------------------------------ tests

    [Test]
    public void AllThreeFashionViLModelsLoadTheTorchvisionAndHfFiles()
    {
        var c = Gen("contrastive", Files());
        using var r = FashionGenRetrievalTask.Create(c, TextWriter.Null);
        using var k = FashionGenClassificationTask.Create(Gen("classification", Files()), TextWriter.Null);
        using var q = FashionIqTask.Create(FashionIqTaskTests.Micro(_data, [.. Sizes, .. Files()]), TextWriter.Null);
        foreach (var (name, model) in new (string, Module)[] { ("contrastive", r.Model), ("classification", k.Model), ("composition", q.Model) })
        {
            var fresh = Fresh(model);
            Assert.That(fresh.Keys, Has.Some.Contains("embeddings.projection"), name);
            Assert.That(fresh.Keys, Has.Some.StartsWith(name == "classification" ? "model.classifier." : "model.norm_layer."), name);
            var log = new StringWriter();
            int n = BaseWeights.Load(name == "composition" ? FashionIqTaskTests.Micro(_data, [.. Sizes, .. Files()]) : c, model, log);
            Assert.That(n, Is.GreaterThan(50), name);
            AssertLoaded(model, fresh);
            Assert.That(log.ToString(), Does.Contain("loaded ResNet-50 weights from " + _resnet).And.Contain("loaded BERT weights (bert-base-uncased) from " + _bert), name);
        }
    }

    [Test]
    public void TheLoopLoadsThemOnlyWithoutAFashionViLCheckpoint()
    {
        var save = Path.Combine(_dir, "save-" + Guid.NewGuid().ToString("N"));
        string[] run = [$"env.save_dir={save}", "run_type=train", "training.batch_size=2", "training.max_updates=1", "training.checkpoint_interval=1",
            "training.evaluation_interval=0", "training.early_stop.criteria=fashiongen/accuracy", "checkpoint.resume_pretrained=false",
            "optimizer.params.lr=0", "scheduler.params.use_warmup=false"];
        var log = new StringWriter();
        var r = DownstreamTasks.Run(Gen("classification", [.. run, "training.experiment_name=a", .. Files()]), log);
        Assert.That(log.ToString(), Does.Contain("loaded ResNet-50 weights from " + _resnet).And.Contain("loaded BERT weights (bert-base-uncased) from " + _bert));
        using (var f = TrainingCheckpoint.Read(r.CurrentCheckpoint!))   // lr 0: the weights are the files' (BN statistics moved)
        {
            Assert.That(f.Model["image_encoder.model.7.2.conv3.weight"].ToArray<float>(), Is.EqualTo(Val("layer4.2.conv3.weight", 4 * W * 8 * W * 8)));
            Assert.That(f.Model["model.bert.encoder.layer.0.attention.self.query.weight"].ToArray<float>(), Is.EqualTo(Val("bert.encoder.layer.0.attention.self.query.weight", H * H)));
        }
        // A FashionViL checkpoint (resume_pretrained) or a full resume wins: the base files are not even opened.
        var missing = Path.Combine(_dir, "no-such-resnet.pth");
        var log2 = new StringWriter();
        DownstreamTasks.Run(Gen("classification", [.. run, "training.experiment_name=b", .. Files(resnet: missing), "checkpoint.resume_pretrained=true",
            $"checkpoint.resume_file={r.CurrentCheckpoint}"]), log2);
        Assert.That(log2.ToString(), Does.Not.Contain("loaded ResNet-50").And.Contain("pre-trained tensors from " + r.CurrentCheckpoint));
        // Without any file named: fresh init, said so.
        var log3 = new StringWriter();
        DownstreamTasks.Run(Gen("classification", [.. run, "training.experiment_name=c"]), log3);
        Assert.That(log3.ToString(), Does.Contain("image encoder: fresh init").And.Contain("BERT: fresh init"));
    }

    /// <summary>torchvision's resnet50-19c8e357.pth (named in the configs) predates PyTorch 0.4.1 and has no
    /// <c>num_batches_tracked</c>; torch's BatchNorm loads such a file with the counters at 0. So must we, for fine-tuning
    /// (<see cref="BaseWeights"/>) and pre-training (<see cref="PretrainSetup.BuildModel"/>).</summary>
    [Test]
    public void ALegacyTorchvisionFileWithoutBatchCountersLoadsThemAsZero()
    {
        var legacy = Path.Combine(_dir, "resnet50-legacy.safetensors");
        Write(legacy, TorchvisionResNet(), skip: k => k.EndsWith(".num_batches_tracked", StringComparison.Ordinal));
        using var t = FashionGenClassificationTask.Create(Gen("classification"), TextWriter.Null);
        BaseWeights.Load(Gen("classification", Files()), t.Model, TextWriter.Null);   // counters = len(key) from the full file
        var counters = t.Model.StateDict().Where(kv => kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal) && kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal)).ToList();
        Assert.That(counters, Has.Count.EqualTo(TorchvisionResNet().Count(k => k.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal))));
        Assert.That(counters.All(kv => kv.Value.ToArray<long>()[0] > 0), "the full file set every counter");
        BaseWeights.Load(Gen("classification", Files(resnet: legacy)), t.Model, TextWriter.Null);
        foreach (var (k, v) in t.Model.StateDict().Where(kv => kv.Key.EndsWith(".num_batches_tracked", StringComparison.Ordinal) && kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal)))
            Assert.That(v.ToArray<long>(), Is.EqualTo(new[] { 0L }), k);
        Assert.That(F(t.Model, "image_encoder.model.7.2.conv3.weight"), Is.EqualTo(Val("layer4.2.conv3.weight", 4 * W * 8 * W * 8)));

        // Pre-training reads the same key with the same mapping.
        var c = FvConfig.Load(null, [$"env.data_dir={_data}", "model_config.fashionvil.image_encoder.params.blocks=[1,1,1,3]",
            "model_config.fashionvil.image_encoder.params.base_width=4", $"model_config.fashionvil.image_encoder.params.pretrained_path={legacy}",
            "model_config.fashionvil.bert.pretrained_path=", "model_config.fashionvil.bert.hidden_size=32", "model_config.fashionvil.bert.num_hidden_layers=1",
            "model_config.fashionvil.bert.num_attention_heads=2", "model_config.fashionvil.bert.intermediate_size=64",
            "model_config.fashionvil.image_tokenizer.params.pretrained_path="]);
        var log = new StringWriter();
        var p = PretrainSetup.BuildModel(c, PretrainSetup.ModelConfig(c), new Generator(3), log);
        Assert.That(log.ToString(), Does.Contain("loaded ResNet-50 weights from " + legacy));
        Assert.That(F(p, "image_encoder.model.7.2.conv3.weight"), Is.EqualTo(Val("layer4.2.conv3.weight", 4 * W * 8 * W * 8)));
        Assert.That(p.StateDict()["image_encoder.model.1.num_batches_tracked"].ToArray<long>(), Is.EqualTo(new[] { 0L }));
    }

    /// <summary>CSA-Net (OCIR) without a FashionViL checkpoint takes the torchvision file from its own key; everything else
    /// stays fresh.</summary>
    [Test]
    public void CsaNetLoadsTheTorchvisionFileFromItsOwnKey()
    {
        string[] sizes = ["model_config.csa_net.image_encoder.params.blocks=[1,1,1,3]", "model_config.csa_net.image_channel=128"];
        var c = FashionViL.Tests.Downstream.Ocir.OcirTaskTests.Micro(_data, [.. sizes, $"model_config.csa_net.image_encoder.params.pretrained_path={_resnet}"]);
        using var task = FashionViL.Downstream.Ocir.OcirTask.Create(c, TextWriter.Null);
        var fresh = task.Model.StateDict().Where(kv => !kv.Key.StartsWith("image_encoder.", StringComparison.Ordinal) && kv.Value.DType == DType.Float32)
            .ToDictionary(kv => kv.Key, kv => kv.Value.ToArray<float>());
        Assert.That(fresh.Keys, Has.Some.StartsWith("proj_layer.").And.Some.StartsWith("fusion_module."));
        var log = new StringWriter();
        int n = BaseWeights.Load(c, task.Model, log);
        Assert.That(log.ToString(), Does.Contain("loaded ResNet-50 weights from " + _resnet).And.Contain("model_config.csa_net.image_encoder.params.pretrained_path"));
        var sd = task.Model.StateDict();
        Assert.That(n, Is.EqualTo(sd.Keys.Count(k => k.StartsWith("image_encoder.", StringComparison.Ordinal))));
        Assert.That(F(task.Model, "image_encoder.model.7.2.conv3.weight"), Is.EqualTo(Val("layer4.2.conv3.weight", 4 * W * 8 * W * 8)));
        Assert.That(F(task.Model, "image_encoder.model.0.weight"), Is.EqualTo(Val("conv1.weight", W * 3 * 7 * 7)));
        Assert.That(F(task.Model, "image_encoder.model.5.0.bn2.running_var"), Is.EqualTo(Val("layer2.0.bn2.running_var", 2 * W)));
        foreach (var (k, v) in fresh) Assert.That(F(task.Model, k), Is.EqualTo(v), $"{k} keeps its fresh init");

        // Without the key: fresh init, said so; a missing file names the key.
        var log2 = new StringWriter();
        Assert.That(BaseWeights.Load(FashionViL.Tests.Downstream.Ocir.OcirTaskTests.Micro(_data, sizes), task.Model, log2), Is.Zero);
        Assert.That(log2.ToString(), Does.Contain("image encoder: fresh init"));
        var missing = Path.Combine(_dir, "none", "resnet50.pth");
        var e = Assert.Throws<FileNotFoundException>(() => BaseWeights.Load(FashionViL.Tests.Downstream.Ocir.OcirTaskTests.Micro(_data,
            [.. sizes, $"model_config.csa_net.image_encoder.params.pretrained_path={missing}"]), task.Model, TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain(missing).And.Contain("model_config.csa_net.image_encoder.params.pretrained_path"));
    }

    [Test]
    public void BadFilesAreNamed()
    {
        using var t = FashionGenClassificationTask.Create(Gen("classification"), TextWriter.Null);
        var missing = Path.Combine(_dir, "nope", "pytorch_model.bin");
        var e = Assert.Throws<FileNotFoundException>(() => BaseWeights.Load(Gen("classification", Files(bert: missing)), t.Model, TextWriter.Null))!;
        Assert.That(e.Message, Does.Contain(missing).And.Contain("model_config.fashionvil.bert.pretrained_path"));
        var e2 = Assert.Throws<FileNotFoundException>(() => BaseWeights.Load(Gen("classification", Files(resnet: missing)), t.Model, TextWriter.Null))!;
        Assert.That(e2.Message, Does.Contain(missing).And.Contain("model_config.fashionvil.image_encoder.params.pretrained_path"));

        // A BERT file of another size: the key and both shapes are named.
        var wide = Path.Combine(_dir, "wide.safetensors");
        Write(wide, HfBert(), skip: k => k.StartsWith("cls.", StringComparison.Ordinal),
            reshape: (k, s) => k == "bert.pooler.dense.bias" ? [H + 1] : s);
        var e3 = Assert.Throws<InvalidDataException>(() => BaseWeights.Load(Gen("classification", Files(bert: wide)), t.Model, TextWriter.Null))!;
        Assert.That(e3.Message, Does.Contain(wide).And.Contain("model.bert.pooler.dense.bias").And.Contain("33").And.Contain("32"));
        // A BERT file without the pooler: the missing key is named.
        var nopool = Path.Combine(_dir, "nopool.safetensors");
        Write(nopool, HfBert(), skip: k => k.StartsWith("bert.pooler.", StringComparison.Ordinal));
        var e4 = Assert.Throws<InvalidDataException>(() => BaseWeights.Load(Gen("classification", Files(bert: nopool)), t.Model, TextWriter.Null))!;
        Assert.That(e4.Message, Does.Contain(nopool).And.Contain("missing model.bert.pooler.dense.weight"));
        // A ResNet file for other block counts: layer4.2 missing, named by the ResNet-50 mapping.
        var short4 = Path.Combine(_dir, "short.safetensors");
        Write(short4, TorchvisionResNet(), skip: k => k.StartsWith("layer4.1.", StringComparison.Ordinal) || k.StartsWith("layer4.2.", StringComparison.Ordinal));
        var e5 = Assert.Throws<InvalidDataException>(() => BaseWeights.Load(Gen("classification", Files(resnet: short4)), t.Model, TextWriter.Null))!;
        Assert.That(e5.Message, Does.Contain(short4).And.Contain("layer4.2.conv3.weight"));
    }
}
