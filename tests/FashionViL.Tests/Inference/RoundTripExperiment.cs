using System.Globalization;
using FashionViL.Data.Datasets;

namespace FashionViL.Tests.Inference;

/// <summary>
/// The round trip on generated data: `encode` every FashionGen val image with the demo's pre-trained tiny checkpoint,
/// then `search` with each product's text (title.description); a query hits when a returned image belongs to its product.
/// Needs the demo run (FV_DEMO_DIR, default /tmp/demo2: data/ and save/fashionvil_tiny/best.ckpt; FV_CHECKPOINT picks another
/// checkpoint, e.g. a fine-tuned retrieval model). Minutes on CPU, so explicit:
/// dotnet test tests/FashionViL.Tests --filter "FullyQualifiedName~RoundTripExperiment"
/// </summary>
[Explicit("needs the demo run's data and checkpoint; a few minutes on CPU")]
public class RoundTripExperiment
{
    [Test]
    public void TextQueriesFindTheirProductAmongTheValImages()
    {
        var demo = Environment.GetEnvironmentVariable("FV_DEMO_DIR") ?? "/tmp/demo2";
        var ckpt = Environment.GetEnvironmentVariable("FV_CHECKPOINT") ?? Path.Combine(demo, "save", "fashionvil_tiny", "best.ckpt");
        var fg = Path.Combine(demo, "data", "datasets", "FashionGen");
        if (!File.Exists(ckpt) || !Directory.Exists(fg)) Assert.Ignore($"demo run not found under {demo}");
        var products = ProductDatasets.Read(Path.Combine(fg, "val_info.json"), Path.Combine(fg, "val"));
        var owner = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var p in products) foreach (var img in p.Images) owner[Path.GetFileName(img)] = p.Id;

        var dir = Data.ImageTestData.NewTempDir();
        var gallery = Path.Combine(dir, "val_images.safetensors");
        var (code, text) = CliTests.RunCli("encode", "--checkpoint", ckpt, "--images", Path.Combine(fg, "val"), "--out", gallery);
        Assert.That(code, Is.EqualTo(0), text);
        int n = owner.Count, hit1 = 0, hit5 = 0;
        double chance1 = 0, chance5 = 0;
        foreach (var p in products)
        {
            (code, text) = CliTests.RunCli("search", "--checkpoint", ckpt, "--gallery", gallery, "--text", p.Text, "--top-k", "5");
            Assert.That(code, Is.EqualTo(0), text);
            var names = text.Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(f => f.Length >= 3 && int.TryParse(f[0], out _)).Select(f => f[2]).ToList();
            Assert.That(names, Has.Count.EqualTo(5), text);
            if (owner[names[0]] == p.Id) hit1++;
            if (names.Any(x => owner[x] == p.Id)) hit5++;
            int k = p.Images.Count;
            chance1 += (double)k / n;
            double miss = 1; for (int i = 0; i < 5; i++) miss *= (double)(n - k - i) / (n - i);   // no own image among 5 random
            chance5 += 1 - miss;
        }
        int q = products.Count;
        TestContext.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{q} text queries, gallery {n} images: top-1 {100.0 * hit1 / q:F1}% (chance {100 * chance1 / q:F2}%), top-5 {100.0 * hit5 / q:F1}% (chance {100 * chance5 / q:F2}%)"));
        Assert.That((double)hit1 / q, Is.GreaterThan(10 * chance1 / q), "top-1 should be far above chance");
        Directory.Delete(dir, true);
    }
}
