using System.Diagnostics;
using FashionViL.Autograd;
using FashionViL.Nn;
using FashionViL.Nn.Checkpoints;
using FashionViL.Nn.Models;
using FashionViL.Testing;

namespace FashionViL.Nn.Tests;

/// <summary>
/// VQ-VAE encoder + quantiser (spec §3): state-dict names and shapes against the torch twin of the reference
/// (tests/fixtures/vqvae/vqvae_reference_keys.txt), a golden z and code indices at reduced resolution
/// (vqvae_golden.safetensors), a real torch.save checkpoint (vqvae_tiny.pth), all made by
/// tools/fixtures/make_vqvae_fixture.py; plus the lookup order against a float64 brute force, chunking, and bad input.
/// </summary>
public class VqVaeTests
{
    /// <summary>The golden's config: 32×32 input, 4 downsamples to a 2×2 grid, attention at levels 3 (4×4) and 4 (2×2).</summary>
    private static readonly VqVaeConfig Golden = VqVaeConfig.Reference with
    {
        Resolution = 32, NumTokens = 64, CodebookDim = 32, HiddenDim = 32, ZChannels = 32, ChMult = [1, 1, 2, 2, 4], AttnResolutions = [4, 2],
    };

    /// <summary>The tiny checkpoint's config (one downsample, attention at level 1).</summary>
    private static readonly VqVaeConfig Tiny = VqVaeConfig.Reference with
    {
        Resolution = 8, NumTokens = 16, CodebookDim = 8, HiddenDim = 32, ZChannels = 8, ChMult = [1, 1], NumResBlocks = 1, AttnResolutions = [4],
    };

    private static string FixturePath(string file)
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
        {
            var p = Path.Combine(d.FullName, "tests", "fixtures", "vqvae", file);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"tests/fixtures/vqvae/{file} not found above {TestContext.CurrentContext.TestDirectory}");
    }

    // ------------------------------------------------------------------ closed forms of the fixture script

    private static long NameSum(string name)
    {
        long s = 0;
        for (int k = 0; k < name.Length; k++) s += (k + 1) * (long)name[k];
        return s;
    }

    /// <summary>make_vqvae_fixture.py <c>fill</c> (the make_resnet_fixture.py sine, float64 then float32).</summary>
    private static float[] FillValues(string name, int[] shape)
    {
        int n = shape.Aggregate(1, (a, b) => a * b);
        double seed = NameSum(name) % 1000 / 100.0;
        string[] parts = name.Split('.');
        bool normWeight = parts[^2].StartsWith("norm", StringComparison.Ordinal) && parts[^1] == "weight";
        double scale = shape.Length >= 2 ? 1 / Math.Sqrt(n / shape[0]) : 0.1;
        if (name == "quantize.embedding.weight") scale *= 0.25;
        var v = new float[n];
        for (long i = 0; i < n; i++)
        {
            double s = Math.Sin(0.37 * i + 0.61 * (i * i % 9973) + seed);
            v[i] = (float)(normWeight ? 1 + 0.1 * s : scale * s);
        }
        return v;
    }

    /// <summary>make_vqvae_fixture.py <c>exact</c>: ((37 i + s) mod 256 − 128) / 1024, exactly representable.</summary>
    private static float[] ExactValues(string name, int n)
    {
        long s = NameSum(name) % 256;
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = ((37 * i + s) % 256 - 128) / 1024f;
        return v;
    }

    private static VqVaeEncoder FormulaModel(VqVaeConfig config)
    {
        var m = new VqVaeEncoder(config, new Generator(5));
        var dict = m.StateDict().ToDictionary(kv => kv.Key, kv => Tensor.FromArray(FillValues(kv.Key, kv.Value.Shape), kv.Value.Shape));
        m.LoadStateDict(dict);
        foreach (var t in dict.Values) t.Dispose();
        return m;
    }

    // ------------------------------------------------------------------ structure

    [Test]
    public void ReferenceConfigHasTheReferenceKeysShapesAndOrder()
    {
        var want = File.ReadAllLines(FixturePath("vqvae_reference_keys.txt")).Where(l => l.Length > 0).Select(l =>
        {
            var p = l.Split(' ');
            return (Key: p[0], Shape: p[1].Length == 0 ? [] : p[1].Split(',').Select(int.Parse).ToArray());
        }).ToList();
        var m = new VqVaeEncoder(VqVaeConfig.Reference, new Generator(1));
        var got = m.StateDict().Select(kv => (Key: kv.Key, Shape: kv.Value.Shape)).ToList();
        Assert.That(got.Select(g => g.Key), Is.EqualTo(want.Select(w => w.Key)), "key order of the torch twin's state_dict()");
        for (int i = 0; i < want.Count; i++)
            Assert.That(got[i].Shape, Is.EqualTo(want[i].Shape), want[i].Key);

        // Spec §3: ≈41.1 M encoder parameters, 65.8 k quant_conv, the codebook is a 1024×256 buffer (not a parameter).
        long enc = m.Encoder.Parameters().Sum(p => (long)p.Numel);
        long fromFile = want.Where(w => w.Key.StartsWith("encoder.", StringComparison.Ordinal)).Sum(w => w.Shape.Aggregate(1L, (a, b) => a * b));
        Assert.That(enc, Is.EqualTo(fromFile));
        Assert.That(enc / 1e6, Is.EqualTo(41.1).Within(0.05));
        Assert.That(m.NamedParameters().Where(p => p.Name.StartsWith("quant_conv.", StringComparison.Ordinal)).Sum(p => p.Tensor.Numel), Is.EqualTo(256 * 256 + 256));
        Assert.That(m.NamedBuffers().Select(b => b.Name), Is.EqualTo(new[] { "quantize.embedding.weight", "quantize.embedding.cluster_size", "quantize.embedding.embed_avg" }));
        Assert.That(m.Quantize.Embedding.Weight.Shape, Is.EqualTo(new[] { 1024, 256 }));

        // Frozen and in eval mode, like the reference's tokeniser.
        Assert.That(m.Parameters().All(p => !p.RequiresGrad), Is.True);
        Assert.That(m.NamedModules().All(x => !x.Module.IsTraining), Is.True);
    }

    [Test]
    public void AttentionFollowsTheReferenceRule()
    {
        var r = VqVaeConfig.Reference;
        Assert.That(Enumerable.Range(0, 6).Select(r.LevelResolution), Is.EqualTo(new[] { 224, 112, 56, 28, 14, 7 }));
        Assert.That(Enumerable.Range(0, 6).Select(r.LevelHasAttention), Is.EqualTo(new[] { false, false, false, false, false, true }));
        Assert.That(r.GridSize, Is.EqualTo(7));
        Assert.That(r.TokensPerImage, Is.EqualTo(49));

        Assert.That(Enumerable.Range(0, 5).Select(Golden.LevelResolution), Is.EqualTo(new[] { 32, 16, 8, 4, 2 }));
        Assert.That(Enumerable.Range(0, 5).Select(Golden.LevelHasAttention), Is.EqualTo(new[] { false, false, false, true, true }));
        var m = new VqVaeEncoder(Golden, new Generator(2));
        var keys = m.StateDict().Keys.ToHashSet();
        for (int level = 0; level < 5; level++)
            for (int j = 0; j < 2; j++)
                Assert.That(keys.Contains($"encoder.down.{level}.attn.{j}.q.weight"), Is.EqualTo(level >= 3), $"level {level} attn {j}");
        Assert.That(keys.Contains("encoder.down.4.downsample.conv.weight"), Is.False, "no downsample after the last level");
        Assert.That(keys.Contains("encoder.down.3.downsample.conv.weight"), Is.True);
        Assert.That(keys.Contains("encoder.down.2.block.0.nin_shortcut.weight"), Is.True, "32 → 64 channels");
        Assert.That(keys.Contains("encoder.down.2.block.1.nin_shortcut.weight"), Is.False);
        Assert.That(keys.Contains("encoder.mid.attn_1.proj_out.bias"), Is.True);

        // 32×32 with six levels ends at a 1×1 grid; odd sizes round down like the pad-then-stride-2 conv.
        var small = Golden with { ChMult = [1, 1, 2, 2, 4, 4], AttnResolutions = [1] };
        Assert.That(small.GridSize, Is.EqualTo(1));
        Assert.That(small.LevelHasAttention(5), Is.True);
        Assert.That((Golden with { Resolution = 56 }).GridSize, Is.EqualTo(3), "56, 28, 14, 7, 3");
    }

    // ------------------------------------------------------------------ golden

    /// <summary>
    /// z and indices against the torch twin. The golden z is float64 from the same float32 weights and input; torch's own
    /// float32 run differs from it by 1.5e-6 of max |z| (printed by the script), so 1e-4 relative to max |z| (plus 1e-4
    /// relative elementwise) leaves room for a different float32 summation order but not for a wrong op (a missing
    /// GroupNorm affine, a wrong attention scale or pad side changes z at the 1e-2 level or more). The script checks that
    /// every winning code beats the runner-up by 0.23% of the distance scale, far above float32 rounding, so the
    /// indices must match exactly.
    /// </summary>
    [Test]
    public void GoldenMatchesPyTorchTwin()
    {
        var f = SafeTensors.Load(FixturePath("vqvae_golden.safetensors"));
        var m = FormulaModel(Golden);
        var x = f["x"];
        using var z = m.Encode(x);
        Assert.That(z.Shape, Is.EqualTo(new[] { 2, 32, 2, 2 }));
        double scale = f["z"].ToArray<float>().Max(v => Math.Abs((double)v));
        OpCheck.AssertClose(z, f["z"], rtol: 1e-4, atol: 1e-4 * scale, what: "z after quant_conv");

        // Tokenize = Lookup(Encode) is checked in TokenizeIsTheRowMajorNearestCodeOfEncodeInAnyChunking; one forward here.
        using var ids = m.Quantize.Lookup(z);
        Assert.That(ids.DType, Is.EqualTo(DType.Int64));
        Assert.That(ids.Shape, Is.EqualTo(new[] { 2, 4 }));
        Assert.That(ids.ToArray<long>(), Is.EqualTo(f["indices"].ToArray<long>()));
        foreach (var t in f.Values) t.Dispose();
    }

    // ------------------------------------------------------------------ lookup order, chunking, modes

    /// <summary>Indices against a float64 brute force over z (position = row·w + col, first minimum), for chunks that do not divide the batch.</summary>
    [Test]
    public void TokenizeIsTheRowMajorNearestCodeOfEncodeInAnyChunking()
    {
        var m = new VqVaeEncoder(Tiny, new Generator(3));
        // A codebook on the scale of z so that different positions pick different codes.
        using (var x0 = OpCheck.Rand([1, 3, 8, 8], 9, DType.Float32))
        using (var z0 = m.Encode(x0))
        {
            double zs = Math.Sqrt(z0.ToArray<float>().Average(v => (double)v * v));
            var cb = m.Quantize.Embedding.Weight;
            var w = cb.ToArray<float>().Select(v => (float)(v * zs)).ToArray();
            using var src = Tensor.FromArray(w, cb.Shape);
            Backends.Get(cb.Device).Copy(src, cb);
        }
        using var x = OpCheck.Rand([5, 3, 8, 8], 11, DType.Float32, -2, 2);
        using var z = m.Encode(x);
        var zv = z.ToArray<float>();
        var e = m.Quantize.Embedding.Weight.ToArray<float>();
        int d = Tiny.CodebookDim, g = Tiny.GridSize, k = Tiny.NumTokens;
        var want = new long[5 * g * g];
        for (int b = 0; b < 5; b++)
            for (int r = 0; r < g; r++)
                for (int c = 0; c < g; c++)
                {
                    double best = double.PositiveInfinity; long arg = -1;
                    for (int j = 0; j < k; j++)
                    {
                        double dist = 0;
                        for (int ch = 0; ch < d; ch++)
                        {
                            double diff = zv[((b * d + ch) * g + r) * g + c] - (double)e[j * d + ch];
                            dist += diff * diff;
                        }
                        if (dist < best) { best = dist; arg = j; }
                    }
                    want[b * g * g + r * g + c] = arg;
                }
        Assert.That(want.Distinct().Count(), Is.GreaterThan(3), "the check needs several different codes");
        foreach (int chunk in new[] { 1, 2, 5, 8 })
        {
            using var ids = m.Tokenize(x, chunk);
            Assert.That(ids.Shape, Is.EqualTo(new[] { 5, 16 }), $"chunk {chunk}");
            Assert.That(ids.ToArray<long>(), Is.EqualTo(want), $"chunk {chunk}");
        }
    }

    [Test]
    public void TokenizeForcesEvalAndRecordsNoGraph()
    {
        var m = new VqVaeEncoder(Tiny with { Dropout = 0.5 }, new Generator(4));
        m.Train();
        using var x = OpCheck.Rand([2, 3, 8, 8], 12, DType.Float32);
        using var a = m.Tokenize(x);
        Assert.That(m.NamedModules().All(t => !t.Module.IsTraining), Is.True, "tokenize puts the encoder in eval mode");
        using var b = m.Tokenize(x);
        Assert.That(a.ToArray<long>(), Is.EqualTo(b.ToArray<long>()), "eval mode: dropout off, deterministic");
        using var z = m.Encode(x);
        Assert.That(z.RequiresGrad, Is.False, "frozen parameters: no graph through the tokeniser");
    }

    // ------------------------------------------------------------------ checkpoints

    [Test]
    public void LoadsTheTorchSavedStateDictByNameWithExactValues()
    {
        var path = FixturePath("vqvae_tiny.pth");
        var raw = TorchCheckpoint.Load(path);
        var m = VqVaeEncoder.LoadPretrained(path, Tiny);
        var sd = m.StateDict();
        Assert.That(sd.Keys, Is.EquivalentTo(raw.Keys), "names of the torch twin's state_dict");
        Assert.That(sd.Count, Is.EqualTo(65));
        foreach (var (name, t) in sd)
            Assert.That(t.ToArray<float>(), Is.EqualTo(ExactValues(name, (int)t.Numel)), name);
        Assert.That(m.Parameters().All(p => !p.RequiresGrad), Is.True);
        foreach (var t in raw.Values) t.Dispose();
    }

    private static string TempFile(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "vqvae-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return Path.Combine(dir, name);
    }

    [Test]
    public void StripsTheMmfPrefixAndReadsSafeTensors()
    {
        var raw = TorchCheckpoint.Load(FixturePath("vqvae_tiny.pth"));
        var mmf = raw.ToDictionary(kv => "model.image_tokenizer." + kv.Key, kv => kv.Value);
        using var other = Tensor.Zeros([3, 2]);
        mmf["model.bert.embeddings.word_embeddings.weight"] = other;   // the rest of an MMF model is ignored
        var path = TempFile("fashionvil_mmf.safetensors");
        try
        {
            SafeTensors.Save(path, mmf);
            var m = VqVaeEncoder.LoadPretrained(path, Tiny);
            foreach (var (name, t) in m.StateDict())
                Assert.That(t.ToArray<float>(), Is.EqualTo(ExactValues(name, (int)t.Numel)), name);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, true);
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    [Test]
    public void CheckpointWithMissingOrUnexpectedKeysIsRefusedByName()
    {
        var raw = TorchCheckpoint.Load(FixturePath("vqvae_tiny.pth"));
        var path = TempFile("broken.safetensors");
        try
        {
            var broken = raw.Where(kv => kv.Key != "encoder.mid.attn_1.q.bias").ToDictionary(kv => kv.Key, kv => kv.Value);
            using var extra = Tensor.Zeros([4]);
            broken["encoder.down.0.block.0.temb_proj.bias"] = extra;
            SafeTensors.Save(path, broken);
            var ex = Assert.Throws<InvalidDataException>(() => VqVaeEncoder.LoadPretrained(path, Tiny))!;
            Assert.That(ex.Message, Does.Contain(path));
            Assert.That(ex.Message, Does.Contain("missing keys (1): encoder.mid.attn_1.q.bias"));
            Assert.That(ex.Message, Does.Contain("unexpected keys (1): encoder.down.0.block.0.temb_proj.bias"));

            // The full-size config does not fit the tiny file: mis-shaped keys are listed with both shapes.
            File.Delete(path);
            SafeTensors.Save(path, raw);
            var ex2 = Assert.Throws<InvalidDataException>(() => VqVaeEncoder.LoadPretrained(path, Tiny with { ZChannels = 16 }))!;
            Assert.That(ex2.Message, Does.Contain("encoder.conv_out.weight: model [16, 32, 3, 3], checkpoint [8, 32, 3, 3]"));

            var missing = Path.Combine(Path.GetDirectoryName(path)!, "nope.pth");
            var ex3 = Assert.Throws<FileNotFoundException>(() => VqVaeEncoder.LoadPretrained(missing, Tiny))!;
            Assert.That(ex3.Message, Does.Contain(missing));
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, true);
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    // ------------------------------------------------------------------ bad input

    [Test]
    public void BadImagesAndConfigsNameTheShapes()
    {
        var m = new VqVaeEncoder(Tiny, new Generator(6));
        using var fourChannels = Tensor.Zeros([2, 4, 8, 8]);
        var ex = Assert.Throws<ArgumentException>(() => m.Tokenize(fourChannels))!;
        Assert.That(ex.Message, Does.Contain("[2, 4, 8, 8]").And.Contain("[B, 3, 8, 8]"));
        using var wrongSize = Tensor.Zeros([1, 3, 16, 8]);
        ex = Assert.Throws<ArgumentException>(() => m.Encode(wrongSize))!;
        Assert.That(ex.Message, Does.Contain("[1, 3, 16, 8]").And.Contain("resolution 8"));
        using var rank3 = Tensor.Zeros([3, 8, 8]);
        Assert.Throws<ArgumentException>(() => m.Encode(rank3));
        using var ok = Tensor.Zeros([1, 3, 8, 8]);
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Tokenize(ok, chunk: 0));

        var cfg = Assert.Throws<ArgumentException>(() => new VqVaeEncoder(Tiny with { HiddenDim = 16 }))!;
        Assert.That(cfg.Message, Does.Contain("16 channels do not split into 32"));
        Assert.Throws<ArgumentException>(() => new VqVaeEncoder(Tiny with { Resolution = 1 }));
    }

    // ------------------------------------------------------------------ timing (not a test)

    /// <summary>CPU timing of the reference tokeniser: 8 images at 224 (random weights; the cost does not depend on them).</summary>
    [Test, Explicit("timing run, minutes on a small CPU")]
    public void TimeReferenceTokenizeBatch8()
    {
        var m = new VqVaeEncoder(VqVaeConfig.Reference, new Generator(7));
        using var x = OpCheck.Rand([8, 3, 224, 224], 13, DType.Float32);
        var sw = Stopwatch.StartNew();
        using var ids = m.Tokenize(x, chunk: 8);
        sw.Stop();
        Assert.That(ids.Shape, Is.EqualTo(new[] { 8, 49 }));
        TestContext.Out.WriteLine($"VqVaeEncoder.Tokenize 8x3x224x224 (reference config, float32, CPU, {Environment.ProcessorCount} cores): {sw.Elapsed.TotalSeconds:F1} s");
    }
}
