using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Models;
using static FashionViL.Checkpoints.Tests.MappingFixtures;

namespace FashionViL.Checkpoints.Tests;

/// <summary>
/// The rule engine on hand-made dicts, and every ready-made mapping on files with the real key layouts
/// (tests/fixtures/mapping), checked against the key table the fixture script states independently (expected.json)
/// and by strict loads into our modules.
/// </summary>
public class NameMappingTests
{
    static Dictionary<string, Tensor> Dict(params string[] keys)
    {
        var d = new Dictionary<string, Tensor>();
        for (int i = 0; i < keys.Length; i++) d[keys[i]] = Tensor.FromArray(new float[] { i }, 1);
        return d;
    }

    static void DisposeAll(Dictionary<string, Tensor> d) { foreach (var t in d.Values) t.Dispose(); }

    static Dictionary<string, Tensor> LoadFile(string name) =>
        name.EndsWith(".safetensors", StringComparison.Ordinal) ? SafeTensors.Load(F(name)) : TorchCheckpoint.Load(F(name));

    /// <summary>Applies <paramref name="mapping"/> to the fixture and checks the result against column <paramref name="column"/>
    /// of expected.json: every kept key under its expected name (the very tensor of the source), every other key reported dropped or tied.</summary>
    static MappingResult CheckAgainstTable(Dictionary<string, Tensor> src, string file, string column, NameMapping mapping)
    {
        var want = Expected(file, column);
        Assert.That(src.Keys, Is.EquivalentTo(want.Keys), $"{file}: fixture keys");
        var result = CheckpointMapping.Apply(src, mapping, F(file));
        var kept = want.Where(kv => kv.Value is not null).ToList();
        Assert.That(result.Tensors.Keys, Is.EquivalentTo(kept.Select(kv => kv.Value)), $"{file} {column}: target keys");
        foreach (var (s, t) in kept) Assert.That(result.Tensors[t!], Is.SameAs(src[s]), $"{file}: '{s}' → '{t}'");
        var gone = result.Report.Dropped.Select(d => d.Key).Concat(result.Report.Tied.Select(t => t.Key));
        Assert.That(gone, Is.EquivalentTo(want.Where(kv => kv.Value is null).Select(kv => kv.Key)), $"{file} {column}: dropped + tied");
        Assert.That(result.Report.Renamed.Count + result.Report.Unchanged.Count, Is.EqualTo(kept.Count));
        return result;
    }

    // ------------------------------------------------------------------ rule engine

    [Test]
    public void Rules_ApplyInOrder_LaterRulesSeeRenamedNames()
    {
        var d = Dict("a.x.gamma", "a.y", "b.z", "c.w");
        var m = new NameMapping("test").RenamePrefix("a.", "A.").RenameSuffix(".gamma", ".weight")
            .RenameRegex(@"^A\.y$", "A.why").DropPrefix("b.", "not wanted").DropKey("A.why", "also not wanted");
        var r = CheckpointMapping.Apply(d, m, "file.pth");
        Assert.That(r.Tensors.Keys, Is.EquivalentTo(new[] { "A.x.weight", "c.w" }));
        Assert.That(r.Report.Renamed, Is.EquivalentTo(new[] { ("a.x.gamma", "A.x.weight") }));
        Assert.That(r.Report.Unchanged, Is.EquivalentTo(new[] { "c.w" }));
        Assert.That(r.Report.Dropped, Is.EquivalentTo(new[] { ("a.y", "also not wanted"), ("b.z", "not wanted") }));
        Assert.That(r.Report.Summary(), Does.Contain("1 renamed").And.Contain("2 dropped").And.Contain("dropped 1 (not wanted)"));
        DisposeAll(d);
    }

    [Test]
    public void KeepOnly_DropsOutsidePrefixes_WithReason()
    {
        var d = Dict("image_encoder.model.0.weight", "model.bert.pooler.dense.bias", "model.heads.itm.x");
        var r = CheckpointMapping.Apply(d, new NameMapping("t").KeepOnly("image_encoder.", "model.bert."));
        Assert.That(r.Tensors.Keys, Is.EquivalentTo(new[] { "image_encoder.model.0.weight", "model.bert.pooler.dense.bias" }));
        Assert.That(r.Report.Dropped.Single().Key, Is.EqualTo("model.heads.itm.x"));
        Assert.That(r.Report.Dropped.Single().Reason, Does.Contain("image_encoder."));
        DisposeAll(d);
    }

    [Test]
    public void TwoKeysOntoOneName_FailsNamingFileAndBothKeys()
    {
        var d = Dict("x.LayerNorm.gamma", "x.LayerNorm.weight");
        var e = Assert.Throws<InvalidDataException>(() => CheckpointMapping.Apply(d, new NameMapping("t").RenameSuffix(".gamma", ".weight"), "/tmp/some.bin"));
        Assert.That(e!.Message, Does.Contain("/tmp/some.bin").And.Contain("x.LayerNorm.gamma").And.Contain("x.LayerNorm.weight"));
        DisposeAll(d);
    }

    [Test]
    public void Tie_EqualValuesDropped_DifferentValuesOrMissingPartnerFail()
    {
        var d = new Dictionary<string, Tensor>
        {
            ["w"] = Tensor.FromArray(new float[] { 1, 2, 3 }, 3),
            ["dec"] = Tensor.FromArray(new float[] { 1, 2, 3 }, 3),
            ["bad"] = Tensor.FromArray(new float[] { 1, 2, 3.5f }, 3),
        };
        var ok = CheckpointMapping.Apply(new Dictionary<string, Tensor> { ["w"] = d["w"], ["dec"] = d["dec"] }, new NameMapping("t").Tie("dec", "w"), "f.bin");
        Assert.That(ok.Tensors.Keys, Is.EquivalentTo(new[] { "w" }));
        Assert.That(ok.Report.Tied, Is.EquivalentTo(new[] { ("dec", "w") }));

        var e = Assert.Throws<InvalidDataException>(() => CheckpointMapping.Apply(new Dictionary<string, Tensor> { ["w"] = d["w"], ["bad"] = d["bad"] }, new NameMapping("t").Tie("bad", "w"), "f.bin"));
        Assert.That(e!.Message, Does.Contain("f.bin").And.Contain("'bad'").And.Contain("'w'").And.Contain("differ"));
        e = Assert.Throws<InvalidDataException>(() => CheckpointMapping.Apply(new Dictionary<string, Tensor> { ["dec"] = d["dec"] }, new NameMapping("t").Tie("dec", "w"), "f.bin"));
        Assert.That(e!.Message, Does.Contain("f.bin").And.Contain("'dec'").And.Contain("'w'"));
        DisposeAll(d);
    }

    [Test]
    public void Require_MissingSignatureKey_FailsNamingFileAndKey()
    {
        var d = Dict("bert.embeddings.word_embeddings.weight");
        var e = Assert.Throws<InvalidDataException>(() => CheckpointMapping.Apply(d, CheckpointMappings.TorchvisionToResNet50(), "/data/bert.bin"));
        Assert.That(e!.Message, Does.Contain("/data/bert.bin").And.Contain("conv1.weight").And.Contain("torchvision"));
        DisposeAll(d);
    }

    // ------------------------------------------------------------------ torchvision ResNet-50

    [Test]
    public void Torchvision_ToOurs_MatchesTableAndOurResNet50Keys()
    {
        var src = LoadFile("resnet50_tv.pth");
        try
        {
            var r = CheckAgainstTable(src, "resnet50_tv.pth", "ours", CheckpointMappings.TorchvisionToResNet50());
            Assert.That(r.Report.Dropped.Select(x => x.Key), Is.EquivalentTo(new[] { "fc.weight", "fc.bias" }));
            // our ResNet50's state-dict keys equal this torchvision dump (ResNetTests); building a 25M-parameter model here is too slow
            var ours = File.ReadAllLines(Path.Combine(Dir, "..", "resnet", "resnet50_keys.txt")).Where(l => l.Length > 0)
                .Select(l => l.Split(' ')[0]).Where(k => !k.StartsWith("fc.", StringComparison.Ordinal));
            Assert.That(r.Tensors.Keys, Is.EquivalentTo(ours), "our ResNet50 state-dict keys (without fc)");
            Assert.That(r.Tensors["layer1.0.bn1.num_batches_tracked"].DType, Is.EqualTo(DType.Int64));

            var withFc = CheckpointMapping.Apply(src, CheckpointMappings.TorchvisionToResNet50(includeFc: true));
            Assert.That(withFc.Tensors.Keys, Does.Contain("fc.weight").And.Contain("fc.bias"));
            Assert.That(withFc.Report.Dropped, Is.Empty);
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void Torchvision_ToMmf_EqualsTorchSequentialTrunkKeys()
    {
        var src = LoadFile("resnet50_tv.pth");
        try
        {
            var r = CheckAgainstTable(src, "resnet50_tv.pth", "mmf", CheckpointMappings.TorchvisionToMmf());
            Assert.That(r.Tensors.Keys, Is.EquivalentTo(ExpectedList("mmf_image_encoder_keys")), "keys of nn.Sequential(*children[:-2]) from torch");
            Assert.That(r.Tensors["image_encoder.model.7.2.bn3.num_batches_tracked"].DType, Is.EqualTo(DType.Int64));

            // and back: MMF image encoder → our ResNet50 names
            var back = CheckpointMapping.Apply(r.Tensors, CheckpointMappings.MmfToResNet50());
            Assert.That(back.Tensors.Keys, Is.EquivalentTo(src.Keys.Where(k => !k.StartsWith("fc.", StringComparison.Ordinal))));
            foreach (var (k, t) in back.Tensors) Assert.That(t, Is.SameAs(src[k]), k);
        }
        finally { DisposeAll(src); }
    }

    // ------------------------------------------------------------------ HF BERT

    static readonly BertConfig Tiny = new(VocabSize: 12, HiddenSize: 4, NumHiddenLayers: 2, NumAttentionHeads: 2, IntermediateSize: 8,
        MaxPositionEmbeddings: 6, TypeVocabSize: 2);

    [TestCase("hf_bert_old.bin")]
    [TestCase("hf_bert_new.safetensors")]
    public void HfBert_ToOurs_LoadsStrictlyIntoBertForMaskedLM(string file)
    {
        var src = LoadFile(file);
        try
        {
            var r = CheckAgainstTable(src, file, "ours", CheckpointMappings.HfBertToOurs());
            Assert.That(r.Report.Tied.Select(t => t.TiedTo), Is.SubsetOf(new[] { "bert.embeddings.word_embeddings.weight", "cls.predictions.bias" }));
            var model = new BertForMaskedLM(Tiny, new Generator(3));
            model.LoadStateDict(r.Tensors, strict: true);
            foreach (var (k, t) in model.StateDict())
                Assert.That(t.ToArray<float>(), Is.EqualTo(r.Tensors[k].ToArray<float>()), k);
            // the tied decoder is the word-embedding table, which came from the file
            Assert.That(model.Cls.Predictions.DecoderWeight.ToArray<float>(), Is.EqualTo(src["bert.embeddings.word_embeddings.weight"].ToArray<float>()));
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void HfBert_OldGammaBeta_AreRenamed()
    {
        var src = LoadFile("hf_bert_old.bin");
        try
        {
            Assert.That(src.Keys, Does.Contain("bert.encoder.layer.1.output.LayerNorm.gamma"));
            var r = CheckpointMapping.Apply(src, CheckpointMappings.HfBertToOurs());
            Assert.That(r.Tensors["bert.encoder.layer.1.output.LayerNorm.weight"], Is.SameAs(src["bert.encoder.layer.1.output.LayerNorm.gamma"]));
            Assert.That(r.Tensors["cls.predictions.transform.LayerNorm.bias"], Is.SameAs(src["cls.predictions.transform.LayerNorm.beta"]));
            Assert.That(r.Tensors.Keys.Any(k => k.EndsWith("gamma", StringComparison.Ordinal) || k.EndsWith("beta", StringComparison.Ordinal)), Is.False);
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void HfBert_UntiedDecoder_FailsNamingFileAndKey()
    {
        var src = LoadFile("hf_bert_untied.bin");
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => CheckpointMapping.Apply(src, CheckpointMappings.HfBertToOurs(), F("hf_bert_untied.bin")));
            Assert.That(e!.Message, Does.Contain("hf_bert_untied.bin").And.Contain("cls.predictions.decoder.weight").And.Contain("bert.embeddings.word_embeddings.weight"));
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void HfBert_BareBertModelNames_LoadIntoBertModel()
    {
        var src = LoadFile("hf_bert_new.safetensors");
        try
        {
            var r = CheckpointMapping.Apply(src, CheckpointMappings.HfBertToOurs(withMlmHead: false), "new");
            var model = new BertModel(Tiny, new Generator(4));
            model.LoadStateDict(r.Tensors, strict: true);
            Assert.That(r.Tensors["embeddings.LayerNorm.weight"], Is.SameAs(src["bert.embeddings.LayerNorm.weight"]));
            // a file saved from a bare BertModel (no "bert." prefix) maps onto the same names
            var bare = src.Where(kv => kv.Key.StartsWith("bert.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["bert.".Length..], kv => kv.Value);
            var r2 = CheckpointMapping.Apply(bare, CheckpointMappings.HfBertToOurs(), "bare");
            Assert.That(r2.Tensors["bert.encoder.layer.0.attention.self.query.weight"], Is.SameAs(src["bert.encoder.layer.0.attention.self.query.weight"]));
        }
        finally { DisposeAll(src); }
    }

    [TestCase("hf_bert_old.bin")]
    [TestCase("hf_bert_new.safetensors")]
    public void HfBert_ToMmf_BodyUnderModelBert_HeadUnderHeadsMlm_VisualTablesToInitialise(string file)
    {
        var src = LoadFile(file);
        try
        {
            var r = CheckAgainstTable(src, file, "mmf", CheckpointMappings.HfBertToMmf());
            var init = r.Report.ToInitialise.ToDictionary(t => t.Key, t => t.CopyFrom);
            Assert.That(init, Is.EquivalentTo(new Dictionary<string, string?>
            {
                ["model.bert.embeddings.projection.weight"] = null,
                ["model.bert.embeddings.projection.bias"] = null,
                ["model.bert.embeddings.position_embeddings_visual.weight"] = "model.bert.embeddings.position_embeddings.weight",
                ["model.bert.embeddings.token_type_embeddings_visual.weight"] = "model.bert.embeddings.token_type_embeddings.weight",
            }));
            Assert.That(r.Report.Summary(), Does.Contain("to initialise").And.Contain("position_embeddings_visual"));

            var added = CheckpointMapping.AddCopies(r.Tensors, r.Report);
            Assert.That(added, Is.EquivalentTo(new[] { "model.bert.embeddings.position_embeddings_visual.weight", "model.bert.embeddings.token_type_embeddings_visual.weight" }));
            var pos = src["bert.embeddings.position_embeddings.weight"];
            var vis = r.Tensors["model.bert.embeddings.position_embeddings_visual.weight"];
            Assert.That(vis, Is.Not.SameAs(pos), "an independent copy (trained separately afterwards)");
            Assert.That(vis.ToArray<float>(), Is.EqualTo(pos.ToArray<float>()));
            Assert.That(r.Tensors["model.bert.embeddings.token_type_embeddings_visual.weight"].ToArray<float>(),
                Is.EqualTo(src["bert.embeddings.token_type_embeddings.weight"].ToArray<float>()));
            foreach (var k in added) r.Tensors[k].Dispose();
        }
        finally { DisposeAll(src); }
    }

    // ------------------------------------------------------------------ MMF FashionViL and VQ-VAE

    [Test]
    public void Mmf_Checkpoint_ModuleTable_TiedDecoder_AndFinetuneFilter()
    {
        var src = LoadFile("mmf_tiny.pth"); // {"model": ..., "optimizer": ..., "current_iteration": 5}: the "model" dict
        try
        {
            Assert.That(src.Keys.All(k => k.StartsWith("module.", StringComparison.Ordinal)), Is.True, "fixture has the DDP prefix");
            var r = CheckAgainstTable(src, "mmf_tiny.pth", "ours", CheckpointMappings.MmfFashionViL());
            Assert.That(r.Report.Tied.Select(t => t.Key), Is.EquivalentTo(new[] { "module.model.heads.mlm.decoder.weight", "module.model.heads.mlm.decoder.bias" }));
            CheckAgainstTable(src, "mmf_tiny.pth", "finetune", CheckpointMappings.MmfFinetune());
            var ocir = CheckpointMapping.Apply(src, CheckpointMappings.MmfFinetune("image_encoder."));
            Assert.That(ocir.Tensors.Keys.All(k => k.StartsWith("image_encoder.model.", StringComparison.Ordinal)), Is.True);
            Assert.That(ocir.Tensors.Count, Is.EqualTo(6));
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void Mmf_ImageTokenizer_ExtractsRawVqvaeNames()
    {
        var src = LoadFile("mmf_tiny.pth");
        try
        {
            var r = CheckpointMapping.Apply(src, CheckpointMappings.MmfToVqvae());
            Assert.That(r.Tensors.Keys, Is.EquivalentTo(new[] { "quant_conv.weight", "quantize.embedding.weight" }));
            Assert.That(r.Tensors["quant_conv.weight"], Is.SameAs(src["module.model.image_tokenizer.quant_conv.weight"]));
        }
        finally { DisposeAll(src); }
    }

    [Test]
    public void Vqvae_ToMmfAndOurs_AndBack()
    {
        var src = LoadFile("vqvae_tiny.pth");
        try
        {
            CheckAgainstTable(src, "vqvae_tiny.pth", "ours", CheckpointMappings.VqvaeToOurs());
            var mmf = CheckAgainstTable(src, "vqvae_tiny.pth", "mmf", CheckpointMappings.VqvaeToMmf());
            var back = CheckpointMapping.Apply(mmf.Tensors, CheckpointMappings.MmfToVqvae());
            Assert.That(back.Tensors.Keys, Is.EquivalentTo(src.Keys));
            foreach (var (k, t) in back.Tensors) Assert.That(t, Is.SameAs(src[k]), k);
        }
        finally { DisposeAll(src); }
    }

    [TestCase("resnet50_tv.pth", CheckpointSource.Torchvision)]
    [TestCase("hf_bert_old.bin", CheckpointSource.HfBert)]
    [TestCase("hf_bert_new.safetensors", CheckpointSource.HfBert)]
    [TestCase("mmf_tiny.pth", CheckpointSource.Mmf)]
    [TestCase("vqvae_tiny.pth", CheckpointSource.Vqvae)]
    public void Detect_RecognisesEachLayout(string file, CheckpointSource kind)
    {
        var src = LoadFile(file);
        try { Assert.That(CheckpointMappings.Detect(src.Keys), Is.EqualTo(kind)); }
        finally { DisposeAll(src); }
        Assert.That(CheckpointMappings.Detect(["0.weight", "1.bias"]), Is.EqualTo(CheckpointSource.Raw));
    }
}
