using System.Diagnostics;
using System.Text.Json.Nodes;
using FashionViL.Kernels.Cuda;
using ILGPU;
using ILGPU.Runtime;

namespace FashionViL.Kernels.Tests.Cuda;

/// <summary>
/// <see cref="KernelTuner"/> itself on ILGPU's CPU accelerator (a context without profiling: the host-clock path), with
/// candidates whose "kernels" spin for known times: the fastest is kept, the rule survives a small gap, a remembered choice
/// runs nothing, the cache file survives the process and names itself in every error, and an output saved for timing is
/// restored before every run.
/// </summary>
[TestFixture, Category("Cuda"), NonParallelizable]
public class KernelTunerTests() : EmulatorKernelTestBase(assertions: false)
{
    private TuningScope _scope = null!;
    private string _dir = null!;

    private static readonly GemmVersion[] Three = [GemmVersion.Reg128x8Prefetch, GemmVersion.Reg128x8Vec, GemmVersion.Reg64x4];

    [SetUp]
    public void UseATemporaryCache()
    {
        _scope = new TuningScope(Acc, TuneMode.On);
        _dir = _scope.Dir;
    }

    [TearDown]
    public void Restore() => _scope.Dispose();

    private static void Spin(double ms)
    {
        long t0 = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(t0).TotalMilliseconds < ms) { }
    }

    /// <summary>Runs per candidate, and a run action spinning for the candidate's time.</summary>
    private static (Dictionary<GemmVersion, int> Runs, Action<GemmVersion> Run) Fake(params double[] ms)
    {
        var runs = Three.ToDictionary(v => v, _ => 0);
        return (runs, v => { runs[v]++; Spin(ms[Array.IndexOf(Three, v)]); });
    }

    private GemmVersion Pick(string key, GemmVersion rule, Action<GemmVersion> run)
        => KernelTuner.Pick(Acc, Acc.DefaultStream, key, rule, Three, run);

    [Test]
    public void TheFastestCandidateIsKeptAndWrittenDown()
    {
        var (runs, run) = Fake(20, 2, 40);
        Assert.That(Pick("k", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec));
        Assert.That(runs.Values, Is.All.EqualTo(1 + KernelTuner.Repeats), "one untimed run and the timed rounds per candidate");
        var e = KernelTuner.Entries(Acc)["k"];
        Assert.That(e.Choice, Is.EqualTo("Reg128x8Vec"));
        Assert.That(e.Rule, Is.EqualTo("Reg128x8Prefetch"));
        Assert.That(e.Ms["Reg128x8Vec"], Is.InRange(2.0, 15.0));
        Assert.That(e.Ms["Reg128x8Prefetch"], Is.InRange(20.0, 200.0));
        Assert.That(e.Ms["Reg64x4"], Is.GreaterThan(e.Ms["Reg128x8Prefetch"]));
        var s = KernelTuner.Stats(Acc);
        Assert.That((s.Tuned, s.DifferFromRule, s.FromCache, s.Entries), Is.EqualTo((1L, 1L, 0L, 1)));
        Assert.That(s.HostWaits, Is.GreaterThan(0), "timing waits for the device");
        var file = JsonNode.Parse(File.ReadAllText(KernelTuner.CacheFile!))!;
        Assert.That((string?)file["format"], Is.EqualTo(KernelTuner.Format));
        Assert.That((string?)file["device"], Is.EqualTo(KernelTuner.DeviceId(Acc)));
        Assert.That((string?)file["entries"]!["k"]!["choice"], Is.EqualTo("Reg128x8Vec"));
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary file is left beside the cache");
    }

    [Test]
    public void TheRuleIsKeptUnlessAnotherCandidateIsClearlyFaster()
    {
        KernelTuner.KeepRuleWithin = 0.5;
        var (_, run) = Fake(12, 9, 30);   // 25 % faster: inside the margin
        Assert.That(Pick("close", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Prefetch));
        KernelTuner.KeepRuleWithin = 0.1;
        var (_, run2) = Fake(12, 4, 30);  // 3× faster
        Assert.That(Pick("far", GemmVersion.Reg128x8Prefetch, run2), Is.EqualTo(GemmVersion.Reg128x8Vec));
        Assert.That(KernelTuner.Stats(Acc).DifferFromRule, Is.EqualTo(1));
    }

    [Test]
    public void ARememberedChoiceRunsNothing()
    {
        var (runs, run) = Fake(5, 1, 9);
        Pick("k", GemmVersion.Reg128x8Prefetch, run);
        foreach (var v in Three) runs[v] = 0;
        long waits = KernelTuner.Stats(Acc).HostWaits;
        Assert.That(Pick("k", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec));
        Assert.That(runs.Values, Is.All.EqualTo(0));
        var s = KernelTuner.Stats(Acc);
        Assert.That((s.Tuned, s.FromCache, s.HostWaits), Is.EqualTo((1L, 1L, waits)));
    }

    [Test]
    public void ChoicesOutliveTheProcessThroughTheCacheFile()
    {
        var (_, run) = Fake(6, 1, 9);
        Pick("k", GemmVersion.Reg128x8Prefetch, run);
        KernelTuner.Forget(Acc);   // as a new process: the table is read back from the file
        var (runs, run2) = Fake(1, 6, 9);
        Assert.That(Pick("k", GemmVersion.Reg128x8Prefetch, run2), Is.EqualTo(GemmVersion.Reg128x8Vec), "the file's choice, not a new timing");
        Assert.That(runs.Values.Sum(), Is.Zero);
        // a choice written by hand is honoured too
        WriteCache(new JsonObject { ["hand"] = new JsonObject { ["choice"] = "Reg64x4" } });
        KernelTuner.Forget(Acc);
        Assert.That(Pick("hand", GemmVersion.Reg128x8Prefetch, run2), Is.EqualTo(GemmVersion.Reg64x4));
        Assert.That(runs.Values.Sum(), Is.Zero);
    }

    [Test]
    public void ForcedChoicesRunButAreNeverWritten()
    {
        var (runs, run) = Fake(6, 1, 9);
        Pick("a", GemmVersion.Reg128x8Prefetch, run);   // timed: Reg128x8Vec
        Assert.That(KernelTuner.ForceChoices(Acc, 1), Is.EqualTo(3));
        foreach (var v in Three) runs[v] = 0;
        // names in ordinal order: Reg128x8Prefetch, Reg128x8Vec, Reg64x4 → index 1 is Reg128x8Vec, 2 is Reg64x4
        KernelTuner.ForceChoices(Acc, 2);
        Assert.That(Pick("a", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg64x4));
        Assert.That(runs.Values.Sum(), Is.Zero, "a forced choice is not timed");
        Pick("b", GemmVersion.Reg128x8Prefetch, run);   // a new shape is timed and the table saved
        var file = JsonNode.Parse(File.ReadAllText(KernelTuner.CacheFile!))!["entries"]!;
        Assert.That((string?)file["a"]!["choice"], Is.EqualTo("Reg128x8Vec"), "the file keeps the timed choice");
        KernelTuner.Forget(Acc);
        Assert.That(Pick("a", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec), "forgetting drops the forced choices");
    }

    [Test]
    public void ChoicesAnotherProcessWroteMeanwhileAreKept()
    {
        var (_, run) = Fake(6, 1, 9);
        Pick("mine", GemmVersion.Reg128x8Prefetch, run);
        // another process tunes a shape and rewrites the file while this one holds its table
        var json = JsonNode.Parse(File.ReadAllText(KernelTuner.CacheFile!))!;
        json["entries"]!["theirs"] = new JsonObject { ["choice"] = "Reg64x4" };
        File.WriteAllText(KernelTuner.CacheFile!, json.ToJsonString());
        Pick("mine too", GemmVersion.Reg128x8Prefetch, run);
        var entries = JsonNode.Parse(File.ReadAllText(KernelTuner.CacheFile!))!["entries"]!.AsObject();
        Assert.That(entries.Select(e => e.Key), Is.EquivalentTo(new[] { "mine", "mine too", "theirs" }));
        Assert.That(KernelTuner.Entries(Acc)["theirs"].Choice, Is.EqualTo("Reg64x4"), "and this process uses them from then on");
    }

    [Test]
    public void AnUnwritableCacheWarnsOnceAndKeepsTheChoicesInMemory()
    {
        // the cache "file" is an existing directory: the rename over it fails
        KernelTuner.CacheFile = Path.Combine(_dir, "taken");
        Directory.CreateDirectory(KernelTuner.CacheFile);
        var warnings = new List<string>();
        var saved = KernelTuner.Warn;
        KernelTuner.Warn = warnings.Add;
        try
        {
            var (runs, run) = Fake(6, 1, 9);
            Assert.That(Pick("a", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec));
            Assert.That(Pick("b", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec));
            foreach (var v in Three) runs[v] = 0;
            Assert.That(Pick("a", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec), "remembered in memory");
            Assert.That(runs.Values.Sum(), Is.Zero);
            Assert.That(warnings, Has.Count.EqualTo(1));
            Assert.That(warnings[0], Does.Contain(KernelTuner.CacheFile).And.Contain("kept in memory"));
            Assert.That(KernelTuner.Stats(Acc).SaveError, Is.Not.Null);
            Assert.That(Directory.GetFiles(_dir), Is.Empty, "no temporary file left behind");
        }
        finally
        {
            KernelTuner.Warn = saved;
        }
    }

    [Test]
    public void AChoiceTimedBeforeACandidateWasAddedIsTimedAgain()
    {
        WriteCache(new JsonObject
        {
            ["old"] = new JsonObject { ["choice"] = "Reg128x8Vec", ["ms"] = new JsonObject { ["Reg128x8Prefetch"] = 2.0, ["Reg128x8Vec"] = 1.0 } },
        });
        KernelTuner.Forget(Acc);
        var (runs, run) = Fake(6, 9, 1);   // the candidate the old entry never saw is the fastest
        Assert.That(Pick("old", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg64x4));
        Assert.That(runs[GemmVersion.Reg64x4], Is.EqualTo(1 + KernelTuner.Repeats));
    }

    [Test]
    public void AFileThatBecameAnotherDevicesIsNotOverwritten()
    {
        var warnings = new List<string>();
        var saved = KernelTuner.Warn;
        KernelTuner.Warn = warnings.Add;
        try
        {
            var (_, run) = Fake(6, 1, 9);
            Pick("a", GemmVersion.Reg128x8Prefetch, run);
            // another device's job now points at the same file
            string foreign = new JsonObject
            {
                ["format"] = KernelTuner.Format, ["device"] = "Cuda NVIDIA A100-SXM4-80GB, 108 multiprocessors",
                ["entries"] = new JsonObject { ["x"] = new JsonObject { ["choice"] = "Reg64x4" } },
            }.ToJsonString();
            File.WriteAllText(KernelTuner.CacheFile!, foreign);
            Assert.That(Pick("b", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Vec), "the run goes on");
            Assert.That(File.ReadAllText(KernelTuner.CacheFile!), Is.EqualTo(foreign), "the other device's file is left alone");
            Assert.That(warnings, Has.Count.EqualTo(1));
            Assert.That(warnings[0], Does.Contain("A100").And.Contain("not overwritten"));
        }
        finally
        {
            KernelTuner.Warn = saved;
        }
    }

    [TestCase(0, 0)]
    [TestCase(63, 63)]
    [TestCase(64, 64)]
    [TestCase(65, 128)]
    [TestCase(720, 768)]
    [TestCase(4800, 4800)]
    public void SizesFrom64AreBucketedToMultiplesOf64(long n, long bucket) => Assert.That(KernelTuner.Bucket(n), Is.EqualTo(bucket));

    [Test]
    public void AChoiceThatIsNoLongerACandidateIsTimedAgain()
    {
        WriteCache(new JsonObject
        {
            ["gone"] = new JsonObject { ["choice"] = "Reg256Someday" },
            ["other"] = new JsonObject { ["choice"] = "Naive" },
        });
        var (runs, run) = Fake(1, 5, 9);
        Assert.That(Pick("gone", GemmVersion.Reg128x8Vec, run), Is.EqualTo(GemmVersion.Reg128x8Prefetch));
        Assert.That(Pick("other", GemmVersion.Reg128x8Vec, run), Is.EqualTo(GemmVersion.Reg128x8Prefetch));
        Assert.That(runs[GemmVersion.Reg64x4], Is.EqualTo(2 * (1 + KernelTuner.Repeats)));
        Assert.That(KernelTuner.Entries(Acc)["gone"].Choice, Is.EqualTo("Reg128x8Prefetch"));
    }

    [Test]
    public void OffReturnsTheRuleAndTouchesNothing()
    {
        KernelTuner.Mode = TuneMode.Off;
        var (runs, run) = Fake(9, 1, 1);
        Assert.That(Pick("k", GemmVersion.Reg128x8Prefetch, run), Is.EqualTo(GemmVersion.Reg128x8Prefetch));
        Assert.That(runs.Values.Sum(), Is.Zero);
        Assert.That(File.Exists(KernelTuner.CacheFile), Is.False);
        Assert.That(KernelTuner.Stats(Acc), Is.EqualTo(default(TuneStats)));
    }

    [Test]
    public void ARuleOutsideTheCandidatesIsAnError()
    {
        var (_, run) = Fake(1, 1, 1);
        var e = Assert.Throws<ArgumentException>(() => Pick("k", GemmVersion.Naive, run));
        Assert.That(e!.Message, Does.Contain("Naive").And.Contain("'k'"));
    }

    [TestCase("{ not json", "not valid JSON")]
    [TestCase("[1, 2]", "not a JSON object")]
    [TestCase("{\"format\": \"other/9\", \"entries\": {}}", "format is 'other/9'")]
    [TestCase("{\"format\": \"fashionvil-kernel-tuning/1\", \"device\": \"Cuda NVIDIA H100 80GB HBM3, 132 multiprocessors\", \"entries\": {}}", "written for device 'Cuda NVIDIA H100")]
    [TestCase("{\"format\": \"fashionvil-kernel-tuning/1\", \"device\": \"@\"}", "no 'entries' object")]
    [TestCase("{\"format\": \"fashionvil-kernel-tuning/1\", \"device\": \"@\", \"entries\": {\"k\": {\"ms\": {}}}}", "entry 'k' has no 'choice'")]
    public void ABadCacheFileIsNamedInTheError(string text, string what)
    {
        File.WriteAllText(KernelTuner.CacheFile!, text.Replace("@", KernelTuner.DeviceId(Acc), StringComparison.Ordinal));
        var (runs, run) = Fake(1, 1, 1);
        var e = Assert.Throws<InvalidDataException>(() => Pick("k", GemmVersion.Reg128x8Prefetch, run));
        Assert.That(e!.Message, Does.Contain(KernelTuner.CacheFile!).And.Contain(what).And.Contain("Delete the file"));
        Assert.That(runs.Values.Sum(), Is.Zero);
        Assert.That(File.ReadAllText(KernelTuner.CacheFile!), Is.EqualTo(text.Replace("@", KernelTuner.DeviceId(Acc), StringComparison.Ordinal)),
            "the user's file is left as it was");
    }

    [TestCase("1", TuneMode.On)]
    [TestCase(" on ", TuneMode.On)]
    [TestCase("ON", TuneMode.On)]
    [TestCase("true", TuneMode.On)]
    [TestCase("yes", TuneMode.On)]
    [TestCase("false", TuneMode.Off)]
    [TestCase("no", TuneMode.Off)]
    [TestCase("0", TuneMode.Off)]
    [TestCase("off", TuneMode.Off)]
    [TestCase("", TuneMode.Off)]
    [TestCase(null, TuneMode.Off)]
    public void ModesParse(string? text, TuneMode want) => Assert.That(KernelTuner.ParseMode(text, "FVL_TUNE"), Is.EqualTo(want));

    [Test]
    public void AnUnknownModeNamesItsSource()
    {
        var e = Assert.Throws<ArgumentException>(() => KernelTuner.ParseMode("maybe", "FVL_TUNE"));
        Assert.That(e!.Message, Does.Contain("FVL_TUNE").And.Contain("'maybe'"));
    }

    [Test]
    public void TheDefaultCacheIsOneFilePerDeviceUnderTheUserCache()
    {
        KernelTuner.CacheFile = null;
        string? saved = Environment.GetEnvironmentVariable(KernelTuner.CacheVariable);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable(KernelTuner.CacheVariable, null);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", _dir);
            var p = KernelTuner.CachePathFor(Acc);
            Assert.That(p, Does.StartWith(Path.Combine(_dir, "fashionvil", "tuning")));
            Assert.That(Path.GetFileName(p), Does.Match("^cpu-[a-z0-9-]+-multiprocessors\\.json$"));
            Environment.SetEnvironmentVariable(KernelTuner.CacheVariable, Path.Combine(_dir, "mine.json"));
            Assert.That(KernelTuner.CachePathFor(Acc), Is.EqualTo(Path.Combine(_dir, "mine.json")));
        }
        finally
        {
            Environment.SetEnvironmentVariable(KernelTuner.CacheVariable, saved);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", xdg);
            KernelTuner.CacheFile = Path.Combine(_dir, "tune.json");
        }
    }

    [Test]
    public void ASavedOutputIsRestoredBeforeEveryRunAndAtTheEnd()
    {
        // each "kernel" accumulates into its output, as a GEMM with beta ≠ 0 does
        using var buf = Acc.Allocate1D(new float[] { 1, 2, 3, 4 });
        ArrayView<float> view = buf.View;
        var seen = new List<float[]>();
        void Run(GemmVersion v)
        {
            var x = buf.GetAsArray1D();
            seen.Add(x);
            buf.CopyFromCPU(x.Select(a => a + 10).ToArray());
        }
        KernelTuner.Pick(Acc, Acc.DefaultStream, "acc", GemmVersion.Reg128x8Prefetch, Three, Run, () => KernelTuner.SaveOutput(Acc, Acc.DefaultStream, view));
        Assert.That(seen, Has.Count.EqualTo(3 * (1 + KernelTuner.Repeats)));
        Assert.That(seen, Is.All.EqualTo(new float[] { 1, 2, 3, 4 }), "every run starts from the saved output");
        Assert.That(buf.GetAsArray1D(), Is.EqualTo(new float[] { 1, 2, 3, 4 }), "the caller's own run starts from it too");
    }

    private void WriteCache(JsonObject entries)
        => File.WriteAllText(KernelTuner.CacheFile!, new JsonObject
        {
            ["format"] = KernelTuner.Format, ["device"] = KernelTuner.DeviceId(Acc), ["entries"] = entries,
        }.ToJsonString());
}
