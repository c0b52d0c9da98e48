using FashionViL.Data.Images;
using FashionViL.Data.Loading;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace FashionViL.Tests.Data;

/// <summary>The reference's torchvision transforms on PIL images: resize against PIL, crops by torchvision's rules.</summary>
public class ImageTransformTests
{
    static RgbImage Source => ImageLoader.Load(ImageTestData.Fixture("src_40x30.png"));

    [TestCase(16, 16)]
    [TestCase(7, 5)]
    [TestCase(100, 77)]
    [TestCase(40, 64)]
    [TestCase(23, 30)]
    [TestCase(256, 256)]
    public void BilinearResizeMatchesPilExactly(int w, int h)
    {
        var src = Source;
        var ours = PilResize.Bilinear(src, w, h);
        byte[] expected = w == 256 ? ImageLoader.Load(ImageTestData.Fixture("resize_256x256.png")).Pixels
            : File.ReadAllBytes(ImageTestData.Fixture($"resize_{w}x{h}.rgb"));
        Assert.That((ours.Width, ours.Height), Is.EqualTo((w, h)));
        Assert.That(ours.Pixels, Is.EqualTo(expected));

        // For the record (README): how far ImageSharp's own Triangle resampler is from PIL on the same case.
        using var isImg = SixLabors.ImageSharp.Image.LoadPixelData<Rgb24>(src.Pixels, src.Width, src.Height);
        isImg.Mutate(c => c.Resize(w, h, KnownResamplers.Triangle));
        var isPix = new byte[w * h * 3];
        isImg.CopyPixelDataTo(isPix);
        int max = 0; double sum = 0;
        for (int i = 0; i < isPix.Length; i++) { int d = Math.Abs(isPix[i] - expected[i]); max = Math.Max(max, d); sum += d; }
        TestContext.Out.WriteLine($"40x30 -> {w}x{h}: ImageSharp Triangle vs PIL bilinear max |diff| {max}, mean {sum / isPix.Length:F3}");
    }

    [Test]
    public void EvalPipelineMatchesTorchvision()
    {
        var pipe = new ImagePipeline([new Resize(14, 18), new CenterCrop(9, 11)], 9, 11);
        using var x = pipe.ApplyToTensor(Source, new DataRandom(0));
        var ours = x.ToArray<float>();
        var raw = File.ReadAllBytes(ImageTestData.Fixture("eval_pipeline.f32"));
        var expected = new float[raw.Length / 4];
        Buffer.BlockCopy(raw, 0, expected, 0, raw.Length);
        Assert.That(x.Shape, Is.EqualTo(new[] { 3, 9, 11 }));
        for (int i = 0; i < expected.Length; i++)
            Assert.That(ours[i], Is.EqualTo(expected[i]).Within(1e-6), $"element {i}");
    }

    [Test]
    public void ToTensorNormalizeByHand()
    {
        var img = new RgbImage(2, 1, [255, 0, 128, 10, 20, 30]);
        var d = new float[6];
        ImagePipeline.ToTensorNormalize(img, ImagePipeline.FashionMean, ImagePipeline.FashionStd, d);
        // CHW: channel 0 holds pixels 0,1 then channel 1 ...
        Assert.That(d[0], Is.EqualTo((1.0 - 0.46777044) / 0.12221994).Within(1e-5));
        Assert.That(d[1], Is.EqualTo((10 / 255.0 - 0.46777044) / 0.12221994).Within(1e-5));
        Assert.That(d[2], Is.EqualTo((0 - 0.44531429) / 0.12145835).Within(1e-5));
        Assert.That(d[5], Is.EqualTo((30 / 255.0 - 0.40661017) / 0.14380469).Within(1e-5));
    }

    /// <summary>torchvision: top = int(round((H − h) / 2)), Python rounding is ties-to-even.</summary>
    [TestCase(18, 14, 11, 9, 2, 4)]   // (14−9)/2 = 2.5 → 2, (18−11)/2 = 3.5 → 4
    [TestCase(10, 10, 7, 7, 2, 2)]    // 1.5 → 2
    [TestCase(9, 9, 8, 8, 0, 0)]      // 0.5 → 0
    [TestCase(256, 256, 224, 224, 16, 16)]
    public void CenterCropRounding(int w, int h, int cw, int ch, int top, int left)
    {
        var r = new CenterCrop(ch, cw).Apply(ImageTestData.Coordinates(w, h), new DataRandom(1));
        Assert.That((r.Width, r.Height), Is.EqualTo((cw, ch)));
        Assert.That((r[0, 0, 1], r[0, 0, 0]), Is.EqualTo(((byte)top, (byte)left)));
    }

    [Test]
    public void RandomCropIsUniformOverValidOffsets()
    {
        var img = ImageTestData.Coordinates(12, 10);
        var crop = new RandomCrop(6, 8); // top in 0..4, left in 0..4
        var counts = new int[5, 5];
        var rng = new DataRandom(42);
        const int n = 5000;
        for (int i = 0; i < n; i++)
        {
            var r = crop.Apply(img, rng);
            int top = r[0, 0, 1], left = r[0, 0, 0];
            Assert.That(r[5, 7, 1], Is.EqualTo(top + 5));
            counts[top, left]++;
        }
        // 25 cells, expected 200 each, sd ≈ 14: allow ±6 sd.
        foreach (var c in counts) Assert.That(c, Is.InRange(200 - 84, 200 + 84));
    }

    [Test]
    public void FlipHalfTheTime()
    {
        var img = ImageTestData.Coordinates(5, 2);
        var flip = new RandomHorizontalFlip(0.5);
        var rng = new DataRandom(7);
        int flipped = 0;
        const int n = 4000;
        for (int i = 0; i < n; i++)
        {
            var r = flip.Apply(img, rng);
            if (r[1, 0, 0] == 4) { flipped++; Assert.That(r[1, 4, 0], Is.EqualTo(0)); Assert.That(r[1, 0, 1], Is.EqualTo(1)); }
            else Assert.That(r[1, 0, 0], Is.EqualTo(0));
        }
        // sd of the fraction = 0.5/√4000 ≈ 0.0079; ±5 sd.
        Assert.That(flipped / (double)n, Is.InRange(0.46, 0.54));
    }

    [TestCase(10, 100, 0, 43, 10, 13)]   // wide, 100x10: ratio 10 > 1.3 → h = 10, w = round(10·1.3) = 13, left = (100−13)//2
    [TestCase(100, 10, 43, 0, 13, 10)]   // tall, 10x100: ratio 0.1 < 0.75 → w = 10, h = round(10/0.75) = 13, top = (100−13)//2
    public void RandomResizedCropFallback(int h, int w, int top, int left, int ch, int cw)
    {
        // No box of area ≥ 0.8·H·W with aspect in [0.75, 1.3] fits, so all 10 tries fail and the fallback is used.
        var t = new RandomResizedCrop(8, 8, 0.8, 1.0, 0.75, 1.3);
        var box = t.SampleBox(h, w, new DataRandom(3));
        Assert.That(box, Is.EqualTo((top, left, ch, cw)));
    }

    [Test]
    public void RandomResizedCropBoxesRespectScaleAndRatio()
    {
        var t = new RandomResizedCrop(8, 8, 0.8, 1.0, 0.75, 1.3);
        var rng = new DataRandom(5);
        int fullCount = 0;
        for (int i = 0; i < 2000; i++)
        {
            var (top, left, h, w) = t.SampleBox(300, 400, rng);
            Assert.That(top >= 0 && left >= 0 && top + h <= 300 && left + w <= 400, $"box {top},{left},{h},{w}");
            if (h == 300 && w == 400) { fullCount++; continue; } // fallback (ratio 4/3 > 1.3 → not the whole image; see below)
            double area = (double)h * w / (300 * 400), ratio = (double)w / h;
            // w, h are rounded: allow one pixel in each.
            Assert.That(area, Is.InRange(0.8 * (1 - 2.0 / 300) - 1e-9, 1.0 + 2.0 / 300));
            Assert.That(ratio, Is.InRange(0.75 * (1 - 1.0 / 240), 1.3 * (1 + 1.0 / 240)));
        }
        Assert.That(fullCount, Is.EqualTo(0), "the fallback of a 4:3 image with max ratio 1.3 is 390x300, never the whole image");
        var output = t.Apply(ImageTestData.Coordinates(40, 30), new DataRandom(9));
        Assert.That((output.Width, output.Height), Is.EqualTo((8, 8)));
    }

    [Test]
    public void PipelinesAreDeterministicPerSampleStream()
    {
        var pipe = ImagePipeline.ProductTrain(resize: 24, crop: 20);
        var src = Source;
        using var a = pipe.ApplyToTensor(src, DataRandom.ForSample(1, 0, 17));
        using var b = pipe.ApplyToTensor(src, DataRandom.ForSample(1, 0, 17));
        Assert.That(a.ToArray<float>(), Is.EqualTo(b.ToArray<float>()));
        int differ = 0;
        for (int s = 0; s < 8; s++)
        {
            using var c = pipe.ApplyToTensor(src, DataRandom.ForSample(1, 0, 100 + s));
            if (!c.ToArray<float>().SequenceEqual(a.ToArray<float>())) differ++;
        }
        Assert.That(differ, Is.GreaterThan(0), "other samples draw other crops");
        Assert.That((ImagePipeline.ProductEval(112, 96).OutputHeight, ImagePipeline.RetrievalTrain(96).OutputWidth), Is.EqualTo((96, 96)));
        using var e = ImagePipeline.RetrievalEval(16).ApplyToTensor(src, new DataRandom(0));
        Assert.That(e.Shape, Is.EqualTo(new[] { 3, 16, 16 }));
    }
}

/// <summary>Throughput of decode + product train transform on one thread (measurement; run explicitly).</summary>
public class ImagePipelineBenchmark
{
    [Test, Explicit("benchmark: run by name")]
    public void DecodeAndTransformThroughput()
    {
        var dir = ImageTestData.NewTempDir();
        var jpg = ImageTestData.WriteImage(Path.Combine(dir, "big.jpg"), 600, 800);
        var png = ImageTestData.WriteImage(Path.Combine(dir, "fg.png"), 256, 256);
        var pipe = ImagePipeline.ProductTrain();
        var dst = new float[3 * 224 * 224];
        foreach (var path in new[] { jpg, png })
        {
            var rng = new DataRandom(1);
            for (int i = 0; i < 3; i++) pipe.Apply(ImageLoader.Load(path), rng, dst); // warm-up
            const int n = 30;
            // Process CPU time (the machine may be shared, so wall time is noisy); the work runs on this one thread.
            var proc = System.Diagnostics.Process.GetCurrentProcess();
            var cpu0 = proc.TotalProcessorTime;
            for (int i = 0; i < n; i++) ImageLoader.Load(path);
            proc.Refresh();
            double decode = (proc.TotalProcessorTime - cpu0).TotalMilliseconds / n;
            var img = ImageLoader.Load(path);
            proc.Refresh(); cpu0 = proc.TotalProcessorTime;
            for (int i = 0; i < n; i++) pipe.Apply(img, rng, dst);
            proc.Refresh();
            double transform = (proc.TotalProcessorTime - cpu0).TotalMilliseconds / n;
            TestContext.Out.WriteLine($"{Path.GetFileName(path)} {img.Width}x{img.Height}: decode {decode:F2} ms, resize 256 + crop 224 + flip + normalise {transform:F2} ms (CPU time, 1 thread)");
        }
    }
}
