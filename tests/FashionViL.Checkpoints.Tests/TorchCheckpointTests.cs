using System.Text.Json;
using FashionViL.Nn.Checkpoints;

namespace FashionViL.Checkpoints.Tests;

/// <summary>
/// PyTorch zip checkpoints written by torch.save (tests/fixtures/pth, made by tools/fixtures/make_pth_fixtures.py);
/// expected values come from torch itself (expected.json).
/// </summary>
public class TorchCheckpointTests
{
    static string Dir
    {
        get
        {
            for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d != null; d = d.Parent)
            {
                var p = Path.Combine(d.FullName, "tests", "fixtures", "pth");
                if (Directory.Exists(p)) return p;
            }
            throw new DirectoryNotFoundException($"tests/fixtures/pth not found above {TestContext.CurrentContext.TestDirectory}");
        }
    }

    static string F(string name) => Path.Combine(Dir, name);

    static JsonElement Expected(string file)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(F("expected.json")));
        return doc.RootElement.GetProperty(file).Clone();
    }

    static void AssertMatches(string file, Dictionary<string, Tensor> got)
    {
        var exp = Expected(file);
        var names = exp.EnumerateObject().Select(p => p.Name).ToList();
        Assert.That(got.Keys, Is.EquivalentTo(names), file);
        foreach (var p in exp.EnumerateObject())
        {
            var t = got[p.Name];
            Assert.That(t.DType.Name(), Is.EqualTo(p.Value.GetProperty("dtype").GetString()), $"{file}:{p.Name} dtype");
            Assert.That(t.Shape, Is.EqualTo(p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray()), $"{file}:{p.Name} shape");
            var want = p.Value.GetProperty("values").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            double[] have = t.DType switch
            {
                DType.Float32 => t.ToArray<float>().Select(x => (double)x).ToArray(),
                DType.Float64 => t.ToArray<double>(),
                DType.Float16 => t.ToArray<Half>().Select(x => (double)x).ToArray(),
                DType.BFloat16 => t.ToArray<BFloat16>().Select(x => (double)(float)x).ToArray(),
                DType.Int64 => t.ToArray<long>().Select(x => (double)x).ToArray(),
                DType.Int32 => t.ToArray<int>().Select(x => (double)x).ToArray(),
                DType.UInt8 => t.ToArray<byte>().Select(x => (double)x).ToArray(),
                DType.Bool => t.ToArray<bool>().Select(x => x ? 1.0 : 0.0).ToArray(),
                _ => throw new NotSupportedException(t.DType.ToString()),
            };
            Assert.That(have, Is.EqualTo(want), $"{file}:{p.Name} values (exact)");
        }
    }

    static void DisposeAll(Dictionary<string, Tensor> d) { foreach (var t in d.Values) t.Dispose(); }

    [Test]
    public void StateDict_WithMetadata_LoadsExactValues()
    {
        var sd = TorchCheckpoint.Load(F("state_dict.pth"));
        try
        {
            AssertMatches("state_dict.pth", sd);
            Assert.That(sd["1.num_batches_tracked"].DType, Is.EqualTo(DType.Int64));
            Assert.That(sd["1.num_batches_tracked"].ToArray<long>(), Is.EqualTo(new long[] { 7 }));
            Assert.That(sd["0.weight"].Shape, Is.EqualTo(new[] { 4, 3 }));
        }
        finally { DisposeAll(sd); }
    }

    [Test]
    public void Views_OffsetsStridesAndDtypes_LoadExactly()
    {
        var sd = TorchCheckpoint.Load(F("views.pth"));
        try
        {
            AssertMatches("views.pth", sd);
            // Independent check of the view arithmetic: base[i,j] = (5i+j)/8.
            var slice = sd["slice"].ToArray<float>();   // base[1:, ::2] → [3,3]
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    Assert.That(slice[i * 3 + j], Is.EqualTo((5 * (i + 1) + 2 * j) / 8f));
            var tr = sd["transposed"].ToArray<float>();  // [5,4]
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 4; j++)
                    Assert.That(tr[i * 4 + j], Is.EqualTo((5 * j + i) / 8f));
            Assert.That(sd["col"].ToArray<float>(), Is.EqualTo(new[] { 3 / 8f, 8 / 8f, 13 / 8f, 18 / 8f }));
            Assert.That(sd["scalar"].Shape, Is.Empty);
            Assert.That(sd["f64"].ToArray<double>()[0], Is.EqualTo(1.0 / 3));
        }
        finally { DisposeAll(sd); }
    }

    [Test]
    public void ManyEntries_LongMemo_SharedStorage()
    {
        var sd = TorchCheckpoint.Load(F("many.pth"));
        try
        {
            AssertMatches("many.pth", sd);
            Assert.That(sd["p149"].ToArray<float>(), Is.EqualTo(new[] { 74.5f, 75f }));
        }
        finally { DisposeAll(sd); }
    }

    [Test]
    public void MmfCheckpoint_StateDictUnderModel_AndRawObject()
    {
        var sd = TorchCheckpoint.Load(F("mmf.pth"));
        try { AssertMatches("state_dict.pth", sd); }
        finally { DisposeAll(sd); }

        var root = (Dictionary<object, object?>)TorchCheckpoint.LoadObject(F("mmf.pth"))!;
        Assert.That(root["current_iteration"], Is.EqualTo(12L));
        Assert.That(root["best_metric"], Is.EqualTo(0.5));
        var config = (Dictionary<object, object?>)root["config"]!;
        Assert.That(config["name"], Is.EqualTo("fixture"));
        Assert.That(config["layers"], Is.EqualTo(new List<object?> { 1L, 2L }));
        Assert.That(config["ints"], Is.EqualTo(new List<object?> { -5L, 1000L, 100000L, 1L << 40, long.MinValue, System.Numerics.BigInteger.Pow(2, 70) }));
        Assert.That(config["flags"], Is.EqualTo(new object?[] { true, false, null }));
        Assert.That(config["eps"], Is.EqualTo(-1.5e-300));
        var opt = (Dictionary<object, object?>)root["optimizer"]!;
        var groups = (List<object?>)opt["param_groups"]!;
        Assert.That(((Dictionary<object, object?>)groups[0]!)["lr"], Is.EqualTo(1e-3));
        var model = (Dictionary<object, object?>)root["model"]!;
        Assert.That(model.Values.All(v => v is Tensor));
        foreach (var v in model.Values) ((Tensor)v!).Dispose();
    }

    [Test]
    public void MaliciousPickle_IsRefused_NamingTheGlobal_AndNothingRuns()
    {
        const string marker = "/tmp/pwned";
        bool existed = File.Exists(marker);
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(F("malicious.pth")))!;
        Assert.That(e.Message, Does.Contain("os.system"));
        Assert.That(e.Message, Does.Contain("malicious.pth"));
        if (!existed) Assert.That(File.Exists(marker), Is.False);
    }

    [TestCase("builtins", "eval")]
    [TestCase("posix", "system")]
    [TestCase("subprocess", "Popen")]
    [TestCase("torch", "load")]
    public void OtherGlobals_AreRefused(string module, string name)
    {
        // PROTO 2, GLOBAL module name, SHORT_BINUNICODE 'x', TUPLE1, REDUCE, STOP — written by hand, never run.
        var pkl = new List<byte> { 0x80, 2, (byte)'c' };
        pkl.AddRange(System.Text.Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
        pkl.AddRange(new byte[] { 0x8c, 1, (byte)'x', 0x85, (byte)'R', (byte)'.' });
        var dir = Directory.CreateTempSubdirectory("pth-evil").FullName;
        try
        {
            var path = Path.Combine(dir, "evil.pth");
            using (var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create))
            {
                using var w = zip.CreateEntry("evil/data.pkl", System.IO.Compression.CompressionLevel.NoCompression).Open();
                w.Write(pkl.ToArray());
            }
            var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.LoadObject(path))!;
            Assert.That(e.Message, Does.Contain($"{module}.{name}").And.Contain(path));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void TruncatedFile_ErrorNamesTheFile()
    {
        var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(F("truncated.pth")))!;
        Assert.That(e.Message, Does.Contain("truncated.pth"));
    }

    [Test]
    public void MissingFile_NotAZip_AndCorruptEntries_ErrorsNameTheFile()
    {
        var missing = Path.Combine(Path.GetTempPath(), $"nope-{Guid.NewGuid():N}.pth");
        Assert.That(Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(missing))!.Message, Does.Contain(missing));

        var dir = Directory.CreateTempSubdirectory("pth-tests").FullName;
        try
        {
            var notZip = Path.Combine(dir, "text.pth");
            File.WriteAllText(notZip, "hello, I am not a zip");
            Assert.That(Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(notZip))!.Message, Does.Contain(notZip));

            // Valid zip, storage entry removed.
            var noData = Path.Combine(dir, "nodata.pth");
            Rewrite(F("state_dict.pth"), noData, (name, bytes) => name.EndsWith("/data/0") ? null : bytes);
            var e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(noData))!;
            Assert.That(e.Message, Does.Contain(noData).And.Contain("data/0"));

            // Storage too short for its view.
            var shortData = Path.Combine(dir, "short.pth");
            Rewrite(F("views.pth"), shortData, (name, bytes) => name.EndsWith("/data/0") ? bytes[..8] : bytes);
            e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(shortData))!;
            Assert.That(e.Message, Does.Contain(shortData).And.Contain("data/0"));

            // Pickle cut in half.
            var cutPickle = Path.Combine(dir, "cutpickle.pth");
            Rewrite(F("state_dict.pth"), cutPickle, (name, bytes) => name.EndsWith("/data.pkl") ? bytes[..(bytes.Length / 2)] : bytes);
            e = Assert.Throws<InvalidDataException>(() => TorchCheckpoint.Load(cutPickle))!;
            Assert.That(e.Message, Does.Contain(cutPickle).And.Contain("truncated"));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void CorruptPickles_OnlyEverGiveInvalidDataException()
    {
        // Every truncation point and single-byte corruptions of a real data.pkl: either a result or a clean error.
        var dir = Directory.CreateTempSubdirectory("pth-fuzz").FullName;
        try
        {
            byte[] pkl;
            using (var z = System.IO.Compression.ZipFile.OpenRead(F("views.pth")))
            using (var s = z.Entries.First(e => e.FullName.EndsWith("/data.pkl")).Open())
            using (var ms = new MemoryStream()) { s.CopyTo(ms); pkl = ms.ToArray(); }
            var rng = new Random(1234);
            var variants = new List<byte[]>();
            for (int cut = 0; cut < pkl.Length; cut += 5) variants.Add(pkl[..cut]);
            for (int i = 0; i < 300; i++)
            {
                var v = (byte[])pkl.Clone();
                v[rng.Next(v.Length)] = (byte)rng.Next(256);
                variants.Add(v);
            }
            var path = Path.Combine(dir, "fuzz.pth");
            int errors = 0;
            foreach (var v in variants)
            {
                Rewrite(F("views.pth"), path, (name, bytes) => name.EndsWith("/data.pkl") ? v : bytes);
                try { DisposeAll(TorchCheckpoint.Load(path)); }
                catch (InvalidDataException e) { errors++; Assert.That(e.Message, Does.Contain(path)); }
                File.Delete(path);
            }
            Assert.That(errors, Is.GreaterThan(variants.Count / 2));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Test]
    public void CorruptZipBytes_OnlyEverGiveInvalidDataException()
    {
        var dir = Directory.CreateTempSubdirectory("pth-zipfuzz").FullName;
        try
        {
            var original = File.ReadAllBytes(F("state_dict.pth"));
            var rng = new Random(99);
            var path = Path.Combine(dir, "fuzz.pth");
            for (int i = 0; i < 300; i++)
            {
                var v = (byte[])original.Clone();
                for (int k = 0; k < 1 + i % 3; k++) v[rng.Next(v.Length)] = (byte)rng.Next(256);
                File.WriteAllBytes(path, v);
                try { DisposeAll(TorchCheckpoint.Load(path)); }
                catch (InvalidDataException e) { Assert.That(e.Message, Does.Contain(path)); }
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    static void Rewrite(string src, string dst, Func<string, byte[], byte[]?> change)
    {
        using var input = System.IO.Compression.ZipFile.OpenRead(src);
        using var output = System.IO.Compression.ZipFile.Open(dst, System.IO.Compression.ZipArchiveMode.Create);
        foreach (var entry in input.Entries)
        {
            using var ms = new MemoryStream();
            using (var s = entry.Open()) s.CopyTo(ms);
            var bytes = change(entry.FullName, ms.ToArray());
            if (bytes == null) continue;
            var e = output.CreateEntry(entry.FullName, System.IO.Compression.CompressionLevel.NoCompression);
            using var w = e.Open();
            w.Write(bytes);
        }
    }

    [Test]
    public void ConvertToSafeTensors_RoundTrips()
    {
        var dir = Directory.CreateTempSubdirectory("pth-convert").FullName;
        try
        {
            var outPath = Path.Combine(dir, "views.safetensors");
            TorchCheckpoint.ConvertToSafeTensors(F("views.pth"), outPath);
            Assert.That(Directory.GetFiles(dir), Is.EqualTo(new[] { outPath }), "no temporary file left behind");
            var back = SafeTensors.Load(outPath);
            try { AssertMatches("views.pth", back); }
            finally { DisposeAll(back); }
        }
        finally { Directory.Delete(dir, true); }
    }
}
