using System.Text.Json;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Models;

namespace FashionViL.Tests.Checkpoints;

/// <summary>`fashionvil convert` on the small real-layout files of tests/fixtures/mapping (tools/fixtures/make_mapping_fixtures.py).</summary>
public class ConvertCommandTests
{
    static string Fixtures(string area)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", area);
            if (Directory.Exists(p)) return p;
        }
        throw new DirectoryNotFoundException($"tests/fixtures/{area} not found above {TestContext.CurrentContext.TestDirectory}");
    }

    static string F(string name) => Path.Combine(Fixtures("mapping"), name);

    /// <summary>source key → target key (null = dropped), as stated by the fixture script.</summary>
    static Dictionary<string, string?> Expected(string file, string column)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(F("expected.json")));
        return doc.RootElement.GetProperty(file).EnumerateObject().ToDictionary(p => p.Name,
            p => p.Value.GetProperty(column).ValueKind == JsonValueKind.Null ? null : p.Value.GetProperty(column).GetString());
    }

    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fvl-convert-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static Dictionary<string, Tensor> Source(string file) =>
        file.EndsWith(".safetensors", StringComparison.Ordinal) ? SafeTensors.Load(F(file)) : TorchCheckpoint.Load(F(file));

    /// <summary>Runs the converter and checks the output file against the table: names, dtypes and exact values.</summary>
    Dictionary<string, Tensor> ConvertAndCheck(string file, string column, params string[] options)
    {
        var output = Path.Combine(_dir, Path.GetFileNameWithoutExtension(file) + "." + column + ".safetensors");
        var (code, text) = CliTests.RunCli(["convert", F(file), output, .. options]);
        Assert.That(code, Is.EqualTo(0), text);
        var want = Expected(file, column);
        var src = Source(file);
        var got = SafeTensors.Read(output);
        try
        {
            var kept = want.Where(kv => kv.Value is not null).ToList();
            Assert.That(got.Tensors.Keys, Is.EquivalentTo(kept.Select(kv => kv.Value)), $"{file} → {column}: keys");
            foreach (var (s, t) in kept)
            {
                Assert.That(got.Tensors[t!].DType, Is.EqualTo(src[s].DType), $"{t} dtype");
                Assert.That(got.Tensors[t!].Shape, Is.EqualTo(src[s].Shape), $"{t} shape");
                if (src[s].DType == DType.Int64) Assert.That(got.Tensors[t!].ToArray<long>(), Is.EqualTo(src[s].ToArray<long>()), t);
                else Assert.That(got.Tensors[t!].ToArray<float>(), Is.EqualTo(src[s].ToArray<float>()), t);
            }
            long bytes = got.Tensors.Values.Sum(t => (long)t.Numel * t.DType.Size());
            Assert.That(text, Does.Contain($"wrote {kept.Count} tensors, {bytes} bytes"));
            Assert.That(text, Does.Contain($"dropped").And.Contain("renamed"));
            Assert.That(got.Metadata["source"], Is.EqualTo(file));
            Assert.That(Directory.GetFiles(_dir).Where(f => f.EndsWith(".tmp", StringComparison.Ordinal)), Is.Empty);
        }
        finally
        {
            foreach (var t in src.Values) t.Dispose();
        }
        return got.Tensors;
    }

    static readonly BertConfig Tiny = new(VocabSize: 12, HiddenSize: 4, NumHiddenLayers: 2, NumAttentionHeads: 2, IntermediateSize: 8,
        MaxPositionEmbeddings: 6, TypeVocabSize: 2);

    [TestCase("hf_bert_old.bin")]
    [TestCase("hf_bert_new.safetensors")]
    public void HfBert_ToOurs_LoadsStrictlyIntoBertForMaskedLM(string file)
    {
        var got = ConvertAndCheck(file, "ours", "--from", "hf-bert");
        var model = new BertForMaskedLM(Tiny, new Generator(1));
        Assert.That(model.LoadStateDict(got, strict: true).IsClean, Is.True);
        foreach (var t in got.Values) t.Dispose();
    }

    [Test]
    public void HfBert_ToMmf_ReportsTablesToInitialise()
    {
        var output = Path.Combine(_dir, "mmf.safetensors");
        var got = ConvertAndCheck("hf_bert_old.bin", "mmf", "--to", "mmf");
        foreach (var t in got.Values) t.Dispose();
        var (code, text) = CliTests.RunCli("convert", F("hf_bert_old.bin"), output, "--to", "mmf");
        Assert.That(code, Is.EqualTo(0), text);
        Assert.That(text, Does.Contain("detected: hf-bert").And.Contain("to initialise").And.Contain("model.bert.embeddings.projection.weight")
            .And.Contain("position_embeddings_visual.weight (copy of model.bert.embeddings.position_embeddings.weight)"));
    }

    [Test]
    public void Torchvision_AutoDetected_ToMmfAndOurs_KeepsInt64()
    {
        var mmf = ConvertAndCheck("resnet50_tv.pth", "mmf", "--to", "mmf");
        Assert.That(mmf["image_encoder.model.4.0.bn1.num_batches_tracked"].DType, Is.EqualTo(DType.Int64));
        foreach (var t in mmf.Values) t.Dispose();
        var ours = ConvertAndCheck("resnet50_tv.pth", "ours");
        foreach (var t in ours.Values) t.Dispose();
    }

    [Test]
    public void Mmf_Finetune_And_Vqvae()
    {
        foreach (var t in ConvertAndCheck("mmf_tiny.pth", "ours", "--from", "mmf").Values) t.Dispose();
        foreach (var t in ConvertAndCheck("mmf_tiny.pth", "finetune", "--from", "mmf", "--finetune").Values) t.Dispose();
        foreach (var t in ConvertAndCheck("vqvae_tiny.pth", "mmf", "--from", "vqvae", "--to", "mmf").Values) t.Dispose();
    }

    // ------------------------------------------------------------------ failures name the culprit

    [Test]
    public void MissingInput_FailsNamingIt()
    {
        var missing = Path.Combine(_dir, "nothing.pth");
        var (code, text) = CliTests.RunCli("convert", missing, Path.Combine(_dir, "o.safetensors"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain(missing));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    [Test]
    public void CorruptInputs_FailNamingTheFile_AndLeaveAnExistingOutputAlone()
    {
        var output = Path.Combine(_dir, "o.safetensors");
        File.WriteAllText(output, "previous");
        var truncated = Path.Combine(Fixtures("pth"), "truncated.pth");
        var (code, text) = CliTests.RunCli("convert", truncated, output);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain(truncated));

        var garbage = Path.Combine(_dir, "garbage.safetensors");
        File.WriteAllBytes(garbage, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3]);
        (code, text) = CliTests.RunCli("convert", garbage, output);
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain(garbage));

        var untied = F("hf_bert_untied.bin");
        (code, text) = CliTests.RunCli("convert", untied, output, "--from", "hf-bert");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain(untied).And.Contain("cls.predictions.decoder.weight"));

        Assert.That(File.ReadAllText(output), Is.EqualTo("previous"));
        Assert.That(Directory.GetFiles(_dir), Is.EquivalentTo(new[] { output, garbage }), "no temporary files left");
    }

    [Test]
    public void UnknownOrWrongFrom_FailsNamingTheValueOrMissingKey()
    {
        var output = Path.Combine(_dir, "o.safetensors");
        var (code, text) = CliTests.RunCli("convert", F("hf_bert_old.bin"), output, "--from", "keras");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("keras"));

        (code, text) = CliTests.RunCli("convert", F("hf_bert_old.bin"), output, "--from", "torchvision");
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("hf_bert_old.bin").And.Contain("conv1.weight"));

        (code, text) = CliTests.RunCli("convert", F("hf_bert_old.bin"), Path.Combine(_dir, "o.bin"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(text, Does.Contain("o.bin").And.Contain(".safetensors"));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }
}
