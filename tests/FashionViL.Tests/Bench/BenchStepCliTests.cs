using System.Text.Json;
using FashionViL.Bench;

namespace FashionViL.Tests.Bench;

/// <summary>`fashionvil bench step` on the CPU with the nano config (tests/FashionViL.Tests/Bench/nano.yaml).</summary>
[NonParallelizable]
public class BenchStepCliTests
{
    private static JsonElement RunJson(params string[] extra) => RunJsonWith(["--steps", "1", "--warmup", "1", "--profile-steps", "1", .. extra]);

    private static JsonElement RunJsonWith(string[] extra)
    {
        var json = BenchTestUtil.TempFile("step.json");
        var args = new[] { "bench", "step", "--config", BenchTestUtil.Nano, "--batch", "2", "--json", json }.Concat(extra).ToArray();
        var (code, text) = CliTests.RunCli(args);
        Assert.That(code, Is.Zero, text);
        Assert.That(text, Does.Contain("ms/step"));
        if (!extra.Contains("--profile-steps") || extra[Array.IndexOf(extra, "--profile-steps") + 1] != "0") Assert.That(text, Does.Contain("breakdown"));
        Assert.That(Directory.GetFiles(Path.GetDirectoryName(json)!), Has.Length.EqualTo(1), "no temp file left behind");
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        Directory.Delete(Path.GetDirectoryName(json)!, true);
        return doc.RootElement.Clone();
    }

    [TestCase("itc"), TestCase("itm"), TestCase("mlm"), TestCase("mpfc"), TestCase("icc"), TestCase("pac")]
    public void RunsEveryTaskOnTheCpuAndWritesEveryField(string task)
    {
        var r = RunJson("--task", task, "--device", "cpu");
        // Every property of the result record is in the JSON, snake_case.
        foreach (var prop in typeof(StepBenchResult).GetProperties())
            Assert.That(r.TryGetProperty(JsonNamingPolicy.SnakeCaseLower.ConvertName(prop.Name), out _), Is.True, $"missing field for {prop.Name}");
        Assert.That(r.GetProperty("task").GetString(), Is.EqualTo(task));
        Assert.That(r.GetProperty("device").GetString(), Is.EqualTo("cpu"));
        Assert.That(r.GetProperty("batch").GetInt32(), Is.EqualTo(2));
        Assert.That(r.GetProperty("text_tokens").GetInt32(), Is.EqualTo(16), "max_seq_length of nano.yaml");
        Assert.That(r.GetProperty("visual_tokens").GetInt32(), Is.EqualTo(1), "32-pixel crop → 1×1 grid");
        var ms = r.GetProperty("ms_per_step");
        double median = ms.GetProperty("median").GetDouble();
        Assert.That(median, Is.GreaterThan(0));
        Assert.That(ms.GetProperty("min").GetDouble(), Is.LessThanOrEqualTo(median));
        Assert.That(ms.GetProperty("max").GetDouble(), Is.GreaterThanOrEqualTo(median));
        Assert.That(r.GetProperty("images_per_s").GetDouble(), Is.EqualTo(2 / (median / 1000)).Within(1e-6).Percent);
        Assert.That(r.GetProperty("peak_memory_bytes").GetInt64(), Is.GreaterThan(4L * r.GetProperty("parameters").GetInt64()),
            "weights alone are 4 bytes per parameter, plus gradients and AdamW state");
        Assert.That(r.GetProperty("kernel_launches_per_step").ValueKind, Is.EqualTo(JsonValueKind.Null), "no launches on the CPU");
        Assert.That(r.GetProperty("host_syncs_per_step").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(r.GetProperty("device_allocations_per_step").GetDouble(), Is.GreaterThanOrEqualTo(0));
        Assert.That(double.IsFinite(r.GetProperty("loss").GetDouble()), Is.True);

        var bd = r.GetProperty("breakdown");
        Assert.That(bd.GetProperty("timing").GetString(), Is.EqualTo("stopwatch"));
        var kinds = bd.GetProperty("kinds").EnumerateArray().ToList();
        Assert.That(kinds.Select(k => k.GetProperty("kind").GetString()), Is.EqualTo(new[] { "gemm", "conv", "norm", "attention", "elementwise", "optimizer", "other" }));
        double step = bd.GetProperty("profiled_step_ms").GetDouble();
        double sum = kinds.Sum(k => k.GetProperty("ms").GetDouble());
        double host = bd.GetProperty("host_ms").GetDouble();
        Assert.That(sum, Is.EqualTo(bd.GetProperty("kinds_ms").GetDouble()).Within(1e-9));
        Assert.That(sum + host, Is.EqualTo(step).Within(3).Percent, "kinds + host time = the profiled step");
        Assert.That(sum, Is.LessThanOrEqualTo(step * 1.0001), "backend calls cannot take longer than the step that makes them");
        Assert.That(kinds.Sum(k => k.GetProperty("pct").GetDouble()) + bd.GetProperty("host_pct").GetDouble(), Is.EqualTo(100).Within(0.01));
        // Every step of every task runs the ResNet, GEMMs and the AdamW update.
        foreach (var kind in new[] { "gemm", "conv", "norm", "optimizer" })
            Assert.That(kinds.Single(k => k.GetProperty("kind").GetString() == kind).GetProperty("calls_per_step").GetDouble(), Is.GreaterThan(0), kind);
    }

    [TestCase(new[] { "--task", "xyz" }, "xyz")]
    [TestCase(new[] { "--device", "tpu" }, "tpu")]
    [TestCase(new[] { "--batch", "0" }, "--batch 0")]
    [TestCase(new[] { "--steps", "0" }, "--steps 0")]
    [TestCase(new[] { "--precision", "fp8" }, "fp8")]
    [TestCase(new[] { "--seed", "-5" }, "--seed must be ≥ 0, got -5")]
    [TestCase(new[] { "--config", "no/such.yaml" }, "no/such.yaml")]
    [TestCase(new[] { "--tune", "maybe" }, "--tune: 'maybe' is not a tuning mode")]
    [TestCase(new[] { "--tune", "on" }, "--tune on picks CUDA kernels; it needs --device cuda")]
    public void BadOptionsNameTheCulprit(string[] bad, string culprit)
    {
        var config = bad.Contains("--config") ? Array.Empty<string>() : ["--config", BenchTestUtil.Nano];
        var args = new[] { "bench", "step" }.Concat(config).Concat(bad).ToArray();
        var (code, text) = CliTests.RunCli(args);
        Assert.That(code, Is.Not.Zero);
        Assert.That(text, Does.Contain(culprit));
    }

    [Test]
    public void PrecisionSwitchReachesTheSteps()
    {
        // Same seed, same inputs, one step and no update before it: the reported loss is the first forward's, and tf32
        // rounds the GEMM operands, so it moves by rounding only; fp32 is the default.
        var fp32 = RunJsonWith(["--task", "itc", "--steps", "1", "--warmup", "0", "--profile-steps", "0"]);
        var tf32 = RunJsonWith(["--task", "itc", "--steps", "1", "--warmup", "0", "--profile-steps", "0", "--precision", "tf32"]);
        Assert.That(fp32.GetProperty("precision").GetString(), Is.EqualTo("fp32"));
        Assert.That(tf32.GetProperty("precision").GetString(), Is.EqualTo("tf32"));
        var again = RunJsonWith(["--task", "itc", "--steps", "1", "--warmup", "0", "--profile-steps", "0"]);
        double a = fp32.GetProperty("loss").GetDouble(), b = tf32.GetProperty("loss").GetDouble();
        Assert.That(again.GetProperty("loss").GetDouble(), Is.EqualTo(a), "the fp32 step is deterministic");
        Assert.That(b, Is.Not.EqualTo(a), "so the different tf32 loss comes from the rounded GEMM operands");
        Assert.That(double.IsFinite(b), Is.True);
        Assert.That(MatMulPrecision.Current, Is.EqualTo(Precision.Fp32), "the scope ends with the command");
    }

    [Test]
    public void JsonIsWrittenAtomicallyAndMissingFolderIsNamed()
    {
        var r = new StepBenchResult
        {
            Task = "itc", Device = "cpu", DeviceName = "x", Config = "c", Precision = "fp32", Batch = 1, Steps = 1, Warmup = 0, Parameters = 1,
            TextTokens = 1, VisualTokens = 1, ImageSize = 32, MsPerStep = new MsStats(1, 1, 1), ImagesPerS = 1000, PeakMemoryBytes = 1,
            DeviceAllocationsPerStep = 0, Loss = double.NaN, Date = "d",
        };
        var path = BenchTestUtil.TempFile("r.json");
        File.WriteAllText(path, "old");
        StepBenchmark.WriteJson(path, r);
        using (var doc = JsonDocument.Parse(File.ReadAllText(path)))
            Assert.That(doc.RootElement.GetProperty("loss").GetString(), Is.EqualTo("NaN"));
        var e = Assert.Throws<DirectoryNotFoundException>(() => StepBenchmark.WriteJson(Path.Combine(Path.GetDirectoryName(path)!, "nope", "r.json"), r));
        Assert.That(e!.Message, Does.Contain("nope"));
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }
}
