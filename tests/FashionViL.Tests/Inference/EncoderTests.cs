using FashionViL.Autograd;
using FashionViL.Data;
using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using FashionViL.Inference;
using FashionViL.Model;
using FashionViL.Nn.Checkpoints;
using FashionViL.Tests.Data;

namespace FashionViL.Tests.Inference;

/// <summary>FashionViLEncoder on a tiny random model saved as a training checkpoint with its config.</summary>
public class EncoderTests
{
    private static InferenceTestData D => InferenceTestData.Instance;

    /// <summary>The eval preprocessing written out here: Resize 72² → CenterCrop 64 → normalise (Micro config sizes).</summary>
    private static Tensor Preprocess(IEnumerable<string> paths)
    {
        var pipe = ImagePipeline.ProductEval(72, 64);
        var chw = paths.Select(p => { var v = new float[3 * 64 * 64]; pipe.Apply(ImageLoader.Load(p), new DataRandom(0), v); return v; }).ToList();
        return ProductImageLoading.Stack(chw, 64, 64);
    }

    private static float[][] Rows(Tensor t)
    {
        var a = t.ToArray<float>();
        int d = t.Size(1);
        return Enumerable.Range(0, t.Size(0)).Select(i => a.AsSpan(i * d, d).ToArray()).ToArray();
    }

    private static void AssertRowsClose(float[][] actual, float[][] expected, double tol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.That(actual[i].Length, Is.EqualTo(expected[i].Length), what);
            for (int j = 0; j < actual[i].Length; j++)
                Assert.That(actual[i][j], Is.EqualTo(expected[i][j]).Within(tol), $"{what}: row {i} col {j}");
        }
    }

    private static double Norm(float[] v) => Math.Sqrt(v.Sum(x => (double)x * x));

    [Test]
    public void LoadsSizesAndScaleFromTheCheckpointConfig()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        Assert.That(enc.Dimension, Is.EqualTo(32));
        Assert.That(enc.Preprocessing.Crop, Is.EqualTo(64));
        Assert.That(enc.Preprocessing.Resize, Is.EqualTo(72));
        Assert.That(enc.Preprocessing.MaxSeqLength, Is.EqualTo(24));
        Assert.That(enc.Scale, Is.EqualTo(InferenceTestData.NormScale));
    }

    [Test]
    public void ImageEmbeddingsEqualTheModelsOwnAndHaveLengthS()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var got = enc.EmbedImages(D.Images, batchSize: 2);
        using var x = Preprocess(D.Images);
        using var want = D.Model.EmbedImages(x);
        AssertRowsClose(got, Rows(want), 1e-5, "image embeddings");
        foreach (var v in got) Assert.That(Norm(v), Is.EqualTo(InferenceTestData.NormScale).Within(1e-4));
        // distinct images give distinct vectors (the test is not comparing constants)
        Assert.That(got[0].Zip(got[4], (a, b) => Math.Abs(a - b)).Max(), Is.GreaterThan(1e-3));
    }

    [Test]
    public void ImagesFromStreamsAndDecodedImagesMatchFiles()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var files = enc.EmbedImages(D.Images.Take(2));
        var streams = enc.EmbedImages(D.Images.Take(2).Select(p => (Stream)new MemoryStream(File.ReadAllBytes(p))));
        var decoded = enc.EmbedImages(D.Images.Take(2).Select(p => ImageLoader.Load(p)));
        AssertRowsClose(streams, files, 0, "streams");
        AssertRowsClose(decoded, files, 0, "decoded");
    }

    [Test]
    public void TextEmbeddingsEqualTheModelsOwnWithoutMasking()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var got = enc.EmbedTexts(InferenceTestData.Texts, batchSize: 3);
        var proc = new PretrainTextProcessor(24, 0.0);
        using var c = TextCollator.Collate(InferenceTestData.Texts.Select(t => proc.Process(t, new Random(1))).ToList());
        using var want = D.Model.EmbedTexts(c.InputIds, c.SegmentIds, c.InputMask);
        AssertRowsClose(got, Rows(want), 1e-5, "text embeddings");
        foreach (var v in got) Assert.That(Norm(v), Is.EqualTo(InferenceTestData.NormScale).Within(1e-4));
    }

    [Test]
    public void QueryIsTheNormalisedMeanOfTheVisualOutputsOfTheJointForward()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var texts = new[] { "make it darker", "longer sleeves and a collar" };
        var got = enc.EmbedQueries([(D.Images[0], texts[0]), (D.Images[1], texts[1])]);
        // Reference from the pre-training model's pieces: joint forward, mean of the last G outputs, F.normalize, × s (float64).
        using var x = Preprocess(D.Images.Take(2));
        var proc = new PretrainTextProcessor(24, 0.0);
        using var c = TextCollator.Collate(texts.Select(t => proc.Process(t, new Random(1))).ToList());
        using var _ = GradMode.NoGrad();
        using var grid = D.Model.EncodeImages(x);
        int g = grid.Size(1), t = c.InputIds.Size(1), h = 32;
        using var jm = FashionViLPretraining.JointMask(c.InputMask, g);
        var (seq, pooled) = D.Model.Joint(c.InputIds, c.SegmentIds, grid, jm);
        using (seq) using (pooled)
        {
            var s = seq.ToArray<float>();
            for (int b = 0; b < 2; b++)
            {
                var mean = new double[h];
                for (int p = t; p < t + g; p++) for (int k = 0; k < h; k++) mean[k] += s[(b * (t + g) + p) * h + k] / g;
                double n = Math.Sqrt(mean.Sum(v => v * v));
                for (int k = 0; k < h; k++)
                    Assert.That(got[b][k], Is.EqualTo(InferenceTestData.NormScale * mean[k] / n).Within(1e-4), $"query {b} dim {k}");
            }
        }
        // The text matters: the same image with another modification gives another vector.
        var other = enc.EmbedQueries([(D.Images[0], texts[1])]);
        Assert.That(other[0].Zip(got[0], (a, b) => Math.Abs(a - b)).Max(), Is.GreaterThan(1e-3));
    }

    [Test]
    public void BatchSizeDoesNotChangeTheVectors()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        AssertRowsClose(enc.EmbedImages(D.Images, 1), enc.EmbedImages(D.Images, 5), 1e-5, "images");
        AssertRowsClose(enc.EmbedTexts(InferenceTestData.Texts, 1), enc.EmbedTexts(InferenceTestData.Texts, 4), 1e-5, "texts");
    }

    [Test]
    public void PlainStateDictLoadsWithAnExplicitConfig()
    {
        var path = Path.Combine(D.Dir, "plain.safetensors");
        SafeTensors.Save(path, D.Model.StateDict());
        var ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(path));
        Assert.That(ex!.Message, Does.Contain(path).And.Contain("no config"));
        using var enc = FashionViLEncoder.Load(path, config: D.Config);
        using var ref0 = FashionViLEncoder.Load(D.Checkpoint);
        AssertRowsClose(enc.EmbedTexts(InferenceTestData.Texts.Take(2)), ref0.EmbedTexts(InferenceTestData.Texts.Take(2)), 0, "texts");
    }

    [Test]
    public void MmfStateDictWithTheDdpPrefixLoads()
    {
        // The reference's layout as saved under DistributedDataParallel: every key under "module.".
        var path = Path.Combine(D.Dir, "ddp.safetensors");
        SafeTensors.Save(path, D.Model.StateDict().ToDictionary(kv => "module." + kv.Key, kv => kv.Value));
        using var enc = FashionViLEncoder.Load(path, config: D.Config);
        var got = enc.EmbedTexts(InferenceTestData.Texts.Take(2));
        var proc = new PretrainTextProcessor(24, 0.0);
        using var c = TextCollator.Collate(InferenceTestData.Texts.Take(2).Select(t => proc.Process(t, new Random(1))).ToList());
        using var want = D.Model.EmbedTexts(c.InputIds, c.SegmentIds, c.InputMask);
        AssertRowsClose(got, Rows(want), 1e-5, "texts");
    }

    [Test]
    public void FineTuneNamesLoadToo()
    {
        // FashionViLForContrastive / ForComposition: model.norm_layer.norm_s instead of model.contrastive_norm.norm_s, no heads.
        var dict = D.Model.StateDict().Where(kv => !kv.Key.StartsWith("model.heads.", StringComparison.Ordinal) && kv.Key != "model.contrastive_norm.norm_s")
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        using var s = Tensor.Full([1], 3.0);
        dict["model.norm_layer.norm_s"] = s;
        var path = Path.Combine(D.Dir, "contrastive.ckpt");
        TrainingCheckpoint.Save(path, dict, null, new TrainingState { Config = D.Config.ToYaml() });
        using var enc = FashionViLEncoder.Load(path);
        Assert.That(enc.Scale, Is.EqualTo(3f));
        var a = enc.EmbedImages(D.Images.Take(1))[0];
        using var x = Preprocess(D.Images.Take(1));
        using var want = D.Model.EmbedImages(x);
        var b = want.ToArray<float>();
        for (int k = 0; k < a.Length; k++) Assert.That(a[k], Is.EqualTo(b[k] * 3.0 / InferenceTestData.NormScale).Within(1e-5));
    }

    [Test]
    public void WrongCheckpointKindsAreNamed()
    {
        using var w = Tensor.Zeros([4, 4]);
        var vq = Path.Combine(D.Dir, "vqvae.safetensors");
        SafeTensors.Save(vq, new Dictionary<string, Tensor> { ["encoder.conv_in.weight"] = w, ["quant_conv.weight"] = w, ["quantize.embedding.weight"] = w });
        var ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(vq));
        Assert.That(ex!.Message, Does.Contain(vq).And.Contain("VQ-VAE").And.Contain("image_encoder.*"));

        var bert = Path.Combine(D.Dir, "bert.safetensors");
        SafeTensors.Save(bert, new Dictionary<string, Tensor> { ["bert.embeddings.word_embeddings.weight"] = w });
        ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(bert));
        Assert.That(ex!.Message, Does.Contain(bert).And.Contain("BERT-only"));

        ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(D.CheckpointWithoutConfig()));
        Assert.That(ex!.Message, Does.Contain(D.CheckpointWithoutConfig()).And.Contain("carries no config"));

        var junk = Path.Combine(D.Dir, "junk.ckpt");
        File.WriteAllText(junk, "not a checkpoint at all");
        ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(junk));
        Assert.That(ex!.Message, Does.Contain(junk));

        var emb = Path.Combine(D.Dir, "emb.safetensors");
        EmbeddingFile.Save(emb, new EmbeddingSet([[1f, 2f]], [new EmbeddingItem("a")], "text", null));
        ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(emb));
        Assert.That(ex!.Message, Does.Contain(emb).And.Contain("embeddings file"));

        Assert.That(Assert.Throws<FileNotFoundException>(() => FashionViLEncoder.Load(Path.Combine(D.Dir, "nope.ckpt")))!.Message, Does.Contain("nope.ckpt"));
    }

    [Test]
    public void ACheckpointOfOtherSizesThanItsConfigIsNamed()
    {
        var cfg = PretrainerTestsConfigWithHidden(48);
        var ex = Assert.Throws<InvalidDataException>(() => FashionViLEncoder.Load(D.Checkpoint, config: cfg));
        Assert.That(ex!.Message, Does.Contain(D.Checkpoint).And.Contain("another shape"));
    }

    private static FashionViL.Config.FvConfig PretrainerTestsConfigWithHidden(int h) =>
        Training.PretrainerTests.Micro(Path.Combine(D.Dir, "data"), Path.Combine(D.Dir, "save"), $"model_config.fashionvil.bert.hidden_size={h}");

    [Test]
    public void BadInputsAreNamed()
    {
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var missing = Path.Combine(D.Dir, "missing.png");
        var e1 = Assert.Throws<ImageLoadException>(() => enc.EmbedImages([D.Images[0], missing]));
        Assert.That(e1!.Message, Does.Contain(missing));
        var broken = ImageTestData.WriteTruncatedPng(Path.Combine(D.Dir, "broken.png"));
        var e2 = Assert.Throws<ImageLoadException>(() => enc.EmbedImages([broken]));
        Assert.That(e2!.Message, Does.Contain(broken));
        var e3 = Assert.Throws<ArgumentException>(() => enc.EmbedTexts(["fine", "  "]));
        Assert.That(e3!.Message, Does.Contain("text #1"));
        Assert.Throws<ArgumentOutOfRangeException>(() => enc.EmbedTexts(["x"], batchSize: 0));
        using var x = Tensor.Zeros([1, 1, 64, 64]);
        Assert.Throws<ArgumentException>(() => enc.EmbedImages(x));
    }

    [Test]
    public void DisposedEncoderRefusesWork()
    {
        var enc = FashionViLEncoder.Load(D.Checkpoint);
        enc.Dispose();
        enc.Dispose();
        Assert.Throws<ObjectDisposedException>(() => enc.EmbedTexts(["a"]));
    }
}
