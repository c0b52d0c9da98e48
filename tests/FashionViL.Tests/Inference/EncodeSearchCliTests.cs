using System.Globalization;
using FashionViL.Inference;
using FashionViL.Tests.Data;

namespace FashionViL.Tests.Inference;

/// <summary>`fashionvil encode` and `fashionvil search` on the tiny random checkpoint: mechanics and named errors.</summary>
public class EncodeSearchCliTests
{
    private static InferenceTestData D => InferenceTestData.Instance;
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = ImageTestData.NewTempDir();

    [TearDown]
    public void TearDown() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    [Test]
    public void EncodeImagesWritesVectorsAndSortedFileNames()
    {
        var outPath = Path.Combine(_dir, "g.safetensors");
        File.WriteAllText(Path.Combine(D.ImageDir, "notes.txt"), "not an image");   // skipped: not an image extension
        var (code, text) = CliTests.RunCli("encode", "--checkpoint", D.Checkpoint, "--images", D.ImageDir, "--out", outPath, "--batch", "2");
        Assert.That(code, Is.EqualTo(0), text);
        var set = EmbeddingFile.Load(outPath);
        Assert.That(set.Kind, Is.EqualTo("image"));
        Assert.That(set.Items.Select(i => i.Name), Is.EqualTo(new[] { "item0.png", "item1.png", "item2.png", "item3.png", "item4.png" }));
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var want = enc.EmbedImages(D.Images);
        for (int i = 0; i < want.Length; i++) Assert.That(set.Vectors[i], Is.EqualTo(want[i]).Within(1e-5f), D.Images[i]);
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { outPath }), "written atomically: no temporary file left");
    }

    [Test]
    public void EncodeTextsThenSearchRanksByDotProduct()
    {
        var lines = Path.Combine(_dir, "texts.txt");
        File.WriteAllLines(lines, InferenceTestData.Texts);
        var gallery = Path.Combine(_dir, "t.safetensors");
        var (code, text) = CliTests.RunCli("encode", "--checkpoint", D.Checkpoint, "--texts", lines, "--out", gallery);
        Assert.That(code, Is.EqualTo(0), text);
        var set = EmbeddingFile.Load(gallery);
        Assert.That(set.Items.Select(i => (i.Name, i.Text)), Is.EqualTo(InferenceTestData.Texts.Select((t, i) => ($"line {i + 1}", (string?)t))));

        // image query against the text gallery: the printed order and scores are the float64 dot products, sorted
        (code, text) = CliTests.RunCli("search", "--checkpoint", D.Checkpoint, "--gallery", gallery, "--image", D.Images[2], "--top-k", "3");
        Assert.That(code, Is.EqualTo(0), text);
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var q = enc.EmbedImages([D.Images[2]])[0];
        var exact = set.Vectors.Select(v => v.Zip(q, (a, b) => (double)a * b).Sum()).ToArray();
        var order = Enumerable.Range(0, exact.Length).OrderByDescending(j => exact[j]).ThenBy(j => j).Take(3).ToArray();
        var rows = text.Split('\n').Where(l => l.Length > 5 && char.IsDigit(l.TrimStart()[0])).ToArray();
        Assert.That(rows, Has.Length.EqualTo(3), text);
        for (int r = 0; r < 3; r++)
        {
            var parts = rows[r].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.That(parts[0], Is.EqualTo((r + 1).ToString(CultureInfo.InvariantCulture)));
            Assert.That(double.Parse(parts[1], CultureInfo.InvariantCulture), Is.EqualTo(exact[order[r]]).Within(1e-3));
            Assert.That(rows[r], Does.Contain($"line {order[r] + 1}").And.Contain(InferenceTestData.Texts[order[r]]));
        }
    }

    [Test]
    public void SearchAcceptsTextAndComposedQueries()
    {
        var gallery = Path.Combine(_dir, "g.safetensors");
        Assert.That(CliTests.RunCli("encode", "--checkpoint", D.Checkpoint, "--images", D.ImageDir, "--out", gallery).Code, Is.EqualTo(0));
        var (code, text) = CliTests.RunCli("search", "--checkpoint", D.Checkpoint, "--gallery", gallery, "--text", "red sweater");
        Assert.That(code, Is.EqualTo(0), text);
        Assert.That(text, Does.Contain("item0.png").And.Contain("item4.png"));   // top-k 10 > 5 items: all listed
        (code, text) = CliTests.RunCli("search", "--checkpoint", D.Checkpoint, "--gallery", gallery, "--image", D.Images[0], "--text", "in blue", "--top-k", "1");
        Assert.That(code, Is.EqualTo(0), text);
        using var enc = FashionViLEncoder.Load(D.Checkpoint);
        var q = enc.EmbedQueries([(D.Images[0], "in blue")])[0];
        var set = EmbeddingFile.Load(gallery);
        int best = Enumerable.Range(0, set.Count).OrderByDescending(j => set.Vectors[j].Zip(q, (a, b) => (double)a * b).Sum()).First();
        Assert.That(text, Does.Contain("modification").And.Contain(set.Items[best].Name));
    }

    [Test]
    public void MalformedInputsExitOneNamingTheCulprit()
    {
        var outPath = Path.Combine(_dir, "o.safetensors");
        string[] Encode(params string[] rest) => ["encode", "--checkpoint", D.Checkpoint, "--out", outPath, .. rest];
        void Fails(string[] args, params string[] mentions)
        {
            var (code, text) = CliTests.RunCli(args);
            Assert.That(code, Is.EqualTo(1), text);
            foreach (var m in mentions) Assert.That(text, Does.Contain(m), string.Join(" ", args));
        }

        // image folder: missing, empty, with a corrupt image
        Fails(Encode("--images", Path.Combine(_dir, "none")), Path.Combine(_dir, "none"));
        var empty = Directory.CreateDirectory(Path.Combine(_dir, "empty")).FullName;
        Fails(Encode("--images", empty), empty, "no image files");
        var bad = Directory.CreateDirectory(Path.Combine(_dir, "bad")).FullName;
        ImageTestData.WriteImage(Path.Combine(bad, "a.png"), 30, 30);
        var broken = ImageTestData.WriteTruncatedPng(Path.Combine(bad, "b.png"));
        Fails(Encode("--images", bad), broken);
        // text file: missing, empty, with an empty line
        Fails(Encode("--texts", Path.Combine(_dir, "none.txt")), "none.txt");
        var emptyFile = Path.Combine(_dir, "empty.txt");
        File.WriteAllText(emptyFile, "");
        Fails(Encode("--texts", emptyFile), emptyFile, "empty");
        var gap = Path.Combine(_dir, "gap.txt");
        File.WriteAllLines(gap, ["a dress", "", "a coat"]);
        Fails(Encode("--texts", gap), gap, "line 2");
        // neither / both inputs
        Fails(Encode(), "--images", "--texts");
        Fails(Encode("--images", D.ImageDir, "--texts", gap), "exactly one");
        Assert.That(File.Exists(outPath), Is.False, "nothing written by a failed encode");

        // wrong checkpoint kind
        using var w = Tensor.Zeros([2, 2]);
        var vq = Path.Combine(_dir, "vq.safetensors");
        SafeTensors.Save(vq, new Dictionary<string, Tensor> { ["quant_conv.weight"] = w, ["quantize.embedding.weight"] = w });
        var lines = Path.Combine(_dir, "ok.txt");
        File.WriteAllLines(lines, ["a dress"]);
        Fails(["encode", "--checkpoint", vq, "--texts", lines, "--out", outPath], vq, "VQ-VAE");
        Fails(["encode", "--checkpoint", D.CheckpointWithoutConfig(), "--texts", lines, "--out", outPath], "no config");

        // search: dimension mismatch, missing query image, empty text, no query, not an embeddings file
        var g5 = Path.Combine(_dir, "g5.safetensors");
        EmbeddingFile.Save(g5, new EmbeddingSet([[1f, 0f, 0f, 0f, 0f]], [new EmbeddingItem("x.png")], "image", "other.ckpt"));
        string[] Search(params string[] rest) => ["search", "--checkpoint", D.Checkpoint, .. rest];
        Fails(Search("--gallery", g5, "--text", "a dress"), "dimension mismatch", g5, "32", "5");
        Fails(Search("--gallery", g5, "--image", Path.Combine(_dir, "q.png")), "q.png");
        Fails(Search("--gallery", g5, "--text", " "), "--text is empty");
        Fails(Search("--gallery", g5), "--text", "--image");
        Fails(Search("--gallery", vq, "--text", "a dress"), vq, "not an embeddings file");
        Fails(["search", "--checkpoint", vq, "--gallery", g5, "--text", "a dress"], vq, "VQ-VAE");
    }
}
